"""Fuzzing the front end: malformed input ends in a clean TtsError with a position, always.

Inputs: random text and random bytes (hypothesis), random token soups built from the
language's own tokens (hypothesis), every truncation of every example, and every
token-level mutation (delete, duplicate, swap with the next) of every example. Each must
either load or raise ``TtsError`` whose every diagnostic has a ``fuzz.tts:LINE:COL``
position — never another exception, a Lark traceback, or a hang. The inputs tried are
counted and asserted: 15,326 in the slow tier (11,826 truncations and mutations of the seven
examples, 3,500 hypothesis inputs, the text and soup ones each tried two ways).
"""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ppl.app import check, load
from ppl.grammar import TtsError
from ppl.grammar.syntax import parser

from tts_trees import KEYWORDS, PUNCTUATION, time_limit

LIMIT = 5.0  # seconds per input (tests/tts_trees.py raises Hang past it)
EXAMPLES = sorted((Path(__file__).resolve().parent.parent / "examples").glob("*.tts"))
# inputs are named as a file beside the examples, so the paths they write (a retriever's
# corpus, a used file) are read from there
FILENAME = str(EXAMPLES[0].parent / "fuzz.tts")


def front_end(source) -> str:
    """Run the front end on ``source`` within a time limit; return "ok" or "error", fail on anything else."""
    with time_limit(LIMIT, "an input"):
        return _front_end(source)


def _front_end(source) -> str:
    try:
        check(source, FILENAME)
    except TtsError as error:
        assert error.diagnostics, source
        for diagnostic in error.diagnostics:
            position = diagnostic.position
            assert position.line >= 1 and position.column >= 1, source
            assert position.file == FILENAME or position.file in error.sources, source  # or a used file's
        assert str(error).startswith(FILENAME + ":"), source
        assert "Token(" not in str(error) and "__ANON" not in str(error), str(error)
        return "error"
    load(source, filename=FILENAME)  # what checks cleanly also compiles
    return "ok"


@functools.cache
def example_texts() -> tuple[str, ...]:
    return tuple(path.read_text(encoding="utf-8") for path in EXAMPLES)


@functools.cache
def example_tokens(text: str):
    return list(parser().lex(text))


def mutations(text: str):
    """Every deletion, duplication and swap (with the next token) of a token of ``text``."""
    tokens = example_tokens(text)
    for i, token in enumerate(tokens):
        start, end = token.start_pos, token.end_pos
        yield text[:start] + text[end:]
        yield text[:end] + " " + token.value + text[end:]
        if i + 1 < len(tokens):
            following = tokens[i + 1]
            yield (
                text[:start]
                + following.value
                + text[end : following.start_pos]
                + token.value
                + text[following.end_pos :]
            )


def test_every_example_loads():
    assert len(EXAMPLES) >= 4
    assert all(front_end(text) == "ok" for text in example_texts())


@pytest.mark.slow
def test_truncations_and_token_mutations_of_the_examples():
    tried, outcomes = 0, {"ok": 0, "error": 0}
    for text in example_texts():
        for cut in range(len(text)):
            outcomes[front_end(text[:cut])] += 1
            tried += 1
        for mutant in mutations(text):
            outcomes[front_end(mutant)] += 1
            tried += 1
    assert tried >= 5000, tried  # 5,368 with the four examples of this commit
    assert outcomes["error"] > 0.5 * tried  # most mutants are wrong, and say so


# the examples' tokens and every keyword and punctuation mark of the language (tts_trees.py's)
TOKEN_SOUP = sorted(
    {t.value for text in example_texts() for t in example_tokens(text)} | {*KEYWORDS, *PUNCTUATION}
)


@pytest.mark.slow
def test_random_text_bytes_and_token_soups():
    counts = {"text": 0, "bytes": 0, "soup": 0}

    @settings(max_examples=1500, database=None)
    @given(st.text(max_size=300))
    def random_text(source):
        counts["text"] += 1
        front_end(source)
        front_end("version 0.1\n" + source)

    @settings(max_examples=500, database=None)
    @given(st.binary(max_size=300))
    def random_bytes(source):
        counts["bytes"] += 1
        front_end(source)

    @settings(max_examples=1500, database=None)
    @given(st.lists(st.sampled_from(TOKEN_SOUP), max_size=60))
    def token_soup(tokens):
        counts["soup"] += 1
        front_end("version 0.1\n" + " ".join(tokens))
        front_end(
            'version 0.1\nuse lm = model("m")\nprogram f(p: text) -> text {\n' + " ".join(tokens) + "\n}"
        )

    random_text()
    random_bytes()
    token_soup()
    assert counts["text"] >= 1000 and counts["bytes"] >= 300 and counts["soup"] >= 1000, counts
    assert sum(counts.values()) >= 2800
