"""Compute-optimal allocation: ``tts plan`` fits a policy from ``tts eval`` results, ``tts eval --policy`` applies it.

The policy maps a cheap difficulty estimate to an arm — an (interpreter, budget) that was
evaluated. The estimate is the **agreement of a probe**: the share of the most common
answer among the live runs of the first ``probe`` runs of importance sampling (best-of-N's
runs 0 … probe − 1; the same runs whatever N, since run i has the same key at every budget).
Agreement is binned by ``edges`` (bin i holds agreement < edges[i]; the last bin the rest),
and in each bin the arm with the highest ``accuracy − cost · tokens`` on the development
results is chosen (ties: fewer tokens, then the order first seen). A bin with no
development task takes the arm that is best over all tasks.

Fitting reads, per task, the probe from an ``importance``/``best_of_n`` record with a budget
of at least ``probe`` (its ``samples`` are in run order), and each arm's correctness (the
``metric`` of the record) and generated tokens. Applying runs the probe on every task, then
each task's arm; a task's tokens are the probe's plus its arm's (counted twice where the arm
re-draws the probe's runs: an honest upper bound).

    >>> records = [
    ...     {"kind": "task", "id": "t", "algorithm": "best_of_n", "budget": 2, "tokens_out": 10,
    ...      "metrics": {"majority": True}, "samples": [["4", 0.0, True], ["4", 0.0, True]]},
    ... ]
    >>> policy = fit(records, probe=2, edges=(0.5, 1.0))
    >>> [b["arm"] for b in policy["bins"]]
    [['best_of_n', 2], ['best_of_n', 2], ['best_of_n', 2]]
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from .records import SCHEMA

PROBES = ("importance", "best_of_n")


class PlanError(ValueError):
    """A problem with the eval results or the policy file, reported to the user."""


def agreement(samples: Sequence) -> float:
    """The share of the most common answer among live samples (``[answer, log_weight, …]``); 0 if none live."""
    live = [json.dumps(s[0]) for s in samples if s[1] is not None]
    if not live:
        return 0.0
    return Counter(live).most_common(1)[0][1] / len(live)


def bin_of(value: float, edges: Sequence[float]) -> int:
    for i, edge in enumerate(edges):
        if value < edge:
            return i
    return len(edges)


def _check_edges(edges: Sequence[float]) -> tuple[float, ...]:
    edges = tuple(float(e) for e in edges)
    if not edges or any(not 0 < e <= 1 for e in edges) or list(edges) != sorted(set(edges)):
        raise PlanError(f"the bin edges must be increasing numbers in (0, 1], got {list(edges)}")
    return edges


def probes(records: Sequence[dict], probe: int) -> dict:
    """Each task's probe agreement, from its smallest importance record with budget >= ``probe``."""
    chosen: dict = {}
    for r in records:
        if r.get("kind") != "task" or r.get("algorithm") not in PROBES or r["budget"] < probe:
            continue
        if r["id"] not in chosen or r["budget"] < chosen[r["id"]]["budget"]:
            chosen[r["id"]] = r
    return {task: agreement(r["samples"][:probe]) for task, r in chosen.items()}


def fit(
    records: Sequence[dict],
    *,
    probe: int = 4,
    edges: Sequence[float] = (0.5, 1.0),
    metric: str = "majority",
    cost: float = 0.0,
) -> dict:
    """The policy (a JSON object) fitted on ``tts eval`` records."""
    edges = _check_edges(edges)
    if probe < 1:
        raise PlanError(f"the probe needs at least one run, got {probe}")
    agreements = probes(records, probe)
    if not agreements:
        raise PlanError(
            f"no importance (best_of_n) results with a budget of at least {probe}: evaluate "
            f"`--algorithm best_of_n --budgets {probe},...` to give the probe"
        )
    arms: dict = {}  # (algorithm, budget) → {task: (correct, tokens)}
    for r in records:
        if r.get("kind") != "task" or r["id"] not in agreements:
            continue
        if metric not in r["metrics"]:
            raise PlanError(f"the results have no metric {metric!r}; they have {', '.join(r['metrics'])}")
        arms.setdefault((r["algorithm"], r["budget"]), {})[r["id"]] = (
            bool(r["metrics"][metric]),
            r["tokens_out"],
        )

    def score(arm, tasks) -> tuple:
        outcomes = [arms[arm][t] for t in tasks if t in arms[arm]]
        if len(outcomes) < len(tasks) or not outcomes:
            return None
        accuracy = sum(c for c, _ in outcomes) / len(outcomes)
        tokens = sum(n for _, n in outcomes) / len(outcomes)
        return accuracy, tokens

    def choose(tasks) -> tuple:
        best = None
        for order, arm in enumerate(arms):
            s = score(arm, tasks)
            if s is None:
                continue
            key = (-(s[0] - cost * s[1]), s[1], order)
            if best is None or key < best[0]:
                best = (key, arm, s)
        return best

    everything = sorted(agreements)
    overall = choose(everything)
    if overall is None:
        raise PlanError("no arm has results on every task with a probe: finish the eval first")
    bins = []
    lows = (0.0, *edges)
    highs = (*edges, 1.0)
    for i, (low, high) in enumerate(zip(lows, highs)):
        tasks = [t for t, a in agreements.items() if bin_of(a, edges) == i]
        chosen = choose(tasks) if tasks else None
        _, arm, (accuracy, tokens) = chosen or overall
        bins.append(
            {
                "low": low,
                "high": high,
                "tasks": len(tasks),
                "arm": [arm[0], arm[1]],
                "accuracy": accuracy if tasks else None,
                "tokens_out": tokens if tasks else None,
            }
        )
    return {
        "schema": SCHEMA,
        "kind": "policy",
        "probe": probe,
        "edges": list(edges),
        "metric": metric,
        "cost": cost,
        "bins": bins,
        "fitted_on": len(everything),
    }


def choose_arm(policy: dict, value: float) -> tuple[str, int]:
    algorithm, budget = policy["bins"][bin_of(value, policy["edges"])]["arm"]
    return algorithm, int(budget)


def read_policy(path: Path) -> dict:
    try:
        policy = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise PlanError(f"cannot read the policy {path}: {error}") from None
    if not isinstance(policy, dict) or policy.get("kind") != "policy":
        raise PlanError(f"{path} is not a policy (write one with `tts plan`)")
    _check_edges(policy["edges"])
    if len(policy["bins"]) != len(policy["edges"]) + 1:
        raise PlanError(
            f"{path}: a policy with {len(policy['edges'])} edges has {len(policy['edges']) + 1} bins"
        )
    return policy


def describe(policy: dict) -> str:
    lines = [
        f"probe: agreement of the first {policy['probe']} runs; metric {policy['metric']}; "
        f"cost {policy['cost']} per token; fitted on {policy['fitted_on']} tasks",
        "| agreement | tasks | arm | accuracy | tokens out |",
        "|---|---|---|---|---|",
    ]
    for b in policy["bins"]:
        accuracy = f"{b['accuracy']:.3f}" if b["accuracy"] is not None else "(no task: overall best)"
        tokens = f"{b['tokens_out']:.0f}" if b["tokens_out"] is not None else ""
        last = b is policy["bins"][-1]
        span = f"[{b['low']:.2f}, {b['high']:.2f}{']' if last else ')'}"
        lines.append(f"| {span} | {b['tasks']} | {b['arm'][0]} @ {b['arm'][1]} | {accuracy} | {tokens} |")
    return "\n".join(lines)
