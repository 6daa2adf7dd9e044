"""The results lines ``tts run`` and ``tts eval`` write: one schema, built in one place.

``posterior_record`` is the part every line has, computed from one ``Posterior``: the
answers, the evidence, the per-step ESS and resampling decisions, the costs and the
particles' fates. ``run_record`` adds what ``tts run`` knows (the problem's position and
inputs); ``ppl.app.evaluate`` adds a task's check and metrics. The fields are documented in
the README ("Result records"); ``SCHEMA`` is their version, written in every line.

    >>> import ppl
    >>> from ppl.algorithms import SMC
    >>> from ppl.backends import TabularLM
    >>> lm = TabularLM.bigram({"<s>": {" a": 1, " b": 1}, " a": {"<eos>": 1}, " b": {"<eos>": 1}})
    >>> @ppl.program
    ... def word(lm):
    ...     return ppl.gen(lm, (), max_tokens=1).text
    >>> posterior = ppl.infer(word, [(lm,)], SMC(particles=4), seed=0)[0]
    >>> line = run_record(0, {"prompt": ""}, posterior)
    >>> line["schema"], line["kind"], line["answer"] in (" a", " b"), line["diagnostics"]["particles"]
    (1, 'problem', True, 4)
    >>> len(line["ess"]) == len(line["resampled"]), line["final_ess"] <= 4
    (True, True)
"""

from __future__ import annotations

import json
import math
from collections import Counter

from ppl.interfaces import Segment
from ppl.posterior import Posterior, effective_sample_size

SCHEMA = 1  # the version of the records' fields; raise it when a field changes meaning or goes


def jsonable(value):
    """A program's value as JSON: texts, numbers, bools, lists; segments as their text."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Segment):
        return value.text
    if isinstance(value, (tuple, list)):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if hasattr(value, "tolist"):
        return jsonable(value.tolist())
    return str(value)


def hashable(value):
    """``value`` with its lists turned into tuples, so equal answers group together."""
    return tuple(hashable(v) for v in value) if isinstance(value, (list, tuple)) else value


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def posterior_record(posterior: Posterior) -> dict:
    """The fields every results line has, from one problem's ``Posterior``."""
    d = posterior.diagnostics
    out: dict = {"schema": SCHEMA}
    if posterior.all_dead:
        reasons = Counter(p.error for p in posterior.particles if p.error)
        out.update(answer=None, majority=None, answers=[], error="all particles have weight zero")
        out["reasons"] = dict(reasons.most_common(3))
    else:
        law = posterior.distribution(hashable)
        out.update(
            answer=jsonable(posterior.best()),
            majority=jsonable(posterior.majority(hashable)),
            answers=[[jsonable(v), round(w, 6)] for v, w in list(law.items())[:5]],
            error=None,
            reasons={},
        )
    evidence = posterior.log_evidence  # None: the algorithm targets the mode and estimates no evidence
    out["log_evidence"] = _finite(evidence) if evidence is not None else None
    out["evidence"] = "none" if evidence is None else ("zero" if evidence == -math.inf else "estimated")
    if d.weights == "importance":  # an ESS of scores, MCMC samples or exact probabilities means nothing
        out["final_ess"] = round(effective_sample_size(posterior.log_weights), 3)
    if d.weights == "importance" or d.ess:  # interpreters that decide resampling by the ESS
        out["ess"] = [round(float(e), 3) for e in d.ess]  # before each resampling decision
        out["resampled"] = [bool(r) for r in d.resampled]
    out["tokens_in"] = d.tokens_in
    out["tokens_out"] = d.tokens_out
    out["engine_calls"] = d.engine_calls
    out["wall_time"] = round(d.wall_time, 4)
    out["barrier_wait"] = round(d.barrier_wait, 4)
    out["diagnostics"] = {
        "algorithm": d.algorithm,
        "particles": d.particles,
        "steps": d.steps,
        "dead": d.dead,
        "deaths": dict(Counter(d.deaths).most_common(3)),
        "extra": jsonable(d.extra),
    }
    return out


def run_record(problem_id: int, inputs: dict, posterior: Posterior) -> dict:
    """One ``tts run`` line: the problem's position in the input and its inputs, then the common fields."""
    common = posterior_record(posterior)
    return {
        "schema": common.pop("schema"),
        "kind": "problem",
        "id": problem_id,
        "input": jsonable(inputs),
        **common,
    }


def summary_table(records: list[dict], wall_time: float, engine_calls: int) -> str:
    """A short table: one row per problem, then totals (engine calls are shared by the
    problems in flight, so the total is the run's, not the sum of the problems')."""
    rows = [("id", "answer", "log Z", "ESS", "tokens out", "dead")]
    for r in sorted(records, key=lambda r: r["id"]):
        d = r["diagnostics"]
        answer = json.dumps(r["answer"], ensure_ascii=False) if r["answer"] is not None else "(all dead)"
        answer = answer if len(answer) <= 40 else answer[:37] + "..."
        evidence = {"none": "n/a", "zero": "-inf"}.get(r["evidence"]) or f"{r['log_evidence']:.3f}"
        rows.append(
            (
                str(r["id"]),
                answer,
                evidence,
                f"{r['final_ess']:.1f}" if "final_ess" in r else "n/a",
                str(r["tokens_out"]),
                f"{d['dead']}/{d['particles']}",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(cell.ljust(w) if i == 1 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
        for row in rows
    ]
    lines.append(
        f"{len(records)} problem{'s' if len(records) != 1 else ''} in {wall_time:.2f} s; {engine_calls} engine calls"
    )
    return "\n".join(lines)
