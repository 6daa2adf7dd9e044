"""The built-ins of the .tts language: the only things a .tts file can call.

Each built-in has a signature (parameter names, accepted types, defaults), a result type,
a kind, and the Python function that runs it. The checker reads the signatures; the
compiler calls ``run``. There is nothing else: no attribute of a Python object, no import,
no eval — a name that is not here (or a method not listed for its receiver's type) is an
error before anything runs.

Kinds: ``function`` (a value), ``choice`` (a random choice: only as ``x ~ ...``),
``distribution`` (a NumPyro distribution: only after ``~``), ``reward`` (a reward-model
call, a value), ``declaration`` (only in ``use``).

Runtime values: text is ``str``, tokens a ``tuple`` of ints, a segment a ``ppl.Segment``,
a number an ``int`` or ``float``, a list a ``tuple``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import ppl
from ppl.interfaces import Segment
from ppl.primitives import DEFAULT_MAX_TOKENS
from ppl.text import as_number, extract, extract_all, last_number, regex, split

from .types import (
    ANYTHING,
    BOOL,
    JUDGE,
    MODEL,
    NUMBER,
    PRM,
    PYTHON,
    RETRIEVER,
    SEGMENT,
    TEXT,
    TOKENS,
    TURN,
    VERIFIER,
    Type,
    list_of,
)

REQUIRED = object()
TEXT_LIKE = (TEXT, SEGMENT, list_of(SEGMENT), list_of(TEXT))
TOKENS_LIKE = (TOKENS, SEGMENT, list_of(SEGMENT))


@dataclass(frozen=True)
class Param:
    name: str
    types: tuple[Type, ...]
    default: Any = REQUIRED


@dataclass(frozen=True)
class Builtin:
    name: str
    params: tuple[Param, ...]
    returns: Type
    kind: str
    run: Callable[..., Any]
    doc: str = ""
    # The result type from the bound arguments, when it depends on them (``gen`` with ``n``).
    result: Callable[[dict], Type] | None = None


# ---- conversions at run time ---------------------------------------------------------------


def as_text(value) -> str:
    """Text of a text, a segment, or a list of texts or segments (joined)."""
    if isinstance(value, str):
        return value
    if isinstance(value, Segment):
        return value.text
    return "".join(as_text(v) for v in value)


def as_tokens(value) -> tuple[int, ...]:
    """Token ids of tokens, a segment, or a list of segments (concatenated).

    A tuple that starts and ends with an int is token ids as it is: the checker makes every
    list homogeneous and inputs are checked on entry, and looking at every element at every
    site would make a program's cost quadratic in its length."""
    if type(value) is tuple and (not value or (type(value[0]) is int and type(value[-1]) is int)):
        return value
    if isinstance(value, Segment):
        return value.token_ids
    if all(isinstance(v, int) for v in value):
        return tuple(value)
    return tuple(t for v in value for t in as_tokens(v))


def as_count(value, what: str) -> int:
    """A whole number, or a ValueError naming ``what``."""
    if isinstance(value, bool) or not float(value).is_integer():
        raise ValueError(f"{what} must be a whole number, got {value}")
    return int(value)


def as_display(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return as_text(value)


def last_boxed(text: str) -> str:
    r"""The content of the last ``\boxed{...}`` in ``text`` (braces balanced), or ""."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return ""
    depth, i = 0, start + len("\\boxed")
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1 : j]
    return text[i + 1 :]


def _range(n) -> tuple[int, ...]:
    count = as_count(n, "range(n)")
    if count < 0:
        raise ValueError(f"range(n) needs n >= 0, got {count}")
    return tuple(range(count))


def _turn(role: str):
    def make(text) -> tuple[str, str]:
        return (role, as_text(text))

    return make


def chat_turns(model, turns) -> tuple[int, ...]:
    """The model's own chat template over several turns, ready for the assistant's reply."""
    render = getattr(model, "chat_turns", None)
    if render is None:
        raise ValueError(f"the model {getattr(model, 'name', model)!r} has no multi-turn chat template")
    return tuple(render(tuple(turns)))


def _log(x):
    if x < 0:
        raise ValueError(f"log of a negative number ({x})")
    return math.log(x) if x > 0 else -math.inf


def _exp(x):
    try:
        return math.exp(x)
    except OverflowError:
        return math.inf


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


def _gen(
    model, context, stop, max_tokens, temperature, n, top_k, top_p, min_p, regex, grammar, json_schema, choice
):
    stop = (stop,) if isinstance(stop, str) else tuple(stop)
    return ppl.gen(
        model,
        as_tokens(context),
        stop=stop,
        max_tokens=as_count(max_tokens, "max_tokens"),
        temperature=float(temperature),
        n=None if n is None else as_count(n, "n"),
        top_k=0 if top_k == 0 else as_count(top_k, "top_k"),
        top_p=float(top_p),
        min_p=float(min_p),
        regex=regex,
        grammar=grammar,
        json_schema=json_schema,
        choice=None if choice is None else tuple(choice),
    )


# gen's constraints (at most one): the language its segment's text must be in
CONSTRAINT_PARAMS = ("regex", "grammar", "json_schema", "choice")


def _gen_result(bound: dict) -> Type:
    """``lm.gen(...)`` is a segment; with ``n = k`` it is a list of k segments (one request)."""
    return SEGMENT if bound.get("n") is None else list_of(SEGMENT)


# ---- functions -----------------------------------------------------------------------------

FUNCTIONS = MappingProxyType(
    {
        "len": Builtin(
            "len",
            (Param("value", (TEXT, TOKENS, list_of(ANYTHING))),),
            NUMBER,
            "function",
            lambda value: len(value),
            "the number of characters, tokens or items",
        ),
        "contains": Builtin(
            "contains",
            (Param("text", TEXT_LIKE), Param("part", (TEXT,))),
            BOOL,
            "function",
            lambda text, part: part in as_text(text),
            "whether `part` occurs in the text",
        ),
        "boxed": Builtin(
            "boxed",
            (Param("text", TEXT_LIKE),),
            TEXT,
            "function",
            lambda text: last_boxed(as_text(text)),
            r"the content of the last \boxed{...}, or an empty text",
        ),
        "text": Builtin(
            "text",
            (Param("value", TEXT_LIKE + (NUMBER, BOOL)),),
            TEXT,
            "function",
            as_display,
            "the value as text (segments are joined)",
        ),
        "log": Builtin(
            "log", (Param("x", (NUMBER,)),), NUMBER, "function", _log, "natural log; log(0) = -inf"
        ),
        "exp": Builtin("exp", (Param("x", (NUMBER,)),), NUMBER, "function", _exp, "e to the power x"),
        "strip": Builtin(
            "strip",
            (Param("text", TEXT_LIKE),),
            TEXT,
            "function",
            lambda text: as_text(text).strip(),
            "the text without white space at either end",
        ),
        "lower": Builtin(
            "lower",
            (Param("text", TEXT_LIKE),),
            TEXT,
            "function",
            lambda text: as_text(text).lower(),
            "lower case",
        ),
        "split": Builtin(
            "split",
            (Param("text", TEXT_LIKE), Param("separator", (TEXT,), "")),
            list_of(TEXT),
            "function",
            lambda text, separator: split(as_text(text), separator),
            'the pieces between separators (white space when the separator is "")',
        ),
        "join": Builtin(
            "join",
            (Param("items", (list_of(TEXT), list_of(SEGMENT))), Param("separator", (TEXT,), "")),
            TEXT,
            "function",
            lambda items, separator: separator.join(as_text(i) for i in items),
            "the texts joined with the separator between them",
        ),
        "replace": Builtin(
            "replace",
            (Param("text", TEXT_LIKE), Param("old", (TEXT,)), Param("new", (TEXT,))),
            TEXT,
            "function",
            lambda text, old, new: as_text(text).replace(old, new),
            "every occurrence of old replaced by new",
        ),
        "matches": Builtin(
            "matches",
            (Param("text", TEXT_LIKE), Param("pattern", (TEXT,))),
            BOOL,
            "function",
            lambda text, pattern: regex(pattern).search(as_text(text)) is not None,
            "whether the regular expression occurs in the text",
        ),
        "extract": Builtin(
            "extract",
            (Param("text", TEXT_LIKE), Param("pattern", (TEXT,))),
            TEXT,
            "function",
            lambda text, pattern: extract(as_text(text), pattern),
            'the first match of the regular expression (its first group, if any), or ""',
        ),
        "extract_all": Builtin(
            "extract_all",
            (Param("text", TEXT_LIKE), Param("pattern", (TEXT,))),
            list_of(TEXT),
            "function",
            lambda text, pattern: extract_all(as_text(text), pattern),
            "every match of the regular expression (first groups, if any)",
        ),
        "last_number": Builtin(
            "last_number",
            (Param("text", TEXT_LIKE),),
            TEXT,
            "function",
            lambda text: last_number(as_text(text)),
            'the last number written in the text, or ""',
        ),
        "number": Builtin(
            "number",
            (Param("text", TEXT_LIKE),),
            NUMBER,
            "function",
            lambda text: as_number(as_text(text)),
            "the number a text spells; an error (the particle dies) if it spells none",
        ),
        "range": Builtin(
            "range",
            (Param("n", (NUMBER,)),),
            list_of(NUMBER),
            "function",
            _range,
            "the numbers 0, 1, …, n - 1",
        ),
        "system": Builtin(
            "system",
            (Param("text", TEXT_LIKE),),
            TURN,
            "function",
            _turn("system"),
            "a system turn of a chat",
        ),
        "user": Builtin("user", (Param("text", TEXT_LIKE),), TURN, "function", _turn("user"), "a user turn"),
        "assistant": Builtin(
            "assistant",
            (Param("text", TEXT_LIKE),),
            TURN,
            "function",
            _turn("assistant"),
            "an assistant turn",
        ),
        "select": Builtin(
            "select",
            (Param("model", (MODEL,)), Param("context", TOKENS_LIKE), Param("options", (list_of(TEXT),))),
            TEXT,
            "choice",
            lambda model, context, options: ppl.select(model, as_tokens(context), list(options)),
            "one of the options, with probability ∝ the model's probability of it",
        ),
    }
)

# ---- NumPyro distributions (a fixed whitelist) ------------------------------------------------


def _distribution(class_name: str, convert: Callable):
    def make(**kwargs):
        # JAX and NumPyro take seconds to import: only when a file samples from a distribution
        import jax.numpy as jnp
        import numpyro.distributions as dist

        kwargs = {k: jnp.asarray(v) if isinstance(v, tuple) else v for k, v in kwargs.items()}
        return getattr(dist, class_name)(**kwargs)

    make.convert = convert  # a NumPyro draw → the .tts value
    return make


def _dist(name, class_name, params, value_type, doc):
    convert = {BOOL: bool, NUMBER: float}[value_type] if class_name not in _DISCRETE else int
    return Builtin(name, params, value_type, "distribution", _distribution(class_name, convert), doc)


_DISCRETE = ("Categorical", "Poisson")


_N = (NUMBER,)
DISTRIBUTIONS = MappingProxyType(
    {
        "bernoulli": _dist(
            "bernoulli", "Bernoulli", (Param("probs", _N),), BOOL, "true with probability probs"
        ),
        "categorical": _dist(
            "categorical", "Categorical", (Param("probs", (list_of(NUMBER),)),), NUMBER, "an index ∝ probs"
        ),
        "normal": _dist(
            "normal", "Normal", (Param("loc", _N, 0.0), Param("scale", _N, 1.0)), NUMBER, "Gaussian"
        ),
        "uniform": _dist(
            "uniform", "Uniform", (Param("low", _N, 0.0), Param("high", _N, 1.0)), NUMBER, "uniform"
        ),
        "beta": _dist(
            "beta", "Beta", (Param("concentration1", _N), Param("concentration0", _N)), NUMBER, "Beta(a, b)"
        ),
        "poisson": _dist("poisson", "Poisson", (Param("rate", _N),), NUMBER, "Poisson counts"),
    }
)


def observed_value(value):
    """A .tts value as NumPyro's ``log_prob`` wants it."""
    return int(value) if isinstance(value, bool) else value


# ---- methods of models and judges --------------------------------------------------------------

MODEL_METHODS = MappingProxyType(
    {
        "gen": Builtin(
            "gen",
            (
                Param("context", TOKENS_LIKE),
                Param("stop", (list_of(TEXT), TEXT), ()),
                Param("max_tokens", _N, DEFAULT_MAX_TOKENS),
                Param("temperature", _N, 1.0),
                Param("n", _N, None),
                Param("top_k", _N, 0),
                Param("top_p", _N, 1.0),
                Param("min_p", _N, 0.0),
                Param("regex", (TEXT,), None),
                Param("grammar", (TEXT,), None),
                Param("json_schema", (TEXT,), None),
                Param("choice", (list_of(TEXT),), None),
            ),
            SEGMENT,
            "choice",
            _gen,
            "one LM segment after the context; with n = k, a list of k segments from one request; "
            "top_k/top_p/min_p truncate the LM (part of the target); regex, grammar (Lark), "
            "json_schema (JSON text) or choice: the LM conditioned on that language",
            _gen_result,
        ),
        "chat": Builtin(
            "chat",
            (Param("user", (TEXT,)), Param("system", (TEXT,), None)),
            TOKENS,
            "function",
            lambda model, user, system: tuple(model.chat(user=user, system=system)),
            "the model's chat prompt, ready for the assistant's reply",
        ),
        "chat_turns": Builtin(
            "chat_turns",
            (Param("turns", (list_of(TURN),)),),
            TOKENS,
            "function",
            chat_turns,
            "the model's chat template over several turns, ready for the assistant's reply",
        ),
        "encode": Builtin(
            "encode",
            (Param("text", (TEXT,)),),
            TOKENS,
            "function",
            lambda model, text: tuple(model.encode(text)),
            "the text's token ids",
        ),
        "decode": Builtin(
            "decode",
            (Param("tokens", TOKENS_LIKE),),
            TEXT,
            "function",
            lambda model, tokens: model.decode(as_tokens(tokens)),
            "the text of token ids",
        ),
    }
)

JUDGE_METHODS = MappingProxyType(
    {
        "logit": Builtin(
            "logit",
            (Param("problem", TEXT_LIKE), Param("answer", TEXT_LIKE)),
            NUMBER,
            "reward",
            lambda judge, problem, answer: ppl.reward(judge, as_text(problem), as_text(answer)),
            "log P(Yes) - log P(No) of the judge",
        ),
        "prob": Builtin(
            "prob",
            (Param("problem", TEXT_LIKE), Param("answer", TEXT_LIKE)),
            NUMBER,
            "reward",
            lambda judge, problem, answer: _sigmoid(ppl.reward(judge, as_text(problem), as_text(answer))),
            "P(Yes) / (P(Yes) + P(No)) of the judge",
        ),
    }
)

STEPS_LIKE = (list_of(SEGMENT), list_of(TEXT), SEGMENT, TEXT)


def as_steps(value) -> tuple[str, ...]:
    """The texts of the steps a process reward model judges (one text or segment is one step)."""
    if isinstance(value, (str, Segment)):
        value = [value]
    return tuple(as_text(v) for v in value)


PRM_METHODS = MappingProxyType(
    {
        "log_reward": Builtin(
            "log_reward",
            (Param("problem", TEXT_LIKE), Param("steps", STEPS_LIKE)),
            NUMBER,
            "reward",
            lambda prm, problem, steps: ppl.reward(prm, as_text(problem), as_steps(steps)),
            "the log of the PRM's aggregate of its step verdicts (0 for no steps)",
        ),
        "reward": Builtin(
            "reward",
            (Param("problem", TEXT_LIKE), Param("steps", STEPS_LIKE)),
            NUMBER,
            "reward",
            lambda prm, problem, steps: math.exp(ppl.reward(prm, as_text(problem), as_steps(steps))),
            "the PRM's aggregate of its step verdicts, a probability",
        ),
    }
)

REFERENCE = (TEXT, NUMBER, list_of(TEXT))

VERIFIER_METHODS = MappingProxyType(
    {
        "reward": Builtin(
            "reward",
            (Param("answer", TEXT_LIKE), Param("reference", REFERENCE)),
            NUMBER,
            "reward",
            lambda verifier, answer, reference: ppl.reward(verifier, as_text(answer), reference),
            "1 when the checker passes the answer against the reference, else 0 (batched, memoised)",
        ),
        "check": Builtin(
            "check",
            (Param("answer", TEXT_LIKE), Param("reference", REFERENCE)),
            BOOL,
            "reward",
            lambda verifier, answer, reference: ppl.reward(verifier, as_text(answer), reference) > 0.5,
            "whether the checker passes the answer against the reference",
        ),
    }
)


def _run_code(tool, code) -> str:
    """The code's output, or ``error (status): why`` when it failed or hit a sandbox limit."""
    status, text = ppl.tool(tool, as_text(code))
    return text if status == "passed" else f"error ({status}): {text}"


PYTHON_METHODS = MappingProxyType(
    {
        "run": Builtin(
            "run",
            (Param("code", TEXT_LIKE),),
            TEXT,
            "reward",
            _run_code,
            "the code run in the sandbox: its output, or `error (status): why` (a tool site, memoised)",
        ),
        "passed": Builtin(
            "passed",
            (Param("code", TEXT_LIKE),),
            BOOL,
            "reward",
            lambda tool, code: ppl.tool(tool, as_text(code))[0] == "passed",
            "whether the code ran to the end cleanly within the limits",
        ),
    }
)

RETRIEVER_METHODS = MappingProxyType(
    {
        "search": Builtin(
            "search",
            (Param("query", TEXT_LIKE), Param("k", (NUMBER,), 3)),
            list_of(TEXT),
            "reward",
            lambda tool, query, k: ppl.tool(tool, as_text(query), as_count(k, "k")),
            "the k best documents of the corpus for the query (BM25), best first",
        ),
    }
)

METHODS = MappingProxyType(
    {
        MODEL: MODEL_METHODS,
        JUDGE: JUDGE_METHODS,
        PRM: PRM_METHODS,
        VERIFIER: VERIFIER_METHODS,
        PYTHON: PYTHON_METHODS,
        RETRIEVER: RETRIEVER_METHODS,
    }
)

# Fields of a segment: name → (type, getter).
SEGMENT_FIELDS = MappingProxyType(
    {
        "text": (TEXT, lambda s: s.text),
        "tokens": (TOKENS, lambda s: s.token_ids),
        "eos": (BOOL, lambda s: s.eos),
        "finish_reason": (TEXT, lambda s: s.finish_reason),
        "logprob": (NUMBER, lambda s: s.logprob),
    }
)


def _log_evidence(answers) -> float:
    if answers.log_evidence is None:
        raise ValueError("the inner interpreter estimates no evidence (it targets the mode)")
    return answers.log_evidence


# Fields of a nested run's answers (``answers[T]``): name → (type from T, getter).
ANSWERS_FIELDS = MappingProxyType(
    {
        "best": (lambda t: t, lambda a: a.best()),
        "majority": (lambda t: t, lambda a: a.majority()),
        "vote": (lambda t: t, lambda a: a.weighted_vote()),
        "values": (list_of, lambda a: tuple(a.values)),
        "weights": (lambda t: list_of(NUMBER), lambda a: tuple(a.weights)),
        "log_evidence": (lambda t: NUMBER, _log_evidence),
    }
)

# ---- declarations (only in `use`) and algorithms (only in `infer`) ------------------------------

DECLARATIONS = MappingProxyType(
    {
        "model": Builtin(
            "model",
            (Param("name", (TEXT,), None), Param("backend", (TEXT,), None)),
            MODEL,
            "declaration",
            None,
            "a language model by name",
        ),
        "judge": Builtin(
            "judge",
            (Param("model", (MODEL,)), Param("question", (TEXT,))),
            JUDGE,
            "declaration",
            None,
            "an LM-as-judge reward: the model's odds of answering Yes to the question",
        ),
        "verifier": Builtin(
            "verifier",
            (Param("name", (TEXT,)),),
            VERIFIER,
            "declaration",
            None,
            "a checker of tts eval (math, exact, regex, include_words, …) as a batched, memoised reward",
        ),
        "python": Builtin(
            "python",
            (Param("time_limit", (NUMBER,), 10.0), Param("memory_mb", (NUMBER,), 512)),
            PYTHON,
            "declaration",
            None,
            "sandboxed Python (no network, time and memory limits) as a tool",
        ),
        "retriever": Builtin(
            "retriever",
            (Param("path", (TEXT,)),),
            RETRIEVER,
            "declaration",
            None,
            'BM25 retrieval over a local corpus: a JSONL file of {"text": ...} lines or a folder of .txt files',
        ),
        "prm": Builtin(
            "prm",
            (
                Param("model", (MODEL,), None),
                Param("name", (TEXT,), None),
                Param("aggregate", (TEXT,), "prod"),
                Param("question", (TEXT,), None),
                Param("backend", (TEXT,), None),
            ),
            PRM,
            "declaration",
            None,
            "a process reward model: a declared model judging each step (model = ...), or a PRM "
            "served by vLLM pooling (name = ...); aggregate is prod, min, last or whole",
        ),
    }
)
