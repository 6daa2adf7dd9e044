"""``tts search``: choose a ``.tts`` file's ``param`` values on a development set with Optuna.

Each trial gives every param a value (Optuna's multi-objective TPE sampler, seeded), runs
the file's ``infer`` clause with those values over the tasks, and scores it on two
objectives: accuracy (the share of tasks whose ``--metric`` answer the checker accepts:
``majority``, ``best`` or ``weighted_vote``) to maximise, and generated tokens per task to
minimise. Each finished trial is one JSON line appended to the trials file (flushed and
fsynced).

**Resumable, and the same either way.** The sampler of trial k is a fresh ``TPESampler``
seeded by (seed, k) over a study rebuilt from the trials before k (read back from the
file), and each trial's run is seeded by ``--seed`` and the task's position. So trial k's
values depend only on the trials before it: a search killed at any point and started again
with the same command gives the trials an uninterrupted one gives (the trial cut short is
run again; a last line torn by the kill is dropped).

At the end: the Pareto front (no other trial is at least as accurate with fewer tokens),
plotted with plotly (an HTML page) and, when matplotlib is installed, as a PNG; and the best
trial — the most accurate, then the fewest tokens — written out as a ``.tts`` file with its
values as the params' defaults (``ppl.grammar.params.write``), which ``tts check`` accepts.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ppl.grammar.params import ParamSpace, write

from . import evaluate as ev
from .loading import check, load
from .records import SCHEMA

METRICS = ("majority", "best", "weighted_vote")
OBJECTIVES = ("accuracy", "tokens_out")


class SearchError(ValueError):
    """A problem with the search's file, tasks or trials file, reported to the user."""


def _optuna():
    try:
        import optuna
    except ImportError:  # pragma: no cover - depends on the install
        raise SearchError("tts search needs Optuna: pip install 'ppl-tts[search]'") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def distributions(space: ParamSpace) -> dict:
    """Optuna's distribution of each param."""
    optuna = _optuna()
    out = {}
    for name, t in space.params.items():
        if t.kind == "integer":
            out[name] = optuna.distributions.IntDistribution(int(t.low), int(t.high), log=t.log)
        elif t.kind == "number":
            out[name] = optuna.distributions.FloatDistribution(t.low, t.high, log=t.log)
        else:
            out[name] = optuna.distributions.CategoricalDistribution(list(t.choices))
    return out


def trial_seed(seed: int, number: int) -> int:
    """The sampler seed of trial ``number``: independent of how the search was interrupted."""
    return int(np.random.SeedSequence([seed, number]).generate_state(1)[0])


def suggest(space: ParamSpace, history: Sequence[dict], number: int, seed: int, startup: int) -> dict:
    """The values of trial ``number``, given the trials before it (their ``params`` and ``values``)."""
    optuna = _optuna()
    dists = distributions(space)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna's experimental-feature warnings
        sampler = optuna.samplers.TPESampler(seed=trial_seed(seed, number), n_startup_trials=startup)
        study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
        for past in history:
            study.add_trial(
                optuna.trial.create_trial(
                    params=past["params"],
                    distributions=dists,
                    values=[past["values"]["accuracy"], past["values"]["tokens_out"]],
                )
            )
        trial = study.ask(dists)
    return {name: space.params[name].normal(trial.params[name]) for name in space.params}


@dataclass(frozen=True)
class Setup:
    """What every trial shares: the file, its default models, the tasks, the run's seed."""

    path: Path
    source: str
    default: object  # the module with the params' defaults (its models are reused)
    tasks: Sequence[ev.Task]
    seed: int
    metric: str
    backend: str | None
    options: dict
    max_in_flight: int | None

    @property
    def digest(self) -> str:
        text = self.source + "\0" + json.dumps([t.id for t in self.tasks])
        return hashlib.sha256(f"{text}\0{self.metric}".encode()).hexdigest()[:12]


def run_trial(setup: Setup, values: dict, number: int) -> dict:
    """Run the infer clause with ``values`` over the tasks; the trial's results line."""
    checked = check(setup.source, str(setup.path), values)
    default_uses = setup.default.checked.uses
    shared = {
        name: setup.default.models[name]
        for name, use in checked.uses.items()
        if name in default_uses and default_uses[name].settings == use.settings
    }
    module = load(
        setup.source,
        filename=str(setup.path),
        backend=setup.backend,
        models=shared,
        options=setup.options,
        params=values,
    )
    if module.infer is None:
        raise SearchError(f"{setup.path} has no infer clause: tts search runs it")
    infer = module.infer
    signature = module.checked.signatures[infer.info.program]
    inputs = [ev.program_inputs(task, signature) for task in setup.tasks]
    started = time.perf_counter()
    results = infer.algorithm.run(
        infer.program,
        inputs,
        seed=setup.seed,
        ids=[t.index for t in setup.tasks],
        max_in_flight=setup.max_in_flight,
    )
    method = ev.Method(infer.info.algorithm, dict(infer.info.settings))
    budget = infer.info.settings.get(infer.info.spec.budget) if infer.info.spec.budget else 0
    correct, tokens_in, tokens_out, runs = 0, 0, 0, 0
    for task, posterior in zip(setup.tasks, results):
        record = ev.task_record(task, method, budget, posterior, seed=setup.seed, program="", ks=[1])
        correct += bool(record["metrics"][setup.metric])
        tokens_in += record["tokens_in"]
        tokens_out += record["tokens_out"]
        runs += posterior.diagnostics.particles
    n = len(setup.tasks)
    return {
        "schema": SCHEMA,
        "kind": "trial",
        "number": number,
        "params": values,
        "values": {"accuracy": correct / n, "tokens_out": tokens_out / n},
        "infer": infer.describe(),
        "tasks": n,
        "tokens_in": tokens_in / n,
        "runs": runs / n,
        "engine_calls": results.stats.total_calls() if results.stats is not None else 0,
        "wall_time": round(time.perf_counter() - started, 4),
        "metric": setup.metric,
        "seed": setup.seed,
        "search": setup.digest,
    }


def read_trials(path: Path, setup: Setup) -> list[dict]:
    """The finished trials of ``path`` (a torn last line is dropped), checked to be this search's."""
    records = [r for r in ev.read_results(path) if r.get("kind") == "trial"]
    for r in records:
        if (r.get("search"), r.get("seed")) != (setup.digest, setup.seed):
            raise SearchError(
                f"{path} holds trials of another search (another file, task set, metric or --seed); "
                "resume with the same command, or write to another --out"
            )
    records.sort(key=lambda r: r["number"])
    if [r["number"] for r in records] != list(range(len(records))):
        raise SearchError(f"{path}: the trials are not numbered 0, 1, 2, …; write to another --out")
    return records


def search(
    path: Path,
    tasks: Sequence[ev.Task],
    out_path: Path,
    trials: int,
    *,
    seed: int = 0,
    metric: str = "majority",
    backend: str | None = None,
    options: dict | None = None,
    startup: int = 4,
    max_in_flight: int | None = None,
    on_trial: Callable[[dict], None] | None = None,
    before_trial: Callable[[int], None] | None = None,
) -> list[dict]:
    """Run trials 0 … ``trials`` − 1 of the search (skipping those in ``out_path``); all trials."""
    if metric not in METRICS:
        raise SearchError(f"unknown metric {metric!r}; the metrics are {', '.join(METRICS)}")
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise SearchError(f"--trials must be a whole number >= 1, got {trials!r}")
    source = Path(path).read_text(encoding="utf-8")
    default = load(source, filename=str(path), backend=backend, options=options or {})
    if not default.checked.params.params:
        raise SearchError(f"{path} declares no param: there is nothing to search (see `param` in the README)")
    if default.infer is None:
        raise SearchError(f"{path} has no infer clause: tts search runs it")
    setup = Setup(
        Path(path), source, default, list(tasks), seed, metric, backend, options or {}, max_in_flight
    )
    history = read_trials(out_path, setup)
    if history:
        print(f"tts search: resuming {out_path}: {len(history)} of {trials} trials done", file=sys.stderr)
    space = default.checked.params
    try:
        with open(out_path, "a", encoding="utf-8") as out:
            for number in range(len(history), trials):
                if before_trial is not None:
                    before_trial(number)
                values = suggest(space, history, number, seed, startup)
                record = run_trial(setup, values, number)
                out.write(json.dumps(record, ensure_ascii=False) + "\n")
                out.flush()
                os.fsync(out.fileno())
                history.append(record)
                if on_trial is not None:
                    on_trial(record)
    finally:
        for model in {id(m): m for m in default.models.values()}.values():
            close = getattr(model, "close", None)
            if callable(close):
                close()
    return history


def pareto(trials: Sequence[dict]) -> list[dict]:
    """The trials no other trial dominates (accuracy >= and tokens <=, one of them strictly),
    by tokens; of equal (accuracy, tokens) the first."""
    front, seen = [], set()
    for t in trials:
        a, c = t["values"]["accuracy"], t["values"]["tokens_out"]
        dominated = any(
            (u["values"]["accuracy"] >= a and u["values"]["tokens_out"] <= c)
            and (u["values"]["accuracy"] > a or u["values"]["tokens_out"] < c)
            for u in trials
        )
        if not dominated and (a, c) not in seen:
            seen.add((a, c))
            front.append(t)
    return sorted(front, key=lambda t: t["values"]["tokens_out"])


def best(trials: Sequence[dict]) -> dict:
    """The most accurate trial; of those, the fewest generated tokens; then the first."""
    return min(trials, key=lambda t: (-t["values"]["accuracy"], t["values"]["tokens_out"], t["number"]))


def write_best(source: str, space: ParamSpace, trial: dict, path: Path, trials: int) -> None:
    text = write(source, space, trial["params"])
    v = trial["values"]
    note = (
        f"\n# tts search: the best of {trials} trials (trial {trial['number']}): "
        f"{trial['metric']} accuracy {v['accuracy']:.3f}, {v['tokens_out']:.0f} generated tokens per task\n"
    )
    Path(path).write_text(text.rstrip("\n") + "\n" + note, encoding="utf-8")


def _label(trial: dict) -> str:
    return ", ".join(f"{k}={_short(v)}" for k, v in trial["params"].items())


def _short(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def plot_html(trials: Sequence[dict], path: Path, title: str = "") -> None:
    """Every trial and the Pareto front, accuracy against generated tokens (plotly, offline HTML)."""
    import plotly.graph_objects as go

    front = pareto(trials)
    figure = go.Figure()
    figure.add_trace(
        go.Scatter(
            x=[t["values"]["tokens_out"] for t in trials],
            y=[t["values"]["accuracy"] for t in trials],
            mode="markers",
            name="trials",
            text=[f"trial {t['number']}: {_label(t)}" for t in trials],
            hoverinfo="text+x+y",
            marker={"color": "#9aa5b1", "size": 8},
        )
    )
    figure.add_trace(
        go.Scatter(
            x=[t["values"]["tokens_out"] for t in front],
            y=[t["values"]["accuracy"] for t in front],
            mode="lines+markers",
            line={"shape": "hv"},
            name="Pareto front",
            text=[f"trial {t['number']}: {_label(t)}" for t in front],
            hoverinfo="text+x+y",
            marker={"color": "#c0392b", "size": 10},
        )
    )
    figure.update_layout(
        title=title or "tts search: accuracy against generated tokens",
        xaxis_title="generated tokens per task (mean)",
        yaxis_title="accuracy",
        yaxis_range=[-0.02, 1.02],
        template="plotly_white",
    )
    figure.write_html(str(path), include_plotlyjs=True, full_html=True)


def plot_png(trials: Sequence[dict], path: Path, title: str = "") -> bool:
    """The same plot as a PNG (matplotlib, the eval extra); False when matplotlib is missing."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:  # pragma: no cover - depends on the install
        return False
    front = pareto(trials)
    figure = Figure(figsize=(6.4, 4.2), dpi=120)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.scatter(
        [t["values"]["tokens_out"] for t in trials],
        [t["values"]["accuracy"] for t in trials],
        color="#9aa5b1",
        label="trials",
    )
    axes.step(
        [t["values"]["tokens_out"] for t in front],
        [t["values"]["accuracy"] for t in front],
        where="post",
        color="#c0392b",
        marker="o",
        label="Pareto front",
    )
    for t in front:  # trial numbers: the table printed with the plot gives their values
        axes.annotate(
            f"#{t['number']}",
            (t["values"]["tokens_out"], t["values"]["accuracy"]),
            textcoords="offset points",
            xytext=(4, -10),
            fontsize=8,
        )
    axes.set_xlabel("generated tokens per task (mean)")
    axes.set_ylabel("accuracy")
    axes.set_ylim(-0.02, 1.02)
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=8)
    if title:
        axes.set_title(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(str(path))
    return True


def table(trials: Sequence[dict]) -> str:
    """The trials as markdown, Pareto-optimal ones marked."""
    front = {t["number"] for t in pareto(trials)}
    names = list(trials[0]["params"]) if trials else []
    head = ["trial", *names, "accuracy", "tokens out", "runs/task", "wall s", "pareto"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for t in trials:
        cells = [str(t["number"]), *(_short(t["params"][n]) for n in names)]
        cells += [f"{t['values']['accuracy']:.3f}", f"{t['values']['tokens_out']:.0f}"]
        cells += [
            f"{t.get('runs', math.nan):.2f}",
            f"{t['wall_time']:.1f}",
            "*" if t["number"] in front else "",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
