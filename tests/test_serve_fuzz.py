"""Fuzzing ``tts serve``'s request bodies: a real server on 127.0.0.1 (tests/serve/echo.tts,
the tabular backend), thousands of random bodies sent to both endpoints.

Bodies are drawn by hypothesis three ways: any JSON value (nested lists and objects, huge
and negative numbers, NaN and infinities, odd text); request-shaped objects whose fields —
the OpenAI ones, ``ppl`` with interpreter names, settings, inputs and ``.tts`` source — take
plausible or random values; and raw bytes (truncated requests, binary). Each must be
answered within its time limit (60 s) with 200 (a whole reply, or a stream of JSON events ending
in ``[DONE]`` or an error event) or a 4xx whose body is an OpenAI-style JSON error with a
message — never another 5xx (the one exception: 504 for a request that set its own
``ppl.timeout``), a traceback in the server's log, or a hang. Afterwards the server is
healthy, still answers a plain request, and counted no internal error. The counts are
asserted: BODIES bodies (2,000), at least a twentieth of them served (200), at least half
refused (4xx), and some streamed.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from servers import TtsServe

ECHO = Path(__file__).resolve().parent / "serve" / "echo.tts"
BODIES = 2000  # bodies sent (hypothesis examples); each is one request
LIMIT = 60.0  # seconds per request: past it, a hang (generous: a starved CPU is not a hang)

NUMBERS = st.one_of(
    st.integers(min_value=-3, max_value=40),
    st.integers(),
    st.sampled_from([2**31, 2**63, 2**64 + 1, -(2**63), 10**100]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 0.5, 1e-300, 1e308, math.inf, -math.inf, math.nan]),
)
TEXT = st.one_of(
    st.text(max_size=30),
    st.sampled_from(["", " ", "\x00", "echo", "\ud7ff\ue000", "é" * 50, "{", "null", "\n\n"]),
)
SCALAR = st.one_of(st.none(), st.booleans(), NUMBERS, TEXT)
JSON = st.recursive(
    SCALAR,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=12,
)


def maybe(plausible) -> st.SearchStrategy:
    """Mostly a plausible value, sometimes any JSON."""
    return st.one_of(plausible, plausible, plausible, JSON)


SOURCE = """version 0.1
use lm = model("serve-test")
program shout(word: text) -> text {
  out ~ lm.gen(lm.encode(word), max_tokens = 3)
  return word + "!" + out.text
}
infer shout with importance(particles = 4)
"""
SOURCES = st.one_of(
    st.just(SOURCE),
    st.builds(lambda cut: SOURCE[:cut], st.integers(0, len(SOURCE))),
    st.builds(
        lambda old, new: SOURCE.replace(old, new),
        st.sampled_from(["particles = 4", "max_tokens = 3", '"serve-test"', "text", "word", "+"]),
        TEXT,
    ),
    TEXT,
)
ALGORITHMS = ["smc", "importance", "beam", "best_of_n", "dvts", "mh", "particle_gibbs", "enumerate", "magic"]
SETTINGS = ["particles", "ess", "resample", "beams", "expand", "chains", "steps", "n", "rounds", "x"]
PPL = st.fixed_dictionaries(
    {},
    optional={
        "algorithm": maybe(st.sampled_from(ALGORITHMS)),
        "seed": maybe(NUMBERS),
        "inputs": maybe(
            st.dictionaries(st.sampled_from(["rounds", "question", "pad", "x"]), JSON, max_size=3)
        ),
        "max_tokens": maybe(NUMBERS),
        "timeout": maybe(st.floats(0.001, 30) | NUMBERS),
        "source": maybe(SOURCES),
        **{
            name: maybe(NUMBERS | st.sampled_from(["systematic", "stratified", "multinomial", "lucky"]))
            for name in SETTINGS
        },
    },
)
ROLES = st.sampled_from(["user", "system", "assistant", "developer", "tool", "function", "robot"])
MESSAGE = st.fixed_dictionaries(
    {"role": maybe(ROLES)},
    optional={
        "content": maybe(
            TEXT
            | st.lists(
                st.fixed_dictionaries({"type": maybe(st.just("text")), "text": maybe(TEXT)}), max_size=3
            )
        ),
        "name": maybe(TEXT),
    },
)
FIELDS = {
    "model": maybe(st.sampled_from(["echo", "echo:echo", "echo:spin", "shout", "nope", ""])),
    "messages": maybe(st.lists(MESSAGE, max_size=3)),
    "prompt": maybe(TEXT | st.lists(TEXT, max_size=2)),
    "n": maybe(NUMBERS),
    "seed": maybe(NUMBERS),
    "stream": maybe(st.booleans()),
    "stream_options": maybe(st.fixed_dictionaries({}, optional={"include_usage": maybe(st.booleans())})),
    "user": maybe(TEXT),
    "metadata": maybe(st.dictionaries(TEXT, TEXT, max_size=2)),
    "ppl": maybe(PPL),
    "temperature": JSON,
    "max_tokens": JSON,
    "stop": JSON,
    "colour": JSON,
}
REQUEST = st.fixed_dictionaries({}, optional=FIELDS)
SANE_PPL = st.one_of(  # settings a request may well have
    st.fixed_dictionaries({}, optional={"particles": st.integers(1, 16), "seed": st.integers(0, 99)}),
    st.fixed_dictionaries(
        {"algorithm": st.sampled_from(["importance", "best_of_n"]), "particles": st.integers(1, 16)},
        optional={"timeout": st.floats(0.001, 5)},
    ),
    st.fixed_dictionaries(
        {"algorithm": st.just("beam"), "beams": st.integers(1, 4), "expand": st.integers(1, 4)}
    ),
    st.fixed_dictionaries(
        {
            "algorithm": st.just("importance"),
            "particles": st.integers(1, 4),
            "inputs": st.fixed_dictionaries({"rounds": NUMBERS}),
        }
    ),
    PPL,
)
OPTIONAL = {k: FIELDS[k] for k in ("n", "seed", "stream", "stream_options")} | {"ppl": SANE_PPL}
MODELS = st.sampled_from(["echo", "echo:echo", "echo:spin"])
CHAT = st.fixed_dictionaries(  # the fields a request needs, and a few more
    {
        "model": MODELS,
        "messages": st.lists(
            st.fixed_dictionaries({"role": st.just("user"), "content": TEXT}), min_size=1, max_size=1
        ),
    },
    optional=OPTIONAL,
)
COMPLETION = st.fixed_dictionaries({"model": MODELS, "prompt": TEXT}, optional=OPTIONAL)
CHAT_PATH, COMPLETION_PATH = "/v1/chat/completions", "/v1/completions"
PATHS = st.sampled_from([CHAT_PATH, COMPLETION_PATH])


def cut(body: dict, at: int) -> bytes:
    return json.dumps(body).encode()[:at]


BODY = st.one_of(  # (path, "json" or "bytes", the body)
    st.tuples(PATHS, st.just("json"), JSON),
    st.tuples(PATHS, st.just("json"), REQUEST),
    st.tuples(st.just(CHAT_PATH), st.just("json"), CHAT),
    st.tuples(st.just(COMPLETION_PATH), st.just("json"), COMPLETION),
    st.tuples(PATHS, st.just("bytes"), st.binary(max_size=200)),
    st.tuples(st.just(CHAT_PATH), st.just("bytes"), st.builds(cut, CHAT, st.integers(0, 200))),
)


def own_timeout(body) -> bool:
    """Whether the body set ``ppl.timeout`` (a 504 is then its own choice)."""
    return isinstance(body, dict) and isinstance(body.get("ppl"), dict) and "timeout" in body["ppl"]


def outcome(response: httpx.Response, body) -> str:
    """What the server answered, checked: "ok", "stream ok", "stream error", "4xx" or "timeout"."""
    text = response.text
    assert "Traceback" not in text, text
    status = response.status_code
    if status == 200 and response.headers["content-type"].startswith("text/event-stream"):
        events = [line[6:] for line in text.splitlines() if line.startswith("data: ")]
        assert events, text
        parsed = [json.loads(e) for e in events if e != "[DONE]"]
        if events[-1] == "[DONE]":
            assert parsed[-1]["ppl"]["program"], text
            return "stream ok"
        error = parsed[-1]["error"]
        assert error["message"] and (error["type"] != "server_error" or error["code"] == "timeout"), text
        assert error["code"] != "timeout" or own_timeout(body), text
        return "stream error"
    reply = response.json()
    if status == 200:
        assert reply["choices"] and all(
            isinstance(c.get("message", c).get("content", c.get("text")), str) for c in reply["choices"]
        ), text
        return "ok"
    error = reply["error"]
    assert set(error) == {"message", "type", "param", "code"} and isinstance(error["message"], str), text
    assert error["message"].strip(), text
    if status == 504 and error["code"] == "timeout" and own_timeout(body):
        return "timeout"
    assert 400 <= status < 500, (status, text)
    return "4xx"


@pytest.fixture(scope="module")
def server():
    serve = TtsServe(
        str(ECHO), "--max-particles", "16", "--max-tokens", "400", "--max-body", "20000",
        "--allow-source", "--timeout", "20", "--queue", "64",
    )  # fmt: skip
    try:
        yield serve.wait_healthy()
    finally:
        log = serve.stop()
        assert "Traceback" not in log and "internal error" not in log, log[-4000:]


@pytest.mark.slow
def test_random_request_bodies_get_200_or_a_clear_4xx_never_a_5xx_or_a_hang(server):
    counts: Counter = Counter()
    with httpx.Client(base_url=server.url, timeout=LIMIT) as client:

        @settings(max_examples=BODIES, database=None, suppress_health_check=list(HealthCheck), deadline=None)
        @given(body=BODY)
        def one(body):
            path, kind, value = body
            content = value if kind == "bytes" else json.dumps(value).encode()
            try:
                response = client.post(path, content=content, headers={"Content-Type": "application/json"})
            except httpx.TimeoutException:
                raise AssertionError(f"no answer within {LIMIT} s to {content[:300]!r}") from None
            counts[outcome(response, value if kind == "json" else None)] += 1
            counts["bodies"] += 1

        one()
        health = client.get("/health")
        assert health.status_code == 200 and health.json() == {"status": "ok"}
        plain = {"model": "echo", "messages": [{"role": "user", "content": "still there?"}], "seed": 1}
        assert (
            client.post("/v1/chat/completions", json=plain)
            .json()["choices"][0]["message"]["content"]
            .startswith("still there?: ")
        )
    samples = server.metrics()
    assert samples.get('ppl:request_failure_total{reason="internal"}', 0) == 0
    assert "Traceback" not in server.tail()
    print(f"\nserve fuzz: {dict(counts)}")
    assert counts["bodies"] >= BODIES  # hypothesis may try more while it explores; never fewer
    assert counts["ok"] + counts["stream ok"] >= BODIES // 20, counts  # real requests were served
    assert counts["4xx"] >= BODIES // 2 and counts["stream ok"] >= 1, counts
