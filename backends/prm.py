"""Process reward models: one verdict per reasoning step, aggregated into one reward.

A process reward model (PRM) reads a problem and the steps of a solution so far and gives
each step t a probability r_t that it is correct. ``ProcessReward`` answers a reward request
``(problem, steps)`` with the **log** of an aggregate of r_1..r_T. It is batched (one scorer
call per round for all particles of all problems) and memoised per (problem, prefix): a PRM
reads causally, so r_t depends on steps 1..t only, and particles that share a prefix pay for
it once.

The aggregations, and the target each gives a program that twists by the reward at every
step and scores it at the end (``twist prm.log_reward(problem, steps)`` in the loop, then
``score prm.log_reward(problem, steps)``; docs/design.md §1)::

    aggregate  reward            target over solutions x = (x_1..x_T)
    prod       Σ_t log r_t       p(x) · Π_t r_t   every step right, steps judged independently
                                                  (the same as ``score log r_t`` at each step)
    min        min_t log r_t     p(x) · min_t r_t  a solution is as good as its weakest step
    last       log r_T           p(x) · r_T        the verdict on the last step, read as the
                                                  verdict on the whole solution so far
    whole      log r(x)          p(x) · r(x)       the prefix joined into one step and judged
                                                  once: the PRM used as an outcome reward model

With no steps yet the reward is 0 (log 1): nothing has been judged wrong. A step verdict of
exactly 0 gives -inf, which kills the particle: under the target it has weight zero.

Where the verdicts come from is a *scorer*: ``score(items, final_only) -> list[list[float]]``
gives log r_t for every step of every ``(problem, steps)`` item in one batched call — or,
with ``final_only`` (the ``last`` and ``whole`` aggregations), log r_T alone.

* ``FunctionSteps(fn)``: a programmatic step checker, ``fn(problem, steps) -> r`` for the
  last of ``steps`` (e.g. "does every equation in this step hold?").
* ``JudgeSteps(judge)``: an LM-as-judge (``ppl.backends.judge.Judge``) asked about each
  prefix; log r_t = log σ(judge logit). Runs on any backend, the tabular one included.
* ``ppl.backends.pooling.PoolingPRM``: a PRM served by vLLM's pooling runner — a trained
  PRM such as Qwen2.5-Math-PRM-7B, or any causal LM converted into a Yes/No step classifier.

    >>> from ppl.backends.judge import Judge
    >>> from ppl.backends.prm import JudgeSteps, ProcessReward
    >>> from ppl.interfaces import RewardRequest
    >>> from ppl.app.models import character_lm
    >>> prm = ProcessReward(JudgeSteps(Judge(character_lm("prm-doctest"), "Right?")), "prod")
    >>> two_steps, one_step = prm.reward(
    ...     [RewardRequest(("1+1?", ["1+1", "=2"])), RewardRequest(("1+1?", ["1+1"]))]
    ... )
    >>> two_steps < one_step < 0  # prod: each step's log verdict adds up
    True
    >>> prm.usage.calls, prm.scorer.usage.requests  # one call; the shared prefix judged once
    (1, 2)
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Protocol

from ppl.interfaces import RewardRequest, Usage

AGGREGATIONS = ("prod", "min", "last", "whole")
DEFAULT_QUESTION = "Is this step correct? Answer Yes or No."  # what an LM is asked about a step
STEP_JOIN = "\n\n"  # how steps are joined into one text (the ``whole`` aggregation, judges)

Item = tuple[str, tuple[str, ...]]  # (problem, steps)


class StepScorer(Protocol):
    """Where step verdicts come from: log r_t for every step of every (problem, steps) item."""

    name: str
    usage: Usage

    def score(self, items: Sequence[Item], final_only: bool = False) -> list[list[float]]: ...


def step_texts(steps) -> tuple[str, ...]:
    """The steps of a request as texts: a list of texts or segments, or one text or segment."""
    if isinstance(steps, (str, bytes)) or hasattr(steps, "token_ids"):
        steps = [steps]
    try:
        return tuple(s if isinstance(s, str) else s.text for s in steps)
    except (TypeError, AttributeError):
        raise TypeError(
            f"a process reward takes (problem, steps) with steps a list of texts or segments, "
            f"got {type(steps).__name__}"
        ) from None


def aggregate(log_verdicts: Sequence[float], how: str) -> float:
    """One log reward from the steps' log verdicts (see the module docstring for the targets)."""
    if how not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation {how!r}; the aggregations are {', '.join(AGGREGATIONS)}")
    if not log_verdicts:
        return 0.0
    if how == "prod":
        return math.fsum(log_verdicts)
    if how == "min":
        return min(log_verdicts)
    return log_verdicts[-1]


def log_sigmoid(x: float) -> float:
    """log σ(x), stable for large |x|."""
    return -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))


class ProcessReward:
    """A batched, memoised process reward: value = log aggregate of the steps' verdicts."""

    def __init__(self, scorer: StepScorer, aggregate: str = "prod", *, name: str | None = None):
        if aggregate not in AGGREGATIONS:
            raise ValueError(
                f"unknown aggregation {aggregate!r}; the aggregations are {', '.join(AGGREGATIONS)}"
            )
        self.scorer = scorer
        self.aggregate = aggregate
        self.name = name or f"prm({getattr(scorer, 'name', 'scorer')}, {aggregate})"
        self.usage = Usage()
        self._memo: dict[Item, float] = {}  # (problem, steps 1..t) -> log r_t

    def item(self, args: tuple) -> Item:
        """The (problem, steps) a request asks about; ``whole`` joins the steps into one."""
        if len(args) != 2:
            raise ValueError(f"{self.name} needs (problem, steps), got {len(args)} arguments")
        problem, steps = str(args[0]), step_texts(args[1])
        if self.aggregate == "whole" and steps:
            steps = (STEP_JOIN.join(s.strip() for s in steps),)
        return problem, steps

    def _needed(self, steps: tuple[str, ...]) -> range:
        """The prefix lengths whose verdicts the aggregate reads: all, or the last only (none
        for no steps)."""
        last = len(steps) + 1
        return range(1 if self.aggregate in ("prod", "min") else max(last - 1, 1), last)

    def _known(self, item: Item) -> bool:
        problem, steps = item
        return all((problem, steps[:t]) in self._memo for t in self._needed(steps))

    def reward(self, requests: Sequence[RewardRequest]) -> list[float]:
        started = time.perf_counter()
        items = [self.item(r.args) for r in requests]
        final_only = self.aggregate in ("last", "whole")
        new = self._to_score([i for i in dict.fromkeys(items) if i[1] and not self._known(i)], final_only)
        if new:
            verdicts = self.scorer.score(new, final_only)
            if len(verdicts) != len(new):
                raise RuntimeError(f"{self.scorer.name} answered {len(verdicts)} of {len(new)} items")
            for (problem, steps), logs in zip(new, verdicts):
                needed = self._needed(steps)
                if len(logs) != len(needed):
                    raise RuntimeError(f"{self.scorer.name} gave {len(logs)} verdicts for {len(steps)} steps")
                for t, value in zip(needed, logs):
                    if math.isnan(value):
                        raise ValueError(f"{self.scorer.name} gave NaN for step {t} of {problem!r}")
                    self._memo[(problem, steps[:t])] = float(value)
            self.usage.requests += len(new)
        self.usage.record_call(len(requests), started)
        return [self._value(i) for i in items]

    @staticmethod
    def _to_score(items: list[Item], final_only: bool) -> list[Item]:
        """The items to ask the scorer about: scoring all of a solution's steps also scores
        every prefix of it, so a prefix of another item in the batch is not asked twice."""
        if final_only:
            return items
        covered, kept = set(), []
        for problem, steps in sorted(items, key=lambda i: -len(i[1])):
            if (problem, steps) not in covered:
                kept.append((problem, steps))
                covered.update((problem, steps[:t]) for t in range(1, len(steps) + 1))
        return kept

    def _value(self, item: Item) -> float:
        problem, steps = item
        return aggregate([self._memo[(problem, steps[:t])] for t in self._needed(steps)], self.aggregate)

    def close(self) -> None:
        """Stop the scorer's engine, if it has one of its own."""
        close = getattr(self.scorer, "close", None)
        if callable(close):
            close()

    def __repr__(self) -> str:
        return f"ProcessReward({self.scorer!r}, aggregate={self.aggregate!r})"


class JudgeSteps:
    """Step verdicts from an LM-as-judge: r_t = σ(the judge's Yes/No log odds on steps 1..t).

    One batched judge call per ``score``, two continuations scored per prefix asked about;
    the judge memoises, so a prefix judged in an earlier round is not asked again."""

    def __init__(self, judge):
        self.judge = judge
        self.name = f"steps({judge.name})"
        self.usage = Usage()

    def score(self, items: Sequence[Item], final_only: bool = False) -> list[list[float]]:
        started = time.perf_counter()
        asked = [
            (problem, range(len(steps) if final_only else 1, len(steps) + 1), steps)
            for problem, steps in items
        ]
        requests = [
            RewardRequest((problem, STEP_JOIN.join(s.strip() for s in steps[:t])))
            for problem, ts, steps in asked
            for t in ts
        ]
        logits = iter(self.judge.reward(requests))
        out = [[log_sigmoid(next(logits)) for _ in ts] for _, ts, _ in asked]
        self.usage.requests += len(requests)
        self.usage.record_call(len(items), started)
        return out

    def __repr__(self) -> str:
        return f"JudgeSteps({self.judge!r})"


class FunctionSteps:
    """Step verdicts from a Python function: r_t = ``fn(problem, steps[:t])``, a probability.

    For trusted, programmatic step checks (they run in this process)."""

    def __init__(self, fn, name: str | None = None):
        if not callable(fn):
            raise TypeError("FunctionSteps needs a callable fn(problem, steps) -> probability")
        self.fn = fn
        self.name = name or getattr(fn, "__name__", "steps")
        self.usage = Usage()

    def score(self, items: Sequence[Item], final_only: bool = False) -> list[list[float]]:
        started = time.perf_counter()
        out = []
        for problem, steps in items:
            logs = []
            for t in range(len(steps) if final_only else 1, len(steps) + 1):
                r = float(self.fn(problem, steps[:t]))
                if not 0.0 <= r <= 1.0:
                    raise ValueError(f"{self.name} gave {r} for step {t} of {problem!r}: not a probability")
                logs.append(math.log(r) if r > 0 else -math.inf)
                self.usage.requests += 1
            out.append(logs)
        self.usage.record_call(len(items), started)
        return out
