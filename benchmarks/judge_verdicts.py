"""LM-as-judge verdicts two ways on the real engine: one next-token request per item
against two scored continuations per item.

The same judge (the embedded SmolLM2 asked ``DEFAULT_QUESTION``) reads the same
(problem, answer) items

* **next-token** — ``Judge(lm, q)``: one prefix-cached, one-token request per item with
  ``logprob_token_ids = [Yes, No]``;
* **scoring** — ``Judge(lm, q, next_token=False)``: two ``prompt_logprobs`` passes per item
  over the whole prompt ("Yes" appended, "No" appended), which bypass the prefix cache.

The answers are varied fixed texts (a problem's particles), tagged with the repetition so
that no repetition finds another's whole prompts in the cache — only the problem's prefix
is shared (and on CPUs only in whole 128-token KV blocks), as between the particles of a run. After a warm-up, the two
are timed alternating (which goes first alternates too), each on a fresh memo; the figures
are the time per verdict, engine requests, prompt tokens served from the cache and the
largest difference between the two paths' verdicts.

    python benchmarks/judge_verdicts.py                     # 4 problems × 16 answers, 4 repetitions
    python benchmarks/judge_verdicts.py --problems 2 --reps 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from prm_scoring import PROBLEMS

from ppl.backends.judge import Judge
from ppl.backends.prm import DEFAULT_QUESTION
from ppl.backends.vllm import VLLM
from ppl.interfaces import RewardRequest


def answers(problems: list[str], per_problem: int) -> list[tuple[str, str]]:
    """Varied answers to each problem (fixed texts: the figure is the judge's cost, and
    generating them would dominate this benchmark's run time on a busy CPU)."""
    forms = ["The answer is {k}.", "{k}", "I think it is {k}, since we add them.", "So we get {k} in all."]
    return [(p, forms[i % len(forms)].format(k=10 + 3 * i)) for p in problems for i in range(per_problem)]


def run(lm: VLLM, items: list[tuple[str, str]], next_token: bool) -> tuple[list[float], dict]:
    judge = Judge(lm, DEFAULT_QUESTION, next_token=next_token)
    before = (lm.usage.requests, lm.usage.cached_prompt_tokens, lm.usage.prompt_tokens)
    started = time.perf_counter()
    values = judge.reward([RewardRequest(item) for item in items])
    seconds = time.perf_counter() - started
    return values, {
        "seconds": seconds,
        "engine_requests": lm.usage.requests - before[0],
        "cached_prompt_tokens": lm.usage.cached_prompt_tokens - before[1],
        "prompt_tokens": lm.usage.prompt_tokens - before[2],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=4)
    parser.add_argument("--per-problem", type=int, default=16)
    parser.add_argument("--reps", type=int, default=4)
    args = parser.parse_args()
    lm = VLLM(max_num_seqs=64)
    base = answers(PROBLEMS[: args.problems], args.per_problem)
    times = {"next_token": [], "scoring": []}
    worst = 0.0
    for rep in range(args.reps + 1):  # repetition 0 is the warm-up
        items = [(p, f"{a}\n\n(attempt {rep})") for p, a in base]
        order = (True, False) if rep % 2 else (False, True)
        got = {}
        for next_token in order:
            values, figures = run(lm, items, next_token)
            key = "next_token" if next_token else "scoring"
            got[key] = values
            print(json.dumps({"rep": rep, "path": key, "items": len(items), **figures}), flush=True)
            if rep:
                times[key].append(figures["seconds"] / len(items))
        diff = max(abs(a - b) for a, b in zip(got["next_token"], got["scoring"]))
        worst = max(worst, diff)
        print(json.dumps({"rep": rep, "max_abs_difference": diff}), flush=True)
    new, old = statistics.median(times["next_token"]), statistics.median(times["scoring"])
    print(
        json.dumps(
            {
                "ms_per_verdict_next_token": round(1000 * new, 2),
                "ms_per_verdict_scoring": round(1000 * old, 2),
                "ratio_next_token_over_scoring": round(new / old, 3),
                "max_abs_difference": worst,
            }
        )
    )
    lm.close()


if __name__ == "__main__":
    main()
