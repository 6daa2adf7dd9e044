"""The large fuzz tier: random .tts syntax trees and grammar-aware mutations of them.

10,200 inputs (3,400 seeds × a random file and two mutants of it, ``tests/tts_trees.py``),
each under a per-input time limit. Every input must load or end in a ``TtsError`` whose
every diagnostic has a position — never another exception or a hang — and the counts are
asserted: most random files are valid (so the checker and compiler are reached, not just
the parser) and most mutants are not (so the errors are). Marked ``slow`` (about a
minute); ``python -m pytest -q`` (the README's and CI's command) runs it.
"""

from __future__ import annotations

import random
from collections import Counter

import pytest

from ppl.app import check
from ppl.grammar import TtsError

from test_tts_fuzz import front_end
from tts_trees import Hang, mutate, program_tree

SEEDS = 3400
MUTANTS = 2


def outcome(source: str, seed: int) -> str:
    try:
        return front_end(source)
    except Hang as hang:
        pytest.fail(f"seed {seed}: {hang}: {source!r}")


def test_a_small_sample_of_random_trees():
    """The fast tier's share: 100 seeds."""
    counts = Counter(outcome(program_tree(random.Random(seed)).text(), seed) for seed in range(100))
    assert counts["ok"] >= 40 and counts["error"] >= 5, counts


@pytest.mark.slow
def test_random_trees_and_their_mutations_load_or_fail_with_a_position():
    counts = Counter()
    for seed in range(SEEDS):
        rng = random.Random(seed)
        tree = program_tree(rng)
        counts["tree:" + outcome(tree.text(), seed)] += 1
        for _ in range(MUTANTS):
            counts["mutant:" + outcome(mutate(tree, rng).text(), seed)] += 1
    assert sum(counts.values()) == SEEDS * (1 + MUTANTS) >= 10_000, counts
    assert counts["tree:ok"] >= 0.6 * SEEDS, counts  # the checker and the compiler are reached
    assert counts["mutant:error"] >= 0.6 * SEEDS * MUTANTS, counts  # and the errors are
    assert counts["mutant:ok"] > 0 and counts["tree:error"] > 0, counts


def test_indexing_an_empty_list_is_an_error_not_a_crash():
    """Found by this fuzzer (seed 1365): the checker passed ``[][0].x`` and the compiler raised KeyError."""
    source = (
        'version 0.1\nuse lm = model("m")\nprogram f(p: text) -> text {\n  let v = [][0].x\n  return p\n}\n'
    )
    with pytest.raises(TtsError) as caught:
        check(source, "fuzz.tts")
    assert str(caught.value).splitlines()[0] == "fuzz.tts:4:11: cannot index an empty list: it has no items"
