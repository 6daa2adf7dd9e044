"""The application on top of ppl's core, grammar, backends and interpreters.

``ppl.app.load`` loads a ``.tts`` file with its models resolved on a backend (``loading``);
``ppl.app.check`` checks one. The ``tts`` command (``cli``) is built from ``render`` (the
first prompt, no engine), ``records`` (the JSON lines it writes), ``evaluate`` and
``metrics`` (``tts eval``) and ``models`` (models by name on a backend).
"""

from .loading import catalog, check, load

__all__ = ["catalog", "check", "load"]
