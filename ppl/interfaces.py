"""The interfaces between the core and the engines.

Everything an interpreter asks of the outside world is one of three requests — generate a
segment, score an existing continuation, or evaluate a reward — and every backend answers
lists of them at once. Particle state is token ids: prompts and continuations are tuples of
ints, and text is only decoded for display and text-based rewards.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

FINISH_REASONS = ("eos", "stop", "length")


@dataclass(frozen=True)
class GenRequest:
    """Sample ``n`` continuations of ``prompt`` (token ids).

    Generation stops at the end-of-sequence token, after the first stop string appears in
    the decoded continuation, or after ``max_tokens`` tokens. ``temperature == 0`` is
    greedy decoding. ``group`` names requests that share a prompt prefix (the scheduler sets
    it to the problem's id) so an engine with several servers can keep them together.
    """

    prompt: tuple[int, ...]
    max_tokens: int
    stop: tuple[str, ...] = ()
    temperature: float = 1.0
    seed: int | None = None
    n: int = 1
    group: int | None = None

    def __post_init__(self):
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be at least 1, got {self.max_tokens}")
        if not (self.temperature >= 0 and math.isfinite(self.temperature)):
            raise ValueError(f"temperature must be a finite number >= 0, got {self.temperature}")
        if self.n < 1:
            raise ValueError(f"n must be at least 1, got {self.n}")
        if any(not s for s in self.stop):
            raise ValueError("stop strings must be non-empty")


@dataclass(frozen=True)
class Segment:
    """One generated LM segment: the value of a ``gen`` site.

    ``token_ids`` are the generated tokens without the end-of-sequence token; ``text`` is
    exactly their decoding (a stop string that ended the segment is included, as its tokens
    are). ``logprob`` is the log-probability of the whole segment — every token, plus the
    end-of-sequence token when ``finish_reason == "eos"`` — under the distribution that
    sampled it (the LM at the request's temperature).
    """

    token_ids: tuple[int, ...]
    text: str
    finish_reason: str
    logprob: float
    token_logprobs: tuple[float, ...] = ()

    @property
    def eos(self) -> bool:
        """True when the LM ended the sequence (it produced its end-of-sequence token)."""
        return self.finish_reason == "eos"

    def __len__(self) -> int:
        return len(self.token_ids)


@dataclass(frozen=True)
class ScoreRequest:
    """Log-probability of ``continuation`` after ``prompt`` (plus end-of-sequence if ``eos``)."""

    prompt: tuple[int, ...]
    continuation: tuple[int, ...]
    eos: bool = False
    temperature: float = 1.0
    group: int | None = None


@dataclass(frozen=True)
class RewardRequest:
    """Arguments of one reward-model call; hashable so that rewards can be memoised."""

    args: tuple


@dataclass
class Usage:
    """Counters a backend keeps about the work it did."""

    calls: int = 0
    requests: int = 0
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0
    generated_tokens: int = 0
    wall_time: float = 0.0
    batch_sizes: list[int] = field(default_factory=list)

    def record_call(self, batch_size: int, started: float) -> None:
        """Count one batched call of ``batch_size`` requests that began at ``started``
        (a ``time.perf_counter()`` reading)."""
        self.calls += 1
        self.batch_sizes.append(batch_size)
        self.wall_time += time.perf_counter() - started


@runtime_checkable
class LanguageModel(Protocol):
    """What every language-model backend offers (tabular, vLLM, OpenAI-compatible)."""

    name: str
    eos_token_id: int
    usage: Usage

    def encode(self, text: str) -> tuple[int, ...]: ...

    def decode(self, token_ids: Sequence[int]) -> str: ...

    def chat(self, *, user: str, system: str | None = None) -> tuple[int, ...]:
        """Token ids of a chat prompt, ready for the assistant's reply."""
        ...

    def generate(self, requests: Sequence[GenRequest]) -> list[list[Segment]]:
        """One batched call: ``n`` segments for each request, in request order."""
        ...

    def logprob(self, requests: Sequence[ScoreRequest]) -> list[float]:
        """One batched call: the log-probability of each continuation."""
        ...


@runtime_checkable
class RewardModel(Protocol):
    """A reward model, verifier or judge: one float per request, batched."""

    name: str
    usage: Usage

    def reward(self, requests: Sequence[RewardRequest]) -> list[float]: ...
