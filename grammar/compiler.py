"""Checked .tts programs → ``ppl.Program``s that call the same primitives as the decorator form.

Each program is compiled once into nested Python closures (one per statement and
expression); the ``Program``'s function runs them. The closures call ``ppl.gen``,
``ppl.select``, ``ppl.sample``, ``ppl.observe``, ``ppl.score``, ``ppl.twist``,
``ppl.condition``, ``ppl.reward`` and iterate ``ppl.steps`` in the order the source says —
exactly what the equivalent ``@ppl.program`` function does — so both forms give identical
traces for the same seed, and the function is deterministic given its sites' values, as the
scheduler's replay needs.

Failures while running (an index out of range, division by zero, an encode error) raise a
``TtsRuntimeError`` that names the place in the file; the scheduler then kills that
particle only, with the message as the recorded reason.

**Continuations.** A compiled program can go on from any barrier of its step blocks
without being re-run from the start: its state there is data — its variables (immutable
values: text, numbers, tuples, segments) and where it stands in its compound statements
(``_Cursor``: one frame per enclosing ``if`` / ``for`` / ``step``, each naming its
statement's place in its block). Each barrier offers that state (``ppl.steps(resume=...)``),
so an interpreter that copies a particle at resampling starts the copy there instead of
replaying its record: a copy costs its variables, not its past. The blocks' ``resume``
closures walk the frames back to the barrier. A program called from another keeps no
cursor (its caller's expression would have to be resumed too), so steps inside a called
program are replayed, as Python programs are; only ``Program.resumable``, which an
interpreter runs as a particle's outermost program, keeps one.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import ppl
from ppl.program import Program

from . import ast
from .builtins import ANSWERS_FIELDS, SEGMENT_FIELDS, as_count, as_display, as_tokens, observed_value
from .checker import Checked
from .errors import TtsRuntimeError
from .types import BOOL, NUMBER, TEXT, TOKENS, Type, is_answers, is_list

_FAILURES = (ArithmeticError, LookupError, ValueError, TypeError)


class _Finish(Exception):
    """Control flow: `finish` leaves the innermost step block."""


class _Env(dict):
    """A running program's variables, and its ``cursor`` (None in a program called from
    another: it offers no continuations)."""

    __slots__ = ("cursor",)

    def __init__(self, variables, cursor: _Cursor | None = None):
        super().__init__(variables)
        self.cursor = cursor


class _Cursor:
    """Where a program's execution stands: the frames of the compound statements it is
    inside, outermost first — ``(index in its block, …)`` with what resuming needs (the
    branch an ``if`` took; a ``for``'s items and position; a ``step``'s limit and step)."""

    __slots__ = ("frames", "resume")

    def __init__(self, resume: Callable):
        self.frames: list[tuple] = []
        self.resume = resume  # resume(variables, frames) → the program's value

    def continuation(self, env: _Env, frame: tuple) -> Callable:
        """The program at this barrier as a function of nothing: each call goes on from here
        with its own copy of the variables, and returns the program's value."""
        variables, frames, resume = dict(env), (*self.frames, frame), self.resume
        return lambda: resume(variables, frames)


class _Return(Exception):
    """Control flow: `return` leaves the program with a value."""

    def __init__(self, value):
        self.value = value


def compile_program(
    checked: Checked, name: str, models: dict, programs: dict | None = None, library: dict | None = None
) -> Program:
    """The ``ppl.Program`` for program ``name`` of a checked file, using ``models`` for ``use`` names.

    ``programs`` holds the file's programs compiled so far (name → Program), shared by all of
    them: a call to another program runs that program's function in place, so its sites are
    part of the caller's trace; one missing is compiled on first use. A program of another
    file (``use name from "f.tts"``) is compiled from that file's checked form into
    ``library`` (``id(Checked)`` → its table of programs), with the same ``models`` — the
    ``use`` names of every file are bound by name.
    """
    programs = {} if programs is None else programs
    library = {} if library is None else library
    library[id(checked)] = programs
    if name in checked.imports:
        programs[name] = _Compiler(checked, models, programs, library).program(name)
        return programs[name]
    decl = checked.programs[name]
    signature = checked.signatures[name]
    body = _Compiler(checked, models, programs, library).block(decl.body)
    python_signature = inspect.Signature(
        [inspect.Parameter(param, inspect.Parameter.POSITIONAL_OR_KEYWORD) for param, _ in signature]
    )

    def finish(go_on, env: _Env, *frames):
        try:
            go_on(env, *frames)
        except _Return as done:
            return done.value
        raise TtsRuntimeError(decl.pos, f"program '{name}' ended without a return")  # the checker prevents it

    def resume(variables: dict, frames: tuple):
        return finish(body.resume, _Env(variables, _Cursor(resume)), frames)

    def inputs(args, kwargs) -> dict:
        bound = python_signature.bind(*args, **kwargs).arguments
        return {param: _input(decl, param, t, bound[param]) for param, t in signature}

    def run(*args, **kwargs):
        return finish(body, _Env(inputs(args, kwargs)))

    def resumable(*args, **kwargs):  # as a particle's outermost program: continuations offered
        return finish(body, _Env(inputs(args, kwargs), _Cursor(resume)))

    run.__signature__ = python_signature
    run.__name__ = run.__qualname__ = name
    run.__doc__ = f"The .tts program '{name}' from {checked.filename}."
    programs[name] = Program(run, name=name, resumable=resumable)
    return programs[name]


def _input(decl: ast.ProgramDecl, param: str, t: Type, value):
    """A program input as the language sees it (lists become tuples), checked against its type."""
    if has_type(value, t):
        return tuple(value) if is_list(t) else value
    raise TtsRuntimeError(decl.pos, f"the input '{param}' of '{decl.name}' must be a {t}, got {value!r}")


def has_type(value, t: Type) -> bool:
    if t == TEXT:
        return isinstance(value, str)
    if t == BOOL:
        return isinstance(value, bool)
    if t == NUMBER:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if t == TOKENS:
        return isinstance(value, (tuple, list)) and all(
            isinstance(v, int) and not isinstance(v, bool) for v in value
        )
    if is_list(t):
        return isinstance(value, (tuple, list)) and all(has_type(v, t.element) for v in value)
    return False


def _guard(fn: Callable, pos: ast.Position) -> Callable:
    """Turn a Python failure inside ``fn`` (and inside its ``resume``, when it has one) into
    a TtsRuntimeError at ``pos``."""

    def at_pos(call: Callable, *args):
        try:
            return call(*args)
        except _FAILURES as error:
            raise TtsRuntimeError(pos, _runtime_message(error)) from None

    def guarded(env):
        return at_pos(fn, env)

    resume = getattr(fn, "resume", None)
    if resume is not None:
        guarded.resume = lambda env, frames: at_pos(resume, env, frames)
    return guarded


def _inside(env: _Env, frame: tuple, go_on: Callable, *args) -> None:
    """Run ``go_on(*args)`` with ``frame`` on the cursor (when the program keeps one)."""
    cursor = env.cursor
    if cursor is None:
        go_on(*args)
        return
    cursor.frames.append(frame)
    try:
        go_on(*args)
    finally:
        cursor.frames.pop()


def _runtime_message(error: Exception) -> str:
    if isinstance(error, ZeroDivisionError):
        return "division by zero"
    if isinstance(error, IndexError):
        return "index out of range"
    return str(error).strip("'\"") or type(error).__name__


class _Compiler:
    def __init__(self, checked: Checked, models: dict, programs: dict, library: dict):
        self.checked = checked
        self.types = checked.types
        self.calls = checked.calls
        self.models = models
        self.programs = programs
        self.library = library

    def program(self, name: str) -> Program:
        """The compiled program ``name`` (this file's, or another file's it uses), compiled now
        if it is not yet."""
        checked, programs = self.checked, self.programs
        if name in checked.imports:
            checked, name = checked.imports[name]
            programs = self.library.setdefault(id(checked), {})
        if name not in programs:
            compile_program(checked, name, self.models, programs, self.library)
        return programs[name]

    # ---- statements -------------------------------------------------------------------------------

    def block(self, statements: tuple) -> Callable:
        """The block's statements in order; ``run.resume(env, frames)`` goes on from inside the
        compound statement ``frames[0]`` names, then runs the statements after it."""
        compiled = [_guard(self.statement(s, i), s.pos) for i, s in enumerate(statements)]

        def run(env):
            for statement in compiled:
                statement(env)

        def resume(env, frames):
            index = frames[0][0]
            compiled[index].resume(env, frames)
            for statement in compiled[index + 1 :]:
                statement(env)

        run.resume = resume
        return run

    def statement(self, s, index: int) -> Callable:
        """Statement ``s``, the ``index``-th of its block; a compound one also gets a
        ``resume(env, frames)`` that goes on from inside it, ``frames[0]`` being its own."""
        if isinstance(s, (ast.Let, ast.Assign)):
            name, value = s.name, self.expr(s.value)

            def assign(env):
                env[name] = value(env)

            return assign
        if isinstance(s, ast.Extend):
            name, value = s.name, self.expr(s.value)
            add = self.adder(self.types[id(s)])

            def extend(env):
                env[name] = add(env[name], value(env))

            return extend
        if isinstance(s, ast.Choice):
            name, value = s.name, self.choice(s.value)

            def choose(env):
                env[name] = value(env)

            return choose
        if isinstance(s, ast.Score):  # a factor that zeroes the weight names its place in the file
            value, where = self.expr(s.value), str(s.pos)
            return lambda env: ppl.score(value(env), where=where)
        if isinstance(s, ast.Twist):
            value, where = self.expr(s.value), str(s.pos)
            return lambda env: ppl.twist(value(env), where=where)
        if isinstance(s, ast.Condition):
            value, where = self.expr(s.value), str(s.pos)
            reason = self.expr(s.reason) if s.reason is not None else (lambda env: None)
            return lambda env: ppl.condition(value(env), reason(env), where=where)
        if isinstance(s, ast.Observe):
            return self.observe(s)
        if isinstance(s, ast.Step):
            return self.step(s, index)
        if isinstance(s, ast.For):
            name, iterable, body = s.name, self.expr(s.iterable), self.block(s.body)

            def go_through(env, items, start):
                for position in range(start, len(items)):
                    env[name] = items[position]
                    _inside(env, (index, items, position), body, env)

            def loop(env):
                go_through(env, iterable(env), 0)

            def resume_loop(env, frames):
                _, items, position = frames[0]
                _inside(env, frames[0], body.resume, env, frames[1:])
                go_through(env, items, position + 1)

            loop.resume = resume_loop
            return loop
        if isinstance(s, ast.If):
            condition, then = self.expr(s.condition), self.block(s.then)
            otherwise = self.block(s.otherwise) if s.otherwise is not None else None

            def branch(env):
                taken = bool(condition(env))
                block = then if taken else otherwise
                if block is not None:
                    _inside(env, (index, taken), block, env)

            def resume_branch(env, frames):
                block = then if frames[0][1] else otherwise
                _inside(env, frames[0], block.resume, env, frames[1:])

            branch.resume = resume_branch
            return branch
        if isinstance(s, ast.Finish):

            def finish(env):
                raise _Finish()

            return finish
        if isinstance(s, ast.Return):
            value = self.expr(s.value)

            def return_(env):
                raise _Return(value(env))

            return return_
        raise AssertionError(f"unknown statement {s!r}")  # pragma: no cover

    def step(self, s: ast.Step, index: int) -> Callable:
        """A step block: ``ppl.steps`` with, at each barrier, the program's continuation from
        there (when it keeps a cursor); resuming at step t goes on just after its barrier."""
        limit, body = self.expr(s.max), self.block(s.body)

        def go_on(env, steps, start, inner=None):
            cursor = env.cursor
            resume = None if cursor is None else (lambda t: cursor.continuation(env, (index, steps, t)))
            for t in ppl.steps(max=steps, start=start, resume=resume):
                try:
                    if inner is not None and t == start:  # resumed inside this step's body
                        _inside(env, (index, steps, t), body.resume, env, inner)
                    else:
                        _inside(env, (index, steps, t), body, env)
                except _Finish:
                    break

        def run(env):
            go_on(env, as_count(limit(env), "step (max K)"), 0)

        def resume_step(env, frames):
            _, steps, t = frames[0]
            go_on(env, steps, t, frames[1:] or None)

        run.resume = resume_step
        return run

    def observe(self, s: ast.Observe) -> Callable:
        value, where = self.expr(s.value), str(s.pos)
        builtin, bound = self.calls[id(s.distribution)]
        arguments = self.arguments(bound)

        def observe(env):
            observed = observed_value(value(env))
            ppl.observe(builtin.run(**{k: a(env) for k, a in arguments.items()}), observed, where=where)

        return observe

    def choice(self, node) -> Callable:
        builtin, bound = self.calls[id(node)]
        if builtin.kind == "distribution":
            arguments = self.arguments(bound)
            convert = builtin.run.convert
            return _guard(
                lambda env: convert(ppl.sample(builtin.run(**{k: a(env) for k, a in arguments.items()}))),
                node.pos,
            )
        return self.call(node)

    # ---- expressions ------------------------------------------------------------------------------

    def adder(self, result_type: Type) -> Callable:
        """``left + right`` giving ``result_type``: tokens + segments concatenates token ids."""
        if result_type == TOKENS:
            return lambda left, right: left + as_tokens(right)
        return lambda left, right: left + right

    def expr(self, node) -> Callable:
        if isinstance(node, (ast.Number, ast.String, ast.Bool)):
            constant = node.value
            return lambda env: constant
        if isinstance(node, ast.Interpolation):
            parts = [(lambda env, text=p: text) if isinstance(p, str) else self.expr(p) for p in node.parts]
            return lambda env: "".join(as_display(part(env)) for part in parts)
        if isinstance(node, ast.Name):
            name = node.id
            if name in self.models:
                model = self.models[name]
                return lambda env: model
            return lambda env: env[name]
        if isinstance(node, ast.ListExpr):
            items = [self.expr(item) for item in node.items]
            return lambda env: tuple(item(env) for item in items)
        if isinstance(node, ast.Binary):
            return self.binary(node)
        if isinstance(node, ast.Logical):
            left, right = self.expr(node.left), self.expr(node.right)
            if node.op == "and":
                return lambda env: left(env) and right(env)
            return lambda env: left(env) or right(env)
        if isinstance(node, ast.Not):
            operand = self.expr(node.operand)
            return lambda env: not operand(env)
        if isinstance(node, ast.Negate):
            operand = self.expr(node.operand)
            return lambda env: -operand(env)
        if isinstance(node, ast.Index):
            target, index = self.expr(node.target), self.expr(node.index)
            return _guard(lambda env: target(env)[as_count(index(env), "an index")], node.pos)
        if isinstance(node, ast.Field):
            receiver = self.expr(node.receiver)
            if is_answers(self.types[id(node.receiver)]):
                getter = ANSWERS_FIELDS[node.name][1]
                return _guard(lambda env: getter(receiver(env)), node.pos)
            getter = SEGMENT_FIELDS[node.name][1]
            return lambda env: getter(receiver(env))
        if isinstance(node, ast.InferExpr):
            return self.nested(node)
        if isinstance(node, (ast.Call, ast.MethodCall)):
            return self.call(node)
        raise AssertionError(f"unknown expression {node!r}")  # pragma: no cover

    def binary(self, node: ast.Binary) -> Callable:
        left, right = self.expr(node.left), self.expr(node.right)
        op = node.op
        if op == "+":
            add = self.adder(self.types[id(node)])
            return lambda env: add(left(env), right(env))
        operations = {
            "-": lambda a, b: a - b,
            "*": lambda a, b: a * b,
            "/": lambda a, b: a / b,
            "==": lambda a, b: a == b,
            "!=": lambda a, b: a != b,
            "<": lambda a, b: a < b,
            "<=": lambda a, b: a <= b,
            ">": lambda a, b: a > b,
            ">=": lambda a, b: a >= b,
        }
        operation = operations[op]
        return _guard(lambda env: operation(left(env), right(env)), node.op_pos)

    def arguments(self, bound: dict) -> dict[str, Callable]:
        out = {}
        for name, arg in bound.items():
            if isinstance(arg, ast.Argument):
                out[name] = self.expr(arg.value)
            else:
                out[name] = lambda env, constant=arg: constant
        return out

    def nested(self, node: ast.InferExpr) -> Callable:
        """Nested inference: the inner program's weighted answers under its own interpreter."""
        _, bound = self.calls[id(node)]
        arguments = self.arguments(bound)
        spec, settings = self.checked.nested[id(node)]
        algorithm = spec.build(settings)
        name = node.program

        def run(env):
            problem = {k: a(env) for k, a in arguments.items()}
            return ppl.nested(self.program(name), problem, algorithm)

        return _guard(run, node.pos)

    def call(self, node) -> Callable:
        builtin, bound = self.calls[id(node)]
        arguments = self.arguments(bound)
        if builtin.kind == "program":
            name = builtin.name
            return _guard(
                lambda env: self.program(name).fn(**{k: a(env) for k, a in arguments.items()}), node.pos
            )
        run = builtin.run
        if isinstance(node, ast.MethodCall):
            receiver = self.expr(node.receiver)
            return _guard(
                lambda env: run(receiver(env), **{k: a(env) for k, a in arguments.items()}), node.pos
            )
        return _guard(lambda env: run(**{k: a(env) for k, a in arguments.items()}), node.pos)
