"""The contract every interpreter implements, and the one entry point ``ppl.infer``.

An ``Algorithm`` holds validated settings and three hooks the scheduler calls per problem:
``start`` (make the particles), ``at_barrier`` (act when the problem's particles have all
reached a step barrier), ``finish`` (build its Posterior). ``run`` does the rest: binding
inputs, seeding, batching, progress display.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from .posterior import Diagnostics, Posterior, WeightedParticle, log_mean_exp
from .program import as_program
from .randomness import SeededSource, Source, Stream, key
from .scheduler import DEAD, Particle, ProblemRun, RunStats, Scheduler
from .settings import Setting


def particle_key(problem: int, generation: int, index: int) -> tuple[int, ...]:
    """Randomness key of particle ``index`` born at ``generation`` (0 = start, t+1 = after step t)."""
    return key(Stream.PARTICLE, problem, generation, index)


def algorithm_key(problem: int, step: int) -> tuple[int, ...]:
    """Randomness key of the resampling decisions for ``problem`` at ``step``."""
    return key(Stream.RESAMPLING, problem, step)


def diagnostics(
    algorithm: str, run: ProblemRun, particles: list[WeightedParticle], *, steps: int | None = None, **extra
) -> Diagnostics:
    """The one place a problem's ``Diagnostics`` are built: from the scheduler's record of
    the run (ESS and resampling per barrier, engine calls, tokens, deaths, wall time) and
    the particles the interpreter returns; ``extra`` holds what only this interpreter knows."""
    return Diagnostics(
        algorithm=algorithm,
        particles=len(particles),
        ess=list(run.ess),
        resampled=list(run.resampled),
        steps=run.step if steps is None else steps,
        tokens_in=run.tokens_in,
        tokens_out=run.tokens_out,
        engine_calls=run.engine_calls,
        wall_time=time.perf_counter() - run.started,
        dead=sum(p.status == DEAD for p in particles),
        deaths=list(run.deaths),
        extra=extra,
    )


PROBLEM_ID = Setting("id", int, minimum=0)


def weighted(particle: Particle, log_weight: float | None = None) -> WeightedParticle:
    """What a Posterior keeps of a particle: its value, weight (its own unless given), sites and fate."""
    weight = particle.log_weight if log_weight is None else log_weight
    return WeightedParticle(particle.value, weight, particle.sites, particle.status, particle.error)


class Results(list):
    """The Posteriors of a run, in problem order, with the scheduler's ``stats``."""

    stats: RunStats


class Algorithm:
    """Base class of interpreters. Subclasses set ``name`` and override the hooks."""

    name = "algorithm"
    particles: int = 1

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
    ) -> Results:
        """Run ``program`` on every problem (a tuple of arguments, a dict of keyword
        arguments, or a single argument) and return their Posteriors in order.

        A problem's randomness is keyed by ``seed`` and its id (default: its position), so
        its result does not depend on which other problems are in flight; pass ``ids`` to
        resume part of a dataset with the seeds of an uninterrupted run.
        """
        program = as_program(program)
        bound = [program.bind(p) for p in problems]
        ids = list(range(len(bound))) if ids is None else [PROBLEM_ID.check(i) for i in ids]
        if len(ids) != len(bound) or len(set(ids)) != len(ids):
            raise ValueError(f"ids must be {len(bound)} distinct integers, one per problem")
        source = randomness if randomness is not None else SeededSource(seed)
        on_done, bar = _progress(progress, len(bound), self.name)
        try:
            completed, stats = self.solve(program, dict(zip(ids, bound)), source, on_done)
        finally:
            if bar is not None:
                bar.close()
        results = Results(completed[i] for i in ids)
        results.stats = stats
        return results

    def solve(self, program, problems: dict, source: Source, on_done: Callable | None):
        """Run bound problems (id → (args, kwargs)); ``on_done(id, posterior)`` as each finishes.

        Returns id → Posterior and the run's engine statistics. Interpreters that do not run
        particles on the scheduler (exact enumeration) override this, and must still call
        ``on_done`` for every problem: that is how ``tts run`` writes its results.
        """
        scheduler = Scheduler(program, self, source)
        return scheduler.run(problems, on_done), scheduler.stats


def _progress(progress, total: int, name: str):
    if callable(progress):
        return progress, None
    if not progress:
        return None, None
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=name, unit="problem")
    return (lambda index, posterior: bar.update(1)), bar


def infer(program, problems: Iterable, algorithm: Algorithm, *, seed: int = 0, progress=False) -> Results:
    """Run ``algorithm`` on ``program`` for every problem; one Posterior per problem."""
    if not isinstance(algorithm, Algorithm):
        raise TypeError(f"algorithm must be a ppl Algorithm (e.g. SMC(...)), got {type(algorithm).__name__}")
    return algorithm.run(program, problems, seed=seed, progress=progress)
