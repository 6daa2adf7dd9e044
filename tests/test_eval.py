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
