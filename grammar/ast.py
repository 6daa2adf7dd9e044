"""The syntax tree of a .tts file: frozen dataclasses, each with the ``Position`` it came from.

The parser (``syntax.py``) builds these; the checker annotates nothing in place (it keeps
its findings in side tables), so a tree can be shared and compared freely.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Position:
    """A place in a source file; line and column start at 1."""

    file: str
    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


# ---- types -------------------------------------------------------------------------------


@dataclass(frozen=True)
class TypeExpr:
    """A type as written: ``text`` or ``list[segment]``."""

    pos: Position
    name: str
    element: TypeExpr | None = None


# ---- expressions ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Name:
    pos: Position
    id: str


@dataclass(frozen=True)
class Number:
    pos: Position
    value: int | float


@dataclass(frozen=True)
class String:
    pos: Position
    value: str


@dataclass(frozen=True)
class Interpolation:
    """A string with ``${name}`` / ``${name.field}`` inside: texts and expressions, in order."""

    pos: Position
    parts: tuple


@dataclass(frozen=True)
class Bool:
    pos: Position
    value: bool


@dataclass(frozen=True)
class ListExpr:
    pos: Position
    items: tuple


@dataclass(frozen=True)
class Argument:
    """A call argument: positional (``name is None``) or ``name = value``."""

    pos: Position
    name: str | None
    value: object


@dataclass(frozen=True)
class Call:
    """``function(args)``: a built-in function, a distribution, or a declaration."""

    pos: Position
    function: str
    args: tuple[Argument, ...]


@dataclass(frozen=True)
class MethodCall:
    """``receiver.method(args)``: a model's or a judge's method."""

    pos: Position
    receiver: object
    method: str
    method_pos: Position
    args: tuple[Argument, ...]


@dataclass(frozen=True)
class Field:
    """``receiver.name``: a field of a segment."""

    pos: Position
    receiver: object
    name: str
    name_pos: Position


@dataclass(frozen=True)
class Index:
    pos: Position
    target: object
    index: object


@dataclass(frozen=True)
class InferExpr:
    """``infer program(args) with algorithm(settings)``: nested inference, an expression."""

    pos: Position
    program: str
    program_pos: Position
    args: tuple[Argument, ...]
    algorithm: str
    algorithm_pos: Position
    settings: tuple[Argument, ...]


@dataclass(frozen=True)
class Binary:
    """Arithmetic ``+ - * /`` and comparisons ``== != < <= > >=``."""

    pos: Position
    op: str
    op_pos: Position
    left: object
    right: object


@dataclass(frozen=True)
class Logical:
    """``and`` / ``or`` (short-circuit)."""

    pos: Position
    op: str
    left: object
    right: object


@dataclass(frozen=True)
class Not:
    pos: Position
    operand: object


@dataclass(frozen=True)
class Negate:
    pos: Position
    operand: object


# ---- statements ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Let:
    pos: Position
    name: str
    type: TypeExpr | None
    value: object


@dataclass(frozen=True)
class Assign:
    pos: Position
    name: str
    value: object


@dataclass(frozen=True)
class Extend:
    """``name += value``."""

    pos: Position
    name: str
    value: object


@dataclass(frozen=True)
class Choice:
    """``name ~ choice``: a random choice (``lm.gen``, ``select``, a distribution)."""

    pos: Position
    name: str
    value: object


@dataclass(frozen=True)
class Score:
    pos: Position
    value: object


@dataclass(frozen=True)
class Twist:
    pos: Position
    value: object


@dataclass(frozen=True)
class Condition:
    pos: Position
    value: object
    reason: object | None


@dataclass(frozen=True)
class Observe:
    """``observe value ~ distribution``."""

    pos: Position
    value: object
    distribution: object


@dataclass(frozen=True)
class Step:
    """``step (max K) { body }``."""

    pos: Position
    max: object
    body: tuple


@dataclass(frozen=True)
class For:
    """``for name in iterable { body }``."""

    pos: Position
    name: str
    iterable: object
    body: tuple


@dataclass(frozen=True)
class If:
    pos: Position
    condition: object
    then: tuple
    otherwise: tuple | None


@dataclass(frozen=True)
class Finish:
    pos: Position


@dataclass(frozen=True)
class Return:
    pos: Position
    value: object


# ---- declarations --------------------------------------------------------------------------


@dataclass(frozen=True)
class Use:
    """``use name = model(...)`` / ``use name = judge(...)``."""

    pos: Position
    name: str
    value: object


@dataclass(frozen=True)
class Import:
    """``use a, b from "file.tts"``: programs of another file, each name with its position."""

    pos: Position
    names: tuple[tuple[str, Position], ...]
    path: str
    path_pos: Position


@dataclass(frozen=True)
class Param:
    pos: Position
    name: str
    type: TypeExpr


@dataclass(frozen=True)
class ParamDecl:
    """``param name = integer(...) | number(...) | choice(...)``: a tunable constant of the file.

    ``start`` and ``end`` are its character offsets in the source, so that a value can be
    written back into the file (``ppl.grammar.params.write``)."""

    pos: Position
    name: str
    value: object
    start: int
    end: int


@dataclass(frozen=True)
class ProgramDecl:
    pos: Position
    name: str
    params: tuple[Param, ...]
    returns: TypeExpr
    body: tuple


@dataclass(frozen=True)
class Infer:
    """``infer program with algorithm(settings)``."""

    pos: Position
    program: str
    program_pos: Position
    algorithm: str
    algorithm_pos: Position
    settings: tuple[Argument, ...]


@dataclass(frozen=True)
class Module:
    """A whole file."""

    pos: Position
    version: str
    version_pos: Position
    declarations: tuple
