"""Sequential Monte Carlo: extend every particle one step, reweight, resample when needed.

At each step barrier of a problem (all its particles have arrived or finished):

1. ESS = 1 / Σ W_i² over all its particles, finished ones included;
2. if ``ess_threshold >= 1`` (always) or ESS < ``ess_threshold`` · N, draw N ancestors with
   the chosen scheme and replace the particles by copies of them, each with weight
   log(mean w) — so the running evidence estimate is unchanged;
3. release the particles at the barrier; finished particles are kept as they are and
   never extended again (their weight no longer changes).

log Ẑ = log mean w at the end is an unbiased estimate of Z on the natural scale, for every
scheme and threshold (tested exactly by enumeration in ``tests/``).

    >>> import ppl
    >>> from ppl.algorithms import SMC
    >>> from ppl.backends.tabular import TabularLM
    >>> lm = TabularLM.random(["a", "b"], order=2, seed=4)
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
    >>> post = ppl.infer(prefer_a, [(lm,)], SMC(particles=16, resample="systematic"), seed=0)[0]
    >>> post.diagnostics.steps, len(post.particles)
    (2, 16)
"""

from __future__ import annotations

import math

from ppl.inference import Algorithm, algorithm_key, particle_key
from ppl.posterior import effective_sample_size, log_mean_exp
from ppl.scheduler import ProblemRun
from ppl.settings import AlgorithmSpec, Setting

from .resampling import SCHEMES

PARTICLES = Setting("particles", int, minimum=1)
RESAMPLE = Setting(
    "resample", str, "multinomial", choices=tuple(SCHEMES), noun="resampling scheme", plural="schemes"
)
ESS = Setting(
    "ess", float, 0.5, minimum=0, maximum=1, argument="ess_threshold", hint="0 = never resample, 1 = always"
)


class SMC(Algorithm):
    name = "smc"

    def __init__(self, particles: int, resample: str = "multinomial", ess_threshold: float = 0.5):
        self.particles = PARTICLES.check(particles)
        self.resample = RESAMPLE.check(resample)
        self.ess_threshold = ESS.check(ess_threshold)

    def __repr__(self) -> str:
        return (
            f"SMC(particles={self.particles}, resample={self.resample!r}, ess_threshold={self.ess_threshold})"
        )

    def should_resample(self, ess: float, n: int) -> bool:
        return self.ess_threshold >= 1 or ess < self.ess_threshold * n

    def at_barrier(self, run: ProblemRun, source) -> None:
        log_weights = [p.log_weight for p in run.particles]
        ess = effective_sample_size(log_weights)
        run.ess.append(ess)
        if ess == 0 or not self.should_resample(ess, len(log_weights)):
            run.resampled.append(False)
            return
        rng = source(*algorithm_key(run.index, run.step))
        ancestors = SCHEMES[self.resample](log_weights, len(log_weights), rng)
        new_weight = log_mean_exp(log_weights)
        children = []
        for j, a in enumerate(ancestors):
            key = particle_key(run.index, run.step + 1, j)
            child = run.particles[int(a)].clone(key, source(*key))
            child.log_weight = new_weight
            children.append(child)
        run.particles = children
        run.resampled.append(True)

    def log_evidence(self, run: ProblemRun) -> float:
        value = log_mean_exp([p.log_weight for p in run.particles])
        return value if not math.isnan(value) else -math.inf


SPEC = AlgorithmSpec(
    "smc",
    SMC,
    (PARTICLES, ESS, RESAMPLE),
    budget="particles",
    summary="sequential Monte Carlo: resample at step barriers when the ESS falls below ess·N",
)
