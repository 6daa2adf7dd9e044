"""The ``.tts`` textual form of ppl programs (DESIGN.md §5): parse → check → compile to the same IR.

The grammar parses, checks and compiles; nothing else. What a file may name beyond the
language — interpreters, backends, PRM aggregations — comes from a ``Catalog`` the caller
passes to ``check``, and every ``use`` is resolved to a model object by the caller and
passed to ``compile``: the grammar imports no interpreter and no engine. The application
does both for you (``ppl.app.load``); here the pieces are passed by hand:

    >>> from ppl.algorithms import ALGORITHMS
    >>> from ppl.backends.tabular import TabularLM
    >>> catalog = Catalog(ALGORITHMS, frozenset({"tabular"}), ("prod",))
    >>> checked = check('''version 0.1
    ... use lm = model("words")
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
    ... ''', catalog=catalog)
    >>> sorted(checked.uses)
    ['lm']
    >>> lm = TabularLM.bigram({"<s>": {" a": 1, " b": 1}, " a": {"<eos>": 1}, " b": {" a": 1}})
    >>> module = compile(checked, {"lm": lm})
    >>> module.infer.describe()
    'infer words with smc(particles = 4, ess = 0.5, resample = "multinomial")'
    >>> posterior = module.infer.run([()], seed=0)[0]
    >>> posterior.best() in (" a", " b a")
    True

``parse`` gives the syntax tree, ``check`` runs every static check (no model is loaded),
``compile`` turns a checked file and its resolved models into ``ppl.Program``s and the
``infer`` clause, and ``load`` does all three. Each takes source text (a ``str``), a file (a
``pathlib.Path``) or bytes. Every problem in the file is reported as a ``TtsError`` whose
message reads ``file.tts:LINE:COL: message``, the line, and a caret.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from ppl.program import Program

from . import ast
from . import params as _params
from .catalog import Catalog
from .checker import Checked, InferInfo
from .checker import check as _check
from .compiler import compile_program
from .errors import TtsError, TtsRuntimeError
from .source import read_source
from .syntax import LANGUAGE_VERSION
from .syntax import parse as _parse

__all__ = [
    "LANGUAGE_VERSION",
    "Catalog",
    "Checked",
    "Infer",
    "Module",
    "TtsError",
    "TtsRuntimeError",
    "check",
    "compile",
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
        return Infer(self.program, info.spec.build(info.settings), info)

    def run(self, problems, *, seed: int = 0, progress=False, watch=None):
        """Run the interpreter on the program for each problem; one Posterior per problem."""
        return self.algorithm.run(self.program, problems, seed=seed, progress=progress, watch=watch)


@dataclass
class Module:
    """A loaded .tts file: its models, its compiled programs (those it uses from other files,
    ``use a from "f.tts"``, after its own), and its infer clause (or None)."""

    filename: str
    source: str
    checked: Checked
    models: dict
    programs: dict[str, Program]
    infer: Infer | None


def parse(source: str | Path, filename: str | None = None) -> ast.Module:
    """The syntax tree of a .tts file or text; ``TtsError`` on a syntax error."""
    text, filename = read_source(source, filename)
    return _parse(text, filename)


def check(
    source: str | Path,
    filename: str | None = None,
    *,
    catalog: Catalog,
    params: Mapping[str, object] | None = None,
) -> Checked:
    """Parse and check against ``catalog`` without loading any model; ``TtsError`` with every problem found.

    ``params`` gives values to the file's ``param`` declarations (the others keep their
    defaults); ``Checked.params`` is the file's ``ParamSpace`` (``grammar/params.py``)."""
    text, filename = read_source(source, filename)
    module, space, problems = _params.apply(_parse(text, filename), params)
    if problems:
        raise TtsError(problems, text)
    checked = _check(module, text, filename, catalog)
    checked.params = space
    return checked


def compile(checked: Checked, models: Mapping[str, object]) -> Module:
    """Compile every program of a checked file, with ``models`` giving the object of each ``use``.

    ``models`` maps every ``use`` name of the file to its model, judge or PRM (resolved by the
    caller: ``ppl.app.loading`` builds them from a backend). The ``infer`` clause, if any, is
    built by its interpreter's spec. ``ValueError`` if a ``use`` has no model.
    """
    missing = [name for name in checked.uses if name not in models]
    if missing:
        raise ValueError(f"no model for the use '{missing[0]}' of {checked.filename}: pass it in models")
    resolved = {name: models[name] for name in checked.uses}
    programs: dict[str, Program] = {}
    library: dict[int, dict[str, Program]] = {}
    for name in [*checked.programs, *checked.imports]:
        if name not in programs:
            compile_program(checked, name, resolved, programs, library)
    programs = {name: programs[name] for name in [*checked.programs, *checked.imports]}
    infer = None
    if checked.infer is not None:
        info = checked.infer
        infer = Infer(programs[info.program], info.spec.build(info.settings), info)
    return Module(checked.filename, checked.source, checked, resolved, programs, infer)


def load(
    source: str | Path,
    *,
    catalog: Catalog,
    models: Mapping[str, object],
    filename: str | None = None,
) -> Module:
    """``compile(check(source, catalog=catalog), models)``: a file whose models you already have.

    To resolve the models by name on a backend, use ``ppl.app.load``.
    """
    return compile(check(source, filename, catalog=catalog), models)
