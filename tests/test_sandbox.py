"""The sandbox stops and reports code that loops, hogs memory, uses the network or writes
outside its directory — and a batch goes on after each. The escape attempts are in
tests/test_sandbox_escapes.py."""

from __future__ import annotations

import json
import time

import pytest

from ppl.backends.sandbox import STATUSES, Sandbox, SandboxResult, run_code, run_tests
from ppl.backends.verifiers import check

LIMITS = dict(time_limit=4.0, memory_limit_mb=256)


def test_plain_code_runs_in_a_fresh_directory():
    result = run_code(
        "import os\nopen('out.txt', 'w').write('hi')\nprint(sorted(os.listdir('.')), os.environ['HOME'] == os.getcwd())"
    )
    assert result.status == "passed", result
    assert result.stdout == "['out.txt'] True\n"


def test_an_infinite_loop_is_killed_with_its_process_group(tmp_path):
    started = time.perf_counter()
    result = run_code("while True:\n    pass", **LIMITS)
    assert result.status == "timeout"
    assert time.perf_counter() - started < 10


def test_too_much_memory_is_stopped():
    result = run_code("blob = bytearray(1 << 31)\nprint('allocated')", **LIMITS)
    assert result.status == "memory"
    assert "allocated" not in result.stdout


@pytest.mark.parametrize(
    "code",
    [
        "import socket\nsocket.create_connection(('1.1.1.1', 80), timeout=1)",
        "import urllib.request\nurllib.request.urlopen('http://example.com', timeout=1)",
    ],
)
def test_network_is_refused(code):
    result = run_code(code, **LIMITS)
    assert result.status == "blocked", result
    assert "network" in result.reason


@pytest.mark.parametrize(
    "code",
    [
        "open({path!r}, 'w').write('escaped')",
        "import os\nos.symlink({dir!r}, 'link')\nopen('link/escape.txt', 'w').write('escaped')",
        "import pathlib\npathlib.Path({path!r}).write_text('escaped')",
        "import os\nfd = os.open({path!r}, os.O_WRONLY | os.O_CREAT)",
        "import shutil\nshutil.rmtree({dir!r})",
        "import subprocess\nsubprocess.run(['touch', {path!r}])",
        "import os\nos.system('touch {path}')",
    ],
)
@pytest.mark.parametrize("isolation", ["auto", "fallback"])
def test_writing_outside_the_directory_is_refused(tmp_path, code, isolation):
    """In fallback the hook refuses; namespaced, the host's path is not even there."""
    path = tmp_path / "escape.txt"
    result = run_code(code.format(path=str(path), dir=str(tmp_path)), isolation=isolation, **LIMITS)
    if result.guarantee == "fallback":
        assert result.status == "blocked", result
    else:
        assert result.status in ("blocked", "error") and "escaped" not in result.stdout, result
    assert not path.exists() and tmp_path.exists()


def test_failed_tests_errors_and_passes():
    solution = "def add(a, b):\n    return a + b\n"
    assert run_tests(solution, "assert add(2, 3) == 5").status == "passed"
    failed = run_tests(solution, "assert add(2, 3) == 6, 'wrong sum'")
    assert failed.status == "failed" and "wrong sum" in failed.reason
    unit = "import unittest\nclass T(unittest.TestCase):\n    def test(self):\n        self.assertEqual(add(1, 1), 3)\nunittest.main()"
    assert run_tests(solution, unit).status == "failed"
    error = run_tests("def add(a, b) return", "assert add(1, 1) == 2")
    assert error.status == "error" and "SyntaxError" in error.stderr
    assert run_code("import sys\nsys.exit(3)").status == "failed"
    assert run_code("import sys\nsys.exit(0)").status == "passed"  # no tests: exiting 0 is the end


def test_output_is_truncated():
    result = Sandbox(show_chars=100).run("print('x' * 100000)")
    assert result.status == "passed"
    assert len(result.stdout) < 200 and result.stdout.endswith("[... truncated]")


def test_a_batch_continues_after_each_bad_run(tmp_path):
    codes = [
        "while True:\n    pass",
        "print('one')",
        "blob = bytearray(1 << 31)",
        "import socket\nsocket.socket()",
        "open('/usr/ppl-sandbox-x', 'w')",
        "print('two')",
    ]
    results = Sandbox(**LIMITS).run_many(codes, workers=2)
    assert [r.status for r in results] == ["timeout", "passed", "memory", "blocked", "blocked", "passed"]
    assert all(isinstance(r, SandboxResult) and r.status in STATUSES for r in results)
    assert (results[1].stdout, results[5].stdout) == ("one\n", "two\n")


def test_the_python_tests_checker_runs_in_the_sandbox(tmp_path):
    marker = tmp_path / "ran-here"
    answer = f"open({str(marker)!r}, 'w')\ndef f():\n    return 1"
    assert not check("python_tests", answer, "assert f() == 1")
    assert not marker.exists()
    assert check("python_tests", "def f():\n    return 1", "assert f() == 1")


def test_bad_settings():
    with pytest.raises(ValueError):
        Sandbox(time_limit=0)
    with pytest.raises(ValueError):
        Sandbox(memory_limit_mb=1)
    with pytest.raises(ValueError, match="isolation must be 'auto', 'namespaced' or 'fallback'"):
        Sandbox(isolation="sometimes")
    with pytest.raises(ValueError, match="max_open_files must be at least 16"):
        Sandbox(max_open_files=3)
    with pytest.raises(TypeError):
        run_code(b"print(1)")


ECHO = """version 0.1
use lm = model("reasoning-demo")

program solve(problem: text) -> text {
  return problem
}

infer solve with importance(particles = 1)
"""


def test_tts_eval_code_tasks_record_the_guarantee_and_fail_a_cheat(tmp_path):
    from ppl.app.cli import main

    (tmp_path / "echo.tts").write_text(ECHO)
    tests = "assert add(2, 3) == 5"
    tasks = [
        {"id": "honest", "input": "def add(a, b):\n    return a + b\n", "reference": tests},
        {
            "id": "exits",
            "input": "def add(a, b):\n    return 0\nimport os\nos._exit(0)\n",
            "reference": tests,
        },
        {"id": "after", "input": "def add(a, b):\n    return b + a\n", "reference": tests},
    ]
    data = tmp_path / "tasks.jsonl"
    data.write_text("".join(json.dumps({**t, "checker": "python_tests"}) + "\n" for t in tasks))
    out = tmp_path / "r.jsonl"
    argv = ["eval", str(tmp_path / "echo.tts"), "--data", str(data), "--out", str(out), "--budgets", "1"]
    assert main([*argv, "--no-progress"]) == 0
    records = {r["id"]: r for r in map(json.loads, out.read_text().splitlines()) if r["kind"] == "task"}
    assert {k: r["correct"] for k, r in records.items()} == {
        "honest": True,
        "exits": False,
        "after": True,
    }
    assert {r["sandbox"] for r in records.values()} == {Sandbox().guarantee()}
