"""`tts run --trace`, `tts view`, `--report` and `tts render` as a user runs them."""

from __future__ import annotations

import json

from test_cli import ROOT, tts

import ppl
from ppl.app import load
from ppl.app.render import every_prompt

REASONING = ROOT / "examples/reasoning.tts"
PARTICLE_FILTER = ROOT / "examples/particle_filter.tts"


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def _untimed(record: dict) -> dict:
    return {k: v for k, v in record.items() if k not in ("wall_time", "barrier_wait", "trace")}


def test_run_trace_round_trips_into_view(tmp_path):
    traced, plain = tmp_path / "traced.jsonl", tmp_path / "plain.jsonl"
    first, again = tmp_path / "run.html", tmp_path / "view.html"
    args = [REASONING, "--input", "5", "--particles", "8", "--seed", "3"]
    done = tts("run", *args, "--trace", "--out", traced, "--report", first)
    assert done.returncode == 0, done.stderr
    assert tts("run", *args, "--out", plain).returncode == 0
    (record,) = _lines(traced)
    (untraced,) = _lines(plain)
    assert "trace" not in untraced and _untimed(record) == _untimed(untraced)  # tracing changes nothing else
    trace = record["trace"]
    assert len(trace["particles"]) == 8 and trace["generations"]
    assert all(any(s["kind"] == "gen" for s in p["sites"]) for p in trace["particles"])
    viewed = tts("view", traced, "--report", again)
    assert viewed.returncode == 0, viewed.stderr
    assert again.read_bytes() == first.read_bytes()  # the same page, from the file alone
    text = viewed.stdout
    for particle in trace["particles"]:
        name = "·".join(map(str, particle["key"][2:]))
        assert f"particle {name}  log w {particle['log_weight']}  {particle['status']}" in text
        for site in particle["sites"]:
            if site["kind"] == "gen" and site["text"]:
                assert json.dumps(site["text"]) in text
    resampled = [str(g["step"]) for g in trace["generations"] if g["notes"].get("resampled")]
    assert f"genealogy: {len(trace['generations'])} generations" in text
    assert not resampled or f"resampled at steps {', '.join(resampled)}" in text


def test_report_alone_keeps_the_results_file_lean(tmp_path):
    out, page = tmp_path / "r.jsonl", tmp_path / "r.html"
    done = tts("run", REASONING, "--input", "5", "--particles", "8", "--out", out, "--report", page)
    assert done.returncode == 0, done.stderr
    (record,) = _lines(out)
    assert "trace" not in record
    html = page.read_text()
    assert 'id="genealogy-0"' in html and 'id="weights-0"' in html and 'id="answers-0"' in html
    viewed = tts("view", out)
    assert "(no trace: run with --trace to keep every particle's sites)" in viewed.stdout


def test_view_refuses_what_is_not_a_results_file(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"kind": "problem"}\nnot json\n')
    done = tts("view", bad)
    assert done.returncode == 1
    assert done.stderr.strip() == f"tts view: {bad}:2: not a results line (Expecting value)"
    bad.write_text('{"answer": 1}\n')
    assert tts("view", bad).stderr.strip() == f"tts view: {bad}:1: not a line written by tts run or tts eval"
    assert tts("view", tmp_path / "none.jsonl").stderr.startswith(
        f"tts view: cannot read {tmp_path / 'none.jsonl'}"
    )


def test_render_shows_every_request_of_a_compound_program():
    done = tts("render", PARTICLE_FILTER, "--input", "What is 7 * 6?", "--seed", "2")
    assert done.returncode == 0, done.stderr
    module = load(PARTICLE_FILTER)
    with ppl.seed(rng_seed=2), ppl.trace() as trace:  # the same particle, run directly
        module.programs["solve"](problem="What is 7 * 6?")
    sent = [s for s in trace.sites if s.kind in ("gen", "reward")]
    assert len(sent) > 2 and {s.kind for s in sent} == {"gen", "reward"}
    text = done.stdout
    assert text.count("=== request ") == len(sent)
    lm = module.models["lm"]
    for number, site in enumerate(sent, 1):
        assert f"=== request {number} of {len(sent)}: {site.kind} at step " in text
        if site.kind == "gen":
            prompt = site.args["request"].prompt
            assert f"prompt text ({len(lm.decode(prompt))} characters)" in text
            assert json.dumps(list(prompt)) in text
            assert (
                f"generated ({len(site.value.token_ids)} tokens, finish {site.value.finish_reason}): " in text
            )
        else:
            assert f"value: {site.value}" in text
    # step t's prompt extends step t-1's prompt with what was generated there
    prompts = [s.args["request"].prompt for s in sent if s.kind == "gen"]
    assert all(later[: len(earlier)] == earlier for earlier, later in zip(prompts, prompts[1:]))
    # a judge that asks an LM shows that prompt; the tabular world's judge asks none
    asks_an_lm = callable(getattr(module.models["prm"], "prompt", None))
    assert ("judge prompt text" in text and "Yes or No?" in text) == asks_an_lm
    assert text.rstrip().endswith("the particle finished")


def test_render_data_renders_every_problem(tmp_path):
    data = tmp_path / "problems.jsonl"
    data.write_text('"What is 2 + 2?"\n{"problem": "What is 3 * 3?"}\n')
    done = tts("render", PARTICLE_FILTER, "--data", data)
    assert done.returncode == 0, done.stderr
    assert '##### problem 0: {"problem": "What is 2 + 2?"}' in done.stdout
    assert '##### problem 1: {"problem": "What is 3 * 3?"}' in done.stdout
    assert done.stdout.count("the particle finished") == 2
    first = tts("render", PARTICLE_FILTER, "--data", data, "--first")
    assert first.stdout.count("prompt text (") == 2 and "=== request" not in first.stdout


def test_render_stops_where_the_particle_dies():
    path = ROOT / "examples/constrained_generation.tts"
    program = load(path).programs["without_dog"]
    seed = next(s for s in range(50) if every_prompt(program, {}, rng_seed=s)[1] is not None)
    requests, reason = every_prompt(program, {}, rng_seed=seed)
    assert reason == "said dog" and requests[-1].answer.text == " dog"
    done = tts("render", path, "--seed", seed)
    assert done.stdout.rstrip().endswith("the particle died here: said dog")
    assert done.stdout.count("=== request ") == len(requests)


def test_an_enumerated_run_reports_its_paths_and_no_genealogy(tmp_path):
    from test_cli import ENUMERATED

    program, out, page = tmp_path / "exact.tts", tmp_path / "r.jsonl", tmp_path / "r.html"
    program.write_text(ENUMERATED)
    done = tts("run", program, "--input", " so", "--trace", "--out", out, "--report", page)
    assert done.returncode == 0, done.stderr
    (record,) = _lines(out)
    assert record["trace"]["generations"] == [] and len(record["trace"]["particles"]) == 3
    html = page.read_text()
    assert "No genealogy: enumeration moves no particles through barriers" in html
    assert 'id="answers-0"' in html and 'id="genealogy-0"' not in html and 'id="weights-0"' not in html
