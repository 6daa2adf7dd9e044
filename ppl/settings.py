"""Declared settings of interpreters: what an ``infer`` clause, ``tts eval`` and the CLI may set.

Each interpreter module declares one ``AlgorithmSpec`` — its ``.tts`` name, its settings
with defaults and validation, and which setting is its budget — and ``ppl.algorithms``
collects them in one registry. The ``.tts`` checker, the builder, ``tts eval`` and the CLI
read that registry; the interpreters' own constructors validate with the same ``Setting``
objects, so a setting is checked by one piece of code however it arrives.

    >>> particles = Setting("particles", int, minimum=1)
    >>> particles.check(4)
    4
    >>> particles.check(True)
    Traceback (most recent call last):
    ...
    ValueError: particles must be an integer >= 1, got True
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any


class _Required:
    """The default of a setting that has none: it must be given."""

    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()


@dataclass(frozen=True)
class Setting:
    """One setting: its name, kind (``int``, ``float`` or ``str``), default and allowed values.

    ``argument`` is the constructor's keyword when it differs from the ``.tts`` name (``ess``
    → ``ess_threshold``). ``noun``/``plural`` name the choices in messages ("unknown
    resampling scheme 'x'; the schemes are …"); ``hint`` explains the range.
    """

    name: str
    kind: type
    default: Any = REQUIRED
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    argument: str | None = None
    noun: str = ""
    plural: str = ""
    hint: str = ""

    @property
    def keyword(self) -> str:
        return self.argument or self.name

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    def expectation(self, style: str = "python") -> str:
        """What a valid value looks like: ``an integer >= 1``, ``a number in [0, 1]`` — or, in
        the words of a ``.tts`` file (``style="tts"``), ``a whole number >= 1``, ``between 0 and 1``."""
        if self.kind is str:
            return f"one of {', '.join(self.choices)}" if self.choices else "a text"
        tts = style == "tts"
        word = ("a whole number" if tts else "an integer") if self.kind is int else "a number"
        if self.minimum is not None and self.maximum is not None and tts:
            text = f"between {_plain(self.minimum)} and {_plain(self.maximum)}"
        elif self.minimum is not None and self.maximum is not None:
            text = f"{word} in [{_plain(self.minimum)}, {_plain(self.maximum)}]"
        elif self.minimum is not None:
            text = f"{word} >= {_plain(self.minimum)}"
        elif self.maximum is not None:
            text = f"{word} <= {_plain(self.maximum)}"
        else:
            text = word
        return f"{text} ({self.hint})" if self.hint else text

    def problem(self, value, *, name: str | None = None, style: str = "python") -> str | None:
        """Why ``value`` is not allowed (a message naming the setting), or None when it is."""
        name = name or self.keyword
        if self.kind is str:
            if not isinstance(value, str):
                return f"{name} must be a text, got {value!r}"
            if self.choices and value not in self.choices:
                noun = self.noun or name
                plural = self.plural or f"{noun}s"
                return f"unknown {noun} {value!r}; the {plural} are {', '.join(sorted(self.choices))}"
            return None
        numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
        whole = numeric and (isinstance(value, int) or (math.isfinite(value) and value.is_integer()))
        fits = numeric and math.isfinite(value) and (self.kind is float or whole)
        fits = fits and (self.minimum is None or value >= self.minimum)
        fits = fits and (self.maximum is None or value <= self.maximum)
        if not fits:
            return f"{name} must be {self.expectation(style)}, got {value!r}"
        return None

    def check(self, value, *, name: str | None = None):
        """``value`` as the interpreter keeps it (an int, float or str); ``ValueError`` if not allowed.

        Booleans are never numbers here, and a float is an integer setting's value only from a
        ``.tts`` file (see ``AlgorithmSpec.build``): ``SMC(2.5)`` and ``SMC(True)`` are refused.
        """
        if self.kind is int and isinstance(value, float):
            message = f"{name or self.keyword} must be {self.expectation()}, got {value!r}"
            raise ValueError(message)
        message = self.problem(value, name=name)
        if message is not None:
            raise ValueError(message)
        return float(value) if self.kind is float else value


def _plain(number: float) -> str:
    return str(int(number)) if float(number).is_integer() else str(number)


@dataclass(frozen=True)
class AlgorithmSpec:
    """An interpreter as the registry knows it.

    ``factory(**keywords)`` builds it (and checks settings jointly, e.g. ``burn < steps``);
    ``budget`` names the setting that sets how much compute it spends (particles, beams …),
    or None when it has none (exact enumeration).
    """

    name: str
    factory: Callable[..., Any]
    settings: tuple[Setting, ...] = ()
    budget: str | None = None
    summary: str = ""

    def setting(self, name: str) -> Setting:
        for setting in self.settings:
            if setting.name == name:
                return setting
        raise KeyError(name)

    def defaults(self) -> dict:
        """The settings that have defaults, by ``.tts`` name."""
        return {s.name: s.default for s in self.settings if not s.required}

    def build(self, settings: Mapping[str, Any]):
        """The interpreter configured by ``settings`` (``.tts`` names; missing ones take defaults).

        Numbers written in a ``.tts`` file arrive as floats: a whole float is an integer
        setting's value. ``ValueError`` names the first bad or missing setting.
        """
        unknown = [name for name in settings if name not in {s.name for s in self.settings}]
        if unknown:
            known = ", ".join(s.name for s in self.settings) or "none"
            raise ValueError(f"{self.name}() has no setting '{unknown[0]}'; its settings are {known}")
        keywords = {}
        for setting in self.settings:
            if setting.name in settings:
                value = settings[setting.name]
                if setting.kind is int and isinstance(value, float) and value.is_integer():
                    value = int(value)
                keywords[setting.keyword] = setting.check(value, name=setting.name)
            elif setting.required:
                raise ValueError(f"{self.name}() needs the setting '{setting.name}'")
            else:
                keywords[setting.keyword] = setting.default
        return self.factory(**keywords)


def registry(*specs: AlgorithmSpec, aliases: Mapping[str, str] | None = None) -> Mapping[str, AlgorithmSpec]:
    """An immutable name → spec mapping; ``aliases`` maps extra names to declared ones."""
    table = {}
    for spec in specs:
        if spec.name in table:
            raise ValueError(f"two interpreters are named {spec.name!r}")
        table[spec.name] = spec
    for alias, target in (aliases or {}).items():
        if alias in table:
            raise ValueError(f"the alias {alias!r} is already an interpreter's name")
        table[alias] = table[target]
    return MappingProxyType(dict(sorted(table.items())))
