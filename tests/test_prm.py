"""Process rewards: each aggregation gives the target its docstring states (exact, by
enumeration against a brute-force listing), batching and per-prefix memoisation, bad input,
and PRMs in .tts files. The vLLM pooling adapter is tested on the engine in
tests/engine/test_prm_engine.py."""

from __future__ import annotations

import itertools
import json
import math

import pytest

import ppl
from ppl.algorithms import SMC, enumerate_program
from ppl.app import check, load
from ppl.app.models import BackendError, character_lm, load_prm
from ppl.backends.judge import Judge
from ppl.backends.prm import (
    AGGREGATIONS,
    FunctionSteps,
    JudgeSteps,
    ProcessReward,
    aggregate,
    log_sigmoid,
)
from ppl.backends.tabular import TabularLM
from ppl.grammar import TtsError
from ppl.interfaces import RewardRequest


def verdict(problem, steps) -> float:
    """A step checker whose verdict depends on the whole prefix: shorter last steps, and
    steps that repeat the one before, are judged less likely right."""
    last = steps[-1]
    r = 0.9 if len(last) > 1 else 0.4
    if len(steps) > 1 and steps[-2] == last:
        r *= 0.5
    return r


def reward_of(prm, problem, steps) -> float:
    return prm.reward([RewardRequest((problem, list(steps)))])[0]


# ---- the aggregations ------------------------------------------------------------------------------


def test_aggregations_on_hand_computed_cases():
    logs = [math.log(0.5), math.log(0.25), math.log(0.8)]
    assert aggregate(logs, "prod") == pytest.approx(math.log(0.5 * 0.25 * 0.8), abs=1e-12)
    assert aggregate(logs, "min") == pytest.approx(math.log(0.25), abs=1e-12)
    assert aggregate(logs, "last") == pytest.approx(math.log(0.8), abs=1e-12)
    for how in AGGREGATIONS:
        assert aggregate([], how) == 0.0
    with pytest.raises(ValueError, match="unknown aggregation 'mean'; the aggregations are prod, min"):
        aggregate(logs, "mean")
    assert log_sigmoid(0.0) == pytest.approx(math.log(0.5))
    assert log_sigmoid(-800.0) == pytest.approx(-800.0) and log_sigmoid(800.0) == 0.0


@pytest.mark.parametrize("how", AGGREGATIONS)
def test_each_aggregation_values_the_steps_as_documented(how):
    prm = ProcessReward(FunctionSteps(verdict), how)
    steps = ("ab", "c", "c")
    r = [verdict("p", steps[:t]) for t in (1, 2, 3)]
    expected = {
        "prod": math.log(r[0] * r[1] * r[2]),
        "min": math.log(min(r)),
        "last": math.log(r[2]),
        "whole": math.log(verdict("p", ("ab\n\nc\n\nc",))),
    }[how]
    assert reward_of(prm, "p", steps) == pytest.approx(expected, abs=1e-12)
    assert reward_of(prm, "p", ()) == 0.0


@pytest.mark.parametrize("how", AGGREGATIONS)
def test_twist_every_step_and_score_at_the_end_targets_p_times_the_aggregate(how):
    """The target each aggregation documents, by exact enumeration of the real program,
    against the LM's table times the aggregate listed by hand."""
    lm = TabularLM.random(["a", "b"], order=3, seed=11)
    prm = ProcessReward(FunctionSteps(verdict), how)

    @ppl.program
    def stepwise(lm):
        ctx, steps = (), []
        for _ in ppl.steps(max=3):
            s = ppl.gen(lm, ctx, max_tokens=2, stop=("b",))
            ctx += s.token_ids
            steps.append(s)
            ppl.twist(ppl.reward(prm, "p", steps))
            if s.eos:
                break
        ppl.score(ppl.reward(prm, "p", steps))
        return tuple(s.text for s in steps)

    law = enumerate_program(stepwise, (lm,)).distribution()
    assert law, "the enumeration found no sequence"
    # Brute force: p(steps) from the LM's own table, times the aggregate by hand.
    gamma = {}
    for steps, logp in _step_sequences(lm):
        if how == "whole":
            logr = math.log(verdict("p", ("\n\n".join(s.strip() for s in steps),)))
        else:
            logr = aggregate([math.log(verdict("p", steps[:t])) for t in range(1, len(steps) + 1)], how)
        assert steps not in gamma
        gamma[steps] = logp + logr
    z = math.log(sum(math.exp(g) for g in gamma.values()))
    assert set(law) == set(gamma)
    for steps, g in gamma.items():
        assert law[steps] == pytest.approx(math.exp(g - z), abs=1e-9), steps


def _step_sequences(lm):
    """Every run of the stepwise program as (step texts, log p): up to 3 steps of up to 2
    tokens, a step ending at "b", at the length limit, or at end of sequence (eos ends all)."""
    eos = lm.eos_token_id
    a, b = lm.vocab.index("a"), lm.vocab.index("b")

    def steps_from(ctx, steps, logp, left):
        # one step: up to 2 tokens, stopping after "b" or at eos
        for first in (a, b, eos):
            p1 = logp + lm.next_logprobs(ctx)[first]
            if first == eos:
                yield from finish(ctx, steps + ("",), p1, ended=True, left=left)
                continue
            if first == b:
                yield from finish(ctx + (b,), steps + ("b",), p1, ended=False, left=left)
                continue
            for second in (a, b, eos):
                p2 = p1 + lm.next_logprobs(ctx + (a,))[second]
                if second == eos:
                    yield from finish(ctx + (a,), steps + ("a",), p2, ended=True, left=left)
                else:
                    text = "a" + lm.vocab[second]
                    yield from finish(ctx + (a, second), steps + (text,), p2, ended=False, left=left)

    def finish(ctx, steps, logp, ended, left):
        if ended or left == 1:
            yield steps, logp
        else:
            yield from steps_from(ctx, steps, logp, left - 1)

    yield from steps_from((), (), 0.0, 3)


# ---- batching and memoisation ---------------------------------------------------------------------


def test_one_scorer_call_per_batch_and_each_prefix_scored_once():
    checker = FunctionSteps(verdict)
    prm = ProcessReward(checker, "prod")
    batch = [
        RewardRequest(("p", ["ab", "c"])),
        RewardRequest(("p", ["ab"])),  # a prefix of the first: not asked again
        RewardRequest(("p", ["ab", "c"])),  # a repeat
        RewardRequest(("q", ["ab"])),  # another problem: its own verdicts
    ]
    values = prm.reward(batch)
    assert values[0] == values[2]
    assert checker.usage.calls == 1 and checker.usage.requests == 3  # p:ab, p:ab|c, q:ab
    prm.reward([RewardRequest(("p", ["ab"])), RewardRequest(("p", ["ab", "c"]))])
    assert checker.usage.calls == 1, "a memoised prefix cost another scorer call"
    prm.reward([RewardRequest(("p", ["ab", "c", "dd"]))])
    assert checker.usage.calls == 2 and checker.usage.requests == 3 + 3
    assert prm.usage.calls == 3 and prm.usage.batch_sizes == [4, 2, 1]


@pytest.mark.parametrize("how", ["last", "whole"])
def test_last_and_whole_ask_only_for_the_final_verdict(how):
    checker = FunctionSteps(verdict)
    prm = ProcessReward(checker, how)
    prm.reward([RewardRequest(("p", ["ab", "c", "dd"]))])
    assert checker.usage.requests == 1


def test_segments_texts_and_one_step_are_all_steps():
    prm = ProcessReward(FunctionSteps(verdict), "prod")
    segment = ppl.Segment((1,), "ab", "stop", 0.0)
    assert reward_of(prm, "p", [segment]) == reward_of(prm, "p", ["ab"])
    assert prm.reward([RewardRequest(("p", "ab"))]) == prm.reward([RewardRequest(("p", segment))])


def test_judge_steps_reads_the_judges_odds_on_every_prefix():
    judge = Judge(character_lm("prm-judge"), "Is this step right?")
    prm = ProcessReward(JudgeSteps(Judge(character_lm("prm-judge"), "Is this step right?")), "prod")
    logits = judge.reward([RewardRequest(("2+2?", "2+2")), RewardRequest(("2+2?", "2+2\n\n=4"))])
    value = reward_of(prm, "2+2?", ["2+2", "=4"])
    assert value == pytest.approx(sum(log_sigmoid(x) for x in logits), abs=1e-12)
    assert prm.scorer.judge.lm.usage.calls == 1  # both prefixes in one batched logprob call


# ---- bad input and bad scorers -----------------------------------------------------------------------


def test_bad_requests_and_bad_verdicts_are_named():
    prm = ProcessReward(FunctionSteps(verdict), "prod")
    with pytest.raises(ValueError, match=r"needs \(problem, steps\), got 3 arguments"):
        prm.reward([RewardRequest(("p", ["a"], "extra"))])
    with pytest.raises(TypeError, match="steps a list of texts or segments, got int"):
        prm.reward([RewardRequest(("p", 3))])
    with pytest.raises(ValueError, match="unknown aggregation 'avg'"):
        ProcessReward(FunctionSteps(verdict), "avg")
    with pytest.raises(ValueError, match="gave 1.5 for step 1 of 'p': not a probability"):
        ProcessReward(FunctionSteps(lambda p, s: 1.5, name="bad"), "prod").reward(
            [RewardRequest(("p", ["a"]))]
        )
    with pytest.raises(TypeError, match="needs a callable"):
        FunctionSteps("not a function")


def test_a_verdict_of_zero_kills_the_particle_with_a_reason():
    prm = ProcessReward(FunctionSteps(lambda p, steps: 0.0 if "x" in steps[-1] else 1.0), "prod")
    lm = TabularLM.bigram({"<s>": {"x": 1, "y": 1}, "x": {"<eos>": 1}, "y": {"<eos>": 1}})

    @ppl.program
    def one_step(lm):
        s = ppl.gen(lm, (), max_tokens=2)
        ppl.score(ppl.reward(prm, "p", [s]))
        return s.text

    post = SMC(particles=16).run(one_step, [(lm,)], seed=3)[0]
    assert set(post.distribution()) == {"y"}
    assert post.diagnostics.dead > 0 and all("score" in r or "-inf" in r for r in post.diagnostics.deaths)


# ---- PRMs in .tts files -------------------------------------------------------------------------------

HEAD = 'version 0.1\nuse lm = model("m")\n'
BODY = """
program solve(problem: text) -> text {
  let steps: list[segment] = []
  step (max 2) {
    s ~ lm.gen(lm.chat(user = problem) + steps, stop = ["\\n"], max_tokens = 4)
    steps += [s]
    twist prm.log_reward(problem, steps)
  }
  score prm.log_reward(problem, steps)
  return text(steps)
}
infer solve with smc(particles = 4)
"""


def test_a_tts_prm_from_a_model_is_a_judge_of_each_step():
    module = load(HEAD + 'use prm = prm(lm, aggregate = "min")\n' + BODY, backend="tabular")
    prm = module.models["prm"]
    assert isinstance(prm, ProcessReward) and prm.aggregate == "min"
    assert isinstance(prm.scorer, JudgeSteps) and prm.scorer.judge.lm is module.models["lm"]
    results = module.infer.algorithm.run(module.infer.program, [("What is 2+2?",)], seed=0)
    assert results[0].values and prm.usage.calls >= 2


def test_a_tts_prm_by_name_loads_on_the_tabular_backend_and_is_refused_on_openai():
    module = load(HEAD + 'use prm = prm(name = "some-prm", aggregate = "last")\n' + BODY, backend="tabular")
    assert module.models["prm"].aggregate == "last"
    with pytest.raises(BackendError, match="a PRM served by name needs the vllm backend"):
        load_prm("some-prm", "openai")
    with pytest.raises(BackendError, match="unknown aggregation 'avg'"):
        load_prm("some-prm", "tabular", "avg")


@pytest.mark.parametrize(
    "use, message",
    [
        ("prm()", "a prm needs exactly one of model = <a model declared with use>"),
        ('prm(lm, name = "x")', "a prm needs exactly one of model = <a model declared with use>"),
        (
            'prm(lm, aggregate = "mean")',
            "unknown aggregation 'mean'; the aggregations are prod, min, last, whole",
        ),
        ('prm(name = "x", question = "ok?")', "question goes with model = ..."),
        ('prm(lm, backend = "vllm")', "backend goes with name = ..."),
        ('prm(name = "x", backend = "gpu")', "unknown backend 'gpu'; the backends are openai, tabular, vllm"),
    ],
)
def test_tts_prm_declaration_errors(use, message):
    with pytest.raises(TtsError) as caught:
        check(HEAD + f"use prm = {use}\n" + BODY, "f.tts")
    assert message in str(caught.value)


def test_tts_prm_methods_are_typed():
    with pytest.raises(TtsError) as caught:
        check(
            HEAD
            + "use prm = prm(lm)\n"
            + BODY.replace("prm.log_reward(problem, steps)\n  }", "prm.logit(problem, steps)\n  }"),
            "f.tts",
        )
    assert "a prm has no method 'logit'; its methods are log_reward, reward" in str(caught.value)


def test_the_prm_example_runs_on_the_tabular_backend(tmp_path):
    from ppl.app.cli import main

    out = tmp_path / "out.jsonl"
    assert (
        main(["run", "examples/prm_particle_filter.tts", "--input", "What is 3 + 4?", "--out", str(out)]) == 0
    )
    (line,) = out.read_text().splitlines()
    assert json.loads(line)["diagnostics"]["algorithm"] == "smc"


def test_the_aggregation_table_lists_every_aggregation():
    import ppl.backends.prm as module

    for how in AGGREGATIONS:
        assert any(line.strip().startswith(how) for line in module.__doc__.splitlines())
    assert list(itertools.chain(AGGREGATIONS)) == ["prod", "min", "last", "whole"]


def test_pooling_prm_reads_the_architecture_and_refuses_an_unknown_one(tmp_path):
    """Which format and engine arguments a model folder gets (no engine starts here)."""
    from ppl.backends.pooling import QWEN_MATH_PRM, PoolingPRM

    def folder(arch):
        path = tmp_path / arch
        path.mkdir()
        (path / "config.json").write_text(json.dumps({"architectures": [arch]}))
        return str(path)

    qwen = PoolingPRM(folder("Qwen2ForProcessRewardModel"))
    assert qwen.format == QWEN_MATH_PRM and qwen.format.tagged
    assert qwen.engine_arguments() == {
        "runner": "pooling",
        "pooler_config": {"task": "token_classify", "tok_pooling_type": "STEP"},
    }
    causal = PoolingPRM(folder("LlamaForCausalLM"))
    assert not causal.format.tagged and causal.format.labels == ("No", "Yes")
    assert causal.engine_arguments()["hf_overrides"] == {
        "classifier_from_token": ["No", "Yes"],
        "method": "no_post_processing",
    }
    with pytest.raises(
        ValueError, match="no known step format for a BertForTokenClassification; pass format="
    ):
        _ = PoolingPRM(folder("BertForTokenClassification")).format
