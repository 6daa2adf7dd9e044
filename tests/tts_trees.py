"""Random ``.tts`` syntax trees, printed back to text, and grammar-aware mutations of them.

``program_tree(rng)`` builds a whole file as a tree of ``Node``s following ``tts.lark`` —
declarations, typed statements and expressions, with the built-ins' real names (read from
``ppl.grammar.builtins`` and ``ppl.algorithms.ALGORITHMS``) and a scope of declared
variables — so that most trees check and load. ``mutate(tree, rng)`` then changes one node
the way a person gets a file wrong: a subtree replaced by a fresh one of the same kind or
of another type, deleted, duplicated, swapped with a sibling, or a leaf replaced by another
terminal of the language (or a hostile one: a 500-digit number, a bad escape, a control
character). Everything is drawn from a seeded ``random.Random``: a failure names its seed.
"""

from __future__ import annotations

import contextlib
import random
import signal
from dataclasses import dataclass, field

from ppl.algorithms import ALGORITHMS
from ppl.grammar.builtins import DISTRIBUTIONS, FUNCTIONS, SEGMENT_FIELDS
from ppl.settings import REQUIRED

TYPES = ("text", "number", "bool", "tokens", "segment", "list[segment]", "list[text]")
KEYWORDS = ("version", "use", "program", "infer", "with", "let", "score", "twist", "condition", "observe",
            "step", "max", "if", "else", "finish", "return", "and", "or", "not", "true", "false", "param")  # fmt: skip
PUNCTUATION = (
    "(",
    ")",
    "[",
    "]",
    "{",
    "}",
    ",",
    "~",
    "=",
    "+=",
    "->",
    ":",
    ".",
    "+",
    "-",
    "*",
    "/",
    "<",
    "==",
    "!=",
)
HOSTILE = (
    "9" * 500,
    '"\\q"',
    '"unterminated',
    "\x00",
    "\u00e9t\u00e9",
    "1e999",
    "0.0.0",
    "#",
    "\\",
    "'",
    "@",
    "$x",
)


@dataclass
class Node:
    """A piece of the tree: its kind (``expr:number``, ``stmt``, ``decl``, ...) and its parts,
    each a text (a token) or a ``Node``. ``sep`` joins the parts when printed."""

    kind: str
    parts: list = field(default_factory=list)
    sep: str = " "

    def text(self) -> str:
        return self.sep.join(p if isinstance(p, str) else p.text() for p in self.parts)

    def nodes(self):
        yield self
        for part in self.parts:
            if isinstance(part, Node):
                yield from part.nodes()


def _string(rng: random.Random) -> str:
    words = ["a", "step", "\\\\boxed", "Yes", "answer", "\\n\\n", "x y", ""]
    return '"' + rng.choice(words) + '"'


class Generator:
    """Random well-typed programs; ``scope`` maps the variables in sight to their types."""

    def __init__(self, rng: random.Random, depth: int = 3):
        self.rng = rng
        self.depth = depth
        self.scope: dict[str, str] = {}
        self.models = ["lm"]
        self.judges: list[str] = []
        self.counter = 0

    def fresh(self) -> str:
        self.counter += 1
        return f"v{self.counter}"

    # --- expressions -----------------------------------------------------------------------

    def expr(self, type_: str, depth: int | None = None) -> Node:
        depth = self.depth if depth is None else depth
        rng = self.rng
        names = [n for n, t in self.scope.items() if t == type_]
        if names and rng.random() < 0.35:
            return Node(f"expr:{type_}", [rng.choice(names)])
        leaf = depth <= 0 or rng.random() < 0.3
        make = getattr(self, "_" + type_.replace("[", "_").replace("]", ""))
        return Node(f"expr:{type_}", make(depth - 1, leaf))

    def _number(self, depth, leaf):
        rng = self.rng
        if leaf:
            return [rng.choice(["0", "1", "2.5", "0.5", "3", "1e-3", "100"])]
        choice = rng.randrange(8)
        if choice == 0:
            return [self.expr("number", depth), rng.choice(["+", "-", "*", "/"]), self.expr("number", depth)]
        if choice == 1:
            return ["-", self.expr("number", depth)]
        if choice == 2:
            return ["(", self.expr("number", depth), ")"]
        if choice == 3:
            return [rng.choice(["log", "exp"]), "(", self.expr("number", depth), ")"]
        if choice == 4:
            return ["len", "(", self.expr(rng.choice(["text", "tokens", "list[segment]"]), depth), ")"]
        if choice == 5 and self.judges:
            method = rng.choice(["logit", "prob"])
            return [rng.choice(self.judges), ".", method, "(", self.expr("text", depth), ",",
                    self.expr(rng.choice(["list[segment]", "text"]), depth), ")"]  # fmt: skip
        if choice == 6:
            return [self.expr("segment", depth), ".", "logprob"]
        return [rng.choice(["1", "2"])]

    def _bool(self, depth, leaf):
        rng = self.rng
        if leaf:
            return [rng.choice(["true", "false"])]
        choice = rng.randrange(6)
        if choice == 0:
            return [
                self.expr("number", depth),
                rng.choice(["<", ">", "<=", ">=", "==", "!="]),
                self.expr("number", depth),
            ]
        if choice == 1:
            return [self.expr("bool", depth), rng.choice(["and", "or"]), self.expr("bool", depth)]
        if choice == 2:
            return ["not", self.expr("bool", depth)]
        if choice == 3:
            return ["contains", "(", self.expr(rng.choice(["text", "segment", "list[segment]"]), depth), ",",
                    Node("expr:text", [_string(rng)]), ")"]  # fmt: skip
        if choice == 4:
            return [self.expr("segment", depth), ".", "eos"]
        return [self.expr("text", depth), "==", self.expr("text", depth)]

    def _text(self, depth, leaf):
        rng = self.rng
        if leaf:
            return [_string(rng)]
        choice = rng.randrange(5)
        if choice == 0:
            return [self.expr("text", depth), "+", self.expr("text", depth)]
        if choice == 1:
            return [rng.choice(self.models), ".", "decode", "(", self.expr("tokens", depth), ")"]
        if choice == 2:
            return [
                rng.choice(["boxed", "text"]),
                "(",
                self.expr(rng.choice(["list[segment]", "text", "segment"]), depth),
                ")",
            ]
        if choice == 3:
            return [self.expr("segment", depth), ".", "text"]
        return [_string(rng)]

    def _tokens(self, depth, leaf):
        rng = self.rng
        lm = rng.choice(self.models)
        if leaf:
            return [lm, ".", "encode", "(", Node("expr:text", [_string(rng)]), ")"]
        choice = rng.randrange(3)
        if choice == 0:
            return [
                lm,
                ".",
                "chat",
                "(",
                "system",
                "=",
                self.expr("text", depth),
                ",",
                "user",
                "=",
                self.expr("text", depth),
                ")",
            ]
        if choice == 1:
            return [
                self.expr("tokens", depth),
                "+",
                self.expr(rng.choice(["segment", "list[segment]", "tokens"]), depth),
            ]
        return [self.expr("segment", depth), ".", "tokens"]

    def _segment(self, depth, leaf):
        # a segment only comes from a choice: use one in scope, else a list's item
        names = [n for n, t in self.scope.items() if t == "segment"]
        if names:
            return [self.rng.choice(names)]
        return [self.expr("list[segment]", depth), "[", Node("expr:number", ["0"]), "]"]

    def _list_segment(self, depth, leaf):
        names = [n for n, t in self.scope.items() if t == "segment"]
        if names and not leaf:
            return ["[", ", ".join(self.rng.sample(names, min(len(names), 2))), "]"]
        return ["[", "]"]

    def _list_text(self, depth, leaf):
        items = [self.expr("text", depth) for _ in range(self.rng.randrange(3))]
        parts = ["["]
        for i, item in enumerate(items):
            parts += ([","] if i else []) + [item]
        return [*parts, "]"]

    # --- statements ------------------------------------------------------------------------

    def statement(self, in_step: bool, depth: int) -> Node:
        rng = self.rng
        choice = rng.randrange(12)
        if choice <= 2:
            name, type_ = self.fresh(), rng.choice(TYPES[:4] + ("list[segment]", "list[text]"))
            annotated = rng.random() < 0.5 or type_.startswith("list")
            value = self.expr(type_)
            self.scope[name] = type_
            return Node(
                "stmt", ["let", name, *([":", Node("type", [type_])] if annotated else []), "=", value]
            )
        if choice == 3:
            name = self.fresh()
            lm = rng.choice(self.models)
            args = [self.expr("tokens"), ",", "max_tokens", "=", rng.choice(["1", "4", "16"])]
            if rng.random() < 0.5:
                args += [",", "stop", "=", "[", _string(rng), "]"]
            if rng.random() < 0.3:
                args += [",", "temperature", "=", rng.choice(["0.7", "1.0"])]
            self.scope[name] = "segment"
            return Node("stmt", [name, "~", lm, ".", "gen", "(", *args, ")"])
        if choice == 4:
            name = self.fresh()
            self.scope[name] = "text"
            options = ["[", _string(rng), ",", _string(rng), "]"]
            return Node(
                "stmt",
                [
                    name,
                    "~",
                    "select",
                    "(",
                    rng.choice(self.models),
                    ",",
                    self.expr("tokens"),
                    ",",
                    *options,
                    ")",
                ],
            )
        if choice == 5:
            name = self.fresh()
            dist = rng.choice(sorted(DISTRIBUTIONS))
            self.scope[name] = "number"
            return Node("stmt", [name, "~", dist, "(", *self._dist_args(dist), ")"])
        if choice == 6:
            return Node("stmt", [rng.choice(["score", "twist"]), self.expr("number")])
        if choice == 7:
            reason = [",", _string(rng)] if rng.random() < 0.5 else []
            return Node("stmt", ["condition", self.expr("bool"), *reason])
        if choice == 8:
            return Node("stmt", ["observe", self.expr("number"), "~", "normal", "(", "0", ",", "1", ")"])
        if choice == 9 and depth > 0:
            saved = dict(self.scope)
            body = self.block(True, depth - 1, finish=True)
            self.scope = saved
            return Node("stmt", ["step", "(", "max", rng.choice(["1", "2", "3"]), ")", body])
        if choice == 10 and depth > 0:
            condition = self.expr("bool")
            saved = dict(self.scope)
            then = self.block(in_step, depth - 1, finish=in_step and rng.random() < 0.5)
            self.scope = dict(saved)
            rest = []
            if rng.random() < 0.4:
                rest = ["else", self.block(in_step, depth - 1)]
            self.scope = saved
            return Node("stmt", ["if", condition, then, *rest])
        names = [
            n
            for n, t in self.scope.items()
            if t in ("text", "number", "tokens", "list[segment]", "list[text]")
        ]
        if names:
            name = rng.choice(names)
            type_ = self.scope[name]
            if type_ == "list[segment]":
                segs = [n for n, t in self.scope.items() if t == "segment"]
                if segs:
                    return Node("stmt", [name, "+=", "[", rng.choice(segs), "]"])
                return Node("stmt", [name, "=", "[", "]"])
            return Node("stmt", [name, rng.choice(["=", "+="]), self.expr(type_)])
        return Node("stmt", ["score", "0"])

    def _dist_args(self, dist: str) -> list:
        params = {
            "bernoulli": ["0.3"],
            "categorical": ["[", "0.2", ",", "0.8", "]"],
            "normal": ["0", ",", "1"],
            "uniform": ["0", ",", "1"],
            "beta": ["2", ",", "2"],
            "poisson": ["3"],
        }
        return params.get(dist, ["1"])

    def block(self, in_step: bool, depth: int, finish: bool = False) -> Node:
        statements = [self.statement(in_step, depth) for _ in range(self.rng.randrange(1, 4))]
        if finish:
            statements.append(Node("stmt", ["if", self.expr("bool", 1), Node("block", ["{", "finish", "}"])]))
        return Node("block", ["{", Node("stmts", statements, "\n  "), "}"], "\n  ")

    # --- declarations ----------------------------------------------------------------------

    def program(self, name: str) -> Node:
        rng = self.rng
        self.scope = {}
        params = []
        for i in range(rng.randrange(0, 3)):
            pname, ptype = f"p{i}", rng.choice(["text", "number"])
            self.scope[pname] = ptype
            params += ([","] if i else []) + [Node("param", [pname, ":", Node("type", [ptype])])]
        returns = rng.choice(["text", "number", "bool"])
        first = Node(
            "stmt",
            [
                "s0",
                "~",
                "lm",
                ".",
                "gen",
                "(",
                "lm",
                ".",
                "encode",
                "(",
                '"a"',
                ")",
                ",",
                "max_tokens",
                "=",
                "2",
                ")",
            ],
        )
        self.scope["s0"] = "segment"  # segments come only from choices: one for expressions to use
        body = self.block(False, 2)
        body.parts[1].parts.insert(0, first)
        body.parts[1].parts.append(Node("stmt", ["return", self.expr(returns)]))
        return Node("decl", ["program", name, "(", *params, ")", "->", Node("type", [returns]), body])

    def infer(self, program: str) -> Node:
        rng = self.rng
        name = rng.choice(sorted(ALGORITHMS))
        args = []
        for setting in ALGORITHMS[name].settings:
            if setting.default is REQUIRED or rng.random() < 0.6:
                if setting.choices:
                    value = '"' + rng.choice(setting.choices) + '"'
                elif setting.kind is int:
                    value = rng.choice(["1", "2", "4"])
                elif setting.kind is float:
                    value = rng.choice(["0.5", "1.0", "0.0"])
                elif setting.kind is bool:
                    value = rng.choice(["true", "false"])
                else:
                    value = _string(rng)
                args += ([","] if args else []) + [Node("arg", [setting.name, "=", value])]
        return Node("decl", ["infer", program, "with", name, "(", *args, ")"])


def program_tree(rng: random.Random) -> Node:
    """A whole random file: a version line, models, one or two programs, usually an infer clause."""
    gen = Generator(rng)
    decls = [
        Node("version", ["version", "0.1"]),
        Node("decl", ["use", "lm", "=", "model", "(", _string(rng), ")"]),
    ]
    if rng.random() < 0.5:
        decls.append(
            Node("decl", ["use", "prm", "=", "judge", "(", "lm", ",", "question", "=", _string(rng), ")"])
        )
        gen.judges.append("prm")
    names = [f"solve{i}" for i in range(rng.randrange(1, 3))]
    decls += [gen.program(name) for name in names]
    if rng.random() < 0.8:
        decls.append(gen.infer(rng.choice(names)))
    return Node("file", decls, "\n")


def _parents(tree: Node):
    for node in tree.nodes():
        for i, part in enumerate(node.parts):
            yield node, i, part


def mutate(tree: Node, rng: random.Random) -> Node:
    """A copy of ``tree`` with one grammar-aware change (see the module's docstring)."""
    import copy

    tree = copy.deepcopy(tree)
    spots = list(_parents(tree))
    parent, i, part = rng.choice(spots)
    how = rng.randrange(6)
    gen = Generator(rng, depth=2)
    gen.scope = {f"v{k}": rng.choice(TYPES) for k in range(1, 6)}  # names that may or may not exist
    if how == 0 and isinstance(part, Node) and part.kind.startswith("expr:"):
        parent.parts[i] = gen.expr(part.kind[5:])  # same type, fresh subtree
    elif how == 1 and isinstance(part, Node) and part.kind.startswith("expr:"):
        parent.parts[i] = gen.expr(rng.choice(TYPES))  # probably the wrong type
    elif how == 2:
        del parent.parts[i]
    elif how == 3:
        parent.parts.insert(i, copy.deepcopy(part))
    elif how == 4 and len(parent.parts) > 1:
        j = rng.randrange(len(parent.parts))
        parent.parts[i], parent.parts[j] = parent.parts[j], parent.parts[i]
    else:
        pool = (
            KEYWORDS + PUNCTUATION + HOSTILE + tuple(FUNCTIONS) + tuple(SEGMENT_FIELDS) + ("lm", "prm", "x")
        )
        parent.parts[i] = rng.choice(pool)
    return tree


class Hang(Exception):
    """An input took longer than its time limit."""


@contextlib.contextmanager
def time_limit(seconds: float, what: str):
    """Raise ``Hang`` (naming ``what``) if the block runs longer than ``seconds`` (main thread only)."""

    def expired(signum, frame):
        raise Hang(f"{what} took more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
