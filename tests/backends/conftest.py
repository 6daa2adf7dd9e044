"""The backends of the contract suite: one fixture, ``backend``, parametrised over every
``ppl.interfaces.LanguageModel`` the project ships.

* ``tabular`` — ``TabularLM`` (fast tier): exact, so its tolerances are float rounding.
* ``vllm`` — ``ppl.backends.vllm.VLLM`` on the embedded default model (engine tier; the
  session's shared ``default_lm`` from tests/conftest.py).
* ``openai`` — ``ppl.backends.openai.OpenAICompatible`` against the session's real local
  vLLM OpenAI servers (engine tier; ``openai_servers`` from tests/conftest.py).

The engine parametrisations carry the ``engine`` mark, so ``-m "not engine"`` deselects them
before any fixture runs: the fast tier starts no engine and does not import vLLM.

Where the backends differ, the difference is a field of ``Backend`` — a tolerance or what
the backend promises — stated here, next to the backend it belongs to.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from ppl.backends import TabularLM

WORDS = [" the", " cat", " sat", ".", " on", " mat"]


@dataclass
class Backend:
    name: str
    lm: object
    # texts in the backend's vocabulary
    text: str  # decode(encode(text)) == text
    user: str  # a chat turn
    system: str
    # the generation grid: every combination, one batch
    prompt: tuple[int, ...]
    stops: tuple[tuple[str, ...], ...]
    max_tokens: tuple[int, ...]
    temperatures: tuple[float, ...]
    seeds: tuple[int, ...]
    short_prompt: tuple[int, ...]  # for scoring, seeds and usage
    score_max_tokens: int
    # tolerances
    logprob_abs: float  # |Segment.logprob − Σ token_logprobs| (temperature > 0)
    score_abs: float  # |logprob(ScoreRequest of a segment) − Segment.logprob| at temperature 1
    batch_abs: float  # |token log-prob| differences of one request answered in different batches
    # what the backend promises beyond the common contract
    scores_any_temperature: bool  # else only temperature 1, other temperatures refused
    scores_empty_prompt: bool  # else an empty prompt is refused
    stop_ends_text: bool  # a stop string is the end of the text (tokens are whole words)
    seeded_alone_equals_batch: bool  # a seeded request alone gives what it gave in a batch
    greedy_token_logprobs_zero: bool  # greedy token log-probs are 0 too (not only Segment.logprob)
    greedy_branches: bool  # n > 1 at temperature 0 gives n equal segments (else refused)
    prompt_tokens_per_branch: bool  # usage.prompt_tokens counts a prompt once per branch (n)


def tabular() -> Backend:
    lm = TabularLM.random(WORDS, order=2, seed=1, scale=1.0)
    return Backend(
        name="tabular",
        lm=lm,
        text=" the cat sat on the mat.",
        user=" the cat",
        system=" the",
        prompt=lm.encode(" the cat"),
        stops=((), (".",), (" cat",), (".", " mat")),
        max_tokens=(1, 2, 3, 4, 5, 6),
        temperatures=(0.0, 0.5, 1.0, 3.0),
        seeds=(0, 1, 2, 9999),
        short_prompt=lm.encode(" the"),
        score_max_tokens=6,
        logprob_abs=1e-12,  # the same float64 numbers, summed
        score_abs=1e-9,  # exact: the same table, looked up again
        batch_abs=0.0,  # a table has no batches
        scores_any_temperature=True,
        scores_empty_prompt=True,
        stop_ends_text=True,
        seeded_alone_equals_batch=True,
        greedy_token_logprobs_zero=True,
        greedy_branches=True,
        prompt_tokens_per_branch=True,
    )


def engine(name: str, lm) -> Backend:
    """The two real engines run the same model, so they share texts, grid and promises."""
    return Backend(
        name=name,
        lm=lm,
        text="What is 2 + 3? Answer briefly, in words.",
        user="What is 2 + 3?",
        system="Answer briefly.",
        prompt=lm.chat(user="Count from one to twenty in words, separated by commas."),
        stops=((), (",",)),
        max_tokens=(3, 20),
        temperatures=(0.0, 0.8, 1.0),
        seeds=(0, 1),
        short_prompt=lm.chat(user="Say hello."),
        score_max_tokens=12,
        logprob_abs=1e-9,  # the engine's own numbers, summed in float64
        # the sampling and the prompt-scoring paths differ slightly (0.1 nats over a 12-token
        # segment in process, 0.15 through the server, in bfloat16; the tier runs float32)
        score_abs=0.1 if name == "vllm" else 0.15,
        # float32 (tests/conftest.py): the same request in another batch gets the same tokens and
        # log-probabilities to about 1e-6 (the sums' order changes with the batch)
        batch_abs=1e-4,
        scores_any_temperature=False,  # vLLM scores at temperature 1 only
        scores_empty_prompt=False,  # vLLM has no score for the first token
        stop_ends_text=False,  # a stop string may end inside the last token
        # a seeded request's answer on the server did not depend on the requests beside it (the
        # existing OpenAI test asserted it); in process it is not promised
        seeded_alone_equals_batch=name == "openai",
        greedy_token_logprobs_zero=False,  # vLLM reports the model's log-probs of greedy tokens
        # vLLM refuses n > 1 with greedy sampling ("n must be 1 when using greedy sampling"); the
        # interpreters always send n = 1
        greedy_branches=False,
        prompt_tokens_per_branch=False,  # the engine counts a prompt once per request
    )


@pytest.fixture(
    params=[
        pytest.param("tabular"),
        pytest.param("vllm", marks=pytest.mark.engine),
        pytest.param("openai", marks=pytest.mark.engine),
    ]
)
def backend(request) -> Backend:
    if request.param == "tabular":
        return tabular()
    if request.param == "vllm":
        return engine("vllm", request.getfixturevalue("default_lm"))
    from ppl.backends.openai import OpenAICompatible

    servers = request.getfixturevalue("openai_servers")
    alive = [s.url for s in servers if s.process.poll() is None]
    return engine("openai", OpenAICompatible(alive, retries=1, backoff=0.2))
