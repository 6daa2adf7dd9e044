"""LM-as-judge: a reward model that asks a language model "Yes or No?" and reads its odds.

``Judge(lm, question)`` answers a reward request ``(problem, answer)`` with

    logit = log p_lm("Yes" | prompt) − log p_lm("No" | prompt),

where the prompt is the model's chat template with ``question`` as the system message and
the problem and answer as the user message. A batch of reward requests is **one** batched
``lm.logprob`` call (two continuations per request), memoised on the request's arguments
so particles that share a prefix pay once. ``sigmoid(logit)`` is the judge's probability of
Yes among {Yes, No}.

    >>> from ppl.backends.judge import Judge
    >>> from ppl.interfaces import RewardRequest
    >>> from ppl.app.models import character_lm
    >>> lm = character_lm("judge-doctest")
    >>> judge = Judge(lm, "Is this right?")
    >>> a, b = judge.reward([RewardRequest(("1+1", "2")), RewardRequest(("1+1", "2"))])
    >>> a == b, lm.usage.calls, judge.usage.requests
    (True, 1, 1)
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

from ppl.interfaces import RewardRequest, ScoreRequest, Usage


class Judge:
    """A batched, memoised LM-as-judge reward model (value: the log odds of Yes vs No)."""

    def __init__(self, lm, question: str, *, yes: str = "Yes", no: str = "No", name: str | None = None):
        self.lm = lm
        self.question = question
        self.name = name or f"judge({getattr(lm, 'name', 'lm')})"
        self.usage = Usage()
        self._yes, self._no = tuple(lm.encode(yes)), tuple(lm.encode(no))
        if not self._yes or not self._no:
            raise ValueError("the judge's Yes and No answers must be non-empty")
        self._memo: dict[tuple, float] = {}

    def prompt(self, problem: str, answer: str) -> tuple[int, ...]:
        """Token ids of the question put to the LM about ``answer`` to ``problem``."""
        return tuple(self.lm.chat(system=self.question, user=f"{problem}\n\n{answer}\n\nYes or No?"))

    def reward(self, requests: Sequence[RewardRequest]) -> list[float]:
        started = time.perf_counter()
        new = list(dict.fromkeys(r.args for r in requests if r.args not in self._memo))
        if new:
            scores = []
            for args in new:
                if len(args) != 2:
                    raise ValueError(f"{self.name} needs (problem, answer), got {len(args)} arguments")
                prompt = self.prompt(str(args[0]), str(args[1]))
                scores += [ScoreRequest(prompt, self._yes), ScoreRequest(prompt, self._no)]
            logprobs = self.lm.logprob(scores)
            for i, args in enumerate(new):
                yes, no = logprobs[2 * i], logprobs[2 * i + 1]
                if yes == no == -math.inf:
                    raise ValueError(f"{self.name}: the LM gives both Yes and No probability zero")
                self._memo[args] = yes - no
            self.usage.requests += len(new)
        self.usage.record_call(len(requests), started)
        return [self._memo[r.args] for r in requests]

    def __repr__(self) -> str:
        return f"Judge({self.lm!r}, question={self.question!r})"
