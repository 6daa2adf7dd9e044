"""An adaptive interpreter against fixed N, from one ``tts eval`` results file.

    python benchmarks/compute/compare.py benchmarks/compute/sc.jsonl [majority.png]
    python benchmarks/compute/compare.py benchmarks/compute/restarts20.jsonl restarts.png \
        --arm restarts --metric weighted_vote

For each maximum N: fixed N (best_of_n's majority@N, or ``--metric weighted_vote``: weighted@N)
and the adaptive arm (``--arm``, default adaptive self-consistency; at most N runs, or N
slots), with generated and prompt tokens and runs per task; then, for each adaptive row,
the cheapest fixed N at least as accurate and the generated tokens the arm saves (negative:
it spends more) against it. ``--auc``: how well the runs' weights separate right from wrong
answers in best_of_n's largest budget (the AUC over all runs, and within tasks).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ppl.app.evaluate import read_results, summarise


def plot(fixed: dict, adaptive: dict, path: str, arm: str = "adaptive", metric: str = "majority") -> None:
    """The metric's accuracy against generated tokens per task, both arms, points labelled by N."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 4), dpi=120)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    budget = "at most N" if arm == "adaptive" else "N"
    arms = ((f"fixed N (best_of_n, {metric}@N)", fixed), (f"{arm} ({budget})", adaptive))
    for name, rows in arms:
        points = sorted((r["tokens_out"], r[metric], n) for n, r in rows.items())
        axes.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=name)
        for x, y, n in points:
            axes.annotate(str(n), (x, y), textcoords="offset points", xytext=(3, 5), fontsize=7)
    axes.set_xscale("log")
    axes.set_xlabel("generated tokens per task (mean)")
    axes.set_ylabel({"majority": "majority-vote", "weighted_vote": "weighted-vote"}[metric] + " accuracy")
    axes.set_ylim(-0.02, 1.02)
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path)


def weight_auc(path: str) -> tuple[float, float]:
    """The AUC of best_of_n's run weights for right against wrong runs, at its largest budget:
    over all runs pooled, and within tasks (pairs from the same task only); ties count 1/2."""
    tasks = [r for r in read_results(Path(path)) if r.get("kind") == "task" and r["algorithm"] == "best_of_n"]
    largest = max(r["budget"] for r in tasks)
    runs = [[(w, c) for _, w, c in r["samples"] if w is not None] for r in tasks if r["budget"] == largest]

    def auc(pairs: list) -> tuple[float, int]:
        right, wrong = [w for w, c in pairs if c], [w for w, c in pairs if not c]
        wins = sum((a > b) + 0.5 * (a == b) for a in right for b in wrong)
        return wins, len(right) * len(wrong)

    pooled = auc([run for task in runs for run in task])
    within = [auc(task) for task in runs]
    return pooled[0] / pooled[1], sum(w for w, _ in within) / sum(n for _, n in within)


def main(path: str, png: str | None = None, arm: str = "adaptive", metric: str = "majority") -> None:
    rows = summarise(read_results(Path(path)))
    fixed = {r["budget"]: r for r in rows if r["algorithm"] in ("best_of_n", "importance")}
    adaptive = {r["budget"]: r for r in rows if r["algorithm"] == arm}
    if not adaptive:
        raise SystemExit(f"{path} has no rows of {arm!r}")
    print(
        f"| max N | fixed {metric}@N | fixed tokens out/in per task | {arm} {metric} "
        f"| {arm} tokens out/in per task | {arm} runs/task |"
    )
    print("|---|---|---|---|---|---|")
    for n in sorted(set(fixed) | set(adaptive)):
        f, a = fixed.get(n), adaptive.get(n)
        cells = [str(n)]
        cells += [f"{f[metric]:.3f}", f"{f['tokens_out']:.1f} / {f['tokens_in']:.0f}"] if f else ["", ""]
        if a:
            cells += [f"{a[metric]:.3f}", f"{a['tokens_out']:.1f} / {a['tokens_in']:.0f}", f"{a['runs']:.2f}"]
        else:
            cells += ["", "", ""]
        print("| " + " | ".join(cells) + " |")
    print()
    print(
        f"| {arm} max N | its {metric} | cheapest fixed N as accurate | its tokens/task | tokens saved/task |"
    )
    print("|---|---|---|---|---|")
    for n, a in sorted(adaptive.items()):
        matches = [f for f in fixed.values() if f[metric] >= a[metric]]
        if not matches:
            print(f"| {n} | {a[metric]:.3f} | none is as accurate | | |")
            continue
        f = min(matches, key=lambda r: r["tokens_out"])
        saved = f["tokens_out"] - a["tokens_out"]
        print(f"| {n} | {a[metric]:.3f} | {f['budget']} | {f['tokens_out']:.1f} | {saved:.1f} |")
    if png:
        plot(fixed, adaptive, png, arm, metric)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results")
    parser.add_argument("png", nargs="?")
    parser.add_argument("--arm", default="adaptive", help="the interpreter compared with best_of_n")
    parser.add_argument("--metric", default="majority", choices=("majority", "weighted_vote"))
    parser.add_argument(
        "--auc", action="store_true", help="also the weights' AUC for right against wrong runs"
    )
    options = parser.parse_args()
    main(options.results, options.png, options.arm, options.metric)
    if options.auc:
        pooled, within = weight_auc(options.results)
        print(
            f"\nbest_of_n's run weights, right against wrong: AUC {pooled:.3f} pooled, {within:.3f} within tasks"
        )
