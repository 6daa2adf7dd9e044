"""Adaptive self-consistency: its exact law equals a brute-force enumeration of wave sequences.

The interpreter's own randomness is enumerated (``tiny.smc_law``): every outcome of every
run it draws, with its probability. Independently, ``brute_force`` lists every sequence of
answers wave by wave from the program's answer law (from the LM's table), applies the
stopping rule with scipy's Beta tail, and sums the probabilities of the stopped sequences.
The expected budget, the law of the budget and the law of the stopped majority vote must
agree to 1e-9; a mutant that votes with the latest wave only must not.
"""

from __future__ import annotations

import math

import pytest
from scipy.stats import beta

import ppl
from ppl.algorithms import AdaptiveConsistency, ImportanceSampling
from ppl.algorithms.adaptive import probability_above_half
from ppl.app import check, load
from ppl.backends.tabular import TabularLM
from ppl.grammar import TtsError

from tiny import Tiny, smc_law

TOL = 1e-9


def answer_law(tiny: Tiny) -> dict:
    """The law of the program's answer (its token tuple) under the LM: β = ∞, no reward."""
    return {seq: p for seq, p in tiny.posterior().items() if p > 0}


def stops(answers: list, wave_ends: set, n: int, max_budget: int, threshold, prior, rule) -> bool:
    if n not in wave_ends:
        return False
    if n >= max_budget:
        return True
    counts: dict = {}
    for a in answers[:n]:
        counts[a] = counts.get(a, 0) + 1  # dicts keep first appearance: the tie-break
    leader = max(counts, key=lambda a: counts[a])  # first maximal in insertion order
    top = counts[leader]
    others = [c for a, c in counts.items() if a != leader]
    rest = sum(others) if rule == "majority" else max(others, default=0)
    return threshold < 1 and beta.sf(0.5, prior + top, prior + rest) >= threshold


def brute_force(law: dict, max_budget, wave, threshold, prior, rule):
    """(expected budget, law of the budget, law of the stopped vote) by listing answer sequences."""
    wave_ends = set(range(wave, max_budget, wave)) | {max_budget}
    budget_law: dict = {}
    vote_law: dict = {}

    def extend(prefix: tuple, p: float) -> None:
        n = len(prefix)
        if stops(list(prefix), wave_ends, n, max_budget, threshold, prior, rule):
            counts: dict = {}
            for a in prefix:
                counts[a] = counts.get(a, 0) + 1
            winner = max(counts, key=lambda a: counts[a])
            budget_law[n] = budget_law.get(n, 0.0) + p
            vote_law[winner] = vote_law.get(winner, 0.0) + p
            return
        for answer, q in law.items():
            extend((*prefix, answer), p * q)

    extend((), 1.0)
    expected = sum(n * p for n, p in budget_law.items())
    return expected, budget_law, vote_law


def interpreter_law(tiny: Tiny, algorithm):
    law = smc_law(tiny, algorithm)
    assert math.isclose(sum(p for p, _ in law), 1.0, abs_tol=TOL)
    budget_law: dict = {}
    vote_law: dict = {}
    for p, posterior in law:
        n = posterior.diagnostics.particles
        assert n == posterior.diagnostics.extra["budget"]
        budget_law[n] = budget_law.get(n, 0.0) + p
        winner = posterior.majority()
        vote_law[winner] = vote_law.get(winner, 0.0) + p
    return sum(n * p for n, p in budget_law.items()), budget_law, vote_law


def close(a: dict, b: dict, tol: float = TOL) -> bool:
    return all(abs(a.get(k, 0.0) - b.get(k, 0.0)) <= tol for k in set(a) | set(b))


CONFIGS = [  # (tiny seed, max budget, wave, threshold, prior, rule)
    (0, 5, 2, 0.8, 1, "majority"),
    (3, 6, 1, 0.9, 1, "plurality"),
    (5, 6, 3, 0.85, 2, "majority"),
    (8, 4, 4, 0.9, 1, "majority"),  # one wave: fixed-N self-consistency
]


@pytest.mark.parametrize("seed, budget, wave, threshold, prior, rule", CONFIGS)
def test_budget_and_answer_law_equal_brute_force(seed, budget, wave, threshold, prior, rule):
    tiny = Tiny.make(2, 1, seed, math.inf, scale=1.5)
    algorithm = AdaptiveConsistency(budget, wave=wave, threshold=threshold, prior=prior, rule=rule)
    expected, budgets, votes = interpreter_law(tiny, algorithm)
    want_expected, want_budgets, want_votes = brute_force(
        answer_law(tiny), budget, wave, threshold, prior, rule
    )
    assert expected == pytest.approx(want_expected, abs=TOL)
    assert close(budgets, want_budgets) and close(votes, want_votes)
    if wave < budget:  # the rule does stop early on these models
        assert expected < budget - 0.05


def test_mutant_voting_with_the_latest_wave_only_fails():
    class LatestWave(AdaptiveConsistency):
        def vote(self, particles):
            return super().vote(particles[-self.wave :])

    tiny = Tiny.make(2, 1, 0, math.inf, scale=1.5)
    want_expected, want_budgets, want_votes = brute_force(answer_law(tiny), 5, 2, 0.8, 1, "majority")
    expected, budgets, votes = interpreter_law(tiny, LatestWave(5, wave=2, threshold=0.8))
    assert abs(expected - want_expected) > 1e-3 or not close(budgets, want_budgets, 1e-3)


def test_beta_tail_matches_scipy():
    for a in range(1, 12):
        for b in range(1, 12):
            assert probability_above_half(a, b) == pytest.approx(beta.sf(0.5, a, b), abs=1e-12)


def test_without_stopping_it_is_importance_sampling_run_for_run():
    """threshold = 1 never stops early: the runs are importance sampling's, key for key."""
    lm = TabularLM.random(["a", "b", "c"], order=2, seed=1)

    @ppl.program
    def words(lm):
        return ppl.gen(lm, (), max_tokens=3).text

    adaptive = ppl.infer(words, [(lm,)] * 3, AdaptiveConsistency(7, wave=3, threshold=1.0), seed=4)
    fixed = ppl.infer(words, [(lm,)] * 3, ImportanceSampling(7), seed=4)
    for a, f in zip(adaptive, fixed):
        assert a.values == f.values
        assert a.diagnostics.extra["stopped"] == "budget" and a.diagnostics.extra["waves"] == 3
        assert a.log_evidence is None


def test_dead_runs_count_in_the_budget_and_do_not_vote():
    lm = TabularLM.bigram({"<s>": {" a": 1, " b": 3}, " a": {"<eos>": 1}, " b": {"<eos>": 1}})

    @ppl.program
    def only_a(lm):
        s = ppl.gen(lm, (), max_tokens=1)
        ppl.condition(s.text == " a")
        return s.text

    post = ppl.infer(only_a, [(lm,)], AdaptiveConsistency(40, wave=4, threshold=0.95), seed=0)[0]
    d = post.diagnostics
    assert post.majority() == " a"
    assert d.particles == d.extra["budget"] and d.dead > 0
    assert d.extra["stopped"] == "settled"  # five live " a" votes and none against: 1 − 2⁻⁶ ≥ 0.95
    assert sum(p.log_weight > -math.inf for p in post.particles) >= 4


def test_settings_are_validated_in_python_and_tts():
    with pytest.raises(ValueError, match="wave must be an integer >= 1"):
        AdaptiveConsistency(8, wave=0)
    with pytest.raises(ValueError, match="threshold must be a number in"):
        AdaptiveConsistency(8, threshold=0.3)
    with pytest.raises(ValueError, match="unknown stopping rule 'mode'"):
        AdaptiveConsistency(8, rule="mode")
    head = 'version 0.1\nuse lm = model("m")\nprogram f() -> text {\n  return "a"\n}\n'
    checked = check(head + "infer f with adaptive(particles = 8, wave = 2, threshold = 0.9)\n", "f.tts")
    assert "adaptive" in checked.infer.describe()
    with pytest.raises(TtsError, match="wave"):
        check(head + "infer f with adaptive(particles = 8, wave = 0)\n", "f.tts")
    with pytest.raises(TtsError, match="stopping rule"):
        check(head + 'infer f with adaptive(particles = 8, rule = "mode")\n', "f.tts")


def test_tts_infer_runs_adaptive_and_reports_the_budget():
    source = (
        'version 0.1\nuse lm = model("m")\n'
        'program f() -> text {\n  s ~ lm.gen(lm.encode(""), max_tokens = 1)\n  return s.text\n}\n'
        "infer f with adaptive(particles = 16, wave = 4)\n"
    )
    lm = TabularLM.bigram({"<s>": {" a": 20, " b": 1}, " a": {"<eos>": 1}, " b": {"<eos>": 1}})
    module = load(source, filename="f.tts", models={"lm": lm})
    post = module.infer.algorithm.run(module.infer.program, [{}], seed=0)[0]
    assert post.diagnostics.extra["budget"] in (4, 8, 12, 16)
    assert post.diagnostics.particles == post.diagnostics.extra["budget"]
