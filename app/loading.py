"""Load a ``.tts`` file: check it against what this installation has, resolve its models, compile it.

The grammar parses, checks and compiles but knows no interpreter and no engine; this module
supplies both. ``catalog()`` tells the checker which algorithms (``ppl.algorithms.ALGORITHMS``),
backends and PRM aggregations (``ppl.app.models``) exist; ``resolve_models`` turns each
checked ``use`` into an object — a language model on a backend, an LM-as-judge, a process
reward model — reporting what cannot be loaded as positioned ``TtsError``s; ``load`` does
all of it and is the entry point users and tests call.

    >>> from ppl.app import load
    >>> module = load(\'\'\'version 0.1
    ... use lm = model("reward-tilted-demo")
    ... program words() -> text {
    ...   let ctx = lm.encode("")
    ...   step (max 3) {
    ...     w ~ lm.gen(ctx, max_tokens = 1)
    ...     ctx += w
    ...     if w.eos { finish }
    ...   }
    ...   return lm.decode(ctx)
    ... }
    ... infer words with smc(particles = 4)
    ... \'\'\')
    >>> module.infer.describe()
    'infer words with smc(particles = 4, ess = 0.5, resample = "multinomial")'
    >>> posterior = module.infer.run([()], seed=0)[0]
    >>> isinstance(posterior.best(), str)
    True
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from ppl import grammar
from ppl.algorithms import ALGORITHMS
from ppl.backends import verifiers
from ppl.backends.sandbox import Sandbox
from ppl.backends.tools import PythonTool, Retriever
from ppl.grammar import Catalog, Checked, Module, TtsError
from ppl.grammar.errors import Diagnostic

from . import models as registry


def catalog() -> Catalog:
    """What a file may name here: every registered interpreter, backend and PRM aggregation."""
    return Catalog(ALGORITHMS, registry.backend_names(), registry.PRM_AGGREGATIONS, tuple(verifiers.CHECKERS))


def check(source: str | bytes | Path, filename: str | None = None, params: Mapping | None = None) -> Checked:
    """Parse and check a .tts file or text against ``catalog()``; no model is loaded. ``params``
    gives values to its ``param`` declarations."""
    return grammar.check(source, filename, catalog=catalog(), params=params)


def load(
    source: str | bytes | Path,
    *,
    filename: str | None = None,
    backend: str | None = None,
    models: Mapping[str, object] | None = None,
    options: Mapping[str, object] | None = None,
    params: Mapping[str, object] | None = None,
) -> Module:
    """Check a .tts file or text, resolve its models and compile its programs.

    ``backend`` (e.g. "tabular") overrides the backend of every ``model(...)``; without it each
    model uses its own ``backend = ...`` or "tabular". ``models`` maps ``use`` names to model
    objects to use instead of loading them (tests pass their own LMs this way). ``options``
    go to the backend (engine settings for vllm, ``servers`` for openai). Loading a model
    starts no engine: engines start on their first request. ``params`` gives values to the
    file's ``param`` declarations (``tts search``).
    """
    checked = check(source, filename, params)
    resolved = resolve_models(checked, backend, models or {}, options or {})
    return grammar.compile(checked, resolved)


def describe_models(checked: Checked, backend: str | None = None, *, only_unknown: bool = False) -> list[str]:
    """One line per ``model(...)`` of the file: which model its name resolves to on the
    backend (``--backend``, else its own, else tabular); ``only_unknown``: just the names
    that are no model (no name given, or a name only the tabular backend stands in for)."""
    lines = []
    for name, use in checked.uses.items():
        if use.kind != "model":
            continue
        chosen = backend or use.settings.get("backend") or "tabular"
        what, known = registry.resolves_to(use.settings.get("name"), chosen)
        if only_unknown and known and use.settings.get("name") is not None:
            continue
        spelt = json.dumps(use.settings["name"]) if use.settings.get("name") is not None else ""
        lines.append(f"{name} = model({spelt}) is {what}")
    return lines


def resolve_models(
    checked: Checked, backend: str | None, given: Mapping[str, object], options: Mapping[str, object]
) -> dict:
    """The object of every ``use`` of a checked file: ``given`` ones as they are, the others loaded.

    One engine per (model, backend) however many uses name it. Every model that cannot be
    loaded is reported at once, as a ``TtsError`` at its declaration.
    """
    resolved, problems = {}, []
    loaded: dict[tuple[str, str], object] = {}
    for name, use in checked.uses.items():
        if name in given:
            resolved[name] = given[name]
        elif use.kind == "model":
            chosen = backend or use.settings.get("backend") or "tabular"
            key = (use.settings.get("name") or registry.DEFAULT_MODEL, chosen)
            try:
                if key not in loaded:
                    loaded[key] = registry.load_model(*key, **options)
                resolved[name] = loaded[key]
            except registry.BackendError as error:
                problems.append(Diagnostic(use.settings_pos.get("backend", use.pos), str(error)))
        elif use.kind == "verifier":
            resolved[name] = verifiers.verifier(use.settings["name"])  # the checkers of tts eval
        elif use.kind == "python":
            limits = Sandbox(
                time_limit=float(use.settings["time_limit"]), memory_limit_mb=int(use.settings["memory_mb"])
            )
            resolved[name] = PythonTool(limits, name=name)
        elif use.kind == "retriever":
            try:
                resolved[name] = Retriever.from_path(_beside(use.pos.file, use.settings["path"]))
            except (OSError, ValueError) as error:
                problems.append(Diagnostic(use.settings_pos.get("path", use.pos), str(error)))
        elif use.kind == "judge" and use.settings["model"] in resolved:
            resolved[name] = registry.make_judge(
                resolved[use.settings["model"]], use.settings["question"], name
            )
        elif use.kind == "prm" and use.settings["model"] is not None:
            if use.settings["model"] in resolved:
                lm = resolved[use.settings["model"]]
                resolved[name] = registry.judge_prm(
                    lm, use.settings["aggregate"], use.settings["question"], name=name
                )
        elif use.kind == "prm":
            try:
                chosen = backend or use.settings.get("backend") or "tabular"
                key = (use.settings["name"], chosen, use.settings["aggregate"])
                resolved[name] = registry.load_prm(*key, **options)
            except registry.BackendError as error:
                problems.append(Diagnostic(use.settings_pos.get("name", use.pos), str(error)))
    if problems:
        raise TtsError(problems, checked.source, checked.sources)
    return resolved


def _beside(filename: str, path: str) -> Path:
    """A path written in a .tts file: relative to that file's folder (to the working folder
    for source text that is not a file)."""
    written = Path(path)
    if written.is_absolute() or filename.startswith("<"):
        return written
    return Path(filename).parent / written
