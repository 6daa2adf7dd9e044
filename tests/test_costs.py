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
