"""``tts serve --backend vllm`` with its engine-core process killed while requests are in flight.

What a user running it under a supervisor (systemd, Kubernetes) expects, and what is tested:

- requests that had finished were delivered whole (200, their answer and usage);
- requests in flight get a 5xx whose message names the cause (the engine process's exit
  code): a whole reply 502, a streamed one an error event;
- the server stops serving: /health answers 503 naming the cause while the replies in flight
  are sent, new requests get 503, then it exits with status 1 and says why on standard error
  (no traceback), so the supervisor restarts it.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import httpx
import psutil
from servers import TtsServe, in_background, wait_for

SOURCE = """version 0.1
use lm = model("smollm2-135m-instruct")
program solve(problem: text) -> text {
  let prompt = lm.chat(system = "Answer briefly.", user = problem)
  let steps: list[segment] = []
  step (max 2) {
    s ~ lm.gen(prompt + steps, stop = ["\\n"], max_tokens = 8, temperature = 0.8)
    steps += [s]
    if s.eos { finish }
  }
  return text(steps)
}
program long(problem: text) -> text {
  let prompt = lm.chat(user = problem)
  let steps: list[segment] = []
  step (max 1000) {
    s ~ lm.gen(prompt + steps, max_tokens = 16, temperature = 1.0)
    steps += [s]
  }
  return text(steps)
}
infer solve with smc(particles = 2)
"""

CAUSE = "the vLLM engine process exited (exit code -9)"


def ask(url: str, model: str, question: str, seed: int, stream: bool = False) -> httpx.Response:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": question}],
        "seed": seed,
        "stream": stream,
    }
    if model.endswith("long"):
        body["ppl"] = {"algorithm": "importance", "particles": 2}
    return httpx.post(url + "/v1/chat/completions", json=body, timeout=600)


def test_a_killed_engine_fails_the_requests_in_flight_with_its_cause_and_stops_the_server(tmp_path):
    path = tmp_path / "engine.tts"
    path.write_text(SOURCE)
    server = TtsServe(
        str(path), "--backend", "vllm", "--engine", "max_num_seqs=16",
        "--engine", "gpu_memory_utilization=0.1", "--timeout", "600",
    )  # fmt: skip
    try:
        server.wait_healthy(timeout=900)  # the engine starts before the server binds
        with ThreadPoolExecutor(3) as pool:
            finished = list(
                pool.map(lambda i: ask(server.url, "solve", f"Name a colour ({i}).", i), range(3))
            )
        for reply in finished:  # delivered whole
            assert reply.status_code == 200, reply.text
            body = reply.json()
            assert body["choices"][0]["message"]["content"].strip()
            assert body["usage"]["completion_tokens"] > 0 and body["ppl"]["algorithm"].startswith("smc(")

        whole, whole_reply = in_background(ask, server.url, "engine:long", "Tell a long story.", 1)
        streamed, stream_reply = in_background(ask, server.url, "engine:long", "Tell a story.", 2, True)
        assert wait_for(lambda: server.metrics()["ppl:num_particles_running"] >= 4, timeout=120)
        (core,) = [
            p for p in psutil.Process(server.process.pid).children(recursive=True) if "EngineCore" in p.name()
        ]
        core.kill()

        def health():
            try:
                return httpx.get(server.url + "/health", timeout=5)
            except httpx.TransportError as error:  # the server has exited already
                return error

        assert wait_for(
            lambda: not isinstance(h := health(), httpx.Response) or h.status_code != 200, timeout=60
        )
        checked = health()
        if isinstance(checked, httpx.Response):
            assert checked.status_code == 503, checked.text
            assert checked.json() == {
                "status": "engine failed",
                "error": f"the engine of smollm2-135m-instruct failed: {CAUSE}",
            }
        try:
            refused = ask(server.url, "solve", "Anyone there?", 4)
        except httpx.TransportError:
            pass  # the server has exited already
        else:
            assert refused.status_code == 503, refused.text
            assert refused.json()["error"]["message"] == (
                f"the engine of smollm2-135m-instruct failed: {CAUSE}; this server is stopping (restart it)"
            )
        whole.join(120)
        streamed.join(120)
        (reply,) = whole_reply
        assert reply.status_code == 502, reply.text
        assert CAUSE in reply.json()["error"]["message"], reply.text
        assert reply.json()["error"]["message"].startswith("the engine failed: ")
        (reply,) = stream_reply
        assert reply.status_code == 200  # the stream had begun: its error is an event
        events = [json.loads(line[6:]) for line in reply.text.splitlines() if line.startswith("data: {")]
        assert CAUSE in events[-1]["error"]["message"], reply.text
        assert server.process.wait(timeout=120) == 1
    finally:
        out = server.stop()
    assert f"tts serve: the engine of smollm2-135m-instruct failed: {CAUSE}; stopping" in out, out
    assert "tts serve: stopped (the engine of smollm2-135m-instruct failed:" in out, out
    assert "Traceback" not in out, out
