"""Reading .tts source: a file, text or bytes → ``(text, filename)``, UTF-8 errors positioned."""

from __future__ import annotations

from pathlib import Path

from . import ast
from .errors import Diagnostic, TtsError


def read_source(source: str | bytes | Path, filename: str | None = None) -> tuple[str, str]:
    """``(text, filename)`` from a file (a ``pathlib.Path``), source text (a ``str``), or UTF-8 bytes.

    A ``str`` is always source text, never a file name: pass ``Path("x.tts")`` for a file.
    """
    if isinstance(source, (bytes, Path)):
        data = source if isinstance(source, bytes) else Path(source).read_bytes()
        filename = filename or ("<input>" if isinstance(source, bytes) else str(source))
        try:
            return data.decode("utf-8"), filename
        except UnicodeDecodeError as error:
            before = data[: error.start].decode("utf-8", errors="replace")
            line = before.count("\n") + 1
            column = len(before) - (before.rfind("\n") + 1) + 1
            position = ast.Position(filename, line, column)
            raise TtsError([Diagnostic(position, "this file is not valid UTF-8 text")]) from None
    return source, filename or "<input>"
