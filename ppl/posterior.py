"""What an interpreter returns: weighted particles, the evidence estimate, and diagnostics.

Queries are separate from the run (its_hub's users mixed up resampling and selection):

* ``best()`` — the value of the highest-weight particle (best-of-N);
* ``sample(k, seed)`` — values drawn ∝ weight;
* ``majority(key)`` / ``weighted_vote(key)`` — self-consistency over an answer key;
* ``expectation(fn)`` — Σ W_i fn(value_i);
* ``distribution(key)`` — the weighted law of the answers;
* ``log_evidence`` — log Ẑ, where the algorithm defines it.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import AllParticlesDeadError
from .handlers import Site
from .randomness import SeededRandomness, categorical


def logsumexp(values) -> float:
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return -math.inf
    top = float(np.max(values))
    if top == -math.inf:
        return -math.inf
    return top + math.log(float(np.sum(np.exp(values - top))))


def log_mean_exp(values) -> float:
    return logsumexp(values) - math.log(len(values)) if len(values) else -math.inf


def effective_sample_size(log_weights) -> float:
    """1 / Σ W_i² for normalised weights; 0 when every weight is zero."""
    total = logsumexp(log_weights)
    if total == -math.inf:
        return 0.0
    normalised = np.exp(np.asarray(log_weights, dtype=np.float64) - total)
    return float(1.0 / np.sum(normalised**2))


@dataclass
class WeightedParticle:
    """A finished (or dead) particle as queries see it."""

    value: Any
    log_weight: float
    trace: list[Site]
    status: str
    error: str | None = None
    key: tuple[int, ...] | None = None  # the particle's randomness key: its node in ``Diagnostics.history``


@dataclass
class Diagnostics:
    """How the run went, per problem.

    ``dead`` counts the particles with weight zero at the end; ``deaths`` gives the reason
    of every particle that died during the run (a failed condition, an exception), also
    of those that resampling has since replaced. ``weights`` says what the particles'
    weights are: "importance" (importance sampling, SMC: an effective sample size means
    something), "equal" (MCMC and particle Gibbs samples), "exact" (enumeration's
    probabilities) or "score" (beam search's scores). Reports omit what does not apply.
    """

    algorithm: str
    particles: int
    ess: list[float] = field(default_factory=list)
    resampled: list[bool] = field(default_factory=list)
    steps: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    tokens_cached: int = 0  # of ``tokens_in``: served from the engine's prefix cache
    engine_calls: int = 0
    wall_time: float = 0.0
    dead: int = 0
    deaths: list[str] = field(default_factory=list)
    extra: dict = field(default_factory=dict)
    barrier_wait: float = 0.0  # seconds the problem's particles waited at barriers for the others
    history: list | None = None  # the genealogy (``ppl.history.Generation`` list) when traced
    weights: str = "importance"

    @property
    def resampling_events(self) -> int:
        return sum(self.resampled)


class Posterior:
    """Weighted particles for one problem, with queries."""

    def __init__(
        self,
        particles: list[WeightedParticle],
        log_evidence: float | None,
        diagnostics: Diagnostics,
    ):
        self.particles = particles
        self.log_evidence = log_evidence
        self.diagnostics = diagnostics

    @property
    def log_weights(self) -> np.ndarray:
        return np.array([p.log_weight for p in self.particles], dtype=np.float64)

    @property
    def all_dead(self) -> bool:
        return not any(p.log_weight > -math.inf for p in self.particles)

    @property
    def weights(self) -> np.ndarray:
        """Normalised weights (all zero when every particle is dead)."""
        log_weights = self.log_weights
        total = logsumexp(log_weights)
        if total == -math.inf:
            return np.zeros(len(log_weights))
        return np.exp(log_weights - total)

    @property
    def values(self) -> list:
        return [p.value for p in self.particles]

    def _alive(self, query: str) -> None:
        if self.all_dead:
            reasons = Counter(p.error for p in self.particles if p.error)
            detail = "; ".join(f"{n}× {r}" for r, n in reasons.most_common(3)) or "no reason recorded"
            raise AllParticlesDeadError(
                f"{query}: all {len(self.particles)} particles have weight zero ({detail})"
            )

    def best(self) -> Any:
        """The value of the particle with the largest weight (first one on ties)."""
        self._alive("best()")
        return self.particles[int(np.argmax(self.log_weights))].value

    def sample(self, k: int = 1, seed: int = 0) -> list:
        """``k`` values drawn with replacement ∝ weight."""
        self._alive("sample()")
        rng = SeededRandomness(seed)
        return [self.particles[categorical(rng, self.log_weights)].value for _ in range(k)]

    def distribution(self, key: Callable[[Any], Hashable] | None = None) -> dict:
        """The weighted law of ``key(value)`` over live particles, most probable first."""
        self._alive("distribution()")
        law: dict = defaultdict(float)
        for particle, weight in zip(self.particles, self.weights):
            if weight > 0:
                law[key(particle.value) if key else particle.value] += float(weight)
        return dict(sorted(law.items(), key=lambda item: -item[1]))

    def weighted_vote(self, key: Callable[[Any], Hashable] | None = None) -> Any:
        """The answer with the largest total weight."""
        return next(iter(self.distribution(key)))

    def majority(self, key: Callable[[Any], Hashable] | None = None) -> Any:
        """The most frequent answer among live particles, ignoring weights (self-consistency)."""
        self._alive("majority()")
        counts = Counter(key(p.value) if key else p.value for p in self.particles if p.log_weight > -math.inf)
        return counts.most_common(1)[0][0]

    def expectation(self, fn: Callable[[Any], float]) -> float:
        """Σ W_i fn(value_i) over live particles."""
        self._alive("expectation()")
        return float(sum(w * fn(p.value) for p, w in zip(self.particles, self.weights) if w > 0))

    def __repr__(self) -> str:
        d = self.diagnostics
        return (
            f"<Posterior {d.algorithm}: {len(self.particles)} particles, "
            f"log Ẑ={self.log_evidence}, dead={d.dead}, tokens out={d.tokens_out}>"
        )
