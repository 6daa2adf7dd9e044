"""Reward models made from plain Python functions: programmatic verifiers and checkers.

``FunctionReward(fn)`` answers a batch of reward requests by calling ``fn(*args)`` for
each, memoised on the arguments (so particles sharing a prefix pay once). ``fn`` runs in
this process: use it for trusted code such as answer checkers, never for generated code.

    >>> from ppl.backends.functions import FunctionReward
    >>> from ppl.interfaces import RewardRequest
    >>> length = FunctionReward(lambda text: -len(text), name="shorter")
    >>> length.reward([RewardRequest(("ab",)), RewardRequest(("ab",))])
    [-2.0, -2.0]
    >>> length.usage.requests, length.usage.calls
    (1, 1)
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

from ppl.interfaces import RewardRequest, Usage


class FunctionReward:
    """A batched, memoised reward model around ``fn(*args) -> float``."""

    def __init__(self, fn: Callable[..., float], name: str | None = None):
        if not callable(fn):
            raise TypeError("FunctionReward needs a callable")
        self.fn = fn
        self.name = name or getattr(fn, "__name__", "reward")
        self.usage = Usage()
        self._memo: dict[tuple, float] = {}

    def reward(self, requests: Sequence[RewardRequest]) -> list[float]:
        started = time.perf_counter()
        out = []
        for request in requests:
            if request.args not in self._memo:
                value = float(self.fn(*request.args))
                if math.isnan(value):
                    raise ValueError(f"reward {self.name!r} returned NaN for {request.args!r}")
                self._memo[request.args] = value
                self.usage.requests += 1
            out.append(self._memo[request.args])
        self.usage.record_call(len(requests), started)
        return out
