"""What a ``tts run --out`` file already holds, so ``--resume`` runs only the rest.

A run's results are written one line per problem as each finishes; after Ctrl-C or a crash
the file holds the problems finished so far. ``finished(path, problems)`` reads it back —
each line's ``id`` (the problem's position) and ``input``, which must be that problem's —
and the run goes on with the other ids, whose seeds are those of an uninterrupted run
(``Algorithm.run(..., ids=...)``). A last line cut short by a crash is dropped.
"""

from __future__ import annotations

from pathlib import Path

from .errors import UserError
from .jsonl import complete_json_lines
from .records import jsonable


def finished(path: Path, problems: list[dict]) -> dict[int, dict]:
    """The complete records of ``path`` by problem id (none if it does not exist)."""
    records: dict[int, dict] = {}
    for number, record in complete_json_lines(path, UserError, "not a results line; use another --out"):
        index = record.get("id") if isinstance(record, dict) else None
        if record.get("kind") != "problem" or not isinstance(index, int) or not 0 <= index < len(problems):
            raise UserError(f"{path}:{number}: not a result of this run's problems; use another --out")
        if record.get("input") != jsonable(problems[index]):
            raise UserError(f"{path}:{number}: problem {index} was run with other inputs; use another --out")
        records[index] = record
    return records
