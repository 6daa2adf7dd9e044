"""Verifier-aware sampling: the closed form of resampling-until-accepted against brute force."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from ppl.app import verifier_stats as vs
from ppl.app.cli import main

ROOT = Path(__file__).resolve().parents[1]


def brute(p, fp, fn, k):
    """List every sequence of k draws over (right, wrong) × (accepted, rejected)."""
    outcomes = {
        ("right", True): p * (1 - fn),
        ("right", False): p * fn,
        ("wrong", True): (1 - p) * fp,
        ("wrong", False): (1 - p) * (1 - fp),
    }
    accuracy = draws = 0.0
    for sequence in itertools.product(outcomes, repeat=k):
        prob = 1.0
        for o in sequence:
            prob *= outcomes[o]
        stop = next((i for i, (_, ok) in enumerate(sequence) if ok), k - 1)
        # the draws after the stop are never made: sum over them is the marginal of the prefix
        accuracy += prob * (sequence[stop][0] == "right")
        draws += prob * (stop + 1)
    return accuracy, draws


@pytest.mark.parametrize("p, fp, fn", [(0.3, 0.2, 0.1), (0.9, 0.6, 0.5), (0.5, 0.0, 0.0), (0.2, 1.0, 0.0)])
@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_closed_form_equals_brute_force(p, fp, fn, k):
    accuracy, draws = brute(p, fp, fn, k)
    assert vs.resampling_accuracy(p, fp, fn, k) == pytest.approx(accuracy, abs=1e-12)
    assert vs.expected_draws(p, fp, fn, k) == pytest.approx(draws, abs=1e-12)


def test_a_bad_verifier_has_a_ceiling_below_one_sample_and_best_k_is_one():
    # easy tasks (p = 0.9) with a verifier that accepts wrong answers more than right ones
    tasks = [[["a", 0.0, True]] * 5 + [["a", -5.0, True]] * 4 + [["b", 0.0, False]] for _ in range(3)]
    stats = vs.verifier_stats(tasks, threshold=-1.0, max_k=8)
    assert stats["false_negative"] == pytest.approx(4 / 9) and stats["false_positive"] == 1.0
    assert stats["ceiling"] < stats["curve"][0] == pytest.approx(0.9)
    assert stats["best_k"] == 1


def test_a_good_verifier_gains_with_k_up_to_its_ceiling():
    tasks = [[["a", 0.0, True], ["b", -5.0, False], ["c", -5.0, False], ["d", -5.0, False]]] * 2
    stats = vs.verifier_stats(tasks, threshold=-1.0, max_k=16)
    assert stats["false_positive"] == 0.0 and stats["false_negative"] == 0.0
    assert stats["ceiling"] == 1.0 and stats["curve"][0] == pytest.approx(0.25)
    assert stats["curve"][-1] == pytest.approx(1 - 0.75**16) and stats["best_k"] == 16


def test_tts_eval_reports_the_verifier(tmp_path, capsys):
    program = tmp_path / "p.tts"
    program.write_text(
        'version 0.1\nuse lm = model("smollm2-135m-instruct")\nprogram solve(problem: text) -> text {\n'
        '  a ~ lm.gen(lm.chat(system = "Answer with a number.", user = problem), max_tokens = 6)\n'
        "  score 0.0 - len(a.text) / 10\n  return last_number(a)\n}\n"
        "infer solve with importance(particles = 4)\n"
    )
    data = tmp_path / "tasks.jsonl"
    data.write_text("\n".join((ROOT / "examples/tasks/arithmetic.jsonl").read_text().splitlines()[:4]) + "\n")
    out = tmp_path / "r.jsonl"
    argv = ["eval", str(program), "--data", str(data), "--backend", "tabular", "--out", str(out)]
    assert main([*argv, "--budgets", "4", "--no-progress", "--no-plot", "--verifier-threshold", "-0.3"]) == 0
    printed = capsys.readouterr().out
    records = [json.loads(line) for line in out.read_text().splitlines() if '"kind": "task"' in line]
    stats = vs.verifier_stats([r["samples"] for r in records], -0.3)
    assert vs.describe(stats) in printed
