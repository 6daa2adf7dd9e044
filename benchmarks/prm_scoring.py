"""Step verdicts from vLLM's pooling runner against the same verdicts from an LM judge.

The same model (the embedded SmolLM2) judges every step of the same solutions two ways:

* **pooling** — ``PoolingPRM``: the model converted into a Yes/No step classifier; one
  ``LLM.encode`` pass per solution reads the verdicts of all its steps at once;
* **judge** — ``JudgeSteps(Judge(VLLM()))``: the model asked the question about every
  prefix, two scored continuations ("Yes", "No") per prefix through ``prompt_logprobs``.

The solutions are generated once by the default model (seeded), split at blank lines. Both
are timed alternating on fresh memos, after a warm-up; the result is the ratio of time per
step verdict, pooling / judge, in the same run.

    python benchmarks/prm_scoring.py                   # 8 problems × 8 solutions
    python benchmarks/prm_scoring.py --problems 2      # a quick look
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from ppl.backends.judge import Judge
from ppl.backends.pooling import PoolingPRM
from ppl.backends.prm import DEFAULT_QUESTION, JudgeSteps, ProcessReward
from ppl.backends.vllm import VLLM
from ppl.interfaces import GenRequest, RewardRequest

PROBLEMS = [
    "Tom has 5 apples and buys 7 more. How many apples does he have?",
    "A box holds 6 rows of 4 eggs. How many eggs are in the box?",
    "Sara reads 12 pages a day for 5 days. How many pages does she read?",
    "There are 30 birds; 13 fly away. How many are left?",
    "Omar has 3 bags with 9 marbles each and gives away 5. How many are left?",
    "A train travels 60 km an hour for 3 hours. How far does it go?",
    "Maya had 45 stickers and gave 18 to Ben. How many does she have now?",
    "What is 14 + 27?",
]
SYSTEM = "Solve step by step. Separate steps by a blank line."


def solutions(
    lm: VLLM, problems: list[str], per_problem: int, seed: int
) -> list[tuple[str, tuple[str, ...]]]:
    """Seeded step-by-step solutions from the model, split into steps at blank lines."""
    requests = [
        GenRequest(lm.chat(system=SYSTEM, user=p), max_tokens=160, temperature=0.8, seed=seed + i, n=1)
        for p in problems
        for i in range(per_problem)
    ]
    items = []
    for i, (segment,) in enumerate(lm.generate(requests)):
        problem = problems[i // per_problem]
        steps = tuple(s for s in segment.text.split("\n\n") if s.strip()) or ("(no answer)",)
        items.append((problem, steps[:6]))
    return items


def timed(make_reward, items) -> float:
    reward = make_reward()
    started = time.perf_counter()
    reward.reward([RewardRequest((p, list(s))) for p, s in items])
    return time.perf_counter() - started


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=8)
    parser.add_argument("--solutions", type=int, default=8, help="solutions per problem")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)

    lm = VLLM(max_num_seqs=64, gpu_memory_utilization=0.1)
    pooling = PoolingPRM(max_num_seqs=64, gpu_memory_utilization=0.1)
    try:
        return run(lm, pooling, args)
    finally:
        lm.close()
        pooling.close()


def run(lm: VLLM, pooling: PoolingPRM, args) -> dict:
    items = solutions(lm, PROBLEMS[: args.problems], args.solutions, args.seed)
    verdicts = sum(len(s) for _, s in items)
    systems = {
        "pooling": lambda: ProcessReward(pooling, "prod"),
        "judge": lambda: ProcessReward(JudgeSteps(Judge(lm, DEFAULT_QUESTION)), "prod"),
    }
    for make in systems.values():  # warm-up: engines started, kernels loaded
        timed(make, items[:2])
    times = {name: [] for name in systems}
    for _ in range(args.repeats):
        for name, make in systems.items():
            times[name].append(timed(make, items))
    summary = {
        "problems": args.problems,
        "solutions": len(items),
        "step_verdicts": verdicts,
        "seconds": {name: [round(t, 3) for t in ts] for name, ts in times.items()},
        "ms_per_verdict": {
            name: round(1000 * statistics.mean(ts) / verdicts, 2) for name, ts in times.items()
        },
        "ratio_pooling_to_judge": round(
            statistics.mean(times["pooling"]) / statistics.mean(times["judge"]), 3
        ),
        "ratio_per_pair": [round(p / j, 3) for p, j in zip(times["pooling"], times["judge"])],
    }
    text = json.dumps(summary, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return summary


if __name__ == "__main__":
    main()
