"""OpenAI-compatible completion servers (``vllm serve``, SGLang) as one LanguageModel.

This is how a user outgrows one machine: run vLLM's own servers (with its tensor,
pipeline or data parallelism) and list them here. Prompts are sent as token ids and
segments come back as token ids (``return_token_ids``), so particle state is never
re-tokenised; the tokenizer runs locally from the model's folder.

* **Several servers, prefix affinity.** All requests of one problem (the scheduler marks
  them with the problem's id, ``request.group``) go to the same server, chosen by a stable
  hash, so that server's prefix cache serves every particle's shared prompt. Requests
  without a group are routed by a hash of their first ``affinity_tokens`` tokens.
* **Streaming.** Each request is its own HTTP request (each carries its own seed), sent the
  moment the scheduler submits it, on a pool of ``max_concurrency`` connections; ``poll``
  hands back answers as they arrive (``ppl.interfaces.Streaming``), so a particle whose
  segment came back early is already working on its next one. The batched ``generate``
  and ``logprob`` send their requests concurrently and return when all are answered.
* **Next-token reads** (``next_token_logprobs``, a judge's Yes/No): one one-token
  completion per item with vLLM's ``logprob_token_ids`` (and ``return_tokens_as_token_ids``
  so the answer names tokens by id); the server's prefix cache serves the shared prompt.
  A server without ``logprob_token_ids`` answers with an error, raised as ``ServerError``.
* **Failures.** Each HTTP request has a timeout; refused or reset connections, timeouts,
  408/429/5xx answers and bodies that are not JSON are retried with exponential backoff
  (tenacity; a server closes idle keep-alive connections after ~5 s: every request opens
  its own connection). A server that stays down, or answers without the fields asked for,
  raises ``ServerError`` naming it; under an interpreter that is an ``EngineError`` whose
  ``completed`` keeps every problem already finished.
* **Server settings.** Start the servers with ``--logprobs-mode processed_logprobs`` so
  sampled log-probabilities are under the sampling distribution, and on CPUs with
  ``--no-enable-chunked-prefill`` (seeded requests crash vLLM 0.32's CPU runner
  otherwise); see ``ppl.backends.vllm``.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path

import tenacity

from ppl.interfaces import GenRequest, NextTokenRequest, ScoreRequest, Segment, Usage

from .embedded import DEFAULT_MODEL, embedded, prepare
from .hf import HFTokenizer

RETRY_STATUS = {408, 429, 500, 502, 503, 504}


class _Transient(Exception):
    """A failure worth another attempt (its message is the cause)."""


class ServerError(RuntimeError):
    """A server did not answer, or answered with an error; the message names it."""

    def __init__(self, server: str, message: str):
        super().__init__(f"server {server}: {message}")
        self.server = server


class OpenAICompatible(HFTokenizer):
    """A LanguageModel on one or more OpenAI-compatible ``/v1/completions`` servers."""

    def __init__(
        self,
        servers: Sequence[str],
        *,
        tokenizer: str = DEFAULT_MODEL,
        model: str | None = None,
        name: str = "openai",
        timeout: float = 300.0,
        retries: int = 3,
        backoff: float = 0.5,
        affinity_tokens: int = 64,
        max_concurrency: int = 64,
    ):
        servers = [s.rstrip("/") for s in ([servers] if isinstance(servers, str) else servers)]
        if not servers:
            raise ValueError("OpenAICompatible needs at least one server URL")
        for server in servers:
            if not server.startswith(("http://", "https://")):
                raise ValueError(f"server URLs start with http:// or https://, got {server!r}")
        if retries < 0 or timeout <= 0 or affinity_tokens < 1:
            raise ValueError("retries must be >= 0, timeout > 0 and affinity_tokens >= 1")
        self.servers = servers
        self.tokenizer_source = tokenizer
        self.model = model
        self.name = name
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.affinity_tokens = affinity_tokens
        self.max_concurrency = max_concurrency
        self.usage = Usage()
        self.requests_per_server: Counter = Counter()
        self._tokenizer = None
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None  # for streamed requests, made on first use
        self._streamed: dict[Future, int] = {}  # in flight → ticket
        self._counter = 0

    # --- tokenizer ---------------------------------------------------------------------------

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            path = (
                prepare(self.tokenizer_source)
                if embedded(self.tokenizer_source)
                else Path(self.tokenizer_source)
            )
            self._tokenizer = AutoTokenizer.from_pretrained(path)
        return self._tokenizer

    # --- routing and HTTP ----------------------------------------------------------------------

    def server_for(self, request: GenRequest | ScoreRequest) -> str:
        """The server for a request: a stable hash of its group, or of its first tokens."""
        if request.group is not None:
            key = f"group:{request.group}".encode()
        else:
            key = ",".join(map(str, request.prompt[: self.affinity_tokens])).encode()
        digest = int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little")
        return self.servers[digest % len(self.servers)]

    def _model_for(self, server: str) -> str:
        if self.model is None:
            answer = self._http(server, "/v1/models", None)
            self.model = self._field(server, answer, "model id", lambda a: str(a["data"][0]["id"]))
        return self.model

    def _http(self, server: str, path: str, body: dict | None) -> dict:
        """POST ``body`` (GET when None) to ``server + path``; its JSON answer.

        Transient failures — refused or reset connections, timeouts, the statuses in
        ``RETRY_STATUS``, a body that is not JSON (a proxy cutting it short) — are retried
        ``retries`` times with exponential backoff (tenacity); then, or at once for any
        other HTTP error, a ``ServerError`` names the server, the path and the last cause.
        """
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}

        def attempt() -> dict:
            request = urllib.request.Request(server + path, data=data, headers=headers)
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    raw = response.read()
            except urllib.error.HTTPError as error:
                detail = error.read().decode(errors="replace")[:500]
                if error.code not in RETRY_STATUS:
                    raise ServerError(server, f"HTTP {error.code} on {path}: {detail}") from None
                raise _Transient(f"HTTP {error.code}: {detail}") from None
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as error:
                raise _Transient(f"{type(error).__name__}: {getattr(error, 'reason', error)}") from None
            try:
                answer = json.loads(raw)
            except ValueError:
                raise _Transient(f"malformed JSON: {raw[:200].decode(errors='replace')!r}") from None
            if not isinstance(answer, dict):
                raise ServerError(server, f"the answer on {path} is not a JSON object: {raw[:200]!r}")
            return answer

        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(_Transient),
            stop=tenacity.stop_after_attempt(self.retries + 1),
            wait=tenacity.wait_exponential(multiplier=self.backoff, max=max(self.backoff, 30.0)),
            reraise=True,
        )
        try:
            return retrying(attempt)
        except _Transient as last:
            raise ServerError(
                server, f"no answer on {path} after {self.retries + 1} attempts ({last})"
            ) from None

    def _field(self, server: str, answer: dict, what: str, get):
        """``get(answer)``, or a ``ServerError`` naming the server when the answer lacks it."""
        try:
            return get(answer)
        except (KeyError, IndexError, TypeError, ValueError) as error:
            raise ServerError(
                server, f"the answer has no {what} ({error!r}): {json.dumps(answer)[:300]}"
            ) from None

    def _parallel(self, jobs: list) -> list:
        if len(jobs) == 1:
            return [jobs[0]()]
        with ThreadPoolExecutor(max_workers=min(self.max_concurrency, len(jobs))) as pool:
            return list(pool.map(lambda job: job(), jobs))

    # --- streaming ----------------------------------------------------------------------------

    STREAMED = ("generate", "logprob", "next_token_logprobs")

    def streams(self, method: str) -> bool:
        return method in self.STREAMED

    def submit(self, method: str, parts: Sequence) -> list[int]:
        """Send each request now, on the pool; one ticket per request."""
        if not self.streams(method):
            raise ValueError(f"{self.name} streams {', '.join(self.STREAMED)} requests, not {method!r}")
        if method == "logprob":
            self._check_scoring(parts)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self.max_concurrency, thread_name_prefix="ppl-openai")
        call = {"generate": self._complete, "logprob": self._score, "next_token_logprobs": self._next}[method]
        tickets = []
        started = time.perf_counter()
        for part in parts:
            self._counter += 1
            self._streamed[self._pool.submit(call, part)] = self._counter
            tickets.append(self._counter)
        with self._lock:
            self.usage.record_call(len(parts), started)
        return tickets

    def poll(self) -> list[tuple[int, object]]:
        """Wait until some requests are answered; their answers. A request that failed after
        its retries raises its ``ServerError`` here."""
        if not self._streamed:
            return []
        done, _ = wait(list(self._streamed), return_when=FIRST_COMPLETED)
        return [(self._streamed.pop(future), future.result()) for future in done]

    def in_flight(self) -> int:
        return len(self._streamed)

    def abort(self, tickets: Sequence[int]) -> None:
        """Withdraw requests: those not started yet are cancelled; a request already sent
        finishes on its server, and its answer is dropped."""
        gone = set(tickets)
        for future, ticket in list(self._streamed.items()):
            if ticket in gone:
                future.cancel()
                del self._streamed[future]

    def close(self) -> None:
        """Stop the pool of streamed requests (their answers are dropped)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool, self._streamed = None, {}

    # --- batched calls -----------------------------------------------------------------------

    def generate(self, requests: Sequence[GenRequest]) -> list[list[Segment]]:
        started = time.perf_counter()
        jobs = [lambda r=r: self._complete(r) for r in requests]
        answers = self._parallel(jobs)
        with self._lock:
            self.usage.record_call(len(requests), started)
        return answers

    def _complete(self, request: GenRequest) -> list[Segment]:
        server = self.server_for(request)
        body = {
            "model": self._model_for(server),
            "prompt": list(request.prompt),
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "n": request.n,
            "logprobs": 0,
            "return_token_ids": True,
            "include_stop_str_in_output": True,
            "skip_special_tokens": False,
        }
        if request.stop:
            body["stop"] = list(request.stop)
        if request.seed is not None:
            body["seed"] = request.seed
        answer = self._http(server, "/v1/completions", body)
        choices = self._field(
            server, answer, "choices", lambda a: sorted(a["choices"], key=lambda c: c["index"])
        )
        if len(choices) != request.n:
            raise ServerError(server, f"asked for {request.n} completions, got {len(choices)}")
        segments = [
            self._field(server, choice, "completion token ids", lambda c: self._segment(c, request))
            for choice in choices
        ]
        self._count(server, answer, len(request.prompt))
        return segments

    def _count(self, server: str, answer: dict, prompt_tokens: int) -> None:
        """Count one answered completion request in ``usage``, from the server's own usage."""
        with self._lock:
            self.requests_per_server[server] += 1
            self.usage.requests += 1
            usage = answer.get("usage") or {}
            self.usage.prompt_tokens += usage.get("prompt_tokens", prompt_tokens)
            self.usage.generated_tokens += usage.get("completion_tokens", 0)
            details = usage.get("prompt_tokens_details") or {}
            self.usage.cached_prompt_tokens += details.get("cached_tokens") or 0

    def _segment(self, choice: dict, request: GenRequest) -> Segment:
        logprobs = (choice.get("logprobs") or {}).get("token_logprobs") or []
        ids = choice.get("token_ids") or []
        return self.segment(
            ids, logprobs, choice.get("finish_reason"), choice.get("stop_reason"), request.temperature
        )

    def _check_scoring(self, requests: Sequence[ScoreRequest]) -> None:
        for r in requests:
            if r.temperature != 1.0:
                raise ValueError(f"{self.name}: servers score continuations at temperature 1 only")
            if not r.prompt:
                raise ValueError(f"{self.name}: scoring needs a non-empty prompt")

    def logprob(self, requests: Sequence[ScoreRequest]) -> list[float]:
        self._check_scoring(requests)
        started = time.perf_counter()
        answers = self._parallel([lambda r=r: self._score(r) for r in requests])
        with self._lock:
            self.usage.record_call(len(requests), started)
        return answers

    def _score(self, request: ScoreRequest) -> float:
        ids = list(request.prompt) + list(request.continuation) + ([self.eos_token_id] if request.eos else [])
        server = self.server_for(request)
        body = {
            "model": self._model_for(server),
            "prompt": ids,
            "max_tokens": 1,
            "temperature": 1.0,
            "prompt_logprobs": 0,
        }
        answer = self._http(server, "/v1/completions", body)
        total = self._field(
            server,
            answer,
            "prompt log-probabilities",
            lambda a: sum(
                float(a["choices"][0]["prompt_logprobs"][i][str(ids[i])]["logprob"])
                for i in range(len(request.prompt), len(ids))
            ),
        )
        with self._lock:
            self.requests_per_server[server] += 1
            self.usage.requests += 1
            self.usage.prompt_tokens += len(ids)
        return total

    def next_token_logprobs(self, requests: Sequence[NextTokenRequest]) -> list[tuple[float, ...]]:
        """For each request, its tokens' log-probabilities as the next token (temperature 1):
        one one-token completion per item, sent concurrently."""
        started = time.perf_counter()
        answers = self._parallel([lambda r=r: self._next(r) for r in requests])
        with self._lock:
            self.usage.record_call(len(requests), started)
        return answers

    def _next(self, request: NextTokenRequest) -> tuple[float, ...]:
        server = self.server_for(request)
        body = {
            "model": self._model_for(server),
            "prompt": list(request.prompt),
            "max_tokens": 1,
            "temperature": 1.0,
            "logprobs": len(request.token_ids),
            "logprob_token_ids": list(request.token_ids),
            "return_tokens_as_token_ids": True,
        }
        answer = self._http(server, "/v1/completions", body)
        try:
            position = answer["choices"][0]["logprobs"]["top_logprobs"][0]
            # the server writes -inf as -9999.0 (JSON has no infinity)
            values = [float(position[f"token_id:{t}"]) for t in request.token_ids]
        except (KeyError, IndexError, TypeError) as error:
            raise ServerError(
                server,
                f"the answer to a next-token request has no log-probabilities for its tokens ({error!r})",
            ) from None
        self._count(server, answer, len(request.prompt))
        return tuple(-math.inf if v <= -9999.0 else v for v in values)

    def __repr__(self) -> str:
        return f"OpenAICompatible(servers={self.servers}, model={self.model!r})"
