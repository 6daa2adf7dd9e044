"""Bundled task sets and `tts eval`: metrics per (algorithm, budget), kill-safe resume."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ppl.backends.verifiers import CHECKERS, check

ROOT = Path(__file__).resolve().parent.parent
TASKS = ROOT / "examples" / "tasks"


def test_task_sets_regenerate_byte_identically(tmp_path):
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "make_tasks.py"), "--out", str(tmp_path)], check=True
    )
    for name in ("arithmetic.jsonl", "constrained_writing.jsonl"):
        assert (tmp_path / name).read_bytes() == (TASKS / name).read_bytes(), name


@pytest.mark.parametrize("name", ["arithmetic.jsonl", "constrained_writing.jsonl"])
def test_every_task_is_well_formed(name):
    tasks = [json.loads(line) for line in (TASKS / name).read_text().splitlines()]
    assert len(tasks) >= 20
    assert len({t["id"] for t in tasks}) == len(tasks)
    for task in tasks:
        assert {"id", "input", "reference", "checker"} <= set(task)
        assert task["checker"] in CHECKERS and isinstance(task["input"], str) and task["input"]


def test_arithmetic_references_are_exact_and_checkable():
    for line in (TASKS / "arithmetic.jsonl").read_text().splitlines():
        task = json.loads(line)
        assert int(task["reference"]) >= 0
        assert check("math", f"The answer is {task['reference']}.", task["reference"])
        assert not check("math", f"The answer is {int(task['reference']) + 1}.", task["reference"])


def test_writing_checkers_accept_a_right_answer_and_reject_a_wrong_one():
    right = {
        "include_words": lambda ref: f"A {ref[0]} near a {ref[1]}.",
        "word_count": lambda ref: " ".join(["word"] * ref),
        "bullets": lambda ref: "\n".join(f"- fact {i}" for i in range(ref)),
    }
    for line in (TASKS / "constrained_writing.jsonl").read_text().splitlines():
        task = json.loads(line)
        assert not check(task["checker"], "", task["reference"])
        if task["checker"] in right:
            assert check(task["checker"], right[task["checker"]](task["reference"]), task["reference"])


# ---- tts eval ---------------------------------------------------------------------------------

DEMO = """version 0.1
use lm = model("reasoning-demo")

program solve(problem: text) -> text {
  let ctx = lm.encode("")
  step (max 8) {
    w ~ lm.gen(ctx, max_tokens = 1)
    ctx += w
    if contains(w, "check") { score 1.0 }
    if w.eos { finish }
  }
  return lm.decode(ctx)
}

infer solve with smc(particles = 4)
"""


@pytest.fixture
def demo(tmp_path):
    program = tmp_path / "demo.tts"
    program.write_text(DEMO)
    tasks = tmp_path / "tasks.jsonl"
    lines = [
        {
            "id": f"t{i}",
            "input": "2+3?",
            "reference": "(?s).*so 5" if i % 2 == 0 else "(?s).*so 6",
            "checker": "regex",
        }
        for i in range(40)
    ]
    tasks.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return program, tasks


def _tasks(path: Path) -> list[dict]:
    return [r for r in map(json.loads, path.read_text().splitlines()) if r["kind"] == "task"]


def _comparable(records: list[dict]) -> list[dict]:
    return sorted(
        (
            {k: v for k, v in r.items() if k not in ("wall_time", "barrier_wait")} for r in records
        ),  # not timings
        key=lambda r: (r["algorithm"], r["budget"], r["index"]),
    )


def test_tts_eval_writes_results_summary_and_plot(demo, tmp_path, capsys):
    from ppl.app.cli import main
    from ppl.app.metrics import pass_at_k

    program, tasks = demo
    out = tmp_path / "r.jsonl"
    argv = [str(program), "--data", str(tasks), "--out", str(out), "--budgets", "1,4", "--no-progress"]
    assert main(["eval", *argv, "--algorithm", "smc", "--algorithm", "best_of_n"]) == 0
    records = _tasks(out)
    assert len(records) == 2 * 2 * 40
    for r in records:
        assert r["metrics"]["n"] == r["budget"] == len(r["samples"])
        c = sum(bool(s[2]) for s in r["samples"])
        assert r["metrics"]["c"] == c and r["metrics"]["pass@1"] == pytest.approx(
            pass_at_k(r["budget"], c, 1)
        )
        assert r["correct"] == any(s[0] == r["answer"] and s[2] for s in r["samples"])
        assert r["tokens_out"] > 0
        assert len(r["ess"]) == len(r["resampled"]) and all(0 < e <= r["budget"] for e in r["ess"])
        if r["algorithm"] == "best_of_n":
            assert not any(r["resampled"])
    smc_resamplings = sum(
        sum(r["resampled"]) for r in records if r["algorithm"] == "smc" and r["budget"] == 4
    )
    assert smc_resamplings > 0, "the demo's reward should make SMC resample somewhere"
    table = (tmp_path / "r.md").read_text()
    head, _, *rows = [
        [c.strip() for c in line.strip("|").split("|")] for line in table.splitlines() if line.startswith("|")
    ]
    smc4 = next(dict(zip(head, row)) for row in rows if row[:2] == ["smc", "4"])
    assert smc4["resamplings"] == str(smc_resamplings)
    assert "| smc | 4 | 40 |" in table and "| best_of_n | 1 | 40 |" in table
    assert (tmp_path / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "accuracy" in capsys.readouterr().out
    # the same command again: nothing left to do, nothing added
    before = out.read_bytes()
    assert main(["eval", *argv, "--algorithm", "smc", "--algorithm", "best_of_n"]) == 0
    assert out.read_bytes() == before


def test_a_resumed_run_equals_an_uninterrupted_one_and_drops_a_cut_line(demo, tmp_path):
    from ppl.app.cli import main

    program, tasks = demo
    full, part = tmp_path / "full.jsonl", tmp_path / "part.jsonl"
    common = ["eval", str(program), "--data", str(tasks), "--budgets", "2,3", "--no-progress", "--no-plot"]
    assert main([*common, "--out", str(full)]) == 0
    lines = full.read_text().splitlines(keepends=True)
    part.write_text("".join(lines[:7]) + lines[7][:25])  # 7 whole lines and one cut short by a crash
    assert main([*common, "--out", str(part)]) == 0
    assert _comparable(_tasks(part)) == _comparable(_tasks(full))


def test_a_killed_tts_eval_resumes_without_loss_or_duplicates(demo, tmp_path):
    import os
    import signal
    import time

    from ppl.app.cli import main

    program, tasks = demo
    reference, out = tmp_path / "reference.jsonl", tmp_path / "killed.jsonl"
    common = [str(program), "--data", str(tasks), "--budgets", "1,2,4,8,16", "--no-progress", "--no-plot"]
    assert main(["eval", *common, "--out", str(reference)]) == 0
    expected = _comparable(_tasks(reference))

    command = [sys.executable, "-m", "ppl.app.cli", "eval", *common, "--out", str(out)]
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (out.exists() and out.read_text().count("\n") >= 1):
        assert child.poll() is None and time.monotonic() < deadline, "tts eval ended before writing a result"
        time.sleep(0.005)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    written = _tasks(out)
    assert 1 <= len(written) < len(expected), "the kill came after the run had finished"

    assert subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE).returncode == 0
    final = _tasks(out)
    keys = [(r["algorithm"], r["budget"], r["id"]) for r in final]
    assert len(keys) == len(set(keys)) == len(expected)
    assert _comparable(final) == expected


def test_eval_bad_input(demo, tmp_path, capsys):
    from ppl.app.cli import main

    program, tasks = demo
    out = tmp_path / "r.jsonl"
    base = ["eval", str(program), "--out", str(out), "--no-progress", "--no-plot"]
    bad = tmp_path / "bad.jsonl"
    cases = [
        ('{"id": 1, "input": "x", "reference": "1", "checker": "nope"}\n', "unknown checker"),
        ('{"id": 1, "input": "x", "reference": "1"}\n', "missing 'checker'"),
        ('{"id": 1, "input": "x", "reference": "1", "checker": "math"}\n' * 2, "appears twice"),
        ("[1, 2]\n", "a task is an object"),
        ("", "no tasks"),
    ]
    for text, message in cases:
        bad.write_text(text)
        assert main([*base, "--data", str(bad)]) == 1
        assert message in capsys.readouterr().err
    assert main([*base, "--data", str(tasks), "--budgets", "0"]) == 1
    assert "budgets" in capsys.readouterr().err
    assert main([*base, "--data", str(tasks), "--budgets", "two"]) == 2
    assert main([*base, "--data", str(tasks), "--algorithm", "enumerate"]) == 1
    assert "no budget setting" in capsys.readouterr().err
    assert main([*base, "--data", str(tasks), "--budgets", "1"]) == 0
    assert main([*base, "--data", str(tasks), "--budgets", "1", "--seed", "5"]) == 1
    assert "another run" in capsys.readouterr().err


def test_run_and_eval_lines_share_one_schema(demo, tmp_path, capsys):
    from ppl.app.cli import main
    from ppl.app.evaluate import read_results, summarise

    program, tasks = demo
    ran, evaluated = tmp_path / "run.jsonl", tmp_path / "eval.jsonl"
    assert main(["run", str(program), "--input", "2+3?", "--out", str(ran), "--no-progress"]) == 0
    assert (
        main(
            ["eval", str(program), "--data", str(tasks), "--out", str(evaluated), "--budgets", "4"]
            + ["--no-progress", "--no-plot"]
        )
        == 0
    )
    (run,) = [json.loads(line) for line in ran.read_text().splitlines()]
    task = _tasks(evaluated)[0]
    common = {"schema", "answer", "majority", "answers", "error", "reasons", "log_evidence", "evidence"}
    common |= {"final_ess", "ess", "resampled", "tokens_in", "tokens_out", "engine_calls", "wall_time"}
    common |= {"diagnostics"}
    assert common <= set(run) and common <= set(task)
    assert run["schema"] == task["schema"] == 1 and (run["kind"], task["kind"]) == ("problem", "task")
    for line in (run, task):
        assert isinstance(line["ess"], list) and len(line["ess"]) == len(line["resampled"])
        assert all(isinstance(r, bool) for r in line["resampled"])
        assert isinstance(line["final_ess"], float) and 0 < line["final_ess"] <= 4
        assert set(line["diagnostics"]) == {"algorithm", "particles", "steps", "dead", "deaths", "extra"}
    # the same program, seed, problem and position (0): the same record, whichever command ran it
    assert task["index"] == 0 and run["input"] == {"problem": "2+3?"}
    assert {k: run[k] for k in common - {"wall_time"}} == {k: task[k] for k in common - {"wall_time"}}
    # lines written before the schema field (docs/scaling/results.jsonl) are still read and summarised
    legacy = tmp_path / "legacy.jsonl"
    legacy.write_text((ROOT / "docs/scaling/results.jsonl").read_text())
    rows = summarise(read_results(legacy))
    assert rows and all(row["tokens_out"] > 0 for row in rows)
