"""Constrained SMC on vLLM against SMC with `condition` after sampling, at equal particles.

The task: arithmetic questions whose answer must be written as ``PATTERN`` ("The answer is
N."). Two programs, the same target — the LM conditioned on its reply matching the pattern:

* ``constrained``: ``gen(lm, ctx, regex=PATTERN)`` — proposed from vLLM's structured outputs
  (xgrammar masks) and weighted by the mass the mask allowed (one scoring call per segment);
* ``condition``: ``gen(lm, ctx)`` then ``condition(re.fullmatch(PATTERN, text))`` — every
  particle whose free reply does not match dies.

Both run under ``SMC(particles)`` on the same engine, alternating, after a warm-up. Reported:
wall time, valid outputs (finished particles whose text matches, over all problems) and
valid outputs per second, and how many problems got at least one valid answer.

    python benchmarks/constrained.py                      # 8 problems × 16 particles, 2 repeats
    python benchmarks/constrained.py --problems 2 --repeats 1

Writes a JSON summary to stdout (and --out); results in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

import ppl
from ppl.algorithms import SMC
from ppl.backends.vllm import VLLM

PATTERN = r"The answer is [0-9]{1,4}\."
QUESTION = "What is {a} + {b}? Reply with one sentence of the form 'The answer is N.'"


@ppl.program
def constrained(lm, question: str, max_tokens: int):
    ctx = lm.chat(user=question)
    s = ppl.gen(lm, ctx, max_tokens=max_tokens, regex=PATTERN)
    return s.text


@ppl.program
def condition_after(lm, question: str, max_tokens: int):
    ctx = lm.chat(user=question)
    s = ppl.gen(lm, ctx, max_tokens=max_tokens)
    ppl.condition(re.fullmatch(PATTERN, s.text.strip()) is not None, "did not match the pattern")
    return s.text.strip()


def run(lm, program, questions, particles: int, max_tokens: int, seed: int) -> dict:
    started = time.perf_counter()
    results = SMC(particles, resample="systematic").run(
        program, [(lm, q, max_tokens) for q in questions], seed=seed
    )
    wall = time.perf_counter() - started
    valid = [
        sum(1 for p in post.particles if p.status == "finished" and re.fullmatch(PATTERN, p.value))
        for post in results
    ]
    return {
        "wall_time": round(wall, 2),
        "valid_outputs": sum(valid),
        "valid_per_second": round(sum(valid) / wall, 2),
        "problems_with_a_valid_answer": sum(v > 0 for v in valid),
        "problems": len(questions),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--problems", type=int, default=8)
    parser.add_argument("--particles", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    questions = [QUESTION.format(a=3 * i + 2, b=5 * i + 7) for i in range(args.problems)]
    lm = VLLM(max_num_seqs=256)
    run(lm, constrained, questions[:1], 2, args.max_tokens, seed=99)  # warm-up: engine, grammar
    run(lm, condition_after, questions[:1], 2, args.max_tokens, seed=99)
    systems = {"constrained": constrained, "condition": condition_after}
    rows: dict[str, list[dict]] = {name: [] for name in systems}
    for repeat in range(args.repeats):
        for name, program in systems.items():
            rows[name].append(run(lm, program, questions, args.particles, args.max_tokens, seed=repeat))
    summary = {
        "model": lm.name,
        "problems": args.problems,
        "particles": args.particles,
        "max_tokens": args.max_tokens,
        "pattern": PATTERN,
        "runs": rows,
        "mean": {
            name: {
                key: round(sum(r[key] for r in runs) / len(runs), 2)
                for key in ("wall_time", "valid_outputs", "valid_per_second", "problems_with_a_valid_answer")
            }
            for name, runs in rows.items()
        },
    }
    text = json.dumps(summary, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    lm.close()


if __name__ == "__main__":
    main()
