"""``tts serve`` as users reach it: a real server process on 127.0.0.1, the official ``openai``
client, the tabular backend. One server for the module (started and stopped here).

- chat, completions, ``n``, streaming and a per-request interpreter answer exactly what the
  same program, interpreter and seed give in process (``tts run``'s problem 0);
- 32 concurrent clients each get their own answer, with fewer engine calls than the same
  requests one after another;
- bad requests each get a 4xx with a clear message, and the server keeps serving;
- a client killed mid-request has its particles cancelled; the others are unaffected.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import pytest
from servers import TtsServe, wait_for

from ppl.algorithms import ALGORITHMS
from ppl.app import load
from ppl.app.records import hashable, jsonable

ECHO = Path(__file__).resolve().parent / "serve" / "echo.tts"
KEY = "test-key-0123456789"


@pytest.fixture(scope="module")
def server():
    serve = TtsServe(
        str(ECHO), "--max-particles", "64", "--max-tokens", "10000000", "--max-body", "20000",
        "--allow-source", "--timeout", "60", api_key=KEY,
    )  # fmt: skip
    try:
        yield serve.wait_healthy()
    finally:
        out = serve.stop()
        assert "draining" in out, out  # SIGTERM says what it does with the requests in flight


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def module():
    return load(ECHO)


def alone(module, question: str, seed: int, algorithm=None):
    """The posterior of the request run in process, as problem 0 of a run with ``seed``."""
    infer = module.infer
    algorithm = algorithm or infer.algorithm
    return algorithm.run(infer.program, [{"question": question}], seed=seed)[0]


def top(posterior, n: int = 1) -> list[str]:
    return [jsonable(v) for v in list(posterior.distribution(hashable))[:n]]


def chat(client, question: str, **kwargs):
    return client.chat.completions.create(
        model="echo", messages=[{"role": "user", "content": question}], **kwargs
    )


def test_models_lists_every_program(client):
    ids = [m.id for m in client.models.list().data]
    assert ids == ["echo:echo", "echo:spin", "echo"]


def test_a_chat_answers_what_the_program_gives_in_process(client, module):
    reply = chat(client, "What is 2+2?", seed=3)
    posterior = alone(module, "What is 2+2?", seed=3)
    assert reply.choices[0].message.content == top(posterior)[0]
    assert reply.choices[0].message.content.startswith("What is 2+2?: ")
    d = posterior.diagnostics
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (d.tokens_in, d.tokens_out)
    info = reply.model_extra["ppl"]
    assert info["algorithm"] == 'smc(particles = 8, ess = 0.5, resample = "systematic")'
    assert info["log_evidence"] == pytest.approx(posterior.log_evidence, abs=1e-12)
    assert info["log_weights"] == pytest.approx(posterior.log_weights, abs=1e-12)
    assert sum(p for _, p in info["distribution"]) == pytest.approx(1.0)


def test_completions_with_n_give_the_top_distinct_answers(client, module):
    reply = client.completions.create(model="echo:echo", prompt="Name a colour", n=3, seed=5)
    posterior = alone(module, "Name a colour", seed=5)
    assert [c.text for c in reply.choices] == top(posterior, 3)
    assert len({c.text for c in reply.choices}) == 3
    assert [c.index for c in reply.choices] == [0, 1, 2]


def test_streaming_sends_progress_then_the_answer(client, module):
    stream = chat(client, "Stream it", seed=2, stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    progress = [
        c.model_extra["ppl"]["progress"]
        for c in chunks
        if not c.choices and "progress" in (c.model_extra.get("ppl") or {})
    ]
    assert [p["step"] for p in progress] == sorted({p["step"] for p in progress}) and len(progress) >= 2
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == top(alone(module, "Stream it", seed=2))[0]
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage.completion_tokens == alone(module, "Stream it", seed=2).diagnostics.tokens_out
    assert chunks[-1].model_extra["ppl"]["ess"] > 0


def test_a_request_chooses_its_interpreter_and_settings(client, module):
    for name, settings in [("importance", {"particles": 6}), ("beam", {"beams": 2, "expand": 3})]:
        reply = chat(client, "Pick", extra_body={"ppl": {"algorithm": name, **settings, "seed": 7}})
        algorithm = ALGORITHMS[name].build(settings)
        assert reply.choices[0].message.content == top(alone(module, "Pick", 7, algorithm))[0]
        assert reply.model_extra["ppl"]["algorithm"].startswith(f"{name}(")
    reply = chat(client, "Pick", extra_body={"ppl": {"particles": 3, "resample": "stratified"}})
    assert reply.model_extra["ppl"]["algorithm"] == 'smc(particles = 3, ess = 0.5, resample = "stratified")'


def test_the_same_request_and_seed_give_the_same_answer(client):
    first = [chat(client, "Again", seed=s).choices[0].message.content for s in range(4)]
    again = [
        chat(client, "Again", extra_body={"ppl": {"seed": s}}).choices[0].message.content for s in range(4)
    ]
    assert first == again
    assert len(set(first)) > 1  # the seed matters


def engine_calls(server) -> float:
    return sum(v for k, v in server.metrics().items() if k.startswith("ppl:engine_calls_total"))


def test_32_concurrent_clients_share_engine_calls_and_get_their_own_answers(server, client, module):
    questions = [f"Question {i}?" for i in range(32)]
    before = engine_calls(server)
    sequential = [chat(client, q, seed=i).choices[0].message.content for i, q in enumerate(questions)]
    one_by_one = engine_calls(server) - before
    start = threading.Barrier(32)

    def ask(i):
        start.wait()
        return chat(client, questions[i], seed=i).choices[0].message.content

    before = engine_calls(server)
    with ThreadPoolExecutor(32) as pool:
        together = list(pool.map(ask, range(32)))
    shared = engine_calls(server) - before
    assert together == sequential
    assert together == [top(alone(module, q, seed=i))[0] for i, q in enumerate(questions)]
    assert shared < one_by_one, (shared, one_by_one)


def message(**extra) -> dict:
    return {"model": "echo", "messages": [{"role": "user", "content": "hi"}], **extra}


BAD = [
    ("malformed JSON", b'{"model": "echo", "messages": [', None, 400,
     "the request body is not valid JSON"),
    ("not UTF-8", b'{"model": "\xb2echo"}', None, 400,
     "the request body is not valid JSON (not UTF-8 text: invalid start byte)"),
    ("unknown model", message(model="nope"), None, 404,
     "the model 'nope' does not exist; the models are echo:echo, echo:spin, echo"),
    ("unknown interpreter", message(ppl={"algorithm": "magic"}), None, 400,
     "unknown interpreter 'magic'; the interpreters are adaptive, beam, best_of_n, dvts, enumerate, importance, mh, particle_gibbs, restarts, smc"),
    ("unknown setting", message(ppl={"algorithm": "smc", "particles": 4, "temperature": 2}), None, 400,
     "ppl: smc(): smc() has no setting 'temperature'; its settings are particles, ess, resample"),
    ("bad setting", message(ppl={"resample": "lucky"}), None, 400,
     "unknown resampling scheme 'lucky'"),
    ("absurd particles", message(ppl={"particles": 10**9}), None, 400,
     "ppl: smc() (particles = 1000000000) runs 1000000000 particles; this server allows at most 64 per request (--max-particles)"),
    ("absurd tokens", message(ppl={"max_tokens": 10**12}), None, 400,
     "ppl.max_tokens = 1000000000000 is more than this server allows per request (10000000, --max-tokens)"),
    ("absurd timeout", message(ppl={"timeout": 10**6}), None, 400,
     "ppl.timeout = 1e+06 s is more than this server allows (60 s, --timeout)"),
    ("sampling field", message(temperature=0.2), None, 400,
     "'echo' takes no 'temperature': its sampling is written in the program"),
    ("unknown field", message(colour="red"), None, 400, "unknown field 'colour'"),
    ("several messages", {"model": "echo", "messages": [{"role": "system", "content": "be nice"},
                                                         {"role": "user", "content": "hi"}]}, None, 400,
     "'echo' answers one user message and this request has 2 (system, user)"),
    ("no infer clause", message(model="echo:spin", ppl={"inputs": {"rounds": 3}}), None, 400,
     "'echo:spin' has no infer clause: choose an interpreter with ppl.algorithm"),
    ("wrong input type", message(model="echo:spin", ppl={"algorithm": "importance", "particles": 2,
                                                         "inputs": {"rounds": "many"}}), None, 400,
     "the input 'rounds' of 'echo:spin' must be a number, got \"many\""),
    ("not served", message(ppl={"algorithm": "enumerate"}), None, 400,
     "enumerate() does not run on the shared scheduler, so this server does not serve it"),
    ("oversize body", message(ppl={"inputs": {"pad": "x" * 30000}}), None, 413,
     "the request body is larger than this server takes (20000 bytes)"),
    ("missing key", message(), "", 401, "no API key: this server needs Authorization: Bearer KEY"),
    ("wrong key", message(), "not-the-key", 401, "the API key is wrong"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "body", "key", "status", "text"), BAD, ids=[b[0] for b in BAD])
def test_a_bad_request_gets_a_clear_4xx_and_the_server_keeps_serving(
    server, client, case, body, key, status, text
):
    response = server.post("/v1/chat/completions", body, key=KEY if key is None else (key or None))
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert text in error["message"], error
    assert set(error) == {"message", "type", "param", "code"} and "Traceback" not in response.text
    assert chat(client, "still there?", seed=1).choices[0].message.content.startswith("still there?: ")


def test_the_openai_client_reads_the_errors(client):
    with pytest.raises(openai.NotFoundError, match="the model 'nope' does not exist"):
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.AuthenticationError, match="the API key is wrong"):
        openai.OpenAI(base_url=str(client.base_url), api_key="wrong", max_retries=0).models.list()


def test_a_request_over_its_token_budget_is_cancelled(server, client):
    spin = {
        "model": "echo:spin",
        "ppl": {"algorithm": "importance", "particles": 4, "max_tokens": 50, "inputs": {"rounds": 10**6}},
    }
    response = server.post("/v1/chat/completions", {**spin, "messages": [{"role": "user", "content": "go"}]})
    assert response.status_code == 400
    assert "it generated more than its budget of 50 tokens" in response.json()["error"]["message"]


def test_a_request_that_takes_too_long_times_out_and_its_particles_are_cancelled(server):
    before = server.metrics().get('ppl:particles_cancelled_total{reason="timeout"}', 0)
    body = {"model": "echo:spin", "messages": [{"role": "user", "content": "slow"}],
            "ppl": {"algorithm": "importance", "particles": 5, "timeout": 0.5, "inputs": {"rounds": 10**6}}}  # fmt: skip
    response = server.post("/v1/chat/completions", body)
    assert response.status_code == 504
    assert response.json()["error"]["message"] == (
        "the request took longer than 0.5 s and was cancelled (ppl.timeout, --timeout)"
    )
    assert wait_for(
        lambda: server.metrics().get('ppl:particles_cancelled_total{reason="timeout"}', 0) == before + 5
    )


CLIENT = """
import sys, openai
client = openai.OpenAI(base_url=sys.argv[1], api_key=sys.argv[2], max_retries=0, timeout=600)
reply = client.chat.completions.create(model="echo:spin", messages=[{"role": "user", "content": "long"}],
    stream=sys.argv[3] == "stream",
    extra_body={"ppl": {"algorithm": "importance", "particles": 24, "inputs": {"rounds": 1000000}}})
for chunk in reply if sys.argv[3] == "stream" else ():
    pass
"""


@pytest.mark.parametrize("mode", ["whole", "stream"])
def test_a_killed_client_has_its_particles_cancelled_and_the_others_are_unaffected(
    server, client, module, mode
):
    before = server.metrics().get('ppl:particles_cancelled_total{reason="disconnected"}', 0)
    victim = subprocess.Popen([sys.executable, "-c", CLIENT, server.url + "/v1", KEY, mode])
    try:
        assert wait_for(lambda: server.metrics()["ppl:num_particles_running"] >= 24), server.tail()
        with ThreadPoolExecutor(4) as pool:  # other clients, in flight while the victim dies
            others = pool.map(
                lambda i: chat(client, f"Other {i}", seed=i).choices[0].message.content, range(4)
            )
            victim.kill()
            victim.wait(timeout=10)
            assert list(others) == [top(alone(module, f"Other {i}", seed=i))[0] for i in range(4)]
        cancelled = 'ppl:particles_cancelled_total{reason="disconnected"}'
        assert wait_for(lambda: server.metrics().get(cancelled, 0) == before + 24), server.metrics()
        assert wait_for(lambda: server.metrics()["ppl:num_particles_running"] == 0)
    finally:
        if victim.poll() is None:
            victim.kill()


SOURCE = """version 0.1
use lm = model("serve-test")
program shout(word: text) -> text {
  out ~ lm.gen(lm.encode(word), max_tokens = 3)
  return word + "!" + out.text
}
infer shout with importance(particles = 4)
"""


def test_a_request_may_carry_checked_source_on_a_server_that_allows_it(server, client):
    def shout(source: str, **ppl):
        messages = [{"role": "user", "content": "hey"}]
        return client.chat.completions.create(
            model="shout", messages=messages, extra_body={"ppl": {"source": source, **ppl}}
        )

    assert shout(SOURCE, seed=1).choices[0].message.content.startswith("hey!")
    bad = SOURCE.replace("max_tokens = 3", 'max_tokens = "3"')
    with pytest.raises(openai.BadRequestError, match=r"ppl.source does not check:\n<request>:4:"):
        shout(bad)
    other = SOURCE.replace('model("serve-test")', 'model("elsewhere")')
    with pytest.raises(
        openai.BadRequestError,
        match="this server runs no model 'elsewhere' on tabular; its models are serve-test",
    ):
        shout(other)
    with pytest.raises(openai.BadRequestError, match="runs 4000 particles; this server allows at most 64"):
        shout(SOURCE.replace("particles = 4", "particles = 4000"))
    with pytest.raises(openai.NotFoundError, match="ppl.source has no program 'echo'; it has shout"):
        chat(client, "hey", extra_body={"ppl": {"source": SOURCE}})


def test_health_and_metrics(server):
    request = urllib.request.Request(server.url + "/health", headers={"Authorization": f"Bearer {KEY}"})
    with urllib.request.urlopen(request) as response:
        assert json.loads(response.read()) == {"status": "ok"}
    samples = server.metrics()
    for name in ("ppl:num_requests_running", "ppl:num_requests_waiting", "ppl:num_particles_running",
                 'ppl:request_success_total{model_name="echo"}', 'ppl:generation_tokens_total{model_name="echo"}',
                 'ppl:prompt_tokens_total{model_name="echo"}', 'ppl:particles_total{model_name="echo"}'):  # fmt: skip
        assert name in samples, sorted(samples)
    assert samples['ppl:request_success_total{model_name="echo"}'] > 0


def tts_serve(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "ppl.app.cli", "serve", *args, "--port", "0"]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def test_serve_refuses_bad_files_and_options_before_binding(tmp_path):
    bad = tmp_path / "bad.tts"
    bad.write_text("version 0.1\nprogram f() -> text {\n  return 1\n}\n")
    done = tts_serve(str(bad))
    assert done.returncode == 1 and f"{bad}:3:" in done.stderr and "Traceback" not in done.stderr
    done = tts_serve(str(tmp_path / "nope.tts"))
    assert done.returncode == 1
    assert done.stderr.strip() == f"tts serve: cannot read {tmp_path / 'nope.tts'}: no such file"
    done = tts_serve(str(ECHO), "--queue", "-1")
    assert done.returncode == 2 and "tts serve: --queue must be at least 0, got -1" in done.stderr
