"""Adaptive self-consistency against fixed N, from one ``tts eval`` results file.

    python benchmarks/compute/compare.py benchmarks/compute/sc.jsonl [majority.png]

For each maximum N: fixed-N self-consistency (best_of_n's majority@N) and adaptive
self-consistency (adaptive's majority, at most N runs), with generated tokens and runs per
task; then, for each adaptive row, the cheapest fixed N at least as accurate and the tokens
adaptive saves (negative: it spends more) against it.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ppl.app.evaluate import read_results, summarise


def plot(fixed: dict, adaptive: dict, path: str) -> None:
    """Majority accuracy against generated tokens per task, both arms, points labelled by N."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 4), dpi=120)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for name, rows in (("fixed N (best_of_n, majority@N)", fixed), ("adaptive (at most N)", adaptive)):
        points = sorted((r["tokens_out"], r["majority"], n) for n, r in rows.items())
        axes.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=name)
        for x, y, n in points:
            axes.annotate(str(n), (x, y), textcoords="offset points", xytext=(3, 5), fontsize=7)
    axes.set_xscale("log")
    axes.set_xlabel("generated tokens per task (mean)")
    axes.set_ylabel("majority-vote accuracy")
    axes.set_ylim(-0.02, 1.02)
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path)


def main(path: str, png: str | None = None) -> None:
    rows = summarise(read_results(Path(path)))
    fixed = {r["budget"]: r for r in rows if r["algorithm"] in ("best_of_n", "importance")}
    adaptive = {r["budget"]: r for r in rows if r["algorithm"] == "adaptive"}
    print(
        "| max N | fixed majority@N | fixed tokens/task | adaptive majority | adaptive tokens/task | adaptive runs/task |"
    )
    print("|---|---|---|---|---|---|")
    for n in sorted(set(fixed) | set(adaptive)):
        f, a = fixed.get(n), adaptive.get(n)
        cells = [str(n)]
        cells += [f"{f['majority']:.3f}", f"{f['tokens_out']:.1f}"] if f else ["", ""]
        cells += [f"{a['majority']:.3f}", f"{a['tokens_out']:.1f}", f"{a['runs']:.2f}"] if a else ["", "", ""]
        print("| " + " | ".join(cells) + " |")
    print()
    print(
        "| adaptive max N | its majority | cheapest fixed N as accurate | its tokens/task | tokens saved/task |"
    )
    print("|---|---|---|---|---|")
    for n, a in sorted(adaptive.items()):
        matches = [f for f in fixed.values() if f["majority"] >= a["majority"]]
        if not matches:
            print(f"| {n} | {a['majority']:.3f} | none is as accurate | | |")
            continue
        f = min(matches, key=lambda r: r["tokens_out"])
        saved = f["tokens_out"] - a["tokens_out"]
        print(f"| {n} | {a['majority']:.3f} | {f['budget']} | {f['tokens_out']:.1f} | {saved:.1f} |")
    if png:
        plot(fixed, adaptive, png)


if __name__ == "__main__":
    main(*sys.argv[1:3])
