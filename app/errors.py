"""The application's two kinds of error, told apart by their exit status."""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's files or inputs: reported as a message, exit status 1."""


class UsageError(Exception):
    """A problem with the command line: reported as a message, exit status 2."""


class Interrupted(Exception):
    """Ctrl-C: reported with what was saved and how to resume, exit status 130."""
