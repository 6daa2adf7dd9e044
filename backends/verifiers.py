"""Programmatic verifiers: answer checkers usable as plain functions and as reward models.

A **checker** is a function ``check(answer, reference) -> bool`` that decides whether an
answer (the text a program returned) is right for a task's reference. The evaluator
(``tts eval``) looks checkers up by name in ``CHECKERS``; a program uses them as reward
models through ``verifier(name)``, a batched, memoised ``FunctionReward`` whose value is
1.0 (right) or 0.0 (wrong) — weight with ``score β·r`` or ``condition r > 0``.

| name | reference | passes when |
|---|---|---|
| ``math`` | an expression (``"42"``, ``"\\\\frac{1}{2}"``) | the answer's final expression (the extraction rules below) is mathematically equal to it (``math-verify``) |
| ``exact`` | a text | equal after trimming spaces and case |
| ``regex`` | a Python regular expression | it matches the whole trimmed answer |
| ``include_words`` | a list of words | every word occurs as a whole word (any case) |
| ``word_count`` | an integer *n* | the answer has exactly *n* words |
| ``bullets`` | an integer *n* | the answer is exactly *n* lines starting with ``- `` |
| ``python_tests`` | Python test code | the answer (code) followed by the tests runs cleanly in the sandbox (``ppl.backends.sandbox``) |

**How ``math`` reads an answer** (``final_expression``), so that garbage around a number is
not a right answer:

1. the content of the last ``\\boxed{...}``, if there is one; else
2. what follows the last "answer is" (any case, a colon allowed) on its line, without
   trailing words (the unit in "The answer is 14 eggs."); else
3. the whole answer, or what follows its last ``=`` ("6 * 7 = 42" reads 42).

The candidate, trimmed of spaces, surrounding ``$`` and a final period, must then be a
mathematical expression and nothing else: digits, single-letter variables, LaTeX commands
(``\\frac``, ``\\sqrt``, ``\\pi``), spaces and ``+ - * / ^ ( ) [ ] { } . , ! %``. Anything
else — a word ("8 apples"), a stray symbol (``8`_@H&b>Cp``), no expression at all — is
wrong. Equality is then math-verify's (``0.5`` equals ``\\frac{1}{2}``).

Checkers run trusted code in this process; generated code is only ever run by the
``python_tests`` checker, and then in a sandboxed subprocess.

    >>> from ppl.backends.verifiers import check, math_equal, verifier
    >>> math_equal("so the answer is \\\\boxed{0.5}", "\\\\frac{1}{2}"), math_equal("41", "42")
    (True, False)
    >>> check("word_count", "three small words", 3), check("include_words", "A red fox.", ["fox", "red"])
    (True, True)
    >>> from ppl.interfaces import RewardRequest
    >>> r = verifier("math")
    >>> r.reward([RewardRequest(("x = 6*7 = 42", "42")), RewardRequest(("x = 6*7 = 42", "42"))])
    [1.0, 1.0]
    >>> r.usage.requests
    1
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from types import MappingProxyType

from .functions import FunctionReward

_WORD = re.compile(r"[A-Za-z0-9]+(?:['’-][A-Za-z0-9]+)*")
_ANSWER_IS = re.compile(r"answer\s+is\b", re.IGNORECASE)
_EXPRESSION = re.compile(r"[0-9A-Za-z\\{}()\[\]+\-*/^.,!%\s]+")
_BARE_WORD = re.compile(r"(?<![\\A-Za-z])[A-Za-z]{2,}")  # two letters or more, not a LaTeX command
_TRAILING_WORDS = re.compile(r"(\s+[A-Za-z]+)+\s*\.?\s*$")


def _last_boxed(text: str) -> str | None:
    """The content of the last ``\\boxed{...}`` (braces balanced), or None."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, i = 1, start + len("\\boxed{")
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i:j]
    return None


def final_expression(answer: str) -> str | None:
    """The expression the ``math`` checker grades (the rules in the module's docstring), or
    None when the answer has no final expression that is only an expression."""
    text = str(answer)
    candidate = _last_boxed(text)
    if candidate is None:
        said = list(_ANSWER_IS.finditer(text))
        if said:
            candidate = text[said[-1].end() :].split("\n", 1)[0].lstrip(" :")
            candidate = _TRAILING_WORDS.sub("", candidate) if re.search(r"[0-9]", candidate) else candidate
        else:
            candidate = text.rsplit("=", 1)[-1]
    candidate = candidate.strip().strip("$").strip()
    if candidate.endswith(".") and not candidate.endswith(".."):
        candidate = candidate[:-1].rstrip()
    if not candidate or not _EXPRESSION.fullmatch(candidate) or _BARE_WORD.search(candidate):
        return None
    return candidate


def math_equal(answer: str, reference, *, timeout: int = 5) -> bool:
    """True when the answer's final expression is mathematically equal to ``reference``.

    The answer may be free text: ``final_expression`` reads its final expression under the
    rules stated in the module's docstring (an answer with none is wrong), and math-verify
    decides equivalence. ``reference`` is the gold answer, a number or an expression text. ``timeout`` bounds parsing and comparison (signal-based,
    so only in the main thread; elsewhere math-verify runs without one).
    """
    try:
        from math_verify import parse, verify
    except ImportError:  # pragma: no cover - depends on the install
        raise ImportError(
            "the 'math' checker needs math-verify: pip install 'ppl-tts[eval]' (or math-verify)"
        ) from None
    limit = timeout if threading.current_thread() is threading.main_thread() else None
    gold_text = str(reference)
    gold = parse(
        gold_text if "$" in gold_text or "\\boxed" in gold_text else f"${gold_text}$", parsing_timeout=limit
    )
    if not gold:
        raise ValueError(f"math-verify cannot read the reference answer {reference!r}")
    expression = final_expression(answer)
    if expression is None:
        return False
    target = parse(f"${expression}$", parsing_timeout=limit)
    if not target:
        return False
    return bool(verify(gold, target, timeout_seconds=limit))


def exact_match(answer: str, reference) -> bool:
    """Equal after trimming surrounding spaces and ignoring case."""
    return str(answer).strip().casefold() == str(reference).strip().casefold()


def regex_match(answer: str, pattern: str, *, full: bool = True) -> bool:
    """The regular expression ``pattern`` matches the whole trimmed answer (``full=False``: anywhere)."""
    try:
        compiled = re.compile(pattern, re.S)
    except re.error as error:
        raise ValueError(f"bad regular expression {pattern!r}: {error}") from None
    text = str(answer).strip()
    return bool(compiled.fullmatch(text) if full else compiled.search(text))


def words(text: str) -> list[str]:
    """The words of a text: runs of letters and digits (with inner apostrophes or hyphens)."""
    return _WORD.findall(str(text))


def include_words(answer: str, required) -> bool:
    """Every word of ``required`` occurs in the answer as a whole word, in any case."""
    if isinstance(required, str) or not all(isinstance(w, str) and w for w in required):
        raise ValueError(f"include_words needs a list of words, got {required!r}")
    present = {w.casefold() for w in words(answer)}
    return all(w.casefold() in present for w in required)


def word_count(answer: str, n) -> bool:
    """The answer has exactly ``n`` words (see ``words``)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"word_count needs a whole number of words, got {n!r}")
    return len(words(answer)) == n


def bullets(answer: str, n) -> bool:
    """The answer is exactly ``n`` non-empty lines, each starting with ``- ``."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"bullets needs a number of lines >= 1, got {n!r}")
    lines = [line for line in str(answer).strip().splitlines() if line.strip()]
    return len(lines) == n and all(line.startswith("- ") and line[2:].strip() for line in lines)


def python_tests_run(answer: str, tests: str):
    """Run the answer (Python code), then ``tests``, in the sandbox: its ``SandboxResult``
    (status, output, and the guarantee level it ran under)."""
    from .sandbox import run_tests

    return run_tests(str(answer), str(tests))


def python_tests(answer: str, tests: str) -> bool:
    """The answer (Python code) followed by ``tests`` runs to the harness's end in the sandbox."""
    return python_tests_run(answer, tests).passed


CHECKERS: MappingProxyType[str, Callable[[str, object], bool]] = MappingProxyType(
    {
        "math": math_equal,
        "exact": exact_match,
        "regex": regex_match,
        "include_words": include_words,
        "word_count": word_count,
        "bullets": bullets,
        "python_tests": python_tests,
    }
)


def checker(name: str) -> Callable[[str, object], bool]:
    """The checker called ``name``; a ``ValueError`` naming the known ones otherwise."""
    try:
        return CHECKERS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown checker {name!r}; the checkers are {', '.join(sorted(CHECKERS))}"
        ) from None


def check(name: str, answer, reference) -> bool:
    """Run the checker ``name``; an answer that is ``None`` (no answer) is wrong."""
    fn = checker(name)
    if answer is None:
        return False
    return bool(fn(answer, reference))


def verifier(name: str) -> FunctionReward:
    """The checker ``name`` as a batched, memoised reward model: ``(answer, reference) -> 1.0 or 0.0``."""
    fn = checker(name)
    return FunctionReward(lambda answer, reference: 1.0 if fn(answer, reference) else 0.0, name=name)
