"""Pruning with restarts: slots that give up on a bad start and begin again (rejection control).

``particles`` slots each run the program. Every time a run's weight is updated — at each
step barrier, where it holds the current twist (a self-evaluation: the model's log-probability
that it would *not* do better by starting over), and when it finishes — a run of weight w
below the threshold c = exp(``threshold``) is killed with probability 1 − w/c, and a run that
survives has its weight raised to c (w divided by the probability it had of surviving). A
killed run, or one the program killed (a failed condition), frees its slot, which restarts
the program from scratch, up to ``attempts`` attempts per slot. This is Liu's rejection
control applied sequentially; Manvi et al. (2024) prune and restart on the same signal.

What it targets: the program's own π — twists are divided out as everywhere else, and each
check multiplies a run's weight by 1[survived] / P(survived), so an attempt's final weight
(zero if killed) has expectation Z, like importance sampling's. The twist only decides where
compute goes: prefixes it rates low are abandoned early, and their slots spent on fresh
runs. A slot's survivor is its first surviving attempt: a draw from the attempt law given
survival, properly weighted up to the constant 1/ρ (ρ = P(an attempt survives)), so the
weighted survivors estimate π as importance sampling's particles do. When no check sees a
weight above c — say no twists, scores that are log-probabilities and ``threshold = 0`` —
every survivor ends with weight c: the survivors are then exact, equally weighted draws from
π (rejection sampling). Twists break this: dividing a twist back out raises the weight, so
a survivor's final weight is its final verdict over its last prediction, which may exceed c.

The evidence: log Ẑ = log ρ̂ + log mean(survivors' weights), where ρ̂ is the
Girshick–Mosteller–Savage estimator of ρ — P(slot 1's first attempt survived | S survivors
in A attempts), counted exactly over the configurations of N slots with at most ``attempts``
tries each. ρ̂ is unbiased for any cap (with no cap it is (N − 1)/(A − 1), the alive particle
filter's), and the survivors' weights are independent of how many attempts failed, so Ẑ is
unbiased (tested exactly by enumeration); the plain survivors / attempts is not. With one slot
ρ̂ = 1[the first attempt survived]: unbiased, but use N >= 2.

Slots are independent (no resampling between them): that independence is what makes the
restarts exact and ρ̂ unbiased. The budget used is reported as ``diagnostics.particles``
(attempts, pruned or not) and ``diagnostics.extra``.

    >>> import ppl
    >>> from ppl.algorithms import Restarts
    >>> from ppl.backends.tabular import TabularLM
    >>> lm = TabularLM.bigram({"<s>": {" a": 1, " b": 1}, " a": {"<eos>": 1}, " b": {"<eos>": 1}})
    >>> @ppl.program
    ... def prefers_a(lm):
    ...     s = ppl.gen(lm, (), max_tokens=1)
    ...     ppl.score(0.0 if s.text == " a" else -2.0)
    ...     return s.text
    >>> post = ppl.infer(prefers_a, [(lm,)], Restarts(particles=8, attempts=4), seed=4)[0]
    >>> post.diagnostics.extra["survivors"], post.diagnostics.extra["budget"]
    (8, 12)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction

from ppl.inference import Algorithm, diagnostics, weighted
from ppl.posterior import Posterior, log_mean_exp
from ppl.randomness import Stream, key
from ppl.scheduler import AT_BARRIER, DEAD, FINISHED, Particle, ProblemRun, kill
from ppl.settings import AlgorithmSpec, Setting

PARTICLES = Setting("particles", int, minimum=1, hint="slots: the surviving runs wanted")
ATTEMPTS = Setting("attempts", int, 4, minimum=1, hint="tries per slot, the first included")
THRESHOLD = Setting(
    "threshold", float, 0.0, hint="log c: a run of log weight below it is pruned with probability 1 − w/c"
)


def compositions(total: int, parts: int, cap: int) -> int:
    """In how many ways ``total`` is a sum of ``parts`` whole numbers in [1, cap] (in order):
    inclusion–exclusion over the parts that exceed the cap."""
    if parts == 0:
        return int(total == 0)
    return sum(
        (-1) ** k * math.comb(parts, k) * math.comb(total - k * cap - 1, parts - 1)
        for k in range(parts + 1)
        if total - k * cap - 1 >= parts - 1
    )


def configurations(slots: int, cap: int, survivors: int, attempts: int) -> int:
    """In how many ways ``slots`` slots, each trying at most ``cap`` times and stopping at its
    first success, end with ``survivors`` successes after ``attempts`` attempts in all: which
    slots succeed, times how their attempts add up (each failed slot used all ``cap``)."""
    if not 0 <= survivors <= slots:
        return 0
    used = attempts - (slots - survivors) * cap
    return math.comb(slots, survivors) * compositions(used, survivors, cap)


def acceptance_estimate(slots: int, cap: int, survivors: int, attempts: int) -> Fraction:
    """The Girshick–Mosteller–Savage unbiased estimator of an attempt's survival probability.

    Given S survivors in A attempts every configuration is equally likely (each has probability
    ρ^S (1 − ρ)^(A − S)), so P(slot 1's first attempt survived | S, A) is the number of
    configurations in which it did over the number in all — the Rao–Blackwellisation of that
    unbiased indicator. Exact (integer counts)."""
    total = configurations(slots, cap, survivors, attempts)
    if total == 0:
        raise ValueError(
            f"{survivors} survivors in {attempts} attempts is impossible for {slots} slots of {cap}"
        )
    first = configurations(slots - 1, cap, survivors - 1, attempts - 1) if survivors else 0
    return Fraction(first, total)


@dataclass
class RestartState:
    attempts: list[int]  # per slot, the attempts started
    retired: list[Particle] = field(default_factory=list)  # dead attempts, in the order they died
    checked: set = field(default_factory=set)  # keys of runs whose final weight was checked
    pruned: int = 0


class Restarts(Algorithm):
    name = "restarts"

    def __init__(self, particles: int, attempts: int = 4, threshold: float = 0.0):
        self.particles = PARTICLES.check(particles)
        self.attempts = ATTEMPTS.check(attempts)
        self.threshold = THRESHOLD.check(threshold)

    def __repr__(self) -> str:
        return f"Restarts(particles={self.particles}, attempts={self.attempts}, threshold={self.threshold})"

    def start(self, run: ProblemRun, source) -> None:
        super().start(run, source)  # attempt 0 of slot j has importance sampling's key j
        run.state = RestartState([1] * self.particles)

    def survives(
        self, particle: Particle, slot: int, attempt: int, check: int, run: ProblemRun, source
    ) -> bool:
        """The rejection-control check of one run's current weight: kill it with probability
        1 − w/c, or raise its weight to c (dividing w by its probability of surviving)."""
        log_ratio = particle.log_weight - self.threshold
        if log_ratio >= 0:
            return True
        keep = math.exp(log_ratio)
        rng = source(*key(Stream.PRUNING, run.index, slot, attempt, check))
        if keep > 0 and rng.uniform([keep]) < keep:
            particle.log_weight = self.threshold
            return True
        reason = (
            f"pruned at check {check} (attempt {attempt + 1} of slot {slot}): log weight "
            f"{particle.log_weight:.3g} below the threshold {self.threshold:g}, kept with probability {keep:.3g}"
        )
        kill(particle, reason)
        run.deaths.append(reason)
        run.state.pruned += 1
        return False

    def _check_and_refill(self, run: ProblemRun, source) -> bool:
        """Check every run that reached a barrier or its end; restart every dead slot that has
        attempts left. True if a slot was restarted."""
        state: RestartState = run.state
        restarted = False
        for slot, particle in enumerate(run.particles):
            attempt = state.attempts[slot] - 1
            finished_unchecked = particle.status == FINISHED and particle.key not in state.checked
            if particle.status == AT_BARRIER or finished_unchecked:
                if finished_unchecked:
                    state.checked.add(particle.key)
                self.survives(particle, slot, attempt, particle.barriers_passed, run, source)
            if particle.status == DEAD and state.attempts[slot] < self.attempts:
                state.retired.append(particle)
                fresh = key(Stream.RESTART, run.index, slot, state.attempts[slot])
                run.particles[slot] = Particle(run.index, fresh, source(*fresh))
                state.attempts[slot] += 1
                restarted = True
        return restarted

    def at_barrier(self, run: ProblemRun, source) -> None:
        self._check_and_refill(run, source)

    def restart(self, run: ProblemRun, source) -> bool:
        return self._check_and_refill(run, source)

    def acceptance(self, run: ProblemRun) -> Fraction:
        """ρ̂ of the problem's finished run: its survivors among its attempts."""
        survivors = sum(p.status != DEAD for p in run.particles)
        return acceptance_estimate(self.particles, self.attempts, survivors, sum(run.state.attempts))

    def log_evidence(self, run: ProblemRun) -> float:
        rho = self.acceptance(run)
        if rho == 0:
            return -math.inf
        return math.log(rho) + log_mean_exp([p.log_weight for p in run.particles if p.status != DEAD])

    def finish(self, run: ProblemRun) -> Posterior:
        state: RestartState = run.state
        particles = [weighted(p) for p in [*run.particles, *state.retired]]
        survivors = sum(p.status != DEAD for p in run.particles)
        extra = {
            "budget": sum(state.attempts),
            "max": self.particles * self.attempts,
            "survivors": survivors,
            "pruned": state.pruned,
            "attempts": list(state.attempts),
            "acceptance": float(self.acceptance(run)),
        }
        return Posterior(particles, self.log_evidence(run), diagnostics(self.name, run, particles, **extra))


SPEC = AlgorithmSpec(
    "restarts",
    Restarts,
    (PARTICLES, ATTEMPTS, THRESHOLD),
    budget="particles",
    summary="pruning with restarts: runs whose (twisted) weight falls below a threshold are cut and begun again",
)
