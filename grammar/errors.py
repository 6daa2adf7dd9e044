"""Errors of the .tts front end: every message names a place in the file and shows it.

A ``Diagnostic`` is one problem at one ``Position``; a ``TtsError`` carries all the
problems found in a file (the checker reports everything it can at once). Each renders as
``file.tts:LINE:COL: message``, then the source line and a caret under the column.
"""

from __future__ import annotations

from dataclasses import dataclass

from ppl.errors import PPLError

from .ast import Position


@dataclass(frozen=True)
class Diagnostic:
    """One problem in a .tts file."""

    position: Position
    message: str

    def render(self, source: str | None = None) -> str:
        """``file:line:col: message``, plus the source line and a caret when ``source`` is known."""
        head = f"{self.position}: {self.message}"
        if source is None:
            return head
        lines = source.splitlines() + [""]  # the end of the file may be on a line of its own
        if not 1 <= self.position.line <= len(lines):
            return head
        line = lines[self.position.line - 1]
        prefix = line[: max(0, self.position.column - 1)]
        caret = "".join(c if c == "\t" else " " for c in prefix) + "^"
        return f"{head}\n    {line}\n    {caret}"


class TtsError(PPLError):
    """A .tts file that cannot run: its diagnostics, in the order of the file.

    ``sources`` holds the text of the other files whose problems are reported too (the files
    a ``use ... from`` reads): each diagnostic shows the line of its own file, and the file's
    own problems come first, then each other file's, in the order given.
    """

    def __init__(
        self, diagnostics: list[Diagnostic], source: str | None = None, sources: dict[str, str] | None = None
    ):
        self.sources = dict(sources or {})
        order = {name: i for i, name in enumerate(self.sources)}
        self.diagnostics = sorted(
            diagnostics,
            key=lambda d: (order.get(d.position.file, -1), d.position.line, d.position.column, d.message),
        )
        self.source = source
        super().__init__(self.render())

    def render(self) -> str:
        return "\n".join(d.render(self.sources.get(d.position.file, self.source)) for d in self.diagnostics)

    @property
    def messages(self) -> list[str]:
        """The bare messages, without position or source line (handy in tests)."""
        return [d.message for d in self.diagnostics]


class TtsRuntimeError(PPLError):
    """A .tts program failed while running (e.g. an index out of range): its particle dies
    with this message as the recorded reason."""

    def __init__(self, position: Position, message: str):
        self.position = position
        super().__init__(f"{position}: {message}")
