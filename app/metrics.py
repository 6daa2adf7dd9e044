"""Evaluation metrics from the samples of a run: pass@k, coverage, majority@N, weighted-vote@N.

All of them are computed from the same per-problem samples — the N final particles, each
with its answer, its log-weight and whether a checker found it right — so one run of an
algorithm at budget N gives every metric at once:

* ``pass_at_k(n, c, k)`` — the unbiased estimator of Chen et al. (2021): the probability
  that at least one of k samples drawn without replacement from the n (c of them right)
  is right, ``1 − C(n−c, k) / C(n, k)``, computed as a stable product.
* coverage — the fraction of problems with at least one right sample (pass@n).
* majority@N — the most frequent answer is right (self-consistency; weights ignored).
* weighted-vote@N — the answer with the largest total weight is right.
* best@N — the highest-weight sample is right (best-of-N; what ``Posterior.best`` returns).

Dead particles (weight zero) are not samples: they count in n for pass@k as wrong
answers, and never vote.

    >>> from ppl.app.metrics import Sample, pass_at_k, problem_metrics
    >>> pass_at_k(n=5, c=2, k=2)  # 1 - C(3,2)/C(5,2) = 1 - 3/10
    0.7
    >>> samples = [Sample("4", 0.0, True), Sample("5", 1.0, False), Sample("4", -1.0, True)]
    >>> m = problem_metrics(samples, ks=(1, 2))
    >>> m["best"], m["majority"], m["weighted_vote"], round(m["pass@1"], 4), m["pass@2"]
    (False, True, False, 0.6667, 1.0)
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Sample:
    """One final particle: its answer (JSON-like), log-weight, and whether it is right."""

    answer: object
    log_weight: float
    correct: bool


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are right: ``1 − C(n−c, k)/C(n, k)``.

    Computed as ``1 − Π_{i=n−c+1}^{n} (1 − k/i)`` (no huge binomials, no overflow).
    """
    for name, value in (("n", n), ("c", c), ("k", k)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"pass_at_k: {name} must be an integer, got {value!r}")
    if not 0 <= c <= n:
        raise ValueError(f"pass_at_k: need 0 <= c <= n, got c={c}, n={n}")
    if not 1 <= k <= n:
        raise ValueError(f"pass_at_k: need 1 <= k <= n, got k={k}, n={n}")
    if n - c < k:
        return 1.0
    product = 1.0
    for i in range(n - c + 1, n + 1):
        product *= 1.0 - k / i
    return 1.0 - product


def _key(answer) -> str:
    """Answers vote together when their JSON forms are equal."""
    return json.dumps(answer, sort_keys=True, ensure_ascii=False)


def _alive(samples: Iterable[Sample]) -> list[Sample]:
    return [s for s in samples if s.log_weight > -math.inf and s.answer is not None]


def majority_vote(samples: Sequence[Sample]) -> Sample | None:
    """A sample carrying the most frequent answer among live samples (first seen on ties); None if none live."""
    alive = _alive(samples)
    if not alive:
        return None
    counts: dict[str, int] = {}
    first: dict[str, Sample] = {}
    for s in alive:
        key = _key(s.answer)
        counts[key] = counts.get(key, 0) + 1
        first.setdefault(key, s)
    top = max(counts.values())
    return next(first[k] for k in counts if counts[k] == top)


def weighted_vote(samples: Sequence[Sample]) -> Sample | None:
    """A sample carrying the answer with the largest total weight (first seen on ties); None if none live."""
    alive = _alive(samples)
    if not alive:
        return None
    top = max(s.log_weight for s in alive)
    totals: dict[str, float] = {}
    first: dict[str, Sample] = {}
    for s in alive:
        key = _key(s.answer)
        totals[key] = totals.get(key, 0.0) + math.exp(s.log_weight - top)
        first.setdefault(key, s)
    best = max(totals.values())
    return next(first[k] for k in totals if totals[k] >= best * (1 - 1e-12))


def best_sample(samples: Sequence[Sample]) -> Sample | None:
    """The live sample with the largest weight (first on ties); None if none live."""
    alive = _alive(samples)
    return max(alive, key=lambda s: s.log_weight) if alive else None


def problem_metrics(samples: Sequence[Sample], ks: Iterable[int] = (1,)) -> dict:
    """Per-problem metrics: ``best``, ``majority``, ``weighted_vote`` (bools), ``n``, ``c``, ``pass@k``.

    ``pass@k`` is given for each k ≤ n in ``ks`` (and always for k = n: ``covered``).
    """
    samples = list(samples)
    n = len(samples)
    if n == 0:
        raise ValueError("problem_metrics needs at least one sample")
    c = sum(1 for s in samples if s.correct and s.log_weight > -math.inf)
    chosen = {
        "best": best_sample(samples),
        "majority": majority_vote(samples),
        "weighted_vote": weighted_vote(samples),
    }
    out: dict = {name: bool(s is not None and s.correct) for name, s in chosen.items()}
    out.update(n=n, c=c, covered=c > 0)
    for k in sorted(set(ks)):
        if 1 <= k <= n:
            out[f"pass@{k}"] = pass_at_k(n, c, k)
    return out


def aggregate(per_problem: Sequence[dict]) -> dict:
    """Means over problems of every metric the problems share (accuracy = mean of ``best``).

    ``coverage`` is the mean of ``covered``; ``pass@k`` only where every problem has it.
    """
    if not per_problem:
        raise ValueError("aggregate needs at least one problem")
    total = len(per_problem)
    out: dict = {"problems": total}
    for name, key in (("accuracy", "best"), ("majority", "majority"), ("weighted_vote", "weighted_vote")):
        out[name] = sum(bool(m[key]) for m in per_problem) / total
    out["coverage"] = sum(bool(m["covered"]) for m in per_problem) / total
    shared = set.intersection(*(set(m) for m in per_problem))
    for key in sorted((k for k in shared if k.startswith("pass@")), key=lambda k: int(k[5:])):
        out[key] = sum(m[key] for m in per_problem) / total
    return out
