"""The ``.tts`` textual form of ppl programs (DESIGN.md §5): parse → check → the same IR.

    >>> from ppl.grammar import load
    >>> module = load('''version 0.1
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
    ... ''')
    >>> module.infer.describe()
    'infer words with smc(particles = 4, ess = 0.5, resample = "multinomial")'
    >>> posterior = module.infer.run([()], seed=0)[0]
    >>> isinstance(posterior.best(), str)
    True

``parse`` gives the syntax tree, ``check`` runs every static check (no model is loaded),
``load`` also resolves the models on a backend and compiles each program to a
``ppl.Program``. Each takes source text (a ``str``), a file (a ``pathlib.Path``) or bytes. Every problem in the file is reported as a ``TtsError`` whose message reads
``file.tts:LINE:COL: message``, the line, and a caret.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from ppl.program import Program

from . import ast
from .builtins import make_algorithm
from .checker import Checked, InferInfo
from .checker import check as _check
from .compiler import compile_program
from .errors import Diagnostic, TtsError, TtsRuntimeError
from .syntax import LANGUAGE_VERSION
from .syntax import parse as _parse

__all__ = [
    "LANGUAGE_VERSION",
    "Infer",
    "Module",
    "TtsError",
    "TtsRuntimeError",
    "check",
    "load",
    "parse",
    "read_source",
]


@dataclass(frozen=True)
class Infer:
    """The file's ``infer`` clause, ready to run: a program and a configured interpreter."""

    program: Program
    algorithm: object
    info: InferInfo

    def describe(self) -> str:
        return self.info.describe()

    def with_settings(self, **settings) -> Infer:
        """The same clause with some settings replaced (e.g. ``particles`` from the command line)."""
        info = replace(self.info, settings={**self.info.settings, **settings})
        return Infer(self.program, make_algorithm(info.algorithm, info.settings), info)

    def run(self, problems, *, seed: int = 0, progress=False):
        """Run the interpreter on the program for each problem; one Posterior per problem."""
        return self.algorithm.run(self.program, problems, seed=seed, progress=progress)


@dataclass
class Module:
    """A loaded .tts file: its models, its compiled programs, and its infer clause (or None)."""

    filename: str
    source: str
    checked: Checked
    models: dict
    programs: dict[str, Program]
    infer: Infer | None


def read_source(source: str | bytes | Path, filename: str | None = None) -> tuple[str, str]:
    """``(text, filename)`` from a file (a ``pathlib.Path``), source text (a ``str``), or UTF-8 bytes.

    A ``str`` is always source text, never a file name: pass ``Path("x.tts")`` for a file.
    """
    if isinstance(source, (bytes, Path)):
        data = source if isinstance(source, bytes) else Path(source).read_bytes()
        filename = filename or ("<input>" if isinstance(source, bytes) else str(source))
        try:
            return data.decode("utf-8"), filename
        except UnicodeDecodeError as error:
            before = data[: error.start].decode("utf-8", errors="replace")
            line = before.count("\n") + 1
            column = len(before) - (before.rfind("\n") + 1) + 1
            position = ast.Position(filename, line, column)
            raise TtsError([Diagnostic(position, "this file is not valid UTF-8 text")]) from None
    return source, filename or "<input>"


def parse(source: str | Path, filename: str | None = None) -> ast.Module:
    """The syntax tree of a .tts file or text; ``TtsError`` on a syntax error."""
    text, filename = read_source(source, filename)
    return _parse(text, filename)


def check(source: str | Path, filename: str | None = None) -> Checked:
    """Parse and check without loading any model; ``TtsError`` with every problem found."""
    text, filename = read_source(source, filename)
    return _check(_parse(text, filename), text, filename)


def load(
    source: str | Path,
    *,
    filename: str | None = None,
    backend: str | None = None,
    models: dict | None = None,
    options: dict | None = None,
) -> Module:
    """Check a .tts file or text, resolve its models and compile its programs.

    ``backend`` (e.g. "tabular") overrides the backend of every ``model(...)``; without it each
    model uses its own ``backend = ...`` or "tabular". ``models`` maps ``use`` names to model
    objects to use instead of loading them (tests pass their own LMs this way). ``options``
    go to the backend (engine settings for vllm, ``servers`` for openai). Loading a model
    starts no engine: engines start on their first request.
    """
    text, filename = read_source(source, filename)
    checked = _check(_parse(text, filename), text, filename)
    resolved = _resolve_models(checked, backend, dict(models or {}), dict(options or {}))
    programs = {name: compile_program(checked, name, resolved) for name in checked.programs}
    infer = None
    if checked.infer is not None:
        info = checked.infer
        infer = Infer(programs[info.program], make_algorithm(info.algorithm, info.settings), info)
    return Module(filename, text, checked, resolved, programs, infer)


def _resolve_models(checked: Checked, backend: str | None, given: dict, options: dict) -> dict:
    from ppl.backends.judge import Judge
    from ppl.models import DEFAULT_MODEL, BackendError, judge_prm, load_model, load_prm

    resolved, problems = {}, []
    loaded: dict[tuple[str, str], object] = {}  # one engine per (model, backend), however many uses name it
    for name, use in checked.uses.items():
        if name in given:
            resolved[name] = given[name]
        elif use.kind == "model":
            chosen = backend or use.settings.get("backend") or "tabular"
            key = (use.settings.get("name") or DEFAULT_MODEL, chosen)
            try:
                if key not in loaded:
                    loaded[key] = load_model(*key, **options)
                resolved[name] = loaded[key]
            except BackendError as error:
                problems.append(Diagnostic(use.settings_pos.get("backend", use.pos), str(error)))
        elif use.kind == "judge" and use.settings["model"] in resolved:
            resolved[name] = Judge(resolved[use.settings["model"]], use.settings["question"], name=name)
        elif use.kind == "prm" and use.settings["model"] is not None:
            if use.settings["model"] in resolved:
                lm = resolved[use.settings["model"]]
                resolved[name] = judge_prm(lm, use.settings["aggregate"], use.settings["question"], name=name)
        elif use.kind == "prm":
            try:
                chosen = backend or use.settings.get("backend") or "tabular"
                key = (use.settings["name"], chosen, use.settings["aggregate"])
                resolved[name] = load_prm(*key, **options)
            except BackendError as error:
                problems.append(Diagnostic(use.settings_pos.get("name", use.pos), str(error)))
    if problems:
        raise TtsError(problems, checked.source)
    return resolved
