"""`tts` on the embedded default model through the real vLLM engine, as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "particle_filter.tts"


def tts(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ppl.app.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_render_on_the_default_model_matches_its_chat_template(default_lm):
    done = tts("render", EXAMPLE, "--backend", "vllm", "--input", "What is 2 + 2?", "--first")
    assert done.returncode == 0, done.stderr
    ids = json.loads(done.stdout.strip().splitlines()[-1])
    expected = default_lm.chat(
        system="Solve step by step. Separate steps by a blank line.", user="What is 2 + 2?"
    )
    assert tuple(ids) == expected
    assert "starting the vLLM engine" not in done.stderr  # --first starts no engine


def test_run_on_the_default_model_produces_real_generations(tmp_path):
    out = tmp_path / "results.jsonl"
    done = tts(
        "run", EXAMPLE, "--backend", "vllm", "--input", "What is 2 + 2?", "--particles", "2",
        "--engine", "max_num_seqs=16", "--out", out,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "starting the vLLM engine for smollm2-135m-instruct" in done.stderr
    (line,) = out.read_text().splitlines()
    result = json.loads(line)
    assert result["input"] == {"problem": "What is 2 + 2?"}
    assert isinstance(result["answer"], str) and result["answer"].strip()
    assert "1 problem in" in done.stdout
