"""Randomness keys: one namespace per purpose, so no two purposes share a stream.

A collision — two key functions that can return the same key — would silently correlate
draws that the interpreters' proofs assume independent (e.g. SMC's resampling uniforms
and its particles' tokens). Every key function starts its key with its own ``Stream``.
"""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from ppl.algorithms.beam import beam_key
from ppl.algorithms.gibbs import decision_key, rejuvenation_key, sweep_key
from ppl.algorithms.mh import chain_key, mh_key
from ppl.inference import algorithm_key, particle_key
from ppl.randomness import Stream, derive_seed, derive_seeds, key

KEY_FUNCTIONS = {
    particle_key: (3, 1, 2),
    algorithm_key: (3, 1),
    chain_key: (3, 1, 2),
    mh_key: (3, 1, 0),
    sweep_key: (3, 1, 0, 2),
    decision_key: (3, 1, None),
    rejuvenation_key: (3, 1, 0, 2),
    beam_key: (3, 1, 0, 2),
}


def test_stream_values_are_distinct():
    assert len({int(s) for s in Stream}) == len(Stream)


def test_every_key_function_has_its_own_stream():
    streams = {}
    for function, arguments in KEY_FUNCTIONS.items():
        first = function(*arguments)[0]
        assert first in {int(s) for s in Stream}, function.__name__
        streams[function.__name__] = first
    for (a, x), (b, y) in itertools.combinations(streams.items(), 2):
        assert x != y, f"{a} and {b} share the stream {Stream(x).name}"


def test_stream_values_are_the_published_seeded_outputs():
    """Renumbering a stream would change every seeded result: these numbers are fixed."""
    assert [(s.name, int(s)) for s in Stream] == [
        ("PARTICLE", 0),
        ("RESAMPLING", 1),
        ("MH_CHAIN", 5),
        ("MH_DECISION", 6),
        ("GIBBS_PARTICLE", 7),
        ("GIBBS_ANCESTORS", 8),
        ("GIBBS_REJUVENATION", 9),
        ("BEAM", 10),
        ("SEED_HANDLER", 11),
        ("NESTED", 12),
        ("RESTART", 13),
        ("PRUNING", 14),
    ]
    assert key(Stream.BEAM, 4, 2) == (10, 4, 2)


@settings(max_examples=200)
@given(st.lists(st.lists(st.integers(0, 2**70), min_size=1, max_size=9), min_size=1, max_size=20))
def test_batched_seed_derivation_equals_numpys_seed_sequence(keys):
    """derive_seeds reimplements SeedSequence's hash vectorised: it must agree bit for bit,
    or every seeded result would change."""
    assert derive_seeds(keys) == [derive_seed(*k) for k in keys]
