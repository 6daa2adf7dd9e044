"""The batching scheduler: every live particle of every problem, a few engine calls a round.

How it works — the core's most important decision, in one place:

* A particle is its **record**: the answers its choice sites received so far (segments,
  scores, draws). To move a particle on, the scheduler *replays* the program from the start
  under a ``Resume`` handler that serves recorded answers, and stops it at the first site
  that needs something new (Pyro's ``queue`` idea). Copying a particle at resampling is
  copying its record; there are no coroutines to clone.
* A **round**: every runnable particle is replayed to its next engine request, step
  barrier, or end; the requests are grouped by model and kind; each group is answered by
  **one** batched backend call; the answers are appended to the records.
* **Barriers are per problem**: when all particles of one problem are at a barrier or
  finished, the algorithm acts for that problem alone (resample, prune, …) and releases it,
  while the other problems keep the engine busy.
* Weights: during replay the handler adds up the log weight of the run so far — scores,
  conditions, observations, proposal corrections, and the twist of the current step only.
  At a barrier or at the end, the particle's importance weight grows by the change in that
  total since its last update (so twists are divided back out at the next step, and a
  finished particle carries none).

A program that raises gives its particle weight −∞ and a recorded reason; a backend that
raises stops the run with an ``EngineError`` that keeps the posteriors already finished.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from .errors import EngineError
from .handlers import Draw, Message, Messenger, Need, Site, Weigher, draw, only, resolve_site
from .interfaces import GenRequest, engine_method
from .program import Program
from .randomness import Randomness, Source

RUNNING, WAITING, AT_BARRIER, FINISHED, DEAD = "running", "waiting", "at_barrier", "finished", "dead"


class _Suspend(BaseException):
    """Control flow: the replay reached a site that needs an engine."""

    def __init__(self, need: Need):
        self.need = need


class _AtBarrier(BaseException):
    """Control flow: the replay reached a step barrier it has not passed yet."""


class _Killed(BaseException):
    """Control flow: the particle's weight became zero."""

    def __init__(self, reason: str):
        self.reason = reason


@dataclass
class Particle:
    """One particle: its record of answers, its weight, and where it stands."""

    problem: int
    key: tuple[int, ...]
    rng: Randomness
    records: list[list] = field(default_factory=list)
    barriers_passed: int = 0
    log_weight: float = 0.0
    anchor: float = 0.0
    status: str = RUNNING
    need: Need | None = None
    value: Any = None
    error: str | None = None
    sites: list[Site] = field(default_factory=list)
    increments: list[float] = field(default_factory=list)
    replayed: int = 0  # record entries the last replay consumed (all, except for a replayed reference)

    def clone(self, key: tuple[int, ...], rng: Randomness) -> Particle:
        """A copy that shares nothing mutable, with its own key and randomness."""
        return replace(
            self,
            key=key,
            rng=rng,
            records=[list(answers) for answers in self.records],
            sites=list(self.sites),
            increments=list(self.increments),
        )


class Resume(Messenger):
    """Replays a particle's record and suspends it at its first unanswered site."""

    def __init__(self, particle: Particle):
        super().__init__()
        self.particle = particle
        self.choice_index = 0
        self.barriers = 0
        self.weights = Weigher()
        self.sites: list[Site] = []

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
                raise _AtBarrier()
            self.barriers += 1
            self.untwist()
            msg.done = True
            return
        if msg.resolve is None:
            msg.done = True
            return
        records = self.particle.records
        if self.choice_index == len(records):
            records.append([])
        answers = records[self.choice_index]
        self.choice_index += 1
        resolve_site(msg, answers, self.answer)

    def answer(self, step: Need | Draw):
        """A local draw is made at once; an engine request suspends the particle."""
        if isinstance(step, Need):
            raise _Suspend(step)
        return draw(step, self.particle.rng)

    def postprocess_message(self, msg: Message) -> None:
        self.sites.append(Site(msg.kind, msg.value, msg.log_weight, msg.args))
        reason = self.weights.add(msg, len(self.sites) - 1)
        if reason is not None:
            raise _Killed(reason)


def update_weight(particle: Particle, total: float) -> None:
    """Grow the importance weight by the change of the run's log weight since the last update."""
    increment = total - particle.anchor
    particle.log_weight += increment
    particle.anchor = total
    particle.increments.append(increment)


def advance(particle: Particle, program: Program, args: tuple, kwargs: dict) -> None:
    """Replay ``particle`` to its next engine request, barrier, or end."""
    handler = Resume(particle)
    try:
        with only(handler):
            value = program.fn(*args, **kwargs)
    except _Suspend as suspended:
        particle.status, particle.need = WAITING, suspended.need
    except _AtBarrier:
        update_weight(particle, handler.log_weight_at_barrier())
        particle.status = AT_BARRIER
    except _Killed as killed:
        kill(particle, killed.reason)
    except Exception as error:  # the program raised: this particle dies, the run goes on
        kill(particle, f"{type(error).__name__}: {error}")
    else:
        update_weight(particle, handler.log_weight_at_end())
        particle.status, particle.value = FINISHED, value
    particle.sites = handler.sites
    particle.replayed = handler.choice_index


def kill(particle: Particle, reason: str) -> None:
    particle.log_weight = -math.inf
    particle.status, particle.error = DEAD, reason


@dataclass
class ProblemRun:
    """One problem in flight: its inputs, particles, and the algorithm's bookkeeping."""

    index: int
    args: tuple
    kwargs: dict
    particles: list[Particle] = field(default_factory=list)
    step: int = 0
    ess: list[float] = field(default_factory=list)
    resampled: list[bool] = field(default_factory=list)
    engine_calls: int = 0
    started: float = field(default_factory=time.perf_counter)
    deaths: list[str] = field(default_factory=list)
    tokens_in: int = 0
    tokens_out: int = 0
    state: Any = None  # the interpreter's own bookkeeping for this problem (a dataclass of its own)

    def settled(self) -> bool:
        return all(p.status in (AT_BARRIER, FINISHED, DEAD) for p in self.particles)


@dataclass
class RunStats:
    """What the scheduler asked of the engines: calls and batch sizes per (model, kind)."""

    rounds: int = 0
    calls: dict = field(default_factory=lambda: defaultdict(int))
    batch_sizes: dict = field(default_factory=lambda: defaultdict(list))

    def total_calls(self, kind: str | None = None) -> int:
        return sum(n for (_, k), n in self.calls.items() if kind is None or k == kind)


def _model_name(model) -> str:
    return getattr(model, "name", type(model).__name__)


class Scheduler:
    """Runs many problems' particles together; the algorithm decides what happens at barriers.

    ``algorithm`` must offer ``start(run, source)`` (create the particles),
    ``at_barrier(run, source)`` (act once all the problem's particles have arrived) and
    ``finish(run)`` (return the problem's Posterior). It may offer ``restart(run, source)``,
    called when all the problem's particles have finished or died: returning True means it
    set new particles running (a new sweep, a new MCMC round) and the problem stays in flight.
    """

    def __init__(self, program: Program, algorithm, source: Source):
        self.program = program
        self.algorithm = algorithm
        self.source = source
        self.stats = RunStats()

    def run(self, problems: dict[int, tuple[tuple, dict]], on_done: Callable | None = None) -> dict:
        """Run problems (id → bound inputs) to completion; return id → Posterior."""
        completed: dict[int, Any] = {}
        active = []
        for index, (args, kwargs) in problems.items():
            run = ProblemRun(index, args, kwargs)
            self.algorithm.start(run, self.source)
            active.append(run)
        while active:
            self.stats.rounds += 1
            for run in active:
                for particle in run.particles:
                    if particle.status == RUNNING:
                        advance(particle, self.program, run.args, run.kwargs)
                        if particle.status == DEAD:
                            run.deaths.append(particle.error)
            self._dispatch(active, completed)
            still_active = []
            for run in active:
                if not run.settled():
                    still_active.append(run)
                elif any(p.status == AT_BARRIER for p in run.particles):
                    self.algorithm.at_barrier(run, self.source)
                    run.step += 1
                    for particle in run.particles:
                        if particle.status == AT_BARRIER:
                            particle.barriers_passed += 1
                            particle.status = RUNNING
                    still_active.append(run)
                elif self._restart(run):
                    still_active.append(run)
                else:
                    completed[run.index] = self.algorithm.finish(run)
                    if on_done is not None:
                        on_done(run.index, completed[run.index])
            active = still_active
        return completed

    def _restart(self, run: ProblemRun) -> bool:
        restart = getattr(self.algorithm, "restart", None)
        return bool(restart is not None and restart(run, self.source))

    def _dispatch(self, active: list[ProblemRun], completed: dict) -> None:
        """Answer every waiting particle's request with one backend call per (model, method).

        A request names its engine method and the parts that method takes; the answers to a
        particle's parts become its site's answer through the request's ``take``. Every part
        answered is counted once, in its problem's token counters.
        """
        groups: dict[tuple[int, str], list[Particle]] = defaultdict(list)
        models = {}
        for run in active:
            for particle in run.particles:
                if particle.status == WAITING:
                    key = (id(particle.need.model), engine_method(particle.need.request))
                    groups[key].append(particle)
                    models[key[0]] = particle.need.model
        runs = {run.index: run for run in active}
        for (model_id, method), particles in groups.items():
            model = models[model_id]
            parts, owners = [], []
            for particle in particles:
                request = particle.need.request
                if isinstance(request, GenRequest) and request.seed is None:
                    seed = self.source.engine_seed(
                        *particle.key, len(particle.records), len(particle.records[-1])
                    )
                    request = replace(request, seed=seed)
                request = request.grouped(particle.problem)
                owners.append((particle, request, len(parts)))
                parts.extend(request.parts())
            answers = self._call(model, method, parts, completed)
            self.stats.calls[(_model_name(model), method)] += 1
            self.stats.batch_sizes[(_model_name(model), method)].append(len(parts))
            for particle, request, start in owners:
                own = answers[start : start + len(request.parts())]
                run = runs[particle.problem]
                for part, answer in zip(request.parts(), own):
                    tokens_in, tokens_out = part.tokens(answer)
                    run.tokens_in += tokens_in
                    run.tokens_out += tokens_out
                particle.records[-1].append(request.take(own))
                particle.status, particle.need = RUNNING, None
            for index in {p.problem for p in particles}:
                runs[index].engine_calls += 1

    def _call(self, model, method: str, requests: list, completed: dict) -> list:
        try:
            answers = getattr(model, method)(requests)
        except Exception as error:
            raise EngineError(
                f"{_model_name(model)}.{method} failed on a batch of {len(requests)} requests: "
                f"{type(error).__name__}: {error}",
                backend=_model_name(model),
                completed=completed,
            ) from error
        if len(answers) != len(requests):
            raise EngineError(
                f"{_model_name(model)}.{method} returned {len(answers)} answers for {len(requests)} requests",
                backend=_model_name(model),
                completed=completed,
            )
        return list(answers)
