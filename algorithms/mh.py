"""Metropolis–Hastings over completions: chains of whole program runs, all advanced together.

A chain's state is a finished run of the program (its record of answers); its target is the
program's π ∝ γ. Every MH step proposes one new run per chain, the proposals of all chains
of all problems go to the engine together (one call per scheduler round), and each chain
accepts with the exact MH ratio:

* ``proposal="suffix"`` (QAlign-style): choose a position i uniformly among the |y| choice
  sites of the current run (each ``gen`` segment, ``select``, ``sample`` and ``reward``
  answer is one position), keep the answers before it, and regenerate site i and
  everything after from the program's own proposal. With w = γ/q the program's importance
  weight, the acceptance ratio is ``w(y') / w(y) · |y| / |y'|`` — exact, because a move and
  its reverse cut at the same site and the shared prefix has the same proposal probability.
  With one-token segments (``max_tokens=1`` per step) a position is a token; with
  multi-token steps a move regenerates from the start of a step.
* ``proposal="independent"``: a fresh run of the program; ratio ``w(y') / w(y)``.

Targets that differ from the LM's sampling distribution are written in the program: for
power sampling p^α, :func:`power_gen` draws a segment at temperature 1/α and scores the
exact correction α·log p(y) − log p_{1/α}(y) from the recorded log-probability (one scoring
call at temperature 1), so the program's target is p^α and MH samples it.

A dead proposal (a failed condition, an exception) is rejected; a chain whose current run
is dead accepts any live proposal. Acceptance rates per chain are in
``diagnostics.extra["acceptance"]``. The Posterior holds every chain's states after each
step past ``burn`` (chain-major), equally weighted; ``log_evidence`` is None.

    >>> import ppl
    >>> from ppl.algorithms import MH
    >>> from ppl.backends.tabular import TabularLM
    >>> lm = TabularLM.random(["a", "b"], order=2, seed=0)
    >>> @ppl.program
    ... def prefer_a(lm):
    ...     ctx = ()
    ...     for _ in ppl.steps(max=3):
    ...         s = ppl.gen(lm, ctx, max_tokens=1)
    ...         ctx += s.token_ids
    ...         if s.eos:
    ...             break
    ...     ppl.score(1.0 * ctx.count(0))
    ...     return lm.decode(ctx)
    >>> post = ppl.infer(prefer_a, [(lm,)], MH(chains=4, steps=5), seed=0)[0]
    >>> len(post.particles), len(post.diagnostics.extra["acceptance"])
    (20, 4)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import ppl
from ppl.handlers import Done, Message, Need, apply_stack
from ppl.inference import Algorithm, diagnostics, weighted
from ppl.interfaces import ScoreRequest
from ppl.posterior import Posterior
from ppl.primitives import DEFAULT_MAX_TOKENS
from ppl.randomness import Stream, key
from ppl.scheduler import Particle, ProblemRun
from ppl.settings import AlgorithmSpec, Setting

PROPOSALS = ("suffix", "independent")


def restarted(particle: Particle, keep: int, key: tuple[int, ...], rng) -> Particle:
    """A new particle that replays the first ``keep`` answers of ``particle`` and runs on
    from there: weight zero, no barrier passed, its own key and randomness."""
    records = [list(a) for a in particle.records[:keep]]
    asked = [list(a) for a in particle.asked[:keep]]
    return Particle(particle.problem, key, rng, records=records, asked=asked, parent=particle.key)


def sites_of(particle: Particle) -> int:
    """|y|: the number of choice-site positions of a run (at least one)."""
    return max(1, len(particle.records))


def logprob(lm, context, continuation, eos: bool = False) -> float:
    """log p_lm(continuation [+ EOS] | context) at temperature 1: a batched scoring site."""
    request = ScoreRequest(tuple(context), tuple(continuation), bool(eos), 1.0)

    def resolve(results):
        return Need(lm, request) if not results else Done(float(results[0]), 0.0)

    return apply_stack(Message("logprob", {"lm": lm, "request": request}, resolve))


def power_gen(lm, context, alpha: float, *, stop=(), max_tokens: int = DEFAULT_MAX_TOKENS):
    """A segment whose factor in the target is p_lm(segment)^α (power sampling).

    Drawn at temperature 1/α (the proposal), then scored α·log p(y) − log p_{1/α}(y): the
    first term from one scoring call at temperature 1, the second from the segment's
    recorded log-probability (tokens and EOS exactly as sampled).
    """
    if not isinstance(alpha, (int, float)) or not alpha > 0 or not math.isfinite(alpha):
        raise ValueError(f"alpha must be a finite number > 0, got {alpha!r}")
    segment = ppl.gen(lm, context, temperature=1.0 / alpha, stop=stop, max_tokens=max_tokens)
    target = logprob(lm, context, segment.token_ids, segment.eos)
    ppl.score(alpha * target - segment.logprob)
    return segment


def chain_key(problem: int, chain: int, step: int) -> tuple[int, ...]:
    """Randomness key of the run proposed for ``chain`` at MH step ``step`` (0 = initial)."""
    return key(Stream.MH_CHAIN, problem, chain, step)


def mh_key(problem: int, step: int, what: int) -> tuple[int, ...]:
    """Randomness key of the MH decisions (0 = positions, 1 = acceptances) at ``step``."""
    return key(Stream.MH_DECISION, problem, step, what)


@dataclass
class MHState:
    """A problem's chains: the MH step, each chain's current run, acceptances and kept samples."""

    step: int = 0
    current: list = field(default_factory=list)
    accepted: list[int] = field(default_factory=list)
    samples: list[list] = field(default_factory=list)


CHAINS = Setting("chains", int, 4, minimum=1)
STEPS = Setting("steps", int, 10, minimum=1)
PROPOSAL = Setting(
    "proposal", str, "suffix", choices=tuple(PROPOSALS), noun="MH proposal", plural="proposals"
)
BURN = Setting("burn", int, 0, minimum=0)


class MH(Algorithm):
    """Metropolis–Hastings with ``chains`` chains per problem and ``steps`` steps each."""

    name = "mh"

    def __init__(self, chains: int = 4, steps: int = 10, proposal: str = "suffix", burn: int = 0):
        self.chains = CHAINS.check(chains)
        self.steps = STEPS.check(steps)
        self.proposal = PROPOSAL.check(proposal)
        self.burn = BURN.check(burn)
        if self.burn >= self.steps:
            raise ValueError(f"burn must be smaller than steps ({self.steps}), got {burn!r}")
        self.particles = self.chains

    def __repr__(self) -> str:
        return f"MH(chains={self.chains}, steps={self.steps}, proposal={self.proposal!r}, burn={self.burn})"

    # --- hooks -------------------------------------------------------------------------

    def initial_state(self, run: ProblemRun, source, chain: int) -> Particle:
        """The run a chain starts from: a fresh run of the program (tests plant states here)."""
        k = chain_key(run.index, chain, 0)
        return Particle(run.index, k, source(*k))

    def start(self, run: ProblemRun, source) -> None:
        run.state = MHState(
            current=[None] * self.chains,
            accepted=[0] * self.chains,
            samples=[[] for _ in range(self.chains)],
        )
        run.particles = [self.initial_state(run, source, c) for c in range(self.chains)]

    def log_length_ratio(self, current: Particle, proposed: Particle) -> float:
        """log |y| / |y'| for suffix regeneration (the reverse move's position probability)."""
        if self.proposal == "independent":
            return 0.0
        return math.log(sites_of(current)) - math.log(sites_of(proposed))

    def log_acceptance(self, current: Particle, proposed: Particle) -> float:
        if proposed.log_weight == -math.inf:
            return -math.inf
        if current.log_weight == -math.inf:
            return 0.0
        ratio = proposed.log_weight - current.log_weight + self.log_length_ratio(current, proposed)
        return min(0.0, ratio)

    def restart(self, run: ProblemRun, source) -> bool:
        """All proposals of this problem are in: accept or reject, then propose again."""
        state: MHState = run.state
        step = state.step
        rng = source(*mh_key(run.index, step, 1))
        accepted = []
        for c, proposed in enumerate(run.particles):
            if step == 0:
                state.current[c] = proposed
                continue
            alpha = math.exp(self.log_acceptance(state.current[c], proposed))
            accepted.append(alpha > 0 and (alpha >= 1 or rng.uniform([alpha]) < alpha))
            if accepted[-1]:
                state.current[c] = proposed
                state.accepted[c] += 1
            if step > self.burn:
                state.samples[c].append(state.current[c])
        if step > 0:
            run.note(accepted=accepted)
        if step == self.steps:
            return False
        state.step = step + 1
        position_rng = source(*mh_key(run.index, step + 1, 0))
        run.particles = [
            self.propose(run, source, c, state.current[c], position_rng) for c in range(self.chains)
        ]
        return True

    def propose(self, run: ProblemRun, source, chain: int, current: Particle, rng) -> Particle:
        k = chain_key(run.index, chain, run.state.step)
        keep = 0
        if self.proposal == "suffix":
            size = sites_of(current)
            u = rng.uniform([i / size for i in range(1, size)])
            keep = min(int(u * size), size - 1)
        return restarted(current, keep, k, source(*k))

    def finish(self, run: ProblemRun) -> Posterior:
        state: MHState = run.state
        particles = [
            weighted(p, 0.0 if p.log_weight > -math.inf else -math.inf)
            for chain in state.samples
            for p in chain
        ]
        summary = diagnostics(
            self.name,
            run,
            particles,
            steps=state.step,
            acceptance=[a / self.steps for a in state.accepted],
            chains=self.chains,
            proposal=self.proposal,
            weights="equal",
        )
        return Posterior(particles, None, summary)


SPEC = AlgorithmSpec(
    "mh",
    MH,
    (CHAINS, STEPS, PROPOSAL, BURN),
    budget="chains",
    summary="Metropolis–Hastings over completions (suffix regeneration or independent proposals)",
)
