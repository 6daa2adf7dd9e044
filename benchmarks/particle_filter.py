"""ppl's SMC against the engine bound on the shared particle-filtering workload.

The engine bound is a hand-written step loop on the same ``vllm.LLM`` engine, in the same
process: one ``LLM.generate`` call per step for every live particle of every prompt, the
hash reward, multinomial resampling every step, finished particles kept and not extended.
ppl runs the same workload as a program under ``SMC(resample="multinomial",
ess_threshold=1)``. Both are timed on the same engine, alternating, after a warm-up.

    python benchmarks/particle_filter.py                 # the full workload (8 × 16)
    python benchmarks/particle_filter.py --prompts 2     # a quick look
    python benchmarks/particle_filter.py --dataset examples/tasks/arithmetic.jsonl --in-flight 128 --chunk 8
        # the dataset workload: ppl with at most 128 particles in flight, against the loop run
        # 8 problems at a time (the same memory bound) and against the loop with all at once

With ``--dataset`` the prompts are the task set's inputs (with the workload's instruction to
put a blank line between steps), and three systems alternate: ``ppl`` (SMC streaming the
dataset through ``--in-flight`` particles), ``loop`` (the hand-written loop, ``--chunk``
problems at a time) and ``loop_all`` (the loop with every problem in one batch). Engine
occupancy over time of the last repeat is plotted to ``--plot``.

Writes a JSON summary to stdout (and --out); see benchmarks/README.md for results.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import time
from pathlib import Path

import numpy as np

import ppl
from ppl.algorithms import SMC
from ppl.backends.vllm import VLLM

WORKLOAD = Path(__file__).resolve().parents[2] / "shared" / "bench" / "workload.json"


def hash_reward(prompt: str, partial: str) -> float:
    """The workload's zero-cost reward: logit of a uniform hash of (prompt, partial text)."""
    u = int.from_bytes(
        hashlib.blake2b((prompt + "\x00" + partial).encode(), digest_size=8).digest(), "little"
    )
    r = min(max((u + 0.5) / 2**64, 1e-7), 1 - 1e-7)
    return math.log(r) - math.log1p(-r)


def make_program(work: dict):
    delimiter, max_steps, max_tokens, temperature = (
        work["step_delimiter"],
        work["max_steps"],
        work["max_tokens_per_step"],
        work["temperature"],
    )

    @ppl.program
    def particle_filter(lm, prompt: str):
        start = lm.chat(user=prompt)
        ctx = start
        for _ in ppl.steps(max=max_steps):
            s = ppl.gen(lm, ctx, stop=[delimiter], max_tokens=max_tokens, temperature=temperature)
            ctx += s.token_ids
            ppl.score(hash_reward(prompt, lm.decode(ctx[len(start) :])))
            if s.finish_reason != "stop":  # EOS, or no delimiter within max_tokens: finished
                break
        return lm.decode(ctx[len(start) :])

    return particle_filter


def engine_bound(lm: VLLM, work: dict, prompts: list[str], particles: int, seed: int, occupancy=None) -> dict:
    """The hand-written loop: one generate call per step for all live particles."""
    from vllm import SamplingParams

    occupancy = [] if occupancy is None else occupancy
    rng = np.random.default_rng(seed)
    starts = [lm.chat(user=p) for p in prompts]
    # state per prompt: list of (token ids after the prompt, finished?)
    state = [[((), False) for _ in range(particles)] for _ in prompts]
    calls, generated, prompt_tokens, cached = 0, 0, 0, 0
    for _ in range(work["max_steps"]):
        live = [(i, j) for i in range(len(prompts)) for j in range(particles) if not state[i][j][1]]
        if not live:
            break
        params = [
            SamplingParams(
                temperature=work["temperature"],
                max_tokens=work["max_tokens_per_step"],
                stop=[work["step_delimiter"]],
                include_stop_str_in_output=True,
                seed=int(rng.integers(2**31)),
                logprobs=0,
            )
            for _ in live
        ]
        prompts_ids = [{"prompt_token_ids": list(starts[i] + state[i][j][0])} for i, j in live]
        occupancy.append((time.perf_counter(), len(live)))
        outputs = lm.engine.generate(prompts_ids, params, use_tqdm=False)
        occupancy.append((time.perf_counter(), 0))
        calls += 1
        prompt_tokens += sum(len(p["prompt_token_ids"]) for p in prompts_ids)
        cached += sum(out.num_cached_tokens or 0 for out in outputs)
        increments = np.zeros((len(prompts), particles))
        for (i, j), out in zip(live, outputs):
            c = out.outputs[0]
            generated += len(c.token_ids)
            ids = state[i][j][0] + tuple(c.token_ids)
            finished = not isinstance(c.stop_reason, str)
            state[i][j] = (ids, finished)
            increments[i, j] = hash_reward(prompts[i], lm.decode(ids))
        for i in range(len(prompts)):
            weights = np.exp(increments[i] - increments[i].max())
            ancestors = rng.choice(particles, size=particles, p=weights / weights.sum())
            state[i] = [state[i][a] for a in ancestors]
    return {
        "engine_calls": calls,
        "generated_tokens": generated,
        "prefix_cache_hit_rate": cached / max(1, prompt_tokens),
    }


def chunked_loop(lm, work, prompts, particles, seed, chunk, occupancy) -> dict:
    """The loop over a dataset, ``chunk`` problems at a time (a bound on memory in flight)."""
    total = {"engine_calls": 0, "generated_tokens": 0}
    hits = []
    for start in range(0, len(prompts), chunk):
        part = engine_bound(lm, work, prompts[start : start + chunk], particles, seed + start, occupancy)
        total["engine_calls"] += part["engine_calls"]
        total["generated_tokens"] += part["generated_tokens"]
        hits.append(part["prefix_cache_hit_rate"])
    total["prefix_cache_hit_rate"] = float(np.mean(hits))
    return total


def run_ppl(lm, program, prompts, particles, seed, in_flight=None, occupancy=None) -> dict:
    before_calls, before_tokens = lm.usage.calls, lm.usage.generated_tokens
    before_prompt, before_cached = lm.usage.prompt_tokens, lm.usage.cached_prompt_tokens
    before_engine = lm.usage.wall_time
    results = SMC(particles, resample="multinomial", ess_threshold=1.0).run(
        program, [(lm, p) for p in prompts], seed=seed, max_in_flight=in_flight
    )
    if occupancy is not None:
        occupancy.extend((results.stats.started + t, n) for t, n in results.stats.occupancy)
    return {
        "engine_calls": lm.usage.calls - before_calls,
        "generated_tokens": lm.usage.generated_tokens - before_tokens,
        "prefix_cache_hit_rate": (lm.usage.cached_prompt_tokens - before_cached)
        / max(1, lm.usage.prompt_tokens - before_prompt),
        "engine_time": lm.usage.wall_time - before_engine,
        "barrier_wait": float(sum(p.diagnostics.barrier_wait for p in results)),
        "peak_in_flight": results.stats.peak_in_flight,
    }


def plot_occupancy(traces: dict, path: Path) -> None:
    """Sequences in the engine over time, one line per system (a step function)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(9, 4.5))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for name, trace in traces.items():
        if trace:
            t0 = trace[0][0]
            axes.step([t - t0 for t, _ in trace], [n for _, n in trace], where="post", label=name)
    axes.set_xlabel("seconds since the run started")
    axes.set_ylabel("sequences in the engine")
    axes.set_title("Engine occupancy: ppl streaming against the hand-written step loop")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def dataset_main(args, work, lm) -> None:
    """The dataset workload: ppl, the chunked loop and the all-at-once loop, alternating."""
    tasks = [json.loads(line) for line in args.dataset.read_text().splitlines() if line.strip()]
    suffix = " Solve it step by step, and put a blank line between steps."
    prompts = [t["input"] + suffix for t in tasks][: args.prompts]
    particles = args.particles or work["particles_per_prompt"]
    program = make_program(work)
    runs = {"ppl": [], "loop": [], "loop_all": []}
    traces = {}
    for repeat in range(args.repeats):
        traces = {name: [] for name in runs}
        runs["ppl"].append(
            measure(
                "ppl",
                lambda r=repeat, tr=traces: run_ppl(
                    lm, program, prompts, particles, r, args.in_flight, tr["ppl"]
                ),
            )
        )
        runs["loop"].append(
            measure(
                "loop",
                lambda r=repeat, tr=traces: chunked_loop(
                    lm, work, prompts, particles, r, args.chunk, tr["loop"]
                ),
            )
        )
        runs["loop_all"].append(
            measure(
                "loop_all",
                lambda r=repeat, tr=traces: chunked_loop(
                    lm, work, prompts, particles, r, len(prompts), tr["loop_all"]
                ),
            )
        )
    summary = _summary(runs)
    for name in ("loop", "loop_all"):
        summary[f"ppl_over_{name}_wall_time"] = summary["ppl"]["wall_time"] / summary[name]["wall_time"]
        summary[f"ppl_over_{name}_time_per_token"] = (
            summary[name]["tokens_per_second"] / summary["ppl"]["tokens_per_second"]
        )
    summary["setup"] = {
        "problems": len(prompts),
        "particles": particles,
        "in_flight": args.in_flight,
        "chunk": args.chunk,
        "repeats": args.repeats,
    }
    if args.plot:
        plot_occupancy(traces, args.plot)
    text = json.dumps(summary, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


def _summary(runs: dict) -> dict:
    summary = {}
    for name, results in runs.items():
        summary[name] = {
            key: float(np.mean([r[key] for r in results]))
            for key in results[0]
            if isinstance(results[0][key], float | int)
        }
        summary[name]["wall_times"] = [round(r["wall_time"], 2) for r in results]
    return summary


def measure(label: str, run) -> dict:
    started = time.perf_counter()
    result = run()
    result["wall_time"] = time.perf_counter() - started
    result["tokens_per_second"] = result["generated_tokens"] / result["wall_time"]
    print(f"{label}: {result}", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", type=Path, default=WORKLOAD)
    parser.add_argument("--prompts", type=int, default=None, help="use the first N prompts")
    parser.add_argument("--particles", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=2, help="alternating runs of each system")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--dataset", type=Path, default=None, help="a task set (JSONL): the dataset workload")
    parser.add_argument("--in-flight", type=int, default=None, help="ppl's limit on particles in flight")
    parser.add_argument("--chunk", type=int, default=8, help="problems per batch of the dataset loop")
    parser.add_argument("--plot", type=Path, default=None, help="engine occupancy over time (PNG)")
    args = parser.parse_args()
    work = json.loads(args.workload.read_text())
    if args.dataset is not None:
        lm = VLLM(**dict(work["engine"]))
        lm.generate([ppl.GenRequest(lm.chat(user="Hello"), max_tokens=8, seed=0)])  # start and warm up
        dataset_main(args, work, lm)
        lm.close()
        return
    prompts = work["prompts"][: args.prompts]
    particles = args.particles or work["particles_per_prompt"]
    engine = dict(work["engine"])
    lm = VLLM(**engine)
    print(f"engine started in {lm.engine and lm.engine_start_seconds:.1f} s", flush=True)
    lm.generate([ppl.GenRequest(lm.chat(user=prompts[0]), max_tokens=8, seed=0)])  # warm-up
    program = make_program(work)
    runs = {"bound": [], "ppl": []}
    for repeat in range(args.repeats):
        runs["bound"].append(
            measure("bound", lambda r=repeat: engine_bound(lm, work, prompts, particles, seed=r))
        )

        runs["ppl"].append(measure("ppl", lambda r=repeat: run_ppl(lm, program, prompts, particles, r)))
    summary = _summary(runs)
    summary["ratio_wall_time"] = summary["ppl"]["wall_time"] / summary["bound"]["wall_time"]
    summary["ratio_time_per_token"] = (
        summary["bound"]["tokens_per_second"] / summary["ppl"]["tokens_per_second"]
    )
    summary["setup"] = {
        "prompts": len(prompts),
        "particles": particles,
        "repeats": args.repeats,
        "engine": engine,
    }
    text = json.dumps(summary, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    lm.close()


if __name__ == "__main__":
    main()
