"""Beam search and DVTS: invariant 11 (docs/design.md §5) and the mutant that claims proper weights.

* k ≥ the frontier keeps every distinct run, so the answer is the argmax of the weight over
  all sequences (exact: the expansion is wide enough that every child is sampled, and the
  seeds are fixed);
* k = 1 is greedy: every step keeps the child of largest weight + twist (exact);
* beam search is *not* properly weighted: reading its weights as importance weights
  (log Ẑ = log mean w) fails E[Ẑ] = Z by more than 1e-3 under its exact enumerated law.
"""

from __future__ import annotations

import math

import pytest

import ppl
from ppl.algorithms import DVTS, BeamSearch
from ppl.backends import FunctionReward, TabularLM
from ppl.posterior import log_mean_exp

from tiny import Tiny, expected_evidence, smc_law

WIDE = 96  # children per survivor: every child of a tiny LM (logits in [-1, 1]) appears


def test_beams_wider_than_the_frontier_return_the_argmax():
    for seed in range(3):
        tiny = Tiny.make(2, 3, seed, 1.0, scale=1.0)
        post = BeamSearch(beams=4, expand=WIDE).run(tiny.program(), [(tiny.lm,)], seed=seed)[0]
        weights = {x: tiny.terminal(x) for x in tiny.brute_force()}
        assert set(post.values) == set(weights)  # nothing was pruned
        assert post.best() == max(weights, key=weights.get)
        assert post.log_evidence is None


def test_one_beam_is_greedy():
    for seed in range(5):
        tiny = Tiny.make(3, 3, seed, 1.0, with_twist=True, scale=1.0)
        post = BeamSearch(beams=1, expand=WIDE).run(tiny.program(), [(tiny.lm,)], seed=seed)[0]
        prefix = ()
        for _ in range(tiny.max_len - 1):  # the greedy path by twist, step by step
            prefix = max((prefix + (t,) for t in range(3)), key=lambda p: tiny.twists[p])
        longest = [v for v in post.values if len(v) == tiny.max_len]
        assert longest and all(v[:-1] == prefix for v in longest)
        # every other run ended early (EOS) on the greedy path, and was kept aside
        assert all(v == prefix[: len(v)] for v in post.values if len(v) < tiny.max_len)


CASES = [Tiny.make(2, 2, seed, 1.0, with_twist=True) for seed in range(3)]


class ClaimedProperlyWeighted(BeamSearch):
    """The mutant: beam search whose weights are read as importance weights."""

    def log_evidence(self, run):
        kept = [p for _, p in run.state.kept]
        return log_mean_exp([p.log_weight for p in kept + run.particles])


def test_mutant_beam_claimed_properly_weighted_fails_unbiasedness():
    bias = [
        abs(
            expected_evidence(smc_law(tiny, ClaimedProperlyWeighted(beams=1, expand=2)))
            / math.exp(tiny.log_z())
            - 1
        )
        for tiny in CASES
    ]
    assert max(bias) > 1e-3, bias


def test_ties_go_to_the_earlier_run():
    """Equal weights: the stable ranking keeps the first runs in order."""
    lm = TabularLM.random(["a", "b"], order=1, seed=0)

    @ppl.program
    def flat(lm):
        ctx = ()
        for _ in ppl.steps(max=2):
            s = ppl.gen(lm, ctx, max_tokens=1)
            ctx += s.token_ids
        return ctx

    algorithm = BeamSearch(beams=2, expand=2, dedupe=False)
    assert algorithm.rank([type("P", (), {"log_weight": 0.0})()] * 3) == [0, 1, 2]
    a = algorithm.run(flat, [(lm,)], seed=3)[0]
    b = algorithm.run(flat, [(lm,)], seed=3)[0]
    assert a.values == b.values


def test_dvts_runs_independent_greedy_subtrees():
    tiny = Tiny.make(3, 3, 4, 1.0, with_twist=True)
    post = DVTS(subtrees=3, expand=4).run(tiny.program(), [(tiny.lm,)], seed=0)[0]
    d = post.diagnostics
    assert d.algorithm == "dvts" and set(d.extra["subtree"]) == {0, 1, 2}
    assert all(len(sizes) == 3 for sizes in d.extra["frontier"])
    assert post.log_evidence is None and d.extra["properly_weighted"] is False


def test_one_generate_call_per_round_for_all_beams_of_all_problems():
    lm = TabularLM.random(["a", "b", "c"], order=2, seed=0)
    reward_model = FunctionReward(lambda ids: 0.1 * len(ids), name="length")

    @ppl.program
    def program(lm, reward_model, prompt):
        ctx = lm.encode(prompt)
        for _ in ppl.steps(max=3):
            s = ppl.gen(lm, ctx, max_tokens=2)
            ctx += s.token_ids
            ppl.twist(ppl.reward(reward_model, ctx))
        return lm.decode(ctx)

    problems = [(lm, reward_model, p) for p in ("a", "b", "ab", "ba")]
    results = BeamSearch(beams=2, expand=3, dedupe=False).run(program, problems, seed=0)
    assert results.stats.calls[("tabular", "generate")] == 3
    assert results.stats.batch_sizes[("tabular", "generate")] == [4 * 6] * 3


@pytest.mark.parametrize("bad", [dict(beams=0), dict(expand=-1), dict(subtrees=1.5), dict(dedupe="yes")])
def test_bad_settings(bad):
    with pytest.raises(ValueError):
        BeamSearch(**bad)
