"""The scheduler: every live particle of every problem, streamed through the engines.

How it works — the core's most important decision, in one place (docs/design.md §3):

* **A particle is a live execution plus its record.** Each particle runs its program in its
  own greenlet (a coroutine with its own stack). At a site that needs an engine the
  particle's ``Resume`` handler switches out to the scheduler with the request; the answer
  is switched back in and the program goes on from where it stood. Moving a particle one
  site on costs that site alone: a particle's cost is linear in its sites.
* **The record** — the answers its choice sites received, in order — is what a copy is
  made from. A Python frame cannot be copied, so a copy made at resampling starts a new
  execution that *replays* the record (Pyro's ``queue`` idea: recorded answers are served,
  nothing is asked of an engine) up to the barrier where its original stood, then runs on
  live. One copy of each parent takes the parent's own execution over when the parent is
  discarded, so only the extra copies replay.
* **Continuations**: a program whose state is data (compiled ``.tts``) offers, at each
  barrier, how to go on from there (``ppl.barrier(resume=...)``); the handler keeps it
  with its own state as a ``Continuation``, and an extra copy starts from it instead of
  replaying: copying costs the program's variables, not its past.
* **Open**: problems are submitted to a queue and admitted while others run, within a limit
  on particles (or problems) in flight; each finished problem is delivered at once.
  ``submit`` and ``cancel`` may be called from any thread while another runs the scheduler
  (``serve`` runs it for good, waiting when idle: what ``tts serve`` does); a cancelled
  problem's particles die, its streamed engine requests are aborted, and it is delivered
  once as a ``Cancelled`` record.
* **Streaming dispatch**: requests are grouped by (model, engine method). A model that
  streams (``ppl.interfaces.Streaming``: vLLM's engine loop, concurrent HTTP) gets each
  request as soon as its particle reaches the site and answers it as soon as its sequence
  ends, while the others run on; any other model answers each group in one batched call.
* **Barriers are per problem**: when all particles of one problem are at a barrier or
  finished, the interpreter acts for that problem alone (resample, prune, …) while the
  other problems keep the engines busy.
* Weights: the handler keeps the run's log weight (``ppl.handlers.Weigher``: scores,
  conditions, observations, proposal corrections, and the current step's twist). At a
  barrier or at the end, the particle's importance weight grows by the change since its
  last update, so twists are divided back out at the next step and a finished particle
  carries none.

A program that raises gives its particle weight −∞ and a recorded reason; a backend that
raises stops the run with an ``EngineError`` that keeps the posteriors already finished.
"""

from __future__ import annotations

import gc
import math
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import greenlet

from .errors import EngineError
from .handlers import Draw, Message, Messenger, Need, Site, Weigher, draw, only, resolve_site
from .history import Generation, snapshot
from .interfaces import GenRequest, Streaming, engine_method
from .nested import Answers, ChildSource, InferRequest
from .program import Program
from .randomness import Randomness, Source

RUNNING, WAITING, AT_BARRIER, FINISHED, DEAD = "running", "waiting", "at_barrier", "finished", "dead"


class _Killed(BaseException):
    """Control flow: the particle's weight became zero (raised inside its execution)."""

    def __init__(self, reason: str):
        self.reason = reason


@dataclass(frozen=True)
class _AtBarrier:
    """What an execution switches out with at a step barrier it has not passed yet."""


@dataclass(frozen=True)
class _Finished:
    value: Any


@dataclass(frozen=True)
class Continuation:
    """How a copy of a particle goes on from the barrier its parent stands at, without
    replaying the record: the program's state there (``run`` continues the program and
    returns its value; ``ppl.barrier(resume=...)`` offered it) and the handler's — choice
    sites done, barriers passed, the log weight so far, and the barrier's own site."""

    run: Callable[[], Any]
    choices: int
    barriers: int
    total: float
    site: Site


@dataclass
class Particle:
    """One particle: its record of answers, its weight, where it stands, and its execution."""

    problem: int
    key: tuple[int, ...]
    rng: Randomness
    records: list[list] = field(default_factory=list)
    parent: tuple[int, ...] | None = None  # the key of the particle it was copied from
    asked: list[list] = field(default_factory=list)  # per choice site, what it asked for each answer
    barriers_passed: int = 0
    log_weight: float = 0.0
    anchor: float = 0.0
    status: str = RUNNING
    need: Need | None = None
    value: Any = None
    error: str | None = None
    sites: list[Site] = field(default_factory=list)
    increments: list[float] = field(default_factory=list)
    replayed: int = 0  # record entries its execution has consumed (all, except for a replayed reference)
    answer: Any = field(default=None, repr=False)  # the engine's answer, to be switched in
    execution: Execution | None = field(default=None, repr=False, compare=False)
    origin: Execution | None = field(default=None, repr=False, compare=False)
    # offered by the program at the barrier it stands at (compiled .tts): a copy goes on from it
    continuation: Continuation | None = field(default=None, repr=False, compare=False)

    def clone(self, key: tuple[int, ...], rng: Randomness) -> Particle:
        """A copy with its own key and randomness. It has no execution of its own yet: it
        may take over its parent's (``origin``), go on from its ``continuation``, or replay.

        The lists of the record are the copy's own; their entries — one list per choice site
        done — are shared, because no entry is written once its site is done: a site that
        runs live gets new lists (``Resume``), a replayed one a new list for its answers.
        Copying every entry made a copy cost O(sites) in allocations the collector tracks."""
        return replace(
            self,
            key=key,
            rng=rng,
            parent=self.key,
            records=list(self.records),
            asked=list(self.asked),
            sites=list(self.sites),
            increments=list(self.increments),
            execution=None,
            origin=self.execution or self.origin,
        )


class Resume(Messenger):
    """A particle's handler: serves its record, then runs live, switching out to the
    scheduler at each engine request and each new barrier."""

    def __init__(self, particle: Particle, scheduler: greenlet.greenlet):
        super().__init__()
        self.particle = particle
        self.scheduler = scheduler
        self.choice_index = 0
        self.barriers = 0
        self.weights = Weigher()

    def untwist(self) -> None:
        """At a barrier the previous step's twist is divided back out."""
        self.weights.twist = 0.0

    def log_weight_at_barrier(self) -> float:
        """The run's log weight under the intermediate (twisted) target."""
        return self.weights.total + self.weights.twist

    def log_weight_at_end(self) -> float:
        """The run's log weight under the program's target: no twist is left in it."""
        return self.weights.total

    def process_message(self, msg: Message) -> None:
        if msg.kind == "barrier":
            if self.barriers == self.particle.barriers_passed:
                self.particle.replayed = self.choice_index
                self.particle.continuation = None if msg.resume is None else self.continuation(msg)
                self.scheduler.switch(_AtBarrier())
            self.barriers += 1
            self.untwist()
            msg.done = True
            return
        if msg.resolve is None:
            msg.done = True
            return
        particle = self.particle
        records, asked = particle.records, particle.asked
        index = self.choice_index
        self.choice_index += 1
        while len(asked) <= index:
            asked.append([])
        if index == len(records) or not records[index]:
            # a live site: new lists for its answers and questions (entries may be shared
            # with copies, and are never written once their site is done)
            recorded = []
            if index == len(records):
                records.append(recorded)
            else:
                records[index] = recorded
            asked[index] = []
            resolve_site(msg, recorded, self.answer)
            return
        # Replay: the site gets its recorded answers only if it asks what it asked when it
        # first ran. A program that differs on replay (Python's ``random``, a clock, global
        # state) would otherwise be given answers to other questions, silently. Past the
        # record it asks live, into a list of its own.
        recorded = records[index]
        answers = records[index] = []
        expected = asked[index] = list(asked[index])

        def replay(step: Need | Draw):
            k = len(answers)
            if k >= len(recorded):
                return self.answer(step)  # past the record: live
            if k < len(expected) and not _same_question(step, expected[k]):
                raise _Killed(
                    f"the program differs on replay: random choice {index + 1} ({msg.kind}) asked for "
                    "something else than when it first ran (a program must be deterministic given "
                    "what its sites return: no Python random, clocks or outside state)"
                )
            return recorded[k]

        resolve_site(msg, answers, replay)

    def continuation(self, msg: Message) -> Continuation:
        """Where this run stands at the barrier ``msg`` as a copy would go on from it: the
        state it will have once the barrier has passed (twist divided out, its site kept)."""
        site = Site(msg.kind, msg.value, msg.log_weight, msg.args)
        return Continuation(msg.resume(), self.choice_index, self.barriers + 1, self.weights.total, site)

    def go_on_from(self, continuation: Continuation) -> None:
        """Take the state a continuation describes (the particle's sites are its parent's)."""
        self.choice_index, self.barriers = continuation.choices, continuation.barriers
        self.weights.total = continuation.total
        self.particle.sites.append(continuation.site)

    def answer(self, step: Need | Draw):
        """A local draw is made at once; an engine request suspends the particle until the
        scheduler switches its answer back in. What was asked is kept with the record."""
        self.particle.asked[self.choice_index - 1].append(step)
        if isinstance(step, Need):
            self.particle.replayed = self.choice_index
            return self.scheduler.switch(step)
        return draw(step, self.particle.rng)

    def postprocess_message(self, msg: Message) -> None:
        self.particle.sites.append(Site(msg.kind, msg.value, msg.log_weight, msg.args))
        reason = self.weights.add(msg, len(self.particle.sites) - 1)
        if reason is not None:
            raise _Killed(reason)


def _same_question(step: Need | Draw, expected: Need | Draw) -> bool:
    """Whether a replayed site asks what the record says it asked: the same engine request
    of the same model, or a draw from the same logits (or the same kind of distribution)."""
    if type(step) is not type(expected):
        return False
    try:
        if isinstance(step, Need):
            same_model = step.model is expected.model or bool(step.model == expected.model)
            return same_model and bool(step.request == expected.request)
        if step.logits is not None or expected.logits is not None:
            return step.logits == expected.logits
        return type(step.distribution) is type(expected.distribution)
    except Exception:  # values that do not compare (arrays): nothing to go on
        return True


class Execution:
    """A particle's program running in its own greenlet: from the start of its record (which
    it replays), or — a copy whose parent's program offered one — from a ``Continuation``."""

    def __init__(
        self,
        particle: Particle,
        program: Program,
        args: tuple,
        kwargs: dict,
        continuation: Continuation | None = None,
    ):
        self.handler = Resume(particle, greenlet.getcurrent())
        if continuation is None:
            particle.sites = []  # rebuilt as the record replays
            self.run = lambda: (program.resumable or program.fn)(*args, **kwargs)
        else:
            self.handler.go_on_from(continuation)
            self.run = continuation.run
        self.greenlet = greenlet.greenlet(self._body)

    def _body(self, _answer=None) -> _Finished:
        with only(self.handler):
            return _Finished(self.run())

    @property
    def owner(self) -> Particle:
        return self.handler.particle

    def adopt(self, particle: Particle) -> None:
        """Hand this execution to ``particle``, a copy of its owner at the same barrier."""
        self.handler.particle = particle

    def resume(self, answer: Any = None):
        """Run on until the next request, barrier or end; returns what the program stopped at."""
        self.handler.scheduler = greenlet.getcurrent()
        return self.greenlet.switch(answer)

    def close(self) -> None:
        """End a suspended program now: ``GreenletExit`` is raised where it stands, its
        ``finally`` blocks run, and its frames go. Dropped instead, it would wait for the
        cyclic collector (the suspended frame refers to this execution, which refers to it)."""
        if self.greenlet:  # started and not finished
            self.greenlet.parent = greenlet.getcurrent()
            self.greenlet.throw()


def update_weight(particle: Particle, total: float) -> None:
    """Grow the importance weight by the change of the run's log weight since the last update."""
    increment = total - particle.anchor
    particle.log_weight += increment
    particle.anchor = total
    particle.increments.append(increment)


def advance(particle: Particle) -> None:
    """Run ``particle`` (which has an execution) on to its next engine request, barrier, or end."""
    execution, answer = particle.execution, particle.answer
    particle.answer = None
    try:
        signal = execution.resume(answer)
    except _Killed as killed:
        kill(particle, killed.reason)
    except greenlet.GreenletExit:
        kill(particle, "its execution was stopped")
    except Exception as error:  # the program raised: this particle dies, the run goes on
        kill(particle, f"{type(error).__name__}: {error}")
    else:
        if isinstance(signal, Need):
            particle.status, particle.need = WAITING, signal
        elif isinstance(signal, _AtBarrier):
            update_weight(particle, execution.handler.log_weight_at_barrier())
            particle.status = AT_BARRIER
        else:
            update_weight(particle, execution.handler.log_weight_at_end())
            particle.status, particle.value = FINISHED, signal.value
            particle.replayed = execution.handler.choice_index
    if particle.status in (FINISHED, DEAD):
        particle.execution = None  # its greenlet has ended


def usable_continuation(particle: Particle) -> Continuation | None:
    """The continuation a particle without an execution goes on from, if it stands where
    that continuation was made: just past the barrier, with the record up to there and no
    more (an interpreter that cut or extended the record — MH, Gibbs's reference — gets a
    replay instead)."""
    continuation = particle.continuation
    if (
        continuation is None
        or continuation.barriers != particle.barriers_passed
        or continuation.choices != len(particle.records)
    ):
        return None
    return continuation


def kill(particle: Particle, reason: str) -> None:
    particle.log_weight = -math.inf
    particle.status, particle.error = DEAD, reason


def hand_over(old: list[Particle], new: list[Particle]) -> None:
    """After an interpreter replaced a problem's particles: each execution whose particle was
    discarded goes to one copy of it that stands at the same place, so that copy need not
    replay. Every other copy goes on from its continuation or replays when it is next
    advanced. An execution no copy took is closed at once, so its stack does not wait for
    the collector."""
    kept = {id(p) for p in new}
    discarded = [p for p in old if id(p) not in kept and p.execution is not None]
    free = {id(p.execution): p.execution for p in discarded}
    for particle in new:
        origin, particle.origin = particle.origin, None
        if particle.execution is not None or origin is None or id(origin) not in free:
            continue
        handler = origin.handler
        if handler.barriers == particle.barriers_passed and handler.choice_index == len(particle.records):
            del free[id(origin)]
            origin.adopt(particle)
            particle.execution = origin
    for particle in discarded:
        if id(particle.execution) in free:
            particle.execution.close()
        particle.execution = None


@dataclass
class ProblemRun:
    """One problem in flight: its program, interpreter, inputs, particles and bookkeeping."""

    index: int
    args: tuple
    kwargs: dict
    program: Program | None = None
    algorithm: Any = None
    source: Source | None = None
    particles: list[Particle] = field(default_factory=list)
    step: int = 0
    ess: list[float] = field(default_factory=list)
    resampled: list[bool] = field(default_factory=list)
    engine_calls: int = 0
    started: float = field(default_factory=time.perf_counter)
    deaths: list[str] = field(default_factory=list)
    tokens_in: int = 0
    tokens_out: int = 0
    tokens_cached: int = 0  # prompt tokens the engine served from its prefix cache
    barrier_wait: float = 0.0  # seconds particles spent at barriers waiting for the others
    first_at_barrier: float | None = None
    state: Any = None  # the interpreter's own bookkeeping for this problem (a dataclass of its own)
    parent: Particle | None = None  # a nested run: the outer particle waiting for its answers
    group: int | None = None  # the prefix-affinity group of its requests (a nested run: its root's)
    history: list[Generation] | None = None  # the genealogy, when the run is traced (ppl.history)

    def settled(self) -> bool:
        return all(p.status in (AT_BARRIER, FINISHED, DEAD) for p in self.particles)

    def record(self, event: str) -> None:
        """Keep the particles as they stand now as a generation (only when traced)."""
        if self.history is not None:
            self.history.append(snapshot(self.particles, self.step, event))

    def note(self, **decided) -> None:
        """Note what the interpreter decided at the latest generation (only when traced)."""
        if self.history:
            self.history[-1].notes.update(decided)


@dataclass
class RunStats:
    """What the scheduler asked of the engines: calls and batch sizes per (model, method),
    and engine occupancy over time — ``(seconds since start, sequences in the engines)``."""

    rounds: int = 0
    tokens_out: int = 0  # generated tokens of every problem so far
    calls: dict = field(default_factory=lambda: defaultdict(int))
    batch_sizes: dict = field(default_factory=lambda: defaultdict(list))
    occupancy: list[tuple[float, int]] = field(default_factory=list)
    peak_in_flight: int = 0  # the most particles in flight at once
    cancelled: int = 0  # problems cancelled
    cancelled_particles: int = 0  # their particles that were still running or waiting
    # executions started for particles that already had a record (copies at resampling, MH
    # proposals, Gibbs's reference): from their parent's continuation, or by replaying it
    continued: int = 0
    replayed: int = 0
    started: float = field(default_factory=time.perf_counter)

    def total_calls(self, kind: str | None = None) -> int:
        return sum(n for (_, k), n in self.calls.items() if kind is None or k == kind)

    def record_occupancy(self, sequences: int) -> None:
        self.occupancy.append((time.perf_counter() - self.started, sequences))


@dataclass(frozen=True)
class RunProgress:
    """A snapshot of a run for a live display (``Scheduler(watch=...)``, ``Algorithm.run(...,
    watch=...)``): the core reports, the application renders — the core draws nothing.

    ``steps`` is the furthest step barrier any problem in flight has passed; ``ess`` the
    mean of the in-flight problems' latest ESS (None before any resampling decision) and
    ``particles`` their particles; ``waiting`` the requests in the engines right now."""

    elapsed: float
    done: int
    active: int
    queued: int
    steps: int
    live: int
    particles: int
    ess: float | None
    tokens_out: int
    waiting: int

    @property
    def tokens_per_second(self) -> float:
        return self.tokens_out / self.elapsed if self.elapsed > 0 else 0.0


@contextmanager
def collector_paused():
    """Python's cyclic garbage collector off for the inside of a round, back as it was after.

    A round allocates many small objects that live on (records, sites, requests), so the
    collector's generation counters trip over and over and each collection walks every
    particle's live objects: measured, it was half of the scheduler's own time (the
    instant-engine benchmark ran 2–2.6× faster without it). What a round leaves behind is
    freed by reference counting; cycles wait for the next collection, between rounds (where
    finished problems are handed to the caller)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _delegating(model) -> bool:
    """``isinstance(model, Delegating)`` as that check decides it (the protocol's methods are
    there), without ``typing``'s runtime-protocol machinery, which cost 10 % of a round when
    asked once per particle."""
    return callable(getattr(model, "delegates", None)) and callable(getattr(model, "delegate", None))


def _model_name(model) -> str:
    return getattr(model, "name", type(model).__name__)


@dataclass(frozen=True)
class Cancelled:
    """What ``results()`` / ``serve()`` deliver for a problem cancelled before it finished:
    why, and what it had cost (particles in flight when cancelled: 0 if it was still queued)."""

    reason: str
    particles: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    engine_calls: int = 0


@dataclass
class _Ticket:
    """One streamed engine request: whose it is and which of its parts."""

    particle: Particle
    request: Any
    answers: list
    missing: int


class Scheduler:
    """Runs many problems' particles together; each problem's interpreter decides what
    happens at its barriers.

    An interpreter offers ``start(run, source)`` (create the particles),
    ``at_barrier(run, source)`` (act once all the problem's particles have arrived),
    ``finish(run)`` (return the problem's Posterior) and ``restart(run, source)``, called
    when all the problem's particles have finished or died: returning True means it set
    new particles running (a new sweep, a new MCMC round) and the problem stays in flight.

    ``max_particles`` / ``max_problems`` bound what is in flight; problems beyond them wait
    in the queue (at least one problem is always admitted, whatever its size). With
    ``trace`` each problem keeps its genealogy (``ProblemRun.history``, ``ppl.history``).
    ``watch`` is called with a ``RunProgress`` at most every ``watch_every`` seconds, between
    rounds, and as each problem finishes (with its final state).
    """

    def __init__(
        self,
        *,
        max_particles: int | None = None,
        max_problems: int | None = None,
        feed: Iterator[tuple] | None = None,
        trace: bool = False,
        watch: Callable[[RunProgress], None] | None = None,
        watch_every: float = 0.25,
    ):
        if max_particles is not None and (
            isinstance(max_particles, bool) or not isinstance(max_particles, int) or max_particles < 1
        ):
            raise ValueError(f"max_in_flight must be an integer >= 1 (particles), got {max_particles!r}")
        self.max_particles = max_particles
        self.max_problems = max_problems
        self.trace = trace
        self.feed = (
            feed  # more problems, (id, program, args, kwargs, algorithm, source), read when there is room
        )
        self.stats = RunStats()
        self.queue: deque[ProblemRun] = deque()
        self.active: list[ProblemRun] = []
        self.completed: dict[int, Any] = {}
        self._runs: dict[int, ProblemRun] = {}  # the active problems by id
        self._streams: dict[int, Any] = {}  # id(model) → streaming model with requests in flight
        self._tickets: dict[tuple[int, Any], _Ticket] = {}
        self._delegations: dict[int, list] = {}  # id(particle) → (model, request, combine), outermost first
        # shared with other threads (submit, cancel, close), under the lock:
        self._lock = threading.Condition()
        self._pending: set[int] = set()  # ids submitted and not yet delivered
        self._cancels: dict[int, str] = {}  # id → reason, applied at the start of the next round
        self._closing: str | None = None  # "drain" or "cancel": serve() ends
        self._nested = 0  # nested runs started so far: their ids are -1, -2, …
        self.watch = watch
        self.watch_every = watch_every
        self._watched = -math.inf

    # --- problems in and out -------------------------------------------------------------

    def submit(
        self, index: int, program: Program, args: tuple, kwargs: dict, algorithm, source: Source
    ) -> None:
        """Queue a problem; it starts when there is room in flight. Ids must be distinct (from
        the problems not yet delivered, and from those kept in ``completed``). Any thread may
        submit while another thread runs the scheduler; it wakes ``serve`` up."""
        with self._lock:
            if index in self._pending or index in self.completed:
                raise ValueError(f"a problem with id {index} was already submitted")
            if self._closing is not None:
                raise RuntimeError("the scheduler is closed: it takes no more problems")
            self._pending.add(index)
            run = ProblemRun(index, args, kwargs, program, algorithm, source)
            run.history = [] if self.trace else None
            self.queue.append(run)
            self._lock.notify_all()

    def cancel(self, index: int, reason: str = "cancelled") -> bool:
        """Stop a problem, from any thread; False if it is not pending (unknown or delivered).

        It takes effect at the start of the next round: a queued problem is dropped; one in
        flight has its particles killed and its streamed engine requests aborted (``abort``
        on models that offer it; otherwise their answers are dropped as they come). It is
        delivered once, as ``Cancelled(reason, …)``. A problem that finishes before the
        cancellation takes effect is delivered as usual."""
        with self._lock:
            if index not in self._pending:
                return False
            self._cancels.setdefault(index, reason)
            self._lock.notify_all()
            return True

    def close(self, *, cancel: bool = False, reason: str = "the scheduler was closed") -> None:
        """End ``serve()``, from any thread: once every problem submitted has finished (drain),
        or, with ``cancel=True``, at once, every pending problem cancelled with ``reason``.
        ``submit`` refuses problems from now on."""
        with self._lock:
            self._closing = "cancel" if cancel else "drain"
            if cancel:
                for index in self._pending:
                    self._cancels.setdefault(index, reason)
            self._lock.notify_all()

    def waiting(self) -> int:
        """Problems submitted and not yet admitted (thread-safe)."""
        with self._lock:
            return len(self.queue)

    def run(self, on_done: Callable[[int, Any], None] | None = None) -> dict[int, Any]:
        """Run until every submitted problem is done; ``on_done(id, posterior)`` as each
        finishes (it may submit more). Returns id → Posterior of the problems run."""
        for index, posterior in self.results():
            if on_done is not None:
                on_done(index, posterior)
        return self.completed

    def results(self) -> Iterator[tuple[int, Any]]:
        """Drive the run, yielding ``(id, posterior)`` as each problem finishes; problems may
        be submitted between yields."""
        self._admit()
        while self.queue or self.active or self._cancels:
            yield from self._round()

    def serve(self, on_round: Callable[[Scheduler], None] | None = None) -> Iterator[tuple[int, Any]]:
        """Run for good, for a server: yield ``(id, Posterior | Cancelled)`` as problems finish
        or are cancelled; when nothing is in flight, wait until a problem is submitted (from
        any thread) or ``close()`` is called. Delivered results are not kept in
        ``completed``. ``on_round(scheduler)`` is called in this thread after each round (its
        ``active`` problems may be read then)."""
        while True:
            with self._lock:
                while not (self.queue or self.active or self._cancels or self._closing):
                    self._lock.wait()
                if self._closing and not (self.queue or self.active or self._cancels):
                    return
            for index, result in self._round():
                self.completed.pop(index, None)
                yield index, result
            if on_round is not None:
                on_round(self)

    def _round(self) -> Iterator[tuple[int, Any]]:
        """One round: cancellations, admissions, every running particle moved on, barriers
        and finished problems settled (yielded), then the engines called."""
        yield from self._take_cancellations()
        with collector_paused():
            self._admit()
            self.stats.rounds += 1
            for run in list(self.active):
                self._advance(run)
            finished = self._settle()
        for run in finished:
            yield run.index, self.completed[run.index]
        with collector_paused():
            self._dispatch()
        if self.active:
            self._report()

    def _take_cancellations(self) -> Iterator[tuple[int, Cancelled]]:
        with self._lock:
            if not self._cancels:
                return
            cancels, self._cancels = self._cancels, {}
            queued = [run for run in self.queue if run.index in cancels]
            for run in queued:
                self.queue.remove(run)
            active = [run for run in self.active if run.index in cancels]
            self._pending -= {run.index for run in (*queued, *active)}
        for run in queued:
            self.stats.cancelled += 1
            yield run.index, Cancelled(cancels[run.index])
        for run in active:
            self.active.remove(run)
            del self._runs[run.index]
            self._abort(run)
            alive = [p for p in run.particles if p.status not in (FINISHED, DEAD)]
            for particle in alive:
                kill(particle, f"cancelled: {cancels[run.index]}")
                if particle.execution is not None:
                    particle.execution.close()
                    particle.execution = None
                self._delegations.pop(id(particle), None)
            self.stats.cancelled += 1
            self.stats.cancelled_particles += len(alive)
            yield (
                run.index,
                Cancelled(
                    cancels[run.index], len(run.particles), run.tokens_in, run.tokens_out, run.engine_calls
                ),
            )

    def _abort(self, run: ProblemRun) -> None:
        """Withdraw a cancelled problem's streamed requests from the engines."""
        by_model: dict[int, list] = defaultdict(list)
        for (model_id, ticket_id), (ticket, _) in list(self._tickets.items()):
            if ticket.particle.problem == run.index:
                del self._tickets[(model_id, ticket_id)]
                by_model[model_id].append(ticket_id)
        for model_id, tickets in by_model.items():
            model = self._streams[model_id]
            abort = getattr(model, "abort", None)
            if abort is not None:
                abort(tickets)
                if not model.in_flight():
                    del self._streams[model_id]

    def progress(self) -> RunProgress:
        """Where the run stands now."""
        latest = [run.ess[-1] for run in self.active if run.ess]
        return RunProgress(
            elapsed=time.perf_counter() - self.stats.started,
            done=len(self.completed),
            active=len(self.active),
            queued=len(self.queue),
            steps=max((run.step for run in self.active), default=0),
            live=sum(p.status != DEAD for run in self.active for p in run.particles),
            particles=self._in_flight(),
            ess=sum(latest) / len(latest) if latest else None,
            tokens_out=self.stats.tokens_out,
            waiting=len(self._tickets),
        )

    def _report(self, force: bool = False) -> None:
        if self.watch is None:
            return
        now = time.perf_counter()
        if force or now - self._watched >= self.watch_every:
            self._watched = now
            self.watch(self.progress())

    def _in_flight(self) -> int:
        return sum(len(run.particles) for run in self.active)

    def _admit(self) -> None:
        while True:
            if not self.queue and self.feed is not None:
                try:
                    self.submit(*next(self.feed))
                except StopIteration:
                    self.feed = None
            if not self.queue:
                return
            run = self.queue[0]
            size = getattr(run.algorithm, "particles", 1)
            room = self.max_particles is None or self._in_flight() + size <= self.max_particles
            room = room and (self.max_problems is None or len(self.active) < self.max_problems)
            if self.active and not room:
                return
            with self._lock:
                self.queue.popleft()
            run.started = time.perf_counter()
            run.algorithm.start(run, run.source)
            self.active.append(run)
            self._runs[run.index] = run
            self.stats.peak_in_flight = max(self.stats.peak_in_flight, self._in_flight())

    # --- moving particles --------------------------------------------------------------------

    def _advance(self, run: ProblemRun) -> None:
        for particle in run.particles:
            if particle.status == RUNNING:
                if particle.execution is None:
                    particle.execution = self._execution(particle, run)
                advance(particle)
                if particle.status == DEAD:
                    run.deaths.append(particle.error)
                elif particle.status == AT_BARRIER and run.first_at_barrier is None:
                    run.first_at_barrier = time.perf_counter()

    def _execution(self, particle: Particle, run: ProblemRun) -> Execution:
        """A new execution for ``particle``; one for a particle that already has a record (a
        copy, an MH proposal, Gibbs's reference) is counted as continued or replayed."""
        continuation = usable_continuation(particle)
        if particle.records:
            self.stats.continued += continuation is not None
            self.stats.replayed += continuation is None
        return Execution(particle, run.program, run.args, run.kwargs, continuation)

    def _settle(self) -> list[ProblemRun]:
        """Act for every problem whose particles have all arrived; return those finished."""
        finished, still_active = [], []
        for run in self.active:
            if not run.settled():
                still_active.append(run)
            elif any(p.status == AT_BARRIER for p in run.particles):
                if run.first_at_barrier is not None:
                    run.barrier_wait += time.perf_counter() - run.first_at_barrier
                    run.first_at_barrier = None
                old = run.particles
                decisions = len(run.ess), len(run.resampled)
                run.record("barrier")
                run.algorithm.at_barrier(run, run.source)
                if len(run.ess) > decisions[0]:
                    run.note(ess=run.ess[-1])
                if len(run.resampled) > decisions[1]:
                    run.note(resampled=run.resampled[-1])
                hand_over(old, run.particles)
                run.step += 1
                for particle in run.particles:
                    if particle.status == AT_BARRIER:
                        particle.barriers_passed += 1
                        particle.status = RUNNING
                still_active.append(run)
            else:
                run.record("end")
                if run.algorithm.restart(run, run.source):
                    still_active.append(run)
                    continue
                self._report(force=True)  # a display shows every problem's final state
                posterior = run.algorithm.finish(run)
                del self._runs[run.index]
                if run.parent is not None:
                    self._nested_done(run, posterior)
                else:
                    self.completed[run.index] = posterior
                    with self._lock:
                        self._pending.discard(run.index)
                    finished.append(run)
        self.active = still_active
        return finished

    # --- nested inference ---------------------------------------------------------------------

    def _start_nested(self, run: ProblemRun, particle: Particle) -> None:
        """Start the nested run an outer particle asked for (``ppl.nested``) as a child problem of
        this scheduler: its particles join the same rounds and engine calls as everyone's. It
        is admitted at once (its parent holds a place already), keyed by the outer site."""
        request: InferRequest = particle.need.request
        particle.need = None
        # the outer particle's key (without a nested run's scheduler id) and the site's position
        own = particle.key if run.parent is None else (particle.key[0], *particle.key[2:])
        site = (*own, len(particle.records), len(particle.records[-1]))
        source = ChildSource(run.source, site)
        program = request.program
        args, kwargs = program.bind(request.problem)
        if getattr(request.algorithm, "exact", False):
            # an exact interpreter does not run on the scheduler (enumeration): a sub-run
            stream = request.algorithm.stream(program, [(0, request.problem)], randomness=source)
            inner = next(iter(stream))[1]
            run.tokens_in += inner.diagnostics.tokens_in
            run.tokens_out += inner.diagnostics.tokens_out
            self.stats.tokens_out += inner.diagnostics.tokens_out
            for caller in self._callers([run]):
                caller.engine_calls += inner.diagnostics.engine_calls
            particle.answer, particle.status = Answers.of(inner), RUNNING
            return
        self._nested += 1
        child = ProblemRun(-self._nested, args, kwargs, program, request.algorithm, source)
        child.parent = particle
        child.group = run.group if run.group is not None else run.index
        child.algorithm.start(child, source)
        self.active.append(child)
        self._runs[child.index] = child

    def _nested_done(self, child: ProblemRun, posterior) -> None:
        """A nested run finished: its answers go to the waiting outer particle, its tokens to
        the outer problem (its engine calls were counted to the outer problem as they were made)."""
        particle = child.parent
        outer = self._runs[particle.problem]
        outer.tokens_in += child.tokens_in
        outer.tokens_out += child.tokens_out
        outer.tokens_cached += child.tokens_cached
        particle.answer, particle.status = Answers.of(posterior), RUNNING

    # --- engines ------------------------------------------------------------------------------

    def _dispatch(self) -> None:
        """Send every new request: each request at once to a streaming model; one call per
        (model, method) to a batched one, made once no streamed request is in flight (so a
        batched reward model still answers each round in one call, with every particle that
        reached it); then, if no particle can move, wait for the streams to answer."""
        groups: dict[tuple[int, str], list[tuple[ProblemRun, Particle]]] = defaultdict(list)
        models = {}
        for run in list(self.active):
            for particle in run.particles:
                if (
                    particle.status == WAITING
                    and particle.need is not None
                    and isinstance(particle.need.request, InferRequest)
                ):
                    self._start_nested(run, particle)
        for run in self.active:
            for particle in run.particles:
                if particle.status == WAITING and particle.need is not None:
                    self._delegate(particle)
                if particle.status == WAITING and particle.need is not None:
                    key = (id(particle.need.model), engine_method(particle.need.request))
                    groups[key].append((run, particle))
                    models[key[0]] = particle.need.model
        streamed = {
            key for key in groups if isinstance(models[key[0]], Streaming) and models[key[0]].streams(key[1])
        }
        for (model_id, method), waiting in sorted(groups.items(), key=lambda item: item[0] not in streamed):
            model = models[model_id]
            if (model_id, method) not in streamed and self._tickets:
                continue  # a batched model is called once the stream has drained: one call a round
            owners, parts = [], []
            seeds = self._engine_seeds(waiting)
            for run, particle in waiting:
                request = particle.need.request
                group = run.group if run.group is not None else particle.problem
                if id(particle) in seeds:
                    request = request.dispatched(seeds[id(particle)], group)
                else:
                    request = request.grouped(group)
                particle.need = None  # sent
                owners.append((particle, request, len(parts)))
                parts.extend(request.parts())
            self.stats.batch_sizes[(_model_name(model), method)].append(len(parts))
            self.stats.calls[(_model_name(model), method)] += 1
            for run in self._callers(run for run, _ in waiting):
                run.engine_calls += 1
            if (model_id, method) in streamed:
                tickets = self._engine(model, "submit", method, parts)
                self._streams[id(model)] = model
                for particle, request, start in owners:
                    ticket = _Ticket(particle, request, [None] * len(request.parts()), len(request.parts()))
                    for i in range(len(request.parts())):
                        self._tickets[(id(model), tickets[start + i])] = (ticket, i)
            else:
                self.stats.record_occupancy(len(parts))
                answers = self._engine(model, method, parts)
                self.stats.record_occupancy(0)
                for particle, request, start in owners:
                    self._answered(particle, request, answers[start : start + len(request.parts())])
        if self._tickets and not any(p.status == RUNNING for run in self.active for p in run.particles):
            self._poll()

    def _callers(self, runs) -> list[ProblemRun]:
        """The problems one engine call serves: those whose particles are in it and, for a
        nested run, every problem it is nested in — each once, so an outer problem counts the
        calls its nested runs made, a call shared by both once."""
        out: dict[int, ProblemRun] = {}
        for run in runs:
            while run is not None and id(run) not in out:
                out[id(run)] = run
                run = self._runs.get(run.parent.problem) if run.parent is not None else None
        return list(out.values())

    @staticmethod
    def _engine_seeds(waiting: list[tuple[ProblemRun, Particle]]) -> dict[int, int]:
        """Engine seeds of the unseeded generation requests, by particle: keyed by the
        particle and the site's position, so an answer does not depend on what else is in
        flight; derived per source in one batch."""
        keyed: dict[int, tuple[Source, list]] = {}
        for run, particle in waiting:
            request = particle.need.request
            if isinstance(request, GenRequest) and request.seed is None:
                site = (*particle.key, len(particle.records), len(particle.records[-1]))
                keyed.setdefault(id(run.source), (run.source, []))[1].append((particle, site))
        seeds = {}
        for source, entries in keyed.values():
            batch = getattr(source, "engine_seeds", None)
            keys = [site for _, site in entries]
            values = batch(keys) if batch is not None else [source.engine_seed(*k) for k in keys]
            seeds.update((id(particle), seed) for (particle, _), seed in zip(entries, values))
        return seeds

    def _poll(self) -> None:
        """Let every streaming engine with requests in flight run until it answers some."""
        while True:
            answered = False
            for model_id, model in list(self._streams.items()):
                cached = getattr(model, "take_cached_tokens", None)
                for ticket_id, answer in self._engine(model, "poll"):
                    hits = cached(ticket_id) if cached is not None else 0
                    if (model_id, ticket_id) not in self._tickets:
                        continue  # a cancelled problem's request that could not be aborted
                    ticket, part = self._tickets.pop((model_id, ticket_id))
                    self._runs[ticket.particle.problem].tokens_cached += hits
                    ticket.answers[part] = answer
                    ticket.missing -= 1
                    if ticket.missing == 0:
                        self._answered(ticket.particle, ticket.request, ticket.answers)
                        answered = True
                self.stats.record_occupancy(model.in_flight())
                if not model.in_flight():
                    del self._streams[model_id]
            if answered or not self._tickets:
                return

    def _delegate(self, particle: Particle) -> None:
        """A request to a ``Delegating`` model becomes its inner request (a judge's verdicts
        become next-token requests to its LM), so it is sent like any other: streamed at
        once into a streaming engine. Answered at once when nothing is left to ask."""
        need = particle.need
        stack = self._delegations.setdefault(id(particle), [])
        while _delegating(need.model) and need.model.delegates(method := engine_method(need.request)):
            delegation = self._guarded(
                need.model, "delegate", need.model.delegate, method, need.request.parts()
            )
            stack.append((need.model, need.request, delegation.combine))
            need = Need(delegation.model, delegation.request)
        if not stack:
            del self._delegations[id(particle)]
        elif not need.request.parts():
            particle.need = None
            self._answered(particle, need.request, [])
        else:
            particle.need = need

    def _answered(self, particle: Particle, request, answers: list) -> None:
        run = self._runs[particle.problem]
        for part, answer in zip(request.parts(), answers):
            tokens_in, tokens_out = part.tokens(answer)
            run.tokens_in += tokens_in
            run.tokens_out += tokens_out
            self.stats.tokens_out += tokens_out
        for model, original, combine in reversed(self._delegations.pop(id(particle), [])):
            answers, request = self._guarded(model, "delegate", combine, list(answers)), original
        particle.answer = request.take(list(answers))
        particle.status = RUNNING

    def _guarded(self, model, method: str, call: Callable, *args, what: str = ""):
        """``call(*args)`` for ``model``; a failure becomes an ``EngineError`` that keeps the
        finished problems."""
        try:
            return call(*args)
        except Exception as error:
            name = _model_name(model)
            raise EngineError(
                f"{name}.{method} failed{what}: {type(error).__name__}: {error}",
                backend=name,
                completed=self.completed,
            ) from error

    def _engine(self, model, method: str, *args):
        """Call ``model.method(*args)``; any failure becomes an ``EngineError`` that keeps the
        finished problems."""
        name = _model_name(model)
        what = f" on a batch of {len(args[-1])} requests" if args else ""
        answers = self._guarded(model, method, lambda: getattr(model, method)(*args), what=what)
        if args and len(answers) != len(args[-1]):
            raise EngineError(
                f"{name}.{method} returned {len(answers)} answers for {len(args[-1])} requests",
                backend=name,
                completed=self.completed,
            )
        return list(answers)
