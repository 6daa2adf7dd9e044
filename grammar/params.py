"""``param`` declarations: the tunable constants of a ``.tts`` file, and their values.

    param samples = integer(3, low = 1, high = 8)
    param temperature = number(0.7, low = 0.1, high = 1.2)      # log = true: a log scale
    param method = choice("importance", ["importance", "adaptive"])
    param refine = choice(true, [true, false])

A param is a constant: its default is its value for ``tts run``, ``tts eval`` and ``tts
check``; ``tts search`` gives it other values in its range. Before the file is checked,
every use of a param's name — in programs, ``use`` arguments, ``infer`` settings, and as the
interpreter's name of an ``infer`` clause or expression — is replaced by the value (a
literal), so the checker and the compiler see an ordinary file and check each value as if
it had been written there. A param cannot be rebound (``let``, ``~``, ``for``, a program
input, ``=``, ``+=``): that would be a silent change of meaning.

``write(source, space, values)`` gives the file with other defaults: what ``tts search``
writes out as the best configuration (``tts check`` accepts it like the original).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from . import ast
from .errors import Diagnostic

KINDS = ("integer", "number", "choice")


@dataclass(frozen=True)
class Tunable:
    """One declared param: its kind, default and range (or choices)."""

    name: str
    kind: str
    default: Any
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple = ()
    pos: ast.Position | None = None
    start: int = 0
    end: int = 0

    def problem(self, value) -> str | None:
        """Why ``value`` is not a value of this param, or None."""
        if self.kind == "choice":
            if not any(_same(value, c) for c in self.choices):
                options = ", ".join(_literal(c) for c in self.choices)
                return f"param {self.name} is one of {options}, got {_literal(value)}"
            return None
        numeric = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if not numeric or (self.kind == "integer" and not float(value).is_integer()):
            word = "a whole number" if self.kind == "integer" else "a number"
            return f"param {self.name} must be {word}, got {_literal(value)}"
        if not self.low <= value <= self.high:
            return f"param {self.name} must be between {_literal(self.low)} and {_literal(self.high)}, got {_literal(value)}"
        return None

    def normal(self, value):
        """The value as the file uses it: an int for an integer param."""
        return int(value) if self.kind == "integer" else (float(value) if self.kind == "number" else value)

    def declaration(self, value) -> str:
        """The declaration's text with ``value`` as its default."""
        if self.kind == "choice":
            options = ", ".join(_literal(c) for c in self.choices)
            return f"param {self.name} = choice({_literal(value)}, [{options}])"
        log = ", log = true" if self.log else ""
        low, high = _literal(self.low), _literal(self.high)
        return f"param {self.name} = {self.kind}({_literal(self.normal(value))}, low = {low}, high = {high}{log})"


@dataclass(frozen=True)
class ParamSpace:
    """The file's params (in declaration order) and the values this compilation uses."""

    params: Mapping[str, Tunable]
    values: Mapping[str, Any]


def _same(a, b) -> bool:
    return (
        type(a) is type(b)
        and a == b
        or (
            isinstance(a, (int, float))
            and isinstance(b, (int, float))
            and not isinstance(a, bool)
            and not isinstance(b, bool)
            and a == b
        )
    )


def _literal(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("$", "\\$")
        return f'"{escaped}"'
    if isinstance(value, float) and value.is_integer():
        return str(int(value)) if abs(value) < 1e15 else repr(value)
    return repr(value)


def _constant(node):
    """The value of a literal node (numbers may be negated), or raise ValueError."""
    if isinstance(node, ast.Number):
        return node.value
    if isinstance(node, ast.Negate) and isinstance(node.operand, ast.Number):
        return -node.operand.value
    if isinstance(node, (ast.String, ast.Bool)):
        return node.value
    raise ValueError


def _node(value, pos: ast.Position):
    if isinstance(value, bool):
        return ast.Bool(pos, value)
    if isinstance(value, str):
        return ast.String(pos, value)
    if value < 0:
        return ast.Negate(pos, ast.Number(pos, -value))
    return ast.Number(pos, value)


def declared(decl: ast.ParamDecl) -> tuple[Tunable | None, str | None]:
    """The param a declaration declares, or the reason it is malformed."""
    usage = (
        "a param is `param name = integer(default, low = A, high = B)`, `number(default, low = A, "
        "high = B)` (add `log = true` for a log scale) or `choice(default, [a, b, ...])`"
    )
    call = decl.value
    if not isinstance(call, ast.Call) or call.function not in KINDS:
        return None, usage
    names = ("default", "options") if call.function == "choice" else ("default", "low", "high", "log")
    given: dict = {}
    for i, arg in enumerate(call.args):
        name = arg.name or (names[i] if i < len(names) else None)
        if name not in names:
            return None, f"{call.function}() takes {', '.join(names)}; got {arg.name or 'an extra argument'}"
        if name in given:
            return None, f"{call.function}(): '{name}' is given twice"
        given[name] = arg.value
    missing = [n for n in names if n not in given and n != "log"]
    if missing:
        return None, f"{call.function}() needs '{missing[0]}'; {usage}"
    try:
        if call.function == "choice":
            options = given["options"]
            if not isinstance(options, ast.ListExpr) or not options.items:
                return None, "choice(default, [a, b, ...]) needs a list of at least one literal"
            choices = tuple(_constant(item) for item in options.items)
            tunable = Tunable(decl.name, "choice", _constant(given["default"]), choices=choices)
        else:
            log = _constant(given["log"]) if "log" in given else False
            low, high = _constant(given["low"]), _constant(given["high"])
            default = _constant(given["default"])
            if not isinstance(log, bool):
                return None, f"{call.function}(): log is true or false"
            bounds = (low, high, default)
            if any(isinstance(b, (bool, str)) for b in bounds):
                return None, f"{call.function}(): default, low and high are numbers"
            if call.function == "integer" and not all(float(b).is_integer() for b in bounds):
                return None, "integer(): default, low and high are whole numbers"
            if not low <= high:
                return None, f"{call.function}(): low ({_literal(low)}) is above high ({_literal(high)})"
            if log and low <= 0:
                return None, f"{call.function}(): a log scale needs low > 0"
            cast = int if call.function == "integer" else float
            tunable = Tunable(
                decl.name, call.function, cast(default), low=cast(low), high=cast(high), log=log
            )
    except ValueError:
        return (
            None,
            f"{call.function}(): the default, range and options are literals (numbers, strings, true, false)",
        )
    tunable = dataclasses.replace(tunable, pos=decl.pos, start=decl.start, end=decl.end)
    reason = tunable.problem(tunable.default)
    if reason is not None:
        return None, f"the default is not in the range: {reason}"
    return tunable, None


def _bindings(node, out: list) -> None:
    """Every (name, position) a program binds or assigns."""
    if isinstance(node, (ast.Let, ast.Choice, ast.For, ast.Assign, ast.Extend)):
        out.append((node.name, node.pos))
    if isinstance(node, ast.ProgramDecl):
        out.extend((p.name, p.pos) for p in node.params)
    if isinstance(node, tuple):
        for item in node:
            _bindings(item, out)
    elif dataclasses.is_dataclass(node) and not isinstance(node, ast.Position):
        for f in dataclasses.fields(node):
            _bindings(getattr(node, f.name), out)


def _substitute(node, values: Mapping[str, Any]):
    if isinstance(node, ast.Name) and node.id in values:
        return _node(values[node.id], node.pos)
    if isinstance(node, tuple):
        return tuple(_substitute(item, values) for item in node)
    if not dataclasses.is_dataclass(node) or isinstance(node, (ast.Position, ast.TypeExpr)):
        return node
    changes = {}
    for f in dataclasses.fields(node):
        old = getattr(node, f.name)
        new = _substitute(old, values)
        if new is not old:
            changes[f.name] = new
    if isinstance(node, (ast.Infer, ast.InferExpr)) and isinstance(values.get(node.algorithm), str):
        changes["algorithm"] = values[node.algorithm]
    return dataclasses.replace(node, **changes) if changes else node


def apply(
    module: ast.Module, overrides: Mapping[str, Any] | None = None
) -> tuple[ast.Module, ParamSpace, list[Diagnostic]]:
    """The file with every param replaced by its value (its default, or ``overrides[name]``)."""
    overrides = dict(overrides or {})
    diagnostics: list[Diagnostic] = []
    params: dict[str, Tunable] = {}
    for decl in module.declarations:
        if not isinstance(decl, ast.ParamDecl):
            continue
        tunable, reason = declared(decl)
        if reason is not None:
            diagnostics.append(Diagnostic(getattr(decl.value, "pos", decl.pos), reason))
        elif decl.name not in params:
            params[decl.name] = tunable
    unknown = [name for name in overrides if name not in params]
    if unknown:
        known = ", ".join(params) or "none"
        diagnostics.append(
            Diagnostic(module.pos, f"no param '{unknown[0]}' in this file; its params are {known}")
        )
    values = {}
    for name, tunable in params.items():
        value = overrides.get(name, tunable.default)
        reason = tunable.problem(value)
        if reason is not None:
            diagnostics.append(Diagnostic(tunable.pos, reason))
        values[name] = tunable.normal(value)
    if not params:  # nothing to replace: the file is checked as it is
        return module, ParamSpace(params, values), diagnostics
    try:
        return _replaced(module, params, values, diagnostics)
    except RecursionError:  # the checker reports it for files without params
        diagnostics.append(Diagnostic(module.pos, "this is nested too deeply (more than 100 levels)"))
        return module, ParamSpace(params, values), diagnostics


def _replaced(module: ast.Module, params: dict, values: dict, diagnostics: list):
    if params:
        bound: list = []
        _bindings(tuple(d for d in module.declarations if isinstance(d, ast.ProgramDecl)), bound)
        for name, pos in bound:
            if name in params:
                diagnostics.append(
                    Diagnostic(
                        pos,
                        f"'{name}' is a param (line {params[name].pos.line}): a param is a constant; "
                        "use another name",
                    )
                )
    declarations = tuple(
        d if isinstance(d, ast.ParamDecl) else _substitute(d, values) for d in module.declarations
    )
    return dataclasses.replace(module, declarations=declarations), ParamSpace(params, values), diagnostics


def write(source: str, space: ParamSpace, values: Mapping[str, Any]) -> str:
    """``source`` with each param's declaration rewritten to default to ``values[name]``."""
    edits = sorted(
        ((t.start, t.end, t.declaration(values.get(name, t.default))) for name, t in space.params.items()),
        reverse=True,
    )
    for start, end, text in edits:
        source = source[:start] + text + source[end:]
    return source
