import os

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "default",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=bool(os.environ.get("CI")),
    print_blob=True,
)
settings.load_profile("default")


# --- the real engines, shared by tests/engine/ and the backend contract suite tests/backends/ ---
# Session-scoped and lazy: an engine starts only when an engine-tier test asks for it, so
# the fast tier (``-m "not engine"``) starts none and does not need vLLM.


# The engine tier runs the model in float32. In bfloat16, vLLM's CPU kernels on machines with
# bf16 matrix units (AVX512-BF16 / AMX) round differently by batch row: two identical seeded
# requests in one batch differed by up to 0.08 nats per token and drew different tokens, and
# greedy decoding flipped near-ties (measured 2026-12-02, docs/engines.md). In float32 the same
# engine is batch-invariant here, so the tests can hold it to exact promises. Production runs
# keep bfloat16 (2.4x the tokens/s on that machine); `--engine dtype=float32` buys reproducibility.
ENGINE_DTYPE = "float32"


@pytest.fixture(scope="session")
def default_lm():
    """The embedded default model on the vLLM offline engine, started once per session."""
    from ppl.backends.vllm import VLLM, _import_vllm

    _import_vllm()  # fails with the install command if vLLM is missing
    lm = VLLM(max_num_seqs=64, dtype=ENGINE_DTYPE)
    lm.engine  # noqa: B018 - start it once, here, so timings of tests are their own
    yield lm
    lm.close()


@pytest.fixture(scope="session")
def openai_servers():
    """Two real OpenAI-compatible vLLM servers on 127.0.0.1 serving the default model, started
    once per session (tests/servers.py). A test may kill one (test_openai_backend.py does):
    clients are built from the servers still alive."""
    from servers import Server

    from ppl.backends.embedded import prepare

    model = prepare()
    started = [Server(model), Server(model)]
    try:
        for server in started:
            server.wait_healthy()
        yield started
    finally:
        for server in started:
            server.stop()
