"""Static checks of a parsed .tts file, all reported at once and before any engine starts.

The checker resolves names, infers and checks types, binds call arguments to the built-ins'
signatures (unknown, repeated or missing keyword arguments), checks that random choices
stand after ``~``, that ``finish`` is inside a step, that every program returns, and that
the ``use`` and ``infer`` declarations name known backends, algorithms and settings —
known from the ``Catalog`` the caller passes: the grammar imports no interpreter or engine.

It does not change the tree: what the compiler needs (the type of each expression, the
bound arguments of each call) is kept in side tables keyed by node identity.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ppl.constraints import Constraint
from ppl.settings import AlgorithmSpec, Setting

from . import ast
from .builtins import (
    ANSWERS_FIELDS,
    CONSTRAINT_PARAMS,
    DECLARATIONS,
    DISTRIBUTIONS,
    FUNCTIONS,
    METHODS,
    MODEL_METHODS,
    REQUIRED,
    SEGMENT_FIELDS,
    TEXT_LIKE,
    TOKENS_LIKE,
    Builtin,
    Param,
)
from .catalog import Catalog
from .errors import Diagnostic, TtsError
from .source import read_source
from .syntax import LANGUAGE_VERSION
from .syntax import parse as _parse
from .types import (
    BOOL,
    ERROR,
    INPUT_TYPES,
    JUDGE,
    MODEL,
    NUMBER,
    PRM,
    PYTHON,
    RETRIEVER,
    SIMPLE,
    TEXT,
    TOKENS,
    UNKNOWN,
    VERIFIER,
    Type,
    answers_of,
    describe,
    fits,
    is_answers,
    is_list,
    list_of,
    unify,
)

_PYTHON_WORDS = {"True": "`true`", "False": "`false`", "None": "no None (every value has a type)"}
USE_TYPES = {
    "model": MODEL,
    "judge": JUDGE,
    "prm": PRM,
    "verifier": VERIFIER,
    "python": PYTHON,
    "retriever": RETRIEVER,
}  # what each kind of `use` declares
MAX_DEPTH = 100  # nesting of expressions and blocks; deeper files are rejected, not crashed on


@dataclass
class Variable:
    type: Type
    pos: ast.Position
    kind: str = "variable"  # "variable", "parameter", "model", "judge", "prm"


@dataclass(frozen=True)
class UseInfo:
    """A checked ``use`` declaration: ``kind`` is "model", "judge" or "prm"."""

    name: str
    kind: str
    settings: dict
    pos: ast.Position
    settings_pos: dict


@dataclass(frozen=True)
class InferInfo:
    """A checked ``infer`` clause, with every setting filled in (defaults included)."""

    program: str
    algorithm: str
    settings: dict
    pos: ast.Position
    spec: AlgorithmSpec | None = field(default=None, compare=False, repr=False)  # builds the interpreter

    def describe(self) -> str:
        settings = ", ".join(f"{k} = {v!r}".replace("'", '"') for k, v in self.settings.items())
        return f"infer {self.program} with {self.algorithm}({settings})"


@dataclass
class Checked:
    """A file that passed every check, with what the compiler needs."""

    module: ast.Module
    source: str
    filename: str
    uses: dict[str, UseInfo]
    programs: dict[str, ast.ProgramDecl]
    signatures: dict[str, tuple[tuple[str, Type], ...]]
    returns: dict[str, Type]
    infer: InferInfo | None
    types: dict[int, Type] = field(repr=False)
    calls: dict[int, tuple[Builtin, dict]] = field(repr=False)
    nested: dict[int, tuple[AlgorithmSpec, dict]] = field(default_factory=dict, repr=False)
    # ``use a from "f.tts"``: each imported name → (the checked file that defines it, its name there)
    imports: dict[str, tuple[Checked, str]] = field(default_factory=dict, repr=False)
    sources: dict[str, str] = field(default_factory=dict, repr=False)  # every file read: name → text
    params: Any = None  # the file's ParamSpace (grammar/params.py): its params and their values


def check(
    module: ast.Module,
    source: str,
    filename: str,
    catalog: Catalog,
    *,
    files: dict | None = None,
    chain: tuple[str, ...] = (),
) -> Checked:
    """Check a parsed file against ``catalog``; raise ``TtsError`` with every problem found.

    The files it uses (``use a from "f.tts"``) are read and checked too; ``files`` caches them
    by resolved path (a file used twice is checked once), ``chain`` is the files being checked
    that led here (a file that uses one of them is a cycle).
    """
    checker = _Checker(filename, catalog, {} if files is None else files, chain)
    checked = checker.run(module, source)
    if checker.diagnostics:
        raise TtsError(checker.diagnostics, source, checker.sources)
    return checked


def _resolved(filename: str) -> str:
    """The identity of a file: its resolved path (source text that is no file: its name)."""
    return filename if filename.startswith("<") else str(Path(filename).resolve())


def _a(t: Type) -> str:
    """``a text``, ``an …``, ``a list[number]``."""
    name = str(t)
    return ("an " if name[0] in "aeiou" else "a ") + name


class _Checker:
    def __init__(self, filename: str, catalog: Catalog, files: dict, chain: tuple[str, ...]):
        self.filename = filename
        self.catalog = catalog
        self.files = files  # resolved path → its Checked (None: it has errors), shared by every file
        self.chain = (*chain, _resolved(filename))
        self.sources: dict[str, str] = {}  # the other files whose errors are reported
        self.unresolved: set[str] = set()  # imported names whose file could not be used
        self.diagnostics: list[Diagnostic] = []
        self.types: dict[int, Type] = {}
        self.calls: dict[int, tuple[Builtin, dict]] = {}
        self.scopes: list[dict[str, Variable]] = []
        self.step_depth = 0
        self.return_type: Type = ERROR
        self.too_deep = False
        self.binding = "x"  # the name a random choice would be bound to, for messages
        self.program_types: dict[str, tuple[tuple, Type]] = {}  # signatures, known before bodies
        self.current = ""  # the program being checked
        self.edges: dict[str, list[tuple[str, ast.Position]]] = {}  # program → the programs it calls
        self.nested: dict[int, tuple[AlgorithmSpec, dict]] = {}

    def error(self, pos: ast.Position, message: str) -> None:
        self.diagnostics.append(Diagnostic(pos, message))

    # ---- the file ---------------------------------------------------------------------------

    def run(self, module: ast.Module, source: str) -> Checked:
        if module.version != LANGUAGE_VERSION:
            self.error(
                module.version_pos,
                f"unsupported version {module.version}: this ppl reads version {LANGUAGE_VERSION}",
            )
        globals_: dict[str, Variable] = {}
        self.scopes = [globals_]
        uses: dict[str, UseInfo] = {}
        programs: dict[str, ast.ProgramDecl] = {}
        defined: dict[str, ast.Position] = {}
        infer_decls, import_decls = [], []
        for decl in module.declarations:
            if isinstance(decl, ast.Infer):
                infer_decls.append(decl)
                continue
            if isinstance(decl, ast.Import):
                import_decls.append(decl)
                continue
            if decl.name in defined:
                self.error(decl.pos, f"'{decl.name}' is already defined at line {defined[decl.name].line}")
                continue
            defined[decl.name] = decl.pos
            if isinstance(decl, ast.ParamDecl):  # its uses were replaced by its value (params.py)
                continue
            if isinstance(decl, ast.Use):
                info = self.check_use(decl, globals_)
                if info is not None:
                    uses[decl.name] = info
                    globals_[decl.name] = Variable(USE_TYPES[info.kind], decl.pos, info.kind)
                else:
                    globals_[decl.name] = Variable(ERROR, decl.pos, "model")
            else:
                programs[decl.name] = decl
        imports = self.check_imports(import_decls, defined, uses)
        signatures, returns = {}, {}
        for name, (other, original) in imports.items():
            self.program_types[name] = (other.signatures[original], other.returns[original])
        scopes = {}
        for program in programs.values():
            scopes[program.name], signature, returned = self.program_signature(program)
            self.program_types[program.name] = (signature, returned)
        for name in imports:
            signatures[name], returns[name] = self.program_types[name]
        for program in programs.values():
            signatures[program.name], returns[program.name] = self.program_types[program.name]
            self.check_program(program, scopes[program.name])
        self.check_recursion()
        infer = None
        for i, decl in enumerate(infer_decls):
            if i:
                self.error(
                    decl.pos,
                    f"only one infer clause per file (the first is at line {infer_decls[0].pos.line})",
                )
            else:
                infer = self.check_infer(decl, {**programs, **imports})
        sources = {self.filename: source}
        for other in {id(c): c for c, _ in imports.values()}.values():
            sources.update(other.sources)
        return Checked(
            module,
            source,
            self.filename,
            uses,
            programs,
            signatures,
            returns,
            infer,
            self.types,
            self.calls,
            self.nested,
            imports,
            sources,
        )

    # ---- programs of other files ------------------------------------------------------------

    def check_imports(
        self, decls: list[ast.Import], defined: dict[str, ast.Position], uses: dict[str, UseInfo]
    ) -> dict[str, tuple[Checked, str]]:
        """The programs each ``use a, b from "f.tts"`` names, and the ``use`` declarations they
        bring, added to ``uses`` (bound by name: this file's own declaration of a name wins;
        two files declaring one name differently need it declared here)."""
        imports: dict[str, tuple[Checked, str]] = {}
        brought: dict[str, tuple[UseInfo, str]] = {}  # a use from another file → (it, that file)
        for decl in decls:
            other = self.read_import(decl)
            for name, pos in decl.names:
                if name in defined:
                    self.error(pos, f"'{name}' is already defined at line {defined[name].line}")
                    continue
                defined[name] = pos
                if other is None:
                    self.unresolved.add(name)
                    continue
                if name not in other.signatures:
                    self.unresolved.add(name)
                    self.error(pos, f"\"{decl.path}\" has no program '{name}'" + _choices(other.signatures))
                    continue
                imports[name] = other.imports.get(name, (other, name))
            if other is None:
                continue
            for name, info in other.uses.items():
                mine = uses.get(name)
                if mine is not None and name not in brought:
                    if mine.kind != info.kind:
                        self.error(
                            decl.path_pos,
                            f"'{name}' is {_a_kind(mine.kind)} here (line {mine.pos.line}) but "
                            f'{_a_kind(info.kind)} in "{decl.path}", whose programs use it by that name',
                        )
                    continue
                if name in brought and _differs(brought[name][0], info):
                    first, where = brought[name]
                    self.error(
                        decl.path_pos,
                        f"'{name}' is declared differently in \"{where}\" (line {first.pos.line}) and in "
                        f"\"{decl.path}\" (line {info.pos.line}): declare '{name}' in this file to choose one",
                    )
                    continue
                if name not in brought:
                    brought[name] = (info, decl.path)
                    uses[name] = info
        return imports

    def read_import(self, decl: ast.Import) -> Checked | None:
        """The checked file a ``use ... from`` names, its path relative to this file's folder;
        None (with the problem reported at the path) if it is missing, in a cycle, or has errors."""
        here = Path(self.filename).parent if not self.filename.startswith("<") else Path()
        path = here / decl.path
        key = _resolved(str(path))
        if key in self.chain:
            names = [Path(p).name for p in self.chain[self.chain.index(key) :]]
            cycle = " → ".join([*names, Path(key).name])
            self.error(
                decl.path_pos,
                f'"{decl.path}" is already being read ({cycle}): files cannot use each other in a cycle',
            )
            return None
        if key in self.files:
            other = self.files[key]
            if other is None:
                self.error(decl.path_pos, f'cannot use "{decl.path}": it has errors')
            return other
        if not path.exists():
            self.error(decl.path_pos, f'cannot use "{decl.path}": there is no file {path}')
            return None
        if not path.is_file():  # a folder, a device: never read (a FIFO or /dev/zero would hang)
            self.error(decl.path_pos, f'cannot use "{decl.path}": {path} is not a file')
            return None
        try:
            text, filename = read_source(path)
        except OSError as error:
            self.error(decl.path_pos, f'cannot use "{decl.path}": {error.strerror or error}')
            return None
        except TtsError as error:
            return self.import_failed(decl, key, error)
        try:
            other = check(
                _parse(text, filename), text, filename, self.catalog, files=self.files, chain=self.chain
            )
        except TtsError as error:
            return self.import_failed(decl, key, error, text, filename)
        self.files[key] = other
        return other

    def import_failed(self, decl, key, error: TtsError, text=None, filename=None) -> None:
        """A used file with errors: reported at the path, and its own errors at their places."""
        self.files[key] = None
        count = len(error.diagnostics)
        self.error(decl.path_pos, f'cannot use "{decl.path}": it has {count} error{"s" if count > 1 else ""}')
        self.diagnostics.extend(error.diagnostics)
        if filename is not None:
            self.sources[filename] = text
        self.sources.update(error.sources)
        return None

    def check_use(self, decl: ast.Use, globals_: dict[str, Variable]) -> UseInfo | None:
        value = decl.value
        if not isinstance(value, ast.Call) or value.function not in DECLARATIONS:
            self.error(
                getattr(value, "pos", decl.pos),
                'a use declaration is `use name = model("...")`, `use name = judge(model, question = "...")` '
                "or `use name = prm(model)`",
            )
            return None
        builtin = DECLARATIONS[value.function]
        bound = self.bind(builtin, value.args, value.function, value.pos)
        if bound is None:
            return None
        settings, positions = {}, {}
        for param in builtin.params:
            arg = bound[param.name]
            if arg is REQUIRED or not isinstance(arg, ast.Argument):
                settings[param.name] = arg
                continue
            positions[param.name] = arg.value.pos
            if param.types == (MODEL,):
                node = arg.value
                if (
                    not isinstance(node, ast.Name)
                    or globals_.get(node.id, Variable(ERROR, node.pos)).type != MODEL
                ):
                    self.error(
                        node.pos,
                        f"the argument '{param.name}' of {value.function} must name a model declared with use",
                    )
                    return None
                settings[param.name] = node.id
            elif isinstance(arg.value, ast.String) and TEXT in param.types:
                settings[param.name] = arg.value.value
            elif isinstance(arg.value, ast.Number) and NUMBER in param.types:
                if arg.value.value <= 0:
                    self.error(
                        arg.value.pos, f"the argument '{param.name}' of {value.function} must be positive"
                    )
                    return None
                settings[param.name] = arg.value.value
            elif NUMBER in param.types:
                self.error(arg.value.pos, f"the argument '{param.name}' of {value.function} must be a number")
                return None
            else:
                self.error(arg.value.pos, f"the argument '{param.name}' of {value.function} must be a string")
                return None
        backend = settings.get("backend") if value.function in ("model", "prm") else None
        if backend is not None and backend not in self.catalog.backends:
            self.error(
                positions["backend"],
                f"unknown backend '{backend}'; the backends are {self.catalog.backend_names()}",
            )
            return None
        if value.function == "prm" and not self.check_prm(settings, positions, value.pos):
            return None
        verifiers = self.catalog.verifiers
        if value.function == "verifier" and verifiers and settings["name"] not in verifiers:
            self.error(
                positions["name"],
                f"unknown verifier '{settings['name']}'; the verifiers are {', '.join(sorted(verifiers))}",
            )
            return None
        return UseInfo(decl.name, value.function, settings, decl.pos, positions)

    def check_prm(self, settings: dict, positions: dict, pos: ast.Position) -> bool:
        """A prm names exactly one source (a declared model, or a PRM by name) and a known aggregation."""
        aggregations = self.catalog.prm_aggregations
        if (settings.get("model") is None) == (settings.get("name") is None):
            self.error(
                pos,
                "a prm needs exactly one of model = <a model declared with use> (the model judges "
                'each step) or name = "<a PRM model>" (served by vLLM pooling)',
            )
            return False
        if settings["aggregate"] not in aggregations:
            self.error(
                positions.get("aggregate", pos),
                f"unknown aggregation '{settings['aggregate']}'; the aggregations are {', '.join(aggregations)}",
            )
            return False
        if settings.get("name") is not None and settings.get("question") is not None:
            self.error(
                positions["question"],
                "question goes with model = ...: a PRM served by name has its own format",
            )
            return False
        if settings.get("model") is not None and settings.get("backend") is not None:
            self.error(
                positions["backend"], "backend goes with name = ...: prm(model) runs on that model's backend"
            )
            return False
        return True

    def check_infer(self, decl: ast.Infer, programs: dict) -> InferInfo | None:
        ok = True
        if decl.program not in programs:
            self.error(decl.program_pos, f"unknown program '{decl.program}'" + _choices(programs))
            ok = False
        checked = self.algorithm(decl.algorithm, decl.algorithm_pos, decl.settings)
        if checked is None or not ok:
            return None
        spec, settings = checked
        return InferInfo(decl.program, decl.algorithm, settings, decl.pos, spec)

    def algorithm(self, name: str, pos: ast.Position, given: tuple) -> tuple[AlgorithmSpec, dict] | None:
        """An interpreter and its settings, written out (an ``infer`` clause or expression)."""
        spec = self.catalog.algorithms.get(name)
        if spec is None:
            self.error(
                pos, f"unknown algorithm '{name}'; the algorithms are {self.catalog.algorithm_names()}"
            )
            return None
        params = tuple(_param(setting) for setting in spec.settings)
        signature = Builtin(name, params, ERROR, "algorithm", None)
        bound = self.bind(signature, given, name, pos)
        if bound is None:
            return None
        ok = True
        settings = {}
        for setting, param in zip(spec.settings, params):
            arg = bound[param.name]
            if not isinstance(arg, ast.Argument):
                settings[param.name] = arg
                continue
            node = arg.value
            if isinstance(node, ast.Negate) and isinstance(node.operand, ast.Number):
                node = ast.Number(node.pos, -node.operand.value)  # `threshold = -1`
            if not isinstance(node, (ast.Number, ast.String)):
                self.error(node.pos, f"the setting '{param.name}' must be a number or a string written out")
                ok = False
                continue
            if not any(
                fits(SIMPLE["number" if isinstance(node, ast.Number) else "text"], t) for t in param.types
            ):
                self.error(node.pos, f"the setting '{param.name}' must be {_a(param.types[0])}")
                ok = False
                continue
            settings[param.name] = node.value
            problem = setting.problem(_whole(node.value), name=setting.name, style="tts")
            if problem is not None:
                self.error(node.pos, problem)
                ok = False
        if not ok:
            return None
        try:  # the interpreter validates its settings together (e.g. burn < steps)
            spec.build(settings)
        except ValueError as error:
            self.error(pos, f"{name}(): {error}")
            return None
        return spec, settings

    # ---- programs -------------------------------------------------------------------------------

    def resolve_type(self, texpr: ast.TypeExpr, inputs: bool = False) -> Type:
        if texpr.name == "list":
            if texpr.element is None:
                self.error(texpr.pos, "list needs an element type, like list[text]")
                return ERROR
            element = self.resolve_type(texpr.element, inputs)
            return list_of(element) if element != ERROR else ERROR
        if texpr.element is not None:
            self.error(texpr.pos, f"only list takes an element type, not {texpr.name}")
            return ERROR
        if texpr.name not in SIMPLE:
            self.error(
                texpr.pos,
                f"unknown type '{texpr.name}'; the types are text, tokens, segment, number, bool and list[T]",
            )
            return ERROR
        if inputs and texpr.name not in INPUT_TYPES:
            self.error(
                texpr.pos,
                f"a program's inputs are {', '.join(INPUT_TYPES)} or lists of them, not {texpr.name}",
            )
            return ERROR
        return SIMPLE[texpr.name]

    def program_signature(self, program: ast.ProgramDecl):
        """A program's inputs and result type, known before any body is checked (programs call
        each other in any order)."""
        scope: dict[str, Variable] = {}
        signature = []
        for param in program.params:
            t = self.resolve_type(param.type, inputs=True)
            if param.name in scope:
                self.error(param.pos, f"the input '{param.name}' is repeated")
                continue
            if self.lookup(param.name) is not None:
                self.error(
                    param.pos, f"'{param.name}' is already defined at line {self.lookup(param.name).pos.line}"
                )
            scope[param.name] = Variable(t, param.pos, "parameter")
            signature.append((param.name, t))
        return scope, tuple(signature), self.resolve_type(program.returns)

    def check_program(self, program: ast.ProgramDecl, scope: dict[str, Variable]) -> None:
        self.return_type = self.program_types[program.name][1]
        self.current = program.name
        self.edges.setdefault(program.name, [])
        self.scopes.append({k: Variable(v.type, v.pos, v.kind) for k, v in scope.items()})
        self.step_depth = 0
        self.check_block(program.body, depth=1, new_scope=False)
        self.scopes.pop()
        if not self.too_deep and not _always_returns(program.body):
            self.error(
                program.pos,
                f"program '{program.name}' can end without returning {_a(self.return_type)}: "
                "end it with `return ...`",
            )

    def check_recursion(self) -> None:
        """A program may call others, never itself (directly or through others): a call tree is
        finite, so every trace is."""
        reported: set[str] = set()
        for start in self.edges:
            stack = [(start, [start])]
            seen = set()
            while stack:
                name, path = stack.pop()
                for callee, pos in self.edges.get(name, ()):
                    if callee == start and start not in reported:
                        cycle = " → ".join([*path, start])
                        self.error(
                            pos, f"program '{start}' calls itself ({cycle}): programs cannot be recursive"
                        )
                        reported.update(path)
                    elif callee not in seen:
                        seen.add(callee)
                        stack.append((callee, [*path, callee]))

    def program_builtin(self, name: str) -> Builtin:
        """A program as the checker binds calls to it: its inputs are the parameters."""
        signature, returns = self.program_types[name]
        return Builtin(name, tuple(Param(p, (t,)) for p, t in signature), returns, "program", None)

    def lookup(self, name: str) -> Variable | None:
        for scope in reversed(self.scopes):
            if name in scope:
                return scope[name]
        return None

    def deep(self, pos: ast.Position, depth: int) -> bool:
        if depth <= MAX_DEPTH:
            return False
        if not self.too_deep:
            self.error(pos, f"this is nested too deeply (more than {MAX_DEPTH} levels)")
        self.too_deep = True
        return True

    def check_block(self, statements: tuple, depth: int, new_scope: bool = True) -> None:
        if new_scope:
            self.scopes.append({})
        for statement in statements:
            if self.deep(statement.pos, depth):
                break
            self.check_statement(statement, depth)
        if new_scope:
            self.scopes.pop()

    def declare(self, name: str, t: Type, pos: ast.Position) -> None:
        self.scopes[-1][name] = Variable(t, pos)

    def check_statement(self, s, depth: int) -> None:
        if isinstance(s, ast.Let):
            self.binding = s.name
            t = self.expr(s.value, depth)
            self.binding = "x"
            existing = self.lookup(s.name)
            if existing is not None:
                self.error(s.pos, f"'{s.name}' is already defined at line {existing.pos.line}")
                return
            if s.type is not None:
                declared = self.resolve_type(s.type)
                if not fits(t, declared):
                    self.error(s.value.pos, f"'{s.name}' is declared {_a(declared)} but is given {_a(t)}")
                t = declared
            self.declare(s.name, t, s.pos)
        elif isinstance(s, ast.Assign):
            self.assign(s.name, self.expr(s.value, depth), s.pos, s.value.pos)
        elif isinstance(s, ast.Extend):
            variable = self.variable(s.name, s.pos)
            t = self.expr(s.value, depth)
            if variable is None:
                return
            result = _plus(variable.type, t)
            if result is None:
                self.error(s.value.pos, f"cannot add {_a(t)} to {_a(variable.type)} with +=")
                return
            self.types[id(s)] = result
            self.assign(s.name, result, s.pos, s.value.pos)
        elif isinstance(s, ast.Choice):
            t = self.choice(s.value, depth, s.name)
            if self.lookup(s.name) is None:
                self.declare(s.name, t, s.pos)
            else:
                self.assign(s.name, t, s.pos, s.value.pos)
        elif isinstance(s, (ast.Score, ast.Twist)):
            word = "score" if isinstance(s, ast.Score) else "twist"
            self.expect(s.value, NUMBER, depth, f"{word} needs a number (a log weight)")
        elif isinstance(s, ast.Condition):
            self.expect(s.value, BOOL, depth, "condition needs a bool")
            if s.reason is not None:
                self.expect(s.reason, TEXT, depth, "the reason of a condition must be a text")
        elif isinstance(s, ast.Observe):
            value_type = self.expr(s.value, depth)
            dist_type = self.distribution(s.distribution, depth)
            if not fits(value_type, dist_type):
                self.error(
                    s.value.pos,
                    f"observe: {_a(value_type)} cannot be a value of this distribution of {dist_type}s",
                )
        elif isinstance(s, ast.Step):
            self.expect(s.max, NUMBER, depth, "step (max K) needs a number")
            if isinstance(s.max, ast.Number) and (not float(s.max.value).is_integer() or s.max.value < 1):
                self.error(s.max.pos, f"step (max K) needs a whole number >= 1, got {s.max.value}")
            self.step_depth += 1
            self.check_block(s.body, depth + 1)
            self.step_depth -= 1
        elif isinstance(s, ast.For):
            t = self.expr(s.iterable, depth)
            element = ERROR
            if is_list(t):
                element = t.element if t.element != UNKNOWN else ERROR
            elif t != ERROR:
                self.error(s.iterable.pos, f"for needs a list to go through, got {_a(t)}")
            existing = self.lookup(s.name)
            if existing is not None:
                self.error(s.pos, f"'{s.name}' is already defined at line {existing.pos.line}")
            self.scopes.append({s.name: Variable(element, s.pos)})
            self.check_block(s.body, depth + 1)
            self.scopes.pop()
        elif isinstance(s, ast.If):
            self.expect(s.condition, BOOL, depth, "if needs a bool")
            self.check_block(s.then, depth + 1)
            if s.otherwise is not None:
                self.check_block(s.otherwise, depth + 1)
        elif isinstance(s, ast.Finish):
            if not self.step_depth:
                self.error(s.pos, "finish is only allowed inside a step block")
        elif isinstance(s, ast.Return):
            t = self.expr(s.value, depth)
            if not fits(t, self.return_type):
                self.error(s.value.pos, f"the program returns {_a(self.return_type)}, not {_a(t)}")

    def variable(self, name: str, pos: ast.Position) -> Variable | None:
        variable = self.lookup(name)
        if variable is None:
            self.error(pos, f"unknown name '{name}'; declare it with `let {name} = ...`")
            return None
        if variable.kind in USE_TYPES:
            self.error(pos, f"'{name}' is a {variable.kind}, declared with use; it cannot change")
            return None
        return variable

    def assign(self, name: str, t: Type, pos: ast.Position, value_pos: ast.Position) -> None:
        variable = self.variable(name, pos)
        if variable is None:
            return
        joined = unify(variable.type, t)
        if joined is None:
            self.error(value_pos, f"'{name}' is {_a(variable.type)} and cannot be given {_a(t)}")
            return
        variable.type = joined

    def expect(self, node, wanted: Type, depth: int, message: str) -> None:
        t = self.expr(node, depth)
        if not fits(t, wanted):
            self.error(node.pos, f"{message}, got {_a(t)}")

    # ---- random choices -----------------------------------------------------------------------

    def choice(self, node, depth: int, name: str) -> Type:
        builtin = self.callee(node)
        if builtin is None or builtin.kind not in ("choice", "distribution"):
            self.expr(node, depth)
            self.error(
                node.pos,
                f"~ needs a random choice: {name} ~ lm.gen(...), {name} ~ select(...) "
                f"or a distribution such as {name} ~ bernoulli(0.5)",
            )
            return ERROR
        return self.expr(node, depth, allow=builtin.kind)

    def distribution(self, node, depth: int) -> Type:
        builtin = self.callee(node)
        if builtin is None or builtin.kind != "distribution":
            self.expr(node, depth)
            self.error(node.pos, f"observe needs a distribution after ~, one of {', '.join(DISTRIBUTIONS)}")
            return ERROR
        return self.expr(node, depth, allow="distribution")

    def callee(self, node) -> Builtin | None:
        if isinstance(node, ast.Call):
            return FUNCTIONS.get(node.function) or DISTRIBUTIONS.get(node.function)
        if isinstance(node, ast.MethodCall) and isinstance(node.receiver, ast.Name):
            receiver = self.lookup(node.receiver.id)
            if receiver is not None and receiver.type in METHODS:
                return METHODS[receiver.type].get(node.method)
        return None

    # ---- expressions ----------------------------------------------------------------------------

    def expr(self, node, depth: int, allow: str | None = None) -> Type:
        if self.deep(node.pos, depth):
            t = ERROR
        else:
            t = self._expr(node, depth + 1, allow)
        self.types[id(node)] = t
        return t

    def _expr(self, node, depth: int, allow: str | None) -> Type:
        if isinstance(node, ast.Number):
            return NUMBER
        if isinstance(node, ast.String):
            return TEXT
        if isinstance(node, ast.Interpolation):
            for part in node.parts:
                if isinstance(part, str):
                    continue
                t = self.expr(part, depth)
                if not any(fits(t, wanted) for wanted in (*TEXT_LIKE, NUMBER, BOOL)):
                    self.error(part.pos, f"cannot put {_a(t)} into a string")
            return TEXT
        if isinstance(node, ast.Bool):
            return BOOL
        if isinstance(node, ast.Name):
            variable = self.lookup(node.id)
            if variable is None:
                spelt = _PYTHON_WORDS.get(node.id)
                hint = f": .tts writes {spelt}" if spelt else ""
                self.error(node.pos, f"unknown name '{node.id}'{hint}")
                return ERROR
            return variable.type
        if isinstance(node, ast.ListExpr):
            t = UNKNOWN
            for item in node.items:
                item_type = self.expr(item, depth)
                joined = unify(t, item_type) if t != UNKNOWN else item_type
                if joined is None:
                    self.error(item.pos, f"the items of a list must have one type: {t} and {item_type}")
                    return ERROR
                t = joined
            return list_of(t)
        if isinstance(node, ast.Binary):
            return self.binary(node, depth)
        if isinstance(node, ast.Logical):
            for side in (node.left, node.right):
                self.expect(side, BOOL, depth, f"'{node.op}' needs bools")
            return BOOL
        if isinstance(node, ast.Not):
            self.expect(node.operand, BOOL, depth, "'not' needs a bool")
            return BOOL
        if isinstance(node, ast.Negate):
            self.expect(node.operand, NUMBER, depth, "'-' needs a number")
            return NUMBER
        if isinstance(node, ast.Index):
            target = self.expr(node.target, depth)
            self.expect(node.index, NUMBER, depth, "an index must be a number")
            if target == ERROR:
                return ERROR
            if is_list(target) and target.element == UNKNOWN:
                self.error(node.pos, "cannot index an empty list: it has no items")
                return ERROR
            if is_list(target):
                return target.element
            if target in (TEXT, TOKENS):
                return TEXT if target == TEXT else NUMBER
            self.error(node.pos, f"cannot index {_a(target)}; only lists, texts and tokens have items")
            return ERROR
        if isinstance(node, ast.Field):
            return self.field(node, depth)
        if isinstance(node, ast.MethodCall):
            return self.method_call(node, depth, allow)
        if isinstance(node, ast.Call):
            return self.call(node, depth, allow)
        if isinstance(node, ast.InferExpr):
            return self.infer_expr(node, depth)
        raise AssertionError(f"unknown expression {node!r}")  # pragma: no cover

    def infer_expr(self, node: ast.InferExpr, depth: int) -> Type:
        """``infer p(args) with algorithm(settings)``: the program's weighted answers."""
        if node.program in self.unresolved:
            self.arguments(node.args, depth)
            result = ERROR
        elif node.program not in self.program_types:
            self.arguments(node.args, depth)
            self.error(node.program_pos, f"unknown program '{node.program}'" + _choices(self.program_types))
            result = ERROR
        else:
            self.edges.setdefault(self.current, []).append((node.program, node.program_pos))
            returns = self.apply(node, self.program_builtin(node.program), node.program, depth, None)
            result = answers_of(returns) if returns != ERROR else ERROR
        checked = self.algorithm(node.algorithm, node.algorithm_pos, node.settings)
        if checked is None:
            return ERROR
        self.nested[id(node)] = checked
        return result

    def binary(self, node: ast.Binary, depth: int) -> Type:
        left = self.expr(node.left, depth)
        right = self.expr(node.right, depth)
        if ERROR in (left, right):
            return ERROR
        op = node.op
        if op == "+":
            result = _plus(left, right)
            if result is None:
                self.error(node.op_pos, f"cannot add {_a(right)} to {_a(left)}")
                return ERROR
            return result
        if op in "-*/":
            if left != NUMBER or right != NUMBER:
                self.error(node.op_pos, f"'{op}' needs numbers, got {_a(left)} and {_a(right)}")
                return ERROR
            return NUMBER
        if op in ("==", "!="):
            if unify(left, right) is None:
                self.error(node.op_pos, f"cannot compare {_a(left)} with {_a(right)}")
            return BOOL
        if not (left == right and left in (NUMBER, TEXT)):
            self.error(node.op_pos, f"'{op}' needs two numbers or two texts, got {_a(left)} and {_a(right)}")
        return BOOL

    def field(self, node: ast.Field, depth: int) -> Type:
        receiver = self.expr(node.receiver, depth)
        if receiver == ERROR:
            return ERROR
        if receiver.name == "segment" and node.name in SEGMENT_FIELDS:
            return SEGMENT_FIELDS[node.name][0]
        if is_answers(receiver):
            if node.name in ANSWERS_FIELDS:
                return ANSWERS_FIELDS[node.name][0](receiver.element)
            self.error(
                node.name_pos,
                f"{_a(receiver)} has no field '{node.name}'; its fields are {', '.join(ANSWERS_FIELDS)}",
            )
            return ERROR
        if receiver.name == "segment":
            self.error(
                node.name_pos,
                f"a segment has no field '{node.name}'; its fields are {', '.join(SEGMENT_FIELDS)}",
            )
        elif receiver in METHODS:
            methods = ", ".join(sorted(METHODS[receiver]))
            if node.name in METHODS[receiver]:
                self.error(node.name_pos, f"{node.name} is a method: call it, {node.name}(...)")
            else:
                self.error(
                    node.name_pos,
                    f"a {receiver} has no field or method '{node.name}'; its methods are {methods}",
                )
        else:
            self.error(node.name_pos, f"{_a(receiver)} has no field '{node.name}'")
        return ERROR

    def method_call(self, node: ast.MethodCall, depth: int, allow: str | None) -> Type:
        receiver = self.expr(node.receiver, depth)
        if receiver == ERROR:
            self.arguments(node.args, depth)
            return ERROR
        methods = METHODS.get(receiver)
        if methods is None:
            self.error(node.method_pos, f"{_a(receiver)} has no method '{node.method}'")
            self.arguments(node.args, depth)
            return ERROR
        builtin = methods.get(node.method)
        if builtin is None:
            self.error(
                node.method_pos,
                f"a {receiver} has no method '{node.method}'; its methods are {', '.join(sorted(methods))}",
            )
            self.arguments(node.args, depth)
            return ERROR
        shown = f"{node.receiver.id}.{node.method}" if isinstance(node.receiver, ast.Name) else node.method
        return self.apply(node, builtin, shown, depth, allow)

    def call(self, node: ast.Call, depth: int, allow: str | None) -> Type:
        name = node.function
        builtin = FUNCTIONS.get(name) or DISTRIBUTIONS.get(name)
        if builtin is None and name in self.unresolved:  # its `use ... from` is reported
            self.arguments(node.args, depth)
            return ERROR
        if builtin is None and name in self.program_types:
            self.edges.setdefault(self.current, []).append((name, node.pos))
            builtin = self.program_builtin(name)
        if builtin is None:
            self.arguments(node.args, depth)
            if name in DECLARATIONS:
                self.error(
                    node.pos, f"{name}(...) is only allowed in a use declaration: `use x = {name}(...)`"
                )
            elif name in MODEL_METHODS:
                self.error(
                    node.pos, f"unknown function '{name}'; {name} is a method of a model: lm.{name}(...)"
                )
            elif self.lookup(name) is not None:
                self.error(node.pos, f"'{name}' is not a function")
            else:
                known = ", ".join(sorted([*FUNCTIONS, *DISTRIBUTIONS]))
                self.error(node.pos, f"unknown function '{name}'; the functions are {known}")
            return ERROR
        return self.apply(node, builtin, name, depth, allow)

    def apply(self, node, builtin: Builtin, shown: str, depth: int, allow: str | None) -> Type:
        if builtin.kind in ("choice", "distribution") and allow != builtin.kind:
            self.arguments(node.args, depth)
            if builtin.kind == "choice":
                self.error(
                    node.pos, f"{shown}(...) is a random choice: write `{self.binding} ~ {shown}(...)`"
                )
            else:
                self.error(
                    node.pos,
                    f"{shown}(...) is a distribution: use it after ~ (`{self.binding} ~ {shown}(...)`)",
                )
            return ERROR
        bound = self.bind(builtin, node.args, shown, node.pos)
        if bound is None:
            self.arguments(node.args, depth)
            return ERROR
        for param in builtin.params:
            arg = bound[param.name]
            if not isinstance(arg, ast.Argument):
                continue
            t = self.expr(arg.value, depth)
            if not any(fits(t, wanted) for wanted in param.types):
                self.error(
                    arg.value.pos,
                    f"the argument '{param.name}' of {shown} must be {describe(param.types)}, not {_a(t)}",
                )
        self.calls[id(node)] = (builtin, bound)
        if builtin.kind == "choice" and builtin.name == "gen":
            self.check_constraints(bound)
        count = bound.get("n") if builtin.kind == "choice" else None
        if isinstance(count, ast.Argument) and isinstance(count.value, ast.Number):
            value = count.value.value
            if not float(value).is_integer() or value < 1:
                self.error(
                    count.value.pos, f"n (samples from one request) needs a whole number >= 1, got {value}"
                )
        return builtin.result(bound) if builtin.result is not None else builtin.returns

    def check_constraints(self, bound: dict) -> None:
        """``gen``'s constraint: at most one; a literal regex, grammar, schema or choice list
        that does not build is an error at its position (xgrammar's own message, which
        places the fault inside the literal)."""
        given = [bound[name] for name in CONSTRAINT_PARAMS if isinstance(bound.get(name), ast.Argument)]
        if len(given) > 1:
            names = " and ".join(arg.name or "?" for arg in given)
            self.error(given[1].pos, f"gen takes one constraint at a time, got {names}")
            return
        for arg in given:
            value = arg.value
            if isinstance(value, ast.String):
                literal = value.value
            elif isinstance(value, ast.ListExpr) and all(isinstance(i, ast.String) for i in value.items):
                literal = [i.value for i in value.items]
            else:
                continue  # computed at run time: checked when the site runs
            name = arg.name or "constraint"
            try:
                Constraint.of(**{name: literal})
            except (ValueError, TypeError) as error:
                self.error(value.pos, f"{name}: {error}")

    def arguments(self, args, depth: int) -> None:
        """Check the arguments of a call that could not be bound, for their own errors."""
        for arg in args:
            self.expr(arg.value, depth)

    def bind(self, builtin: Builtin, args: tuple, shown: str, pos: ast.Position) -> dict | None:
        """Match arguments to parameters; report unknown, repeated and missing ones."""
        names = [p.name for p in builtin.params]
        bound: dict = {}
        ok = True
        seen_keyword = False
        for i, arg in enumerate(args):
            if arg.name is None:
                if seen_keyword:
                    self.error(arg.pos, "a positional argument cannot follow a keyword argument")
                    ok = False
                elif i >= len(names):
                    count = f"{len(names)} argument{'s' if len(names) != 1 else ''}"
                    self.error(arg.pos, f"{shown} takes {count}, got {len(args)}")
                    ok = False
                    break
                else:
                    bound[names[i]] = arg
                continue
            seen_keyword = True
            if arg.name not in names:
                listed = ", ".join(names) if names else "none"
                self.error(arg.pos, f"{shown} has no argument '{arg.name}'; its arguments are {listed}")
                ok = False
            elif arg.name in bound:
                self.error(arg.pos, f"the argument '{arg.name}' of {shown} is given twice")
                ok = False
            else:
                bound[arg.name] = arg
        for param in builtin.params:
            if param.name not in bound:
                if param.default is REQUIRED:
                    self.error(pos, f"{shown} is missing the argument '{param.name}'")
                    ok = False
                bound[param.name] = param.default
        return bound if ok else None


def _plus(left: Type, right: Type) -> Type | None:
    """The type of ``left + right``, or None when they do not add up."""
    if ERROR in (left, right):
        return ERROR
    if left == right and left in (NUMBER, TEXT):
        return left
    if left == TOKENS and any(fits(right, t) for t in TOKENS_LIKE):
        return TOKENS
    if is_list(left) and is_list(right):
        return unify(left, right)
    return None


def _always_returns(statements: tuple) -> bool:
    for s in statements:
        if isinstance(s, ast.Return):
            return True
        both_return = isinstance(s, ast.If) and s.otherwise is not None and _always_returns(s.then)
        if both_return and _always_returns(s.otherwise):
            return True
    return False


def _a_kind(kind: str) -> str:
    return ("an " if kind[0] in "aeiou" else "a ") + kind


def _differs(a: UseInfo, b: UseInfo) -> bool:
    return (a.kind, a.settings) != (b.kind, b.settings)


def _choices(names) -> str:
    return f"; the programs are {', '.join(sorted(names))}" if names else ""


def _param(setting: Setting) -> Param:
    """An interpreter's setting as an argument of its call in an ``infer`` clause."""
    return Param(
        setting.name,
        (TEXT,) if setting.kind is str else (NUMBER,),
        REQUIRED if setting.required else setting.default,
    )


def _whole(value):
    """A number as written in a .tts file, an int when it is whole (``2.0`` reads as ``2`` in messages)."""
    return int(value) if isinstance(value, float) and value.is_integer() else value
