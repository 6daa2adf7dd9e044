"""``tts view``: a results file read back — per problem its outcome and, when it was run with
``--trace``, every final particle step by step and its genealogy in brief; ``--report``
writes the same HTML page ``tts run --report`` wrote (``ppl.app.report``)."""

from __future__ import annotations

import json
from pathlib import Path

from .errors import UserError
from .jsonl import json_lines
from .report import deaths_of, label, steps_of


def read_results(path: Path) -> list[dict]:
    """The result lines of ``path``; a line that is not a JSON object is an error naming it."""
    records = []
    for number, record in json_lines(path, UserError, "not a results line"):
        if not isinstance(record, dict) or record.get("kind") not in ("problem", "task", "segment"):
            raise UserError(f"{path}:{number}: not a line written by tts run or tts eval")
        records.append(record)
    if not records:
        raise UserError(f"{path}: no results")
    return records


def _json(value) -> str:
    return json.dumps(value, ensure_ascii=False)


def describe(record: dict) -> str:
    """One problem of ``tts run`` as text."""
    d = record["diagnostics"]
    out = [f"problem {record['id']}: {_json(record.get('input'))}"]
    answer = record["error"] or _json(record["answer"])
    evidence = record["log_evidence"] if record["evidence"] == "estimated" else record["evidence"]
    out.append(f"  answer {answer}; {d['algorithm']}, {d['particles']} particles, {d['steps']} steps")
    ess = (
        f"final ESS {record['final_ess']}; " if "final_ess" in record and record["evidence"] != "none" else ""
    )
    out.append(
        f"  log evidence {evidence}; {ess}"
        f"tokens {record['tokens_in']} in, {record['tokens_out']} out; dead {d['dead']}/{d['particles']}"
    )
    trace = record.get("trace")
    if trace is None:
        out.append("  (no trace: run with --trace to keep every particle's sites)")
        return "\n".join(out)
    generations = trace["generations"]
    if generations:
        resampled = [str(g["step"]) for g in generations if g["notes"].get("resampled")]
        born = len({tuple(n["key"]) for g in generations for n in g["nodes"]})
        out.append(
            f"  genealogy: {len(generations)} generations, {born} particles in all"
            + (f", resampled at steps {', '.join(resampled)}" if resampled else "")
        )
    for reason, n in deaths_of(record, trace).most_common():
        out.append(f"  died: {n}× {reason}")
    for particle in trace["particles"]:
        fate = particle["status"] + (f": {particle['error']}" if particle["error"] else "")
        out.append(
            f"  particle {label(particle['key'])}  log w {particle['log_weight']}  {fate}  "
            f"value {_json(particle['value'])}"
        )
        for step in steps_of(particle["sites"]):
            badges = "; ".join(step["badges"])
            tokens = f" ({step['tokens']} tokens)" if step["tokens"] else ""
            out.append(
                f"    step {step['number']}: {_json(step['text'])}{tokens}"
                + (f"  [{badges}]" if badges else "")
            )
    return "\n".join(out)


def describe_all(records: list[dict]) -> str:
    """Every problem of a ``tts run`` results file, in order."""
    problems = sorted((r for r in records if r["kind"] == "problem"), key=lambda r: r["id"])
    return "\n\n".join(describe(r) for r in problems)
