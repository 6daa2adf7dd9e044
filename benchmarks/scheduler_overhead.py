"""The scheduler's own cost per particle-step, with an engine that answers instantly.

An ``InstantLM`` returns fixed-length segments (8 tokens derived from the request's seed)
with no model behind them, so what is timed is ppl: replaying or resuming programs,
gathering requests, resampling, bookkeeping. The program twists every step and SMC
resamples at every barrier (``ess_threshold=1``, multinomial), the hardest case for copying
particles. Reported: µs of ppl time per particle-step = (wall time − time inside the LM) /
(N · P · T).

The program comes in three forms (``--form``): the decorator program (``python``: copies
replay their record), the same program in ``.tts`` (``tts``: copies go on from their
parent's continuation), and that ``.tts`` program with its continuations switched off
(``tts-replay``), the baseline for the second in the same run.

    python benchmarks/scheduler_overhead.py                      # every configuration
    python benchmarks/scheduler_overhead.py --configs 16,8,8 16,8,64 --repeats 3
    python benchmarks/scheduler_overhead.py --form tts --configs 16,8,200
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence

import numpy as np

import ppl
from ppl.algorithms import SMC
from ppl.interfaces import GenRequest, ScoreRequest, Segment, Usage

CONFIGS = [(16, 8, 8), (1024, 8, 8), (1024, 64, 8), (16, 8, 64), (16, 8, 200)]
SEGMENT_TOKENS = 8


class InstantLM:
    """A language model with no model: each request gets 8 tokens drawn from its seed."""

    name = "instant"
    eos_token_id = 0

    def __init__(self, vocab_size: int = 1000):
        self.vocab_size = vocab_size
        self.usage = Usage()

    def encode(self, text: str) -> tuple[int, ...]:
        return tuple(1 + (ord(c) % (self.vocab_size - 1)) for c in text)

    def decode(self, token_ids: Sequence[int]) -> str:
        return " ".join(map(str, token_ids))

    def chat(self, *, user: str, system: str | None = None) -> tuple[int, ...]:
        return self.encode((system or "") + user)

    def generate(self, requests: Sequence[GenRequest]) -> list[list[Segment]]:
        started = time.perf_counter()
        out = []
        for request in requests:
            rng = np.random.default_rng(request.seed)
            tokens = tuple(int(t) for t in rng.integers(1, self.vocab_size, SEGMENT_TOKENS))
            out.append([Segment(tokens, "", "length", -2.0 * SEGMENT_TOKENS)] * request.n)
        self.usage.record_call(len(requests), started)
        return out

    def logprob(self, requests: Sequence[ScoreRequest]) -> list[float]:
        return [-1.0 * len(r.continuation) for r in requests]


def twisting(steps: int):
    @ppl.program
    def program(lm, prompt):
        ctx = prompt
        for _ in ppl.steps(max=steps):
            s = ppl.gen(lm, ctx, max_tokens=SEGMENT_TOKENS)
            ctx += s.token_ids
            ppl.twist(0.1 * (s.token_ids[0] % 5))
        ppl.score(0.01 * len(ctx))
        return len(ctx)

    return program


TTS = """version 0.1
use lm = model("instant")
program twisting(prompt: tokens, steps: number) -> number {
  let ctx = prompt
  step (max steps) {
    s ~ lm.gen(ctx, max_tokens = 8)
    ctx += s
    twist 0.0004 * s.tokens[0]
  }
  score 0.01 * len(ctx)
  return len(ctx)
}
"""


def program_and_inputs(form: str, lm: InstantLM, problems: int, steps: int):
    """The twisting program in ``form`` and its inputs, one per problem."""
    if form == "python":
        return twisting(steps), [(lm, (1 + i,)) for i in range(problems)]
    from ppl.app import load

    program = load(TTS, filename="twisting.tts", models={"lm": lm}).programs["twisting"]
    if form == "tts-replay":
        program.resumable = None
    return program, [((1 + i,), steps) for i in range(problems)]


def measure(particles: int, problems: int, steps: int, seed: int = 0, form: str = "python") -> dict:
    lm = InstantLM()
    program, inputs = program_and_inputs(form, lm, problems, steps)
    started = time.perf_counter()
    results = SMC(particles, ess_threshold=1.0).run(program, inputs, seed=seed)
    wall = time.perf_counter() - started
    ppl_time = wall - lm.usage.wall_time
    assert all(p.diagnostics.steps == steps - 1 for p in results)
    return {
        "form": form,
        "particles": particles,
        "problems": problems,
        "steps": steps,
        "wall_s": round(wall, 3),
        "engine_s": round(lm.usage.wall_time, 3),
        "us_per_particle_step": round(1e6 * ppl_time / (particles * problems * steps), 1),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="*", help="N,P,T triples (default: all five)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--form", choices=["python", "tts", "tts-replay"], default="python")
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args(argv)
    configs = [tuple(int(x) for x in c.split(",")) for c in args.configs] if args.configs else CONFIGS
    rows = []
    for config in configs:
        for repeat in range(args.repeats):
            row = measure(*config, seed=repeat, form=args.form)
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
