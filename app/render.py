"""``tts render``: the exact first prompt of a program, found without calling any engine.

The program runs under a handler that stops it at its first site needing an engine (a
``gen``, ``select`` or reward call); a ``gen`` there is the prompt to show.
"""

from __future__ import annotations

from dataclasses import dataclass

from ppl.handlers import Message, Messenger, only, seed

from .errors import UserError


class _Stop(BaseException):
    """Control flow: rendering reached the site it stops at."""

    def __init__(self, msg: Message):
        self.msg = msg


class StopAtFirstEngineCall(Messenger):
    """Stops the program at its first site that would need an engine (gen, select, reward)."""

    def process_message(self, msg: Message) -> None:
        if msg.kind in ("gen", "select", "reward", "infer"):
            raise _Stop(msg)


@dataclass(frozen=True)
class Rendered:
    """What the first ``lm.gen`` of a program would send."""

    model: object
    prompt_ids: tuple[int, ...]
    prompt_text: str
    max_tokens: int
    stop: tuple[str, ...]
    temperature: float


def first_prompt(program, inputs: dict, *, rng_seed: int = 0) -> Rendered:
    """Run ``program`` up to its first ``gen`` and return that request, calling no engine.

    Random choices before it that need no engine (NumPyro distributions) are drawn with
    ``rng_seed``; a ``select`` or reward call before the first ``gen`` would need an engine,
    so it is a ``UserError``.
    """
    try:
        with only(seed(rng_seed=rng_seed), StopAtFirstEngineCall()):
            program(*inputs) if isinstance(inputs, tuple) else program(**inputs)
    except _Stop as stop:
        msg = stop.msg
        if msg.kind == "infer":  # a nested run first: its program's first prompt is the one sent
            return first_prompt(msg.args["program"], msg.args["problem"], rng_seed=rng_seed)
        if msg.kind != "gen":
            raise UserError(
                f"render stops at the first engine call, and the program's first one is a {msg.kind} "
                "before any lm.gen: nothing to show without calling the engine"
            ) from None
        lm, request = msg.args["lm"], msg.args["request"]
        return Rendered(
            lm,
            request.prompt,
            lm.decode(request.prompt),
            request.max_tokens,
            request.stop,
            request.temperature,
        )
    raise UserError("the program ends without calling lm.gen: there is no prompt to render")
