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
3. weights are reset to equal.

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
import time

from ppl.inference import Algorithm
from ppl.posterior import Diagnostics, Posterior, WeightedParticle, effective_sample_size, log_mean_exp
from ppl.randomness import categorical
from ppl.scheduler import DEAD, Particle, ProblemRun
from ppl.settings import AlgorithmSpec, Setting

from .mh import restarted, sites_of


def sweep_key(problem: int, sweep: int, generation: int, index: int) -> tuple[int, ...]:
    """Randomness key of particle ``index`` born at ``generation`` of ``sweep``."""
    return (7, problem, sweep, generation, index)


def decision_key(problem: int, sweep: int, step: int | None) -> tuple[int, ...]:
    """Randomness key of the ancestor choices at ``step`` of ``sweep`` (None: the final draw)."""
    return (8, problem, sweep, 0 if step is None else step + 1)


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

    def start(self, run: ProblemRun, source) -> None:
        run.state.update(sweep=0, step=0, samples=[], tokens=[0, 0], changed=0, moves=0, accepted=0)
        run.state["first_log_z"] = None
        self.start_sweep(run, source, self.initial_reference(run, source))

    def start_sweep(self, run: ProblemRun, source, reference: Particle | None) -> None:
        state = run.state
        state.update(step=0, reference=reference, phase="sweep")
        state["reference_total"] = reference.anchor if reference is not None else None
        particles = []
        for i in range(self.particles):
            key = sweep_key(run.index, state["sweep"], 0, i)
            if i == 0 and reference is not None:
                particles.append(restarted(reference, len(reference.records), key, source(*key)))
            else:
                particles.append(Particle(run.index, key, source(*key)))
        run.particles = particles

    def at_barrier(self, run: ProblemRun, source) -> None:
        state = run.state
        if state["phase"] != "sweep":
            return
        conditional = state["reference"] is not None
        log_weights = [p.log_weight for p in run.particles]
        if conditional:
            log_weights[0] = self.reference_log_weight(run, run.particles[0])
        run.ess.append(effective_sample_size(log_weights))
        if all(w == -math.inf for w in log_weights):
            run.resampled.append(False)
            state["step"] += 1
            return
        rng = source(*decision_key(run.index, state["sweep"], state["step"]))
        children = []
        for j in range(self.particles):
            if j == 0 and conditional:
                child = run.particles[0]
            else:
                parent = run.particles[categorical(rng, log_weights)]
                key = sweep_key(run.index, state["sweep"], state["step"] + 1, j)
                child = parent.clone(key, source(*key))
                del child.records[parent.replayed :]  # a copy of the reference forgets its future
                child.tokens_in = child.tokens_out = 0
            children.append(child)
        for particle in run.particles:
            state["tokens"][0] += particle.tokens_in
            state["tokens"][1] += particle.tokens_out
            particle.tokens_in = particle.tokens_out = 0
        for child in children:
            child.log_weight = 0.0
        run.particles = children
        run.resampled.append(True)
        state["step"] += 1

    def restart(self, run: ProblemRun, source) -> bool:
        """A sweep (or a rejuvenation move) has ended: choose the next reference, go on."""
        state = run.state
        for particle in run.particles:
            state["tokens"][0] += particle.tokens_in
            state["tokens"][1] += particle.tokens_out
            particle.tokens_in = particle.tokens_out = 0
        if state["phase"] == "rejuvenate":
            self._rejuvenated(run, source)
        else:
            log_weights = [p.log_weight for p in run.particles]
            if state["reference"] is not None:
                log_weights[0] = self.reference_log_weight(run, run.particles[0])
            if state["first_log_z"] is None:
                state["first_log_z"] = log_mean_exp(log_weights)
            previous = state["reference"]
            if all(w == -math.inf for w in log_weights):
                reference = run.particles[0]  # every particle dead: a dead sample, reported as such
            else:
                rng = source(*decision_key(run.index, state["sweep"], None))
                reference = run.particles[categorical(rng, log_weights)]
            state["changed"] += previous is not None and reference is not run.particles[0]
            state["reference"] = reference
            state["moves"] = 0
        if state["moves"] < self.rejuvenate and state["reference"].status != DEAD:
            self._propose_move(run, source)
            return True
        if state["sweep"] >= self.burn:
            state["samples"].append(state["reference"])
        state["sweep"] += 1
        if state["sweep"] == self.sweeps:
            return False
        reference = state["reference"]
        self.start_sweep(run, source, reference if reference.status != DEAD else None)
        return True

    def _propose_move(self, run: ProblemRun, source) -> None:
        """One MH suffix-regeneration move on the reference (see ``algorithms/mh.py``)."""
        state = run.state
        reference = state["reference"]
        rng = source(9, run.index, state["sweep"], state["moves"], 0)
        size = sites_of(reference)
        u = rng.uniform([i / size for i in range(1, size)])
        key = (9, run.index, state["sweep"], state["moves"], 1)
        proposal = restarted(reference, min(int(u * size), size - 1), key, source(*key))
        state["phase"] = "rejuvenate"
        run.particles = [proposal]

    def _rejuvenated(self, run: ProblemRun, source) -> None:
        state = run.state
        current, proposed = state["reference"], run.particles[0]
        state["moves"] += 1
        # compare whole-run weights: the reference's record replays to its end in a move
        current_total, proposed_total = current.anchor, proposed.log_weight
        if proposed_total > -math.inf:
            ratio = (
                proposed_total - current_total + math.log(sites_of(current)) - math.log(sites_of(proposed))
            )
            alpha = math.exp(min(0.0, ratio))
            rng = source(9, run.index, state["sweep"], state["moves"] - 1, 2)
            if alpha >= 1 or rng.uniform([alpha]) < alpha:
                state["reference"] = proposed
                state["accepted"] += 1
        state["phase"] = "sweep"

    def log_evidence(self, run: ProblemRun) -> float | None:
        return run.state.get("first_log_z")

    def finish(self, run: ProblemRun) -> Posterior:
        state = run.state
        samples = state["samples"]
        particles = [
            WeightedParticle(p.value, 0.0 if p.status != DEAD else -math.inf, p.sites, p.status, p.error)
            for p in samples
        ]
        diagnostics = Diagnostics(
            algorithm=self.name,
            particles=len(particles),
            ess=list(run.ess),
            resampled=list(run.resampled),
            steps=run.step,
            tokens_in=state["tokens"][0],
            tokens_out=state["tokens"][1],
            engine_calls=run.engine_calls,
            wall_time=time.perf_counter() - run.started,
            dead=sum(p.status == DEAD for p in particles),
            deaths=list(run.deaths),
            extra={
                "sweeps": state["sweep"],
                "particles_per_sweep": self.particles,
                "reference_changed": state["changed"] / max(1, state["sweep"] - 1),
                "rejuvenation_acceptance": state["accepted"] / max(1, self.rejuvenate * state["sweep"]),
            },
        )
        return Posterior(particles, self.log_evidence(run), diagnostics)


SPEC = AlgorithmSpec(
    "particle_gibbs",
    ParticleGibbs,
    (PARTICLES, SWEEPS, BURN, REJUVENATE),
    budget="particles",
    summary="conditional SMC sweeps around a kept reference path, optionally rejuvenated by MH",
)
