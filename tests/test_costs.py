"""Cost accounting: tokens, cached prompt tokens, calls, time and a price table in run and eval summaries."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ppl.app import costs
from ppl.app.cli import main

ROOT = Path(__file__).resolve().parents[1]

PROGRAM = """version 0.1
use lm = model("smollm2-135m-instruct")
program solve(problem: text) -> text {
  let prompt = lm.chat(system = "Answer with a number.", user = problem)
  a ~ lm.gen(prompt, max_tokens = 6, temperature = 0.4)
  return last_number(a)
}
infer solve with adaptive(particles = 6, wave = 2)
"""


def test_prices_are_per_million_tokens_with_model_overrides():
    prices = costs.Prices.parse({"prompt": 1, "generated": 3, "models": {"m": {"generated": 5}}})
    assert prices.cost(2_000_000, 0, 1_000_000) == pytest.approx(5.0)
    assert prices.cost(2_000_000, 1_000_000, 1_000_000, "m") == pytest.approx(
        7.0
    )  # cached at the prompt price
    with pytest.raises(costs.PricesError, match="unknown price 'output'"):
        costs.Prices.parse({"output": 1})
    with pytest.raises(costs.PricesError, match="generated must be a number >= 0"):
        costs.Prices.parse({"generated": -1})


def test_run_and_eval_summaries_report_tokens_calls_time_and_cost(tmp_path, capsys):
    program = tmp_path / "p.tts"
    program.write_text(PROGRAM)
    data = tmp_path / "tasks.jsonl"
    data.write_text("\n".join((ROOT / "examples/tasks/arithmetic.jsonl").read_text().splitlines()[:3]) + "\n")
    inputs = tmp_path / "inputs.jsonl"
    inputs.write_text(
        "".join(
            json.dumps({"problem": json.loads(line)["input"]}) + "\n"
            for line in data.read_text().splitlines()
        )
    )
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"prompt": 2.0, "generated": 10.0}))
    out = tmp_path / "run.jsonl"
    assert (
        main(
            [
                "run",
                str(program),
                "--data",
                str(inputs),
                "--backend",
                "tabular",
                "--out",
                str(out),
                "--no-progress",
                "--prices",
                str(prices),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    records = [json.loads(line) for line in out.read_text().splitlines()]
    prompt = sum(r["tokens_in"] for r in records)
    generated = sum(r["tokens_out"] for r in records)
    cost = (prompt * 2.0 + generated * 10.0) / 1e6
    assert f"tokens: {prompt} prompt (0 from the prefix cache), {generated} generated;" in printed
    assert f"cost {cost:.6f}" in printed
    results = tmp_path / "eval.jsonl"
    assert (
        main(
            [
                "eval",
                str(program),
                "--data",
                str(data),
                "--backend",
                "tabular",
                "--out",
                str(results),
                "--budgets",
                "6",
                "--no-progress",
                "--no-plot",
                "--prices",
                str(prices),
            ]
        )
        == 0
    )
    table = capsys.readouterr().out
    head, _, row = (line.strip("|").split("|") for line in table.splitlines()[:3])
    cells = dict(zip((h.strip() for h in head), (c.strip() for c in row)))
    tasks = [json.loads(line) for line in results.read_text().splitlines() if '"kind": "task"' in line]
    tokens_in = sum(t["tokens_in"] for t in tasks) / 3
    tokens_out = sum(t["tokens_out"] for t in tasks) / 3
    assert (
        cells["cached in"] == "0" and cells["cost/task"] == f"{(tokens_in * 2 + tokens_out * 10) / 1e6:.6f}"
    )
    assert float(cells["runs/task"]) == pytest.approx(sum(t["diagnostics"]["particles"] for t in tasks) / 3)


def _eval_records(rows: list[tuple[str, int, int, int, int, int, int]]) -> list[dict]:
    """Task and segment lines of ``tts eval``: per row (algorithm, budget, tasks, prompt, cached,
    generated tokens per task, engine calls), with a wall time from a known engine cost model."""
    records = []
    for algorithm, budget, tasks, prompt, cached, generated, calls in rows:
        metrics = {"best": True, "majority": True, "weighted_vote": False, "covered": True}
        for i in range(tasks):
            records.append({"kind": "task", "algorithm": algorithm, "budget": budget, "id": str(i),
                            "metrics": metrics, "tokens_in": prompt, "tokens_out": generated})  # fmt: skip
        wall = 0.002 * (prompt - cached) * tasks + 0.03 * generated * tasks + 0.5 * calls
        records.append({"kind": "segment", "algorithm": algorithm, "budget": budget, "tasks": tasks,
                        "cached_prompt_tokens": cached * tasks, "engine_calls": calls, "wall_time": wall})  # fmt: skip
    return records


def test_the_engine_cost_model_is_fitted_from_the_rows_and_predicts_their_ideal_runtime():
    from ppl.app import evaluate

    records = _eval_records([
        ("best_of_n", 1, 4, 100, 0, 10, 2), ("best_of_n", 4, 4, 400, 200, 40, 3),
        ("smc", 4, 4, 500, 300, 45, 9), ("smc", 8, 4, 900, 100, 90, 12),
    ])  # fmt: skip
    rows = evaluate.summarise(records)
    times = evaluate.engine_times(rows)
    assert (times.prompt, times.generated, times.call) == pytest.approx((0.002, 0.03, 0.5), rel=1e-6)
    for row in rows:  # the records' wall times follow the model exactly, so ideal = measured
        assert row["ideal_time"] == pytest.approx(row["wall_time"], rel=1e-6)
    table = evaluate.markdown_table(rows)
    assert "| ideal s |" in table and "2.000 ms per uncached prompt token" in table
    # cached prompt tokens cost nothing in the model: counting them would misfit these rows
    wrong = costs.EngineTimes.fit(
        [(r["tokens_in"] * 4, r["tokens_out"] * 4, r["engine_calls"], r["wall_time"]) for r in rows]
    )
    assert abs(wrong.prompt - 0.002) > 1e-4
    # three unknowns: fewer than three rows fit nothing, and the table has no ideal column
    few = evaluate.summarise(records[: 2 * 5])
    assert evaluate.engine_times(few) is None and "ideal s" not in evaluate.markdown_table(few)
