"""``param`` declarations and ``tts search``: values checked like written ones, trials resumable.

The search test that matters: a search killed (SIGKILL, mid-trial or mid-write) and started
again with the same command gives exactly the trials of an uninterrupted search with the same
seed — same values, same objectives — on the tabular backend, where runs are reproducible.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ppl.app import check
from ppl.app import evaluate as ev
from ppl.app import search as se
from ppl.app.cli import main
from ppl.grammar import TtsError
from ppl.grammar.params import write

ROOT = Path(__file__).resolve().parents[1]

SEARCHED = """version 0.1
use lm = model("smollm2-135m-instruct")
param samples = integer(2, low = 1, high = 6)
param temperature = number(0.7, low = 0.2, high = 1.5, log = true)
param method = choice("importance", ["importance", "adaptive"])
param prefix = choice("Answer:", ["Answer:", "The answer is"])
program solve(problem: text) -> text {
  let prompt = lm.chat(system = "Answer with a number.", user = problem) + lm.encode(prefix)
  a ~ lm.gen(prompt, max_tokens = 6, temperature = temperature)
  return last_number(a)
}
infer solve with method(particles = samples)
"""


def test_params_take_their_defaults_and_overrides():
    checked = check(SEARCHED, "s.tts")
    assert checked.infer.describe() == "infer solve with importance(particles = 2)"
    assert dict(checked.params.values) == {
        "samples": 2,
        "temperature": 0.7,
        "method": "importance",
        "prefix": "Answer:",
    }
    other = check(SEARCHED, "s.tts", params={"samples": 5, "method": "adaptive"})
    assert other.infer.algorithm == "adaptive" and other.infer.settings["particles"] == 5


@pytest.mark.parametrize(
    "params, message",
    [
        ({"samples": 9}, "param samples must be between 1 and 6, got 9"),
        ({"samples": 2.5}, "param samples must be a whole number, got 2.5"),
        ({"method": "beam"}, 'param method is one of "importance", "adaptive", got "beam"'),
        ({"width": 3}, "no param 'width' in this file; its params are samples, temperature, method, prefix"),
    ],
)
def test_bad_values_are_refused_with_the_reason(params, message):
    with pytest.raises(TtsError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check(SEARCHED, "s.tts", params=params)


@pytest.mark.parametrize(
    "declaration, message",
    [
        ("param k = integer(9, low = 1, high = 4)", "the default is not in the range"),
        ("param k = integer(1, low = 4, high = 1)", r"low \(4\) is above high \(1\)"),
        ("param k = number(0.5, low = 0, high = 1, log = true)", "a log scale needs low > 0"),
        ("param k = 3", "a param is `param name = integer"),
        ('param k = choice("a", "b")', "needs a list"),
        ("param k = integer(2, low = 1)", "integer\\(\\) needs 'high'"),
    ],
)
def test_malformed_declarations_are_reported(declaration, message):
    source = f'version 0.1\n{declaration}\nprogram f() -> text {{\n  return "a"\n}}\n'
    with pytest.raises(TtsError, match=message):
        check(source, "f.tts")


def test_a_param_cannot_be_rebound():
    source = (
        "version 0.1\nparam k = integer(2, low = 1, high = 4)\n"
        "program f() -> number {\n  let k = 3\n  return k\n}\n"
    )
    with pytest.raises(TtsError, match="'k' is a param \\(line 2\\): a param is a constant"):
        check(source, "f.tts")


def test_a_value_the_checker_refuses_is_reported_where_it_is_used():
    source = SEARCHED.replace("integer(2, low = 1, high = 6)", "integer(2, low = 0, high = 6)")
    with pytest.raises(TtsError, match="particles"):
        check(source, "s.tts", params={"samples": 0})


def test_written_file_has_the_new_defaults_and_checks():
    space = check(SEARCHED, "s.tts").params
    values = {"samples": 5, "temperature": 0.25, "method": "adaptive", "prefix": "The answer is"}
    text = write(SEARCHED, space, values)
    again = check(text, "best.tts")
    assert dict(again.params.values) == values
    assert again.infer.algorithm == "adaptive" and again.infer.settings["particles"] == 5
    assert write(text, again.params, values) == text


def test_pareto_and_best():
    def trial(number, accuracy, tokens):
        return {"number": number, "values": {"accuracy": accuracy, "tokens_out": tokens}}

    trials = [trial(0, 0.5, 10), trial(1, 0.5, 20), trial(2, 0.8, 30), trial(3, 0.8, 30), trial(4, 0.2, 5)]
    assert [t["number"] for t in se.pareto(trials)] == [4, 0, 2]
    assert se.best(trials)["number"] == 2


def _tasks(tmp_path: Path, n: int = 4) -> Path:
    lines = (ROOT / "examples/tasks/arithmetic.jsonl").read_text().splitlines()[:n]
    path = tmp_path / "dev.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def _stable(trials):
    return [{k: v for k, v in t.items() if k != "wall_time"} for t in trials]


def test_an_interrupted_search_resumes_to_the_same_trials(tmp_path):
    program = tmp_path / "s.tts"
    program.write_text(SEARCHED)
    tasks = ev.load_tasks(_tasks(tmp_path))
    whole = se.search(program, tasks, tmp_path / "a.jsonl", 7, seed=3, backend="tabular")
    assert len({json.dumps(t["params"], sort_keys=True) for t in whole}) > 3  # it does explore

    def stop(number):
        if number == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        se.search(program, tasks, tmp_path / "b.jsonl", 7, seed=3, backend="tabular", before_trial=stop)
    with open(tmp_path / "b.jsonl", "a") as f:
        f.write('{"schema": 1, "kind": "trial", "num')  # a line torn by the kill
    resumed = se.search(program, tasks, tmp_path / "b.jsonl", 7, seed=3, backend="tabular")
    assert _stable(resumed) == _stable(whole)
    other_seed = se.search(program, tasks, tmp_path / "c.jsonl", 7, seed=4, backend="tabular")
    assert _stable(other_seed) != _stable(whole)
    with pytest.raises(se.SearchError, match="another search"):
        se.search(program, tasks, tmp_path / "a.jsonl", 8, seed=4, backend="tabular")


def test_tts_search_killed_and_restarted_equals_uninterrupted(tmp_path):
    program = tmp_path / "s.tts"
    program.write_text(SEARCHED)
    data = _tasks(tmp_path, 3)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PPL_ROOT": str(ROOT)}

    def command(out: str, trials: int = 10) -> list[str]:
        return [sys.executable, "-m", "ppl.app.cli", "search", str(program), "--data", str(data)] + [
            "--out",
            str(tmp_path / out),
            "--trials",
            str(trials),
            "--backend",
            "tabular",
            "--seed",
            "1",
        ]

    assert subprocess.run(command("whole.jsonl"), env=env, capture_output=True).returncode == 0
    killed = tmp_path / "killed.jsonl"
    process = subprocess.Popen(
        command("killed.jsonl"), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if killed.exists() and killed.read_text().count("\n") >= 3:
            break
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    finished_before = killed.read_text().count("\n")
    done = subprocess.run(command("killed.jsonl"), env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert finished_before < 10 and "resuming" in done.stderr
    whole = [json.loads(line) for line in (tmp_path / "whole.jsonl").read_text().splitlines()]
    again = [json.loads(line) for line in killed.read_text().splitlines()]
    assert _stable(again) == _stable(whole)
    best = tmp_path / "killed.best.tts"
    assert best.exists() and (tmp_path / "killed.html").exists()
    assert main(["check", str(best)]) == 0
    chosen = se.best(whole)
    assert dict(check(best).params.values) == chosen["params"]
