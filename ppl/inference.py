"""The contract every interpreter implements, and the one entry point ``ppl.infer``.

An ``Algorithm`` holds validated settings and three hooks the scheduler calls per problem:
``start`` (make the particles), ``at_barrier`` (act when the problem's particles have all
reached a step barrier), ``finish`` (build its Posterior). ``run`` does the rest: binding
inputs, seeding, batching, progress display.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from .posterior import Diagnostics, Posterior, WeightedParticle, log_mean_exp
from .program import as_program
from .randomness import SeededSource, Source, Stream, key
from .scheduler import DEAD, Particle, ProblemRun, RunProgress, RunStats, Scheduler
from .settings import Setting


def particle_key(problem: int, generation: int, index: int) -> tuple[int, ...]:
    """Randomness key of particle ``index`` born at ``generation`` (0 = start, t+1 = after step t)."""
    return key(Stream.PARTICLE, problem, generation, index)


def algorithm_key(problem: int, step: int) -> tuple[int, ...]:
    """Randomness key of the resampling decisions for ``problem`` at ``step``."""
    return key(Stream.RESAMPLING, problem, step)


def diagnostics(
    algorithm: str,
    run: ProblemRun,
    particles: list[WeightedParticle],
    *,
    steps: int | None = None,
    weights: str = "importance",
    **extra,
) -> Diagnostics:
    """The one place a problem's ``Diagnostics`` are built: from the scheduler's record of
    the run (ESS and resampling per barrier, engine calls, tokens, deaths, wall time) and
    the particles the interpreter returns; ``weights`` what their weights are (see
    ``Diagnostics``); ``extra`` holds what only this interpreter knows."""
    return Diagnostics(
        algorithm=algorithm,
        particles=len(particles),
        ess=list(run.ess),
        resampled=list(run.resampled),
        steps=run.step if steps is None else steps,
        tokens_in=run.tokens_in,
        tokens_out=run.tokens_out,
        tokens_cached=run.tokens_cached,
        engine_calls=run.engine_calls,
        wall_time=time.perf_counter() - run.started,
        dead=sum(p.status == DEAD for p in particles),
        deaths=list(run.deaths),
        extra=extra,
        barrier_wait=run.barrier_wait,
        history=run.history,
        weights=weights,
    )


PROBLEM_ID = Setting("id", int, minimum=0)


def weighted(particle: Particle, log_weight: float | None = None) -> WeightedParticle:
    """What a Posterior keeps of a particle: its value, weight (its own unless given), sites and fate."""
    weight = particle.log_weight if log_weight is None else log_weight
    return WeightedParticle(
        particle.value, weight, particle.sites, particle.status, particle.error, particle.key
    )


class Results(list):
    """The Posteriors of a run, in problem order, with the scheduler's ``stats``."""

    stats: RunStats


class Algorithm:
    """Base class of interpreters. Subclasses set ``name`` and override the hooks."""

    name = "algorithm"
    particles: int = 1
    # True for an interpreter that computes its answer exactly, with no randomness and not on
    # the scheduler (enumeration): nested inside a program, it runs as a sub-run.
    exact: bool = False

    def start(self, run: ProblemRun, source: Source) -> None:
        run.particles = [
            Particle(run.index, k, source(*k))
            for k in (particle_key(run.index, 0, i) for i in range(self.particles))
        ]

    def at_barrier(self, run: ProblemRun, source: Source) -> None:
        """Default: do nothing (importance sampling)."""

    def restart(self, run: ProblemRun, source: Source) -> bool:
        """Called when every particle of the problem has finished or died. Return True after
        setting new particles running (another sweep or MCMC round); default: the run is over."""
        return False

    def log_evidence(self, run: ProblemRun) -> float | None:
        return log_mean_exp([p.log_weight for p in run.particles])

    def finish(self, run: ProblemRun) -> Posterior:
        particles = [weighted(p) for p in run.particles]
        return Posterior(particles, self.log_evidence(run), diagnostics(self.name, run, particles))

    def run(
        self,
        program,
        problems: Iterable,
        *,
        seed: int = 0,
        randomness: Source | None = None,
        progress: bool | Callable = False,
        ids: Iterable[int] | None = None,
        max_in_flight: int | None = None,
        trace: bool = False,
        watch: Callable[[RunProgress], None] | None = None,
    ) -> Results:
        """Run ``program`` on every problem (a tuple of arguments, a dict of keyword
        arguments, or a single argument) and return their Posteriors in order.

        A problem's randomness is keyed by ``seed`` and its id (default: its position), so
        its result does not depend on which other problems are in flight; pass ``ids`` to
        resume part of a dataset with the seeds of an uninterrupted run. ``max_in_flight``
        bounds the particles in flight (None: every problem at once); ``progress`` is True
        for a progress bar or ``callback(id, posterior)``, called as each problem finishes;
        ``watch(RunProgress)`` is called a few times a second with where the run stands
        (steps, live particles, ESS, tokens, requests in the engines) for a live display.
        With ``trace`` each Posterior keeps its genealogy (``diagnostics.history``, see
        ``ppl.history``): every particle at every barrier, discarded ones included.
        """
        program = as_program(program)
        problems = list(problems)
        for problem in problems:  # every input checked before anything runs
            program.bind(problem)
        ids = list(range(len(problems))) if ids is None else [PROBLEM_ID.check(i) for i in ids]
        if len(ids) != len(problems) or len(set(ids)) != len(ids):
            raise ValueError(f"ids must be {len(problems)} distinct integers, one per problem")
        on_done, bar = _progress(progress, len(problems), self.name)
        completed = {}
        stream = self.stream(
            program,
            zip(ids, problems),
            seed=seed,
            randomness=randomness,
            max_in_flight=max_in_flight,
            trace=trace,
            watch=watch,
        )
        try:
            for index, posterior in stream:
                completed[index] = posterior
                if on_done is not None:
                    on_done(index, posterior)
        finally:
            if bar is not None:
                bar.close()
        results = Results(completed[i] for i in ids)
        results.stats = stream.stats
        return results

    def stream(
        self,
        program,
        problems: Iterable[tuple[int, Any]],
        *,
        seed: int = 0,
        randomness: Source | None = None,
        max_in_flight: int | None = None,
        trace: bool = False,
        watch: Callable[[RunProgress], None] | None = None,
    ) -> ResultStream:
        """Run ``(id, problem)`` pairs, yielding ``(id, posterior)`` as each problem finishes.

        Problems are read from ``problems`` only when there is room in flight (at most
        ``max_in_flight`` particles, and always at least one problem), so a dataset of any
        size streams through in bounded memory; nothing is kept once yielded.
        """
        program = as_program(program)
        source = randomness if randomness is not None else SeededSource(seed)
        seen: set[int] = set()

        def bound():
            for index, problem in problems:
                index = PROBLEM_ID.check(index)
                if index in seen:
                    raise ValueError(f"the problem id {index} appears twice")
                seen.add(index)
                args, kwargs = program.bind(problem)
                yield index, program, args, kwargs, self, source

        return self.schedule(bound(), max_in_flight, trace=trace, watch=watch)

    def schedule(
        self, problems: Iterator, max_in_flight: int | None, *, trace: bool = False, watch=None
    ) -> ResultStream:
        """The scheduler run behind ``stream``. Interpreters that do not run particles on
        the scheduler (exact enumeration) override this; they must still yield every problem
        as it is done: that is how ``tts run`` writes its results. ``trace`` keeps each
        problem's genealogy; ``watch`` gets the run's progress."""
        scheduler = Scheduler(max_particles=max_in_flight, feed=problems, trace=trace, watch=watch)
        return ResultStream(scheduler.results(), scheduler.stats)


class ResultStream:
    """An iterator of ``(id, posterior)`` as problems finish, with the run's engine ``stats``."""

    def __init__(self, results: Iterator, stats: RunStats | None):
        self._results = results
        self.stats = stats

    def __iter__(self):
        return self

    def __next__(self):
        return next(self._results)


def _progress(progress, total: int, name: str):
    if callable(progress):
        return progress, None
    if not progress:
        return None, None
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=name, unit="problem")
    return (lambda index, posterior: bar.update(1)), bar


def infer(
    program, problems: Iterable, algorithm: Algorithm, *, seed: int = 0, progress=False, watch=None
) -> Results:
    """Run ``algorithm`` on ``program`` for every problem; one Posterior per problem.
    ``progress`` and ``watch`` are those of ``Algorithm.run``."""
    if not isinstance(algorithm, Algorithm):
        raise TypeError(f"algorithm must be a ppl Algorithm (e.g. SMC(...)), got {type(algorithm).__name__}")
    return algorithm.run(program, problems, seed=seed, progress=progress, watch=watch)
