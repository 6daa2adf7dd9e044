"""Tiny tabular problems where everything can be enumerated, shared by the tests.

A ``Tiny`` is a random tabular LM over 1–3 tokens plus EOS, a maximum length, a reward per
sequence in [-2, 2], an inverse temperature β and optionally a twist per prefix. Its
program draws one token per step (``steps`` barrier between tokens), twists the prefix,
and scores r / β at the end (β = ∞ means no reward). ``brute_force`` computes γ and Z by
listing sequences directly from the LM's next-token table — independently of the
interpreters.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
from hypothesis import strategies as st

import ppl
from ppl.backends.tabular import TabularLM
from ppl.randomness import FixedSource, exact_law

VOCAB = ["a", "b", "c"]
BETAS = [0.25, 1.0, 4.0, math.inf]


@dataclass
class Tiny:
    lm: TabularLM
    max_len: int
    rewards: dict
    beta: float
    twists: dict | None = None

    @classmethod
    def make(cls, vocab_size, max_len, seed, beta, with_twist=False, scale=3.0):
        lm = TabularLM.random(VOCAB[:vocab_size], order=max_len, seed=seed, scale=scale)
        rng = np.random.default_rng(seed + 1)
        prefixes = [p for n in range(max_len + 1) for p in itertools.product(range(vocab_size), repeat=n)]
        rewards = {p: float(rng.uniform(-2, 2)) for p in prefixes}
        twists = {p: float(rng.uniform(-2, 2)) for p in prefixes} if with_twist else None
        return cls(lm, max_len, rewards, beta, twists)

    def terminal(self, sequence) -> float:
        return 0.0 if self.beta == math.inf else self.rewards[tuple(sequence)] / self.beta

    def program(self, proposal=None, twist=None):
        twists = self.twists if twist is None else twist

        @ppl.program
        def tokens(lm):
            ctx = ()
            for _ in ppl.steps(max=self.max_len):
                s = ppl.gen(lm, ctx, max_tokens=1, proposal=proposal)
                ctx += s.token_ids
                if s.eos:
                    break
                if twists is not None and ctx in twists:
                    ppl.twist(twists[ctx])
            if self.beta != math.inf:
                ppl.score(self.rewards[ctx] / self.beta)
            return ctx

        return tokens

    def brute_force(self) -> dict:
        """log γ of every sequence, from the next-token table directly."""
        out = {}
        eos = self.lm.eos_token_id
        size = len(self.lm.vocab)
        for n in range(self.max_len + 1):
            for seq in itertools.product(range(size), repeat=n):
                logp = sum(self.lm.next_logprobs(seq[:i])[t] for i, t in enumerate(seq))
                if n < self.max_len:
                    logp += self.lm.next_logprobs(seq)[eos]
                out[seq] = float(logp) + self.terminal(seq)
        return out

    def log_z(self) -> float:
        return float(np.logaddexp.reduce(list(self.brute_force().values())))

    def posterior(self) -> dict:
        log_gamma = self.brute_force()
        log_z = self.log_z()
        return {seq: math.exp(lg - log_z) for seq, lg in log_gamma.items()}


def tinies(max_vocab=3, max_len=3, betas=BETAS, with_twist=None):
    twist = st.booleans() if with_twist is None else st.just(with_twist)
    return st.builds(
        Tiny.make,
        vocab_size=st.integers(1, max_vocab),
        max_len=st.integers(1, max_len),
        seed=st.integers(0, 2**16),
        beta=st.sampled_from(betas),
        with_twist=twist,
    )


def smc_law(tiny: Tiny, algorithm, program=None):
    """The exact law of ``algorithm``'s Posterior on ``tiny``, enumerating its randomness.

    The real interpreter runs once per outcome of all its random draws — the LM's tokens
    and the resampling uniforms — drawn through one exhaustive source.
    """
    program = program or tiny.program()

    def run(rng):
        lm = tiny.lm.with_randomness(rng)
        return algorithm.run(program, [(lm,)], randomness=FixedSource(rng))[0]

    return exact_law(run)


def expected_evidence(law) -> float:
    return sum(p * math.exp(post.log_evidence) for p, post in law)


def weighted_law(posteriors) -> dict:
    """Average of the normalised weighted particle laws of several Posteriors."""
    law: dict = {}
    for post in posteriors:
        for particle, w in zip(post.particles, post.weights):
            law[particle.value] = law.get(particle.value, 0.0) + w / len(posteriors)
    return law


def total_variation(p: dict, q: dict) -> float:
    keys = set(p) | set(q)
    return 0.5 * sum(abs(p.get(k, 0.0) - q.get(k, 0.0)) for k in keys)
