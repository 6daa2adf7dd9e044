"""``tts serve``: any program behind an OpenAI-compatible endpoint (FastAPI on uvicorn).

A request is a problem: ``model`` names the program, the last user message (or ``prompt``)
fills its text input, and ``ppl`` (the client's ``extra_body``) chooses the interpreter,
its settings and the seed. All requests are problems in one shared scheduler
(``serve_runtime.Runner``), so their particles share engine calls. Admission: particles in
flight are bounded (``--in-flight``), requests beyond wait in the scheduler's queue, and
beyond ``--queue`` waiting requests get 429 with ``Retry-After``. A client that goes away
has its particles cancelled; SIGTERM drains the requests in flight (``--on-sigterm
drain``, the default) or cancels them, and says which on standard error.

Safe by default: it binds 127.0.0.1; ``--api-key`` makes every call need the bearer key
(compared in constant time); bodies are limited in size; budgets are capped; errors are
OpenAI-style JSON, never a traceback.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import signal
import sys
import threading
import time
import uuid
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from ppl.randomness import AsProblem, SeededSource
from ppl.scheduler import Cancelled

from .openai_schema import ChatRequest, CompletionRequest, error_body
from .serve_requests import Limits, Prepared, Programs, RequestError, answers, ppl_field, prepare
from .serve_runtime import EngineFailure, Job, Metrics, Runner

log = logging.getLogger("ppl.serve")


@dataclass
class State:
    """What the handlers share: the programs, the limits, the scheduler thread, the metrics."""

    programs: Programs
    limits: Limits
    runner: Runner
    metrics: Metrics
    api_key: str | None = None
    shutting_down: str | None = None
    engine_failure: str | None = None  # why an engine died ("the engine of M failed: …"): the server stops


# ---- the outer guard: the key and the body size, before anything is parsed ------------------


class Guard:
    """ASGI middleware: with an API key, every call needs ``Authorization: Bearer KEY``
    (``hmac.compare_digest``); request bodies above ``max_body`` bytes get 413."""

    def __init__(self, app, state: State):
        self.app, self.state = app, state

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        key = self.state.api_key
        if key is not None:
            given = headers.get("authorization", "")
            scheme, _, token = given.partition(" ")
            if not (scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), key.encode())):
                message = (
                    "the API key is wrong"
                    if given
                    else "no API key: this server needs Authorization: Bearer KEY"
                )
                self.state.metrics.failure.labels("auth").inc()
                body = error_body(message, "authentication_error", "invalid_api_key")
                return await JSONResponse(body, 401, {"WWW-Authenticate": "Bearer"})(scope, receive, send)
        limit = self.state.limits.max_body
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            return await self._too_large(scope, receive, send)
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _TooLarge
            return message

        try:
            await self.app(scope, counted, send)
        except _TooLarge:
            await self._too_large(scope, receive, send)

    async def _too_large(self, scope, receive, send):
        self.state.metrics.failure.labels("too_large").inc()
        message = f"the request body is larger than this server takes ({self.state.limits.max_body} bytes)"
        await JSONResponse(error_body(message, "invalid_request_error", "body_too_large"), 413)(
            scope, receive, send
        )


class _TooLarge(Exception):
    pass


# ---- the app ------------------------------------------------------------------------------------------


def create_app(state: State) -> FastAPI:
    app = FastAPI(title="ppl: tts serve", version="0.1", docs_url=None, redoc_url=None)
    app.state.ppl = state

    @app.exception_handler(RequestError)
    async def request_error(request: Request, error: RequestError):
        state.metrics.failure.labels(error.code).inc()
        body = error_body(error.message, error.kind, error.code, error.param)
        return JSONResponse(body, error.status, error.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError):
        state.metrics.failure.labels("invalid_request").inc()
        message, param = _validation_message(error)
        return JSONResponse(error_body(message, "invalid_request_error", "invalid_request", param), 400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException):
        if error.status_code == 400 and isinstance(error.__cause__, UnicodeDecodeError):
            state.metrics.failure.labels("invalid_request").inc()  # FastAPI's "error parsing the body"
            message = f"the request body is not valid JSON (not UTF-8 text: {error.__cause__.reason})"
            return JSONResponse(error_body(message, "invalid_request_error", "invalid_request"), 400)
        code = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code, "http_error")
        message = f"{request.method} {request.url.path}: {error.detail}"
        return JSONResponse(error_body(message, "invalid_request_error", code), error.status_code)

    @app.exception_handler(Exception)
    async def internal(request: Request, error: Exception):
        log.exception("internal error on %s", request.url.path)
        state.metrics.failure.labels("internal").inc()
        message = f"internal error ({type(error).__name__}); the server logged it"
        return JSONResponse(error_body(message, "server_error", "internal_error"), 500)

    @app.get("/health")
    async def health():
        if state.engine_failure:
            return JSONResponse({"status": "engine failed", "error": state.engine_failure}, 503)
        if state.shutting_down:
            return JSONResponse({"status": "shutting down", "mode": state.shutting_down}, 503)
        return {"status": "ok"}

    @app.get("/metrics")
    async def metrics():
        return PlainTextResponse(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    async def list_models():
        return {"object": "list", "data": state.programs.listing()}

    @app.post("/v1/chat/completions")
    async def chat(body: ChatRequest, request: Request):
        return await _serve(state, request, body, chat=True)

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request):
        return await _serve(state, request, body, chat=False)

    return app


def _validation_message(error: RequestValidationError) -> tuple[str, str | None]:
    """One clear sentence for pydantic's first complaint."""
    first = error.errors()[0]
    kind = first.get("type", "")
    where = [str(p) for p in first.get("loc", ()) if p != "body"]
    param = ".".join(where) or None
    if kind == "json_invalid":
        detail = first.get("ctx", {}).get("error", "")
        return f"the request body is not valid JSON ({detail})", None
    if kind == "extra_forbidden":
        return f"unknown field '{param}'", param
    if kind == "missing":
        return f"the field '{param}' is required", param
    if kind in ("model_attributes_type", "dict_type") and not where:
        return "the request body must be a JSON object (sent as Content-Type: application/json)", None
    return f"{param or 'the body'}: {first.get('msg')}", param


async def _serve(state: State, request: Request, body, *, chat: bool):
    if state.engine_failure:
        raise RequestError(
            503,
            f"{state.engine_failure}; this server is stopping (restart it)",
            kind="server_error",
            code="engine_failed",
        )
    if state.shutting_down:
        raise RequestError(
            503,
            "the server is shutting down; it takes no new requests",
            kind="server_error",
            code="shutting_down",
        )
    prepared = prepare(body, state.programs, state.limits)
    runner = state.runner
    if runner.waiting() >= state.limits.queue:
        raise RequestError(
            429,
            f"the server is busy: {runner.waiting()} requests are waiting already (--queue {state.limits.queue}); "
            "retry later",
            kind="rate_limit_error",
            code="queue_full",
            headers={"Retry-After": "1"},
        )
    loop = asyncio.get_running_loop()
    job = Job(
        model=prepared.served.id,
        loop=loop,
        future=loop.create_future(),
        max_tokens=prepared.max_tokens,
        progress=asyncio.Queue() if body.stream else None,
    )
    source = AsProblem(SeededSource(prepared.seed), 0)
    runner.submit(job, prepared.served.program, prepared.args, prepared.kwargs, prepared.algorithm, source)
    reply = Reply(prepared, body, chat)
    if body.stream:
        return StreamingResponse(_events(state, request, job, reply), media_type="text/event-stream")
    disconnected = asyncio.create_task(_disconnect(request))
    try:
        done, _ = await asyncio.wait(
            {job.future, disconnected}, timeout=prepared.timeout, return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        disconnected.cancel()
    if job.future in done:
        posterior = _posterior(job.future.result(), prepared)
        state.metrics.success.labels(job.model).inc()
        return JSONResponse(reply.whole(posterior))
    if disconnected in done:
        runner.cancel(job, "disconnected", "the client disconnected")
        return Response(status_code=499)
    runner.cancel(job, "timeout", f"it took longer than {prepared.timeout:g} s")
    raise _timeout(prepared)


async def _disconnect(request: Request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


def _timeout(prepared: Prepared) -> RequestError:
    return RequestError(
        504,
        f"the request took longer than {prepared.timeout:g} s and was cancelled (ppl.timeout, --timeout)",
        kind="timeout_error",
        code="timeout",
    )


def _posterior(result, prepared: Prepared):
    """The request's Posterior, or the RequestError its failure becomes."""
    if isinstance(result, EngineFailure):
        raise RequestError(502, f"the engine failed: {result}", kind="server_error", code="engine_error")
    if isinstance(result, Cancelled):
        if result.reason.startswith("it generated more than"):
            raise RequestError(
                400,
                f"the request was cancelled: {result.reason} (ppl.max_tokens, --max-tokens)",
                code="token_budget",
            )
        raise RequestError(
            503, f"the request was cancelled: {result.reason}", kind="server_error", code="cancelled"
        )
    if result.all_dead:
        reasons = "; ".join(sorted({p.error for p in result.particles if p.error})[:3])
        raise RequestError(
            422,
            f"all {len(result.particles)} particles have weight zero ({reasons})",
            kind="invalid_request_error",
            code="all_particles_dead",
        )
    return result


class Reply:
    """The OpenAI-format reply to one request: whole, or as server-sent events."""

    def __init__(self, prepared: Prepared, body, chat: bool):
        self.prepared, self.body, self.chat = prepared, body, chat
        self.id = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.model = body.model

    def usage(self, posterior) -> dict:
        d = posterior.diagnostics
        return {
            "prompt_tokens": d.tokens_in,
            "completion_tokens": d.tokens_out,
            "total_tokens": d.tokens_in + d.tokens_out,
            "prompt_tokens_details": {"cached_tokens": d.tokens_cached},
        }

    def whole(self, posterior) -> dict:
        choices = []
        for index, (text, probability) in enumerate(answers(posterior, self.prepared.n)):
            choice = {"index": index, "finish_reason": "stop", "logprobs": None}
            if self.chat:
                choice["message"] = {"role": "assistant", "content": text}
            else:
                choice["text"] = text
            choice["ppl"] = {"probability": probability}
            choices.append(choice)
        return {
            "id": self.id,
            "object": "chat.completion" if self.chat else "text_completion",
            "created": self.created,
            "model": self.model,
            "choices": choices,
            "usage": self.usage(posterior),
            "ppl": ppl_field(posterior, self.prepared),
        }

    def chunk(self, choices: list[dict], **extra) -> str:
        body = {
            "id": self.id,
            "object": "chat.completion.chunk" if self.chat else "text_completion",
            "created": self.created,
            "model": self.model,
            "choices": choices,
            **extra,
        }
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

    def delta(self, index: int, text: str | None, finish: str | None, first: bool = False) -> dict:
        if self.chat:
            delta = (
                {"role": "assistant", "content": ""}
                if first
                else ({"content": text} if text is not None else {})
            )
            return {"index": index, "delta": delta, "finish_reason": finish, "logprobs": None}
        return {"index": index, "text": text or "", "finish_reason": finish, "logprobs": None}


async def _events(state: State, request: Request, job: Job, reply: Reply):
    """Progress events (chunks with no choices and a ``ppl.progress`` field), then the
    answers as content chunks, a last chunk with ``usage`` and ``ppl``, and ``[DONE]``."""
    prepared = reply.prepared
    deadline = time.monotonic() + prepared.timeout
    try:
        if reply.chat:
            yield reply.chunk([reply.delta(0, None, None, first=True)])
        while True:
            getting = asyncio.ensure_future(job.progress.get())
            done, _ = await asyncio.wait(
                {job.future, getting},
                timeout=max(0.0, deadline - time.monotonic()),
                return_when=asyncio.FIRST_COMPLETED,
            )
            if getting in done:
                yield reply.chunk([], ppl={"progress": getting.result()})
                continue
            getting.cancel()
            if job.future in done:
                break
            state.runner.cancel(job, "timeout", f"it took longer than {prepared.timeout:g} s")
            error = _timeout(prepared)
            yield f"data: {json.dumps(error_body(error.message, error.kind, error.code))}\n\n"
            return
        try:
            posterior = _posterior(job.future.result(), prepared)
        except RequestError as error:
            state.metrics.failure.labels(error.code).inc()
            yield f"data: {json.dumps(error_body(error.message, error.kind, error.code))}\n\n"
            return
        state.metrics.success.labels(job.model).inc()
        chosen = answers(posterior, prepared.n)
        for index, (text, _) in enumerate(chosen):
            if reply.chat and index > 0:
                yield reply.chunk([reply.delta(index, None, None, first=True)])
            yield reply.chunk([reply.delta(index, text, None)])
            yield reply.chunk([reply.delta(index, None, "stop")])
        options = reply.body.stream_options
        usage = reply.usage(posterior) if options is not None and options.include_usage else None
        yield reply.chunk([], usage=usage, ppl=ppl_field(posterior, prepared))
        yield "data: [DONE]\n\n"
    finally:
        if not job.future.done():
            state.runner.cancel(job, "disconnected", "the client disconnected")


# ---- running it -----------------------------------------------------------------------------------


def serve(
    files: list[str],
    *,
    backend: str | None,
    options: dict,
    host: str,
    port: int,
    api_key: str | None,
    limits: Limits,
    on_sigterm: str,
    drain_timeout: float,
) -> int:
    """Load the files, start the scheduler thread and serve until SIGTERM/SIGINT."""
    import uvicorn

    programs = Programs(files, backend, options)
    previous = signal.signal(signal.SIGTERM, _exit)  # a SIGTERM while engines start stops them too
    try:
        _start_engines(programs)
    except BaseException:
        programs.close()
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
    metrics = Metrics()
    runner = Runner(
        limits.in_flight,
        metrics,
        engines=lambda: list({id(m): m for m in list(programs.models.values())}.values()),
    )
    state = State(programs, limits, runner, metrics, api_key)
    app = Guard(create_app(state), state)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=drain_timeout if on_sigterm == "drain" else 5,
        lifespan="off",
    )
    server = _Server(config, state, on_sigterm)
    names = ", ".join(programs.served)
    print(f"tts serve: http://{host}:{port}/v1 serving {names}", file=sys.stderr, flush=True)
    watching = threading.Event()
    threading.Thread(
        target=_watch_engines, args=(programs, server, watching), name="ppl-engine-health", daemon=True
    ).start()
    # uvicorn re-raises the signal it stopped on once it is done; with a handler of our own
    # in place that is a no-op, so the engines are closed and the outcome is said here
    previous = signal.signal(signal.SIGTERM, lambda *_: None)
    try:
        server.run()
    finally:
        watching.set()
        signal.signal(signal.SIGTERM, previous)
        left = runner.pending()
        if runner.closed != "cancel":  # not started, or a drain that ran out of time
            runner.close(cancel=True, reason=state.engine_failure or "the server stopped")
        runner.join(timeout=10)
        programs.close()
        outcome = server.outcome
        if state.shutting_down == "drain" and left:
            total = server.drain_pending
            outcome = (
                f"drained {total - left} of {total} requests; {left} not finished within "
                f"{config.timeout_graceful_shutdown} s were cancelled"
            )
        print(f"tts serve: stopped ({outcome})", file=sys.stderr, flush=True)
    return 1 if state.engine_failure else 0


def _watch_engines(programs: Programs, server: _Server, stop: threading.Event, every: float = 0.2) -> None:
    """Until ``stop``: if an engine has died (``failure()``, vLLM's), stop the server."""
    while not stop.wait(every):
        for model in {id(m): m for m in list(programs.models.values())}.values():
            failure = getattr(model, "failure", None)
            reason = failure() if callable(failure) else None
            if reason:
                server.engine_failed(f"the engine of {getattr(model, 'name', model)} failed: {reason}")
                return


def _exit(*_) -> None:
    raise SystemExit(143)


def _start_engines(programs: Programs) -> None:
    """Start the vLLM engines now, in this thread, so the first request does not wait ~30 s
    for one and /health answers only once the server can serve."""
    from ppl.backends.vllm import VLLMEngine

    for model in {id(m): m for m in programs.models.values()}.values():
        if isinstance(model, VLLMEngine):
            try:
                model.engine  # noqa: B018 - the property starts the engine
            except Exception as error:
                raise RuntimeError(
                    f"the engine of {model.name} did not start: {type(error).__name__}: {error}"
                ) from None


class _Server:
    """uvicorn's server with ppl's shutdown: on SIGTERM (or SIGINT) say whether the requests
    in flight are drained or cancelled, stop taking new ones, then let uvicorn finish."""

    def __init__(self, config, state: State, on_sigterm: str):
        import uvicorn

        outer = self

        class Server(uvicorn.Server):
            def handle_exit(self, sig, frame):
                outer.stopping(sig)
                super().handle_exit(sig, frame)

        self.server = Server(config)
        self.state, self.mode, self.outcome = state, on_sigterm, "not started"
        self.drain_pending = 0

    def run(self) -> None:
        self.outcome = "stopped"
        self.server.run()

    def engine_failed(self, reason: str) -> None:
        """An engine died: /health and new requests get 503 naming ``reason``, the requests in
        flight fail with it (the scheduler thread's engine error, 502), and the server stops
        once their replies are sent: exit status 1, for a supervisor to restart it."""
        state = self.state
        state.engine_failure = reason
        pending = state.runner.pending()
        noun = "request" if pending == 1 else "requests"
        print(
            f"tts serve: {reason}; stopping ({pending} {noun} in flight fail; /health and new requests get 503)",
            file=sys.stderr,
            flush=True,
        )
        self.outcome = f"{reason}; {pending} {noun} in flight failed"
        self.server.should_exit = True

    def stopping(self, sig) -> None:
        state = self.state
        if state.shutting_down:
            return
        state.shutting_down = self.mode
        pending = state.runner.pending()
        noun = "request" if pending == 1 else "requests"
        if self.mode == "drain":
            print(
                f"tts serve: shutting down: draining {pending} {noun} in flight "
                f"(up to {self.server.config.timeout_graceful_shutdown} s; new requests get 503)",
                file=sys.stderr,
                flush=True,
            )
            state.runner.close(cancel=False)
            self.outcome, self.drain_pending = f"drained {pending} {noun}", pending
        else:
            print(
                f"tts serve: shutting down: cancelling {pending} {noun} in flight",
                file=sys.stderr,
                flush=True,
            )
            state.runner.close(cancel=True)
            self.outcome = f"cancelled {pending} {noun}"
