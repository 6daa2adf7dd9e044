"""Sources of randomness, and exact enumeration of a computation's own randomness.

Every random decision in ppl — a token drawn by the tabular LM, a categorical choice, the
uniform behind a resampling scheme — goes through ``Randomness.uniform(breaks)``: a uniform
draw on [0, 1) whose *use* the caller promises depends only on which interval between the
sorted ``breaks`` it falls in. A seeded source ignores the breaks and draws. The exhaustive
source instead runs a computation once per interval sequence (depth-first, by
re-execution) and reports each outcome with its exact probability — so the real code of
an interpreter, not a model of it, has its output law computed exactly (docs/design.md,
"How distributions are tested", technique 2).

Example::

    >>> from ppl.randomness import exact_law, categorical
    >>> law = exact_law(lambda rng: categorical(rng, [0.0, 0.0, 0.0]))
    >>> sorted((v, round(p, 6)) for p, v in law)
    [(0, 0.333333), (1, 0.333333), (2, 0.333333)]
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np

from .errors import NotEnumerableError

_MIN_INTERVAL = 1e-15


@enum.unique
class Stream(enum.IntEnum):
    """The namespaces of randomness keys: the first element of every key an interpreter asks
    a ``Source`` for. Each stream of draws is keyed ``(Stream.X, problem, …)``, so two
    purposes can never share a stream by accident (a collision would silently correlate
    them). The values are part of the seeded outputs: never renumber one, only add.
    """

    PARTICLE = 0  # particles of IS/SMC: (problem, generation, index)
    RESAMPLING = 1  # SMC's ancestor draws: (problem, step)
    MH_CHAIN = 5  # MH proposals: (problem, chain, step)
    MH_DECISION = 6  # MH positions (0) and acceptances (1): (problem, step, what)
    GIBBS_PARTICLE = 7  # particle Gibbs particles: (problem, sweep, generation, index)
    GIBBS_ANCESTORS = 8  # particle Gibbs ancestor choices: (problem, sweep, step + 1 or 0)
    GIBBS_REJUVENATION = 9  # rejuvenation moves: (problem, sweep, move, what)
    BEAM = 10  # beam search / DVTS children: (problem, generation, subtree, index)
    SEED_HANDLER = 11  # ``ppl.seed`` direct execution: (rng_seed, site count); no Source involved
    NESTED = (
        12  # a nested run's keys: (0, outer particle key, site position, the inner key without its problem)
    )
    RESTART = 13  # restarted attempts of ``Restarts``: (problem, slot, attempt)
    PRUNING = 14  # its rejection-control checks: (problem, slot, attempt, check)


def key(stream: Stream, *parts: int) -> tuple[int, ...]:
    """A randomness key in ``stream``: ``(stream, *parts)``."""
    return (int(stream), *parts)


class Randomness(Protocol):
    def uniform(self, breaks: Sequence[float] | None = None) -> float:
        """A draw from U[0, 1); see the module docstring for ``breaks``."""
        ...


def derive_seed(*key: int) -> int:
    """A 31-bit integer seed derived from a tuple of non-negative integers."""
    return int(np.random.SeedSequence(list(key)).generate_state(1)[0] >> 1)


_M32 = 0xFFFFFFFF
_INIT_A, _MULT_A, _INIT_B, _MULT_B = 0x43B0D7E5, 0x931E8875, 0x8B51F9DD, 0x58F38DED
_MIX_L, _MIX_R, _POOL = 0xCA01F9DD, 0x4973F715, 4


def _words(key: Sequence[int]) -> list[int]:
    """A key as SeedSequence sees it: each integer as little-endian 32-bit words (0 as one)."""
    out = []
    for value in key:
        value = int(value)
        if value < 0:
            raise ValueError(f"randomness keys are non-negative integers, got {value}")
        out.append(value & _M32)
        value >>= 32
        while value:
            out.append(value & _M32)
            value >>= 32
    return out


def derive_seeds(keys: Sequence[Sequence[int]]) -> list[int]:
    """``[derive_seed(*k) for k in keys]``, computed for the whole batch at once.

    numpy's ``SeedSequence`` costs tens of µs per key — more than the scheduler's own work
    for a particle's step — so its hash (entropy pool of 4 words, hashmix and mix, then one
    output word) is run here vectorised over the batch in uint32 arithmetic. The result is
    identical to ``derive_seed`` (``tests/test_randomness_keys.py`` compares them).
    """
    out = [0] * len(keys)
    by_length: dict[int, list[int]] = {}
    entropy = [_words(k) for k in keys]
    for i, words in enumerate(entropy):
        by_length.setdefault(len(words), []).append(i)
    with np.errstate(over="ignore"):
        for length, rows in by_length.items():
            table = np.zeros((len(rows), max(length, _POOL)), dtype=np.uint32)
            table[:, :length] = [entropy[i] for i in rows]
            constant = _INIT_A

            def hashmix(value):
                nonlocal constant
                value = value ^ np.uint32(constant)
                constant = (constant * _MULT_A) & _M32
                value = value * np.uint32(constant)
                return value ^ (value >> np.uint32(16))

            def mix(x, y):
                result = np.uint32(_MIX_L) * x - np.uint32(_MIX_R) * y
                return result ^ (result >> np.uint32(16))

            pool = [hashmix(table[:, i]) for i in range(_POOL)]
            for source in range(_POOL):
                for target in range(_POOL):
                    if source != target:
                        pool[target] = mix(pool[target], hashmix(pool[source]))
            for source in range(_POOL, table.shape[1]):
                for target in range(_POOL):
                    pool[target] = mix(pool[target], hashmix(table[:, source]))
            state = (pool[0] ^ np.uint32(_INIT_B)) * np.uint32((_INIT_B * _MULT_B) & _M32)
            state = state ^ (state >> np.uint32(16))
            for j, i in enumerate(rows):
                out[i] = int(state[j]) >> 1
    return out


class SeededRandomness:
    """Independent uniform draws from a PCG64 stream keyed by a tuple of integers.

    The stream is made on the first draw: most particles never draw locally (the engine
    draws their tokens), and making a generator costs more than a particle's step.
    """

    def __init__(self, *key: int):
        self._key = key
        self._generator: np.random.Generator | None = None

    def uniform(self, breaks: Sequence[float] | None = None) -> float:
        if self._generator is None:
            self._generator = np.random.Generator(np.random.PCG64(np.random.SeedSequence(list(self._key))))
        return float(self._generator.random())


class Source(Protocol):
    """Where an interpreter gets randomness: a stream per key, and seeds for engine requests."""

    def __call__(self, *key: int) -> Randomness: ...

    def engine_seed(self, *key: int) -> int: ...


class SeededSource:
    """The default source: everything keyed by ``(seed, *key)``, so a run is reproducible
    and a problem's draws do not depend on what else is in flight."""

    def __init__(self, seed: int):
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        self.seed = int(seed)

    def __call__(self, *key: int) -> Randomness:
        return SeededRandomness(self.seed, *key)

    def engine_seed(self, *key: int) -> int:
        return derive_seed(self.seed, *key)

    def engine_seeds(self, keys: Sequence[Sequence[int]]) -> list[int]:
        """``engine_seed`` for many keys at once (the same values, far cheaper)."""
        return derive_seeds([(self.seed, *k) for k in keys])


class AsProblem:
    """``source`` as problem ``problem`` sees it, whatever id the scheduler runs it under.

    Every key is ``(Stream.X, problem, …)``; this replaces the problem by ``problem`` before
    asking ``source``. A server runs each request under a fresh scheduler id; wrapped as
    ``AsProblem(SeededSource(seed), 0)`` a request gets exactly the draws of problem 0 in a
    run with that seed (``tts run --input … --seed …``), whatever else is in flight.
    """

    def __init__(self, source: Source, problem: int = 0):
        self.source = source
        self.problem = problem

    def _key(self, key: Sequence[int]) -> tuple[int, ...]:
        return (key[0], self.problem, *key[2:])

    def __call__(self, *key: int) -> Randomness:
        return self.source(*self._key(key))

    def engine_seed(self, *key: int) -> int:
        return self.source.engine_seed(*self._key(key))

    def engine_seeds(self, keys: Sequence[Sequence[int]]) -> list[int]:
        rekeyed = [self._key(k) for k in keys]
        batch = getattr(self.source, "engine_seeds", None)
        return batch(rekeyed) if batch is not None else [self.source.engine_seed(*k) for k in rekeyed]


class FixedSource:
    """Every key gets the same randomness — e.g. one ``ExhaustiveRandomness`` to enumerate
    a whole run. Engines must then draw through it too (``TabularLM.with_randomness``)."""

    def __init__(self, randomness: Randomness):
        self.randomness = randomness

    def __call__(self, *key: int) -> Randomness:
        return self.randomness

    def engine_seed(self, *key: int) -> int:
        return 0

    def engine_seeds(self, keys: Sequence[Sequence[int]]) -> list[int]:
        return [0] * len(keys)


def categorical(rng: Randomness, logits: Sequence[float]) -> int:
    """Draw an index with probability ∝ exp(logits) by inverting the CDF.

    Indices of zero probability are never returned.
    """
    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim != 1 or logits.size == 0:
        raise ValueError("categorical needs a non-empty 1-d array of logits")
    top = np.max(logits)
    if not np.isfinite(top):
        raise ValueError("categorical needs at least one finite logit")
    probs = np.exp(logits - top)
    cdf = np.cumsum(probs)
    cdf /= cdf[-1]
    cdf[int(np.flatnonzero(probs > 0)[-1]) :] = 1.0
    u = rng.uniform(cdf[:-1])
    return int(np.searchsorted(cdf, u, side="right"))


class ExhaustiveRandomness:
    """Follows a prescribed path of interval choices; extends it with the first interval."""

    def __init__(self, path: list[int]):
        self.path = path
        self.widths: list[int] = []
        self.position = 0
        self.log_probability = 0.0

    def uniform(self, breaks: Sequence[float] | None = None) -> float:
        if breaks is None:
            raise NotEnumerableError(
                "this random draw has a continuous outcome and cannot be enumerated exactly"
            )
        edges = np.unique(np.clip(np.asarray(breaks, dtype=np.float64), 0.0, 1.0))
        edges = np.concatenate(([0.0], edges, [1.0]))
        intervals = [(a, b) for a, b in zip(edges[:-1], edges[1:]) if b - a > _MIN_INTERVAL]
        if self.position == len(self.path):
            self.path.append(0)
        choice = self.path[self.position]
        self.widths.append(len(intervals))
        self.position += 1
        low, high = intervals[choice]
        self.log_probability += math.log(high - low)
        return 0.5 * (low + high)


def exact_law(
    computation: Callable[[ExhaustiveRandomness], Any], max_outcomes: int = 1_000_000
) -> list[tuple[float, Any]]:
    """Run ``computation(rng)`` once per outcome of its random draws.

    Returns ``[(probability, result), ...]``; the probabilities sum to one. The computation
    must be deterministic given its draws, and draw only through ``rng.uniform(breaks)``.
    """
    law: list[tuple[float, Any]] = []
    path: list[int] = []
    while True:
        rng = ExhaustiveRandomness(path)
        result = computation(rng)
        law.append((math.exp(rng.log_probability), result))
        if len(law) > max_outcomes:
            raise NotEnumerableError(f"more than {max_outcomes} outcomes; not enumerated")
        del path[rng.position :]
        while path and path[-1] + 1 >= rng.widths[len(path) - 1]:
            path.pop()
        if not path:
            return law
        path[-1] += 1
