"""The types of the .tts language.

``text`` (a string), ``tokens`` (token ids), ``segment`` (one LM segment: its text, tokens
and finish reason), ``number``, ``bool`` and ``list[T]``; ``answers[T]`` is the value of a
nested ``infer`` (the inner run's weighted answers of type T); ``model``, ``judge`` and
``prm`` are the types of ``use`` declarations. An empty list literal has type ``list[?]``, which fits any
list; a variable declared with it takes the element type of the first list assigned to it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Type:
    name: str
    element: Type | None = None

    def __str__(self) -> str:
        return f"{self.name}[{self.element}]" if self.element is not None else self.name


TEXT = Type("text")
TOKENS = Type("tokens")
SEGMENT = Type("segment")
NUMBER = Type("number")
BOOL = Type("bool")
MODEL = Type("model")
JUDGE = Type("judge")
PRM = Type("prm")
VERIFIER = Type("verifier")
PYTHON = Type("python")  # the sandboxed Python tool
RETRIEVER = Type("retriever")  # retrieval from a local corpus
TURN = Type("turn")  # one turn of a chat: a role (system, user, assistant) and its text
UNKNOWN = Type("?")  # the element of an empty list literal
ANYTHING = Type("anything")  # in built-in signatures only: any type
ERROR = Type("<error>")  # the type of an expression that already has an error (no cascade)

SIMPLE = {t.name: t for t in (TEXT, TOKENS, SEGMENT, NUMBER, BOOL)}
INPUT_TYPES = ("text", "tokens", "number", "bool")  # what a program's parameters may be


def answers_of(element: Type) -> Type:
    """The weighted answers of a nested run of a program returning ``element``."""
    return Type("answers", element)


def is_answers(t: Type) -> bool:
    return t.name == "answers"


def list_of(element: Type) -> Type:
    return Type("list", element)


def is_list(t: Type) -> bool:
    return t.name == "list"


def fits(actual: Type, expected: Type) -> bool:
    """Whether a value of type ``actual`` can be used where ``expected`` is wanted."""
    if actual == ERROR or expected in (ERROR, ANYTHING, actual):
        return True
    if is_list(actual) and is_list(expected):
        return actual.element == UNKNOWN or fits(actual.element, expected.element)
    return False


def unify(a: Type, b: Type) -> Type | None:
    """The type of both ``a`` and ``b`` (refining ``list[?]``), or None if they differ."""
    if a == ERROR or b == ERROR:
        return ERROR
    if a == b:
        return a
    if is_list(a) and is_list(b):
        if a.element == UNKNOWN:
            return b
        if b.element == UNKNOWN:
            return a
        element = unify(a.element, b.element)
        return list_of(element) if element is not None else None
    return None


def describe(types: tuple[Type, ...]) -> str:
    """``text``, ``text or segment``, ``text, segment or list[segment]``."""
    names = [str(t) if t != ANYTHING else "anything" for t in types]
    names = ["a list" if n == "list[anything]" else n for n in names]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]
