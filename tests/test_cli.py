"""The `tts` command, run as a user runs it: a subprocess per command."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

import ppl
from ppl.app import load
from ppl.app.render import first_prompt

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.tts"))
INPUTS = {
    "constrained_generation": None,
    "constrained_regex": None,
    "reward_tilted": "1.5",
    "particle_filter": "What is 7 * 6?",
    "prm_particle_filter": "What is 3 + 4?",
    "choices": "Say hello.",
    "reasoning": "5",
    "scaling_demo": "Zoe has 8 shells and gives away 2. How many shells are left?",
    "mixture_of_agents": "What is 3 + 4?",
    "universal_self_consistency": "What is 3 + 4?",
    "self_refine": "What is 3 + 4?",
    "archon": "What is 3 + 4?",
    "program_of_thought": "What is 3 + 4?",
    "plan_verify_select": "What is 3 + 4?",
    "start_tool_hints": "What is 3 + 4?",
    "decompose_solve": "What is 3 + 4?",
    "retrieval_rerank": "How many days are in 2 weeks?",
    "self_eval_restarts": "What is 3 + 4?",
}


def tts(*args, cwd=ROOT, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ppl.app.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
    )


def input_args(path: Path) -> list[str]:
    value = INPUTS[path.stem]
    return [] if value is None else ["--input", value]


def test_check_every_example():
    done = tts("check", *EXAMPLES)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count(": ok — ") == len(EXAMPLES)
    assert "infer solve with smc(particles = 16" in done.stdout


def test_check_reports_every_error_and_exits_1(tmp_path):
    bad = tmp_path / "bad.tts"
    bad.write_text('version 0.1\nprogram f() -> text {\n  score "a"\n  finish\n  return 1\n}\n')
    done = tts("check", bad, EXAMPLES[0])
    assert done.returncode == 1
    assert done.stderr.count(f"{bad}:") == 3
    assert (
        f'{bad}:3:9: score needs a number (a log weight), got a text\n      score "a"\n            ^'
        in done.stderr
    )
    assert "Traceback" not in done.stderr
    assert ": ok — " in done.stdout  # the good file is still checked


def test_check_a_missing_file():
    done = tts("check", "nowhere.tts")
    assert done.returncode == 1
    assert done.stderr.strip() == "tts: cannot read nowhere.tts: No such file or directory"


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_run_every_example(path, tmp_path):
    out = tmp_path / "results.jsonl"
    done = tts("run", path, *input_args(path), "--particles", "8", "--seed", "1", "--out", out)
    assert done.returncode == 0, done.stderr
    (line,) = out.read_text().splitlines()
    result = json.loads(line)
    assert result["id"] == 0 and "diagnostics" in result and "log_evidence" in result
    drawn, extra = result["diagnostics"]["particles"], result["diagnostics"]["extra"] or {}
    if "budget" in extra:  # an adaptive interpreter: the runs it drew, within the maximum --particles set
        assert drawn == extra["budget"] <= extra["max"] and extra["max"] % 8 == 0
    else:
        assert drawn == 8
    assert done.stdout.splitlines()[0].split() == [
        "id",
        "answer",
        "log",
        "Z",
        "ESS",
        "runs",
        "tokens",
        "out",
        "dead",
    ]
    assert "1 problem in" in done.stdout


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_render_every_example(path):
    done = tts("render", path, *input_args(path))
    assert done.returncode == 0, done.stderr
    assert "prompt text" in done.stdout and "token ids" in done.stdout


def test_render_first_prints_the_exact_first_prompt():
    done = tts("render", ROOT / "examples/particle_filter.tts", "--input", "What is 7 * 6?", "--first")
    module = load(ROOT / "examples/particle_filter.tts")
    lm = module.models["lm"]
    expected = lm.chat(system="Solve step by step. Separate steps by a blank line.", user="What is 7 * 6?")
    lines = done.stdout.splitlines()
    assert json.loads(lines[-1]) == list(expected)
    assert lm.decode(expected) in done.stdout
    assert 'settings: max_tokens = 128, stop = ["\\n\\n"], temperature = 1.0' in done.stdout


def test_render_makes_no_engine_call():
    module = load(ROOT / "examples/particle_filter.tts")
    rendered = first_prompt(module.programs["solve"], {"problem": "2 + 2?"})
    assert rendered.max_tokens == 128 and rendered.prompt_ids
    for model in module.models.values():
        assert model.usage.calls == 0 and model.usage.requests == 0


def test_run_a_dataset_writes_one_line_per_problem(tmp_path):
    data = tmp_path / "data.jsonl"
    data.write_text('{"question": "Hi."}\n\n"Bye."\n{"question": "Why?"}\n')
    out = tmp_path / "out.jsonl"
    done = tts("run", ROOT / "examples/choices.tts", "--data", data, "--out", out, "--particles", "3")
    assert done.returncode == 0, done.stderr
    results = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["id"] for r in results) == [0, 1, 2]
    assert {r["input"]["question"] for r in results} == {"Hi.", "Bye.", "Why?"}
    assert "3 problems in" in done.stdout
    assert "problem" in done.stderr  # the progress bar


def test_run_writes_json_lines_to_stdout_and_the_table_to_stderr():
    done = tts("run", ROOT / "examples/constrained_generation.tts", "--particles", "4")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert isinstance(result["answer"], str) and result["answers"]
    assert "1 problem in" in done.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["--data", "missing.jsonl"], "tts run: cannot read missing.jsonl:"),
        ([], "tts run: 'reply' needs its inputs (question): use --input TEXT or --data FILE.jsonl"),
    ],
)
def test_run_input_errors_exit_1(args, message):
    done = tts("run", ROOT / "examples/choices.tts", *args)
    assert done.returncode == 1
    assert done.stderr.startswith(message)
    assert "Traceback" not in done.stderr


def test_bad_data_line_names_its_line(tmp_path):
    data = tmp_path / "data.jsonl"
    data.write_text('{"question": "ok"}\n{"question": 3}\n')
    done = tts("run", ROOT / "examples/choices.tts", "--data", data)
    assert done.returncode == 1
    assert done.stderr.strip() == f"tts run: {data}:2: the input 'question' must be a text, got 3"


def test_usage_errors_exit_2():
    assert tts("run").returncode == 2
    assert tts("run", EXAMPLES[0], "--input", "a", "--data", "b").returncode == 2
    assert tts("run", EXAMPLES[0], "--backend", "tpu").returncode == 2
    assert tts().returncode == 2


def test_a_model_the_backend_lacks_exits_1_before_running():
    done = tts("run", ROOT / "examples/constrained_generation.tts", "--backend", "vllm")
    assert done.returncode == 1
    assert "the vllm backend has no model 'constrained-generation-demo'" in done.stderr


def test_help_and_version():
    for command in ([], ["check"], ["run"], ["render"], ["view"]):
        done = tts(*command, "--help")
        assert done.returncode == 0 and "usage: tts" in done.stdout
    done = tts("--version")
    assert done.stdout.strip() == f"tts {ppl.__version__} (.tts language 0.1)"


def test_the_installed_console_script():
    import shutil

    script = shutil.which("tts", path=str(Path(sys.executable).parent))
    if script is None:
        pytest.skip("the tts console script is not installed (pip install -e .)")
    done = subprocess.run([script, "--version"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.startswith("tts ")


def test_run_reports_no_evidence_for_mode_seeking_algorithms(tmp_path):
    source = tmp_path / "beam.tts"
    source.write_text(
        "version 0.1\n"
        'use lm = model("reward-tilted-demo")\n'
        "program words() -> text {\n"
        '  let ctx = lm.encode("")\n'
        "  step (max 3) {\n"
        "    w ~ lm.gen(ctx, max_tokens = 1)\n"
        "    ctx += w\n"
        "    if w.eos { finish }\n"
        "  }\n"
        "  return lm.decode(ctx)\n"
        "}\n"
        "infer words with beam(beams = 2, expand = 2)\n"
    )
    out = tmp_path / "results.jsonl"
    done = tts("run", source, "--out", out)
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    assert result["evidence"] == "none" and result["log_evidence"] is None
    assert " n/a " in done.stdout.splitlines()[1]


ENUMERATED = """version 0.1
use lm = model("reasoning-demo")
program solve(start: text) -> text {
  let ctx = lm.encode(start)
  step (max 3) {
    w ~ lm.gen(ctx, max_tokens = 1)
    ctx += w
    if w.eos { finish }
  }
  return lm.decode(ctx)
}
infer solve with enumerate()
"""


def test_run_with_enumerate_prints_one_line_per_problem(tmp_path):
    program, data = tmp_path / "exact.tts", tmp_path / "starts.jsonl"
    program.write_text(ENUMERATED)
    data.write_text('" so"\n" 2+3"\n')
    done = tts("run", program, "--data", data, "--no-progress")
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert sorted(r["id"] for r in lines) == [0, 1]
    so = next(r for r in lines if r["id"] == 0)
    assert so["schema"] == 1 and so["diagnostics"]["algorithm"] == "enumeration"
    # " so" is followed by " 5", " 6" or " 23", each with probability 1/3, then the end: exactly
    assert sorted(so["answers"]) == [[" so 23", 0.333333], [" so 5", 0.333333], [" so 6", 0.333333]]
    assert so["log_evidence"] == 0.0 and so["evidence"] == "estimated"
    assert "2 problems in" in done.stderr


# ---- the errors a new user hit (issue 12, list 5), each with its exact message -------------------------


def test_eval_refuses_inputs_that_do_not_fit_the_parameters_up_front(tmp_path):
    tasks, out = tmp_path / "tasks.jsonl", tmp_path / "r.jsonl"
    tasks.write_text(
        '{"id": "ok", "input": 1.5, "reference": "x", "checker": "exact"}\n'
        '{"id": "t2", "input": "high", "reference": "x", "checker": "exact"}\n'
    )
    done = tts("eval", ROOT / "examples/reward_tilted.tts", "--data", tasks, "--out", out, "--no-plot")
    assert done.returncode == 1
    assert done.stderr.strip() == "tts eval: task t2: the input 'beta' must be a number, got \"high\""
    assert not out.exists()  # nothing ran


def test_eval_refuses_a_budget_the_interpreter_cannot_take_before_anything_runs(tmp_path):
    tasks, out = tmp_path / "tasks.jsonl", tmp_path / "r.jsonl"
    tasks.write_text('{"id": "a", "input": "5", "reference": " 5", "checker": "exact"}\n')
    done = tts(
        "eval", ROOT / "examples/reasoning.tts", "--data", tasks, "--out", out,
        "--algorithm", "particle_gibbs", "--budgets", "4,1", "--no-plot",
    )  # fmt: skip
    assert done.returncode == 1
    assert (
        done.stderr.strip()
        == "tts eval: particle_gibbs() at budget 1: particles must be an integer >= 2, got 1"
    )
    assert not out.exists()  # budget 4 did not run first


@pytest.mark.skipif(
    importlib.util.find_spec("vllm") is None, reason="needs vLLM installed (no engine starts)"
)
def test_engine_keys_are_checked_against_vllm_before_any_engine_starts():
    done = tts(
        "run", ROOT / "examples/particle_filter.tts", "--backend", "vllm", "--input", "2+2",
        "--engine", "gpu_memory_utilisation=0.3", timeout=600,  # importing vLLM takes a while
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-3:] == [
        f"{ROOT / 'examples/particle_filter.tts'}:12:1: vLLM has no engine setting "
        "'gpu_memory_utilisation'; did you mean 'gpu_memory_utilization'?",
        '    use lm  = model("smollm2-135m-instruct")',
        "    ^",
    ]
    assert "starting the vLLM engine" not in done.stderr
    assert "Triton" not in done.stderr  # vLLM's import-time warnings are below VLLM_LOGGING_LEVEL


NAMES = """version 0.1
use lm = model()
use x = model("no-such-model")
use d = model("reasoning-demo")
program f() -> text {
  s ~ x.gen(x.encode("a"), max_tokens = 2)
  return s.text
}
infer f with smc(particles = 2)
"""


def test_every_model_name_says_what_it_resolves_to(tmp_path):
    source = tmp_path / "names.tts"
    source.write_text(NAMES)
    done = tts("check", source)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[1:] == [
        "  lm = model() is the default model 'smollm2-135m-instruct' (no name given): a character-level "
        "tabular LM standing in for 'smollm2-135m-instruct' (--backend vllm runs it)",
        "  x = model(\"no-such-model\") is a character-level tabular LM seeded by the name 'no-such-model'; "
        "no model has this name (the vllm and openai backends refuse it)",
        "  d = model(\"reasoning-demo\") is the demo LM 'reasoning-demo' (a word-level bigram table)",
    ]
    done = tts("run", source, "--no-progress")
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines()[:2] == [
        "tts run: note: lm = model() is the default model 'smollm2-135m-instruct' (no name given): a "
        "character-level tabular LM standing in for 'smollm2-135m-instruct' (--backend vllm runs it)",
        'tts run: note: x = model("no-such-model") is a character-level tabular LM seeded by the name '
        "'no-such-model'; no model has this name (the vllm and openai backends refuse it)",
    ]


def test_unknown_model_names_are_refused_on_openai_before_any_request(tmp_path):
    source = tmp_path / "names.tts"
    source.write_text(NAMES)
    done = tts("run", source, "--backend", "openai", "--server", "http://127.0.0.1:9")
    assert done.returncode == 1
    assert done.stderr.splitlines()[0] == (
        f"{source}:3:1: the openai backend has no model 'no-such-model': name an embedded model "
        "(smollm2-135m-instruct) or a Hugging Face model folder"
    )


def test_fields_that_mean_nothing_for_an_interpreter_are_absent(tmp_path):
    beam = tmp_path / "beam.tts"
    beam.write_text((ROOT / "examples/reasoning.tts").read_text().replace(
        'infer solve with smc(particles = 64, resample = "systematic")', "infer solve with beam(beams = 4, expand = 4)"
    ))  # fmt: skip
    out = tmp_path / "beam.jsonl"
    done = tts("run", beam, "--input", "5", "--out", out)
    assert done.returncode == 0, done.stderr
    line = json.loads(out.read_text())
    assert not {"final_ess", "ess", "resampled"} & set(line)  # scores, not importance weights
    assert done.stdout.splitlines()[1].split()[3] == "n/a"  # the table's ESS column
    smc = json.loads(tts("run", ROOT / "examples/reasoning.tts", "--input", "5", "--no-progress").stdout)
    assert {"final_ess", "ess", "resampled"} <= set(smc)


# ---- progress, Ctrl-C and resuming ---------------------------------------------------------------------


def test_a_one_problem_run_shows_live_progress_on_stderr_unless_told_not_to():
    done = tts("run", ROOT / "examples/reward_tilted.tts", "--input", "1.5")
    assert done.returncode == 0, done.stderr
    shown = [line for line in done.stderr.splitlines() if line.startswith("smc")]
    assert shown and "1/1 problems" in shown[-1]
    assert all(word in shown[-1] for word in ("step 5", "512/512 live", "ESS", "tok/s", "waiting"))
    quiet = tts("run", ROOT / "examples/reward_tilted.tts", "--input", "1.5", "--no-progress")
    assert not [line for line in quiet.stderr.splitlines() if line.startswith("smc")]


def ctrl_c_heard() -> None:
    """In the child before exec: SIGINT at its default, so Python turns it into
    KeyboardInterrupt even when the suite itself was started as a background job of a
    non-interactive shell, which starts with SIGINT ignored (and Python keeps it ignored)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_says_what_was_saved_and_resume_finishes_the_run(tmp_path):
    import signal
    import time

    data, out, reference = tmp_path / "betas.jsonl", tmp_path / "out.jsonl", tmp_path / "reference.jsonl"
    data.write_text("".join(f"{0.25 * (i % 8)}\n" for i in range(24)))
    command = [sys.executable, "-m", "ppl.app.cli", "run", str(ROOT / "examples/reward_tilted.tts")]
    command += ["--data", str(data), "--particles", "128", "--in-flight", "128", "--no-progress"]
    child = subprocess.Popen(
        [*command, "--out", str(out)], stderr=subprocess.PIPE, text=True, cwd=ROOT, preexec_fn=ctrl_c_heard
    )
    deadline = time.monotonic() + 120
    while not (out.exists() and out.read_text().count("\n") >= 1):
        assert child.poll() is None and time.monotonic() < deadline, "the run ended before a result"
        time.sleep(0.005)
    child.send_signal(signal.SIGINT)
    _, stderr = child.communicate(timeout=120)
    saved = len(out.read_text().splitlines())
    assert child.returncode == 130 and 1 <= saved < 24, stderr
    assert stderr.strip().splitlines()[-1] == (
        f"tts run: interrupted: {saved} of 24 results are in {out}; run the same command with --resume "
        "to run the rest"
    )
    resumed = subprocess.run(
        [*command, "--out", str(out), "--resume"], capture_output=True, text=True, cwd=ROOT
    )
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stderr.splitlines()[0] == f"tts run: resuming {out}: {saved} of 24 problems already done"
    assert "24 problems in" in resumed.stdout
    whole = subprocess.run([*command, "--out", str(reference)], capture_output=True, text=True, cwd=ROOT)
    assert whole.returncode == 0, whole.stderr

    def by_id(path):
        return {
            r["id"]: (r["answer"], r["log_evidence"]) for r in map(json.loads, path.read_text().splitlines())
        }

    assert by_id(out) == by_id(reference)  # nothing lost, nothing twice, the seeds of one run


def test_resume_refuses_a_results_file_of_other_inputs(tmp_path):
    data, out = tmp_path / "betas.jsonl", tmp_path / "out.jsonl"
    data.write_text("1.5\n")
    assert tts("run", ROOT / "examples/reward_tilted.tts", "--data", data, "--out", out).returncode == 0
    data.write_text("2.5\n")
    done = tts("run", ROOT / "examples/reward_tilted.tts", "--data", data, "--out", out, "--resume")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        f"tts run: {out}:1: problem 0 was run with other inputs; use another --out"
    )


def test_ctrl_c_in_eval_says_what_was_saved_and_the_resumed_run_how_much_was_done(tmp_path):
    import signal
    import time

    tasks, out = tmp_path / "tasks.jsonl", tmp_path / "results.jsonl"
    tasks.write_text(
        "".join(
            f'{{"id": "t{i}", "input": {0.25 * i}, "reference": "x", "checker": "exact"}}\n' for i in range(8)
        )
    )
    command = [sys.executable, "-m", "ppl.app.cli", "eval", str(ROOT / "examples/reward_tilted.tts")]
    command += ["--data", str(tasks), "--out", str(out), "--budgets", "64,128", "--in-flight", "128"]
    command += ["--no-progress", "--no-plot"]
    child = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        preexec_fn=ctrl_c_heard,
    )
    deadline = time.monotonic() + 120
    while not (out.exists() and out.read_text().count("\n") >= 1):
        assert child.poll() is None and time.monotonic() < deadline, "tts eval ended before a result"
        time.sleep(0.005)
    child.send_signal(signal.SIGINT)
    _, stderr = child.communicate(timeout=120)
    saved = sum(json.loads(line)["kind"] == "task" for line in out.read_text().splitlines())
    assert child.returncode == 130 and 1 <= saved < 16, stderr
    assert stderr.strip().splitlines()[-1] == (
        f"tts eval: interrupted: {saved} task results are saved in {out}; run the same command to resume"
    )
    resumed = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stderr.splitlines()[0] == f"tts eval: resuming {out}: {saved} of 16 task runs already done"
