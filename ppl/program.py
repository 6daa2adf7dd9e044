"""``@ppl.program``: a plain Python function, marked as a program interpreters can run.

The function's body is the program: its primitives are the sites, its return value is
what queries see. It must be deterministic given the values its sites return (no Python
``random``, no clock), because interpreters replay it to resume, copy and enumerate
particles. Calling a ``Program`` runs the function directly; under handlers (``ppl.seed``,
``ppl.trace``) that is one sample from the program.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable


class Program:
    """A program: the function, its name, and its signature.

    ``resumable``, when the program has one (compiled ``.tts``), is the same function run so
    that each barrier offers the program's continuation from there (``ppl.barrier(resume=
    ...)``): what an interpreter runs as a particle's outermost program, so that copies at
    resampling go on from their parent's state instead of replaying it. Only the outermost
    program may offer them — a continuation returns the program's value — so ``fn``, which
    every other caller uses, offers none."""

    def __init__(self, fn: Callable, name: str | None = None, resumable: Callable | None = None):
        if not callable(fn):
            raise TypeError("ppl.program needs a function")
        self.fn = fn
        self.resumable = resumable
        self.name = name or getattr(fn, "__name__", "program")
        self.signature = inspect.signature(fn)
        functools.update_wrapper(self, fn)

    def __call__(self, *args, **kwargs):
        return self.fn(*args, **kwargs)

    def bind(self, args) -> tuple[tuple, dict]:
        """Normalise one problem's inputs to ``(args, kwargs)``, checking them against the signature."""
        if isinstance(args, dict):
            positional, keywords = (), dict(args)
        elif isinstance(args, tuple):
            positional, keywords = args, {}
        else:
            positional, keywords = (args,), {}
        try:
            self.signature.bind(*positional, **keywords)
        except TypeError as error:
            raise TypeError(
                f"inputs {args!r} do not fit program {self.name}{self.signature}: {error}"
            ) from None
        return positional, keywords

    def __repr__(self) -> str:
        return f"<ppl.Program {self.name}{self.signature}>"


def program(fn: Callable | None = None, *, name: str | None = None):
    """Decorator: ``@ppl.program`` or ``@ppl.program(name="...")``."""
    if fn is None:
        return lambda f: Program(f, name=name)
    return Program(fn, name=name)


def as_program(obj) -> Program:
    """Accept a Program or a plain function."""
    return obj if isinstance(obj, Program) else Program(obj)
