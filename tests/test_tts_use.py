"""``use a, b from "file.tts"``: programs of another .tts file.

A used program runs in place like a program of the file (its sites are the caller's: the
traces equal those of the same program written inline); paths are relative to the using
file; the used file's ``use`` declarations come along, bound by name (a declaration of the
same name in the using file wins); a file used twice is checked and compiled once. Missing
files, missing programs, cycles, errors inside the used file and clashing declarations are
positioned ``TtsError``s, and ``tts check`` follows the files.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from test_tts_traces import assert_identical

from ppl.algorithms import SMC, ImportanceSampling
from ppl.app import check, load
from ppl.backends.tabular import TabularLM
from ppl.grammar import TtsError

ROOT = Path(__file__).resolve().parent.parent
LM = TabularLM.random([" a", " b", " c"], order=2, seed=3, name="words")

LAYERS = """version 0.1
use lm = model("words")

program draft(problem: text) -> text {
  xs ~ lm.gen(lm.encode(problem), max_tokens = 2, n = 2)
  return xs[0].text + xs[1].text
}

program polish(problem: text, answer: text) -> text {
  s ~ lm.gen(lm.encode(problem + answer), max_tokens = 2)
  score 0.3 * len(s.text)
  return answer + s.text
}
"""

CALLER = """version 0.1
{header}
program pipeline(problem: text) -> text {{
  let a = draft(problem)
  let pool = infer draft(a) with importance(particles = 2)
  return polish(problem, pool.best)
}}
infer pipeline with importance(particles = 3)
"""


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def errors(path: Path) -> TtsError:
    with pytest.raises(TtsError) as caught:
        check(path)
    return caught.value


@pytest.mark.parametrize("algorithm", [ImportanceSampling(3), SMC(2, ess_threshold=1.0)], ids=repr)
def test_a_used_program_gives_the_traces_of_the_same_program_inline(tmp_path, algorithm):
    write(tmp_path, "lib/layers.tts", LAYERS)
    used = load(write(tmp_path, "main.tts", CALLER.format(header='use draft, polish from "lib/layers.tts"')))
    inline_text = LAYERS + CALLER.format(header="").split("\n", 1)[1]
    inline = load(write(tmp_path, "inline.tts", inline_text))
    assert set(used.programs) == {"pipeline", "draft", "polish"}
    problems = [("one",), ("two three",)]
    a = algorithm.run(used.programs["pipeline"], problems, seed=4)
    b = algorithm.run(inline.programs["pipeline"], problems, seed=4)
    assert_identical(a, b)
    kinds = [s.kind for s in a[0].particles[0].trace]
    assert kinds == ["gen", "infer", "gen", "score"]  # the used programs' sites are the caller's


def test_paths_are_relative_to_the_using_file_and_used_files_may_use_others(tmp_path, monkeypatch):
    write(tmp_path, "shared/layers.tts", LAYERS)
    # lib/middle.tts uses ../shared/layers.tts and passes draft on; main uses middle.
    write(
        tmp_path,
        "lib/middle.tts",
        'version 0.1\nuse draft, polish from "../shared/layers.tts"\n'
        "program both(p: text) -> text { return polish(p, draft(p)) }\n",
    )
    main = write(
        tmp_path,
        "main.tts",
        'version 0.1\nuse both, draft from "lib/middle.tts"\nuse polish from "shared/layers.tts"\n'
        "program go(p: text) -> text { return both(p) + draft(p) + polish(p, p) }\n"
        "infer go with importance(particles = 2)\n",
    )
    monkeypatch.chdir(tmp_path / "lib")  # the working folder plays no part
    module = load(main)
    assert module.infer.program is module.programs["go"]
    # draft reached through middle.tts is the one program of layers.tts: compiled once
    checked = module.checked
    assert checked.imports["draft"][0] is checked.imports["polish"][0]
    assert checked.imports["draft"][0].filename.endswith("layers.tts")
    post = module.infer.run([("x",)], seed=0)[0]
    assert all(p.status == "finished" for p in post.particles)
    kinds = [s.kind for s in post.particles[0].trace]
    assert kinds == ["gen", "gen", "score", "gen", "gen", "score"]


def test_the_using_files_declaration_of_a_name_is_the_one_used_programs_run_on(tmp_path):
    write(tmp_path, "layers.tts", LAYERS)
    main = write(
        tmp_path,
        "main.tts",
        'version 0.1\nuse lm = model("mine")\nuse draft from "layers.tts"\n'
        "program go(p: text) -> text { return draft(p) }\n",
    )
    mine = TabularLM.random([" x", " y"], order=1, seed=1, name="mine")
    module = load(main, models={"lm": mine})
    assert list(module.checked.uses) == ["lm"] and module.checked.uses["lm"].settings["name"] == "mine"
    post = ImportanceSampling(2).run(module.programs["go"], [(" x",)], seed=0)[0]
    (site,) = post.particles[0].trace
    assert site.args["lm"] is mine
    # without a declaration here, the used file's own comes along
    bare = write(tmp_path, "bare.tts", 'version 0.1\nuse draft from "layers.tts"\n')
    assert load(bare, models={"lm": LM}).checked.uses["lm"].settings["name"] == "words"


def test_a_used_file_can_be_named_by_an_infer_clause_and_run_by_tts(tmp_path):
    write(tmp_path, "layers.tts", LAYERS)
    main = write(
        tmp_path,
        "main.tts",
        'version 0.1\nuse draft from "layers.tts"\ninfer draft with smc(particles = 2)\n',
    )
    out = _tts("check", main)
    assert out.returncode == 0, out.stderr
    assert "draft(problem: text) -> text from" in out.stdout and "layers.tts" in out.stdout
    out = _tts("run", main, "--input", "hello", "--seed", "1")
    assert out.returncode == 0, out.stderr


def _tts(*args) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "ppl.app.cli", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=ROOT)


# ---- errors ----------------------------------------------------------------------------------


def test_a_missing_file_and_a_missing_program_are_reported_where_they_are_named(tmp_path):
    write(tmp_path, "layers.tts", LAYERS)
    main = write(
        tmp_path,
        "main.tts",
        'version 0.1\nuse draft, drat from "layers.tts"\nuse x from "nowhere.tts"\n'
        "program go(p: text) -> text { return x(p) + drat(p) + draft(p) }\n",
    )
    error = errors(main)
    assert [(d.position.line, d.position.column) for d in error.diagnostics] == [(2, 12), (3, 12)]
    assert error.messages == [
        "\"layers.tts\" has no program 'drat'; the programs are draft, polish",
        f'cannot use "nowhere.tts": there is no file {tmp_path / "nowhere.tts"}',
    ]  # and no cascade of errors at the calls of x and drat
    assert '    use x from "nowhere.tts"\n               ^' in str(error)


@pytest.mark.parametrize("length", [1, 2, 3])
def test_a_cycle_of_files_is_refused_at_the_use_that_closes_it(tmp_path, length):
    names = [f"f{i}.tts" for i in range(length)]
    for i, name in enumerate(names):
        after = names[(i + 1) % length]
        write(
            tmp_path,
            name,
            f'version 0.1\nuse p{(i + 1) % length} from "{after}"\n'
            f"program p{i}(x: text) -> text {{ return x }}\n",
        )
    error = errors(tmp_path / names[0])
    cycle = " → ".join([*names, names[0]])
    closing = [d for d in error.diagnostics if "cycle" in d.message]
    assert len(closing) == 1
    assert (
        closing[0].message
        == f'"{names[0]}" is already being read ({cycle}): files cannot use each other in a cycle'
    )
    assert closing[0].position.file.endswith(names[-1]) and closing[0].position.line == 2


def test_errors_inside_a_used_file_are_shown_at_their_place_in_that_file(tmp_path):
    write(tmp_path, "bad.tts", "version 0.1\nprogram broken(p: text) -> text {\n  return q\n}\n")
    write(tmp_path, "unparsable.tts", "version 0.1\nprogram (\n")
    main = write(
        tmp_path,
        "main.tts",
        'version 0.1\nuse broken from "bad.tts"\nuse y from "unparsable.tts"\n'
        "program go(p: text) -> text { return broken(p) + y(p) }\n",
    )
    error = errors(main)
    assert error.messages[:2] == [
        'cannot use "bad.tts": it has 1 error',
        'cannot use "unparsable.tts": it has 1 error',
    ]
    inner = error.diagnostics[2]
    assert inner.position.file.endswith("bad.tts") and (inner.position.line, inner.position.column) == (3, 10)
    assert inner.message == "unknown name 'q'"
    text = str(error)
    assert "bad.tts:3:10: unknown name 'q'\n      return q\n             ^" in text  # that file's line
    assert "unparsable.tts:2:9: expected a name, found '('" in text


def test_clashing_declarations_and_names(tmp_path):
    write(tmp_path, "layers.tts", LAYERS)
    write(
        tmp_path,
        "other.tts",
        'version 0.1\nuse lm = model("other")\nprogram solo(p: text) -> text { return p }\n',
    )
    main = write(
        tmp_path,
        "main.tts",
        'version 0.1\nuse draft from "layers.tts"\nuse solo from "other.tts"\n'
        'use polish, draft from "layers.tts"\nprogram solo(p: text) -> text { return p }\n',
    )
    assert errors(main).messages == [
        "'solo' is already defined at line 5",  # line 3: the local program comes first
        '\'lm\' is declared differently in "layers.tts" (line 2) and in "other.tts" (line 2): '
        "declare 'lm' in this file to choose one",
        "'draft' is already defined at line 2",
    ]
    # declaring lm here settles it
    settled = main.read_text().replace("version 0.1\n", 'version 0.1\nuse lm = model("words")\n')
    settled = settled.replace("use polish, draft", "use polish").replace("program solo", "program solo2")
    assert set(check(write(tmp_path, "settled.tts", settled)).imports) == {"draft", "polish", "solo"}
    kinds = write(
        tmp_path,
        "kinds.tts",
        'version 0.1\nuse m = model("m")\nuse lm = judge(m, question = "q")\nuse draft from "layers.tts"\n',
    )
    assert errors(kinds).messages == [
        "'lm' is a judge here (line 3) but a model in \"layers.tts\", whose programs use it by that name"
    ]


def test_a_used_program_is_checked_with_its_signature(tmp_path):
    write(tmp_path, "layers.tts", LAYERS)
    main = write(
        tmp_path,
        "main.tts",
        'version 0.1\nuse polish from "layers.tts"\nprogram go(p: text) -> number { return polish(p) }\n'
        "program to(p: text) -> number { return polish(p, p) }\n",
    )
    messages = errors(main).messages
    assert messages[0] == "polish is missing the argument 'answer'"
    assert "number" in messages[1] and "text" in messages[1], messages  # polish returns a text


def test_a_use_reads_only_files(tmp_path):
    (tmp_path / "folder.tts").mkdir()
    main = write(tmp_path, "main.tts", 'version 0.1\nuse a from "folder.tts"\nuse b from "/dev/zero"\n')
    assert errors(main).messages == [
        f'cannot use "folder.tts": {tmp_path / "folder.tts"} is not a file',
        'cannot use "/dev/zero": /dev/zero is not a file',
    ]


def test_the_file_of_a_use_is_written_out(tmp_path):
    main = write(tmp_path, "main.tts", 'version 0.1\nuse draft from "${where}.tts"\n')
    assert errors(main).messages == ["the file of a `use ... from` is written out, without ${...}"]


def test_tts_check_follows_the_used_files(tmp_path):
    write(tmp_path, "bad.tts", "version 0.1\nprogram broken(p: text) -> text {\n  return q\n}\n")
    main = write(tmp_path, "main.tts", 'version 0.1\nuse broken from "bad.tts"\n')
    out = _tts("check", main)
    assert out.returncode == 1
    assert 'main.tts:2:17: cannot use "bad.tts": it has 1 error' in out.stderr
    assert "bad.tts:3:10: unknown name 'q'" in out.stderr
