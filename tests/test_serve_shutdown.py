"""``tts serve`` under load and at shutdown (each test its own server, stopped by SIGTERM):

- beyond the particles in flight requests queue, and beyond the queue they get 429 with
  ``Retry-After``;
- SIGTERM with ``--on-sigterm cancel`` cancels the requests in flight (their clients get
  503 saying so) and the server says on standard error how many it cancelled;
- SIGTERM with the default ``drain`` lets a request in flight finish and says so.
"""

from __future__ import annotations

import json
import signal
import threading
from pathlib import Path

import httpx
from servers import TtsServe, in_background, wait_for

ECHO = Path(__file__).resolve().parent / "serve" / "echo.tts"


def spin(url: str, rounds: int, particles: int = 8) -> httpx.Response:
    body = {
        "model": "echo:spin",
        "messages": [{"role": "user", "content": "wait"}],
        "ppl": {"algorithm": "importance", "particles": particles, "inputs": {"rounds": rounds}},
    }
    return httpx.post(url + "/v1/chat/completions", json=body, timeout=120)


def test_a_full_queue_gets_429_and_sigterm_cancels_what_is_in_flight():
    server = TtsServe(str(ECHO), "--in-flight", "8", "--queue", "1", "--on-sigterm", "cancel").wait_healthy()
    try:
        running, first = in_background(spin, server.url, 10**6)
        assert wait_for(lambda: server.metrics()["ppl:num_requests_running"] == 1)
        waiting, second = in_background(spin, server.url, 10**6)
        assert wait_for(lambda: server.metrics()["ppl:num_requests_waiting"] == 1)
        refused = spin(server.url, 3)
        assert refused.status_code == 429 and refused.headers["Retry-After"] == "1"
        assert refused.json()["error"]["message"] == (
            "the server is busy: 1 requests are waiting already (--queue 1); retry later"
        )
    finally:
        out = server.stop(signal.SIGTERM)
    running.join(30)
    waiting.join(30)
    assert "tts serve: shutting down: cancelling 2 requests in flight" in out, out
    for response in (first[0], second[0]):
        assert response.status_code == 503
        assert response.json()["error"]["message"] == "the request was cancelled: the server is shutting down"
    assert "tts serve: stopped (cancelled 2 requests)" in out and "Traceback" not in out


def spin_streamed(url: str, rounds: int, started: threading.Event) -> tuple[int, str]:
    """A streamed ``spin`` request: sets ``started`` at its first progress event (so the
    request is in flight, whatever the machine's speed), then reads the answer to the end."""
    body = {
        "model": "echo:spin",
        "messages": [{"role": "user", "content": "wait"}],
        "stream": True,
        "ppl": {"algorithm": "importance", "particles": 4, "inputs": {"rounds": rounds}},
    }
    text = []
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=120) as response:
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[len("data: ") :])
            if "progress" in (chunk.get("ppl") or {}):
                started.set()
            for choice in chunk.get("choices", []):
                text.append(choice["delta"].get("content") or "")
        return response.status_code, "".join(text)


def test_sigterm_drains_a_request_in_flight_by_default():
    server = TtsServe(str(ECHO)).wait_healthy()
    started = threading.Event()
    try:
        thread, answer = in_background(spin_streamed, server.url, 5000, started)
        assert started.wait(30), server.tail()
    finally:
        out = server.stop(signal.SIGTERM)
    thread.join(30)
    assert "tts serve: shutting down: draining 1 request in flight" in out, out
    assert answer == [(200, "wait")], out
    assert "tts serve: stopped (drained 1 request)" in out


def test_a_drain_that_runs_out_of_time_cancels_what_is_left_and_says_so():
    server = TtsServe(str(ECHO), "--drain-timeout", "1").wait_healthy()
    try:
        thread, answer = in_background(lambda: _quietly(spin, server.url, 10**6, 4))
        assert wait_for(lambda: server.metrics()["ppl:num_requests_running"] == 1)
    finally:
        out = server.stop(signal.SIGTERM)
    thread.join(30)
    assert "tts serve: shutting down: draining 1 request in flight (up to 1.0 s" in out, out
    assert "tts serve: stopped (drained 0 of 1 requests; 1 not finished within 1.0 s were cancelled)" in out
    assert not isinstance(answer[0], httpx.Response) or answer[0].status_code != 200


def _quietly(fn, *args):
    try:
        return fn(*args)
    except httpx.HTTPError as error:  # the connection closes without a reply
        return error
