"""The library's exceptions: each says what went wrong and keeps what was already computed."""

from __future__ import annotations


class PPLError(Exception):
    """Base class of every error ppl raises on purpose."""


class NotEnumerableError(PPLError):
    """Exact enumeration met a choice with infinite or unknown support."""


class MissingRandomnessError(PPLError):
    """A random choice was reached outside any inference algorithm or ``seed`` handler."""


class AllParticlesDeadError(PPLError):
    """A query needs a particle with positive weight, but every particle has weight zero."""


class EngineError(PPLError):
    """A backend call failed. ``completed`` holds the results of problems that had finished.

    ``completed`` maps a problem's index to its Posterior, so a long run that dies in the
    middle loses nothing it had already finished.
    """

    def __init__(self, message: str, *, backend: str, completed: dict | None = None):
        super().__init__(message)
        self.backend = backend
        self.completed = dict(completed or {})
