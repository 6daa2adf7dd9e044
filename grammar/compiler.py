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

    def run(*args, **kwargs):
        bound = python_signature.bind(*args, **kwargs).arguments
        env = {param: _input(decl, param, t, bound[param]) for param, t in signature}
        try:
            body(env)
        except _Return as done:
            return done.value
        raise TtsRuntimeError(decl.pos, f"program '{name}' ended without a return")  # the checker prevents it

    run.__signature__ = python_signature
    run.__name__ = run.__qualname__ = name
    run.__doc__ = f"The .tts program '{name}' from {checked.filename}."
    programs[name] = Program(run, name=name)
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
    """Turn a Python failure inside ``fn`` into a TtsRuntimeError at ``pos``."""

    def guarded(env):
        try:
            return fn(env)
        except _FAILURES as error:
            raise TtsRuntimeError(pos, _runtime_message(error)) from None

    return guarded


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
        compiled = [_guard(self.statement(s), s.pos) for s in statements]

        def run(env):
            for statement in compiled:
                statement(env)

        return run

    def statement(self, s) -> Callable:
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
            return self.step(s)
        if isinstance(s, ast.For):
            name, iterable, body = s.name, self.expr(s.iterable), self.block(s.body)

            def loop(env):
                for item in iterable(env):
                    env[name] = item
                    body(env)

            return loop
        if isinstance(s, ast.If):
            condition, then = self.expr(s.condition), self.block(s.then)
            otherwise = self.block(s.otherwise) if s.otherwise is not None else None

            def branch(env):
                if condition(env):
                    then(env)
                elif otherwise is not None:
                    otherwise(env)

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

    def step(self, s: ast.Step) -> Callable:
        limit, body = self.expr(s.max), self.block(s.body)

        def run(env):
            for _ in ppl.steps(max=as_count(limit(env), "step (max K)")):
                try:
                    body(env)
                except _Finish:
                    break

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
