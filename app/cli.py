"""The ``tts`` command: check, run and render ``.tts`` programs.

    tts check FILE...                      parse and check; exit 1 if any file has errors
    tts run FILE [--input TEXT | --data FILE.jsonl] [--backend tabular] [--seed N]
                 [--out results.jsonl] [--particles N] [--trace] [--report FILE.html]
                                           run the file's infer clause; one JSON line per problem
                                           (--trace: with every particle's sites and the genealogy)
    tts render FILE [--input TEXT | --data FILE.jsonl] [--first]
                                           print every request one particle sends (prompts as text
                                           and token ids); --first: the first prompt, no engine call
    tts view RESULTS.jsonl [--report FILE.html]
                                           show a results file (with --trace: every particle's steps)
    tts serve FILE... [--backend B] [--host 127.0.0.1] [--port 8000] [--api-key KEY]
                                           the programs behind an OpenAI-compatible endpoint
    tts eval FILE --data TASKS.jsonl --out results.jsonl [--budgets 1,2,4,8] [--algorithm NAME]...
                                           evaluate at each budget; results appended per task,
                                           resumable; a markdown summary and a PNG plot
    tts plan RESULTS.jsonl --out POLICY.json [--probe 4] [--edges 0.5,1] [--cost C]
                                           fit a policy: probe agreement → (interpreter, budget);
                                           apply with tts eval FILE --data T --out R --policy POLICY.json
    tts search FILE --data DEV.jsonl --out trials.jsonl --trials K [--metric majority] [--seed N]
                                           choose the file's param values with Optuna (accuracy
                                           against generated tokens); trials appended, resumable;
                                           the Pareto front plotted, the best written as a .tts file

Exit codes: 0 success, 1 an error in the program, its inputs or the run (reported without a
traceback), 2 a usage error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import ppl
from ppl.backends.embedded import ModelNotAvailableError, cache_root, list_models, prepare
from ppl.backends.vllm import ENGINE_LOG
from ppl.grammar import LANGUAGE_VERSION, TtsError, TtsRuntimeError
from ppl.grammar.compiler import has_type

from . import costs, report
from . import evaluate as ev
from .errors import Interrupted, UsageError, UserError
from .jsonl import json_lines
from .loading import check, describe_models, load
from .models import backend_names
from .progress import Display
from .records import run_record, summary_table, trace_record
from .render import every_prompt, first_prompt, format_first, format_requests
from .resume import finished as finished_records
from .view import describe_all, read_results

# ---- inputs -------------------------------------------------------------------------------------


def _signature(module, program_name: str):
    return module.checked.signatures[program_name]


def _parse_input(text: str, param: str, t) -> object:
    """The value of ``--input TEXT`` for an input of type ``t`` (text is taken as it is)."""
    if t.name == "text":
        return text
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        raise UserError(f"--input: the input '{param}' is {t}, and {text!r} is not one") from None
    return value


def _check_input(where: str, param: str, t, value):
    if not has_type(value, t):
        raise UserError(f"{where}: the input '{param}' must be {_article(str(t))}, got {json.dumps(value)}")
    return value


def _article(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


def problems_from(args, module, program_name: str) -> list[dict]:
    """The problems to run: from --input, from each line of --data, or one with no inputs."""
    signature = _signature(module, program_name)
    names = [name for name, _ in signature]
    if getattr(args, "data", None):
        return _read_data(Path(args.data), signature)
    if args.input is not None:
        if len(signature) != 1:
            raise UserError(
                f"--input gives the one input of a program, but '{program_name}' has "
                f"{len(signature)} inputs ({', '.join(names) or 'none'}); use --data FILE.jsonl"
            )
        ((param, t),) = signature
        return [{param: _check_input("--input", param, t, _parse_input(args.input, param, t))}]
    if signature:
        raise UserError(
            f"'{program_name}' needs its inputs ({', '.join(names)}): use --input TEXT or --data FILE.jsonl"
        )
    return [{}]


def _read_data(path: Path, signature) -> list[dict]:
    names = [name for name, _ in signature]
    problems = []
    for number, record in json_lines(path, UserError, "not a JSON value"):
        where = f"{path}:{number}"
        if not isinstance(record, dict):
            if len(signature) != 1:
                raise UserError(f"{where}: write an object with the inputs {', '.join(names)}")
            record = {names[0]: record}
        unknown = sorted(set(record) - set(names))
        if unknown:
            raise UserError(f"{where}: unknown input '{unknown[0]}'; the inputs are {', '.join(names)}")
        missing = [n for n in names if n not in record]
        if missing:
            raise UserError(f"{where}: missing the input '{missing[0]}'")
        problems.append({n: _check_input(where, n, t, record[n]) for n, t in signature})
    if not problems:
        raise UserError(f"{path}: no problems (one JSON line per problem)")
    return problems


# ---- commands ---------------------------------------------------------------------------------------


def _backend_options(args) -> dict:
    """Engine settings (``--engine KEY=VALUE``) and server URLs (``--server URL``) for the backend."""
    options = {}
    for item in getattr(args, "engine", None) or []:
        key, sep, value = item.partition("=")
        if not sep or not key.isidentifier():
            raise UsageError(f"--engine takes KEY=VALUE (like max_model_len=4096), got {item!r}")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    if getattr(args, "server", None):
        options["servers"] = list(args.server)
    return options


def _load(path: str, backend: str | None = None, options: dict | None = None):
    try:
        return load(Path(path), backend=backend, options=options)
    except OSError as error:
        raise UserError(f"cannot read {path}: {error.strerror or error}") from None


def _close_engines(module) -> None:
    """Stop the engines the run started (vLLM's processes), rather than at interpreter exit."""
    for model in {id(m): m for m in module.models.values()}.values():
        close = getattr(model, "close", None)
        if callable(close):
            close()


def _engine_log() -> str:
    log = os.environ.get(ENGINE_LOG)
    return f"; the engine's own output is in {log}" if log and Path(log).is_file() else ""


def _prices(args):
    """The price table of ``--prices FILE`` (None without it)."""
    if not getattr(args, "prices", None):
        return None
    try:
        return costs.Prices.read(Path(args.prices))
    except costs.PricesError as error:
        raise UserError(str(error)) from None


def _infer_program(module, path: str):
    if module.infer is None:
        raise UserError(f"{path} has no infer clause: add one, like `infer PROGRAM with smc(particles = 16)`")
    return module.infer


def cmd_check(args) -> int:
    failed = 0
    for path in args.files:
        try:
            checked = check(Path(path))
        except OSError as error:
            print(f"tts: cannot read {path}: {error.strerror or error}", file=sys.stderr)
            failed += 1
            continue
        except TtsError as error:
            print(error, file=sys.stderr)
            failed += 1
            continue
        programs = ", ".join(
            f"{name}({', '.join(f'{p}: {t}' for p, t in checked.signatures[name])}) -> {checked.returns[name]}"
            + (f" from {checked.imports[name][0].filename}" if name in checked.imports else "")
            for name in [*checked.programs, *checked.imports]
        )
        infer = f"; {checked.infer.describe()}" if checked.infer else ""
        print(f"{path}: ok — {programs or 'no programs'}{infer}")
        for line in describe_models(checked):
            print(f"  {line}")
    return 1 if failed else 0


DEFAULT_IN_FLIGHT = 256  # particles: a full batch for vLLM on a small machine, a bounded memory


def cmd_run(args) -> int:
    module = _load(args.file, args.backend, _backend_options(args))
    for line in describe_models(module.checked, args.backend, only_unknown=True):
        print(f"tts run: note: {line}", file=sys.stderr)
    infer = _infer_program(module, args.file)
    if args.particles is not None:
        if "particles" not in infer.info.settings:
            raise UsageError(f"--particles: {infer.info.algorithm}() has no particles")
        infer = infer.with_settings(particles=args.particles)
    problems = problems_from(args, module, infer.info.program)
    if args.resume and not args.out:
        raise UsageError("--resume continues the results file of --out: give it")
    records: list[dict] = []
    if args.resume:
        records = list(finished_records(Path(args.out), problems).values())
        print(
            f"tts run: resuming {args.out}: {len(records)} of {len(problems)} problems already done",
            file=sys.stderr,
        )
    done = {r["id"] for r in records}
    ids = [i for i in range(len(problems)) if i not in done]
    out = open(args.out, "a" if args.resume else "w", encoding="utf-8") if args.out else sys.stdout  # noqa: SIM115
    display = Display(
        len(problems), infer.info.algorithm, done=len(done), enabled=not args.no_progress and bool(ids)
    )

    traced = args.trace or args.report is not None  # a report shows the genealogy: keep it

    def finished(index: int, posterior) -> None:
        line = run_record(index, problems[index], posterior)
        full = {**line, "trace": trace_record(posterior)} if traced else line
        records.append(full)
        out.write(json.dumps(full if args.trace else line, ensure_ascii=False) + "\n")
        out.flush()
        display.advance()

    prices = _prices(args)
    before = costs.usage(module.models.values())
    started = time.perf_counter()
    try:
        with display:
            results = infer.algorithm.run(
                infer.program,
                [problems[i] for i in ids],
                ids=ids,
                seed=args.seed,
                progress=finished,
                max_in_flight=args.in_flight,
                watch=display.watch,
                trace=traced,
            )
    except ppl.EngineError as error:
        if args.report and records:  # the problems that finished are reported all the same
            report.write(args.report, report.run_report(records))
        raise UserError(
            f"the engine failed: {error} ({len(records)} of {len(problems)} results were written"
            f"{_engine_log()})"
        ) from None
    except KeyboardInterrupt:
        saved = (
            f"{len(records)} of {len(problems)} results are in {args.out}"
            if args.out
            else (f"{len(records)} of {len(problems)} results were printed")
        )
        resume = "; run the same command with --resume to run the rest" if args.out else ""
        raise Interrupted(f"interrupted: {saved}{resume}") from None
    finally:
        if args.out:
            out.close()
        _close_engines(module)
    calls = results.stats.total_calls() if results.stats is not None else 0
    wall = time.perf_counter() - started
    table = summary_table(records, wall, calls)
    delta = costs.since(before, costs.usage(module.models.values()))
    fresh = [r for r in records if r["id"] in set(ids)]
    table += "\n" + costs.summary_line(fresh, delta, wall, calls, prices)
    print(table, file=sys.stdout if args.out else sys.stderr)
    if args.report:
        report.write(args.report, report.run_report(records))
    return 0


def cmd_eval(args) -> int:
    """Evaluate the program at each budget over a task set (logic in ``ppl.app.evaluate``)."""
    module = _load(args.file, args.backend, _backend_options(args))
    try:
        budgets = [int(b) for b in args.budgets.split(",") if b.strip()]
    except ValueError:
        raise UsageError(f"--budgets takes whole numbers separated by commas, got {args.budgets!r}") from None
    try:
        if args.algorithm:
            infer = module.infer  # an --algorithm that is the infer clause's keeps its settings
            methods = [
                ev.Method.of(a, infer.info.settings if infer and a == infer.info.algorithm else None)
                for a in dict.fromkeys(args.algorithm)
            ]
            name = args.program or (module.infer.info.program if module.infer else None)
        else:
            infer = _infer_program(module, args.file)
            methods = [ev.Method.of(infer.info.algorithm, infer.info.settings)]
            name = args.program or infer.info.program
        if name is None:
            if len(module.programs) != 1:
                raise UsageError(
                    "the file has several programs and no infer clause: choose one with --program"
                )
            name = next(iter(module.programs))
        if name not in module.programs:
            raise UserError(f"{args.file} has no program '{name}'; it has {', '.join(module.programs)}")
        tasks = ev.load_tasks(Path(args.data))
        out = Path(args.out)
        if args.policy:
            return _eval_policy(args, module, name, tasks, out)
        try:
            records = ev.evaluate(
                module.programs[name],
                _signature(module, name),
                tasks,
                methods,
                budgets,
                out,
                seed=args.seed,
                source=module.source,
                progress=not args.no_progress,
                max_in_flight=args.in_flight,
                models=list(module.models.values()),
            )
        except ppl.EngineError as error:
            raise UserError(
                f"the engine failed: {error} (the results so far are in {out}; run again to resume"
                f"{_engine_log()})"
            ) from None
        except KeyboardInterrupt:
            saved = sum(r.get("kind") == "task" for r in ev.read_results(out))
            raise Interrupted(
                f"interrupted: {saved} task results are saved in {out}; run the same command to resume"
            ) from None
        finally:
            _close_engines(module)
        rows = ev.summarise(records, _prices(args))
        table = ev.markdown_table(rows)
        summary = Path(args.summary) if args.summary else out.with_suffix(".md")
        summary.write_text(f"# tts eval {args.file} on {args.data}\n\n{table}\n", encoding="utf-8")
        if not args.no_plot:
            ev.plot(
                rows,
                Path(args.plot) if args.plot else out.with_suffix(".png"),
                title=f"{Path(args.file).name} on {Path(args.data).name}",
            )
        if args.report:
            report.write(args.report, report.eval_report(rows))
    except ev.EvalError as error:
        raise UserError(str(error)) from None
    print(table)
    if args.verifier_threshold is not None:
        print("\n" + _verifier_section(records, args.verifier_threshold))
    return 0


def _verifier_section(records, threshold: float) -> str:
    """``--verifier-threshold``: the program's weight as a verifier (``ppl.app.verifier_stats``),
    from the runs of best-of-N (the program's own law) — or of every record when there are none."""
    from . import verifier_stats as vs

    tasks = [r for r in records if r.get("kind") == "task"]
    plain = [r for r in tasks if r["algorithm"] in ("importance", "best_of_n")]
    try:
        stats = vs.verifier_stats([r["samples"] for r in plain or tasks], threshold)
    except ValueError as error:
        raise UserError(str(error)) from None
    return vs.describe(stats)


def cmd_search(args) -> int:
    """Search the file's params on a development set (logic in ``ppl.app.search``)."""
    from . import search as se

    out = Path(args.out)
    try:
        tasks = ev.load_tasks(Path(args.data))
        trials = se.search(
            Path(args.file),
            tasks,
            out,
            args.trials,
            seed=args.seed,
            metric=args.metric,
            backend=args.backend,
            options=_backend_options(args),
            startup=args.startup,
            max_in_flight=args.in_flight,
            on_trial=lambda t: print(
                f"trial {t['number']}: {json.dumps(t['params'])} -> accuracy {t['values']['accuracy']:.3f}, "
                f"{t['values']['tokens_out']:.0f} tokens/task",
                file=sys.stderr,
            ),
        )
    except (ev.EvalError, se.SearchError) as error:
        raise UserError(str(error)) from None
    except OSError as error:
        raise UserError(f"cannot read {error.filename}: {error.strerror or error}") from None
    except ppl.EngineError as error:
        raise UserError(
            f"the engine failed: {error} (finished trials are in {out}; run again to resume)"
        ) from None
    except KeyboardInterrupt:
        raise Interrupted(
            f"interrupted: finished trials are in {out}; run the same command to resume"
        ) from None
    title = f"{Path(args.file).name} on {Path(args.data).name}: {args.metric} accuracy"
    plot = Path(args.plot) if args.plot else out.with_suffix(".html")
    se.plot_html(trials, plot, title)
    png = plot.with_suffix(".png")
    drew = se.plot_png(trials, png, title)
    best = se.best(trials)
    best_path = Path(args.best) if args.best else out.with_suffix(".best.tts")
    space = check(Path(args.file)).params
    se.write_best(Path(args.file).read_text(encoding="utf-8"), space, best, best_path, len(trials))
    print(se.table(trials))
    print(
        f"\nPareto front: trials {', '.join(str(t['number']) for t in se.pareto(trials))}; plot {plot}"
        f"{f' and {png}' if drew else ''}; best (trial {best['number']}) written to {best_path}"
    )
    return 0


def _eval_policy(args, module, name, tasks, out) -> int:
    """``tts eval --policy``: probe, then each task's arm (``ppl.app.evaluate.evaluate_policy``)."""
    from . import plan

    try:
        policy = plan.read_policy(Path(args.policy))
    except plan.PlanError as error:
        raise UserError(str(error)) from None
    infer = module.infer

    def method_of(algorithm: str) -> ev.Method:
        if infer is not None and algorithm == infer.info.algorithm:
            return ev.Method.of(algorithm, infer.info.settings)
        return ev.Method.of(algorithm)

    try:
        records = ev.evaluate_policy(
            module.programs[name],
            _signature(module, name),
            tasks,
            policy,
            method_of,
            out,
            seed=args.seed,
            source=module.source,
            max_in_flight=args.in_flight,
        )
    except ppl.EngineError as error:
        raise UserError(
            f"the engine failed: {error} (the results so far are in {out}; run again to resume)"
        ) from None
    finally:
        _close_engines(module)
    rows = ev.summarise(records, _prices(args))
    table = ev.markdown_table(rows)
    summary = Path(args.summary) if args.summary else out.with_suffix(".md")
    summary.write_text(
        f"# tts eval --policy {args.policy} {args.file} on {args.data}\n\n{table}\n", encoding="utf-8"
    )
    print(plan.describe(policy))
    print()
    print(table)
    return 0


def cmd_plan(args) -> int:
    """Fit a policy from ``tts eval`` results (``ppl.app.plan``)."""
    from . import plan

    try:
        edges = [float(e) for e in args.edges.split(",") if e.strip()]
    except ValueError:
        raise UsageError(f"--edges takes numbers separated by commas, got {args.edges!r}") from None
    try:
        records = ev.read_results(Path(args.results))
        policy = plan.fit(records, probe=args.probe, edges=edges, metric=args.metric, cost=args.cost)
    except (plan.PlanError, ev.EvalError) as error:
        raise UserError(str(error)) from None
    Path(args.out).write_text(json.dumps(policy, indent=2) + "\n", encoding="utf-8")
    print(plan.describe(policy))
    print(
        f"\npolicy written to {args.out}; apply it with `tts eval FILE --data TASKS --out R --policy {args.out}`"
    )
    return 0


def cmd_render(args) -> int:
    module = _load(args.file, args.backend, _backend_options(args))
    if args.program:
        if args.program not in module.programs:
            raise UserError(
                f"{args.file} has no program '{args.program}'; it has {', '.join(module.programs)}"
            )
        name = args.program
    elif module.infer is not None:
        name = module.infer.info.program
    elif len(module.programs) == 1:
        name = next(iter(module.programs))
    else:
        raise UserError(f"{args.file} has several programs and no infer clause: choose one with --program")
    problems = problems_from(args, module, name)
    try:
        for number, inputs in enumerate(problems):
            if len(problems) > 1:
                print(f"##### problem {number}: {json.dumps(inputs, ensure_ascii=False)}")
            if args.first:
                print(format_first(first_prompt(module.programs[name], inputs, rng_seed=args.seed)))
            else:
                print(format_requests(*every_prompt(module.programs[name], inputs, rng_seed=args.seed)))
    finally:
        _close_engines(module)
    return 0


def cmd_view(args) -> int:
    """Show a results file of ``tts run`` (or ``tts eval``); ``--report`` writes its HTML page."""
    records = read_results(Path(args.results))
    if any(r["kind"] == "problem" for r in records):
        print(describe_all(records))
        page = report.run_report([r for r in records if r["kind"] == "problem"]) if args.report else None
    else:
        rows = ev.summarise(records)
        print(ev.markdown_table(rows))
        page = report.eval_report(rows) if args.report else None
    if page is not None:
        report.write(args.report, page)
    return 0


def cmd_serve(args) -> int:
    """Serve the files' programs behind an OpenAI-compatible endpoint (``ppl.app.serve``)."""
    from .serve import serve  # FastAPI and uvicorn are imported only to serve
    from .serve_requests import Limits

    limits = Limits(
        max_particles=args.max_particles,
        max_tokens=args.max_tokens,
        timeout=args.timeout,
        in_flight=args.in_flight,
        queue=args.queue,
        max_body=args.max_body,
        allow_source=args.allow_source,
    )
    if args.queue < 0:
        raise UsageError(f"--queue must be at least 0, got {args.queue}")
    if not (args.timeout > 0 and args.drain_timeout >= 0):
        raise UsageError("--timeout must be above 0 and --drain-timeout at least 0 (seconds)")
    for path in args.files:
        if not Path(path).is_file():
            raise UserError(f"cannot read {path}: no such file")
    try:
        return serve(
            args.files,
            backend=args.backend,
            options=_backend_options(args),
            host=args.host,
            port=args.port,
            api_key=args.api_key or os.environ.get("TTS_API_KEY") or None,
            limits=limits,
            on_sigterm=args.on_sigterm,
            drain_timeout=args.drain_timeout,
        )
    except (OSError, ValueError, RuntimeError) as error:
        raise UserError(str(error)) from None


def cmd_models(args) -> int:
    if args.action == "prepare":
        try:
            path = prepare(args.name)
        except ModelNotAvailableError as error:
            raise UserError(str(error)) from None
        print(path)
        return 0
    for row in list_models():
        state = (
            "prepared"
            if row["prepared"]
            else ("not prepared" if row["package_installed"] else "not installed")
        )
        print(f"{row['name']:24} {state:13} {row['description']}")
        print(f"{'':24} {row['path'] if row['package_installed'] else 'install with: ' + row['install']}")
    return 0


# ---- the parser --------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tts",
        description="Check, run and render .tts programs (ppl's textual form).",
        epilog="Run `tts COMMAND --help` for the options of a command.",
    )
    parser.add_argument(
        "--version", action="version", version=f"tts {ppl.__version__} (.tts language {LANGUAGE_VERSION})"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    check = commands.add_parser(
        "check",
        help="parse and check files; exit 1 on errors",
        description="Parse and check .tts files; print every error found.",
    )
    check.add_argument("files", nargs="+", metavar="FILE", help="a .tts file")
    check.set_defaults(handler=cmd_check)

    def in_flight(sub):
        sub.add_argument(
            "--in-flight",
            type=_positive,
            default=DEFAULT_IN_FLIGHT,
            metavar="N",
            help="at most N particles in flight; the next problems start as earlier ones finish "
            f"(default {DEFAULT_IN_FLIGHT})",
        )

    def common(sub):
        sub.add_argument("file", metavar="FILE", help="a .tts file")
        sub.add_argument(
            "--backend",
            choices=sorted(backend_names()),
            default=None,
            help="the engine for every model of the file (default: each model's own, else tabular)",
        )
        sub.add_argument("--seed", type=int, default=0, help="the run's seed (default 0)")
        sub.add_argument(
            "--engine",
            action="append",
            metavar="KEY=VALUE",
            help="an engine setting for --backend vllm, repeatable "
            "(e.g. max_model_len=4096, gpu_memory_utilization=0.5, dtype=float32, enforce_eager=false)",
        )
        sub.add_argument(
            "--server",
            action="append",
            metavar="URL",
            help="an OpenAI-compatible server for --backend openai, repeatable (e.g. http://127.0.0.1:8000)",
        )
        sub.add_argument(
            "--verbose",
            action="store_true",
            help="show the engine's own output (vLLM's log and start-up messages) instead of filing it",
        )

    run = commands.add_parser(
        "run",
        help="run the file's infer clause; results as JSON lines",
        description="Run the infer clause of a .tts file on one input or a dataset. "
        "Writes one JSON line per problem as it finishes, then a summary table.",
    )
    common(run)
    inputs = run.add_mutually_exclusive_group()
    inputs.add_argument("--input", metavar="TEXT", help="the program's one input")
    inputs.add_argument(
        "--data",
        metavar="FILE.jsonl",
        help="one problem per line: an object of inputs, or the value of the one input",
    )
    run.add_argument("--out", metavar="FILE.jsonl", help="write the results here (default: standard output)")
    run.add_argument("--particles", type=_positive, metavar="N", help="override the infer clause's particles")
    run.add_argument("--no-progress", action="store_true", help="no progress display")
    run.add_argument(
        "--resume", action="store_true", help="keep the results already in --out and run only the rest"
    )
    run.add_argument(
        "--trace", action="store_true", help="keep every particle's sites and the genealogy in the results"
    )
    run.add_argument("--report", metavar="FILE.html", help="write the trace report (one HTML page)")
    run.add_argument(
        "--prices", metavar="PRICES.json", help="a price table: the run's cost (see ppl.app.costs)"
    )
    in_flight(run)
    run.set_defaults(handler=cmd_run)

    render = commands.add_parser(
        "render",
        help="print every request one particle sends",
        description="Run one particle (seeded, on the chosen backend) and print every request it "
        "sends: each prompt's exact text and token ids with its settings and what came back, "
        "select options, reward arguments (and a judge's prompt). --first prints only the first "
        "prompt, without calling any engine.",
    )
    common(render)
    render_inputs = render.add_mutually_exclusive_group()
    render_inputs.add_argument("--input", metavar="TEXT", help="the program's one input")
    render_inputs.add_argument(
        "--data", metavar="FILE.jsonl", help="one problem per line, as for run; each is rendered"
    )
    render.add_argument("--program", metavar="NAME", help="the program (default: the infer clause's)")
    render.add_argument("--first", action="store_true", help="only the first prompt, with no engine call")
    render.set_defaults(handler=cmd_render)

    evaluation = commands.add_parser(
        "eval",
        help="evaluate at several budgets over a task set; resumable",
        description="Run the file's infer clause (or --algorithm ...) at each budget over a JSONL task set "
        "(id, input, reference, checker per line). Each task's result is appended to --out as it "
        "finishes; run the same command again to resume after an interruption. Then writes a "
        "markdown summary and a PNG of accuracy against generated tokens.",
    )
    common(evaluation)
    evaluation.add_argument("--data", required=True, metavar="TASKS.jsonl", help="the task set")
    evaluation.add_argument("--out", required=True, metavar="FILE.jsonl", help="results, appended (resumes)")
    evaluation.add_argument(
        "--budgets", default="1,2,4,8", metavar="N,N,...", help="particles/beams/chains (default 1,2,4,8)"
    )
    evaluation.add_argument(
        "--algorithm",
        action="append",
        metavar="NAME",
        help="evaluate this algorithm instead of the infer clause's, repeatable",
    )
    evaluation.add_argument("--program", metavar="NAME", help="the program (default: the infer clause's)")
    evaluation.add_argument(
        "--summary", metavar="FILE.md", help="the markdown summary (default: --out with .md)"
    )
    evaluation.add_argument("--plot", metavar="FILE.png", help="the plot (default: --out with .png)")
    evaluation.add_argument("--no-plot", action="store_true", help="no plot")
    evaluation.add_argument("--report", metavar="FILE.html", help="also write an interactive HTML report")
    evaluation.add_argument("--no-progress", action="store_true", help="no progress bar")
    evaluation.add_argument(
        "--verifier-threshold",
        type=float,
        metavar="T",
        help="read a run's log weight >= T as the verifier accepting it: report its false-positive and "
        "false-negative rates, the resampling accuracy ceiling and the best number of samples",
    )
    evaluation.add_argument(
        "--prices", metavar="PRICES.json", help="a price table: cost per task in the summary"
    )
    evaluation.add_argument(
        "--policy", metavar="POLICY.json", help="apply a `tts plan` policy: probe each task, then run its arm"
    )
    in_flight(evaluation)
    evaluation.set_defaults(handler=cmd_eval)

    planning = commands.add_parser(
        "plan",
        help="fit a compute policy (difficulty → interpreter and budget) from tts eval results",
        description="Fit, from tts eval results on a development set, a policy that maps the agreement "
        "of a few best-of-N runs (a difficulty estimate) to the (interpreter, budget) that did best on "
        "tasks of that agreement. Apply it with `tts eval --policy`.",
    )
    planning.add_argument(
        "results", metavar="RESULTS.jsonl", help="tts eval results (with best_of_n at >= --probe)"
    )
    planning.add_argument("--out", required=True, metavar="POLICY.json", help="the policy file to write")
    planning.add_argument(
        "--probe", type=_positive, default=4, metavar="K", help="runs in the probe (default 4)"
    )
    planning.add_argument(
        "--edges", default="0.5,1", metavar="A,B,...", help="agreement bin edges in (0, 1] (default 0.5,1)"
    )
    planning.add_argument(
        "--metric",
        default="majority",
        choices=("majority", "best", "weighted_vote"),
        help="what counts as right",
    )
    planning.add_argument(
        "--cost",
        type=float,
        default=0.0,
        metavar="C",
        help="accuracy given up per generated token (default 0)",
    )
    planning.set_defaults(handler=cmd_plan)

    searching = commands.add_parser(
        "search",
        help="choose the file's param values on a development set (Optuna); resumable",
        description="Try values of the file's `param` declarations (Optuna's seeded multi-objective TPE: "
        "accuracy against generated tokens per task), running its infer clause over the tasks. "
        "Each trial is appended to --out; run the same command again to resume after a kill. Then "
        "plots the Pareto front (plotly HTML, and a PNG) and writes the best trial as a .tts file.",
    )
    common(searching)
    searching.add_argument("--data", required=True, metavar="DEV.jsonl", help="the development tasks")
    searching.add_argument("--out", required=True, metavar="FILE.jsonl", help="trials, appended (resumes)")
    searching.add_argument("--trials", required=True, type=_positive, metavar="K", help="how many trials")
    searching.add_argument(
        "--metric",
        default="majority",
        choices=("majority", "best", "weighted_vote"),
        help="which answer is checked: the vote (default), the highest weight, the weighted vote",
    )
    searching.add_argument(
        "--startup",
        type=_positive,
        default=4,
        metavar="N",
        help="random trials before TPE models (default 4)",
    )
    searching.add_argument("--plot", metavar="FILE.html", help="the Pareto plot (default: --out with .html)")
    searching.add_argument(
        "--best", metavar="FILE.tts", help="the best configuration (default: --out with .best.tts)"
    )
    in_flight(searching)
    searching.set_defaults(handler=cmd_search)

    served = commands.add_parser(
        "serve",
        help="serve the programs behind an OpenAI-compatible endpoint",
        description="Serve every program of the files over HTTP in the OpenAI format: "
        "/v1/chat/completions, /v1/completions, /v1/models, /health, /metrics. A request is a "
        "problem (model = the program, the last user message its text input; extra_body "
        '{"ppl": {"algorithm": ..., "particles": ..., "seed": ...}} chooses the interpreter); all '
        "requests share one scheduler, so their particles share engine calls.",
    )
    served.add_argument("files", nargs="+", metavar="FILE", help="a .tts file")
    served.add_argument(
        "--backend",
        choices=sorted(backend_names()),
        default=None,
        help="the engine for every model of the files (default: each model's own, else tabular)",
    )
    served.add_argument("--engine", action="append", metavar="KEY=VALUE", help="an engine setting (vllm)")
    served.add_argument(
        "--server", action="append", metavar="URL", help="an OpenAI-compatible server (openai), repeatable"
    )
    served.add_argument("--host", default="127.0.0.1", help="the address to bind (default 127.0.0.1)")
    served.add_argument("--port", type=int, default=8000, help="the port (default 8000)")
    served.add_argument(
        "--api-key", metavar="KEY", help="require Authorization: Bearer KEY on every call (or TTS_API_KEY)"
    )
    served.add_argument(
        "--max-particles",
        type=_positive,
        default=256,
        metavar="N",
        help="particles per request (default 256)",
    )
    served.add_argument(
        "--max-tokens",
        type=_positive,
        default=200_000,
        metavar="N",
        help="tokens a request may generate over all its particles (default 200000)",
    )
    served.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        metavar="S",
        help="seconds per request, queued or running (default 300)",
    )
    served.add_argument(
        "--in-flight",
        type=_positive,
        default=1024,
        metavar="N",
        help="particles of all requests in flight at once; more requests wait (default 1024)",
    )
    served.add_argument(
        "--queue",
        type=int,
        default=64,
        metavar="N",
        help="requests that may wait for room; beyond them 429 with Retry-After (default 64)",
    )
    served.add_argument(
        "--max-body",
        type=_positive,
        default=1_000_000,
        metavar="BYTES",
        help="request body limit (default 1 MB)",
    )
    served.add_argument(
        "--allow-source",
        action="store_true",
        help="let requests carry .tts source (ppl.source), checked and capped",
    )
    served.add_argument(
        "--on-sigterm",
        choices=("drain", "cancel"),
        default="drain",
        help="on SIGTERM finish the requests in flight (drain, default) or cancel them",
    )
    served.add_argument(
        "--drain-timeout",
        type=float,
        default=30.0,
        metavar="S",
        help="how long draining may take (default 30)",
    )
    served.set_defaults(handler=cmd_serve)
    view = commands.add_parser(
        "view",
        help="show a results file; --report writes its HTML page",
        description="Read the results of tts run (or tts eval) back: each problem's outcome and, "
        "when it was run with --trace, every particle's steps; --report writes the HTML trace report.",
    )
    view.add_argument("results", metavar="RESULTS.jsonl", help="a results file")
    view.add_argument("--report", metavar="FILE.html", help="write the trace report (one HTML page)")
    view.set_defaults(handler=cmd_view)

    models = commands.add_parser(
        "models",
        help="list the embedded models, or prepare one",
        description="List the embedded models (shipped in PyPI packages) and whether they are "
        "prepared, or prepare one: convert it once into the cache (~30 s) for the vllm backend.",
    )
    models.add_argument("action", nargs="?", choices=("list", "prepare"), default="list")
    models.add_argument("name", nargs="?", default="smollm2-135m-instruct", help="the model to prepare")
    models.set_defaults(handler=cmd_models)
    return parser


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def quiet_engines(verbose: bool) -> None:
    """vLLM's INFO and WARNING lines and its processes' start-up noise drown the output: keep
    them out of the way (the engine's output goes to a log file, named when it starts) unless
    ``--verbose``."""
    if verbose:
        os.environ["VLLM_LOGGING_LEVEL"] = "INFO"
        os.environ.pop(ENGINE_LOG, None)
        return
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
    os.environ.setdefault(ENGINE_LOG, str(cache_root() / "logs" / "engine.log"))


def main(argv: list[str] | None = None) -> int:
    """The ``tts`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    quiet_engines(getattr(args, "verbose", False))
    try:
        return args.handler(args)
    except TtsError as error:
        print(error, file=sys.stderr)
        return 1
    except (UserError, TtsRuntimeError) as error:
        print(f"tts {args.command}: {error}", file=sys.stderr)
        return 1
    except UsageError as error:
        print(f"tts {args.command}: {error}", file=sys.stderr)
        return 2
    except Interrupted as error:
        print(f"tts {args.command}: {error}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
