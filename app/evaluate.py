"""Evaluate a program over a task set at several budgets: ``tts eval``'s engine room.

For each algorithm and each budget (particles, beams or chains) every task is run, its
final particles checked by the task's checker (``ppl.backends.verifiers``), and one JSON
line appended to the results file **as each task finishes** (flushed and fsynced). A run
that is interrupted — Ctrl-C, a crash, a killed engine — loses nothing: run it again and it
skips every (algorithm, budget, task) already in the file, with the same seeds as an
uninterrupted run (a task's randomness is keyed by the run's seed and its position in the
dataset, ``Algorithm.run(..., ids=...)``). A last line cut short by a crash is dropped.

Lines of the results file (the fields are documented in the README, "Result records"):

* ``{"schema", "kind": "task", "algorithm", "budget", "id", "index", "checker", "reference",
  …the fields of every record (``ppl.app.records.posterior_record``: answers, evidence, per-step
  ``ess`` and ``resampled``, tokens, engine calls, wall time, diagnostics)…, "correct",
  "metrics": {best, majority, weighted_vote, n, c, covered, pass@k…}, "samples": [[answer,
  log_weight, correct], …], "seed", "program"}`` — one per task (``python_tests`` tasks add
  ``"sandbox"``: the guarantee level their code ran under, "namespaced" or "fallback");
* ``{"schema", "kind": "segment", "algorithm", "budget", "tasks", "engine_calls", "wall_time", …}`` —
  after each uninterrupted stretch of an (algorithm, budget): the engine's calls and wall time.

``summarise`` turns the file into one row per (algorithm, budget) — accuracy (the argmax-weight
answer is right), majority@N, weighted-vote@N, coverage, pass@k, tokens per task, engine
calls, wall time — ``markdown_table`` prints it and ``plot`` draws accuracy against generated
tokens per task, one line per algorithm.

    >>> Method.of("smc").settings, Method.of("beam").budget, Method.of("mh").budget
    ({'ess': 0.5, 'resample': 'multinomial'}, 'beams', 'chains')
    >>> Task.from_json({"id": "a", "input": "2+2?", "reference": "4", "checker": "math"}, 0).checker
    'math'
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ppl.algorithms import ALGORITHMS
from ppl.backends.verifiers import CHECKERS, check, python_tests_run
from ppl.grammar.compiler import has_type
from ppl.settings import AlgorithmSpec

from . import costs
from .jsonl import complete_json_lines, json_lines
from .metrics import Sample, aggregate, problem_metrics
from .progress import Display
from .records import SCHEMA, jsonable, posterior_record


class EvalError(ValueError):
    """A problem with the tasks, the algorithms or the results file, reported to the user."""


@dataclass(frozen=True)
class Task:
    """One line of a task set: ``id``, ``input`` (text, or an object of inputs), ``reference``, ``checker``.

    ``index`` is its position in the file: the key of its randomness.
    """

    id: str
    input: object
    reference: object
    checker: str
    index: int

    @staticmethod
    def from_json(record, index: int, where: str = "task") -> Task:
        if not isinstance(record, dict):
            raise EvalError(f"{where}: a task is an object with id, input, reference and checker")
        missing = [k for k in ("id", "input", "reference", "checker") if k not in record]
        if missing:
            raise EvalError(f"{where}: missing '{missing[0]}' (a task has id, input, reference and checker)")
        if record["checker"] not in CHECKERS:
            raise EvalError(
                f"{where}: unknown checker {record['checker']!r}; the checkers are {', '.join(sorted(CHECKERS))}"
            )
        return Task(str(record["id"]), record["input"], record["reference"], record["checker"], index)


def load_tasks(path: Path) -> list[Task]:
    """The tasks of a JSONL file, one per non-empty line; ids must be distinct."""
    tasks: list[Task] = []
    for number, record in json_lines(path, EvalError, "not a JSON value", detail=True):
        tasks.append(Task.from_json(record, len(tasks), f"{path}:{number}"))
    if not tasks:
        raise EvalError(f"{path}: no tasks (one JSON object per line)")
    seen: set[str] = set()
    for task in tasks:
        if task.id in seen:
            raise EvalError(f"{path}: the task id {task.id!r} appears twice")
        seen.add(task.id)
    return tasks


@dataclass(frozen=True)
class Method:
    """An algorithm to evaluate: its name in the registry and its settings except the budget."""

    algorithm: str
    settings: dict = field(default_factory=dict)

    @staticmethod
    def of(algorithm: str, settings: Mapping | None = None) -> Method:
        """``algorithm`` with ``settings`` (default: the registry's defaults); ``EvalError`` if it
        is unknown, has no budget setting, or needs a setting other than its budget."""
        spec = _spec(algorithm)
        if spec.budget is None:
            raise EvalError(f"{algorithm}() has no budget setting: there is nothing for --budgets to set")
        if settings is None:
            missing = [s.name for s in spec.settings if s.required and s.name != spec.budget]
            if missing:
                raise EvalError(f"{algorithm}() needs '{missing[0]}': put it in the file's infer clause")
            settings = spec.defaults()
        return Method(algorithm, {k: v for k, v in settings.items() if k != spec.budget})

    @property
    def budget(self) -> str:
        """The setting a budget sets (particles, beams, chains …)."""
        return _spec(self.algorithm).budget

    def at(self, budget: int):
        """The configured interpreter at ``budget``."""
        spec = _spec(self.algorithm)
        try:
            return spec.build({**self.settings, spec.budget: budget})
        except ValueError as error:
            raise EvalError(f"{self.algorithm}() at budget {budget}: {error}") from None


def _spec(algorithm: str) -> AlgorithmSpec:
    if algorithm not in ALGORITHMS:
        raise EvalError(
            f"unknown algorithm {algorithm!r}; the algorithms are {', '.join(sorted(ALGORITHMS))}"
        )
    return ALGORITHMS[algorithm]


def program_inputs(task: Task, signature) -> dict:
    """The keyword inputs of the program for ``task``: its input text for a one-input program,
    or its input object's fields. Each must have its parameter's type (as ``tts run`` checks):
    a task that cannot be run is refused before anything runs, not scored as wrong."""
    names = [name for name, _ in signature]
    if isinstance(task.input, dict):
        if set(task.input) != set(names):
            raise EvalError(
                f"task {task.id}: the inputs are {', '.join(names) or 'none'}, got {', '.join(task.input)}"
            )
        inputs = dict(task.input)
    elif len(names) != 1:
        raise EvalError(
            f"task {task.id}: the program has {len(names)} inputs ({', '.join(names) or 'none'}); "
            "write the task's input as an object of them"
        )
    else:
        inputs = {names[0]: task.input}
    for name, t in signature:
        if not has_type(inputs[name], t):
            article = "an" if str(t)[0] in "aeiou" else "a"
            raise EvalError(
                f"task {task.id}: the input '{name}' must be {article} {t}, got {json.dumps(inputs[name])}"
            )
    return inputs


def answer_text(value):
    """What a checker sees: a text stays a text, anything else becomes its JSON."""
    value = jsonable(value)
    return value if isinstance(value, str) or value is None else json.dumps(value, ensure_ascii=False)


def task_record(task: Task, method: Method, budget: int, posterior, *, seed: int, program: str, ks) -> dict:
    """One results line: the fields of every record, and the task's samples checked with its metrics."""
    verdicts: dict = {}
    samples = []
    guarantees = set()  # python_tests: the sandbox's guarantee level of each run
    for particle in posterior.particles:
        answer = answer_text(particle.value) if particle.log_weight > -math.inf else None
        key = json.dumps(answer)
        if key not in verdicts and task.checker == "python_tests" and answer is not None:
            run = python_tests_run(answer, task.reference)
            verdicts[key] = run.passed
            guarantees.add(run.guarantee)
        elif key not in verdicts:
            verdicts[key] = check(task.checker, answer, task.reference)
        samples.append(Sample(answer, particle.log_weight, verdicts[key]))
    metrics = problem_metrics(samples, ks=ks)
    return {
        "schema": SCHEMA,
        "kind": "task",
        "algorithm": method.algorithm,
        "budget": budget,
        "id": task.id,
        "index": task.index,
        "checker": task.checker,
        "reference": task.reference,
        **posterior_record(posterior),  # its "schema" lands on the first key
        "correct": metrics["best"],
        "metrics": metrics,
        "samples": [
            [s.answer, s.log_weight if math.isfinite(s.log_weight) else None, s.correct] for s in samples
        ],
        "seed": seed,
        "program": program,
        **({"sandbox": "fallback" if "fallback" in guarantees else "namespaced"} if guarantees else {}),
    }


def program_digest(source: str) -> str:
    """A short fingerprint of the program's source, stored with each result."""
    return hashlib.sha256(source.encode("utf-8")).hexdigest()[:12]


def read_results(path: Path) -> list[dict]:
    """The complete lines of a results file; a last line cut short by a crash is removed from the file."""
    return [
        record for _, record in complete_json_lines(path, EvalError, "not a results line; use another --out")
    ]


def _append(out, record: dict) -> None:
    out.write(json.dumps(record, ensure_ascii=False) + "\n")
    out.flush()
    os.fsync(out.fileno())


def evaluate(
    program,
    signature,
    tasks: Sequence[Task],
    methods: Sequence[Method],
    budgets: Sequence[int],
    out_path: Path,
    *,
    seed: int = 0,
    source: str = "",
    ks: Sequence[int] | None = None,
    progress: bool = True,
    on_record: Callable[[dict], None] | None = None,
    max_in_flight: int | None = None,
    models: Sequence = (),
) -> list[dict]:
    """Run every (method, budget) over ``tasks``, appending results to ``out_path``; resumes.

    Returns every record of the file afterwards. ``ks`` are the k of pass@k (default: the
    powers of two up to each budget). ``models`` are the file's models: each segment line
    records the prompt tokens they served from their prefix cache (``ppl.app.costs``).
    """
    if not budgets or any(isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in budgets):
        raise EvalError(f"budgets must be whole numbers >= 1, got {list(budgets)}")
    digest = program_digest(source)
    existing = read_results(out_path)
    for r in existing:
        if r.get("kind") == "task" and (r.get("seed"), r.get("program")) != (seed, digest):
            raise EvalError(
                f"{out_path} holds results of another run (seed {r.get('seed')}, program {r.get('program')}); "
                "resume with the same program and --seed, or write to another --out"
            )
    done = {(r["algorithm"], r["budget"], r["id"]) for r in existing if r.get("kind") == "task"}
    inputs = {task.id: program_inputs(task, signature) for task in tasks}  # every task checked first
    for method in methods:  # and every budget: an interpreter that cannot take one stops nothing midway
        for budget in budgets:
            method.at(budget)
    total = len(methods) * len(budgets) * len(tasks)
    already = sum((m.algorithm, b, t.id) in done for m in methods for b in budgets for t in tasks)
    if already:
        print(f"tts eval: resuming {out_path}: {already} of {total} task runs already done", file=sys.stderr)
    bar = Display(total, "eval", unit="tasks", done=already, enabled=progress and already < total)
    try:
        with bar, open(out_path, "a", encoding="utf-8") as out:
            for method in methods:
                for budget in budgets:
                    todo = [t for t in tasks if (method.algorithm, budget, t.id) not in done]
                    if not todo:
                        continue
                    _run_segment(
                        program,
                        todo,
                        inputs,
                        method,
                        budget,
                        out,
                        seed,
                        digest,
                        ks,
                        bar,
                        on_record,
                        max_in_flight,
                        models,
                    )
    finally:
        bar.close()
    return read_results(out_path)


def _run_segment(
    program,
    todo,
    inputs,
    method,
    budget,
    out,
    seed,
    digest,
    ks,
    bar,
    on_record,
    max_in_flight=None,
    models=(),
) -> None:
    algorithm = method.at(budget)
    by_index = {t.index: t for t in todo}
    ks = sorted({k for k in (ks or _powers_of_two(budget)) if k >= 1})
    bar.describe(f"{method.algorithm} @ {budget}")

    def finished(index: int, posterior) -> None:
        record = task_record(by_index[index], method, budget, posterior, seed=seed, program=digest, ks=ks)
        _append(out, record)
        if on_record is not None:
            on_record(record)
        bar.advance()

    started = time.perf_counter()
    before = costs.usage(models)
    results = algorithm.run(
        program,
        [inputs[t.id] for t in todo],
        seed=seed,
        ids=[t.index for t in todo],
        progress=finished,
        max_in_flight=max_in_flight,
        watch=bar.watch,
    )
    stats = results.stats
    delta = costs.since(before, costs.usage(models))
    _append(
        out,
        {
            "schema": SCHEMA,
            "kind": "segment",
            "algorithm": method.algorithm,
            "budget": budget,
            "tasks": len(todo),
            "cached_prompt_tokens": costs.cached_tokens(delta),
            **({"model": next(iter(delta))} if len(delta) == 1 else {}),
            "engine_calls": stats.total_calls() if stats is not None else 0,
            "wall_time": round(time.perf_counter() - started, 4),
            "seed": seed,
            "program": digest,
        },
    )


def _powers_of_two(budget: int) -> list[int]:
    return [2**i for i in range(budget.bit_length()) if 2**i <= budget]


def summarise(records: Sequence[dict], prices=None) -> list[dict]:
    """One row per (algorithm, budget), in the order first seen: the metrics' means and the costs
    (with ``prices``, a ``ppl.app.costs.Prices``: the money cost per task)."""
    groups: dict[tuple[str, int], list[dict]] = {}
    segments: dict[tuple[str, int], list[dict]] = {}
    for r in records:
        key = (r.get("algorithm"), r.get("budget"))
        if r.get("kind") == "task":
            groups.setdefault(key, []).append(r)
        elif r.get("kind") == "segment":
            segments.setdefault(key, []).append(r)
    rows = []
    for (algorithm, budget), tasks in groups.items():
        row = {"algorithm": algorithm, "budget": budget, **aggregate([t["metrics"] for t in tasks])}
        n = len(tasks)
        row["tokens_in"] = sum(t["tokens_in"] for t in tasks) / n
        row["tokens_out"] = sum(t["tokens_out"] for t in tasks) / n
        # the runs each task drew: the budget for fixed interpreters, what adaptive ones used
        row["runs"] = sum(t.get("diagnostics", {}).get("particles", budget) for t in tasks) / n
        row["resamplings"] = sum(sum(t.get("resampled", ())) for t in tasks)
        segs = segments.get((algorithm, budget), [])
        row["engine_calls"] = sum(s["engine_calls"] for s in segs)
        row["wall_time"] = sum(s["wall_time"] for s in segs)
        covered = sum(s["tasks"] for s in segs if "cached_prompt_tokens" in s)
        if covered:  # the prefix-cache share, per task, of the segments that counted it
            row["cached_in"] = sum(s.get("cached_prompt_tokens", 0) for s in segs) / covered
        if prices is not None:
            names = {s.get("model") for s in segs}
            model = names.pop() if len(names) == 1 else None
            cached = min(row.get("cached_in", 0.0), row["tokens_in"])
            row["cost"] = prices.cost(row["tokens_in"], cached, row["tokens_out"], model)
        rows.append(row)
    times = engine_times(rows)
    for row in rows if times is not None else ():
        row["ideal_time"] = times.seconds(*_work(row))
    return rows


def _work(row: dict) -> tuple[float, float, float]:
    """A row's totals: uncached prompt tokens, generated tokens, engine calls."""
    n = row["problems"]
    cached = min(row.get("cached_in", 0.0), row["tokens_in"])
    return (row["tokens_in"] - cached) * n, row["tokens_out"] * n, row["engine_calls"]


def engine_times(rows: Sequence[dict]) -> costs.EngineTimes | None:
    """The engine cost model fitted to the rows' wall times (``costs.EngineTimes``)."""
    return costs.EngineTimes.fit([(*_work(r), r["wall_time"]) for r in rows])


def markdown_table(rows: Sequence[dict]) -> str:
    """The summary as a markdown table (tokens are means per task; resamplings, calls and time are the
    runs' totals)."""
    ks = sorted({k for row in rows for k in row if k.startswith("pass@")}, key=lambda k: int(k[5:]))
    head = [
        "algorithm",
        "budget",
        "tasks",
        "runs/task",
        "accuracy",
        "majority@N",
        "weighted@N",
        "coverage",
        *ks,
    ]
    head += ["resamplings", "tokens in", "cached in", "tokens out", "engine calls", "wall s"]
    ideal = any("ideal_time" in row for row in rows)
    head += ["ideal s"] if ideal else []
    priced = any("cost" in row for row in rows)
    head += ["cost/task"] if priced else []
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for row in rows:
        runs = f"{row['runs']:.2f}" if "runs" in row else ""
        cells = [str(row["algorithm"]), str(row["budget"]), str(row["problems"]), runs]
        cells += [f"{row[k]:.3f}" for k in ("accuracy", "majority", "weighted_vote", "coverage")]
        cells += [f"{row[k]:.3f}" if k in row else "" for k in ks]
        cached = f"{row['cached_in']:.0f}" if "cached_in" in row else ""
        cells += [
            str(row.get("resamplings", "")),
            f"{row['tokens_in']:.0f}",
            cached,
            f"{row['tokens_out']:.0f}",
        ]
        cells.append(str(row["engine_calls"]))
        cells.append(f"{row['wall_time']:.1f}")
        cells += [f"{row['ideal_time']:.1f}" if "ideal_time" in row else ""] if ideal else []
        cells += [f"{row['cost']:.6f}" if "cost" in row else ""] if priced else []
        lines.append("| " + " | ".join(cells) + " |")
    times = engine_times(rows) if ideal else None
    return "\n".join(lines) + (f"\n\n{times.describe()}" if times is not None else "")


def plot(rows: Sequence[dict], path: Path, title: str = "") -> None:
    """A PNG of accuracy against generated tokens per task, one line per algorithm, points labelled by budget."""
    try:  # an optional, heavy dependency (the eval extra)
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:  # pragma: no cover - depends on the install
        raise EvalError("the plot needs matplotlib: pip install 'ppl-tts[eval]'") from None
    figure = Figure(figsize=(6, 4), dpi=120)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for algorithm in dict.fromkeys(r["algorithm"] for r in rows):
        points = sorted(
            (r["tokens_out"], r["accuracy"], r["budget"]) for r in rows if r["algorithm"] == algorithm
        )
        axes.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=algorithm)
        for x, y, budget in points:
            axes.annotate(str(budget), (x, y), textcoords="offset points", xytext=(3, 4), fontsize=7)
    axes.set_xscale("symlog", linthresh=10)
    axes.set_xlabel("generated tokens per task (mean)")
    axes.set_ylabel("accuracy")
    axes.set_ylim(-0.02, 1.02)
    axes.grid(True, alpha=0.3)
    axes.legend()
    if title:
        axes.set_title(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(str(path))


def evaluate_policy(
    program,
    signature,
    tasks: Sequence[Task],
    policy: dict,
    method_of: Callable[[str], Method],
    out_path: Path,
    *,
    seed: int = 0,
    source: str = "",
    max_in_flight: int | None = None,
) -> list[dict]:
    """Apply a ``tts plan`` policy to ``tasks`` (``ppl.app.plan``): probe each task, then run
    its arm; one ``"algorithm": "policy"`` line per task (resumes like ``evaluate``).

    A task's tokens, calls and time are the probe's plus its arm's; ``"policy"`` in its line
    gives the probe's agreement, the arm chosen and the probe's own tokens."""
    from .plan import agreement, choose_arm

    digest = program_digest(source)
    existing = read_results(out_path)
    for r in existing:
        if r.get("kind") == "task" and (r.get("seed"), r.get("program")) != (seed, digest):
            raise EvalError(
                f"{out_path} holds results of another run (seed {r.get('seed')}, program {r.get('program')}); "
                "resume with the same program and --seed, or write to another --out"
            )
    done = {r["id"] for r in existing if r.get("kind") == "task" and r.get("algorithm") == "policy"}
    todo = [t for t in tasks if t.id not in done]
    inputs = {task.id: program_inputs(task, signature) for task in tasks}
    arms = {tuple(b["arm"]) for b in policy["bins"]}
    for algorithm, budget in arms:  # every arm checked before anything runs
        method_of(algorithm).at(int(budget))
    if not todo:
        return existing
    started = time.perf_counter()
    probe_method = Method.of("importance")
    probe = probe_method.at(int(policy["probe"]))
    probed = probe.run(program, [inputs[t.id] for t in todo], seed=seed, ids=[t.index for t in todo])
    calls = probed.stats.total_calls() if probed.stats is not None else 0
    plans = {}
    for task, posterior in zip(todo, probed):
        record = task_record(
            task, probe_method, policy["probe"], posterior, seed=seed, program=digest, ks=[1]
        )
        value = agreement(record["samples"])
        plans[task.id] = (value, choose_arm(policy, value), record)
    with open(out_path, "a", encoding="utf-8") as out:
        for algorithm, budget in sorted(arms):
            mine = [t for t in todo if plans[t.id][1] == (algorithm, budget)]
            if not mine:
                continue
            method = method_of(algorithm)
            results = method.at(budget).run(
                program,
                [inputs[t.id] for t in mine],
                seed=seed,
                ids=[t.index for t in mine],
                max_in_flight=max_in_flight,
            )
            calls += results.stats.total_calls() if results.stats is not None else 0
            for task, posterior in zip(mine, results):
                value, _, probe_record = plans[task.id]
                record = task_record(task, method, budget, posterior, seed=seed, program=digest, ks=[1])
                record.update(algorithm="policy", budget=0)
                record["policy"] = {
                    "agreement": value,
                    "arm": [algorithm, budget],
                    "probe_tokens_in": probe_record["tokens_in"],
                    "probe_tokens_out": probe_record["tokens_out"],
                }
                for name in ("tokens_in", "tokens_out", "engine_calls"):
                    record[name] += probe_record[name]
                _append(out, record)
        _append(
            out,
            {
                "schema": SCHEMA,
                "kind": "segment",
                "algorithm": "policy",
                "budget": 0,
                "tasks": len(todo),
                "engine_calls": calls,
                "wall_time": round(time.perf_counter() - started, 4),
                "seed": seed,
                "program": digest,
            },
        )
    return read_results(out_path)
