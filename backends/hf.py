"""What the real-engine backends share: a Hugging Face tokenizer, and turning an engine's
completion (token ids, sampled log-probabilities, finish and stop reasons) into a Segment."""

from __future__ import annotations

from collections.abc import Sequence

from ppl.interfaces import Segment


class HFTokenizer:
    """Tokenizer methods of a LanguageModel, on ``self.tokenizer`` (a transformers tokenizer)."""

    tokenizer = None

    @property
    def eos_token_id(self) -> int:
        return int(self.tokenizer.eos_token_id)

    def encode(self, text: str) -> tuple[int, ...]:
        return tuple(self.tokenizer.encode(text, add_special_tokens=False))

    def decode(self, token_ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(token_ids), skip_special_tokens=False)

    def chat(self, *, user: str, system: str | None = None) -> tuple[int, ...]:
        """The chat template applied to one user turn, ready for the assistant's reply.

        The template is rendered to text and encoded once (``apply_chat_template(tokenize=True)``
        returns a BatchEncoding in transformers 5)."""
        messages = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": user}
        ]
        return self.encode(
            self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        )

    def chat_turns(self, turns: Sequence[tuple[str, str]]) -> tuple[int, ...]:
        """The chat template over several ``(role, text)`` turns (system, user, assistant), ready
        for the assistant's next reply: the model's own template, so each model in a program
        formats a conversation its way."""
        messages = [{"role": role, "content": text} for role, text in turns]
        return self.encode(
            self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        )

    def segment(
        self,
        ids: Sequence[int],
        logprobs: Sequence[float],
        finish_reason: str,
        stop_reason,
        temperature: float,
    ) -> Segment:
        """A Segment from an engine's completion.

        vLLM reports "length", or "stop" with the stop string as ``stop_reason`` — or with
        no stop string when the end-of-sequence token ended it; that token stays in its
        token ids and is dropped here (``Segment.eos`` records it, its log-probability stays
        in the segment's). Greedy segments (temperature 0) are a point mass: log-probability 0.
        """
        ids = list(ids)
        if finish_reason == "length":
            reason = "length"
        elif isinstance(stop_reason, str):
            reason = "stop"
        else:
            reason = "eos"
            if ids and ids[-1] == self.eos_token_id:
                ids = ids[:-1]
        logprob = float(sum(logprobs)) if temperature > 0 else 0.0
        return Segment(tuple(ids), self.decode(ids), reason, logprob, tuple(float(x) for x in logprobs))
