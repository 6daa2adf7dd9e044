"""The one JSON-lines reader of the application (``app/jsonl.py``): data, tasks and results."""

from __future__ import annotations

import pytest

from ppl.app.errors import UserError
from ppl.app.jsonl import complete_json_lines, json_lines


def test_json_lines_numbers_the_non_empty_lines_and_names_a_bad_one(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text('{"a": 1}\n\n  \n"x"\n', encoding="utf-8")
    assert json_lines(path, UserError, "not a JSON value") == [(1, {"a": 1}), (4, "x")]
    path.write_text('{"a": 1}\n{oops\n', encoding="utf-8")
    with pytest.raises(UserError, match=r"data.jsonl:2: not a JSON value \(Expecting property name"):
        json_lines(path, UserError, "not a JSON value")
    with pytest.raises(UserError, match=r"data.jsonl:2: not a results line$"):
        json_lines(path, UserError, "not a results line", detail=False)
    with pytest.raises(UserError, match=r"cannot read .*none.jsonl: No such file or directory"):
        json_lines(tmp_path / "none.jsonl", UserError, "x")
    (tmp_path / "latin.jsonl").write_bytes(b'"\xe9"\n')
    with pytest.raises(UserError, match=r"cannot read .*latin.jsonl: 'utf-8' codec"):
        json_lines(tmp_path / "latin.jsonl", UserError, "x")


def test_complete_json_lines_cuts_an_unfinished_last_line_off_the_file(tmp_path):
    path = tmp_path / "out.jsonl"
    assert complete_json_lines(path, UserError, "x") == []  # a missing file: nothing yet
    path.write_bytes(b'{"id": 0}\n{"id": 1}\n{"id": 2, "ans')
    assert complete_json_lines(path, UserError, "x") == [(1, {"id": 0}), (2, {"id": 1})]
    assert path.read_bytes() == b'{"id": 0}\n{"id": 1}\n'  # appending starts on a fresh line
    path.write_bytes(b'{"id": 0}\nnot json\n')
    with pytest.raises(UserError, match=r"out.jsonl:2: not a results line; use another --out$"):
        complete_json_lines(path, UserError, "not a results line; use another --out")
