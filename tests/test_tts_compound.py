"""The compound constructs in .tts — n-sites, ``for`` loops, programs calling programs, nested
``infer`` — against their Python twins: identical traces for the same seed under importance
sampling and SMC, the same exact posterior under enumeration, and the checker's messages.
"""

from __future__ import annotations

import math

import pytest
from test_tts_traces import assert_identical

import ppl
from ppl.algorithms import SMC, Enumeration, ImportanceSampling, enumerate_program
from ppl.app import load
from ppl.backends.tabular import TabularLM
from ppl.grammar import TtsError

LM = TabularLM.random(["a", "b"], order=2, seed=7)

SOURCE = """version 0.1
use lm = model("compound-test")

program draft(problem: text) -> text {
  let prompt = lm.encode(problem)
  d ~ lm.gen(prompt, max_tokens = 2)
  score 0.3 * len(d.tokens)
  return d.text
}

program several(problem: text) -> text {
  xs ~ lm.gen(lm.encode(problem), max_tokens = 2, n = 3)
  let total = 0
  let joined = ""
  for x in xs {
    total += len(x.tokens)
    joined += x.text
    if x.eos { score 0.5 }
  }
  score -0.2 * total
  return joined
}

program refine(problem: text) -> text {
  let d = draft(problem)
  let ctx = lm.encode(problem + d)
  step (max 2) {
    s ~ lm.gen(ctx, max_tokens = 1)
    ctx += s
    twist 0.4 * len(s.tokens)
    if s.eos { finish }
  }
  return lm.decode(ctx)
}

program pool(problem: text) -> text {
  let drafts = infer draft(problem) with importance(particles = 3)
  let best = drafts.best
  for w in drafts.weights { score 0.0 * w }
  s ~ lm.gen(lm.encode(problem + best), max_tokens = 1)
  score 0.7 * len(s.tokens)
  return best + "|" + drafts.majority + "|" + s.text
}
"""


@ppl.program
def draft(lm, problem):
    d = ppl.gen(lm, lm.encode(problem), max_tokens=2)
    ppl.score(0.3 * len(d.token_ids))
    return d.text


@ppl.program
def several(lm, problem):
    xs = ppl.gen(lm, lm.encode(problem), max_tokens=2, n=3)
    total, joined = 0, ""
    for x in xs:
        total += len(x.token_ids)
        joined += x.text
        if x.eos:
            ppl.score(0.5)
    ppl.score(-0.2 * total)
    return joined


@ppl.program
def refine(lm, problem):
    d = draft(lm, problem)
    ctx = lm.encode(problem + d)
    for _ in ppl.steps(max=2):
        s = ppl.gen(lm, ctx, max_tokens=1)
        ctx += s.token_ids
        ppl.twist(0.4 * len(s.token_ids))
        if s.eos:
            break
    return lm.decode(ctx)


def draft_of(problem):
    return draft.fn(LM, problem)


@ppl.program
def inner_draft(problem):
    return draft_of(problem)


@ppl.program
def pool(lm, problem):
    drafts = ppl.nested(inner_draft, {"problem": problem}, ImportanceSampling(3))
    best = drafts.best()
    for w in drafts.weights:
        ppl.score(0.0 * w)
    s = ppl.gen(lm, lm.encode(problem + best), max_tokens=1)
    ppl.score(0.7 * len(s.token_ids))
    return best + "|" + drafts.majority() + "|" + s.text


TWINS = {"several": several, "refine": refine, "pool": pool}


@pytest.fixture(scope="module")
def module():
    return load(SOURCE, models={"lm": LM})


def normalised(trace):
    """Sites as comparable tuples; a nested site's value is its Answers (equal by value)."""
    return [(s.kind, s.value, s.log_weight) for s in trace]


@pytest.mark.parametrize("name", sorted(TWINS))
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize(
    "algorithm", [ImportanceSampling(5), SMC(4, resample="systematic", ess_threshold=1.0)], ids=repr
)
def test_tts_and_python_twins_give_identical_traces(module, name, seed, algorithm):
    python = algorithm.run(TWINS[name], [(LM, "ab"), (LM, "b")], seed=seed)
    tts = algorithm.run(module.programs[name], [("ab",), ("b",)], seed=seed)
    assert_identical(python, tts)
    kinds = {s.kind for p in tts[0].particles for s in p.trace}
    assert {"gen"} <= kinds and ("infer" in kinds) == (name == "pool")


@pytest.mark.parametrize("name", ["several", "refine"])
def test_exact_enumeration_of_the_twins_agrees(module, name):
    python = enumerate_program(TWINS[name], (LM, "ab"))
    tts = enumerate_program(module.programs[name], ("ab",))
    assert python.log_evidence == pytest.approx(tts.log_evidence, abs=1e-12)
    assert python.distribution() == pytest.approx(tts.distribution(), abs=1e-12)


def test_a_called_program_s_sites_are_in_the_caller_s_trace(module):
    exact_draft = enumerate_program(module.programs["draft"], ("ab",))
    exact_refine = enumerate_program(module.programs["refine"], ("ab",))
    kinds = [s.kind for s in exact_refine.particles[0].trace]
    assert kinds[:2] == ["gen", "score"]  # draft's sites, then refine's own
    # refine's evidence: draft's γ summed out, times refine's own steps (no score of its own)
    assert exact_refine.log_evidence == pytest.approx(exact_draft.log_evidence, abs=1e-12)


def test_nested_infer_in_tts_with_an_exact_inner_interpreter():
    source = SOURCE.replace("importance(particles = 3)", "enumerate()")
    module = load(source, models={"lm": LM})
    post = enumerate_program(module.programs["pool"], ("ab",))
    inner = ppl.Answers.of(enumerate_program(module.programs["draft"], ("ab",)))
    (site,) = [s for s in post.particles[0].trace if s.kind == "infer"]
    assert site.value == inner and site.log_weight == 0.0
    assert {v.split("|")[0] for v in post.distribution()} == {inner.best()}
    assert isinstance(Enumeration().run(module.programs["pool"], [("ab",)])[0].log_evidence, float)


def test_nested_infer_shares_engine_calls_with_the_outer_particles(module):
    results = ImportanceSampling(4).run(module.programs["pool"], [("ab",)] * 3, seed=0)
    assert results.stats.batch_sizes[("tabular", "generate")] == [3 * 4 * 3, 3 * 4]


def test_n_site_in_tts_is_one_request(module):
    results = ImportanceSampling(4).run(module.programs["several"], [("ab",)] * 2, seed=0)
    assert results.stats.batch_sizes[("tabular", "generate")] == [8]
    for p in results[0].particles:
        (gen,) = [s for s in p.trace if s.kind == "gen"]
        assert len(gen.value) == 3 and math.isfinite(p.log_weight)


def messages(source: str) -> list[str]:
    with pytest.raises(TtsError) as caught:
        load(source, models={"lm": LM})
    return [f"{d.position}: {d.message}" for d in caught.value.diagnostics]


HEADER = 'version 0.1\nuse lm = model("compound-test")\n'


@pytest.mark.parametrize(
    "body, expected",
    [
        (
            "program a(p: text) -> text {\n  for x in p { score 1 }\n  return p\n}\n",
            "<input>:4:12: for needs a list to go through, got a text",
        ),
        (
            "program a(p: text) -> text {\n  let d = b(p)\n  return d\n}\n"
            "program b(p: text) -> text {\n  return a(p)\n}\n",
            "<input>:8:10: program 'a' calls itself (a → b → a): programs cannot be recursive",
        ),
        (
            "program a(p: text) -> text {\n  return a(p)\n}\n",
            "<input>:4:10: program 'a' calls itself (a → a): programs cannot be recursive",
        ),
        (
            "program a(p: text) -> text {\n  let q = b(p, 1)\n  return p\n}\n"
            "program b(p: text) -> text {\n  return p\n}\n",
            "<input>:4:16: b takes 1 argument, got 2",
        ),
        (
            "program a(p: text) -> number {\n  return b(p)\n}\nprogram b(p: text) -> text {\n  return p\n}\n",
            "<input>:4:10: the program returns a number, not a text",
        ),
        (
            "program a(p: text) -> text {\n  let r = infer b(p) with importance(particles = 0)\n  return r.best\n}\n"
            "program b(p: text) -> text {\n  return p\n}\n",
            "<input>:4:50: particles must be a whole number >= 1, got 0",
        ),
        (
            "program a(p: text) -> text {\n  let r = infer c(p) with importance(particles = 2)\n  return p\n}\n",
            "<input>:4:17: unknown program 'c'; the programs are a",
        ),
        (
            "program a(p: text) -> text {\n  let r = infer b(p) with importance(particles = 2)\n  return r.top\n}\n"
            "program b(p: text) -> text {\n  return p\n}\n",
            "<input>:5:12: an answers[text] has no field 'top'; its fields are best, majority, vote, "
            "values, weights, log_evidence",
        ),
        (
            "program a(p: text) -> text {\n  xs ~ lm.gen(lm.encode(p), n = 0)\n  return p\n}\n",
            "<input>:4:33: n (samples from one request) needs a whole number >= 1, got 0",
        ),
        (
            "program a(p: text) -> text {\n  xs ~ lm.gen(lm.encode(p), n = 2)\n  return xs.text\n}\n",
            "<input>:5:13: a list[segment] has no field 'text'",
        ),
    ],
)
def test_checker_messages(body, expected):
    assert expected in messages(HEADER + body)
