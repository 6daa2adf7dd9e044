"""The OpenAI wire format that ``tts serve`` speaks: request bodies as pydantic models.

A request names a program (``model``), gives its text input (the last user message, or
``prompt``) and may carry a ``ppl`` object (sent by the official client as ``extra_body``)
choosing the interpreter, its settings, the seed and the program's other inputs. The
OpenAI fields that steer an LM's sampling (``temperature``, ``max_tokens``, ``stop`` …)
are declared so they can be recognised: a program whose sampling is written in it does not
take them, so they are refused unless the program has an input of that name. Fields
nobody knows are refused by pydantic (``extra="forbid"``).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

# OpenAI fields that steer sampling or the reply's shape; given to a program input of the
# same name, else refused with a message (never silently ignored).
CHAT_SAMPLING = (
    "temperature", "top_p", "max_tokens", "max_completion_tokens", "stop", "presence_penalty",
    "frequency_penalty", "logit_bias", "logprobs", "top_logprobs", "response_format", "tools",
    "tool_choice", "parallel_tool_calls", "functions", "function_call", "audio", "modalities",
    "prediction", "reasoning_effort", "verbosity", "web_search_options", "service_tier", "store",
    "moderation", "prompt_cache_key", "prompt_cache_options", "prompt_cache_retention",
)  # fmt: skip
COMPLETION_SAMPLING = (
    "temperature", "top_p", "max_tokens", "stop", "presence_penalty", "frequency_penalty",
    "logit_bias", "logprobs", "best_of", "echo", "suffix",
)  # fmt: skip


class PplOptions(BaseModel):
    """The ``ppl`` object of a request: everything beyond the OpenAI fields.

    ``algorithm`` picks an interpreter of the registry (default: the file's ``infer``
    clause); every other unknown key is one of its settings (``particles``, ``ess`` …),
    validated by the registry as a ``.tts`` file's would be. ``inputs`` fill the program's
    other inputs; ``source`` is ``.tts`` text to run instead of a served file (only on a
    server started with ``--allow-source``); ``max_tokens`` caps the tokens generated over
    all particles; ``timeout`` (seconds) is at most the server's.
    """

    model_config = ConfigDict(extra="allow")

    algorithm: str | None = None
    seed: int | None = Field(default=None, ge=0)
    inputs: dict[str, Any] = Field(default_factory=dict)
    source: str | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    timeout: float | None = Field(default=None, gt=0)

    def settings(self) -> dict[str, Any]:
        """The interpreter settings: the keys that are not one of the fields above."""
        return dict(self.model_extra or {})


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_usage: bool = False
    include_obfuscation: bool | None = None


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["text"]
    text: str


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[TextPart] | None = None
    name: str | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str
    n: int = Field(default=1, ge=1, le=128)
    seed: int | None = Field(default=None, ge=0)
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    metadata: dict[str, str] | None = None
    safety_identifier: str | None = None
    ppl: PplOptions = Field(default_factory=PplOptions)

    SAMPLING: ClassVar[tuple[str, ...]] = ()

    def sampling(self) -> dict[str, Any]:
        """The sampling fields this request set (to become program inputs, or be refused)."""
        return {name: getattr(self, name) for name in self.SAMPLING if getattr(self, name) is not None}


class ChatRequest(_Request):
    """``POST /v1/chat/completions``."""

    messages: list[Message] = Field(min_length=1)
    SAMPLING: ClassVar[tuple[str, ...]] = CHAT_SAMPLING
    temperature: Any = None
    top_p: Any = None
    max_tokens: Any = None
    max_completion_tokens: Any = None
    stop: Any = None
    presence_penalty: Any = None
    frequency_penalty: Any = None
    logit_bias: Any = None
    logprobs: Any = None
    top_logprobs: Any = None
    response_format: Any = None
    tools: Any = None
    tool_choice: Any = None
    parallel_tool_calls: Any = None
    functions: Any = None
    function_call: Any = None
    audio: Any = None
    modalities: Any = None
    prediction: Any = None
    reasoning_effort: Any = None
    verbosity: Any = None
    web_search_options: Any = None
    service_tier: Any = None
    store: Any = None
    moderation: Any = None
    prompt_cache_key: Any = None
    prompt_cache_options: Any = None
    prompt_cache_retention: Any = None


class CompletionRequest(_Request):
    """``POST /v1/completions``."""

    prompt: str | list[str]
    SAMPLING: ClassVar[tuple[str, ...]] = COMPLETION_SAMPLING
    temperature: Any = None
    top_p: Any = None
    max_tokens: Any = None
    stop: Any = None
    presence_penalty: Any = None
    frequency_penalty: Any = None
    logit_bias: Any = None
    logprobs: Any = None
    best_of: Any = None
    echo: Any = None
    suffix: Any = None


def error_body(message: str, kind: str, code: str, param: str | None = None) -> dict:
    """An OpenAI-style error: ``{"error": {"message", "type", "param", "code"}}``."""
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}
