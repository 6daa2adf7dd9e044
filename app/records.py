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

from ppl.handlers import Site
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
    out["tokens_cached"] = d.tokens_cached
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


# ---- full traces (tts run --trace) --------------------------------------------------------------


def _log_weight(x: float) -> float | None:
    """A log weight as JSON: the number, or null for −∞ (weight zero)."""
    return None if x == -math.inf else _finite(float(x))


def _name(model) -> str:
    return str(getattr(model, "name", type(model).__name__))


def site_record(site: Site) -> dict:
    """One site of a particle's trace as JSON: what it was, what it returned, its log weight.

    ``gen``: the model, the raw generated ``text``, its ``tokens`` and the prompt's
    ``prompt_tokens``, the ``finish`` reason and the segment's ``logprob``; ``reward``: the
    model and its ``value``; ``select``: the ``options`` and the one drawn; ``sample``: the
    distribution and the value; ``condition``: ``ok`` and its ``reason``; ``score``,
    ``twist``, ``observe``: the ``log_weight`` (null is −∞); ``barrier``: nothing more.
    """
    out: dict = {"kind": site.kind}
    args, value = site.args, site.value
    if site.kind == "gen":
        request = args["request"]
        out.update(model=_name(args["lm"]), text=value.text, tokens=len(value.token_ids))
        out.update(prompt_tokens=len(request.prompt), finish=value.finish_reason)
        out["logprob"] = _log_weight(value.logprob)
        if args.get("proposal") is not None:
            out["proposal"] = _name(args["proposal"])
        if getattr(request, "constraint", None) is not None:
            out["constraint"] = str(request.constraint)  # the site's weight is the allowed mass
    elif site.kind == "reward":
        out.update(model=_name(args["model"]), value=_log_weight(value) if value is not None else None)
    elif site.kind == "select":
        out.update(model=_name(args["lm"]), options=jsonable(args["options"]), value=jsonable(value))
    elif site.kind == "sample":
        out.update(distribution=type(args["distribution"]).__name__, value=jsonable(value))
    elif site.kind == "condition":
        out.update(ok=bool(args["ok"]), reason=args.get("reason"))
    elif site.kind not in ("score", "twist", "observe", "barrier"):
        out["value"] = jsonable(value)
    if site.kind != "barrier":
        out["log_weight"] = _log_weight(site.log_weight)
    return out


def _key(key) -> list[int] | None:
    return None if key is None else [int(k) for k in key]


def trace_record(posterior: Posterior) -> dict:
    """A problem's full trace as JSON (``tts run --trace``): every final particle with all its
    sites, and — when the run kept it — the genealogy (``ppl.history``): per generation the
    interpreter's notes and every particle with its parent, weight, fate and the sites it
    ran since its previous node (``from`` counts the sites it shares with that node).
    """
    memo: dict[int, dict] = {}

    def sites(trace) -> list[dict]:
        out = []
        for site in trace:
            if id(site) not in memo:
                memo[id(site)] = site_record(site)
            out.append(memo[id(site)])
        return out

    particles = [
        {
            "key": _key(p.key),
            "value": jsonable(p.value),
            "log_weight": _log_weight(p.log_weight),
            "status": p.status,
            "error": p.error,
            "sites": sites(p.trace),
        }
        for p in posterior.particles
    ]
    generations = []
    latest: dict[tuple, list[dict]] = {}  # key → the sites of its latest node
    for generation in posterior.diagnostics.history or ():
        nodes = []
        for node in generation.nodes:
            mine = sites(node.sites)
            before = latest.get(node.key, latest.get(node.parent, []))
            shared = 0
            while shared < min(len(before), len(mine)) and before[shared] == mine[shared]:
                shared += 1
            latest[node.key] = mine
            nodes.append(
                {
                    "key": _key(node.key),
                    "parent": _key(node.parent),
                    "log_weight": _log_weight(node.log_weight),
                    "status": node.status,
                    "error": node.error,
                    "value": jsonable(node.value),
                    "from": shared,
                    "sites": mine[shared:],
                }
            )
        generations.append(
            {
                "step": generation.step,
                "event": generation.event,
                "notes": jsonable(generation.notes),
                "nodes": nodes,
            }
        )
    return {"particles": particles, "generations": generations}


def _runs(diagnostics: dict) -> str:
    """The runs a problem drew; for an adaptive interpreter, ``used/max``."""
    extra = diagnostics.get("extra") or {}
    if "budget" in extra and "max" in extra:
        return f"{extra['budget']}/{extra['max']}"
    return str(diagnostics["particles"])


def summary_table(records: list[dict], wall_time: float, engine_calls: int) -> str:
    """A short table: one row per problem, then totals (engine calls are shared by the
    problems in flight, so the total is the run's, not the sum of the problems')."""
    rows = [("id", "answer", "log Z", "ESS", "runs", "tokens out", "dead")]
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
                _runs(d),
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
