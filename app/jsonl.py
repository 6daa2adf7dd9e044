"""Reading JSON-lines files — data, tasks and results — in one place.

``json_lines`` reads a file the user gives (``--data``, a tasks file, a results file to
view): every non-empty line must be a JSON value, and a line that is not is an error naming
it. ``complete_json_lines`` reads a results file that is being appended to (``--out`` with
``--resume``, ``tts eval``): it may be missing (no lines), and a last line cut short by a
crash is removed from the file so that appending starts on a fresh line.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


def json_lines(
    path: Path, error: type[Exception], problem: str, *, detail: bool = True
) -> list[tuple[int, object]]:
    """``(line number, value)`` of every non-empty line of ``path``. An unreadable file raises
    ``error("cannot read PATH: why")``; a line that is not JSON ``error("PATH:N: problem (why)")``
    (without the why when ``detail`` is false)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as failure:
        raise error(f"cannot read {path}: {getattr(failure, 'strerror', None) or failure}") from None
    return _parse(text, path, error, problem, detail)


def complete_json_lines(path: Path, error: type[Exception], problem: str) -> list[tuple[int, object]]:
    """The complete lines of a file being appended to: none if it does not exist; an unfinished
    last line (a crash mid-write) is cut off the file (and synced) first."""
    path = Path(path)
    if not path.exists():
        return []
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end < len(data):
        with open(path, "r+b") as f:
            f.truncate(end)
            f.flush()
            os.fsync(f.fileno())
    try:
        text = data[:end].decode("utf-8")
    except UnicodeDecodeError as failure:
        raise error(f"cannot read {path}: {failure}") from None
    return _parse(text, path, error, problem, detail=False)


def _parse(text: str, path, error: type[Exception], problem: str, detail: bool) -> list[tuple[int, object]]:
    out = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append((number, json.loads(line)))
        except json.JSONDecodeError as failure:
            why = f" ({failure.msg})" if detail else ""
            raise error(f"{path}:{number}: {problem}{why}") from None
    return out
