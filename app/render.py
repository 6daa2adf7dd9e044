"""``tts render``: the exact prompts of a program.

``every_prompt`` runs one particle of the program — a seeded direct run on the models the
file was loaded with (the tabular LM, or the chosen backend) — and keeps every request it
sends, in order: each ``gen``'s prompt and settings with what came back, each ``select``'s
options, each reward call's arguments (and, for an LM-as-judge, the judge's own prompt),
stopping where the particle would die. ``first_prompt`` stops the program at its first
site needing an engine and calls none (``tts render --first``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from ppl.backends.judge import Judge
from ppl.handlers import Message, Messenger, Weigher, only, seed

from .errors import UserError
from .records import jsonable


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


@dataclass(frozen=True)
class Request:
    """One request a particle sent, at step ``step``: the prompt (for ``gen`` and ``select``,
    or a judge's question), the settings, and what came back."""

    kind: str  # gen, select or reward
    step: int
    model: object
    prompt_ids: tuple[int, ...] | None
    prompt_text: str | None
    settings: dict
    answer: object


class _Died(BaseException):
    def __init__(self, reason: str):
        self.reason = reason


class Requests(Messenger):
    """Keeps every engine request of one direct run; stops it where its weight becomes zero."""

    def __init__(self):
        super().__init__()
        self.requests: list[Request] = []
        self.step = 0
        self.sites = 0
        self.weights = Weigher()

    def postprocess_message(self, msg: Message) -> None:
        if msg.kind == "barrier":
            self.step += 1
            self.weights.twist = 0.0
        elif msg.kind == "gen":
            lm, request = msg.args["lm"], msg.args["request"]
            settings = {"max_tokens": request.max_tokens, "stop": list(request.stop)}
            settings["temperature"] = request.temperature
            if msg.args.get("proposal") is not None:
                settings["proposal"] = getattr(msg.args["proposal"], "name", "proposal")
            self.requests.append(
                Request("gen", self.step, lm, request.prompt, lm.decode(request.prompt), settings, msg.value)
            )
        elif msg.kind == "select":
            self.requests.append(
                Request(
                    "select",
                    self.step,
                    msg.args["lm"],
                    None,
                    None,
                    {"options": msg.args["options"]},
                    msg.value,
                )
            )
        elif msg.kind == "reward":
            model, args = msg.args["model"], msg.args["args"]
            ids = text = None
            if isinstance(model, Judge) and len(args) == 2:  # the judge's own question to its LM
                ids = model.prompt(str(args[0]), str(args[1]))
                text = model.lm.decode(ids)
            self.requests.append(
                Request("reward", self.step, model, ids, text, {"args": list(args)}, msg.value)
            )
        reason = self.weights.add(msg, self.sites)
        self.sites += 1
        if reason is not None:
            raise _Died(reason)


def every_prompt(program, inputs: dict, *, rng_seed: int = 0) -> tuple[list[Request], str | None]:
    """Run one particle of ``program`` on ``inputs`` (seeded by ``rng_seed``) and return every
    request it sent, and why it died (None if it finished)."""
    recorder = Requests()
    try:
        with only(seed(rng_seed=rng_seed), recorder):
            program(**inputs)
    except _Died as died:
        return recorder.requests, died.reason
    except Exception as error:  # the program raised: under an interpreter this particle would die
        return recorder.requests, f"{type(error).__name__}: {error}"
    return recorder.requests, None


def format_first(rendered: Rendered) -> str:
    """``first_prompt``'s result as ``tts render --first`` prints it."""
    stop = json.dumps(list(rendered.stop), ensure_ascii=False)
    out = [
        f"model: {_name(rendered.model)}",
        f"settings: max_tokens = {rendered.max_tokens}, stop = {stop}, temperature = {rendered.temperature}",
    ]
    _between_lines(out, "prompt text", rendered.prompt_ids, rendered.prompt_text)
    return "\n".join(out)


def _name(model) -> str:
    return str(getattr(model, "name", model))


def _between_lines(out: list[str], what: str, ids, text: str) -> None:
    out.append(f"{what} ({len(text)} characters), between the lines:")
    out += ["-" * 40, text, "-" * 40, f"token ids ({len(ids)}):", json.dumps(list(ids))]


def format_requests(requests: list[Request], died: str | None) -> str:
    """``every_prompt``'s result as ``tts render`` prints it."""
    out = []
    for number, r in enumerate(requests, 1):
        out.append(
            f"=== request {number} of {len(requests)}: {r.kind} at step {r.step}, model {_name(r.model)}"
        )
        if r.kind == "gen":
            settings = dict(r.settings)
            line = f"max_tokens = {settings.pop('max_tokens')}, stop = {json.dumps(settings.pop('stop'), ensure_ascii=False)}"
            line += "".join(f", {k} = {v}" for k, v in settings.items())
            out.append(f"settings: {line}")
            _between_lines(out, "prompt text", r.prompt_ids, r.prompt_text)
            segments = (
                r.answer if isinstance(r.answer, tuple | list) else (r.answer,)
            )  # gen(n = k): k of them
            for i, segment in enumerate(segments, 1):
                which = f"sample {i} of {len(segments)}, " if len(segments) > 1 else ""
                out.append(
                    f"generated ({which}{len(segment.token_ids)} tokens, finish {segment.finish_reason}): "
                    + json.dumps(segment.text, ensure_ascii=False)
                )
        elif r.kind == "select":
            out.append(f"options: {json.dumps(r.settings['options'], ensure_ascii=False)}")
            out.append(f"chosen: {json.dumps(r.answer, ensure_ascii=False)}")
        else:
            out.append(f"arguments: {json.dumps(jsonable(r.settings['args']), ensure_ascii=False)}")
            if r.prompt_ids is not None:
                _between_lines(out, "judge prompt text", r.prompt_ids, r.prompt_text)
            out.append(f"value: {r.answer}")
    if not requests:
        out.append("the program sends no request to any engine")
    out.append(f"the particle died here: {died}" if died else "the particle finished")
    return "\n".join(out)
