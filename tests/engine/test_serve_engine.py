"""``tts serve --backend vllm``: the embedded default model behind the OpenAI endpoint, reached
with the official client. One server (and one engine) for the module.

- a chat request and a streamed one get real generations, with usage and the ``ppl`` field;
- concurrent requests are all answered by the one engine;
- a client that goes away has its particles cancelled and its requests aborted in the engine.
"""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest
from servers import TtsServe, wait_for

SOURCE = """version 0.1
use lm = model("smollm2-135m-instruct")
program solve(problem: text) -> text {
  let prompt = lm.chat(system = "Answer briefly.", user = problem)
  let steps: list[segment] = []
  step (max 2) {
    s ~ lm.gen(prompt + steps, stop = ["\\n"], max_tokens = 16, temperature = 0.8)
    steps += [s]
    if s.eos { finish }
  }
  return text(steps)
}
program long(problem: text) -> text {
  let prompt = lm.chat(user = problem)
  let steps: list[segment] = []
  step (max 1000) {
    s ~ lm.gen(prompt + steps, max_tokens = 64, temperature = 1.0)
    steps += [s]
  }
  return text(steps)
}
infer solve with smc(particles = 2)
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    path = tmp_path_factory.mktemp("serve") / "engine.tts"
    path.write_text(SOURCE)
    serve = TtsServe(str(path), "--backend", "vllm", "--engine", "max_num_seqs=32", "--timeout", "600")
    try:
        yield serve.wait_healthy(timeout=900)  # the engine starts before the server binds
    finally:
        serve.stop()


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0, timeout=600)


def ask(client, question: str, **kwargs):
    return client.chat.completions.create(
        model="solve", messages=[{"role": "user", "content": question}], **kwargs
    )


def test_chat_and_streaming_get_real_generations(client):
    reply = ask(client, "What is 2 + 2?", seed=1)
    assert reply.choices[0].message.content.strip()
    assert reply.usage.completion_tokens > 0 and reply.usage.prompt_tokens > 0
    assert reply.model_extra["ppl"]["algorithm"].startswith("smc(particles = 2")
    chunks = list(ask(client, "Name a colour.", seed=2, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).strip()


def test_usage_counts_the_prompt_tokens_served_from_the_prefix_cache(client):
    question = "A farmer keeps chickens, ducks and geese. " * 16 + "How many kinds of bird does she keep?"
    reply = ask(client, question, seed=3)
    usage = reply.usage
    # the second step's prompts repeat the question, whose full 128-token KV blocks are cached by then
    assert usage.prompt_tokens_details.cached_tokens >= 128, usage
    assert usage.prompt_tokens_details.cached_tokens < usage.prompt_tokens


def test_concurrent_requests_share_the_engine(server, client):
    with ThreadPoolExecutor(6) as pool:
        replies = list(pool.map(lambda i: ask(client, f"Count to {i}.", seed=i), range(6)))
    assert all(r.choices[0].message.content.strip() for r in replies)
    assert server.metrics()['ppl:request_success_total{model_name="solve"}'] >= 6


CLIENT = """
import sys, openai
client = openai.OpenAI(base_url=sys.argv[1], api_key="none", max_retries=0, timeout=600)
client.chat.completions.create(model="engine:long", messages=[{"role": "user", "content": "Tell a long story."}],
    extra_body={"ppl": {"algorithm": "importance", "particles": 4}})
"""


def test_a_client_that_goes_away_has_its_engine_requests_aborted(server, client):
    victim = subprocess.Popen([sys.executable, "-c", CLIENT, server.url + "/v1"])
    try:
        wait_for(lambda: server.metrics()["ppl:num_particles_running"] >= 4, timeout=120, every=0.2)
        victim.kill()
        victim.wait(timeout=10)
        cancelled = 'ppl:particles_cancelled_total{reason="disconnected"}'
        assert wait_for(lambda: server.metrics().get(cancelled, 0) >= 4, timeout=60, every=0.2)
        assert ask(client, "Still there?", seed=3).choices[0].message.content.strip()
        assert server.metrics()["ppl:num_particles_running"] == 0
    finally:
        if victim.poll() is None:
            victim.kill()
