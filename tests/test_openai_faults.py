"""The OpenAI-compatible backend against servers that misbehave, on 127.0.0.1.

A real HTTP server (FastAPI on uvicorn, in a thread) answers in vLLM's shape — a
deterministic toy LM keyed by the prompt and the request's seed — except for the faults it
is scripted to inject into the next requests: a refused connection (nothing listening), an
answer slower than the client's timeout, 500/503 statuses, bodies that are not JSON, a 400,
answers missing their fields. The client must retry the transient ones with backoff and
then name the server, fail at once on the rest, and — under an interpreter — keep every
problem that had finished, so that resuming gives the uninterrupted run's results. The
client tokenizes with a real (tiny, word-level) Hugging Face tokenizer saved to a folder.
The real vLLM server is exercised in tests/engine/test_openai_backend.py.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter

import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse

import ppl
from ppl.algorithms import ImportanceSampling
from ppl.backends.openai import OpenAICompatible, ServerError
from ppl.interfaces import GenRequest, NextTokenRequest, ScoreRequest

VOCAB = 40  # token ids 0..39; 0 is the end of sequence


class Misbehaving:
    """An OpenAI-compatible server whose next requests get the faults in ``faults``."""

    def __init__(self):
        self.faults: list[str] = []
        self.after: str | None = None  # the fault of every request once ``faults`` is spent
        self.hits: Counter = Counter()
        self.lock = threading.Lock()
        app = FastAPI()

        async def fault(path: str):
            with self.lock:
                self.hits[path] += 1
                kind = self.faults.pop(0) if self.faults else self.after
            if kind == "slow":
                await asyncio.sleep(1.5)
            elif kind in ("500", "503", "400"):
                return PlainTextResponse(f"injected {kind}", status_code=int(kind))
            elif kind == "badjson":
                return PlainTextResponse('{"choices": [{"tok', media_type="application/json")
            elif kind == "empty":
                return JSONResponse({})
            return None

        @app.get("/v1/models")
        async def models():
            return (await fault("/v1/models")) or {"data": [{"id": "toy"}]}

        @app.post("/v1/completions")
        async def completions(request: Request):
            body = await request.json()
            injected = await fault("/v1/completions")
            if injected is not None:
                return injected
            prompt, seed = body["prompt"], body.get("seed") or 0
            if body.get("prompt_logprobs") is not None:  # scoring
                table = [None] + [{str(t): {"logprob": -0.25 * (1 + t % 3)}} for t in prompt[1:]]
                return {"choices": [{"index": 0, "prompt_logprobs": table}], "usage": {}}
            if body.get("logprob_token_ids"):  # next-token reads
                top = {f"token_id:{t}": -0.1 * (1 + t) for t in body["logprob_token_ids"]}
                return {"choices": [{"index": 0, "logprobs": {"top_logprobs": [top]}}], "usage": {}}
            n, length = body.get("n", 1), body["max_tokens"]
            choices = []
            for i in range(n):
                ids = [1 + (sum(prompt) * 31 + seed * 7 + i * 13 + k) % (VOCAB - 1) for k in range(length)]
                choices.append(
                    {
                        "index": i,
                        "token_ids": ids,
                        "logprobs": {"token_logprobs": [-0.5] * length},
                        "finish_reason": "length",
                    }
                )
            usage = {"prompt_tokens": len(prompt), "completion_tokens": n * length}
            return {"choices": choices, "usage": usage}

        from servers import free_port

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="error"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the misbehaving server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    """A real Hugging Face tokenizer, word-level, saved to a folder as a model's would be."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace
    from transformers import PreTrainedTokenizerFast

    vocab = {"<eos>": 0, **{f"w{i}": i for i in range(1, VOCAB - 1)}, "<unk>": VOCAB - 1}
    core = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = Whitespace()
    folder = tmp_path_factory.mktemp("tokenizer")
    PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<eos>", unk_token="<unk>").save_pretrained(
        folder
    )
    return str(folder)


@pytest.fixture
def server():
    with Misbehaving() as running:
        yield running


def client_for(url: str, tokenizer: str, **settings) -> OpenAICompatible:
    return OpenAICompatible(
        [url],
        tokenizer=tokenizer,
        **{"model": "toy", "retries": 3, "backoff": 0.01, "timeout": 5, **settings},
    )


@pytest.mark.parametrize("fault", ["slow", "500", "503", "badjson"])
def test_transient_faults_are_retried_and_the_answer_arrives(server, tokenizer, fault):
    client = client_for(server.url, tokenizer, timeout=0.5)
    healthy = client_for(server.url, tokenizer).generate([GenRequest((3, 4), max_tokens=3, seed=5)])
    server.faults = [fault, fault]
    server.hits.clear()
    answer = client.generate([GenRequest((3, 4), max_tokens=3, seed=5)])
    assert answer == healthy and len(answer[0][0].token_ids) == 3
    assert server.hits["/v1/completions"] == 3, (server.hits, server.faults)  # two faults, then the answer


@pytest.mark.parametrize(
    ("fault", "cause"),
    [
        ("500", "HTTP 500: injected 500"),
        ("503", "HTTP 503"),
        ("badjson", "malformed JSON"),
        ("slow", "timed out"),
    ],
)
def test_a_server_that_keeps_failing_is_named_after_the_retries(server, tokenizer, fault, cause):
    client = client_for(server.url, tokenizer, model="toy", retries=2, timeout=0.5)
    server.after = fault
    with pytest.raises(ServerError) as caught:
        client.logprob([ScoreRequest((1, 2), (3, 4))])
    message = str(caught.value)
    assert message.startswith(f"server {server.url}: no answer on /v1/completions after 3 attempts ("), (
        message
    )
    assert cause in message, message
    assert server.hits["/v1/completions"] == 3


def test_a_refused_connection_is_named_after_the_retries(tokenizer):
    from servers import free_port

    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(
        ServerError, match=rf"server {url}: no answer on /v1/models after 4 attempts \(URLError: "
    ):
        client_for(url, tokenizer, model=None).next_token_logprobs([NextTokenRequest((1, 2), (3, 4))])


def test_errors_that_retrying_cannot_fix_fail_at_once(server, tokenizer):
    client = client_for(server.url, tokenizer, model="toy")
    server.faults = ["400"]
    with pytest.raises(
        ServerError, match=rf"^server {server.url}: HTTP 400 on /v1/completions: injected 400$"
    ):
        client.next_token_logprobs([NextTokenRequest((1, 2), (3, 4))])
    assert server.hits["/v1/completions"] == 1
    for call, what in [
        (lambda: client.generate([GenRequest((1,), max_tokens=2)]), "choices"),
        (lambda: client.logprob([ScoreRequest((1, 2), (3,))]), "prompt log-probabilities"),
        (lambda: client.next_token_logprobs([NextTokenRequest((1,), (3,))]), "log-probabilities"),
    ]:
        server.faults = ["empty"]
        with pytest.raises(ServerError, match=rf"^server {server.url}: the answer .*{what}"):
            call()
    server.faults = ["empty"]
    with pytest.raises(ServerError, match=rf"^server {server.url}: the answer has no model id"):
        client_for(server.url, tokenizer, model=None).generate([GenRequest((1,), max_tokens=2)])


def test_streamed_requests_retry_too(server, tokenizer):
    client = client_for(server.url, tokenizer, model="toy")
    server.faults = ["503", "badjson", "slow"]
    tickets = client.submit("generate", [GenRequest((k, 1), max_tokens=2, seed=k) for k in range(4)])
    answers = {}
    while client.in_flight():
        answers.update(client.poll())
    assert sorted(answers) == tickets and all(len(a[0].token_ids) == 2 for a in answers.values())
    client.close()


@ppl.program
def two_words(lm, k):
    first = ppl.gen(lm, (1, 2, k), max_tokens=2, temperature=1.0)
    second = ppl.gen(lm, (1, 2, k, *first.token_ids), max_tokens=2, temperature=1.0)
    return first.token_ids + second.token_ids


def test_nothing_finished_is_lost_and_resuming_gives_the_uninterrupted_results(server, tokenizer):
    problems = list(range(6))
    algorithm = ImportanceSampling(2)
    client = client_for(server.url, tokenizer, model="toy", retries=1)
    uninterrupted = algorithm.run(two_words, [(client, k) for k in problems], seed=0, max_in_flight=2)
    # the server dies for good after 9 completions: some problems have finished by then
    server.hits.clear()
    server.faults, server.after = [None] * 9, "500"
    with pytest.raises(ppl.EngineError) as caught:
        algorithm.run(two_words, [(client, k) for k in problems], seed=0, max_in_flight=2)
    assert server.url in str(caught.value) and "HTTP 500" in str(caught.value)
    finished = caught.value.completed
    assert 0 < len(finished) < len(problems)
    for index, posterior in finished.items():
        assert [p.value for p in posterior.particles] == [p.value for p in uninterrupted[index].particles]
    # the server recovers; the rest runs with its own ids (in a fresh client, as a resumed
    # `tts eval` would) and matches the uninterrupted run
    server.after = None
    rest = [k for k in problems if k not in finished]
    fresh = client_for(server.url, tokenizer)
    resumed = algorithm.run(two_words, [(fresh, k) for k in rest], seed=0, ids=rest)
    for k, posterior in zip(rest, resumed):
        assert [p.value for p in posterior.particles] == [p.value for p in uninterrupted[k].particles]
        assert posterior.log_evidence == pytest.approx(uninterrupted[k].log_evidence)
