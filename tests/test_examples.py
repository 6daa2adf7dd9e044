"""The examples run as they are, and their answers agree with exact enumeration."""

from __future__ import annotations

import runpy
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def load(name: str) -> dict:
    return runpy.run_path(str(EXAMPLES / name), run_name="example")


def test_constrained_generation(capsys):
    smc, exact = load("constrained_generation.py")["main"]()
    assert smc.log_evidence == pytest.approx(exact.log_evidence, abs=0.1)
    assert all(" dog" not in sentence for sentence in smc.distribution())
    assert len(smc.diagnostics.deaths) > 0
    assert "particles died on the way" in capsys.readouterr().out


def test_reward_tilted(capsys):
    smc, best_of_n, exact = load("reward_tilted.py")["main"]()
    cats = lambda text: text.count(" cat")  # noqa: E731
    assert smc.log_evidence == pytest.approx(exact.log_evidence, abs=0.1)
    assert smc.expectation(cats) == pytest.approx(exact.expectation(cats), abs=0.1)
    assert smc.diagnostics.resampling_events >= 1
    assert "log Z: exact" in capsys.readouterr().out


@pytest.mark.parametrize("name", sorted(p.name for p in EXAMPLES.glob("*.py")))
def test_every_example_runs_as_a_script(name):
    done = subprocess.run([sys.executable, str(EXAMPLES / name)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip()
