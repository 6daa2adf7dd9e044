"""The shared scheduler behind ``tts serve``: one thread runs it; HTTP handlers submit to it.

Every request is a problem in the same ``ppl.scheduler.Scheduler``, so the particles of all
requests in flight share engine calls. The scheduler runs in one background thread
(``Scheduler.serve``: greenlets belong to the thread that made them); handlers on the
asyncio loop submit a ``Job`` and await its future, which the scheduler thread resolves
with ``loop.call_soon_threadsafe``. After each round the thread updates the Prometheus
metrics, sends progress events to streaming jobs, and cancels jobs past their token budget.
An engine failure fails the jobs in flight (their clients get the engine's message) and a
fresh scheduler takes the next requests.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from ppl.scheduler import DEAD, Cancelled, Scheduler


class EngineFailure(Exception):
    """The engine failed while the job was in flight (the scheduler's ``EngineError``)."""


@dataclass
class Job:
    """One request in the scheduler: where its answer goes, and what it may spend."""

    model: str  # the served program's id (the metrics' model_name)
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future
    max_tokens: int  # generated tokens over all particles
    progress: asyncio.Queue | None = None  # progress events, for streamed replies
    id: int = -1
    started: float = field(default_factory=time.perf_counter)
    cancel_code: str | None = None
    step: int = -1

    def resolve(self, value: Any) -> None:
        self.loop.call_soon_threadsafe(_set_result, self.future, value)

    def tell(self, event: dict) -> None:
        if self.progress is not None:
            self.loop.call_soon_threadsafe(self.progress.put_nowait, event)


def _set_result(future: asyncio.Future, value: Any) -> None:
    if not future.done():
        future.set_result(value)


class Metrics:
    """The server's Prometheus metrics, in their own registry, named as vLLM names its own
    (``vllm:num_requests_running`` → ``ppl:num_requests_running``)."""

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.requests_running = Gauge("ppl:num_requests_running", "Requests in the scheduler.", registry=r)
        self.requests_waiting = Gauge(
            "ppl:num_requests_waiting", "Requests waiting for room in flight.", registry=r
        )
        self.particles_running = Gauge(
            "ppl:num_particles_running", "Particles of all requests in flight.", registry=r
        )
        self.success = Counter("ppl:request_success", "Requests answered.", ["model_name"], registry=r)
        self.failure = Counter(
            "ppl:request_failure", "Requests refused or failed, by reason.", ["reason"], registry=r
        )
        self.particles = Counter("ppl:particles", "Particles started.", ["model_name"], registry=r)
        self.particles_cancelled = Counter(
            "ppl:particles_cancelled", "Particles of cancelled requests.", ["reason"], registry=r
        )
        self.engine_calls = Counter(
            "ppl:engine_calls", "Engine calls of the shared scheduler.", ["engine", "method"], registry=r
        )
        self.prompt_tokens = Counter(
            "ppl:prompt_tokens", "Prompt tokens of every particle.", ["model_name"], registry=r
        )
        self.generation_tokens = Counter(
            "ppl:generation_tokens", "Generated tokens of every particle.", ["model_name"], registry=r
        )
        self.cached_tokens = Counter(
            "ppl:prompt_tokens_cached",
            "Prompt tokens the engines served from their prefix cache.",
            registry=r,
        )
        self.rounds = Counter("ppl:scheduler_rounds", "Rounds of the shared scheduler.", registry=r)
        self.latency = Histogram(
            "ppl:e2e_request_latency_seconds",
            "Time from submission to answer.",
            ["model_name"],
            buckets=(0.01, 0.05, 0.1, 0.3, 1, 3, 10, 30, 60, 120, 300, 600),
            registry=r,
        )


class Runner:
    """The scheduler thread. ``submit``/``cancel``/``close`` may be called from any thread."""

    def __init__(self, in_flight: int, metrics: Metrics, engines: Callable[[], list] = list):
        self.in_flight = in_flight
        self.metrics = metrics
        self.engines = engines  # the loaded models, whose usage counts cached prompt tokens
        self._cached = 0
        self._lock = threading.Lock()
        self._jobs: dict[int, Job] = {}
        self._ids = itertools.count()
        self._calls: dict = defaultdict(int)  # engine calls already counted, per (model, method)
        self._rounds = 0
        self.scheduler = Scheduler(max_particles=in_flight)
        self.closed: str | None = None
        self._thread = threading.Thread(target=self._loop, name="ppl-scheduler", daemon=True)
        self._thread.start()

    # --- from the HTTP handlers ------------------------------------------------------------

    def submit(self, job: Job, program, args: tuple, kwargs: dict, algorithm, source) -> None:
        with self._lock:
            job.id = next(self._ids)
            self._jobs[job.id] = job
            self.scheduler.submit(job.id, program, args, kwargs, algorithm, source)
        self.metrics.particles.labels(job.model).inc(getattr(algorithm, "particles", 1))
        self.metrics.requests_waiting.set(self.scheduler.waiting())

    def cancel(self, job: Job, code: str, reason: str) -> None:
        if job.cancel_code is None:
            job.cancel_code = code
        self.scheduler.cancel(job.id, reason)

    def waiting(self) -> int:
        return self.scheduler.waiting()

    def pending(self) -> int:
        with self._lock:
            return len(self._jobs)

    def close(self, *, cancel: bool, reason: str = "the server is shutting down") -> None:
        """Stop taking requests; finish the ones in flight (drain) or cancel them (also after
        a drain)."""
        self.closed = "cancel" if cancel else "drain"
        if cancel:
            with self._lock:
                for job in self._jobs.values():
                    job.cancel_code = job.cancel_code or "shutdown"
        self.scheduler.close(cancel=cancel, reason=reason)

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    # --- in the scheduler thread -----------------------------------------------------------

    def _loop(self) -> None:
        while True:
            scheduler = self.scheduler
            try:
                for index, result in scheduler.serve(self._on_round):
                    self._deliver(index, result)
                return  # closed
            except Exception as error:  # the engine failed: fail what is in flight, go on afresh
                with self._lock:
                    jobs, self._jobs = list(self._jobs.values()), {}
                    self._calls = defaultdict(int)
                    self.scheduler = Scheduler(max_particles=self.in_flight)
                    if self.closed is not None:
                        self.scheduler.close(cancel=self.closed == "cancel")
                for job in jobs:
                    self.metrics.failure.labels("engine").inc()
                    job.resolve(EngineFailure(str(error)))

    def _deliver(self, index: int, result) -> None:
        with self._lock:
            job = self._jobs.pop(index, None)
        if job is None:
            return
        m = self.metrics
        if isinstance(result, Cancelled):
            code = job.cancel_code or "cancelled"
            m.failure.labels(code).inc()
            m.particles_cancelled.labels(code).inc(result.particles)
            tokens_in, tokens_out = result.tokens_in, result.tokens_out
        else:
            m.latency.labels(job.model).observe(time.perf_counter() - job.started)
            tokens_in, tokens_out = result.diagnostics.tokens_in, result.diagnostics.tokens_out
        m.prompt_tokens.labels(job.model).inc(tokens_in)
        m.generation_tokens.labels(job.model).inc(tokens_out)
        job.resolve(result)

    def _on_round(self, scheduler: Scheduler) -> None:
        # Let the HTTP thread run: a round on an in-process engine (tabular) is pure Python and
        # would hold the GIL for whole requests, so progress events, /metrics and SIGTERM's
        # bookkeeping would wait for the work to end. sleep(0) hands the GIL over each round.
        time.sleep(0)
        m = self.metrics
        m.rounds.inc(scheduler.stats.rounds - self._rounds)
        self._rounds = scheduler.stats.rounds
        for (engine, method), calls in list(scheduler.stats.calls.items()):
            new = calls - self._calls[(engine, method)]
            if new:
                m.engine_calls.labels(str(engine), method).inc(new)
                self._calls[(engine, method)] = calls
        cached = sum(getattr(getattr(e, "usage", None), "cached_prompt_tokens", 0) for e in self.engines())
        if cached > self._cached:
            m.cached_tokens.inc(cached - self._cached)
            self._cached = cached
        m.requests_running.set(len(scheduler.active))
        m.requests_waiting.set(scheduler.waiting())
        m.particles_running.set(sum(len(run.particles) for run in scheduler.active))
        with self._lock:
            jobs = dict(self._jobs)
        for run in scheduler.active:
            job = jobs.get(run.index)
            if job is None:
                continue
            if run.tokens_out > job.max_tokens and job.cancel_code is None:
                self.cancel(
                    job, "token_budget", f"it generated more than its budget of {job.max_tokens} tokens"
                )
            if job.progress is not None and run.step != job.step:
                job.step = run.step
                job.tell(
                    {
                        "step": run.step,
                        "particles": len(run.particles),
                        "alive": sum(p.status != DEAD for p in run.particles),
                        "ess": round(run.ess[-1], 3) if run.ess else None,
                        "resampled": bool(run.resampled[-1]) if run.resampled else False,
                        "tokens_in": run.tokens_in,
                        "tokens_out": run.tokens_out,
                    }
                )
