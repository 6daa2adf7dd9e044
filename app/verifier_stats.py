"""Verifier-aware sampling: how good is the program's verifier, and how many samples are worth drawing?

The verifier is the program's own weighting — a judge's score, a checker's penalty — read as
a verdict: a run is **accepted** when its log weight is at least ``threshold`` (dead runs,
weight zero, are rejected; their answers are unknown, so they count in no rate). On the
development results the task checker says which runs are right, which gives

* FP = P(accepted | wrong), FN = P(rejected | right), pooled over every live run;

and, per task, p = the share of its runs that are right. For *resampling* — draw until the
verifier accepts, at most k draws, and return the last draw if none is accepted — with
a = p(1 − FN) (accepted and right) and b = (1 − p)·FP (accepted and wrong), r = 1 − a − b:

    P_k(right) = a (1 − r^k) / (1 − r) + r^(k−1) · p · FN,     E[draws] = (1 − r^k) / (1 − r)

(at r = 1, nothing is ever accepted: P_k = p, k draws). P_1 = p, and as k grows P_k tends to
the **ceiling** a / (a + b), which is *below* p where the verifier accepts wrong answers
relatively more often than right ones: more samples can then lower accuracy ("Inference
Scaling fLaws"). The **best k** is the k ≤ ``max_k`` with the highest mean P_k over tasks
(the smallest on ties).

    >>> stats = verifier_stats([[["4", 0.0, True], ["5", -9.0, False], ["4", -9.0, True]]], threshold=-1.0)
    >>> stats["false_positive"], stats["false_negative"]
    (0.0, 0.5)
    >>> round(resampling_accuracy(2 / 3, 0.0, 0.5, 1), 6), round(resampling_accuracy(2 / 3, 0.0, 0.5, 50), 6)
    (0.666667, 1.0)
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def resampling_accuracy(p: float, fp: float, fn: float, k: int) -> float:
    """P(the answer is right) after at most ``k`` draws, stopping at the first accepted one."""
    a, b = p * (1 - fn), (1 - p) * fp
    r = 1 - a - b
    if r >= 1 - 1e-15:
        return p
    return a * (1 - r**k) / (1 - r) + r ** (k - 1) * p * fn


def expected_draws(p: float, fp: float, fn: float, k: int) -> float:
    a, b = p * (1 - fn), (1 - p) * fp
    r = 1 - a - b
    return float(k) if r >= 1 - 1e-15 else (1 - r**k) / (1 - r)


def ceiling(p: float, fp: float, fn: float) -> float:
    a, b = p * (1 - fn), (1 - p) * fp
    return a / (a + b) if a + b > 0 else p


def verifier_stats(tasks: Sequence[Sequence], threshold: float = 0.0, max_k: int = 64) -> dict:
    """FP, FN, the ceiling and the best k from each task's samples (``[answer, log_weight, right]``;
    a log weight of None is a dead run)."""
    accepted_wrong = wrong = rejected_right = right = 0
    shares = []
    for samples in tasks:
        live = [(lw, bool(ok)) for _, lw, ok in samples if lw is not None and math.isfinite(lw)]
        if not live:
            continue
        shares.append(sum(ok for _, ok in live) / len(live))
        for lw, ok in live:
            if ok:
                right += 1
                rejected_right += lw < threshold
            else:
                wrong += 1
                accepted_wrong += lw >= threshold
    if not shares:
        raise ValueError("no live runs in the results: nothing to estimate the verifier from")
    fp = accepted_wrong / wrong if wrong else 0.0
    fn = rejected_right / right if right else 0.0
    curve = [
        sum(resampling_accuracy(p, fp, fn, k) for p in shares) / len(shares) for k in range(1, max_k + 1)
    ]
    best = max(range(max_k), key=lambda i: curve[i] - 1e-12 * i)  # the smallest k on ties
    return {
        "threshold": threshold,
        "tasks": len(shares),
        "runs": right + wrong,
        "false_positive": fp,
        "false_negative": fn,
        "coverage_share": sum(shares) / len(shares),
        "ceiling": sum(ceiling(p, fp, fn) for p in shares) / len(shares),
        "best_k": best + 1,
        "accuracy_at_best_k": curve[best],
        "draws_at_best_k": sum(expected_draws(p, fp, fn, best + 1) for p in shares) / len(shares),
        "curve": curve,
    }


def describe(stats: dict) -> str:
    return (
        f"verifier (accepted: log weight >= {stats['threshold']}), from {stats['runs']} runs of "
        f"{stats['tasks']} tasks: false-positive rate {stats['false_positive']:.3f}, false-negative rate "
        f"{stats['false_negative']:.3f}; resampling until accepted: accuracy {stats['curve'][0]:.3f} at k = 1, "
        f"best {stats['accuracy_at_best_k']:.3f} at k = {stats['best_k']} "
        f"({stats['draws_at_best_k']:.2f} draws on average), ceiling {stats['ceiling']:.3f} as k grows"
    )
