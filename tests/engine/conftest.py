"""The engine tier: the embedded default model on the real vLLM engine (CPU build here).

Every test in this folder is marked ``engine``. The engine starts once per test session
(~30 s) and is shared. Without vLLM the tests fail with the install command — run the
fast tier alone with ``-m "not engine"``.
"""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(items):
    for item in items:
        if "/tests/engine/" in str(item.fspath):
            item.add_marker(pytest.mark.engine)


@pytest.fixture(scope="session")
def default_lm():
    from ppl.backends.vllm import VLLM, _import_vllm

    _import_vllm()  # fails with the install command if vLLM is missing
    lm = VLLM(max_num_seqs=64)
    lm.engine  # noqa: B018 - start it once, here, so timings of tests are their own
    yield lm
    lm.close()
