"""Live progress of ``tts run`` and ``tts eval`` on standard error, drawn with ``rich``.

The core reports where a run stands (``ppl.scheduler.RunProgress``: steps, live particles,
ESS, generated tokens, requests waiting in the engines) through the ``watch`` callback of
``Algorithm.run``; this module only draws it — one bar of problems (or tasks) done, with
that line of detail beside it — so a one-problem run that takes minutes shows it is
moving. ``--no-progress`` turns it off (``Display(enabled=False)`` draws nothing).

    >>> from ppl.scheduler import RunProgress
    >>> detail(RunProgress(2.0, 0, 1, 0, 3, 14, 16, 9.8, 100, 16))
    'step 3 · 14/16 live · ESS 9.8 · 50 tok/s · 16 waiting'
"""

from __future__ import annotations

import sys

from ppl.scheduler import RunProgress


def detail(progress: RunProgress) -> str:
    """The one line of detail: steps done, live particles, ESS, tokens/s, requests waiting."""
    parts = [f"step {progress.steps}", f"{progress.live}/{progress.particles} live"]
    if progress.ess is not None:
        parts.append(f"ESS {progress.ess:.1f}")
    rate = progress.tokens_per_second
    parts.append(f"{rate:.0f} tok/s" if rate >= 10 else f"{rate:.1f} tok/s")
    parts.append(f"{progress.waiting} waiting")
    return " · ".join(parts)


def _console():
    """Standard error; when it is not a terminal (a log file), wide enough for the whole line."""
    from rich.console import Console

    console = Console(file=sys.stderr)
    return console if console.is_terminal else Console(file=sys.stderr, width=160)


class Display:
    """A progress bar on standard error: ``advance()`` as each problem is done, ``watch`` as
    the core's callback, ``describe()`` for the stretch being run. A context manager."""

    def __init__(self, total: int, description: str, *, unit: str = "problems", done: int = 0, enabled=True):
        self.enabled = enabled
        self._progress = None
        self._task = None
        if not enabled:
            return
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(bar_width=12),
            TextColumn(f"{{task.completed}}/{{task.total}} {unit}"),
            TimeElapsedColumn(),
            TextColumn("{task.fields[detail]}"),
            console=_console(),
            transient=False,
        )
        self._task = self._progress.add_task(description, total=total, completed=done, detail="starting")

    def __enter__(self) -> Display:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def watch(self, progress: RunProgress) -> None:
        if self._progress is not None:
            self._progress.update(self._task, detail=detail(progress))

    def advance(self, n: int = 1) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, n)

    def describe(self, description: str) -> None:
        if self._progress is not None:
            self._progress.update(self._task, description=description)
