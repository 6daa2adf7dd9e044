"""LM-as-judge: a reward model that asks a language model "Yes or No?" and reads its odds.

``Judge(lm, question)`` answers a reward request ``(problem, answer)`` with

    logit = log p_lm("Yes" | prompt) − log p_lm("No" | prompt),

where the prompt is the model's chat template with ``question`` as the system message and
the problem and answer as the user message — in that order, so every judge prompt about
one problem starts with the same tokens (template, question, problem) and only the
particle's answer and the closing "Yes or No?" differ: an engine with a prefix cache
computes a problem's prefix once for all its particles. ``sigmoid(logit)`` is the judge's
probability of Yes among {Yes, No}.

How a verdict is read, per batch of reward requests (memoised on the request's arguments,
so particles that share an answer pay once):

* **one next-token request per item** when "Yes" and "No" are one token each and the LM
  has ``next_token_logprobs`` (``ppl.interfaces.NextTokenRequest``): one batched call, in
  which vLLM runs one prefix-cached, one-token request per item and reads both
  log-probabilities at the position after the prompt;
* otherwise **two scored continuations per item** (``lm.logprob``, one batched call): for
  multi-token answers, or an LM without next-token reads. On vLLM each is a
  ``prompt_logprobs`` pass over the whole prompt that bypasses the prefix cache.

Both give the same numbers (exactly on the tabular LM; to bf16 resolution on vLLM, where
the two are different forward passes). ``next_token=False`` forces the scoring path,
``True`` refuses to run without the one-request path.

    >>> from ppl.backends.judge import Judge
    >>> from ppl.interfaces import RewardRequest
    >>> from ppl.app.models import character_lm
    >>> from ppl.backends.tabular import TabularLM
    >>> words = ["Yes", "No", "Is this right?", "1+1", "2", "3", "\\n\\n", "Yes or No?"]
    >>> lm = TabularLM.random(words, order=3, seed=0)  # "Yes" and "No" are one token each
    >>> judge = Judge(lm, "Is this right?")
    >>> two, again, three = judge.reward([RewardRequest(("1+1", a)) for a in ("2", "2", "3")])
    >>> two == again != three, judge.next_token, lm.usage.calls, lm.usage.requests, judge.usage.requests
    (True, True, 1, 2, 2)
    >>> spelt = character_lm("judge-doctest")  # "Yes" is three characters: two scored continuations
    >>> Judge(spelt, "Is this right?").reward([RewardRequest(("1+1", "2"))]) and None
    >>> spelt.usage.calls, spelt.usage.requests
    (1, 2)
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

from ppl.interfaces import (
    Batch,
    Delegation,
    NextTokenRequest,
    RewardRequest,
    ScoreRequest,
    Usage,
    has_next_token_logprobs,
)


class Judge:
    """A batched, memoised LM-as-judge reward model (value: the log odds of Yes vs No)."""

    def __init__(
        self,
        lm,
        question: str,
        *,
        yes: str = "Yes",
        no: str = "No",
        name: str | None = None,
        next_token: bool | None = None,
    ):
        self.lm = lm
        self.question = question
        self.name = name or f"judge({getattr(lm, 'name', 'lm')})"
        self.usage = Usage()
        self._yes, self._no = tuple(lm.encode(yes)), tuple(lm.encode(no))
        if not self._yes or not self._no:
            raise ValueError("the judge's Yes and No answers must be non-empty")
        if self._yes == self._no:
            raise ValueError(f"the judge's Yes and No answers encode to the same tokens ({yes!r}, {no!r})")
        possible = len(self._yes) == len(self._no) == 1 and has_next_token_logprobs(lm)
        if next_token and not possible:
            why = (
                f"{getattr(lm, 'name', 'the LM')} has no next_token_logprobs"
                if not has_next_token_logprobs(lm)
                else f"Yes and No must be one token each (they are {len(self._yes)} and {len(self._no)})"
            )
            raise ValueError(f"{self.name}: one-request verdicts need next-token reads: {why}")
        self.next_token = possible if next_token is None else bool(next_token)
        self._memo: dict[tuple, float] = {}

    def prompt(self, problem: str, answer: str) -> tuple[int, ...]:
        """Token ids of the question put to the LM about ``answer`` to ``problem``: the
        question (system message) and the problem first, shared by every answer to it."""
        return tuple(self.lm.chat(system=self.question, user=f"{problem}\n\n{answer}\n\nYes or No?"))

    def reward(self, requests: Sequence[RewardRequest]) -> list[float]:
        started = time.perf_counter()
        new = list(dict.fromkeys(r.args for r in requests if r.args not in self._memo))
        if new:
            for args in new:
                self._check(args)
            prompts = [self.prompt(str(problem), str(answer)) for problem, answer in new]
            for args, (yes, no) in zip(new, self._verdicts(prompts)):
                self._memo[args] = self._logit(yes, no)
            self.usage.requests += len(new)
        self.usage.record_call(len(requests), started)
        return [self._memo[r.args] for r in requests]

    # --- delegation: the verdicts as next-token requests the scheduler streams (ppl.interfaces.Delegating)

    def delegates(self, method: str) -> bool:
        return method == "reward" and self.next_token

    def delegate(self, method: str, parts: Sequence[RewardRequest]) -> Delegation:
        """One next-token request to the LM per item not yet memoised (the same values as
        ``reward``); the scheduler streams them into the engine with everyone's generations."""
        if not self.delegates(method):
            raise ValueError(f"{self.name} delegates next-token reward verdicts only, not {method!r}")
        started = time.perf_counter()
        new = list(dict.fromkeys(r.args for r in parts if r.args not in self._memo))
        for args in new:
            self._check(args)
        pair = (self._yes[0], self._no[0])
        asked = tuple(NextTokenRequest(self.prompt(str(p), str(a)), pair) for p, a in new)

        def combine(answers: list) -> list[float]:
            if len(answers) != len(asked) or any(len(a) != 2 for a in answers):
                raise RuntimeError(f"{self.name}: the LM answered {len(answers)} of {len(asked)} verdicts")
            for args, (yes, no) in zip(new, answers):
                self._memo[args] = self._logit(yes, no)
            self.usage.requests += len(new)
            self.usage.record_call(len(parts), started)
            return [self._memo[r.args] for r in parts]

        return Delegation(self.lm, Batch("next_token_logprobs", asked), combine)

    def _check(self, args: tuple) -> None:
        if len(args) != 2:
            raise ValueError(f"{self.name} needs (problem, answer), got {len(args)} arguments")

    def _logit(self, yes: float, no: float) -> float:
        if yes == no == -math.inf:
            raise ValueError(f"{self.name}: the LM gives both Yes and No probability zero")
        return yes - no

    def _verdicts(self, prompts: list[tuple[int, ...]]) -> list[tuple[float, float]]:
        """(log p(Yes), log p(No)) for each prompt, in one batched LM call."""
        if self.next_token:
            pair = (self._yes[0], self._no[0])
            answers = self.lm.next_token_logprobs([NextTokenRequest(p, pair) for p in prompts])
            if len(answers) != len(prompts) or any(len(a) != 2 for a in answers):
                raise RuntimeError(f"{self.name}: the LM answered {len(answers)} of {len(prompts)} verdicts")
            return [(a[0], a[1]) for a in answers]
        scores = [ScoreRequest(p, c) for p in prompts for c in (self._yes, self._no)]
        logprobs = self.lm.logprob(scores)
        return [(logprobs[2 * i], logprobs[2 * i + 1]) for i in range(len(prompts))]

    def __repr__(self) -> str:
        return f"Judge({self.lm!r}, question={self.question!r})"
