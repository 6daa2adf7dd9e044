"""The trace report in a real headless Chromium: it loads with no script error, draws the
genealogy (one marker per particle per generation) and every plot, and screenshots as a picture."""

from __future__ import annotations

import json

import pytest
from browser import chromium, console_errors
from PIL import Image
from test_cli import ROOT, tts


@pytest.fixture(scope="module")
def browser():
    driver = chromium(1280, 1600)
    yield driver
    driver.quit()


def _open(browser, page):
    browser.get(page.resolve().as_uri())
    browser.get_log("browser")  # nothing before this load counts
    browser.refresh()
    return console_errors(browser)


def _count(browser, selector: str) -> int:
    return browser.execute_script(f"return document.querySelectorAll({json.dumps(selector)}).length")


def _drawn(browser, div_id: str) -> bool:
    """The plotly figure in ``div_id`` has been drawn (its SVG exists and has a size)."""
    return browser.execute_script(
        "const svg = document.querySelector(arguments[0]);"
        "return svg !== null && svg.getBoundingClientRect().height > 100;",
        f"#{div_id} svg.main-svg",
    )


def test_the_trace_report_shows_the_genealogy_and_the_plots(browser, tmp_path):
    data, out, page = tmp_path / "answers.jsonl", tmp_path / "r.jsonl", tmp_path / "report.html"
    data.write_text('"5"\n"6"\n')
    done = tts(
        "run",
        ROOT / "examples/reasoning.tts",
        "--data",
        data,
        "--particles",
        "16",
        "--out",
        out,
        "--report",
        page,
        "--trace",
    )
    assert done.returncode == 0, done.stderr
    records = sorted((json.loads(line) for line in out.read_text().splitlines()), key=lambda r: r["id"])
    assert _open(browser, page) == []
    assert _count(browser, "section.problem") == 2
    for n, record in enumerate(records):
        for figure in ("genealogy", "weights", "answers"):
            assert _drawn(browser, f"{figure}-{n}"), f"{figure}-{n} was not drawn"
        nodes = sum(len(g["nodes"]) for g in record["trace"]["generations"])
        assert _count(browser, f"#genealogy-{n} .scatterlayer .point") == nodes
        assert _count(browser, f"#genealogy-{n} .scatterlayer .js-line") >= 1  # the links
        answers = {json.dumps(p["value"]) for p in record["trace"]["particles"]}
        assert _count(browser, f"#answers-{n} .bars .point") == len(answers)
        browser.execute_script(
            "Plotly.Fx.hover(arguments[0], [{curveNumber: 0, pointNumber: 0}])", f"answers-{n}"
        )
        hover = browser.execute_script(
            f"return document.querySelector('#answers-{n} .hoverlayer').textContent"
        )
        assert hover.startswith(json.dumps(record["answers"][0][0]))  # the most probable answer, quoted
    legend = browser.execute_script("return document.querySelector('#genealogy-0 .legend').textContent")
    assert "copied" in legend and "finished" in legend
    shot = tmp_path / "report.png"
    browser.save_screenshot(str(shot))
    with Image.open(shot) as image:
        assert image.size[0] >= 1000
        assert len(image.convert("RGB").getcolors(1 << 20)) > 50  # a picture, not a blank page


DEADLY_MH = """version 0.1
use lm = model("constrained-generation-demo")
program without_dog() -> text {
  let ctx = lm.encode("")
  step (max 6) {
    word ~ lm.gen(ctx, max_tokens = 1)
    ctx += word
    condition word.text != " dog", "said dog"
    if word.eos { finish }
  }
  return lm.decode(ctx)
}
infer without_dog with mh(chains = 4, steps = 6)
"""


def test_deaths_and_mcmc_decisions_show_in_the_report(browser, tmp_path):
    source, out, page = tmp_path / "mh.tts", tmp_path / "r.jsonl", tmp_path / "mh.html"
    source.write_text(DEADLY_MH)
    done = tts("run", source, "--out", out, "--report", page, "--trace")
    assert done.returncode == 0, done.stderr
    (record,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert _open(browser, page) == []
    assert _drawn(browser, "genealogy-0") and _drawn(browser, "deaths-0")
    legend = browser.execute_script("return document.querySelector('#genealogy-0 .legend').textContent")
    assert "MCMC: accepted" in legend and "MCMC: rejected" in legend and "died" in legend
    decisions = sum(len(g["notes"].get("accepted", ())) for g in record["trace"]["generations"])
    nodes = sum(len(g["nodes"]) for g in record["trace"]["generations"])
    assert decisions == 4 * 6
    assert _count(browser, "#genealogy-0 .scatterlayer .point") == nodes + decisions
    bars = browser.execute_script(
        "return Array.from(document.querySelectorAll('#deaths-0 .ytick text')).map(t => t.textContent)"
    )
    assert bars == ["said dog"]
    # hovering over a dead particle in the genealogy says why it died and what it said
    curve = browser.execute_script(
        "return document.getElementById('genealogy-0').data.findIndex(t => t.name === 'died')"
    )
    assert curve >= 0
    browser.execute_script(
        "Plotly.Fx.hover('genealogy-0', [{curveNumber: arguments[0], pointNumber: 0}])", curve
    )
    hover = browser.execute_script(
        "const h = document.querySelector('#genealogy-0 .hoverlayer'); return h ? h.textContent : ''"
    )
    assert "died: said dog" in hover and 'this step: " dog"' in hover


def test_the_eval_report_plots_accuracy_majority_and_coverage(browser, tmp_path):
    from test_eval import DEMO

    program, tasks = tmp_path / "demo.tts", tmp_path / "tasks.jsonl"
    program.write_text(DEMO)
    lines = [
        {"id": f"t{i}", "input": "2+3?", "reference": "(?s).*so 5", "checker": "regex"} for i in range(6)
    ]
    tasks.write_text("".join(json.dumps(line) + "\n" for line in lines))
    out, page = tmp_path / "e.jsonl", tmp_path / "eval.html"
    common = ["--data", tasks, "--out", out, "--budgets", "1,2,4", "--no-progress", "--no-plot"]
    done = tts("eval", program, *common, "--algorithm", "smc", "--algorithm", "best_of_n", "--report", page)
    assert done.returncode == 0, done.stderr
    assert _open(browser, page) == []
    assert _drawn(browser, "eval-metrics")
    assert _count(browser, "#eval-metrics .scatterlayer .trace") == 2 * 3  # two interpreters, three panels
    assert _count(browser, "#eval-metrics .scatterlayer .point") == 2 * 3 * 3  # three budgets each
    titles = browser.execute_script(
        "return Array.from(document.querySelectorAll('#eval-metrics .annotation-text')).map(t => t.textContent)"
    )
    assert titles == ["accuracy", "majority@N", "coverage"]
    viewed = tmp_path / "viewed.html"
    assert tts("view", out, "--report", viewed).returncode == 0
    assert _open(browser, viewed) == [] and _drawn(browser, "eval-metrics")
