"""Pruning with restarts (``Restarts``): exact tests with its randomness enumerated.

``tiny.smc_law`` runs the real interpreter once per outcome of every draw it makes — the
LM's tokens, the rejection-control uniforms, the restarted attempts — with its probability.
Against ``Tiny.brute_force`` (γ listed from the LM's table): E[Ẑ] = Z and, for every answer
v, E[Ẑ · π̂(v)] = Z · π(v), to 1e-9. Mutants: survivors / attempts as the acceptance
estimate (biased under restarts), and survivors whose weight is not raised to the threshold
(no 1 / P(survived)), each fail the same tests.
"""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import pytest

import ppl
from ppl.algorithms import ImportanceSampling, Restarts
from ppl.algorithms import restarts as restarts_module
from ppl.app import check, load
from ppl.backends.tabular import TabularLM
from ppl.grammar import TtsError

from tiny import Tiny, expected_evidence, smc_law

TOL = 1e-9

CONFIGS = [  # (vocab, max_len, tiny seed, beta, with_twist, slots, attempts, threshold)
    (2, 1, 0, 1.0, False, 2, 2, 0.0),
    (2, 2, 3, 1.0, True, 2, 2, 0.0),
    (2, 2, 5, math.inf, True, 1, 3, -0.5),
    (1, 2, 7, 0.25, True, 3, 2, 0.5),
    (2, 1, 11, 4.0, False, 2, 3, -0.2),
]


def unnormalised_law(law) -> tuple[float, dict]:
    """E[Ẑ] and, per answer, E[Ẑ · (the survivors' normalised weight on it)]."""
    per_answer = {}
    for p, post in law:
        z = math.exp(post.log_evidence)
        if z == 0:
            continue
        for particle, w in zip(post.particles, post.weights):
            per_answer[particle.value] = per_answer.get(particle.value, 0.0) + p * z * w
    return expected_evidence(law), per_answer


def assert_targets_pi(tiny: Tiny, algorithm, tol: float = TOL) -> list:
    law = smc_law(tiny, algorithm)
    assert math.isclose(sum(p for p, _ in law), 1.0, abs_tol=TOL)
    z = math.exp(tiny.log_z())
    evidence, per_answer = unnormalised_law(law)
    assert evidence == pytest.approx(z, abs=tol)
    for answer, pi in tiny.posterior().items():
        assert per_answer.get(answer, 0.0) == pytest.approx(z * pi, abs=tol), answer
    return law


def pruning_happens(law) -> bool:
    return any(post.diagnostics.extra["pruned"] > 0 for p, post in law if p > 0)


@pytest.mark.parametrize("vocab, max_len, seed, beta, twist, slots, attempts, threshold", CONFIGS)
def test_evidence_and_answer_law_are_exact(vocab, max_len, seed, beta, twist, slots, attempts, threshold):
    tiny = Tiny.make(vocab, max_len, seed, beta, with_twist=twist)
    law = assert_targets_pi(tiny, Restarts(slots, attempts=attempts, threshold=threshold))
    assert pruning_happens(law), "the configuration exercises pruning and restarts"
    budgets = {post.diagnostics.extra["budget"] for _, post in law}
    assert len(budgets) > 1 and max(budgets) <= slots * attempts


def test_a_condition_restarts_the_slot_exactly():
    """A failed condition frees the slot like a prune: the restarts are rejection sampling,
    and E[Ẑ] is the probability that a run meets the condition."""
    tiny = Tiny.make(2, 2, 2, math.inf)

    @ppl.program
    def no_b(lm):
        s = ppl.gen(lm, (), max_tokens=2)
        ppl.condition(1 not in s.token_ids, "a b")
        return s.token_ids

    law = smc_law(tiny, Restarts(2, attempts=2, threshold=-50.0), program=no_b)
    accept = sum(math.exp(lg) for seq, lg in tiny.brute_force().items() if 1 not in seq)
    evidence, per_answer = unnormalised_law(law)
    assert evidence == pytest.approx(accept, abs=TOL)
    for seq, lg in tiny.brute_force().items():
        assert per_answer.get(seq, 0.0) == pytest.approx(0.0 if 1 in seq else math.exp(lg), abs=TOL)
    assert any(post.diagnostics.extra["budget"] > 2 for _, post in law)


class SurvivorsOverAttempts(Restarts):
    def log_evidence(self, run):
        alive = [p.log_weight for p in run.particles if p.log_weight > -math.inf]
        if not alive:
            return -math.inf
        return math.log(len(alive) / sum(run.state.attempts)) + restarts_module.log_mean_exp(alive)


class NoRouletteCorrection(Restarts):
    def survives(self, particle, slot, attempt, check, run, source):
        weight = particle.log_weight
        kept = super().survives(particle, slot, attempt, check, run, source)
        if kept:
            particle.log_weight = weight  # mutant: the survivor keeps its low weight
        return kept


@pytest.mark.parametrize("mutant", [SurvivorsOverAttempts, NoRouletteCorrection])
def test_mutants_fail_the_same_test(mutant):
    vocab, max_len, seed, beta, twist, slots, attempts, threshold = CONFIGS[1]
    tiny = Tiny.make(vocab, max_len, seed, beta, with_twist=twist)
    assert_targets_pi(tiny, Restarts(slots, attempts=attempts, threshold=threshold))
    with pytest.raises(AssertionError):
        assert_targets_pi(tiny, mutant(slots, attempts=attempts, threshold=threshold), tol=1e-4)


def brute_configurations(slots: int, cap: int, survivors: int, attempts: int) -> int:
    outcomes = [(1, m) for m in range(1, cap + 1)] + [(0, cap)]
    return sum(
        1
        for config in itertools.product(outcomes, repeat=slots)
        if sum(s for s, _ in config) == survivors and sum(a for _, a in config) == attempts
    )


def test_configurations_match_a_brute_force_count():
    for slots, cap in itertools.product(range(4), range(1, 4)):
        for survivors, attempts in itertools.product(range(slots + 1), range(slots * cap + 1)):
            got = restarts_module.configurations(slots, cap, survivors, attempts)
            assert got == brute_configurations(slots, cap, survivors, attempts)


@pytest.mark.parametrize("slots, cap", [(1, 3), (2, 2), (3, 4), (5, 2)])
def test_the_acceptance_estimate_is_unbiased_and_survivors_over_attempts_is_not(slots, cap):
    """Summed over every (S, A) with its exact probability, for several ρ."""
    for rho in (Fraction(1, 5), Fraction(1, 2), Fraction(9, 10)):
        mean, naive = Fraction(0), Fraction(0)
        for survivors in range(slots + 1):
            for attempts in range(slots, slots * cap + 1):
                ways = restarts_module.configurations(slots, cap, survivors, attempts)
                if ways == 0:
                    continue
                p = ways * rho**survivors * (1 - rho) ** (attempts - survivors)
                mean += p * restarts_module.acceptance_estimate(slots, cap, survivors, attempts)
                naive += p * Fraction(survivors, attempts)
        assert mean == rho  # exactly, in rationals
        assert naive != rho


def test_without_pruning_or_restarts_it_is_importance_sampling_run_for_run():
    lm = TabularLM.random(["a", "b", "c"], order=2, seed=1)

    @ppl.program
    def scored(lm):
        s = ppl.gen(lm, (), max_tokens=3)
        ppl.score(-0.5 * len(s))
        return s.text

    restarted = ppl.infer(scored, [(lm,)] * 3, Restarts(6, attempts=1, threshold=-1e9), seed=4)
    fixed = ppl.infer(scored, [(lm,)] * 3, ImportanceSampling(6), seed=4)
    for r, f in zip(restarted, fixed):
        assert r.values == f.values and list(r.log_weights) == list(f.log_weights)
        assert r.log_evidence == pytest.approx(f.log_evidence, abs=1e-12)
        assert r.diagnostics.extra["pruned"] == 0 and r.diagnostics.extra["budget"] == 6


def test_a_pruned_attempt_stops_at_its_barrier_and_its_tokens_count():
    """A self-evaluation twist of −3 after a bad first step prunes most such runs at the
    barrier — their second step is never generated — and the slot starts again."""
    lm = TabularLM.bigram(
        {"<s>": {" good": 1, " bad": 1}, " good": {" end": 1}, " bad": {" end": 1}, " end": {"<eos>": 1}}
    )

    @ppl.program
    def two_steps(lm):
        ctx = ()
        for t in ppl.steps(max=2):
            s = ppl.gen(lm, ctx, max_tokens=1)
            ctx += s.token_ids
            if t == 0:
                ppl.twist(0.0 if s.text == " good" else -3.0)  # the model's P(keep going)
        return lm.decode(ctx)

    post = ppl.infer(two_steps, [(lm,)], Restarts(8, attempts=6), seed=0)[0]
    extra = post.diagnostics.extra
    assert extra["pruned"] > 0 and extra["budget"] == sum(extra["attempts"]) > 8
    pruned = [p for p in post.particles if p.error and p.error.startswith("pruned at check 0")]
    assert len(pruned) == extra["pruned"]
    assert all(sum(site.kind == "gen" for site in p.trace) == 1 for p in pruned)
    generated = 2 * extra["survivors"] + extra["budget"] - extra["survivors"]
    assert post.diagnostics.tokens_out == generated  # every attempt's tokens, pruned ones included
    assert post.diagnostics.particles == extra["budget"] and post.diagnostics.dead == extra["budget"] - 8


def test_all_attempts_failing_is_reported_not_an_error():
    lm = TabularLM.random(["a", "b"], order=2, seed=0)

    @ppl.program
    def impossible(lm):
        ppl.gen(lm, (), max_tokens=1)
        ppl.condition(False, "never")
        return 0

    post = ppl.infer(impossible, [(lm,)], Restarts(3, attempts=2), seed=0)[0]
    assert post.log_evidence == -math.inf and post.diagnostics.extra["survivors"] == 0
    assert post.diagnostics.extra["budget"] == 6 and post.diagnostics.deaths.count("never") == 6


def test_settings_are_validated_in_python_and_tts():
    with pytest.raises(ValueError, match="attempts must be an integer >= 1"):
        Restarts(4, attempts=0)
    with pytest.raises(ValueError, match="threshold must be a number"):
        Restarts(4, threshold=math.inf)
    head = 'version 0.1\nuse lm = model("m")\nprogram f() -> text {\n  return "a"\n}\n'
    checked = check(head + "infer f with restarts(particles = 4, attempts = 3, threshold = -1)\n", "f.tts")
    assert "restarts" in checked.infer.describe()
    with pytest.raises(TtsError, match="attempts"):
        check(head + "infer f with restarts(particles = 4, attempts = 0)\n", "f.tts")


def test_tts_infer_runs_restarts_and_reports_the_budget():
    source = (
        'version 0.1\nuse lm = model("m")\n'
        "program f() -> text {\n"
        '  s ~ lm.gen(lm.encode(""), max_tokens = 1)\n'
        '  if s.text != " a" {\n    score -2\n  }\n'
        "  return s.text\n}\n"
        "infer f with restarts(particles = 8, attempts = 4)\n"
    )
    lm = TabularLM.bigram({"<s>": {" a": 1, " b": 1}, " a": {"<eos>": 1}, " b": {"<eos>": 1}})
    module = load(source, filename="f.tts", models={"lm": lm})
    post = module.infer.algorithm.run(module.infer.program, [{}], seed=0)[0]
    extra = post.diagnostics.extra
    assert (
        8 <= extra["budget"] <= 32
        and extra["max"] == 32
        and extra["pruned"] == extra["budget"] - extra["survivors"]
    )


def test_when_no_check_sees_a_weight_above_the_threshold_survivors_are_exact_draws():
    """Scores that are log-probabilities (<= 0) and threshold 0: every survivor ends at
    weight 1 and is an exact draw from π — the law of slot 0's survivor, given that it
    survived, is π exactly."""
    tiny = Tiny.make(2, 2, 13, 0.5)
    tiny.rewards = {p: -abs(r) for p, r in tiny.rewards.items()}
    law = smc_law(tiny, Restarts(1, attempts=3))
    survived, given = 0.0, {}
    for p, post in law:
        slot = post.particles[0]
        if slot.error is None:
            assert slot.log_weight == 0.0
            survived += p
            given[slot.value] = given.get(slot.value, 0.0) + p
    assert pruning_happens(law) and 0 < survived < 1
    for answer, pi in tiny.posterior().items():
        assert given.get(answer, 0.0) / survived == pytest.approx(pi, abs=TOL)
