"""The trace report: one self-contained HTML page of what a run's particles did, or of an evaluation.

``run_report(records)`` turns the result lines of ``tts run`` (with their ``trace``, see
``ppl.app.records.trace_record``) into a page with, per problem: the particle genealogy
across generations (who was copied from whom at each resampling, which beams were kept and
which pruned, MCMC proposals accepted or rejected), the log weights and the ESS per step,
the final answer distribution, the deaths and their reasons, and every final particle's
steps as text with the rewards, twists and scores it received. ``eval_report(rows)`` shows a
``tts eval`` summary: accuracy, majority@N and coverage against generated tokens, one line
per interpreter. The page is built from the records alone, so ``tts view`` rebuilds the
same page from a results file.

The plots are plotly figures; plotly.js is embedded once in the page, so it opens offline.
The page around them is a Jinja2 template (autoescaped).
"""

from __future__ import annotations

import html
import json
import math
from collections import Counter
from pathlib import Path

import jinja2
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs
from plotly.subplots import make_subplots

from ppl.posterior import effective_sample_size

COLOURS = {"live": "#1f77b4", "finished": "#2ca02c", "dead": "#d62728", "dropped": "#b0b0b0"}
_HOVER_CHARS = 400  # text shown in a node's hover box

# ---- reading the records ---------------------------------------------------------------------------


def _w(log_weight) -> float:
    """A record's log weight (null is −∞) as a float."""
    return -math.inf if log_weight is None else float(log_weight)


def _normalised(log_weights: list[float]) -> list[float]:
    top = max(log_weights, default=-math.inf)
    if top == -math.inf:
        return [0.0] * len(log_weights)
    raw = [math.exp(w - top) for w in log_weights]
    total = sum(raw)
    return [r / total for r in raw]


def label(key) -> str:
    """A particle's short name: its randomness key without the stream and the problem."""
    return "·".join(str(k) for k in key[2:]) if key else "?"


def _number(x) -> str:
    return "−∞" if x is None else f"{x:.3g}"


def site_badge(site: dict) -> str | None:
    """What a weighting or reward site gave, in a few words (None for generation sites)."""
    kind = site["kind"]
    if kind == "reward":
        return f"reward {_number(site['value'])} ({site['model']})"
    if kind in ("score", "twist", "observe"):
        return f"{kind} {_number(site['log_weight'])}"
    if kind == "condition":
        return (
            "condition ok" if site["ok"] else f"condition failed: {site.get('reason') or 'no reason given'}"
        )
    if kind == "select":
        return f"select {json.dumps(site['value'], ensure_ascii=False)} of {len(site['options'])}"
    if kind == "sample":
        return f"sample {json.dumps(site['value'], ensure_ascii=False)} ({site['distribution']})"
    if kind not in ("gen", "barrier"):
        return f"{kind} {json.dumps(site.get('value'), ensure_ascii=False)}"
    return None


def steps_of(sites: list[dict]) -> list[dict]:
    """A particle's sites split at its barriers: per step the generated text (with token
    counts) and the badges of what weighted it."""
    steps = [{"number": 0, "text": "", "tokens": 0, "badges": []}]
    for site in sites:
        if site["kind"] == "barrier":
            steps.append({"number": len(steps), "text": "", "tokens": 0, "badges": []})
        elif site["kind"] == "gen":
            steps[-1]["text"] += site["text"]
            steps[-1]["tokens"] += site["tokens"]
        else:
            badge = site_badge(site)
            if badge:
                steps[-1]["badges"].append(badge)
    return [s for s in steps if s["text"] or s["badges"]]


def _hover_text(node: dict, weight: float) -> str:
    lines = [f"particle {label(node['key'])}"]
    if node["parent"] is not None:
        lines[0] += f" (from {label(node['parent'])})"
    lines.append(f"log w = {_number(node['log_weight'])}, W = {weight:.3f}, {node['status']}")
    if node["error"]:
        lines.append(f"died: {node['error']}")
    text = "".join(s["text"] for s in node["sites"] if s["kind"] == "gen")
    if text:
        text = text if len(text) <= _HOVER_CHARS else text[:_HOVER_CHARS] + "…"
        lines.append("this step: " + json.dumps(text, ensure_ascii=False))
    lines += [b for b in map(site_badge, node["sites"]) if b]
    return "<br>".join(html.escape(line, quote=False) for line in lines)


# ---- figures -----------------------------------------------------------------------------------------


def _html(figure: go.Figure, div_id: str) -> str:
    return figure.to_html(full_html=False, include_plotlyjs=False, div_id=div_id, config={"responsive": True})


def _tick(generation: dict) -> str:
    return f"step {generation['step']}" if generation["event"] == "barrier" else f"end {generation['step']}"


def genealogy_figure(generations: list[dict], div_id: str) -> str:
    """Particles (markers, sized by normalised weight) per generation (x) and slot (y), with a
    line from each to the particle it went on from or was copied from."""
    where: dict[tuple, tuple[int, int]] = {}  # key → (generation, slot) where it was last seen
    edges = {"went on": ([], []), "copied": ([], [])}
    groups: dict[str, dict[str, list]] = {}
    marks = {"accepted": ([], []), "rejected": ([], []), "reference": ([], [])}
    for g, generation in enumerate(generations):
        following = generations[g + 1]["nodes"] if g + 1 < len(generations) else []
        carried = {tuple(n["key"]) for n in following} | {
            tuple(n["parent"]) for n in following if n["parent"] is not None
        }
        weights = _normalised([_w(n["log_weight"]) for n in generation["nodes"]])
        accepted = generation["notes"].get("accepted")
        for j, (node, weight) in enumerate(zip(generation["nodes"], weights)):
            key = tuple(node["key"])
            parent = tuple(node["parent"]) if node["parent"] is not None else None
            if key in where:
                kind, (g0, j0) = "went on", where[key]
            elif parent in where:
                kind, (g0, j0) = "copied", where[parent]
            else:
                kind = None
            if kind is not None:
                xs, ys = edges[kind]
                xs += [g0, g, None]
                ys += [j0, j, None]
            where[key] = (g, j)
            if node["status"] == "dead":
                group = "dead"
            elif node["status"] == "finished":
                group = "finished"
            elif g + 1 < len(generations) and key not in carried:
                group = "dropped"
            else:
                group = "live"
            entry = groups.setdefault(group, {"x": [], "y": [], "size": [], "text": []})
            entry["x"].append(g)
            entry["y"].append(j)
            entry["size"].append(7 + 18 * math.sqrt(weight))
            entry["text"].append(_hover_text(node, weight))
            if accepted is not None and j < len(accepted):
                xs, ys = marks["accepted" if accepted[j] else "rejected"]
                xs.append(g)
                ys.append(j)
        if "reference" in generation["notes"]:
            marks["reference"][0].append(g)
            marks["reference"][1].append(generation["notes"]["reference"])
    figure = go.Figure()
    for kind, (xs, ys) in edges.items():
        if xs:
            figure.add_trace(
                go.Scatter(
                    x=xs,
                    y=ys,
                    mode="lines",
                    name=kind,
                    hoverinfo="skip",
                    line={"width": 1, "color": "#c7c7c7" if kind == "went on" else "#6baed6"},
                )
            )
    names = {
        "live": "at a barrier",
        "finished": "finished",
        "dead": "died",
        "dropped": "not carried on (resampled away, pruned)",
    }
    for group in ("live", "finished", "dropped", "dead"):
        if group in groups:
            entry = groups[group]
            figure.add_trace(
                go.Scatter(
                    x=entry["x"],
                    y=entry["y"],
                    mode="markers",
                    name=names[group],
                    text=entry["text"],
                    hovertemplate="%{text}<extra></extra>",
                    marker={
                        "size": entry["size"],
                        "color": COLOURS[group],
                        "symbol": "x" if group == "dead" else "circle",
                        "line": {"width": 0.5, "color": "#333"},
                    },
                )
            )
    symbols = {"accepted": "star-open", "rejected": "circle-x-open", "reference": "diamond-open"}
    for mark, (xs, ys) in marks.items():
        if xs:
            figure.add_trace(
                go.Scatter(
                    x=xs,
                    y=ys,
                    mode="markers",
                    name={"accepted": "MCMC: accepted", "rejected": "MCMC: rejected"}.get(
                        mark, "new reference path"
                    ),
                    hoverinfo="skip",
                    marker={"symbol": symbols[mark], "size": 18, "color": "#000", "line": {"width": 1.5}},
                )
            )
    most = max((len(g["nodes"]) for g in generations), default=1)
    figure.update_layout(
        title="Genealogy: each particle per generation, linked to the one it went on from or was copied from",
        height=min(900, max(320, 26 * most + 140)),
        margin={"l": 50, "r": 20, "t": 50, "b": 40},
        xaxis={
            "tickvals": list(range(len(generations))),
            "ticktext": [_tick(g) for g in generations],
            "title": "generation",
        },
        yaxis={"autorange": "reversed", "title": "particle slot", "zeroline": False},
        plot_bgcolor="white",
    )
    return _html(figure, div_id)


def weights_figure(record: dict, generations: list[dict], div_id: str) -> str:
    """Log weights of every particle per generation and, for the interpreters whose weights
    are importance weights (those that estimate the evidence), the ESS per step."""
    with_ess = record["evidence"] != "none"  # beam search, DVTS, MCMC: an ESS would mean nothing
    titles = ("log weights", "effective sample size") if with_ess else ("log weights",)
    figure = make_subplots(rows=len(titles), cols=1, subplot_titles=titles)
    if generations:
        xs, ys, text = [], [], []
        ess, resampled = [], []
        for g, generation in enumerate(generations):
            log_weights = [_w(n["log_weight"]) for n in generation["nodes"]]
            for node, w in zip(generation["nodes"], log_weights):
                if w > -math.inf:
                    xs.append(g)
                    ys.append(w)
                    text.append(f"particle {label(node['key'])}, {node['status']}")
            ess.append(generation["notes"].get("ess", effective_sample_size(log_weights)))
            resampled.append(bool(generation["notes"].get("resampled")))
        figure.add_trace(
            go.Scatter(
                x=xs,
                y=ys,
                mode="markers",
                name="log weight",
                text=text,
                hovertemplate="%{text}<br>log w = %{y:.4g}<extra></extra>",
                marker={"size": 6, "opacity": 0.6},
            ),
            row=1,
            col=1,
        )
        steps = list(range(len(generations)))
        ticks = [_tick(g) for g in generations]
    else:  # not traced: the ESS before each resampling decision, from the record
        ess, resampled = record.get("ess", []), record.get("resampled", [])
        steps = list(range(len(ess)))
        ticks = [f"step {i}" for i in steps]
    if with_ess:
        figure.add_trace(
            go.Scatter(
                x=steps, y=ess, mode="lines+markers", name="ESS", hovertemplate="ESS %{y:.3g}<extra></extra>"
            ),
            row=2,
            col=1,
        )
        chosen = [(x, e) for x, e, r in zip(steps, ess, resampled) if r]
        if chosen:
            figure.add_trace(
                go.Scatter(
                    x=[x for x, _ in chosen],
                    y=[e for _, e in chosen],
                    mode="markers",
                    name="resampled here",
                    marker={"symbol": "triangle-down", "size": 12, "color": "#d62728"},
                ),
                row=2,
                col=1,
            )
        figure.update_yaxes(rangemode="tozero", row=2, col=1)
    for row in range(1, len(titles) + 1):
        figure.update_xaxes(tickvals=steps, ticktext=ticks, row=row, col=1)
    figure.update_layout(
        height=260 * len(titles) + 40, margin={"l": 50, "r": 20, "t": 40, "b": 30}, plot_bgcolor="white"
    )
    return _html(figure, div_id)


def _answer_law(record: dict, trace: dict | None) -> list[tuple[str, float]]:
    if trace and trace["particles"]:
        weights = _normalised([_w(p["log_weight"]) for p in trace["particles"]])
        law: Counter = Counter()
        for particle, weight in zip(trace["particles"], weights):
            if weight > 0:
                law[json.dumps(particle["value"], ensure_ascii=False)] += weight
        return law.most_common()
    return [(json.dumps(v, ensure_ascii=False), p) for v, p in record["answers"]]


def answers_figure(record: dict, trace: dict | None, div_id: str) -> str:
    """The weighted law of the final answers, most probable first."""
    law = _answer_law(record, trace)[:20]
    short = [a if len(a) <= 40 else a[:37] + "…" for a, _ in law]
    figure = go.Figure(
        go.Bar(
            x=[p for _, p in law],
            y=short,
            orientation="h",
            text=[html.escape(a, quote=False) for a, _ in law],
            hovertemplate="%{text}<br>P = %{x:.4f}<extra></extra>",
            textposition="none",
        )
    )
    figure.update_layout(
        title="Final answer distribution (weighted)",
        height=max(220, 28 * len(law) + 100),
        margin={"l": 20, "r": 20, "t": 40, "b": 30},
        yaxis={"autorange": "reversed", "automargin": True},
        xaxis={"title": "probability", "range": [0, 1]},
        plot_bgcolor="white",
    )
    return _html(figure, div_id)


def deaths_of(record: dict, trace: dict | None) -> Counter:
    """Why particles died: from the genealogy (each dead particle once), else the record's counts."""
    if trace and trace["generations"]:
        dead = {}
        for generation in trace["generations"]:
            for node in generation["nodes"]:
                if node["status"] == "dead":
                    dead[tuple(node["key"])] = node["error"] or "no reason recorded"
        return Counter(dead.values())
    return Counter(record["diagnostics"]["deaths"])


def deaths_figure(deaths: Counter, div_id: str) -> str:
    reasons = deaths.most_common(15)
    short = [r if len(r) <= 50 else r[:47] + "…" for r, _ in reasons]
    figure = go.Figure(
        go.Bar(
            x=[n for _, n in reasons],
            y=short,
            orientation="h",
            marker={"color": COLOURS["dead"]},
            text=[html.escape(r, quote=False) for r, _ in reasons],
            hovertemplate="%{text}<br>%{x} particles<extra></extra>",
            textposition="none",
        )
    )
    figure.update_layout(
        title="Deaths by reason",
        height=max(200, 28 * len(reasons) + 100),
        margin={"l": 20, "r": 20, "t": 40, "b": 30},
        yaxis={"autorange": "reversed", "automargin": True},
        xaxis={"title": "particles"},
        plot_bgcolor="white",
    )
    return _html(figure, div_id)


# ---- pages ---------------------------------------------------------------------------------------------

_ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=True,
    trim_blocks=True,
    lstrip_blocks=True,
)


def _problem(record: dict, n: int) -> dict:
    trace = record.get("trace")
    generations = trace["generations"] if trace else []
    particles = []
    if trace:
        weights = _normalised([_w(p["log_weight"]) for p in trace["particles"]])
        for particle, weight in zip(trace["particles"], weights):
            particles.append(
                {
                    "name": label(particle["key"]) if particle["key"] else "",
                    "weight": weight,
                    "log_weight": _number(particle["log_weight"]),
                    "status": particle["status"],
                    "error": particle["error"],
                    "value": json.dumps(particle["value"], ensure_ascii=False),
                    "steps": steps_of(particle["sites"]),
                }
            )
    deaths = deaths_of(record, trace)
    return {
        "record": record,
        "anchor": f"problem-{n}",
        "input": json.dumps(record.get("input"), ensure_ascii=False),
        "answer": json.dumps(record["answer"], ensure_ascii=False),
        "evidence": _number(record["log_evidence"])
        if record["evidence"] == "estimated"
        else record["evidence"],
        "traced": trace is not None,
        "genealogy": genealogy_figure(generations, f"genealogy-{n}") if generations else None,
        "weights": weights_figure(record, generations, f"weights-{n}")
        if generations or record.get("ess")
        else None,
        "answers": answers_figure(record, trace, f"answers-{n}") if not record["error"] else None,
        "deaths": deaths_figure(deaths, f"deaths-{n}") if deaths else None,
        "particles": particles,
    }


def run_report(records: list[dict]) -> str:
    """The page for ``tts run``'s result lines (in problem order); it depends on them alone."""
    algorithms = sorted({r["diagnostics"]["algorithm"] for r in records})
    title = f"Trace report: {', '.join(algorithms)} on {len(records)} problem{'s' * (len(records) != 1)}"
    problems = [_problem(r, n) for n, r in enumerate(sorted(records, key=lambda r: r["id"]))]
    return _ENV.get_template("run.html.j2").render(title=title, problems=problems, plotlyjs=get_plotlyjs())


def eval_figure(rows: list[dict], div_id: str) -> str:
    """Accuracy, majority@N and coverage against generated tokens per task, one line per interpreter."""
    metrics = (("accuracy", "accuracy"), ("majority", "majority@N"), ("coverage", "coverage"))
    figure = make_subplots(rows=1, cols=3, subplot_titles=[name for _, name in metrics], shared_yaxes=True)
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]
    for i, algorithm in enumerate(dict.fromkeys(r["algorithm"] for r in rows)):
        points = sorted((r for r in rows if r["algorithm"] == algorithm), key=lambda r: r["tokens_out"])
        for col, (field, name) in enumerate(metrics, 1):
            figure.add_trace(
                go.Scatter(
                    x=[r["tokens_out"] for r in points],
                    y=[r[field] for r in points],
                    mode="lines+markers+text",
                    text=[str(r["budget"]) for r in points],
                    textposition="top center",
                    name=algorithm,
                    legendgroup=algorithm,
                    showlegend=col == 1,
                    line={"color": palette[i % len(palette)]},
                    customdata=[[r["budget"], r["problems"]] for r in points],
                    hovertemplate=f"{html.escape(algorithm, quote=False)} at budget %{{customdata[0]}}<br>{name} %{{y:.3f}}"
                    "<br>%{x:.0f} generated tokens per task<br>%{customdata[1]} tasks<extra></extra>",
                ),
                row=1,
                col=col,
            )
            figure.update_xaxes(type="log", title="generated tokens per task", row=1, col=col)
    figure.update_yaxes(range=[-0.03, 1.03], row=1, col=1)
    figure.update_layout(height=460, margin={"l": 50, "r": 20, "t": 50, "b": 50}, plot_bgcolor="white")
    return _html(figure, div_id)


def eval_report(rows: list[dict], title: str = "Evaluation: accuracy against generated tokens") -> str:
    """The page for a ``tts eval`` summary (``ppl.app.evaluate.summarise``)."""
    ks = sorted({k for row in rows for k in row if k.startswith("pass@")}, key=lambda k: int(k[5:]))
    return _ENV.get_template("eval.html.j2").render(
        title=title, rows=rows, ks=ks, figure=eval_figure(rows, "eval-metrics"), plotlyjs=get_plotlyjs()
    )


def write(path: Path, page: str) -> None:
    Path(path).write_text(page, encoding="utf-8")
