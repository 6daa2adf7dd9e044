"""The README's main job, timed against another checkout of ppl, alternating.

Each run is a fresh ``tts run examples/particle_filter.tts --backend vllm --input ...`` in
its own process (the engine starts each time, as a user's run does), with the checkout
chosen by ``PPL_ROOT`` on a development install, or by ``--baseline-python``: a Python
whose ``ppl`` is the baseline. One warm-up run of each comes first (not counted).

    python benchmarks/main_job.py --baseline /path/to/acab294-checkout --repeats 2

The figure is wall time of the whole command, and the run's own time after the engine
started (``tts``'s summary line, or the wall time less engine start-up where the baseline
does not report it).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
RUN = "import importlib, sys; m = importlib.import_module(sys.argv[1]); sys.argv = sys.argv[1:]; sys.exit(m.main())"


def cli_module(root: Path) -> str:
    return "ppl.app.cli" if (root / "app" / "cli.py").exists() else "ppl.cli"


def run_once(root: Path, question: str, seed: int) -> dict:
    env = dict(os.environ, PPL_ROOT=str(root), PYTHONPATH=str(root))
    command = [
        sys.executable,
        "-c",
        RUN,
        cli_module(root),
        "run",
        str(root / "examples" / "particle_filter.tts"),
    ]
    command += ["--backend", "vllm", "--input", question, "--seed", str(seed)]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{root}: tts run failed ({done.returncode}):\n{done.stderr[-3000:]}")
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    record = lines[0] if lines else {}
    diagnostics = record.get("diagnostics") or {}
    start_up = re.search(r"engine (?:started|ready) in ([0-9.]+) ?s", done.stderr)
    return {
        "wall_time": wall,
        "engine_start": float(start_up.group(1)) if start_up else None,
        "answer": record.get("answer", record.get("best")),
        # the record's own figures (older checkouts keep them under "diagnostics")
        "generated_tokens": record.get("tokens_out", diagnostics.get("tokens_out")),
        "run_time": record.get("wall_time", diagnostics.get("wall_time")),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, required=True, help="the other checkout")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--question", default="What is 7 * 6?")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--no-warm-up", dest="warm_up", action="store_false", help="skip the warm-up runs")
    args = parser.parse_args()
    systems = {"now": HERE, "baseline": args.baseline.resolve()}
    for name, root in (
        systems.items() if args.warm_up else ()
    ):  # warm-up: model conversion, caches, page cache
        print(f"warm-up {name}: {run_once(root, args.question, 100)['wall_time']:.1f} s", flush=True)
    runs: dict[str, list[dict]] = {name: [] for name in systems}
    for repeat in range(args.repeats):
        for name, root in systems.items():
            result = run_once(root, args.question, repeat)
            runs[name].append(result)
            print(f"{name} #{repeat}: {json.dumps(result)}", flush=True)
    summary = {
        name: {
            "wall_times": [round(r["wall_time"], 1) for r in rs],
            "mean": sum(r["wall_time"] for r in rs) / len(rs),
        }
        for name, rs in runs.items()
    }
    for name, rs in runs.items():  # the run after the engine started, per generated token
        after = [(r["run_time"] - (r["engine_start"] or 0)) / r["generated_tokens"] for r in rs]
        summary[name]["ms_per_token_after_start"] = [round(1000 * a, 1) for a in after]
    summary["ratio_time_per_token"] = sum(summary["now"]["ms_per_token_after_start"]) / sum(
        summary["baseline"]["ms_per_token_after_start"]
    )
    summary["ratio_now_over_baseline"] = summary["now"]["mean"] / summary["baseline"]["mean"]
    summary["pair_ratios"] = [
        round(a["wall_time"] / b["wall_time"], 3) for a, b in zip(runs["now"], runs["baseline"])
    ]
    text = json.dumps({"summary": summary, "runs": runs}, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
