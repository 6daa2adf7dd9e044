"""The model registry: ``load_model("smollm2-135m-instruct", backend="tabular")`` → a LanguageModel.

A ``.tts`` file names its models (``use lm = model("...")``) and the command line picks the
backend; this module turns the pair into an engine. The registry is built fresh by
``backends()`` on every call: there is no module-level state to configure or leak.

Backends:

* ``tabular`` (available): exact tiny LMs. A few named demo LMs (the word-level bigram LMs
  of the examples), and for every other name a **character-level** LM over printable ASCII
  and newline — a random order-1 table seeded from a stable hash of the name — so that any
  prompt can be tokenised and every ``.tts`` file runs end to end without a real model.
* ``vllm``: the vLLM offline engine (``ppl.backends.vllm.VLLM``); a name is an embedded
  model (``smollm2-135m-instruct``, prepared on first use) or a Hugging Face folder.
  Options are engine settings (``max_model_len``, ``gpu_memory_utilization`` …).
* ``openai``: OpenAI-compatible servers (``ppl.backends.openai.OpenAICompatible``); the
  option ``servers`` lists their URLs, and the name gives the tokenizer (an embedded model
  or a Hugging Face folder).

Loading a model starts no engine; adding a backend is adding a ``Backend`` to ``backends()``.
"""

from __future__ import annotations

import hashlib
import string
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ppl.backends.embedded import EMBEDDED, embedded
from ppl.backends.judge import Judge
from ppl.backends.openai import OpenAICompatible
from ppl.backends.pooling import PoolingPRM
from ppl.backends.prm import AGGREGATIONS as PRM_AGGREGATIONS
from ppl.backends.prm import DEFAULT_QUESTION, JudgeSteps, ProcessReward
from ppl.backends.tabular import TabularJudge, TabularLM
from ppl.backends.vllm import INSTALL_HINT, VLLM, import_vllm
from ppl.errors import PPLError

DEFAULT_MODEL = "smollm2-135m-instruct"
CHARACTERS = tuple(c for c in string.printable if c.isprintable()) + ("\n",)  # printable ASCII + newline
REPLACEMENT = "?"  # what the character LM reads for a character outside its vocabulary


class BackendError(PPLError):
    """A backend that does not exist, or is not available in this installation."""


@dataclass(frozen=True)
class Backend:
    """How to get a model by name from one kind of engine."""

    name: str
    load: Callable[..., object]

    def model(self, name: str, **options):
        return self.load(name, **options)


def backends() -> dict[str, Backend]:
    """A fresh registry of the backends ppl knows, by name."""
    return {
        "tabular": Backend("tabular", tabular_model),
        "vllm": Backend("vllm", vllm_model),
        "openai": Backend("openai", openai_model),
    }


def backend_names() -> frozenset[str]:
    """The names of the backends (what ``--backend`` and ``model(backend = ...)`` accept)."""
    return frozenset(backends())


def load_model(name: str = DEFAULT_MODEL, backend: str = "tabular", **options):
    """The language model ``name`` on ``backend``; ``BackendError`` if that cannot be."""
    registry = backends()
    if backend not in registry:
        raise BackendError(f"unknown backend '{backend}'; the backends are {', '.join(sorted(registry))}")
    return registry[backend].model(name, **options)


def make_judge(lm, question: str, name: str | None = None):
    """The LM-as-judge of ``judge(lm, question = ...)``: ``Judge`` (the odds of Yes against
    No) on a real engine; on the tabular backend's character-level LMs, whose Yes/No odds
    after a fixed prompt ending are the same for every answer, a ``TabularJudge`` whose
    verdict depends on the text, so offline runs resample and rank."""
    if isinstance(lm, CharacterLM):
        return TabularJudge(lm, question, name=name)
    return Judge(lm, question, name=name)


def judge_prm(lm, aggregate: str = "prod", question: str | None = None, name: str | None = None):
    """A process reward from a language model judging each step (any backend)."""
    judge = make_judge(lm, question or DEFAULT_QUESTION)
    return ProcessReward(JudgeSteps(judge), aggregate, name=name)


def load_prm(name: str, backend: str = "tabular", aggregate: str = "prod", **options):
    """The process reward model ``name`` on ``backend``, with the given aggregation.

    On ``vllm`` it is served by the pooling runner (``ppl.backends.pooling.PoolingPRM``: a
    trained PRM such as Qwen2.5-Math-PRM-7B, or a causal LM converted into a step
    classifier); on ``tabular`` the character-level LM of that name judges each step, so a
    file runs without a real model. OpenAI-compatible servers have no pooling here."""
    if aggregate not in PRM_AGGREGATIONS:
        raise BackendError(
            f"unknown aggregation '{aggregate}'; the aggregations are {', '.join(PRM_AGGREGATIONS)}"
        )
    if backend == "tabular":
        return judge_prm(tabular_model(name, **options), aggregate, name=name)
    if backend == "vllm":
        source = _model_source(name, "vllm")
        _require_vllm()
        try:
            return ProcessReward(PoolingPRM(source, **options), aggregate, name=name)
        except ValueError as error:  # an engine setting vLLM does not have
            raise BackendError(str(error)) from None
    names = backend_names()
    if backend in names:
        raise BackendError(
            f"a PRM served by name needs the vllm backend (pooling), not {backend}; "
            "prm(model = ...) judges steps with a model on any backend"
        )
    raise BackendError(f"unknown backend '{backend}'; the backends are {', '.join(sorted(names))}")


def resolves_to(name: str | None, backend: str) -> tuple[str, bool]:
    """What ``model(name)`` is on ``backend``, in words, without loading anything — and
    whether the name is a model (a demo LM, an embedded model or a model folder) rather
    than a stand-in or nothing at all."""
    if name is None:
        what, known = resolves_to(DEFAULT_MODEL, backend)
        return f"the default model '{DEFAULT_MODEL}' (no name given): {what}", known
    folder = (Path(name) / "config.json").is_file()
    if backend == "tabular":
        if name in demo_tables():
            return f"the demo LM '{name}' (a word-level bigram table)", True
        if embedded(name) or folder:
            return f"a character-level tabular LM standing in for '{name}' (--backend vllm runs it)", True
        return (
            f"a character-level tabular LM seeded by the name '{name}'; no model has this name "
            "(the vllm and openai backends refuse it)",
            False,
        )
    if embedded(name):
        return f"the embedded model '{name}' on {backend}", True
    if folder:
        return f"the model folder {name} on {backend}", True
    return f"no model on {backend} (it is refused before any engine starts)", False


# ---- the real engines -------------------------------------------------------------------------


def _model_source(name: str, backend: str) -> str:
    """An embedded model's name or an existing model folder, else a BackendError."""
    if embedded(name) or (Path(name) / "config.json").is_file():
        return name
    known = ", ".join(m.name for m in EMBEDDED)
    raise BackendError(
        f"the {backend} backend has no model '{name}': name an embedded model ({known}) "
        "or a Hugging Face model folder"
    )


def vllm_model(name: str, **engine_settings):
    """The vLLM offline engine for ``name`` (started on its first request)."""
    source = _model_source(name, "vllm")
    _require_vllm()
    try:
        return VLLM(source, **engine_settings)
    except ValueError as error:  # an engine setting vLLM does not have (--engine KEY=VALUE)
        raise BackendError(str(error)) from None


def _require_vllm() -> None:
    try:  # an optional, heavy dependency: imported only to see that it is installed
        import_vllm()  # (quietly: its import-time warnings obey VLLM_LOGGING_LEVEL)
    except ImportError:
        raise BackendError(f"the vllm backend is not installed: {INSTALL_HINT}") from None


def openai_model(name: str, servers=(), **settings):
    """OpenAI-compatible servers, with ``name``'s tokenizer run locally."""
    if not servers:
        raise BackendError("the openai backend needs the servers' URLs (tts run --server URL ...)")
    return OpenAICompatible(list(servers), tokenizer=_model_source(name, "openai"), **settings)


# ---- the tabular backend ----------------------------------------------------------------------


def tabular_model(name: str, **options):
    """A demo LM by name, or the character-level LM seeded by the name."""
    if options:
        raise BackendError(f"the tabular backend takes no options, got {', '.join(sorted(options))}")
    tables = demo_tables()
    if name in tables:
        return TabularLM.bigram(tables[name], name=name)
    return character_lm(name)


def stable_seed(name: str) -> int:
    """A seed from ``name`` that is the same in every process (unlike the salted ``hash``)."""
    return int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:4], "big")


class CharacterLM(TabularLM):
    """A tabular LM with one token per character; characters outside the vocabulary read as ``?``."""

    def encode(self, text: str) -> tuple[int, ...]:
        index = {c: i for i, c in enumerate(self.vocab)}
        fallback = index[REPLACEMENT]
        return tuple(index.get(c, fallback) for c in text)


def character_lm(name: str = DEFAULT_MODEL) -> CharacterLM:
    """A character-level tabular LM (order 1, random table) that can read any text."""
    return CharacterLM.random(list(CHARACTERS), order=1, seed=stable_seed(name), name=name)


def demo_tables() -> dict[str, dict[str, dict[str, float]]]:
    """Next-word counts of the named demo LMs (``TabularLM.bigram`` format), built fresh."""
    return {
        # examples/constrained_generation: sentences that may say " dog".
        "constrained-generation-demo": {
            "<s>": {" the": 3, " a": 1},
            " the": {" cat": 2, " dog": 2, " mat": 1},
            " a": {" cat": 1, " dog": 3},
            " cat": {" sat": 3, " ran": 1, "<eos>": 1},
            " dog": {" sat": 1, " ran": 3, "<eos>": 1},
            " sat": {" on": 3, "<eos>": 2},
            " ran": {" on": 1, "<eos>": 3},
            " on": {" the": 3, " a": 1},
            " mat": {"<eos>": 1},
        },
        # examples/reasoning*: a toy chain of thought — a claim, maybe a re-check, an answer.
        "reasoning-demo": {
            "<s>": {" 2+3": 1},
            " 2+3": {" =5": 2, " =6": 1, " =23": 1},
            " =5": {" so": 3, " check": 1},
            " =6": {" so": 3, " check": 1},
            " =23": {" so": 3, " check": 1},
            " check": {" 2+3": 1},
            " so": {" 5": 1, " 6": 1, " 23": 1},
            " 5": {"<eos>": 1},
            " 6": {"<eos>": 1},
            " 23": {"<eos>": 1},
        },
        # examples/reward_tilted: sentences that rarely mention cats.
        "reward-tilted-demo": {
            "<s>": {" the": 3, " a": 1},
            " the": {" cat": 1, " dog": 3, " mat": 1},
            " a": {" cat": 1, " dog": 3},
            " cat": {" sat": 3, " and": 1, "<eos>": 1},
            " dog": {" sat": 1, " and": 2, "<eos>": 1},
            " and": {" the": 2, " a": 1},
            " sat": {" on": 3, "<eos>": 2},
            " on": {" the": 3, " a": 1},
            " mat": {"<eos>": 1},
        },
    }


def demo_lm(name: str):
    """One of the named demo LMs (``KeyError`` listing them if ``name`` is not one)."""
    tables = demo_tables()
    if name not in tables:
        raise KeyError(f"no demo LM {name!r}; the demo LMs are {', '.join(sorted(tables))}")
    return tabular_model(name)
