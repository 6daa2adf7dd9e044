"""Constrained generation (regex, grammar, JSON schema, choice) and sampling settings as
targets, on tabular LMs where everything is exact (docs/design.md, "Constrained generation").

The target of a constrained site is p(x | context) · 1[x.text ∈ L]. The references here are
computed without masks: every unconstrained segment from the LM's own support, filtered by
Python's ``re.fullmatch`` (or the choice list, or ``json.loads``), so a mask that let too
much or too little through, or a weight without the allowed-mass correction, shows as
E[Ẑ] ≠ Z (tolerance 1e-9: these are equalities in float64).
"""

from __future__ import annotations

import dataclasses
import json
import math
import re

import numpy as np
import pytest

import ppl
from ppl.algorithms import SMC, BeamSearch, ImportanceSampling, enumerate_program
from ppl.backends.tabular import TabularLM
from ppl.constraints import Constraint, truncate
from ppl.interfaces import GenRequest, ScoreRequest
from ppl.randomness import FixedSource, exact_law

TOL = 1e-9
PATTERN = "(ab|b)+"


def lm_for(seed: int, vocab=("a", "b", "ab")) -> TabularLM:
    return TabularLM.random(list(vocab), order=2, seed=seed)


LENGTHS = (1, 2)  # max_tokens of the two steps: small enough to enumerate SMC's whole law


def two_steps(pattern: str, *, twist: bool = False, **sampling):
    """Two constrained segments, one per step, each scored by its length; optionally twisted."""

    @ppl.program
    def program(lm):
        ctx = ()
        for step in ppl.steps(max=2):
            s = ppl.gen(lm, ctx, max_tokens=LENGTHS[step], regex=pattern, **sampling)
            ctx += s.token_ids
            if twist:
                ppl.twist(0.3 * len(s.text) - step)
        ppl.score(0.25 * len(lm.decode(ctx)))
        return lm.decode(ctx)

    return program


def brute_force_log_z(lm: TabularLM, pattern: str, **sampling) -> float:
    """log Z of ``two_steps`` from unconstrained supports filtered by ``re.fullmatch``."""

    def segments(ctx, max_tokens):
        request = GenRequest(ctx, max_tokens, **sampling)
        return [s for s in lm.support(request) if re.fullmatch(pattern, s.text)]

    terms = []
    for first in segments((), LENGTHS[0]):
        for second in segments(first.token_ids, LENGTHS[1]):
            text = first.text + second.text
            terms.append(first.logprob + second.logprob + 0.25 * len(text))
    return float(np.logaddexp.reduce(terms)) if terms else -math.inf


def law_of(program, lm, algorithm, *others):
    """The exact law of ``algorithm``'s Posterior: every LM draw and resampling draw enumerated
    (the models, ``lm`` and ``others``, all draw through the one exhaustive source)."""

    def run(rng):
        models = tuple(m.with_randomness(rng) for m in (lm, *others))
        return algorithm.run(program, [models], randomness=FixedSource(rng))[0]

    return exact_law(run)


def expected_evidence(law) -> float:
    return sum(p * math.exp(post.log_evidence) for p, post in law)


ALGORITHMS = [
    ImportanceSampling(2),
    SMC(2, resample="multinomial", ess_threshold=1.0),
    SMC(2, resample="systematic", ess_threshold=0.5),
]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_enumeration_is_the_lm_conditioned_on_the_regex(seed):
    lm = lm_for(seed)
    post = enumerate_program(two_steps(PATTERN), (lm,))
    assert post.log_evidence == pytest.approx(brute_force_log_z(lm, PATTERN), abs=TOL)
    assert all(re.fullmatch(f"({PATTERN}){{2}}", text) for text in post.distribution())


@pytest.mark.parametrize("algorithm", ALGORITHMS, ids=repr)
@pytest.mark.parametrize("twist", [False, True])
def test_is_and_smc_with_a_regex_are_unbiased(algorithm, twist):
    """E[Ẑ] = Z exactly over the interpreter's whole law (LM tokens and resampling draws)."""
    lm = lm_for(3)
    law = law_of(two_steps(PATTERN, twist=twist), lm, algorithm)
    assert sum(p for p, _ in law) == pytest.approx(1.0, abs=TOL)
    z = math.exp(brute_force_log_z(lm, PATTERN))
    assert expected_evidence(law) == pytest.approx(z, rel=TOL, abs=TOL)


@pytest.mark.parametrize("algorithm", ALGORITHMS[:2], ids=repr)
def test_mutant_masking_without_the_correction_fails(algorithm, monkeypatch):
    """Masking alone (the locally renormalised distribution, weight 1) is another target."""
    lm = lm_for(3)
    z = math.exp(brute_force_log_z(lm, PATTERN))
    correct = expected_evidence(law_of(two_steps(PATTERN), lm, algorithm))
    assert correct == pytest.approx(z, rel=TOL)
    original = TabularLM._segment

    def no_correction(self, tokens, finish, logprobs, masses, request):
        segment = original(self, tokens, finish, logprobs, masses, request)
        if segment.allowed_logmass is None or segment.allowed_logmass == -math.inf:
            return segment
        return dataclasses.replace(segment, allowed_logmass=0.0)

    monkeypatch.setattr(TabularLM, "_segment", no_correction)
    mutant = expected_evidence(law_of(two_steps(PATTERN), lm, algorithm))
    assert abs(mutant / z - 1) > 1e-3


class Unreported:
    """The tabular LM behind an engine that masks but cannot report the allowed mass (as
    vLLM): its segments carry ``allowed_logmass=None``, so ``gen`` weights them by scoring."""

    def __init__(self, lm: TabularLM):
        self.lm, self.name, self.eos_token_id, self.usage = lm, lm.name, lm.eos_token_id, lm.usage
        self.scored = 0

    def check_request(self, request):
        return None

    def encode(self, text):
        return self.lm.encode(text)

    def decode(self, ids):
        return self.lm.decode(ids)

    def generate(self, requests):
        return [
            [dataclasses.replace(s, allowed_logmass=None) for s in segments]
            for segments in self.lm.generate(requests)
        ]

    def support(self, request):
        return [dataclasses.replace(s, allowed_logmass=None) for s in self.lm.support(request)]

    def logprob(self, requests):
        self.scored += len(requests)
        return self.lm.logprob(requests)

    def with_randomness(self, rng):
        return Unreported(self.lm.with_randomness(rng))


def test_the_scoring_correction_is_exact_too():
    """The path vLLM takes — weight = log p(x) (a scoring call) − log q_masked(x) — gives
    the same exact law as the reported allowed mass."""
    lm = lm_for(4)
    z = math.exp(brute_force_log_z(lm, PATTERN))
    law = law_of(two_steps(PATTERN), Unreported(lm), SMC(2, resample="multinomial", ess_threshold=1.0))
    assert expected_evidence(law) == pytest.approx(z, rel=TOL)
    post = enumerate_program(two_steps(PATTERN), (Unreported(lm),))
    assert post.log_evidence == pytest.approx(math.log(z), abs=TOL)


def test_a_constraint_composes_with_a_proposal():
    """Masked proposal q, target p · 1[L]: the weight is p(x) − q_masked(x)."""
    lm, q = lm_for(5), lm_for(6)

    @ppl.program
    def program(lm, q):
        s = ppl.gen(lm, (), max_tokens=3, regex=PATTERN, proposal=q)
        ppl.score(0.1 * len(s.text))
        return s.text

    exact = sum(
        math.exp(s.logprob + 0.1 * len(s.text))
        for s in lm.support(GenRequest((), 3))
        if re.fullmatch(PATTERN, s.text)
    )
    law = law_of(program, lm, ImportanceSampling(2), q)
    assert expected_evidence(law) == pytest.approx(exact, rel=TOL)


@pytest.mark.parametrize(
    "kind, value, member",
    [
        ("grammar", 'start: "a" rest\nrest: "b" | "b" rest', lambda t: re.fullmatch("ab+", t)),
        ("grammar", 'root ::= "b" | "a" root', lambda t: re.fullmatch("a*b", t)),
        ("choice", ["ab", "bab", "b"], lambda t: t in ("ab", "bab", "b")),
        # xgrammar's JSON integers leave out "-0" (RFC 8259 would allow it)
        ("json_schema", {"type": "integer"}, lambda t: re.fullmatch("0|-?[1-9][0-9]*", t)),
    ],
)
def test_every_kind_of_constraint_targets_its_language(kind, value, member):
    vocab = ("1", "2", "0", "-") if kind == "json_schema" else ("a", "b", "ab")
    lm = lm_for(7, vocab)

    @ppl.program
    def program(lm):
        return ppl.gen(lm, (), max_tokens=3, **{kind: value}).text

    post = enumerate_program(program, (lm,))
    exact = [s for s in lm.support(GenRequest((), 3)) if member(s.text)]
    assert post.log_evidence == pytest.approx(float(np.logaddexp.reduce([s.logprob for s in exact])), abs=TOL)
    assert set(post.distribution()) == {s.text for s in exact}


def test_a_prefix_that_admits_nothing_kills_the_particle_with_a_reason():
    lm = lm_for(0)  # no digits in the vocabulary

    @ppl.program
    def program(lm):
        return ppl.gen(lm, (), max_tokens=3, regex="[0-9]+").text

    post = SMC(4).run(program, [(lm,)], seed=0)[0]
    assert post.log_evidence == -math.inf
    assert all("admits no next token after ''" in reason for reason in post.diagnostics.deaths)
    assert len(post.diagnostics.deaths) == 4


def test_constraints_compose_with_twist_score_and_condition():
    lm = lm_for(8)

    @ppl.program
    def program(lm):
        s = ppl.gen(lm, (), max_tokens=3, choice=["ab", "b", "bab"])
        ppl.twist(len(s.text))
        ppl.condition(s.text != "b")
        ppl.score(-len(s.text))
        return s.text

    exact = sum(  # "bab" has several tokenisations: each is a segment of its own
        math.exp(s.logprob - len(s.text)) for s in lm.support(GenRequest((), 3)) if s.text in ("ab", "bab")
    )
    post = enumerate_program(program, (lm,))
    assert post.log_evidence == pytest.approx(math.log(exact), abs=TOL)
    law = law_of(program, lm, SMC(2, resample="multinomial", ess_threshold=1.0))
    assert expected_evidence(law) == pytest.approx(exact, rel=TOL)


def test_beam_search_with_a_grammar_keeps_to_it():
    lm = lm_for(9)
    grammar = 'start: "a" rest\nrest: "b" | "b" rest'

    @ppl.program
    def program(lm):
        ctx = ()
        for _ in ppl.steps(max=3):
            s = ppl.gen(lm, ctx, max_tokens=4, grammar=grammar)
            ctx += s.token_ids
            ppl.score(len(s.text))
        return lm.decode(ctx)

    post = BeamSearch(beams=2, expand=3).run(program, [(lm,)], seed=0)[0]
    assert post.particles and all(re.fullmatch("(ab+){3}", p.value) for p in post.particles if p.value)
    assert re.fullmatch("(ab+){3}", post.best())


def test_malformed_constraints_are_refused_with_the_cause():
    with pytest.raises(ValueError, match="bad regex.*position"):
        Constraint.of(regex="[(")
    with pytest.raises(ValueError, match="bad grammar"):
        Constraint.of(grammar='start: "a" | (')
    with pytest.raises(ValueError, match="bad json schema"):
        Constraint.of(json_schema={"type": "objectx"})
    with pytest.raises(ValueError, match="not valid JSON"):
        Constraint.of(json_schema="{")
    with pytest.raises(ValueError, match="one constraint at a time"):
        Constraint.of(regex="a", choice=["a"])
    with pytest.raises(ValueError, match="no empty option"):
        Constraint.of(choice=["a", ""])
    assert Constraint.of() is None
    assert Constraint.of(json_schema='{"type": "integer"}') == Constraint.of(json_schema={"type": "integer"})


def test_accepts_is_membership_not_prefix():
    c = Constraint.of(regex=PATTERN)
    assert c.accepts("abb") and c.accepts("b") and not c.accepts("a") and not c.accepts("")
    assert Constraint.of(regex="a*").accepts("")


# --- sampling settings as targets ---------------------------------------------------------


def test_truncation_follows_vllms_order():
    p = np.log(np.array([0.5, 0.25, 0.15, 0.1]))
    assert np.allclose(np.exp(truncate(p, top_k=2)), [2 / 3, 1 / 3, 0, 0])
    assert np.allclose(np.exp(truncate(p, top_p=0.7)), [2 / 3, 1 / 3, 0, 0])
    assert np.allclose(np.exp(truncate(p, top_p=0.8)), [0.5 / 0.9, 0.25 / 0.9, 0.15 / 0.9, 0])
    assert np.allclose(np.exp(truncate(p, min_p=0.4)), [2 / 3, 1 / 3, 0, 0])
    # top-p applies to the renormalised top-k: of (0.5, 0.25, 0.15)/0.9, 0.75 keeps two
    assert np.allclose(np.exp(truncate(p, top_k=3, top_p=0.75)), [2 / 3, 1 / 3, 0, 0])
    assert np.allclose(np.exp(truncate(p, top_p=1e-9)), [1, 0, 0, 0])


@pytest.mark.parametrize(
    "sampling", [{"top_k": 2}, {"top_p": 0.6}, {"min_p": 0.3}, {"top_k": 3, "top_p": 0.8}]
)
def test_sampling_settings_are_the_target(sampling):
    """gen's law with top-k/top-p/min-p is the truncated LM, token by token, and IS/SMC are
    unbiased for it — with a constraint on top, where the mask applies to the truncated LM."""
    lm = lm_for(10)

    @ppl.program
    def program(lm):
        return ppl.gen(lm, (), max_tokens=2, **sampling).text

    post = enumerate_program(program, (lm,))
    law = post.distribution()
    for text, probability in law.items():
        ids, ctx, expected = lm.encode(text), (), 0.0
        for t in ids:  # the tokens of the text as the LM wrote them (one tokenisation here)
            expected += truncate(lm.next_logprobs(ctx), **sampling)[t]
            ctx += (t,)
        if len(ids) < 2:
            expected += truncate(lm.next_logprobs(ctx), **sampling)[lm.eos_token_id]
        assert probability == pytest.approx(math.exp(expected), abs=1e-12) or len(ids) != len(text)
    log_z = brute_force_log_z(lm, PATTERN, **sampling)
    law = law_of(two_steps(PATTERN, **sampling), lm, SMC(2, resample="multinomial", ess_threshold=1.0))
    assert expected_evidence(law) == pytest.approx(math.exp(log_z), rel=TOL)


def test_truncated_targets_score_consistently():
    """A proposal's weight against a truncated target scores under the truncation."""
    lm, q = lm_for(11), lm_for(12)
    request = ScoreRequest((), (0, 1), True, top_k=2)
    by_hand = truncate(lm.next_logprobs(()), top_k=2)[0] + truncate(lm.next_logprobs((0,)), top_k=2)[1]
    by_hand += truncate(lm.next_logprobs((0, 1)), top_k=2)[lm.eos_token_id]
    assert lm.logprob([request])[0] == pytest.approx(by_hand, abs=1e-12)

    @ppl.program
    def program(lm, q):
        return ppl.gen(lm, (), max_tokens=2, top_k=2, proposal=q).text

    law = law_of(program, lm, ImportanceSampling(1), q)
    assert expected_evidence(law) == pytest.approx(1.0, rel=TOL)


def test_bad_sampling_settings_are_refused():
    lm = lm_for(0)
    for bad, match in [({"top_p": 0.0}, "top_p"), ({"top_k": -1}, "top_k"), ({"min_p": 1.5}, "min_p")]:
        with pytest.raises(ValueError, match=match), ppl.seed(rng_seed=0):
            ppl.gen(lm, (), max_tokens=1, **bad)


def test_json_constraint_outputs_parse():
    lm = lm_for(13, ("1", "2", "[", "]", ",", " "))
    schema = {"type": "array", "items": {"type": "integer"}, "maxItems": 2}

    @ppl.program
    def program(lm):
        return ppl.gen(lm, (), max_tokens=6, json_schema=schema).text

    post = SMC(16).run(program, [(lm,)], seed=1)[0]
    for particle in post.particles:
        if particle.status == "finished":
            value = json.loads(particle.value)
            assert isinstance(value, list) and len(value) <= 2 and all(isinstance(v, int) for v in value)


class Plain:
    """A language model with neither structured outputs nor truncation (no ``check_request``)."""

    name, eos_token_id = "plain", 3

    def __init__(self, lm):
        self.lm, self.usage = lm, lm.usage

    def generate(self, requests):  # pragma: no cover - never reached: the site refuses first
        raise AssertionError("a request this model cannot sample was sent to it")


def test_a_backend_without_structured_outputs_is_refused_with_the_reason():
    lm = lm_for(0)
    plain = Plain(lm)

    @ppl.program
    def constrained(lm):
        return ppl.gen(lm, (), max_tokens=2, regex="a+").text

    @ppl.program
    def truncated(lm):
        return ppl.gen(lm, (), max_tokens=2, top_p=0.5).text

    post = SMC(2).run(constrained, [(plain,)], seed=0)[0]
    assert post.all_dead and all("plain has no structured outputs" in r for r in post.diagnostics.deaths)
    post = SMC(2).run(truncated, [(plain,)], seed=0)[0]
    assert post.all_dead and all("top_k / top_p / min_p" in r for r in post.diagnostics.deaths)


@pytest.mark.parametrize("proposal", ["suffix", "independent"])
def test_mh_with_a_constraint_leaves_the_conditioned_lm_invariant(proposal):
    """MH's ratio is the sites' weights, and a constrained site's includes the allowed mass:
    its exact one-step kernel leaves p · 1[L] / Z invariant (π from the unconstrained LM)."""
    from test_mcmc import kernel, stationarity_error

    lm = lm_for(14)

    @ppl.program
    def program(lm):
        ctx = ()
        for step in ppl.steps(max=2):
            s = ppl.gen(lm, ctx, max_tokens=LENGTHS[step], regex=PATTERN)
            ctx += s.token_ids
        return ctx

    states, pi, matrix = kernel(program, lm, proposal=proposal)
    brute = {}  # p(first) p(second | first) over matching segments, from unconstrained supports
    for first in lm.support(GenRequest((), LENGTHS[0])):
        if re.fullmatch(PATTERN, first.text):
            for second in lm.support(GenRequest(first.token_ids, LENGTHS[1])):
                if re.fullmatch(PATTERN, second.text):
                    brute[first.token_ids + second.token_ids] = first.logprob + second.logprob
    log_z = np.logaddexp.reduce(list(brute.values()))
    assert sorted(v for v, _, _ in states) == sorted(brute)
    assert np.allclose(pi, [math.exp(brute[v] - log_z) for v, _, _ in states], atol=1e-10)
    assert np.allclose(matrix.sum(axis=1), 1.0, atol=1e-10)
    assert stationarity_error(pi, matrix) < 1e-10
