"""Beam search and DVTS: keep the best partial runs, expand them, set finished ones aside.

These interpreters search for the **highest-weight runs** — ranked by weight plus twist —
not for the program's distribution. This is *not* the mode of π: with the program's own
proposal a run's weight is exp(Σ score), without the LM's probability of the run, so a
likely run with a low score loses to an unlikely run with a high one
(``tests/test_weight_edges.py`` has such a case). Their particles are not properly weighted
either, so ``log_evidence`` is None and ``best()`` is the answer to use
(``tests/test_beam.py`` shows that treating their weights as importance weights fails the
E[Ẑ] = Z check).

Beam search (``beams`` = k, ``expand`` = n): start with k·n runs. At each step barrier of a
problem:

1. runs that finished are set aside (kept, never expanded again); dead runs are dropped;
2. identical runs (same answers so far, e.g. the same tokens) are merged into the first
   (``dedupe=True``, the default), so that beams are not wasted on copies;
3. the runs at the barrier are ranked by their weight plus current twist (the particle's
   log weight at the barrier — with the program's own proposal, the accumulated scores,
   e.g. a PRM's); the top k survive. **Ties** go to the run listed first, i.e. the child
   of the better-ranked parent, then the lower child index (a stable sort);
4. each survivor is copied n times; the copies' next requests share their prompt, so the
   engine's prefix cache serves them, and all of them go out in the round's one call.

The result holds every finished run (set aside or finished in the last step) with its
weight. ``k`` ≥ the frontier keeps everything; ``k = 1`` is greedy over the sampled children.

DVTS (diverse verifier tree search, ``subtrees`` = m, ``expand`` = n): the budget m·n is
split into m independent subtrees, each a greedy beam (k = 1) expanding n children, so the
answers stay diverse.

    >>> import ppl
    >>> from ppl.algorithms import BeamSearch
    >>> from ppl.backends.tabular import TabularLM
    >>> lm = TabularLM.random(["a", "b"], order=2, seed=0)
    >>> @ppl.program
    ... def prefer_a(lm):
    ...     ctx = ()
    ...     for _ in ppl.steps(max=3):
    ...         s = ppl.gen(lm, ctx, max_tokens=1)
    ...         ctx += s.token_ids
    ...         ppl.score(1.0 if s.text == "a" else 0.0)
    ...         if s.eos:
    ...             break
    ...     return lm.decode(ctx)
    >>> post = ppl.infer(prefer_a, [(lm,)], BeamSearch(beams=2, expand=3), seed=0)[0]
    >>> post.best(), post.log_evidence
    ('aba', None)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ppl.inference import Algorithm, diagnostics, weighted
from ppl.posterior import Posterior
from ppl.randomness import Stream, key
from ppl.scheduler import AT_BARRIER, DEAD, FINISHED, Particle, ProblemRun
from ppl.settings import AlgorithmSpec, Setting


def beam_key(problem: int, generation: int, subtree: int, index: int) -> tuple[int, ...]:
    """Randomness key of child ``index`` of ``subtree`` born at ``generation``."""
    return key(Stream.BEAM, problem, generation, subtree, index)


@dataclass
class BeamState:
    """A problem's search: its generation, each particle's subtree, the runs set aside, the
    frontier sizes per generation (one entry per subtree)."""

    generation: int = 0
    groups: list[int] = field(default_factory=list)
    kept: list[tuple[int, Particle]] = field(default_factory=list)
    frontier: list[list[int]] = field(default_factory=list)


BEAMS = Setting("beams", int, 4, minimum=1)
EXPAND = Setting("expand", int, 4, minimum=1)
SUBTREES = Setting("subtrees", int, 4, minimum=1)


class BeamSearch(Algorithm):
    """Top-``beams`` beam search, each survivor expanded into ``expand`` children."""

    name = "beam"

    def __init__(self, beams: int = 4, expand: int = 4, subtrees: int = 1, dedupe: bool = True):
        self.beams = BEAMS.check(beams)
        if not isinstance(dedupe, bool):
            raise ValueError(f"dedupe must be True or False, got {dedupe!r}")
        self.dedupe = dedupe
        self.expand = EXPAND.check(expand)
        self.subtrees = SUBTREES.check(subtrees)
        self.particles = self.subtrees * self.beams * self.expand

    def __repr__(self) -> str:
        return f"BeamSearch(beams={self.beams}, expand={self.expand}, subtrees={self.subtrees})"

    def start(self, run: ProblemRun, source) -> None:
        state = run.state = BeamState()
        run.particles = []
        for subtree in range(self.subtrees):
            for i in range(self.beams * self.expand):
                k = beam_key(run.index, 0, subtree, i)
                run.particles.append(Particle(run.index, k, source(*k)))
                state.groups.append(subtree)

    def rank(self, frontier: list[Particle]) -> list[int]:
        """Indices of ``frontier`` best first: by log weight (incl. twist), ties to the earlier."""
        return sorted(range(len(frontier)), key=lambda i: -frontier[i].log_weight)

    def at_barrier(self, run: ProblemRun, source) -> None:
        state: BeamState = run.state
        state.generation += 1
        children, groups, sizes = [], [], []
        for subtree in range(self.subtrees):
            members = [p for p, g in zip(run.particles, state.groups) if g == subtree]
            state.kept.extend((subtree, p) for p in members if p.status == FINISHED)
            frontier = [p for p in members if p.status == AT_BARRIER and p.log_weight > -math.inf]
            if self.dedupe:
                frontier = _distinct(frontier)
            sizes.append(len(frontier))
            for rank, i in enumerate(self.rank(frontier)[: self.beams]):
                for c in range(self.expand):
                    k = beam_key(run.index, state.generation, subtree, rank * self.expand + c)
                    children.append(frontier[i].clone(k, source(*k)))
                    groups.append(subtree)
            if not frontier:
                # nothing left to expand in this subtree: keep its dead runs so that an
                # all-dead search is reported as such
                children.extend(p for p in members if p.status == DEAD)
                groups.extend(subtree for p in members if p.status == DEAD)
        run.particles, state.groups = children, groups
        state.frontier.append(sizes)

    def log_evidence(self, run: ProblemRun) -> None:
        return None

    def finish(self, run: ProblemRun) -> Posterior:
        state: BeamState = run.state
        ended = state.kept + list(zip(state.groups, run.particles))
        particles = [weighted(p) for _, p in ended]
        summary = diagnostics(
            self.name,
            run,
            particles,
            frontier=state.frontier,
            finished_early=len(state.kept),
            subtree=[g for g, _ in ended],
            properly_weighted=False,
            weights="score",
        )
        return Posterior(particles, self.log_evidence(run), summary)


def _distinct(frontier: list[Particle]) -> list[Particle]:
    """The first of every group of runs with identical records (same tokens so far)."""
    seen, out = set(), []
    for particle in frontier:
        key = repr(particle.records)
        if key not in seen:
            seen.add(key)
            out.append(particle)
    return out


class DVTS(BeamSearch):
    """Diverse verifier tree search: ``subtrees`` independent greedy beams of ``expand`` children."""

    name = "dvts"

    def __init__(self, subtrees: int = 4, expand: int = 4):
        super().__init__(beams=1, expand=expand, subtrees=subtrees)

    def __repr__(self) -> str:
        return f"DVTS(subtrees={self.subtrees}, expand={self.expand})"


BEAM_SPEC = AlgorithmSpec(
    "beam",
    BeamSearch,
    (BEAMS, EXPAND),
    budget="beams",
    summary="keep the top beams runs by weight plus twist, expand each; the highest-weight runs",
)
DVTS_SPEC = AlgorithmSpec(
    "dvts",
    DVTS,
    (SUBTREES, EXPAND),
    budget="subtrees",
    summary="diverse verifier tree search: independent greedy subtrees",
)
