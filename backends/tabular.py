"""An exact tiny language model: next-token log-probabilities looked up in a table.

The table maps a context — the last ``order`` tokens (fewer at the start of a sequence) —
to logits over the vocabulary plus the end-of-sequence token (id ``len(vocab)``). It is a
real LM behind the same interface as the vLLM backend (batched ``generate`` with stop
strings, max tokens, temperature, top-k/top-p/min-p, constraints (exact masks, with the
allowed mass reported in ``Segment.allowed_logmass``), seeds and ``n``; ``logprob`` of continuations and
``next_token_logprobs``; a tokenizer; usage counters) and, being small, it can also list
the exact support of a generation request — which is what makes exact enumeration of
programs possible.

    >>> from ppl.backends.tabular import TabularLM
    >>> from ppl.interfaces import GenRequest
    >>> lm = TabularLM.random([" the", " cat", " sat", "."], order=2, seed=0)
    >>> segment = lm.generate([GenRequest(lm.encode(" the"), max_tokens=5, stop=("."), seed=3)])[0][0]
    >>> segment.finish_reason in ("eos", "stop", "length"), segment.text == lm.decode(segment.token_ids)
    (True, True)
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Mapping, Sequence

import numpy as np

from ppl.constraints import Masker, log_mass, truncate
from ppl.interfaces import GenRequest, NextTokenRequest, RewardRequest, ScoreRequest, Segment, Usage
from ppl.posterior import logsumexp
from ppl.randomness import Randomness, SeededRandomness, categorical

EOS_TEXT = "<eos>"


class TabularLM:
    """A table of next-token distributions over a small vocabulary with EOS."""

    def __init__(
        self,
        vocab: Sequence[str],
        table: Mapping[tuple[int, ...], Sequence[float]],
        *,
        order: int,
        name: str = "tabular",
        randomness: Randomness | None = None,
    ):
        vocab = list(vocab)
        if not vocab or any(not isinstance(t, str) or not t for t in vocab) or len(set(vocab)) != len(vocab):
            raise ValueError("vocab must be a non-empty list of distinct non-empty strings")
        if not isinstance(order, int) or order < 0:
            raise ValueError(f"order must be an integer >= 0, got {order!r}")
        self.vocab = vocab
        self.eos_token_id = len(vocab)
        self.order = order
        self.name = name
        self.randomness = randomness
        self.usage = Usage()
        self._table: dict[tuple[int, ...], np.ndarray] = {}
        for context, logits in table.items():
            logits = np.asarray(logits, dtype=np.float64)
            if logits.shape != (len(vocab) + 1,):
                raise ValueError(
                    f"logits for context {context} must have {len(vocab) + 1} entries (vocab + EOS)"
                )
            if not np.any(np.isfinite(logits)) or np.any(np.isnan(logits)) or np.any(logits == np.inf):
                raise ValueError(f"logits for context {context} must be finite or -inf, with one finite")
            self._table[tuple(int(t) for t in context)] = logits - logsumexp(logits)
        self._by_length = sorted(vocab, key=len, reverse=True)
        self._shared: dict = {}  # the masker, shared with ``with_randomness`` twins

    @classmethod
    def random(
        cls, vocab: Sequence[str], *, order: int, seed: int, scale: float = 3.0, name: str = "tabular"
    ) -> TabularLM:
        """Logits uniform in [-scale, scale] for every context of length <= ``order``."""
        generator = np.random.default_rng(seed)
        size = len(vocab)
        table = {
            context: generator.uniform(-scale, scale, size + 1)
            for length in range(order + 1)
            for context in itertools.product(range(size), repeat=length)
        }
        return cls(vocab, table, order=order, name=name)

    @classmethod
    def bigram(cls, counts: Mapping[str, Mapping[str, float]], *, name: str = "bigram") -> TabularLM:
        """A word-level bigram LM from next-word counts; ``"<s>"`` is the start, ``"<eos>"`` the end.

        >>> lm = TabularLM.bigram({"<s>": {"hi": 1}, "hi": {"hi": 1, "<eos>": 3}})
        >>> [round(float(p), 2) for p in np.exp(lm.next_logprobs(lm.encode("hi")))]
        [0.25, 0.75]
        """
        vocab = sorted({w for row in counts.values() for w in row if w != EOS_TEXT} | (set(counts) - {"<s>"}))
        index = {w: i for i, w in enumerate(vocab)}
        table = {}
        for word, row in counts.items():
            logits = np.full(len(vocab) + 1, -np.inf)
            for following, count in row.items():
                if count < 0:
                    raise ValueError(f"bigram counts must be >= 0, got {count} for {word!r} -> {following!r}")
                logits[len(vocab) if following == EOS_TEXT else index[following]] = (
                    math.log(count) if count else -np.inf
                )
            table[() if word == "<s>" else (index[word],)] = logits
        missing = [w for w in vocab if (index[w],) not in table]
        if "<s>" not in counts or missing:
            raise ValueError(
                f"bigram counts need a row for '<s>' and for every word; missing: {missing or ['<s>']}"
            )
        return cls(vocab, table, order=1, name=name)

    def with_randomness(self, randomness: Randomness) -> TabularLM:
        """The same LM drawing through ``randomness`` (e.g. exhaustive enumeration) instead of seeds."""
        twin = TabularLM.__new__(TabularLM)
        twin.__dict__.update(self.__dict__)
        twin.randomness, twin.usage = randomness, Usage()
        return twin

    # --- the model ----------------------------------------------------------------------

    def next_logprobs(
        self,
        context: Sequence[int],
        temperature: float = 1.0,
        *,
        top_k: int = 0,
        top_p: float = 1.0,
        min_p: float = 0.0,
    ) -> np.ndarray:
        """Log-probabilities of the next token (EOS last) at ``temperature`` (0 = greedy),
        truncated by ``top_k`` / ``top_p`` / ``min_p`` as vLLM samples (``truncate``)."""
        key = tuple(context[max(0, len(context) - self.order) :]) if self.order else ()
        try:
            logits = self._table[key]
        except KeyError:
            raise KeyError(f"{self.name}: no next-token distribution for context {key}") from None
        if temperature == 0:
            greedy = np.full_like(logits, -np.inf)
            greedy[int(np.argmax(logits))] = 0.0
            return greedy
        tempered = logits / temperature
        return truncate(tempered - logsumexp(tempered), top_k=top_k, top_p=top_p, min_p=min_p)

    def check_request(self, request: GenRequest) -> str | None:
        """Every request can be sampled exactly here: constraints, truncation, temperature."""
        return None

    def masker(self) -> Masker:
        """Token masks of constraints over this vocabulary (built on first use)."""
        if "masker" not in self._shared:
            self._shared["masker"] = Masker(self.vocab, self.eos_token_id)
        return self._shared["masker"]

    def _step(self, request: GenRequest, tokens: Sequence[int]) -> tuple[np.ndarray, float | None]:
        """The distribution the next token is drawn from after ``tokens``, and for a
        constrained request the log of the mass its mask allowed (the distribution is then
        the LM restricted to the allowed tokens, renormalised; None when nothing is allowed)."""
        logprobs = self.next_logprobs(
            request.prompt + tuple(tokens), request.temperature, **request.sampling()
        )
        if request.constraint is None:
            return logprobs, None
        matcher = self.masker().matcher(request.constraint, tokens)
        allowed = self.masker().allowed(matcher)
        mass = log_mass(logprobs, allowed)
        if mass == -math.inf:
            return None, mass
        return np.where(allowed, logprobs - mass, -np.inf), mass

    # --- tokenizer ----------------------------------------------------------------------

    def encode(self, text: str) -> tuple[int, ...]:
        """Greedy longest-match tokenisation; text outside the vocabulary is an error."""
        ids, position = [], 0
        while position < len(text):
            for token in self._by_length:
                if text.startswith(token, position):
                    ids.append(self.vocab.index(token))
                    position += len(token)
                    break
            else:
                raise ValueError(
                    f"{self.name}: cannot tokenise {text[position:]!r} with vocabulary {self.vocab}"
                )
        return tuple(ids)

    def decode(self, token_ids: Sequence[int]) -> str:
        return "".join(EOS_TEXT if t == self.eos_token_id else self.vocab[t] for t in token_ids)

    def chat(self, *, user: str, system: str | None = None) -> tuple[int, ...]:
        """The tabular LM has no roles: the chat prompt is the system text then the user text."""
        return self.encode((system or "") + user)

    def chat_turns(self, turns: Sequence[tuple[str, str]]) -> tuple[int, ...]:
        """No roles either: the turns' texts one after the other."""
        return self.encode("".join(text for _, text in turns))

    # --- batched calls ------------------------------------------------------------------

    def generate(self, requests: Sequence[GenRequest]) -> list[list[Segment]]:
        started = time.perf_counter()
        out = []
        for request in requests:
            segments = []
            for i in range(request.n):
                seed = request.seed if request.seed is not None else _fresh_seed()
                rng = self.randomness or SeededRandomness(seed, i)
                segments.append(self._sample(request, rng))
            out.append(segments)
            self.usage.requests += 1
            self.usage.prompt_tokens += len(request.prompt) * request.n
            self.usage.generated_tokens += sum(len(s) + s.eos for s in segments)
        self._count_call(len(requests), started)
        return out

    def _sample(self, request: GenRequest, rng: Randomness) -> Segment:
        tokens: list[int] = []
        logprobs: list[float] = []
        masses: list[float] = []
        while True:
            next_logprobs, mass = self._step(request, tokens)
            if mass is not None:
                masses.append(mass)
            if next_logprobs is None:
                return self._segment(tokens, "constraint", logprobs, masses, request)
            token = categorical(rng, next_logprobs)
            logprobs.append(float(next_logprobs[token]))
            finish = self._finish_reason(request, tokens, token)
            if token != self.eos_token_id:
                tokens.append(token)
            if finish:
                return self._segment(tokens, finish, logprobs, masses, request)

    def _finish_reason(self, request: GenRequest, tokens: list[int], token: int) -> str | None:
        """Why generation ends after ``token`` is drawn (``tokens`` excludes it), or None."""
        if token == self.eos_token_id:
            return "eos"
        text = self.decode(tokens + [token])
        if any(stop in text for stop in request.stop):
            return "stop"
        if len(tokens) + 1 >= request.max_tokens:
            return "length"
        return None

    def _segment(
        self, tokens: list[int], finish: str, logprobs: list[float], masses: list[float], request: GenRequest
    ) -> Segment:
        allowed = float(sum(masses)) if request.constraint is not None else None
        return Segment(
            tuple(tokens), self.decode(tokens), finish, float(sum(logprobs)), tuple(logprobs), allowed
        )

    def support(self, request: GenRequest) -> list[Segment]:
        """Every segment ``request`` can produce, each with its exact log-probability."""
        segments = []

        def extend(tokens: list[int], logprobs: list[float], masses: list[float]):
            next_logprobs, mass = self._step(request, tokens)
            masses = masses if mass is None else masses + [mass]
            if next_logprobs is None:
                segments.append(self._segment(tokens, "constraint", logprobs, masses, request))
                return
            for token in np.flatnonzero(np.isfinite(next_logprobs)):
                token = int(token)
                branch = logprobs + [float(next_logprobs[token])]
                finish = self._finish_reason(request, tokens, token)
                grown = tokens + [token] if token != self.eos_token_id else tokens
                if finish:
                    segments.append(self._segment(grown, finish, branch, masses, request))
                else:
                    extend(grown, branch, masses)

        extend([], [], [])
        return segments

    def logprob(self, requests: Sequence[ScoreRequest]) -> list[float]:
        started = time.perf_counter()
        out = []
        for request in requests:
            context, total = tuple(request.prompt), 0.0
            for token in tuple(request.continuation) + ((self.eos_token_id,) if request.eos else ()):
                total += float(self.next_logprobs(context, request.temperature, **request.sampling())[token])
                context += (token,)
            out.append(total)
            self.usage.requests += 1
            self.usage.prompt_tokens += len(request.prompt) + len(request.continuation)
        self._count_call(len(requests), started)
        return out

    def next_token_logprobs(self, requests: Sequence[NextTokenRequest]) -> list[tuple[float, ...]]:
        """For each request, the exact log-probabilities of its token ids as the next token
        after its prompt (temperature 1): the same numbers ``logprob`` gives for them as
        one-token continuations."""
        started = time.perf_counter()
        out = []
        for request in requests:
            bad = [t for t in request.token_ids if t > self.eos_token_id]
            if bad:
                raise ValueError(
                    f"{self.name}: token ids {bad} are outside the vocabulary (ids 0..{self.eos_token_id})"
                )
            next_logprobs = self.next_logprobs(request.prompt, 1.0)
            out.append(tuple(float(next_logprobs[t]) for t in request.token_ids))
            self.usage.requests += 1
            self.usage.prompt_tokens += len(request.prompt)
        self._count_call(len(requests), started)
        return out

    def _count_call(self, size: int, started: float) -> None:
        self.usage.record_call(size, started)

    def __repr__(self) -> str:
        return f"TabularLM(name={self.name!r}, vocab={self.vocab}, order={self.order})"


def _fresh_seed() -> int:
    """A seed from the operating system's entropy, for requests that carry none."""
    return int(np.random.SeedSequence().generate_state(1)[0])


class TabularJudge:
    """The tabular world's LM-as-judge: a verdict that depends on the text it judges.

    On a tabular LM the real ``Judge`` (``ppl.backends.judge``) reads p(Yes) after a prompt
    that always ends in the same words, and a table of small order sees only those words:
    every verdict is the same, weights stay uniform and nothing resamples. This judge asks
    instead how *typical* the answer is for the LM right after the problem: over its n
    tokens, how much likelier each was than the LM's average at that point (its entropy),

        logit = Σ_i (log p(a_i | problem, a_<i) + H(p(· | problem, a_<i))) / √n,

    which is 0 on average for text the LM writes itself, positive for text more predictable
    than that, negative for less (and 0 for an empty answer). Dividing by √n keeps its spread
    near one nat whatever the length. Exact, memoised per (problem, answer), one batch per
    call; the ``tts`` tabular backend gives it to ``judge(...)`` and ``prm(model = ...)`` on
    character-level LMs, so offline runs of the examples resample and rank.

        >>> lm = TabularLM.random(list("abc"), order=1, seed=3)
        >>> judge = TabularJudge(lm, "Is this right?")
        >>> a, b, again = judge.reward([RewardRequest(("ab", t)) for t in ("aaaa", "bbbb", "aaaa")])
        >>> a == again != b, judge.usage.requests, judge.reward([RewardRequest(("ab", ""))])
        (True, 2, [0.0])
    """

    def __init__(self, lm: TabularLM, question: str, *, name: str | None = None):
        self.lm = lm
        self.question = question
        self.name = name or f"judge({lm.name})"
        self.usage = Usage()
        self._memo: dict[tuple, float] = {}

    def verdict(self, problem: str, answer: str) -> float:
        """The log odds for one (problem, answer) pair, computed exactly from the table."""
        prompt, tokens = tuple(self.lm.encode(problem)), tuple(self.lm.encode(answer))
        if not tokens:
            return 0.0
        context, total = prompt + tokens, 0.0
        for i, token in enumerate(tokens):
            logprobs = self.lm.next_logprobs(context[: len(prompt) + i], 1.0)
            finite = np.isfinite(logprobs)
            entropy = -float(np.sum(np.exp(logprobs[finite]) * logprobs[finite]))
            total += float(logprobs[token]) + entropy
        return total / math.sqrt(len(tokens))

    def reward(self, requests: Sequence[RewardRequest]) -> list[float]:
        started = time.perf_counter()
        new = list(dict.fromkeys(r.args for r in requests if r.args not in self._memo))
        for args in new:
            if len(args) != 2:
                raise ValueError(f"{self.name} needs (problem, answer), got {len(args)} arguments")
            self._memo[args] = self.verdict(str(args[0]), str(args[1]))
        self.usage.requests += len(new)
        self.usage.record_call(len(requests), started)
        return [self._memo[r.args] for r in requests]

    def __repr__(self) -> str:
        return f"TabularJudge({self.lm!r}, question={self.question!r})"
