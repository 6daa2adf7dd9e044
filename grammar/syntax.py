"""Parsing: .tts text → the syntax tree of ``ast.py``, or a ``TtsError`` in the language's words.

The grammar is ``tts.lark`` (Lark, LALR(1), strict). Lark's exceptions never leave this
module: they become diagnostics such as ``expected ',' or ')', found the name 'x'``, with
Lark's terminal names translated into what a reader of the language sees.
"""

from __future__ import annotations

import functools
import re
from importlib import resources

from lark import Lark, Token, Transformer_NonRecursive, v_args
from lark.exceptions import LarkError, UnexpectedCharacters, UnexpectedInput, UnexpectedToken, VisitError

from . import ast
from .errors import Diagnostic, TtsError

LANGUAGE_VERSION = "0.1"

# How terminals read in messages (string terminals such as '{' or 'let' are quoted as written).
_TERMINAL_WORDS = {
    "NAME": "a name",
    "NUMBER": "a number",
    "STRING": "a string",
    "COMPARE": "a comparison",
    "MUL_OP": "'*' or '/'",
    "$END": "the end of the file",
}
_EXPRESSION_START = {"NAME", "NUMBER", "STRING", "LPAR", "LSQB", "MINUS", "NOT", "TRUE", "FALSE"}
_OPERAND_START = _EXPRESSION_START - {"NOT"}
_STATEMENT_START = {
    *("LET", "NAME", "SCORE", "TWIST", "CONDITION", "OBSERVE", "STEP", "FOR", "IF", "FINISH", "RETURN")
}
_OPERATORS = {"DOT", "LSQB", "LPAR", "PLUS", "MINUS", "MUL_OP", "COMPARE", "AND", "OR"}
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "0": "\0", "$": "$"}
_INTERPOLATED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
_MAX_NUMBER_LENGTH = 400


@functools.cache
def parser() -> Lark:
    """The Lark parser for tts.lark, built once (it is immutable once built)."""
    grammar = resources.files(__package__).joinpath("tts.lark").read_text(encoding="utf-8")
    options = dict(parser="lalr", lexer="basic", propagate_positions=True, maybe_placeholders=True)
    try:
        return Lark(grammar, strict=True, **options)
    except LarkError as error:  # strict mode needs `interegular`; the grammar is tested with it
        if "interegular" not in str(error):
            raise
        return Lark(grammar, **options)


def parse(source: str, filename: str = "<input>") -> ast.Module:
    """Parse ``source`` into a syntax tree; raise ``TtsError`` on a syntax error."""
    try:
        tree = parser().parse(source)
    except UnexpectedInput as error:
        raise TtsError([_syntax_diagnostic(error, source, filename)], source) from None
    builder = _Builder(filename)
    try:
        module = builder.transform(tree)
    except VisitError as error:  # a bug in the builder, not in the user's file
        raise error.orig_exc from None
    if builder.diagnostics:
        raise TtsError(builder.diagnostics, source)
    return module


# ---- syntax errors in the language's words -------------------------------------------------


# Characters other languages use where .tts has a word or another spelling.
_CHARACTER_HINTS = {
    "'": 'strings are written in double quotes ("..."), not single quotes',
    "&": "'&&' is written `and` in .tts",
    "|": "'||' is written `or` in .tts",
    "!": "'!' is written `not` in .tts ('!=' compares)",
}


def _syntax_diagnostic(error: UnexpectedInput, source: str, filename: str) -> Diagnostic:
    if isinstance(error, UnexpectedCharacters):
        char = source[error.pos_in_stream] if error.pos_in_stream < len(source) else ""
        position = ast.Position(filename, error.line, error.column)
        if char == '"':
            return Diagnostic(position, 'unterminated string: a string ends with " on the same line')
        if char in _CHARACTER_HINTS:
            return Diagnostic(position, _CHARACTER_HINTS[char])
        return Diagnostic(position, f"unexpected character {_show_char(char)}")
    if isinstance(error, UnexpectedToken):
        token = error.token
        if token.type == "$END":
            position = _end_position(source, filename)
        else:
            position = ast.Position(filename, token.line, token.column)
        expected = set(error.expected)
        if expected == {"VERSION"}:
            return Diagnostic(
                position, f"a .tts file starts with its version line: `version {LANGUAGE_VERSION}`"
            )
        hint = _habit_hint(token, expected, _tokens_before(source, token), source, filename)
        if hint is not None:
            return hint
        return Diagnostic(
            position, f"expected {_describe_expected(expected)}, found {_describe_token(token)}"
        )
    position = ast.Position(filename, getattr(error, "line", 1) or 1, getattr(error, "column", 1) or 1)
    return Diagnostic(position, "unexpected end of the file")


_DECLARATION_START = {"PROGRAM", "USE", "PARAM", "INFER", "$END"}
_LOOPS = ("for", "while")


def _tokens_before(source: str, token: Token) -> list[Token]:
    """The tokens of ``source`` before the offending one, from Lark's own lexer."""
    end = len(source) if token.type == "$END" else token.start_pos
    tokens = []
    try:
        for t in parser().lex(source):
            if t.start_pos >= end:
                break
            tokens.append(t)
    except UnexpectedInput:  # a bad character after the error: the tokens before it suffice
        pass
    return tokens


def _habit_hint(token: Token, expected: set[str], before: list[Token], source: str, filename: str):
    """A specific message for a mistake habits from Python bring, read from the token stream
    and the parser's expectations: ``for``/``while`` loops, ``elif``, blocks opened with ``:``,
    ``=`` where ``==`` compares, and a ``{`` that is never closed (reported at the brace)."""
    here = ast.Position(filename, token.line, token.column) if token.type != "$END" else None
    previous = before[-1] if before else None
    if token.type in _DECLARATION_START and "RBRACE" in expected:
        brace = _unclosed_brace(before, source)
        if brace is not None:
            if token.type == "$END":
                reached = "the file ends before it is"
            else:
                reached = f"{_describe_token(token)} on line {token.line} comes before it"
            return Diagnostic(
                ast.Position(filename, brace.line, brace.column),
                f"this '{{' is never closed: add its '}}' ({reached})",
            )
    if previous is not None and previous.type == "NAME" and previous.value in _LOOPS:
        return Diagnostic(
            ast.Position(filename, previous.line, previous.column),
            f".tts has no `{previous.value}` loop: repeat with `step (max N) {{ ... }}` "
            "(a step barrier between iterations; `finish` ends early)",
        )
    if previous is not None and previous.type == "NAME" and previous.value == "elif":
        return Diagnostic(
            ast.Position(filename, previous.line, previous.column), "write `else if`, not `elif`"
        )
    if token.type == "COLON" and "LBRACE" in expected:
        return Diagnostic(here, "a block is written in braces, `{ ... }`, not with ':' and indentation")
    if token.type == "EQUAL" and "COMPARE" in expected:
        return Diagnostic(here, "'=' gives a variable a new value; to compare, write '=='")
    return None


def _unclosed_brace(tokens: list[Token], source: str) -> Token | None:
    """The '{' that was never closed. Braces are matched innermost first; where a '}' that
    starts its line is indented differently from the line of the '{' it closes, that '{' is
    the likelier culprit (the '}' belonged to an outer block)."""
    lines = source.splitlines()

    def indent(line: int) -> int:
        text = lines[line - 1] if 0 < line <= len(lines) else ""
        return len(text) - len(text.lstrip())

    open_braces: list[Token] = []
    suspect: Token | None = None
    for t in tokens:
        if t.type == "LBRACE":
            open_braces.append(t)
        elif t.type == "RBRACE" and open_braces:
            opened = open_braces.pop()
            starts_line = indent(t.line) == t.column - 1
            if suspect is None and starts_line and t.column - 1 != indent(opened.line):
                suspect = opened
    if not open_braces:
        return None
    return suspect or open_braces[-1]


def _end_position(source: str, filename: str) -> ast.Position:
    line = source.count("\n") + 1
    column = len(source) - (source.rfind("\n") + 1) + 1
    return ast.Position(filename, line, column)


def _show_char(char: str) -> str:
    if char.isprintable() and char not in " '":
        return f"'{char}'"
    return f"U+{ord(char):04X}" if char else "the end of the file"


def _terminal_word(name: str) -> str:
    if name in _TERMINAL_WORDS:
        return _TERMINAL_WORDS[name]
    for terminal in parser().terminals:
        if terminal.name == name and terminal.pattern.type == "str":
            return f"'{terminal.pattern.value}'"
    return name.lower()


def _describe_expected(expected: set[str]) -> str:
    words = []
    if expected >= _STATEMENT_START:
        expected -= _STATEMENT_START
        words.append("a statement")
    if expected >= _OPERAND_START:
        expected -= _EXPRESSION_START
        words.append("an expression")
    if len(expected & _OPERATORS) >= 3:
        expected -= _OPERATORS
        words.append("an operator")
    words += sorted(_terminal_word(name) for name in expected)
    if len(words) == 1:
        return words[0]
    return ", ".join(words[:-1]) + " or " + words[-1]


def _describe_token(token: Token) -> str:
    if token.type == "$END":
        return "the end of the file"
    if token.type == "NAME":
        return f"the name '{token.value}'"
    if token.type == "NUMBER":
        return f"the number {token.value[:20]}"
    if token.type == "STRING":
        return "a string"
    if token.value.isalpha():
        return f"the keyword '{token.value}'"
    return f"'{token.value}'"


# ---- parse tree → syntax tree ----------------------------------------------------------------


@v_args(meta=True)
class _Builder(Transformer_NonRecursive):
    """Builds the frozen dataclasses of ``ast.py`` bottom-up, without recursion."""

    def __init__(self, filename: str):
        super().__init__()
        self.filename = filename
        self.diagnostics: list[Diagnostic] = []

    def _pos(self, meta) -> ast.Position:
        if getattr(meta, "empty", True):
            return ast.Position(self.filename, 1, 1)
        return ast.Position(self.filename, meta.line, meta.column)

    def _tok(self, token: Token) -> ast.Position:
        return ast.Position(self.filename, token.line, token.column)

    # file and declarations

    def start(self, meta, children):
        (version, version_pos), *declarations = children
        return ast.Module(self._pos(meta), version, version_pos, tuple(declarations))

    def version_line(self, meta, children):
        return str(children[0]), self._tok(children[0])

    def use_decl(self, meta, children):
        name, value = children
        return ast.Use(self._pos(meta), str(name), value)

    def import_decl(self, meta, children):
        *names, path = children
        parts = self._unescape(path)
        if not all(isinstance(p, str) for p in parts):
            self.diagnostics.append(
                Diagnostic(self._tok(path), "the file of a `use ... from` is written out, without ${...}")
            )
        text = "".join(p for p in parts if isinstance(p, str))
        return ast.Import(
            self._pos(meta), tuple((str(n), self._tok(n)) for n in names), text, self._tok(path)
        )

    def param_decl(self, meta, children):
        name, value = children
        return ast.ParamDecl(self._pos(meta), str(name), value, meta.start_pos, meta.end_pos)

    def program_decl(self, meta, children):
        name, *params, returns, body = children
        params = tuple(p for p in params if p is not None)
        return ast.ProgramDecl(self._pos(meta), str(name), params, returns, body)

    def param(self, meta, children):
        name, type_ = children
        return ast.Param(self._tok(name), str(name), type_)

    def infer_decl(self, meta, children):
        program, algorithm, *settings = children
        settings = tuple(s for s in settings if s is not None)
        return ast.Infer(
            self._pos(meta), str(program), self._tok(program), str(algorithm), self._tok(algorithm), settings
        )

    # types

    def simple_type(self, meta, children):
        return ast.TypeExpr(self._pos(meta), str(children[0]))

    def list_type(self, meta, children):
        name, element = children
        return ast.TypeExpr(self._pos(meta), str(name), element)

    # statements

    def block(self, meta, children):
        return tuple(children)

    def let_stmt(self, meta, children):
        name, type_, value = children
        return ast.Let(self._pos(meta), str(name), type_, value)

    def assign_stmt(self, meta, children):
        return ast.Assign(self._pos(meta), str(children[0]), children[1])

    def extend_stmt(self, meta, children):
        return ast.Extend(self._pos(meta), str(children[0]), children[1])

    def choice_stmt(self, meta, children):
        return ast.Choice(self._pos(meta), str(children[0]), children[1])

    def score_stmt(self, meta, children):
        return ast.Score(self._pos(meta), children[0])

    def twist_stmt(self, meta, children):
        return ast.Twist(self._pos(meta), children[0])

    def condition_stmt(self, meta, children):
        return ast.Condition(self._pos(meta), children[0], children[1])

    def observe_stmt(self, meta, children):
        return ast.Observe(self._pos(meta), children[0], children[1])

    def step_stmt(self, meta, children):
        return ast.Step(self._pos(meta), children[0], children[1])

    def for_stmt(self, meta, children):
        name, iterable, body = children
        return ast.For(self._pos(meta), str(name), iterable, body)

    def infer_expr(self, meta, children):
        program, *rest = children
        split = next(i for i, c in enumerate(rest) if isinstance(c, Token) and c.type == "NAME")
        args = tuple(a for a in rest[:split] if a is not None)
        algorithm, settings = rest[split], tuple(a for a in rest[split + 1 :] if a is not None)
        return ast.InferExpr(
            self._pos(meta),
            str(program),
            self._tok(program),
            args,
            str(algorithm),
            self._tok(algorithm),
            settings,
        )

    def if_stmt(self, meta, children):
        condition, then, otherwise = children
        if isinstance(otherwise, ast.If):
            otherwise = (otherwise,)
        return ast.If(self._pos(meta), condition, then, otherwise)

    def finish_stmt(self, meta, children):
        return ast.Finish(self._pos(meta))

    def return_stmt(self, meta, children):
        return ast.Return(self._pos(meta), children[0])

    # expressions

    def or_op(self, meta, children):
        return ast.Logical(self._pos(meta), "or", children[0], children[1])

    def and_op(self, meta, children):
        return ast.Logical(self._pos(meta), "and", children[0], children[1])

    def not_op(self, meta, children):
        return ast.Not(self._pos(meta), children[0])

    def compare(self, meta, children):
        left, op, right = children
        return ast.Binary(self._pos(meta), str(op), self._tok(op), left, right)

    binary = compare

    def negate(self, meta, children):
        return ast.Negate(self._pos(meta), children[1])

    def call(self, meta, children):
        name, *args = children
        return ast.Call(self._pos(meta), str(name), tuple(a for a in args if a is not None))

    def method_call(self, meta, children):
        receiver, method, *args = children
        args = tuple(a for a in args if a is not None)
        return ast.MethodCall(self._pos(meta), receiver, str(method), self._tok(method), args)

    def field(self, meta, children):
        receiver, name = children
        return ast.Field(self._pos(meta), receiver, str(name), self._tok(name))

    def index(self, meta, children):
        return ast.Index(self._pos(meta), children[0], children[1])

    def name(self, meta, children):
        return ast.Name(self._tok(children[0]), str(children[0]))

    def number(self, meta, children):
        token = children[0]
        text = str(token)
        if len(text) > _MAX_NUMBER_LENGTH:
            self.diagnostics.append(Diagnostic(self._tok(token), "this number is too long"))
            return ast.Number(self._tok(token), 0)
        is_float = any(c in text for c in ".eE")
        return ast.Number(self._tok(token), float(text) if is_float else int(text))

    def string(self, meta, children):
        token = children[0]
        parts = self._unescape(token)
        if all(isinstance(p, str) for p in parts):
            return ast.String(self._tok(token), "".join(parts))
        return ast.Interpolation(self._tok(token), tuple(parts))

    def true(self, meta, children):
        return ast.Bool(self._pos(meta), True)

    def false(self, meta, children):
        return ast.Bool(self._pos(meta), False)

    def list(self, meta, children):
        return ast.ListExpr(self._pos(meta), tuple(c for c in children if c is not None))

    def argument(self, meta, children):
        value = children[0]
        return ast.Argument(value.pos, None, value)

    def keyword_argument(self, meta, children):
        name, value = children
        return ast.Argument(self._tok(name), str(name), value)

    def _unescape(self, token: Token) -> list:
        """The string's parts: texts between the quotes, with \\n \\t \\r \\\\ \\" \\0 \\$ decoded, and
        the expression of each ``${name}`` or ``${name.field}`` (string interpolation)."""
        body, out, i = str(token)[1:-1], [], 0
        while i < len(body):
            char = body[i]
            if char == "$" and body.startswith("${", i):
                end = body.find("}", i)
                column = token.column + 1 + i
                inner = body[i + 2 : end] if end >= 0 else body[i + 2 :]
                if end < 0 or not _INTERPOLATED.fullmatch(inner.strip()):
                    problem = "an unclosed ${" if end < 0 else f"${{{inner}}}"
                    self.diagnostics.append(
                        Diagnostic(
                            ast.Position(self.filename, token.line, column),
                            f"{problem} in a string: inside ${{...}} write a name or a field "
                            "(${answer}, ${s.text}); write \\$ for a literal $",
                        )
                    )
                    i = len(body) if end < 0 else end + 1
                    continue
                start = column + 2 + (len(inner) - len(inner.lstrip()))
                names = inner.strip().split(".")
                node = ast.Name(ast.Position(self.filename, token.line, start), names[0])
                offset = start + len(names[0]) + 1
                for name in names[1:]:
                    name_pos = ast.Position(self.filename, token.line, offset)
                    node = ast.Field(node.pos, node, name, name_pos)
                    offset += len(name) + 1
                out.append(node)
                i = end + 1
                continue
            if char != "\\":
                out.append(char)
                i += 1
                continue
            escaped = body[i + 1]
            if escaped not in _ESCAPES:
                position = ast.Position(self.filename, token.line, token.column + 1 + i)
                self.diagnostics.append(
                    Diagnostic(
                        position,
                        f"unknown escape '\\{escaped}' in a string; the escapes are "
                        + " ".join("\\" + e for e in _ESCAPES),
                    )
                )
            out.append(_ESCAPES.get(escaped, escaped))
            i += 2
        parts: list = []  # runs of characters joined into texts, expressions as they are
        for part in out:
            if isinstance(part, str) and parts and isinstance(parts[-1], str):
                parts[-1] += part
            else:
                parts.append(part)
        return parts or [""]
