"""Importance sampling: N independent runs of the program, weighted, never resampled.

With the program's own proposal the weights are exp(Σ score) · 1[conditions]: this is
best-of-N (query ``best()``), self-consistency (``majority()``) and weighted best-of-N
(``weighted_vote()``). log Ẑ = log mean w is unbiased for Z on the natural scale.

    >>> import ppl
    >>> from ppl.algorithms import ImportanceSampling
    >>> from ppl.backends.tabular import TabularLM
    >>> lm = TabularLM.random(["a", "b"], order=2, seed=0)
    >>> @ppl.program
    ... def no_b(lm):
    ...     s = ppl.gen(lm, (), max_tokens=2)
    ...     ppl.condition("b" not in s.text)
    ...     return s.text
    >>> post = ppl.infer(no_b, [(lm,)], ImportanceSampling(particles=8), seed=0)[0]
    >>> post.best(), post.diagnostics.dead
    ('a', 3)
"""

from __future__ import annotations

from ppl.inference import Algorithm
from ppl.settings import AlgorithmSpec, Setting

PARTICLES = Setting("particles", int, minimum=1)


class ImportanceSampling(Algorithm):
    name = "importance_sampling"

    def __init__(self, particles: int):
        self.particles = PARTICLES.check(particles)

    def __repr__(self) -> str:
        return f"ImportanceSampling(particles={self.particles})"


SPEC = AlgorithmSpec(
    "importance",
    ImportanceSampling,
    (PARTICLES,),
    budget="particles",
    summary="N independent weighted runs: best-of-N, self-consistency, weighted vote",
)
