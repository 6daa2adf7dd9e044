"""Text functions programs need (both forms): the last number, number parsing, regular
expressions, splitting. The .tts built-ins call these; Python programs import them.

    >>> last_number("so 3 + 4 = 7, then 1,250.5 in total"), as_number(" 1,234 ")
    ('1250.5', 1234)
    >>> extract("x = 12, y = 30", r"y = (\\d+)"), extract_all("1a22b333", r"\\d+")
    ('30', ('1', '22', '333'))
"""

from __future__ import annotations

import math
import re

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:[eE][+-]?\d+)?")


def last_number(text: str) -> str:
    """The last number written in ``text`` (``-3``, ``1,234.5``), commas dropped; "" if none."""
    found = _NUMBER.findall(text)
    return found[-1].replace(",", "") if found else ""


def as_number(text: str) -> int | float:
    """The number a text spells (spaces and thousands commas ignored); a ValueError otherwise."""
    cleaned = text.strip().replace(",", "")
    try:
        value = float(cleaned)
    except ValueError:
        raise ValueError(f"cannot read a number from {text!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"cannot read a number from {text!r}")
    return int(value) if value.is_integer() and re.fullmatch(r"-?\d+", cleaned) else value


def regex(pattern: str) -> re.Pattern:
    """The compiled pattern; a ValueError that shows it when it is not a regular expression."""
    try:
        return re.compile(pattern)
    except re.error as error:
        raise ValueError(f"bad regular expression {pattern!r}: {error}") from None


def extract(text: str, pattern: str) -> str:
    """The first match of ``pattern`` in ``text`` — its first group if it has groups; "" if none."""
    match = regex(pattern).search(text)
    if match is None:
        return ""
    return match.group(1) if match.re.groups else match.group(0)


def extract_all(text: str, pattern: str) -> tuple[str, ...]:
    """Every match of ``pattern`` in ``text`` (the first group of each, if it has groups)."""
    compiled = regex(pattern)
    return tuple(m.group(1) if compiled.groups else m.group(0) for m in compiled.finditer(text))


def split(text: str, separator: str) -> tuple[str, ...]:
    """``text`` cut at every ``separator``; at runs of white space when it is ""."""
    return tuple(text.split(separator) if separator else text.split())
