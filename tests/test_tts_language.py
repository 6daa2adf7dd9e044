"""What the constructs and built-ins of .tts mean, the model registry, and the LM judge."""

from __future__ import annotations

import math

import pytest

import ppl
from ppl.algorithms import enumerate_program
from ppl.app import check, load
from ppl.app.models import BackendError, character_lm, demo_lm, load_model, stable_seed
from ppl.backends.judge import Judge
from ppl.grammar.syntax import parser
from ppl.interfaces import RewardRequest


def run(body: str, returns: str = "text", params: str = "", args=(), seed: int = 0):
    source = f'version 0.1\nuse lm = model("m")\nprogram f({params}) -> {returns} {{\n{body}\n}}\n'
    program = load(source, filename="t.tts").programs["f"]
    with ppl.seed(rng_seed=seed), ppl.trace() as trace:
        value = program(*args)
    return value, trace


def test_the_grammar_builds_in_strict_mode():
    assert parser().options.strict is True  # LALR(1) without conflicts or regex collisions


@pytest.mark.parametrize(
    "expression, returns, value",
    [
        ('"ab" + "c"', "text", "abc"),
        ("len([1, 2, 3]) * 2 - 1 / 2", "number", 5.5),
        ('["a", "b"][-1]', "text", "b"),
        ('contains("the \\\\boxed{42}", "\\\\boxed")', "bool", True),
        ('boxed("so \\\\boxed{4{2}} and \\\\boxed{7}")', "text", "7"),
        ('boxed("\\\\boxed{4{2}}")', "text", "4{2}"),
        ("text(1.5) + text(true)", "text", "1.5true"),
        ("not (1 < 2) or 2 >= 2 and 1 != 1", "bool", False),
        ("log(0) < exp(0)", "bool", True),
        ('lm.decode(lm.encode("héllo"))', "text", "h?llo"),
    ],
)
def test_expressions(expression, returns, value):
    assert run(f"  return {expression}", returns)[0] == value


def test_tokens_grow_by_segments_and_lists_by_items():
    body = (
        '  let ctx = lm.encode("Q:")\n  let parts: list[segment] = []\n'
        "  step (max 3) {\n    s ~ lm.gen(ctx + parts, max_tokens = 2)\n    parts += [s]\n  }\n"
        '  return lm.decode(ctx + parts) == "Q:" + text(parts) and len(parts) == 3'
    )
    value, trace = run(body, "bool")
    assert value is True
    gens = [s for s in trace.sites if s.kind == "gen"]
    assert [len(s.args["request"].prompt) for s in gens] == [2, 4, 6]


def test_finish_leaves_the_step_and_if_else_chains():
    body = (
        "  let n = 0\n  step (max 10) {\n    n += 1\n"
        "    if n == 2 { n += 10 } else if n == 13 { finish } else { n += 0 }\n  }\n  return n"
    )
    assert run(body, "number")[0] == 13


def test_sites_are_the_primitives_in_source_order():
    body = (
        "  coin ~ bernoulli(0.5)\n  x ~ normal(0, 1)\n  score 1.5\n  twist -0.5\n"
        '  condition true, "never"\n  observe x ~ normal(0, 2)\n  return coin'
    )
    value, trace = run(body, "bool")
    assert isinstance(value, bool)
    assert [s.kind for s in trace.sites] == ["sample", "sample", "score", "twist", "condition", "observe"]
    x = float(trace.sites[1].value)
    assert trace.log_weight == pytest.approx(1.5 - x * x / 8 - math.log(2 * math.sqrt(2 * math.pi)))


def test_inputs_are_checked_against_their_types():
    program = load(
        "version 0.1\nprogram f(n: number, xs: list[text]) -> number {\n  return n + len(xs)\n}\n"
    ).programs["f"]
    assert program(2, ["a", "b"]) == 4
    assert str(program.signature) == "(n, xs)"
    with pytest.raises(ppl.PPLError, match="the input 'xs' of 'f' must be a list\\[text\\], got \\[1\\]"):
        program(1, [1])


def test_enumeration_of_a_tts_program():
    source = (
        'version 0.1\nuse lm = model("reward-tilted-demo")\nprogram f() -> text {\n'
        '  w ~ select(lm, lm.encode(" the"), [" cat", " dog"])\n  score 1\n  return w\n}\n'
        "infer f with enumerate()\n"
    )
    module = load(source)
    posterior = module.infer.run([()])[0]
    assert posterior.distribution() == pytest.approx({" dog": 0.75, " cat": 0.25})
    assert posterior.log_evidence == pytest.approx(1.0)
    assert enumerate_program(module.programs["f"]).log_evidence == pytest.approx(1.0)


def test_check_loads_no_model_and_knows_signatures():
    checked = check("version 0.1\nuse lm = model()\nprogram f(q: text) -> text {\n  return q\n}\n")
    assert checked.uses["lm"].settings == {"name": None, "backend": None}
    assert [(n, str(t)) for n, t in checked.signatures["f"]] == [("q", "text")]


# ---- models -------------------------------------------------------------------------------------


def test_model_registry():
    lm = load_model("smollm2-135m-instruct")
    assert lm.name == "smollm2-135m-instruct" and len(lm.vocab) == 96
    assert lm.decode(lm.encode("Hi\n~ é")) == "Hi\n~ ?"
    assert stable_seed("abc") == 3128432319  # sha256, not the salted hash()
    again = character_lm("smollm2-135m-instruct")
    assert (lm.next_logprobs(lm.encode("a")) == again.next_logprobs(again.encode("a"))).all()
    assert demo_lm("reward-tilted-demo").vocab == load_model("reward-tilted-demo").vocab
    with pytest.raises(BackendError, match="unknown backend 'tpu'; the backends are openai, tabular, vllm"):
        load_model("m", "tpu")
    with pytest.raises(BackendError, match="the openai backend needs the servers' URLs"):
        load_model("smollm2-135m-instruct", "openai")
    with pytest.raises(BackendError, match="the tabular backend takes no options, got servers"):
        load_model("m", "tabular", servers=["http://127.0.0.1:1"])


def test_judge_is_batched_and_memoised():
    lm = character_lm("judge")
    judge = Judge(lm, "Correct?")
    requests = [RewardRequest(("p", "a")), RewardRequest(("p", "b")), RewardRequest(("p", "a"))]
    first = judge.reward(requests)
    assert first[0] == first[2] and lm.usage.calls == 1 and lm.usage.requests == 4
    prompt = judge.prompt("p", "a")
    expected = (
        lm.logprob([ppl.ScoreRequest(prompt, lm.encode("Yes"))])[0]
        - lm.logprob([ppl.ScoreRequest(prompt, lm.encode("No"))])[0]
    )
    assert first[0] == pytest.approx(expected)
    calls = lm.usage.calls
    assert judge.reward(requests) == first and lm.usage.calls == calls  # memoised: no new LM call


def test_prob_is_the_sigmoid_of_logit():
    body = '  let a = prm.logit("p", "x")\n  let b = prm.prob("p", "x")\n  return text(1 / (1 + exp(-a)) - b)'
    source = (
        'version 0.1\nuse lm = model("m")\nuse prm = judge(lm, question = "ok?")\n'
        f"program f() -> text {{\n{body}\n}}\n"
    )
    program = load(source).programs["f"]
    with ppl.seed(rng_seed=0):
        assert abs(float(program())) < 1e-12


def test_the_readme_program_checks():
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    fence = "`" * 3
    block = readme.split("## The .tts language")[1].split(fence)[1]
    assert check(block, "README.md").infer.describe().startswith("infer solve with smc(particles = 16")
