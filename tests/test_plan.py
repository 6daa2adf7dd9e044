"""``tts plan`` and ``tts eval --policy``: a policy fitted on synthetic results picks the known
best arm per difficulty bin, and applying it reproduces each chosen arm's own results."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ppl.app import plan
from ppl.app.cli import main

ROOT = Path(__file__).resolve().parents[1]


def record(task, algorithm, budget, correct, tokens, samples=None):
    r = {
        "kind": "task",
        "id": task,
        "algorithm": algorithm,
        "budget": budget,
        "tokens_out": tokens,
        "metrics": {"majority": correct, "best": correct},
    }
    if samples is not None:
        r["samples"] = [[a, 0.0, None] for a in samples]
    return r


def synthetic():
    """Hard tasks (probe agreement 1/4 or 1/2): only smc@8 is right. Medium (3/4): best_of_n@4
    and smc@8 are right, best_of_n@4 is cheaper. Easy (4/4): everything is right, best_of_n@1
    is cheapest. A dead run (log weight None) never votes."""
    records = []
    kinds = {
        "hard": (["1", "2", "3", "4"], {"best_of_n@1": False, "best_of_n@4": False, "smc@8": True}),
        "hard2": (["1", "1", "2", "3"], {"best_of_n@1": False, "best_of_n@4": False, "smc@8": True}),
        "medium": (["5", "5", "5", "6"], {"best_of_n@1": False, "best_of_n@4": True, "smc@8": True}),
        "easy": (["7", "7", "7", "7"], {"best_of_n@1": True, "best_of_n@4": True, "smc@8": True}),
    }
    tokens = {"best_of_n@1": 10, "best_of_n@4": 40, "smc@8": 80}
    for kind, (probe, right) in kinds.items():
        for copy in range(3):
            task = f"{kind}-{copy}"
            for arm, correct in right.items():
                algorithm, budget = arm.split("@")
                samples = probe + ["x", "y"] if arm == "best_of_n@4" else None
                r = record(task, algorithm, int(budget), correct, tokens[arm], samples)
                if samples is not None:
                    r["samples"].append(["dead", None, False])
                records.append(r)
    return records


def test_the_policy_picks_the_known_best_arm_per_bin():
    policy = plan.fit(synthetic(), probe=4, edges=(0.6, 1.0))
    arms = [tuple(b["arm"]) for b in policy["bins"]]
    assert arms == [("smc", 8), ("best_of_n", 4), ("best_of_n", 1)]
    assert [b["tasks"] for b in policy["bins"]] == [6, 3, 3]
    assert [b["accuracy"] for b in policy["bins"]] == [1.0, 1.0, 1.0]
    assert plan.choose_arm(policy, 0.25) == ("smc", 8) and plan.choose_arm(policy, 1.0) == ("best_of_n", 1)


def test_a_token_cost_moves_hard_tasks_to_a_cheaper_arm():
    policy = plan.fit(synthetic(), probe=4, edges=(0.6, 1.0), cost=0.02)  # 80 tokens cost 1.6 > 1 accuracy
    assert tuple(policy["bins"][0]["arm"]) == ("best_of_n", 1)


def test_an_empty_bin_takes_the_overall_best_arm():
    policy = plan.fit(synthetic(), probe=4, edges=(0.1, 0.6, 1.0))
    assert policy["bins"][0]["tasks"] == 0 and tuple(policy["bins"][0]["arm"]) == ("smc", 8)


def test_mutant_probe_from_the_last_runs_picks_other_arms(monkeypatch):
    """A probe read from the wrong runs (the last four of best_of_n@4) bins the tasks wrongly."""
    real = plan.agreement
    monkeypatch.setattr(
        plan,
        "probes",
        lambda records, probe: {
            r["id"]: real(r["samples"][-probe:])
            for r in records
            if r["algorithm"] == "best_of_n" and r["budget"] == 4
        },
    )
    policy = plan.fit(synthetic(), probe=4, edges=(0.6, 1.0))
    assert [tuple(b["arm"]) for b in policy["bins"]] != [("smc", 8), ("best_of_n", 4), ("best_of_n", 1)]


def test_bad_inputs_are_refused():
    with pytest.raises(plan.PlanError, match="increasing numbers in"):
        plan.fit(synthetic(), edges=(1.0, 0.5))
    with pytest.raises(plan.PlanError, match="no importance"):
        plan.fit(synthetic(), probe=16)


PROGRAM = """version 0.1
use lm = model("smollm2-135m-instruct")
program solve(problem: text) -> text {
  let prompt = lm.chat(system = "Answer with a number.", user = problem)
  a ~ lm.gen(prompt, max_tokens = 6, temperature = 0.4)
  return last_number(a)
}
infer solve with adaptive(particles = 8, wave = 2)
"""


def test_tts_plan_and_eval_policy_end_to_end(tmp_path, capsys):
    program = tmp_path / "p.tts"
    program.write_text(PROGRAM)
    data = tmp_path / "tasks.jsonl"
    data.write_text("\n".join((ROOT / "examples/tasks/arithmetic.jsonl").read_text().splitlines()[:8]) + "\n")
    results = tmp_path / "dev.jsonl"
    common = [str(program), "--data", str(data), "--backend", "tabular", "--no-progress"]
    assert (
        main(
            [
                "eval",
                *common,
                "--out",
                str(results),
                "--budgets",
                "1,4",
                "--algorithm",
                "best_of_n",
                "--no-plot",
            ]
        )
        == 0
    )
    assert main(["eval", *common, "--out", str(results), "--budgets", "8", "--no-plot"]) == 0
    policy_path = tmp_path / "policy.json"
    assert main(["plan", str(results), "--out", str(policy_path), "--probe", "4", "--edges", "0.5,1"]) == 0
    policy = json.loads(policy_path.read_text())
    assert policy["kind"] == "policy" and len(policy["bins"]) == 3
    applied = tmp_path / "applied.jsonl"
    assert main(["eval", *common, "--out", str(applied), "--policy", str(policy_path)]) == 0
    assert "| policy | 0 | 8 |" in capsys.readouterr().out
    dev = {
        (r["algorithm"], r["budget"], r["id"]): r
        for r in map(json.loads, results.read_text().splitlines())
        if r["kind"] == "task"
    }
    lines = [json.loads(line) for line in applied.read_text().splitlines()]
    tasks = [r for r in lines if r["kind"] == "task"]
    assert len(tasks) == 8
    for r in tasks:
        algorithm, budget = r["policy"]["arm"]
        assert plan.choose_arm(policy, r["policy"]["agreement"]) == (algorithm, budget)
        probe = dev[("best_of_n", 4, r["id"])]
        assert r["policy"]["agreement"] == plan.agreement(probe["samples"])
        arm = dev[(algorithm, budget, r["id"])]  # same seed and task position: the same run
        assert r["metrics"]["majority"] == arm["metrics"]["majority"]
        assert r["tokens_out"] == arm["tokens_out"] + probe["tokens_out"]
    # resuming skips every task already applied
    assert main(["eval", *common, "--out", str(applied), "--policy", str(policy_path)]) == 0
    assert len([line for line in applied.read_text().splitlines() if '"kind": "task"' in line]) == 8
