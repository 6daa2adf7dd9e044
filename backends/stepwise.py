"""Continuous batching over any batched LM: the ``Streaming`` interface, step by step.

``Stepwise(lm)`` takes requests one by one (``submit``) and answers them as a continuous-
batching engine would: each ``poll`` is one engine step in which every request in flight
advances by one token (at most ``max_num_seqs`` of them, first come first served), and a
request is answered at the step its last token is produced — so short segments come back
before long ones, and requests submitted later join the running batch. The tokens
themselves come from the wrapped LM, one batched call per step for the requests that
entered in it, so the answers are exactly the wrapped LM's (for a seeded request, its
output does not depend on when it ran).

It exists so the scheduler's streaming path runs on the exact tabular LM in the fast tier,
with vLLM's order of completion but no engine; ``occupancy`` records sequences per step.

    >>> from ppl.backends.tabular import TabularLM
    >>> from ppl.interfaces import GenRequest
    >>> lm = Stepwise(TabularLM.random(["a", "b"], order=1, seed=0))
    >>> tickets = lm.submit("generate", [GenRequest((0,), max_tokens=3, seed=1)])
    >>> done = []
    >>> while lm.in_flight():
    ...     done += lm.poll()
    >>> [t for t, _ in done] == tickets
    True
"""

from __future__ import annotations

from collections.abc import Sequence

from ppl.interfaces import GenRequest, Segment, has_next_token_logprobs


class Stepwise:
    """A streaming engine over ``lm`` (any ``LanguageModel``)."""

    def __init__(self, lm, *, max_num_seqs: int = 256):
        if isinstance(max_num_seqs, bool) or not isinstance(max_num_seqs, int) or max_num_seqs < 1:
            raise ValueError(f"max_num_seqs must be an integer >= 1, got {max_num_seqs!r}")
        self.lm = lm
        self.name = lm.name
        self.eos_token_id = lm.eos_token_id
        self.usage = lm.usage
        self.max_num_seqs = max_num_seqs
        self.steps = 0
        self.occupancy: list[int] = []  # sequences running at each step
        self._counter = 0
        self._waiting: list[tuple[int, str, object]] = []  # submitted, not yet running
        self._running: dict[int, list] = {}  # ticket → [answer, steps left]

    # --- the LanguageModel interface, answered by the wrapped LM at once ------------------

    def encode(self, text: str):
        return self.lm.encode(text)

    def decode(self, token_ids):
        return self.lm.decode(token_ids)

    def chat(self, *, user: str, system: str | None = None):
        return self.lm.chat(user=user, system=system)

    def generate(self, requests: Sequence[GenRequest]) -> list[list[Segment]]:
        return self.lm.generate(requests)

    def logprob(self, requests):
        return self.lm.logprob(requests)

    def __getattr__(self, name):  # support, next_logprobs … of the wrapped LM
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.lm, name)

    # --- streaming ----------------------------------------------------------------------------

    def streams(self, method: str) -> bool:
        """generate and logprob; next_token_logprobs too when the wrapped LM has it."""
        return method in ("generate", "logprob") or (
            method == "next_token_logprobs" and has_next_token_logprobs(self.lm)
        )

    def submit(self, method: str, parts: Sequence) -> list[int]:
        if not self.streams(method):
            raise ValueError(f"{self.name} does not stream {method!r} requests")
        tickets = []
        for part in parts:
            self._counter += 1
            self._waiting.append((self._counter, method, part))
            tickets.append(self._counter)
        return tickets

    def poll(self) -> list[tuple[int, object]]:
        """Run engine steps until some request is done; those requests' answers."""
        if not self._waiting and not self._running:
            return []
        while True:
            self._start_waiting()
            self.steps += 1
            self.occupancy.append(len(self._running))
            done = []
            for ticket, entry in list(self._running.items()):
                entry[1] -= 1
                if entry[1] <= 0:
                    done.append((ticket, entry[0]))
                    del self._running[ticket]
            if done:
                return done

    def in_flight(self) -> int:
        return len(self._waiting) + len(self._running)

    def abort(self, tickets: Sequence[int]) -> None:
        """Withdraw requests: they leave the waiting line or the running batch at once."""
        gone = set(tickets)
        self._waiting = [entry for entry in self._waiting if entry[0] not in gone]
        for ticket in gone:
            self._running.pop(ticket, None)

    def _start_waiting(self) -> None:
        """Requests enter the running batch while there is room; their answers are computed
        now by the wrapped LM (one call per method) and released when their time is up."""
        room = self.max_num_seqs - len(self._running)
        entering, self._waiting = self._waiting[:room], self._waiting[room:]
        for method in ("generate", "logprob", "next_token_logprobs"):
            batch = [(t, p) for t, m, p in entering if m == method]
            if not batch:
                continue
            answers = getattr(self.lm, method)([p for _, p in batch])
            for (ticket, _), answer in zip(batch, answers):
                length = max(len(s) + s.eos for s in answer) if method == "generate" else 1
                self._running[ticket] = [answer, max(1, length)]
