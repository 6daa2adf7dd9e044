"""The vLLM pooling PRM adapter on the real engine, as far as this machine allows.

What runs here:

* the embedded SmolLM2 converted by vLLM into a Yes/No step classifier (float32), whose
  verdicts must equal the same model's next-token odds read directly with transformers;
* vLLM's STEP pooling (a step tag) against every-position pooling on the same engine;
* ``ProcessReward`` over the engine: one pooling call per batch, prefixes memoised, and an
  SMC run whose particles are weighted by it, one pooling call per round;
* the Qwen2.5-Math-PRM code path (architecture ``Qwen2ForProcessRewardModel``, steps joined
  by ``<extra_0>``, STEP pooling) on a **randomly initialised** two-layer model of that
  architecture built here: a trained PRM (7B) cannot be downloaded on this machine, so this
  checks the plumbing — the engine's rows against the architecture computed with
  transformers' Qwen2 and the same head — not what a trained PRM would say.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

import ppl
from ppl.algorithms import SMC
from ppl.backends.pooling import QWEN_MATH_PRM, PoolingPRM, PRMFormat
from ppl.backends.prm import ProcessReward
from ppl.interfaces import RewardRequest

ITEMS = [
    ("What is 2 + 3?", ("2 + 3 = 5.", "The answer is 5.")),
    ("What is 2 + 3?", ("2 + 3 = 6.", "The answer is 6.")),
    ("What is 7 * 6?", ("7 * 6 = 42.",)),
]


@pytest.fixture(scope="module")
def prm():
    scorer = PoolingPRM(dtype="float32", max_num_seqs=32, gpu_memory_utilization=0.1)  # 2.4 GiB, not 6
    scorer.engine  # noqa: B018 - start it here, once
    yield scorer
    scorer.close()


def test_verdicts_are_the_models_yes_no_odds_read_directly(prm):
    """The converted classifier's rows are the LM head's "No"/"Yes" rows: log r_t must be
    log P(Yes) - log(P(Yes) + P(No)) for the next token after each step's question."""
    import torch
    from transformers import AutoModelForCausalLM

    scores = prm.score(ITEMS)
    model = AutoModelForCausalLM.from_pretrained(prm.path, dtype=torch.float32)
    no, yes = prm.encode("No"), prm.encode("Yes")
    assert len(no) == len(yes) == 1
    for (problem, steps), got in zip(ITEMS, scores):
        ids, positions = prm.layout(problem, steps)
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0]
        expected = [
            float(logits[p, yes[0]] - torch.logaddexp(logits[p, yes[0]], logits[p, no[0]])) for p in positions
        ]
        assert got == pytest.approx(expected, abs=2e-3), (problem, steps)
    assert prm.score(ITEMS, final_only=True) == [s[-1:] for s in scores]


def test_step_tag_pooling_selects_the_same_rows(prm):
    """A tagged format (vLLM's STEP pooling finds the tag) and the same layout read at every
    position give the same verdicts on the same engine."""
    original = prm.format
    tagged = PRMFormat(
        "test-tag", system=original.system, separator=original.separator + "<empty_output>", tagged=True
    )
    try:
        prm._format = tagged
        by_tag = prm.score(ITEMS)
        prm._format = replace(tagged, tagged=False)
        by_position = prm.score(ITEMS)
    finally:
        prm._format = original
    assert [len(row) for row in by_tag] == [len(steps) for _, steps in ITEMS]
    for tag_row, position_row in zip(by_tag, by_position):
        assert tag_row == pytest.approx(position_row, abs=1e-5)


def test_layout_errors_are_named_before_the_engine_runs(prm):
    calls = prm.usage.calls
    tagged = PRMFormat("test-tag", system="s", separator="<empty_output>", tagged=True)
    original = prm.format
    try:
        prm._format = tagged
        with pytest.raises(ValueError, match="the text of a step contains the step tag"):
            prm.score([("p", ("a step <empty_output> with the tag inside",))])
    finally:
        prm._format = original
    with pytest.raises(ValueError, match=r"longer than the engine's context \(2048\); raise max_model_len"):
        prm.score([("p", ("word " * 3000,))])
    assert prm.usage.calls == calls


def test_process_reward_batches_and_memoises_on_the_engine(prm):
    reward = ProcessReward(prm, "min")
    calls = prm.usage.calls
    requests = [RewardRequest((p, list(s))) for p, s in ITEMS] + [
        RewardRequest((ITEMS[0][0], [ITEMS[0][1][0]]))
    ]
    values = reward.reward(requests)
    assert prm.usage.calls == calls + 1 and prm.usage.batch_sizes[-1] == 3  # the prefix rides along
    per_step = prm.score(ITEMS)
    assert values[:3] == pytest.approx([min(s) for s in per_step], abs=1e-9)
    assert values[3] == pytest.approx(per_step[0][0], abs=1e-9)
    reward.reward(requests[::-1])
    assert prm.usage.calls == calls + 2, "memoised prefixes went back to the engine"


def test_smc_weighted_by_the_pooling_prm_one_pooling_call_per_round(default_lm, prm):
    reward = ProcessReward(prm, "prod")

    @ppl.program
    def solve(problem):
        prompt = default_lm.chat(system="Solve step by step. Separate steps by a blank line.", user=problem)
        steps = []
        for _ in ppl.steps(max=3):
            s = ppl.gen(
                default_lm, prompt + sum((x.token_ids for x in steps), ()), stop=("\n\n",), max_tokens=24
            )
            steps.append(s)
            ppl.twist(ppl.reward(reward, problem, list(steps)))
            if s.eos:
                break
        ppl.score(ppl.reward(reward, problem, list(steps)))
        return "".join(x.text for x in steps)

    calls = prm.usage.calls
    results = SMC(particles=4, ess_threshold=1.0).run(
        solve, [("What is 3 + 4?",), ("What is 9 - 5?",)], seed=1
    )
    rounds = results.stats.total_calls("generate")
    assert reward.usage.calls == results.stats.total_calls("reward")
    assert 1 <= prm.usage.calls - calls <= rounds  # at most one pooling call per round, both problems in it
    assert max(prm.usage.batch_sizes[calls:]) > 4
    for post in results:
        assert all(math.isfinite(w) for w in post.log_weights) and post.values


# ---- the Qwen2.5-Math-PRM path on a randomly initialised model of that architecture ----------------


@pytest.fixture(scope="module")
def qwen_prm_folder(tmp_path_factory, prm):
    """A two-layer Qwen2ForProcessRewardModel with random weights, the default model's
    tokenizer and an added ``<extra_0>`` step tag, and the reference computation."""
    import torch
    from safetensors.torch import save_file
    from transformers import AutoTokenizer, Qwen2Config, Qwen2Model

    folder = tmp_path_factory.mktemp("qwen-prm")
    tokenizer = AutoTokenizer.from_pretrained(prm.path)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<extra_0>"]})
    tokenizer.save_pretrained(folder)
    shutil.copy(prm.path / "chat_template.jinja", folder / "chat_template.jinja")
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=2048,
        tie_word_embeddings=False,
        num_labels=2,
        architectures=["Qwen2ForProcessRewardModel"],
    )
    config.save_pretrained(folder)
    torch.manual_seed(0)
    backbone = Qwen2Model(config).eval()
    head = torch.nn.Sequential(torch.nn.Linear(128, 128), torch.nn.ReLU(), torch.nn.Linear(128, 2))
    torch.nn.init.normal_(head[2].weight, std=1.0)
    weights = {f"model.{k}": v.contiguous() for k, v in backbone.state_dict().items()}
    weights.update({f"score.{k}": v.contiguous() for k, v in head.state_dict().items()})
    save_file(weights, str(folder / "model.safetensors"))
    assert json.loads((folder / "config.json").read_text())["architectures"] == ["Qwen2ForProcessRewardModel"]

    def reference(ids, positions):
        with torch.no_grad():
            logits = head(backbone(torch.tensor([ids])).last_hidden_state[0])
            return [float(torch.log_softmax(logits[p], -1)[1]) for p in positions]

    return folder, reference


def test_qwen_prm_architecture_is_served_with_its_step_tag(prm, qwen_prm_folder):
    folder, reference = qwen_prm_folder
    prm.close()  # one pooling engine at a time on this small machine
    qwen = PoolingPRM(str(folder), dtype="float32", max_num_seqs=32, gpu_memory_utilization=0.1)
    try:
        assert qwen.format == QWEN_MATH_PRM and not qwen.converted()
        assert qwen.engine_arguments()["runner"] == "pooling" and "convert" not in qwen.engine_arguments()
        scores = qwen.score(ITEMS)
        for (problem, steps), got in zip(ITEMS, scores):
            ids, positions = qwen.layout(problem, steps)
            assert ids.count(qwen.tag_id()) == len(steps)
            assert got == pytest.approx(reference(ids, positions), abs=2e-3)
        assert len({round(s, 3) for row in scores for s in row}) > 1, "random weights gave identical verdicts"
        with pytest.raises(ValueError, match="the text of a step contains the step tag '<extra_0>'"):
            qwen.score([("p", ("one<extra_0>two",))])
    finally:
        qwen.close()


def test_the_prm_example_runs_from_the_command_line_with_two_engines(tmp_path):
    """`prm(name = ...)` in a .tts file on --backend vllm: the generating engine and the
    pooling engine, both started, used and closed by `tts run`."""
    example = Path(__file__).resolve().parents[2] / "examples" / "prm_particle_filter.tts"
    out = tmp_path / "results.jsonl"
    done = subprocess.run(
        [
            sys.executable, "-m", "ppl.app.cli", "run", str(example), "--backend", "vllm",
            "--input", "What is 3 + 4?", "--particles", "2", "--out", str(out),
            "--engine", "gpu_memory_utilization=0.1", "--engine", "max_num_seqs=16",
        ],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "starting the vLLM engine for smollm2-135m-instruct" in done.stderr
    assert "starting the vLLM engine for prm(smollm2-135m-instruct)" in done.stderr
    (line,) = out.read_text().splitlines()
    result = json.loads(line)
    assert result["diagnostics"]["algorithm"] == "smc" and result["answer"].strip()
