"""The interfaces between the core and the engines.

Everything an interpreter asks of the outside world is one of these requests — generate a
segment, score an existing continuation, read the next token's log-probabilities at a
few tokens (``NextTokenRequest``, what a judge asks), evaluate a reward, or call a tool
(``ToolRequest``) — or a declared
batch of them (``ScoreBatch``), and every backend answers lists of them at once. Each request type
names the engine method that answers it (``method``), splits into the parts that method
takes (``parts``), and turns the method's answers for those parts into the site's answer
(``take``): the scheduler, direct execution and exact enumeration all dispatch through
these, so a new request type is one class here and an unknown one is an error.

Particle state is token ids: prompts and continuations are tuples of ints, and text is
only decoded for display and text-based rewards.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Protocol, runtime_checkable

# "constraint": the constraint admitted no token after the text so far (the mask let no
# probability through): the segment has weight zero.
FINISH_REASONS = ("eos", "stop", "length", "constraint")


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class Truncation:
    """What a request's ``top_k``, ``top_p`` and ``min_p`` fields do to its distribution."""

    @property
    def truncated(self) -> bool:
        """Whether top-k, top-p or min-p changes the distribution."""
        return self.top_k > 0 or self.top_p < 1.0 or self.min_p > 0.0

    def sampling(self) -> dict:
        """The truncation settings, as ``ppl.constraints.truncate`` takes them."""
        return {"top_k": self.top_k, "top_p": self.top_p, "min_p": self.min_p}


@dataclass(frozen=True)
class GenRequest(Truncation):
    """Sample ``n`` continuations of ``prompt`` (token ids).

    Generation stops at the end-of-sequence token, after the first stop string appears in
    the decoded continuation, or after ``max_tokens`` tokens. ``temperature == 0`` is
    greedy decoding. ``group`` names requests that share a prompt prefix (the scheduler sets
    it to the problem's id) so an engine with several servers can keep them together.

    ``top_k`` / ``top_p`` / ``min_p`` truncate each next-token distribution as vLLM does
    (``ppl.constraints.truncate``; 0, 1, 0 are off): they are part of the distribution
    sampled. ``constraint`` (a ``ppl.constraints.Constraint``) restricts the tokens to those
    after which the text can still be completed in its language: the segment is sampled
    from that masked distribution, and the backend reports the mass the mask allowed in
    ``Segment.allowed_logmass`` when it can.
    """

    prompt: tuple[int, ...]
    max_tokens: int
    stop: tuple[str, ...] = ()
    temperature: float = 1.0
    seed: int | None = None
    n: int = 1
    group: int | None = None
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    constraint: Any = None

    method: ClassVar[str] = "generate"

    def __post_init__(self):
        if not self._plainly_valid():
            self.check()

    def _plainly_valid(self) -> bool:
        """The common request — default sampling, no stop strings — recognised in one pass,
        since a site builds one per execution, replays included. Anything else goes through
        ``check``, which accepts everything this accepts (``tests/test_edge_cases.py``)."""
        return (
            type(self.max_tokens) is int
            and self.max_tokens >= 1
            and type(self.temperature) is float
            and 0.0 <= self.temperature < math.inf
            and type(self.n) is int
            and self.n == 1
            and self.stop == ()
            and type(self.top_k) is int
            and self.top_k == 0
            and type(self.top_p) is float
            and self.top_p == 1.0
            and type(self.min_p) is float
            and self.min_p == 0.0
        )

    def check(self) -> None:
        """Refuse settings that define no distribution, naming the setting."""
        if not _is_count(self.max_tokens) or self.max_tokens < 1:
            raise ValueError(
                f"max_tokens must be at least 1 (a whole number of tokens), got {self.max_tokens!r}"
            )
        if (
            isinstance(self.temperature, bool)
            or not isinstance(self.temperature, (int, float))
            or not (self.temperature >= 0 and math.isfinite(self.temperature))
        ):
            raise ValueError(f"temperature must be a finite number >= 0, got {self.temperature!r}")
        if not _is_count(self.n) or self.n < 1:
            raise ValueError(f"n must be at least 1 (a whole number), got {self.n!r}")
        if any(not s for s in self.stop):
            raise ValueError("stop strings must be non-empty")
        check_sampling(self.top_k, self.top_p, self.min_p)

    def parts(self) -> tuple[GenRequest, ...]:
        return (self,)

    def take(self, answers: list) -> Segment | tuple[Segment, ...]:
        """The site's answer: the segment generated for this request, or the tuple of its
        ``n`` segments when ``n > 1`` (one request, one prompt pass, ``n`` samples)."""
        return answers[0][0] if self.n == 1 else tuple(answers[0])

    def grouped(self, group: int) -> GenRequest:
        return self.dispatched(self.seed, group)

    def dispatched(self, seed: int | None, group: int | None) -> GenRequest:
        """This request with the engine seed and prefix group the scheduler gives it. Neither
        field is checked by ``__post_init__``, so the copy skips it (the scheduler makes one
        per particle and round)."""
        copy = object.__new__(GenRequest)
        copy.__dict__.update(self.__dict__)
        copy.__dict__["seed"], copy.__dict__["group"] = seed, group
        return copy

    def tokens(self, answer: list[Segment]) -> tuple[int, int]:
        """(prompt tokens, generated tokens) of one answered part, end-of-sequence included."""
        return len(self.prompt), sum(len(s) + s.eos for s in answer)


def check_sampling(top_k, top_p, min_p) -> None:
    """Refuse truncation settings that define no distribution."""
    if not _is_count(top_k) or top_k < 0:
        raise ValueError(f"top_k must be a whole number >= 0 (0 is off), got {top_k!r}")
    for name, value in (("top_p", top_p), ("min_p", min_p)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
            raise ValueError(f"{name} must be a number, got {value!r}")
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1] (1 is off), got {top_p!r}")
    if not 0.0 <= min_p <= 1.0:
        raise ValueError(f"min_p must be in [0, 1] (0 is off), got {min_p!r}")


@dataclass(frozen=True)
class Segment:
    """One generated LM segment: the value of a ``gen`` site.

    ``token_ids`` are the generated tokens without the end-of-sequence token; ``text`` is
    exactly their decoding (a stop string that ended the segment is included, as its tokens
    are). ``logprob`` is the log-probability of the whole segment — every token, plus the
    end-of-sequence token when ``finish_reason == "eos"`` — under the distribution that
    sampled it (the LM at the request's temperature).

    For a constrained request, that distribution is the masked one, and
    ``allowed_logmass`` is Σ over the sampled positions of log Σ_{v allowed} p(v | prefix)
    under the unmasked distribution (temperature and truncation included): ``logprob +
    allowed_logmass`` is the segment's log-probability under the LM itself. ``None`` when
    the backend cannot say (vLLM: the site then scores the segment); ``-inf`` when the
    mask let nothing through (``finish_reason == "constraint"``).
    """

    token_ids: tuple[int, ...]
    text: str
    finish_reason: str
    logprob: float
    token_logprobs: tuple[float, ...] = ()
    allowed_logmass: float | None = None

    @property
    def eos(self) -> bool:
        """True when the LM ended the sequence (it produced its end-of-sequence token)."""
        return self.finish_reason == "eos"

    def __len__(self) -> int:
        return len(self.token_ids)


@dataclass(frozen=True)
class ScoreRequest(Truncation):
    """Log-probability of ``continuation`` after ``prompt`` (plus end-of-sequence if ``eos``)."""

    prompt: tuple[int, ...]
    continuation: tuple[int, ...]
    eos: bool = False
    temperature: float = 1.0
    group: int | None = None
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0

    method: ClassVar[str] = "logprob"

    def __post_init__(self):
        check_sampling(self.top_k, self.top_p, self.min_p)

    def parts(self) -> tuple[ScoreRequest, ...]:
        return (self,)

    def take(self, answers: list) -> float:
        return answers[0]

    def grouped(self, group: int) -> ScoreRequest:
        return replace(self, group=group)

    def tokens(self, answer: float) -> tuple[int, int]:
        return len(self.prompt) + len(self.continuation) + self.eos, 0


@dataclass(frozen=True)
class ScoreBatch:
    """Several continuations scored for one site (``select``'s options), in one engine call.

    Its answer is the tuple of their log-probabilities, in order.
    """

    requests: tuple[ScoreRequest, ...]

    method: ClassVar[str] = "logprob"

    def parts(self) -> tuple[ScoreRequest, ...]:
        return self.requests

    def take(self, answers: list) -> tuple[float, ...]:
        return tuple(answers)

    def grouped(self, group: int) -> ScoreBatch:
        return ScoreBatch(tuple(r.grouped(group) for r in self.requests))


@dataclass(frozen=True)
class NextTokenRequest:
    """Log-probabilities of each of ``token_ids`` as the **next** token after ``prompt``,
    under the LM at temperature 1: the distribution of one position, read at a few tokens.

    Its answer is the tuple of those log-probabilities, in order. It equals
    ``ScoreRequest(prompt, (t,))`` for each ``t`` — but an engine can answer it with one
    forward pass that ends at the prompt (vLLM: a one-token generation that reports these
    tokens' log-probabilities, served by the prefix cache), instead of one scoring pass per
    token over ``prompt + (t,)``. An LM-as-judge's Yes/No verdict is one of these.
    """

    prompt: tuple[int, ...]
    token_ids: tuple[int, ...]
    group: int | None = None

    method: ClassVar[str] = "next_token_logprobs"

    def __post_init__(self):
        if not self.prompt:
            raise ValueError("a next-token request needs a non-empty prompt")
        if not self.token_ids or any(not _is_count(t) or t < 0 for t in self.token_ids):
            raise ValueError(
                f"a next-token request needs one or more token ids (integers >= 0), got {self.token_ids!r}"
            )

    def parts(self) -> tuple[NextTokenRequest, ...]:
        return (self,)

    def take(self, answers: list) -> tuple[float, ...]:
        return answers[0]

    def grouped(self, group: int) -> NextTokenRequest:
        return replace(self, group=group)

    def tokens(self, answer: tuple[float, ...]) -> tuple[int, int]:
        return len(self.prompt), 0


@dataclass(frozen=True)
class RewardRequest:
    """Arguments of one reward-model call; hashable so that rewards can be memoised."""

    args: tuple

    method: ClassVar[str] = "reward"

    def parts(self) -> tuple[RewardRequest, ...]:
        return (self,)

    def take(self, answers: list) -> Any:
        return answers[0]

    def grouped(self, group: int) -> RewardRequest:
        return self  # a reward is memoised by its arguments alone

    def tokens(self, answer: float) -> tuple[int, int]:
        return 0, 0


@dataclass(frozen=True)
class Batch:
    """Several requests of one engine method for one site; its answer is the list of theirs.

    What a ``Delegating`` model asks its inner model for."""

    method: str
    requests: tuple

    def parts(self) -> tuple:
        return self.requests

    def take(self, answers: list) -> list:
        return list(answers)

    def grouped(self, group: int) -> Batch:
        return Batch(self.method, tuple(r.grouped(group) for r in self.requests))


@dataclass(frozen=True)
class ToolRequest:
    """Arguments of one tool call (sandboxed code, a retrieval); hashable so tools can memoise.

    A tool answers with any value (text, a tuple of texts …), through its ``call`` method."""

    args: tuple

    method: ClassVar[str] = "call"

    def parts(self) -> tuple[ToolRequest, ...]:
        return (self,)

    def take(self, answers: list) -> Any:
        return answers[0]

    def grouped(self, group: int) -> ToolRequest:
        return self  # a tool call is memoised by its arguments alone

    def tokens(self, answer) -> tuple[int, int]:
        return 0, 0


def engine_method(request) -> str:
    """The name of the engine method that answers ``request``; ``TypeError`` for an unknown type."""
    method = getattr(request, "method", None)
    if not isinstance(method, str) or not hasattr(request, "parts") or not hasattr(request, "take"):
        raise TypeError(
            f"{type(request).__name__} is not a request an engine answers: a site may ask for a "
            "GenRequest, ScoreRequest, ScoreBatch, NextTokenRequest, RewardRequest or ToolRequest"
        )
    return method


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

    # Optional, too: a multi-turn chat prompt (the .tts ``lm.chat_turns([...])``):
    #
    #   def chat_turns(self, turns: Sequence[tuple[str, str]]) -> tuple[int, ...]:
    #       """Token ids of the chat template over (role, text) turns — "system", "user",
    #       "assistant" — ready for the assistant's next reply."""
    #
    # Optional — not part of the protocol's check, so a backend without it still is a
    # LanguageModel; callers test ``has_next_token_logprobs(lm)`` and fall back to
    # ``logprob`` (``ppl.backends.judge.Judge`` does):
    #
    #   def next_token_logprobs(self, requests: Sequence[NextTokenRequest]) -> list[tuple[float, ...]]:
    #       """One batched call: for each request, the log-probabilities of its token ids as
    #       the next token after its prompt, at temperature 1 (equal to scoring each token
    #       as a one-token continuation)."""


def has_next_token_logprobs(lm) -> bool:
    """Whether ``lm`` answers ``NextTokenRequest``s (the optional ``next_token_logprobs``)."""
    return callable(getattr(lm, "next_token_logprobs", None))


@runtime_checkable
class RewardModel(Protocol):
    """A reward model, verifier or judge: one float per request, batched."""

    name: str
    usage: Usage

    def reward(self, requests: Sequence[RewardRequest]) -> list[float]: ...


@runtime_checkable
class Tool(Protocol):
    """A tool a program calls (``ppl.tool``): sandboxed code, retrieval. Batched and memoised
    like a reward model; it never raises for one request — what went wrong is in that
    request's answer — and may offer ``check(args) -> str | None``, run in the particle, to
    refuse arguments it cannot take (that particle dies with the reason, the run goes on)."""

    name: str
    usage: Usage

    def call(self, requests: Sequence[ToolRequest]) -> list: ...


@runtime_checkable
class Streaming(Protocol):
    """A model that takes requests one by one while others run, and answers each as soon as
    it is done (vLLM's engine loop, concurrent HTTP requests). The scheduler submits a
    particle's request the moment the particle reaches its site and resumes the particle the
    moment the answer arrives; models without this answer each round in one batched call.
    """

    def streams(self, method: str) -> bool:
        """Whether requests for ``method`` ("generate", "logprob", …) may be streamed."""
        ...

    def submit(self, method: str, parts: Sequence) -> list:
        """Start the requests; one ticket (any hashable) per part, in order."""
        ...

    def poll(self) -> list[tuple[Any, Any]]:
        """Let the engine work until some requests are done (blocking); their ``(ticket,
        answer)`` pairs, each answer as ``method`` would have returned it for that part."""
        ...

    def in_flight(self) -> int:
        """How many submitted requests have not been answered by ``poll`` yet."""
        ...

    # Optional: ``abort(tickets)`` withdraws requests whose answers are no longer wanted (a
    # cancelled problem's); ``poll`` never returns them and ``in_flight`` stops counting them.
    # The scheduler calls it when a model has it, and otherwise drops those answers itself.
    # Optional: ``take_cached_tokens(ticket)`` gives (once) how many of an answered request's
    # prompt tokens the engine served from its prefix cache; the scheduler adds them to the
    # problem's ``Diagnostics.tokens_cached``.


@dataclass(frozen=True)
class Delegation:
    """How a ``Delegating`` model answers some requests: ``request`` (a ``Batch``, possibly
    empty) goes to ``model``, and ``combine`` turns its answers into one answer per
    original part."""

    model: Any
    request: Batch
    combine: Callable[[list], list]


@runtime_checkable
class Delegating(Protocol):
    """A model that answers some requests by asking another model — an LM-as-judge asks its
    LM for next-token log-probabilities. The scheduler sends the inner requests like a
    particle's own (streamed into a streaming engine the moment they are made, beside
    everyone's generations) instead of waiting for the round to drain and calling the
    model once; answers pass through ``combine``. The values must equal the model's own
    batched method on the same parts."""

    def delegates(self, method: str) -> bool:
        """Whether requests for ``method`` are answered by delegation."""
        ...

    def delegate(self, method: str, parts: Sequence) -> Delegation:
        """The inner request for ``parts`` and how to combine its answers."""
        ...
