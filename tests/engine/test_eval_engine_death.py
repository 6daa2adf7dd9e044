"""``tts eval --backend vllm`` with its engine-core process killed in the middle of the run.

Three runs of the same command on the embedded model (each its own engine): one
uninterrupted; one whose engine core is SIGKILLed (as the kernel's OOM killer would) as soon
as the first task's line is in the results file; and that command run again, which resumes.

- the killed run exits 1 naming the cause (the engine process's exit code, -9) and how to go on;
- every task line it wrote is whole and equal to the uninterrupted run's line for that task;
- the resumed run runs only the rest and ends with the uninterrupted run's results exactly.

One problem is in flight at a time (``--in-flight`` = the particles) and the prefix cache is
off, so a task's engine batches are the same in the three runs, and the model runs in
float32: vLLM's seeded sampling is then reproducible (in bfloat16, on CPUs with bf16 matrix
units, rows of one batch round differently; see tests/conftest.py).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import psutil

PROGRAM = """version 0.1
use lm = model("smollm2-135m-instruct")

program solve(problem: text) -> text {
  let prompt = lm.chat(system = "Answer with a number.", user = problem)
  let steps: list[segment] = []
  step (max 3) {
    s ~ lm.gen(prompt + steps, max_tokens = 12, temperature = 0.8)
    steps += [s]
    if contains(s, "=") { score 0.5 }
    if s.eos { finish }
  }
  return text(steps)
}

infer solve with smc(particles = 2)
"""

QUESTIONS = [("What is 2 + 3?", "5"), ("What is 4 + 4?", "8"), ("What is 7 - 2?", "5"),
             ("What is 3 * 3?", "9"), ("What is 9 - 1?", "8")]  # fmt: skip
TIMINGS = ("wall_time", "barrier_wait")


def command(tmp_path, out) -> list[str]:
    program, tasks = tmp_path / "count.tts", tmp_path / "tasks.jsonl"
    program.write_text(PROGRAM)
    lines = [
        {"id": f"q{i}", "input": q, "reference": a, "checker": "math"} for i, (q, a) in enumerate(QUESTIONS)
    ]
    tasks.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return [
        sys.executable, "-m", "ppl.app.cli", "eval", str(program), "--backend", "vllm",
        "--data", str(tasks), "--out", str(out), "--budgets", "2", "--in-flight", "2",
        "--engine", "enable_prefix_caching=false", "--engine", "max_num_seqs=4",
        "--engine", "dtype=float32",  # batch-invariant here, as the engine tier's (tests/conftest.py)
        "--engine", "gpu_memory_utilization=0.1",  # 2 GB (weights, activations and KV cache) leave room for other engines
        "--no-plot", "--no-progress",
    ]  # fmt: skip


def tasks_of(path) -> dict[str, dict]:
    records = (json.loads(line) for line in path.read_text().splitlines())
    return {r["id"]: {k: v for k, v in r.items() if k not in TIMINGS} for r in records if r["kind"] == "task"}


def engine_cores(pid: int) -> list[psutil.Process]:
    """The vLLM engine-core processes among ``pid``'s descendants (vLLM names them)."""
    return [p for p in psutil.Process(pid).children(recursive=True) if "EngineCore" in p.name()]


def test_a_killed_engine_loses_no_finished_task_and_the_resumed_eval_equals_an_uninterrupted_one(tmp_path):
    reference = tmp_path / "reference.jsonl"
    done = subprocess.run(command(tmp_path, reference), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    expected = tasks_of(reference)
    assert len(expected) == len(QUESTIONS)

    out = tmp_path / "killed.jsonl"
    run = command(tmp_path, out)
    child = subprocess.Popen(run, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 600
        while not (out.exists() and out.read_text().count("\n") >= 1):
            assert child.poll() is None, child.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "no task finished within 600 s"
            time.sleep(0.01)
        cores = engine_cores(child.pid)
        assert cores, "the engine core runs in a child process"
        for core in cores:
            core.kill()
        _, stderr = child.communicate(timeout=120)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == 1, stderr[-3000:]
    assert "tts eval: the engine failed:" in stderr
    assert "the vLLM engine process exited (exit code -9)" in stderr
    assert f"the results so far are in {out}; run again to resume" in stderr
    assert "Traceback" not in stderr
    written = tasks_of(out)  # every line whole (json.loads of each), each the uninterrupted one
    assert 1 <= len(written) < len(QUESTIONS), "the kill came after the run had finished"
    assert all(written[k] == expected[k] for k in written)

    resumed = subprocess.run(run, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming {out}: {len(written)} of {len(QUESTIONS)} task runs already done" in resumed.stderr
    final = tasks_of(out)
    assert final == expected
    ids = [json.loads(line)["id"] for line in out.read_text().splitlines() if '"kind": "task"' in line]
    assert sorted(ids) == sorted(expected), "no task twice"
