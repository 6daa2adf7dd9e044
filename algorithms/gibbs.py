"""Particle Gibbs: conditional SMC sweeps that keep one reference path.

Sweep 0 is plain SMC (multinomial resampling at every barrier). It ends by drawing the
reference ∝ the final weights. Every later sweep runs N particles of which particle 0 *is*
the reference: it carries the previous sweep's full record, so it replays without any
engine call and stops at each barrier it has not passed yet — released barrier by barrier
alongside the others. At each barrier:

1. the weights are the particles' weights for the step just done — for the reference its
   *partial* weight at this step, computed by replaying its record up to the barrier (not its
   final score: weighting the reference by its final score at every step is a known bug of
   a peer library, and ``tests/test_gibbs.py`` has it as a mutant that must fail);
2. slot 0 keeps the reference; the N − 1 others choose ancestors among all N ∝ weights
   (multinomial) — a copy of the reference keeps only its record up to this barrier;
3. weights are reset to equal (in the unconditional first sweep, to their mean, as in SMC).

At the end of a sweep the next reference is drawn ∝ final weights among all N. For N ≥ 2
the sweep leaves the program's π invariant (tested exactly against the enumerated sweep
kernel). The Posterior holds the reference of every sweep past ``burn``, equally weighted;
``log_evidence`` is the first (unconditional) sweep's unbiased log Ẑ.

Optional rejuvenation: ``rejuvenate=k`` runs k Metropolis–Hastings suffix-regeneration
moves on the reference between sweeps (each a π-invariant move, see ``algorithms/mh.py``).

    >>> import ppl
    >>> from ppl.algorithms import ParticleGibbs
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
    >>> post = ppl.infer(prefer_a, [(lm,)], ParticleGibbs(particles=4, sweeps=3), seed=0)[0]
    >>> len(post.particles), post.diagnostics.extra["sweeps"]
    (3, 3)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ppl.inference import Algorithm, diagnostics, weighted
from ppl.posterior import Posterior, effective_sample_size, log_mean_exp
from ppl.randomness import Stream, categorical, key
from ppl.scheduler import DEAD, Particle, ProblemRun
from ppl.settings import AlgorithmSpec, Setting

from .mh import restarted, sites_of


def sweep_key(problem: int, sweep: int, generation: int, index: int) -> tuple[int, ...]:
    """Randomness key of particle ``index`` born at ``generation`` of ``sweep``."""
    return key(Stream.GIBBS_PARTICLE, problem, sweep, generation, index)


def decision_key(problem: int, sweep: int, step: int | None) -> tuple[int, ...]:
    """Randomness key of the ancestor choices at ``step`` of ``sweep`` (None: the final draw)."""
    return key(Stream.GIBBS_ANCESTORS, problem, sweep, 0 if step is None else step + 1)


def rejuvenation_key(problem: int, sweep: int, move: int, what: int) -> tuple[int, ...]:
    """Randomness key of rejuvenation move ``move`` after ``sweep``: its position (0), its
    proposal's particle (1), its acceptance (2)."""
    return key(Stream.GIBBS_REJUVENATION, problem, sweep, move, what)


@dataclass
class GibbsState:
    """A problem's sweeps: which sweep, where it began (``run.step`` at its start), its
    reference, the first sweep's log Ẑ, the kept samples, and rejuvenation bookkeeping."""

    sweep: int = 0
    sweep_started: int = 0
    reference: Particle | None = None
    reference_total: float | None = None  # the reference's whole-run log weight (for mutants)
    rejuvenating: bool = False
    first_log_z: float | None = None
    samples: list[Particle] = field(default_factory=list)
    changed: int = 0
    moves: int = 0
    accepted: int = 0


PARTICLES = Setting("particles", int, 4, minimum=2)
SWEEPS = Setting("sweeps", int, 4, minimum=1)
BURN = Setting("burn", int, 0, minimum=0)
REJUVENATE = Setting("rejuvenate", int, 0, minimum=0)


class ParticleGibbs(Algorithm):
    """Conditional SMC with ``particles`` ≥ 2 particles for ``sweeps`` sweeps."""

    name = "particle_gibbs"

    def __init__(self, particles: int = 4, sweeps: int = 4, burn: int = 0, rejuvenate: int = 0):
        self.particles = PARTICLES.check(particles)
        self.sweeps = SWEEPS.check(sweeps)
        self.burn = BURN.check(burn)
        if self.burn >= self.sweeps:
            raise ValueError(f"burn must be smaller than sweeps ({self.sweeps}), got {burn!r}")
        self.rejuvenate = REJUVENATE.check(rejuvenate)

    def __repr__(self) -> str:
        return (
            f"ParticleGibbs(particles={self.particles}, sweeps={self.sweeps}, burn={self.burn}, "
            f"rejuvenate={self.rejuvenate})"
        )

    # --- hooks -------------------------------------------------------------------------

    def initial_reference(self, run: ProblemRun, source) -> Particle | None:
        """The reference of the first sweep; None (default) makes it an unconditional SMC."""
        return None

    def reference_log_weight(self, run: ProblemRun, reference: Particle) -> float:
        """The reference's weight at this barrier: its partial weight for the step just done."""
        return reference.log_weight

    def resampled_weight(self, log_weights: list[float], conditional: bool) -> float:
        """The equal weight every particle gets after resampling. In the unconditional first
        sweep it is the mean weight, as in SMC, so that the sweep's final mean weight is the
        unbiased estimate Ẑ; in a conditional sweep only ratios matter, and zero will do."""
        return 0.0 if conditional else log_mean_exp(log_weights)

    def start(self, run: ProblemRun, source) -> None:
        run.state = GibbsState()
        self.start_sweep(run, source, self.initial_reference(run, source))

    def start_sweep(self, run: ProblemRun, source, reference: Particle | None) -> None:
        state: GibbsState = run.state
        state.sweep_started, state.reference, state.rejuvenating = run.step, reference, False
        state.reference_total = reference.anchor if reference is not None else None
        particles = []
        for i in range(self.particles):
            k = sweep_key(run.index, state.sweep, 0, i)
            if i == 0 and reference is not None:
                particles.append(restarted(reference, len(reference.records), k, source(*k)))
            else:
                particles.append(Particle(run.index, k, source(*k)))
        run.particles = particles

    def at_barrier(self, run: ProblemRun, source) -> None:
        state: GibbsState = run.state
        if state.rejuvenating:
            return
        step = run.step - state.sweep_started  # the barrier's index within this sweep
        conditional = state.reference is not None
        log_weights = [p.log_weight for p in run.particles]
        if conditional:
            log_weights[0] = self.reference_log_weight(run, run.particles[0])
        run.ess.append(effective_sample_size(log_weights))
        if all(w == -math.inf for w in log_weights):
            run.resampled.append(False)
            return
        rng = source(*decision_key(run.index, state.sweep, step))
        children = []
        for j in range(self.particles):
            if j == 0 and conditional:
                child = run.particles[0]
            else:
                parent = run.particles[categorical(rng, log_weights)]
                k = sweep_key(run.index, state.sweep, step + 1, j)
                child = parent.clone(k, source(*k))
                del child.records[parent.replayed :]  # a copy of the reference forgets its future
                del child.asked[parent.replayed :]
            children.append(child)
        reset = self.resampled_weight(log_weights, conditional)
        for child in children:
            child.log_weight = reset
        run.particles = children
        run.resampled.append(True)

    def restart(self, run: ProblemRun, source) -> bool:
        """A sweep (or a rejuvenation move) has ended: choose the next reference, go on."""
        state: GibbsState = run.state
        if state.rejuvenating:
            self._rejuvenated(run, source)
        else:
            log_weights = [p.log_weight for p in run.particles]
            if state.reference is not None:
                log_weights[0] = self.reference_log_weight(run, run.particles[0])
            if state.first_log_z is None:
                state.first_log_z = log_mean_exp(log_weights)
            previous = state.reference
            if all(w == -math.inf for w in log_weights):
                chosen = 0  # every particle dead: a dead sample, reported as such
            else:
                rng = source(*decision_key(run.index, state.sweep, None))
                chosen = categorical(rng, log_weights)
            reference = run.particles[chosen]
            run.note(reference=chosen)
            state.changed += previous is not None and reference is not run.particles[0]
            state.reference = reference
            state.moves = 0
        if state.moves < self.rejuvenate and state.reference.status != DEAD:
            self._propose_move(run, source)
            return True
        if state.sweep >= self.burn:
            state.samples.append(state.reference)
        state.sweep += 1
        if state.sweep == self.sweeps:
            return False
        reference = state.reference
        self.start_sweep(run, source, reference if reference.status != DEAD else None)
        return True

    def _propose_move(self, run: ProblemRun, source) -> None:
        """One MH suffix-regeneration move on the reference (see ``algorithms/mh.py``)."""
        state: GibbsState = run.state
        reference = state.reference
        rng = source(*rejuvenation_key(run.index, state.sweep, state.moves, 0))
        size = sites_of(reference)
        u = rng.uniform([i / size for i in range(1, size)])
        k = rejuvenation_key(run.index, state.sweep, state.moves, 1)
        proposal = restarted(reference, min(int(u * size), size - 1), k, source(*k))
        state.rejuvenating = True
        run.particles = [proposal]

    def _rejuvenated(self, run: ProblemRun, source) -> None:
        state: GibbsState = run.state
        current, proposed = state.reference, run.particles[0]
        state.moves += 1
        # compare whole-run weights: the reference's record replays to its end in a move
        current_total, proposed_total = current.anchor, proposed.log_weight
        accepted = False
        if proposed_total > -math.inf:
            ratio = (
                proposed_total - current_total + math.log(sites_of(current)) - math.log(sites_of(proposed))
            )
            alpha = math.exp(min(0.0, ratio))
            rng = source(*rejuvenation_key(run.index, state.sweep, state.moves - 1, 2))
            accepted = alpha >= 1 or rng.uniform([alpha]) < alpha
            if accepted:
                state.reference = proposed
                state.accepted += 1
        run.note(accepted=[accepted])
        state.rejuvenating = False

    def log_evidence(self, run: ProblemRun) -> float | None:
        return run.state.first_log_z

    def finish(self, run: ProblemRun) -> Posterior:
        state: GibbsState = run.state
        particles = [weighted(p, 0.0 if p.status != DEAD else -math.inf) for p in state.samples]
        summary = diagnostics(
            self.name,
            run,
            particles,
            sweeps=state.sweep,
            particles_per_sweep=self.particles,
            reference_changed=state.changed / max(1, state.sweep - 1),
            rejuvenation_acceptance=state.accepted / max(1, self.rejuvenate * state.sweep),
            weights="equal",
        )
        return Posterior(particles, self.log_evidence(run), summary)


SPEC = AlgorithmSpec(
    "particle_gibbs",
    ParticleGibbs,
    (PARTICLES, SWEEPS, BURN, REJUVENATE),
    budget="particles",
    summary="conditional SMC sweeps around a kept reference path, optionally rejuvenated by MH",
)
