"""What ``tts serve`` serves, and how an OpenAI request becomes a problem for it.

``Programs`` loads the ``.tts`` files once (models shared across files: one engine per
model and backend) and names every servable program: ``file:program`` for each program of
each file, and the bare name of a file's ``infer`` clause program when no other file
claims it. ``prepare`` turns a validated request body into a ``Prepared`` problem — the
program, its inputs, the interpreter configured by the registry, the seed and budgets —
or raises ``RequestError`` with the message the client will read. Nothing here touches
HTTP or the scheduler.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ppl.algorithms import ALGORITHMS
from ppl.grammar import Module, TtsError
from ppl.grammar import compile as compile_module
from ppl.grammar.compiler import has_type
from ppl.inference import Algorithm
from ppl.program import Program

from . import models as registry
from .loading import check, resolve_models
from .openai_schema import ChatRequest, CompletionRequest


class RequestError(Exception):
    """A request that cannot be served: the HTTP status and the OpenAI-style error it gets."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        kind: str = "invalid_request_error",
        code: str = "invalid_request",
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.kind, self.code, self.param = status, message, kind, code, param
        self.headers = dict(headers or {})


@dataclass(frozen=True)
class Limits:
    """The server's caps on what one request may ask for, and on the server as a whole."""

    max_particles: int = 256  # particles of one request (its interpreter's budget)
    max_tokens: int = 200_000  # tokens one request may generate, over all its particles
    timeout: float = 300.0  # seconds one request may take, queued or running
    in_flight: int = 1024  # particles of all requests in flight at once
    queue: int = 64  # requests waiting for room beyond those in flight; then 429
    max_body: int = 1_000_000  # bytes of a request body
    allow_source: bool = False  # may a request carry .tts source (ppl.source)?


@dataclass(frozen=True)
class Served:
    """One servable program."""

    id: str
    module: Module
    name: str

    @property
    def program(self) -> Program:
        return self.module.programs[self.name]

    @property
    def signature(self) -> tuple:
        return self.module.checked.signatures[self.name]

    @property
    def infer(self):
        infer = self.module.infer
        return infer if infer is not None and infer.info.program == self.name else None


class Programs:
    """The served files' programs by id, and the models they loaded (shared by id)."""

    def __init__(self, files: list[str], backend: str | None, options: Mapping[str, object]):
        self.backend, self.options = backend, dict(options)
        self.models: dict[tuple[str, str], object] = {}  # (model name, backend) → loaded model
        self.modules: list[Module] = []
        self.served: dict[str, Served] = {}
        bare: dict[str, list[Served]] = {}
        for path in files:
            module = self.load(Path(path).read_bytes(), str(path), may_load=True)
            self.modules.append(module)
            stem = Path(path).stem
            for name in module.programs:
                entry = Served(f"{stem}:{name}", module, name)
                if entry.id in self.served:
                    raise ValueError(f"two served files are named {stem}: rename one")
                self.served[entry.id] = entry
            if module.infer is not None:
                bare.setdefault(module.infer.info.program, []).append(
                    self.served[f"{stem}:{module.infer.info.program}"]
                )
        for name, entries in bare.items():
            if len(entries) == 1 and name not in self.served:
                self.served[name] = Served(name, entries[0].module, name)

    def _key(self, use) -> tuple[str, str]:
        chosen = self.backend or use.settings.get("backend") or "tabular"
        return (use.settings.get("name") or registry.DEFAULT_MODEL, chosen)

    def load(self, source: bytes | str, filename: str, *, may_load: bool) -> Module:
        """Check and compile a file, reusing the models already loaded; a request's source
        (``may_load=False``) may only use those (it starts no engine)."""
        checked = check(source.encode("utf-8") if isinstance(source, str) else source, filename)
        given = {}
        for name, use in checked.uses.items():
            if use.kind == "model":
                key = self._key(use)
                if key in self.models:
                    given[name] = self.models[key]
                elif not may_load:
                    known = ", ".join(sorted({n for n, _ in self.models})) or "none"
                    raise RequestError(
                        400,
                        f"ppl.source: this server runs no model '{key[0]}' on {key[1]}; its models are {known}",
                        param="ppl.source",
                    )
            elif use.kind == "prm" and use.settings.get("model") is None and not may_load:
                raise RequestError(
                    400,
                    "ppl.source: a request's source may not load a PRM by name; use prm(model, ...)",
                    param="ppl.source",
                )
        resolved = resolve_models(checked, self.backend, given, self.options)
        for name, use in checked.uses.items():
            if use.kind == "model":
                self.models.setdefault(self._key(use), resolved[name])
        return compile_module(checked, resolved)

    def listing(self) -> list[dict]:
        return [
            {"id": entry.id, "object": "model", "created": 0, "owned_by": "ppl", "ppl": describe(entry)}
            for entry in self.served.values()
        ]

    def find(self, model: str) -> Served:
        if model not in self.served:
            raise RequestError(
                404,
                f"the model '{model}' does not exist; the models are {', '.join(self.served)}",
                kind="not_found_error",
                code="model_not_found",
                param="model",
            )
        return self.served[model]

    def close(self) -> None:
        """Stop the engines the served files started."""
        for model in {id(m): m for m in self.models.values()}.values():
            close = getattr(model, "close", None)
            if callable(close):
                close()


def describe(entry: Served) -> dict:
    return {
        "file": entry.module.filename,
        "program": entry.name,
        "inputs": {name: str(t) for name, t in entry.signature},
        "infer": entry.infer.describe() if entry.infer is not None else None,
    }


@dataclass(frozen=True)
class Prepared:
    """A request made into a problem."""

    served: Served
    inputs: dict
    args: tuple
    kwargs: dict
    algorithm: Algorithm
    described: str
    seed: int
    n: int
    max_tokens: int
    timeout: float

    @property
    def particles(self) -> int:
        return getattr(self.algorithm, "particles", 1)


def prepare(body: ChatRequest | CompletionRequest, programs: Programs, limits: Limits) -> Prepared:
    """The problem a request asks for, every field checked; ``RequestError`` otherwise."""
    options = body.ppl
    if options.source is not None:
        served = _from_source(body, programs, limits)
    else:
        served = programs.find(body.model)
    algorithm, described = _interpreter(served, options.algorithm, options.settings(), limits)
    inputs = _inputs(served, body)
    try:
        args, kwargs = served.program.bind(inputs)
    except TypeError as error:
        raise RequestError(400, str(error), param="ppl.inputs") from None
    if body.seed is not None and options.seed is not None and body.seed != options.seed:
        raise RequestError(
            400, f"seed {body.seed} and ppl.seed {options.seed} differ: give one", param="seed"
        )
    seed = body.seed if body.seed is not None else (options.seed or 0)
    max_tokens = options.max_tokens or limits.max_tokens
    if max_tokens > limits.max_tokens:
        raise RequestError(
            400,
            f"ppl.max_tokens = {max_tokens} is more than this server allows per request "
            f"({limits.max_tokens}, --max-tokens)",
            param="ppl.max_tokens",
        )
    timeout = options.timeout or limits.timeout
    if timeout > limits.timeout:
        raise RequestError(
            400,
            f"ppl.timeout = {timeout:g} s is more than this server allows ({limits.timeout:g} s, --timeout)",
            param="ppl.timeout",
        )
    return Prepared(served, inputs, args, kwargs, algorithm, described, seed, body.n, max_tokens, timeout)


def _from_source(body, programs: Programs, limits: Limits) -> Served:
    if not limits.allow_source:
        raise RequestError(
            403,
            "this server does not run .tts source sent in requests (start it with --allow-source)",
            kind="permission_error",
            code="source_not_allowed",
            param="ppl.source",
        )
    try:
        module = programs.load(body.ppl.source, "<request>", may_load=False)
    except TtsError as error:
        raise RequestError(
            400, f"ppl.source does not check:\n{error}", code="invalid_source", param="ppl.source"
        ) from None
    name = body.model
    if name not in module.programs:
        if module.infer is not None and name in ("", module.infer.info.program):
            name = module.infer.info.program
        else:
            raise RequestError(
                404,
                f"ppl.source has no program '{body.model}'; it has {', '.join(module.programs) or 'none'}",
                kind="not_found_error",
                code="model_not_found",
                param="model",
            )
    return Served(f"<request>:{name}", module, name)


def _interpreter(served: Served, name: str | None, settings: dict, limits: Limits) -> tuple[Algorithm, str]:
    """The interpreter a request chose (or the file's infer clause), configured and capped."""
    if name is None:
        infer = served.infer
        if infer is None:
            raise RequestError(
                400,
                f"'{served.id}' has no infer clause: choose an interpreter with ppl.algorithm "
                f"(one of {', '.join(ALGORITHMS)})",
                param="ppl.algorithm",
            )
        spec, chosen = infer.info.spec, {**infer.info.settings, **settings}
    else:
        spec = ALGORITHMS.get(name)
        if spec is None:
            raise RequestError(
                400,
                f"unknown interpreter '{name}'; the interpreters are {', '.join(ALGORITHMS)}",
                param="ppl.algorithm",
            )
        chosen = dict(settings)
    try:
        algorithm = spec.build(chosen)
    except ValueError as error:
        raise RequestError(400, f"ppl: {spec.name}(): {error}", param="ppl") from None
    if type(algorithm).schedule is not Algorithm.schedule:
        raise RequestError(
            400,
            f"{spec.name}() does not run on the shared scheduler, so this server does not serve it",
            param="ppl.algorithm",
        )
    particles = getattr(algorithm, "particles", 1)
    if particles > limits.max_particles:
        budget = f" ({spec.budget} = {chosen.get(spec.budget)})" if spec.budget else ""
        raise RequestError(
            400,
            f"ppl: {spec.name}(){budget} runs {particles} particles; this server allows at most "
            f"{limits.max_particles} per request (--max-particles)",
            param=f"ppl.{spec.budget}" if spec.budget else "ppl",
        )
    described = {**spec.defaults(), **chosen}
    text = ", ".join(
        f"{s.name} = {json.dumps(described[s.name])}" for s in spec.settings if s.name in described
    )
    return algorithm, f"{spec.name}({text})"


def _inputs(served: Served, body) -> dict:
    """The program's inputs: ``ppl.inputs``, sampling fields of the same name, and the text
    input filled with the last user message (or ``prompt``)."""
    signature = dict(served.signature)
    inputs = dict(body.ppl.inputs)
    for name, value in body.sampling().items():
        if name not in signature:
            takes = ", ".join(signature) or "none"
            raise RequestError(
                400,
                f"'{served.id}' takes no '{name}': its sampling is written in the program (its inputs "
                f"are {takes}); remove the field, or serve a program with a '{name}' input",
                code="unsupported_field",
                param=name,
            )
        if name in inputs:
            raise RequestError(400, f"'{name}' is given both as a field and in ppl.inputs", param=name)
        inputs[name] = value
    text = _request_text(served, body)
    open_texts = [p for p, t in served.signature if t.name == "text" and p not in inputs]
    if not open_texts:
        given = (
            "its text inputs are all in ppl.inputs"
            if any(t.name == "text" for t in signature.values())
            else "it has no text input"
        )
        raise RequestError(400, f"'{served.id}' has nowhere to put the message: {given}", param="messages")
    if len(open_texts) > 1:
        raise RequestError(
            400,
            f"'{served.id}' has several text inputs ({', '.join(open_texts)}): give all but the "
            "one the message fills in ppl.inputs",
            param="ppl.inputs",
        )
    inputs[open_texts[0]] = text
    unknown = sorted(set(inputs) - set(signature))
    if unknown:
        raise RequestError(
            400,
            f"ppl.inputs: '{served.id}' has no input '{unknown[0]}'; its inputs are {', '.join(signature)}",
            param="ppl.inputs",
        )
    missing = [p for p in signature if p not in inputs]
    if missing:
        raise RequestError(
            400, f"ppl.inputs: missing the input '{missing[0]}' of '{served.id}'", param="ppl.inputs"
        )
    for name, t in signature.items():
        if not has_type(inputs[name], t):
            article = "an" if str(t)[0] in "aeiou" else "a"
            raise RequestError(
                400,
                f"the input '{name}' of '{served.id}' must be {article} {t}, got {json.dumps(inputs[name])}",
                param=f"ppl.inputs.{name}",
            )
    return inputs


def _request_text(served: Served, body) -> str:
    if isinstance(body, CompletionRequest):
        prompt = body.prompt
        if isinstance(prompt, list):
            if len(prompt) != 1:
                raise RequestError(400, f"one prompt per request, got {len(prompt)}", param="prompt")
            prompt = prompt[0]
        return prompt
    last = body.messages[-1]
    if last.role != "user":
        raise RequestError(
            400, f"the last message must be the user's, got a '{last.role}' message", param="messages"
        )
    if len(body.messages) > 1:
        roles = ", ".join(m.role for m in body.messages)
        raise RequestError(
            400,
            f"'{served.id}' answers one user message and this request has {len(body.messages)} "
            f"({roles}): the program writes its own prompt, so the others would be ignored",
            param="messages",
        )
    return last.text()


def answers(posterior, n: int) -> list[tuple[str, float]]:
    """The top-``n`` distinct answers by posterior probability, as texts, with their probability."""
    from .records import hashable, jsonable

    law = posterior.distribution(hashable)
    out = []
    for value, probability in list(law.items())[:n]:
        value = jsonable(value)
        out.append((value if isinstance(value, str) else json.dumps(value, ensure_ascii=False), probability))
    return out


def ppl_field(posterior, prepared: Prepared) -> dict[str, Any]:
    """The reply's ``ppl`` field: the interpreter, evidence, ESS, answer law and weights."""
    from .records import posterior_record

    record = posterior_record(posterior)
    law = [[v, p] for v, p in answers(posterior, 100)] if not posterior.all_dead else []
    # ESS fields only where they mean something for the interpreter (absent for beam search, MH)
    weights = {
        key: record[field]
        for key, field in (("ess", "final_ess"), ("ess_per_step", "ess"), ("resampled", "resampled"))
        if field in record
    }
    return {
        "program": prepared.served.id,
        "algorithm": prepared.described,
        "seed": prepared.seed,
        "log_evidence": record["log_evidence"],
        "evidence": record["evidence"],
        **weights,
        "distribution": law,
        "log_weights": [w if math.isfinite(w) else None for w in posterior.log_weights],
        "engine_calls": record["engine_calls"],
        "tokens_in": record["tokens_in"],
        "tokens_out": record["tokens_out"],
        "wall_time": record["wall_time"],
        "dead": record["diagnostics"]["dead"],
        "deaths": record["diagnostics"]["deaths"],
    }
