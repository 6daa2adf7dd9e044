"""Adaptive self-consistency: sample the program in waves until the vote is settled.

Runs are drawn ``wave`` at a time — each an independent run of the program, exactly the
runs importance sampling would make (run i has the same randomness key as importance
sampling's particle i) — and after each wave the live runs vote, unweighted, on their
answers (``key(value)``; lists become tuples). With a the leader's votes and b the votes
it is compared with, the leader's share has the Beta(prior + a, prior + b) posterior of a
Beta(prior, prior) prior, and the run stops once

* ``rule = "majority"``: P(the leader's share of all answers > 1/2) >= ``threshold``,
  b = every other live vote (the leader *is* the majority answer of the program's law), or
* ``rule = "plurality"``: P(p_leader > p_runner-up) >= ``threshold``, b = the runner-up's
  votes (under a symmetric Dirichlet posterior p_1/(p_1 + p_2) is Beta(α_1, α_2) exactly),

or once ``particles`` runs (the maximum budget) have been drawn. The leader is the answer
with the most votes, ties going to the one that appeared first. The last wave is cut to the
maximum. Dead runs (weight zero) count in the budget and never vote.

What this targets: the law of the answer ``majority()`` returns is the law of the
*stopped* vote — a vote over a random number of runs that depends on the runs themselves —
not the law of self-consistency over a fixed N, and the runs it keeps are not an i.i.d.
sample of the program's law of fixed size (agreeing runs stop early). Their weights are
the program's own, but a mean of weights over a stopped sample is not an unbiased
evidence estimate, so ``log_evidence`` is None. Use ``majority()``; ``best()`` and
``weighted_vote()`` are queries over the runs it happened to draw. The budget each problem
used is ``diagnostics.particles`` and ``diagnostics.extra``:
``{"budget": runs drawn, "waves", "stopped": "settled" | "budget", "confidence"}``.

    >>> import ppl
    >>> from ppl.algorithms import AdaptiveConsistency
    >>> from ppl.backends.tabular import TabularLM
    >>> lm = TabularLM.bigram({"<s>": {" a": 9, " b": 1}, " a": {"<eos>": 1}, " b": {"<eos>": 1}})
    >>> @ppl.program
    ... def word(lm):
    ...     return ppl.gen(lm, (), max_tokens=1).text
    >>> post = ppl.infer(word, [(lm,)], AdaptiveConsistency(particles=32, wave=4), seed=0)[0]
    >>> post.majority(), post.diagnostics.extra["stopped"], post.diagnostics.particles < 32
    (' a', 'settled', True)
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

from ppl.inference import Algorithm, diagnostics, particle_key, weighted
from ppl.posterior import Posterior
from ppl.scheduler import Particle, ProblemRun
from ppl.settings import AlgorithmSpec, Setting

PARTICLES = Setting("particles", int, minimum=1, hint="the maximum number of runs")
WAVE = Setting("wave", int, 4, minimum=1, hint="runs drawn before each vote")
THRESHOLD = Setting(
    "threshold", float, 0.95, minimum=0.5, maximum=1, hint="1 = never stop before the maximum"
)
PRIOR = Setting("prior", int, 1, minimum=1, hint="the Beta(prior, prior) pseudo-votes")
RULE = Setting("rule", str, "majority", choices=("majority", "plurality"), noun="stopping rule")


def probability_above_half(a: int, b: int) -> float:
    """P(X > 1/2) for X ~ Beta(a, b), a and b whole numbers >= 1, exactly.

    For whole a, b: P(X <= x) = P(Binomial(a + b − 1, x) >= a), so P(X > 1/2) is the
    Binomial(a + b − 1, 1/2) probability of at most a − 1 successes (integer arithmetic,
    one rounding at the end).
    """
    if a < 1 or b < 1:
        raise ValueError(f"Beta parameters must be whole numbers >= 1, got a={a}, b={b}")
    n = a + b - 1
    return sum(math.comb(n, k) for k in range(a)) / 2**n


def confidence(votes: Counter, prior: int, rule: str) -> float:
    """The stopping statistic of a vote (an ordered Counter: first appearance breaks ties)."""
    ranked = votes.most_common(2)
    if not ranked:
        return 0.0
    leader = ranked[0][1]
    if rule == "majority":
        rest = sum(votes.values()) - leader
    else:
        rest = ranked[1][1] if len(ranked) > 1 else 0
    return probability_above_half(prior + leader, prior + rest)


def _hashable(value):
    return tuple(_hashable(v) for v in value) if isinstance(value, (list, tuple)) else value


@dataclass
class _Waves:
    drawn: int = 0
    waves: int = 0
    stopped: str = ""
    confidence: float = 0.0
    trail: list = field(default_factory=list)  # the confidence after each wave


class AdaptiveConsistency(Algorithm):
    name = "adaptive"

    def __init__(
        self,
        particles: int,
        wave: int = 4,
        threshold: float = 0.95,
        prior: int = 1,
        rule: str = "majority",
        key: Callable[[Any], Hashable] | None = None,
    ):
        self.particles = PARTICLES.check(particles)
        self.wave = WAVE.check(wave)
        self.threshold = THRESHOLD.check(threshold)
        self.prior = PRIOR.check(prior)
        self.rule = RULE.check(rule)
        if key is not None and not callable(key):
            raise TypeError(f"key must be a function of a run's value, got {type(key).__name__}")
        self.key = key or _hashable

    def __repr__(self) -> str:
        return (
            f"AdaptiveConsistency(particles={self.particles}, wave={self.wave}, "
            f"threshold={self.threshold}, prior={self.prior}, rule={self.rule!r})"
        )

    def _draw(self, run: ProblemRun, source) -> None:
        state: _Waves = run.state
        size = min(self.wave, self.particles - state.drawn)
        keys = [particle_key(run.index, 0, state.drawn + i) for i in range(size)]
        run.particles = [*run.particles, *(Particle(run.index, k, source(*k)) for k in keys)]
        state.drawn += size
        state.waves += 1

    def start(self, run: ProblemRun, source) -> None:
        run.state = _Waves()
        run.particles = []
        self._draw(run, source)

    def vote(self, particles) -> Counter:
        return Counter(self.key(p.value) for p in particles if p.log_weight > -math.inf)

    def restart(self, run: ProblemRun, source) -> bool:
        """A wave is in: stop if the vote is settled or the budget spent, else draw the next."""
        state: _Waves = run.state
        state.confidence = confidence(self.vote(run.particles), self.prior, self.rule)
        state.trail.append(round(state.confidence, 6))
        settled = state.confidence >= self.threshold and self.threshold < 1
        run.note(confidence=state.confidence, drawn=state.drawn)
        if settled or state.drawn >= self.particles:
            state.stopped = "settled" if settled else "budget"
            return False
        self._draw(run, source)
        return True

    def log_evidence(self, run: ProblemRun) -> None:
        return None

    def finish(self, run: ProblemRun) -> Posterior:
        state: _Waves = run.state
        particles = [weighted(p) for p in run.particles]
        extra = {
            "budget": state.drawn,
            "max": self.particles,
            "waves": state.waves,
            "stopped": state.stopped,
            "confidence": state.confidence,
            "confidences": list(state.trail),
        }
        return Posterior(particles, None, diagnostics(self.name, run, particles, **extra))


SPEC = AlgorithmSpec(
    "adaptive",
    AdaptiveConsistency,
    (PARTICLES, WAVE, THRESHOLD, PRIOR, RULE),
    budget="particles",
    summary="adaptive self-consistency: runs in waves until a Beta posterior says the vote is settled",
)
