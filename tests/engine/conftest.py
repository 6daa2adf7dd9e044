"""The engine tier: the embedded default model on the real vLLM engine (CPU build here).

Every test in this folder is marked ``engine``. The engine starts once per test session
(~30 s) and is shared with the backend contract suite (tests/backends/): the fixtures
``default_lm`` and ``openai_servers`` live in ``tests/conftest.py``. Without vLLM the tests
fail with the install command — run the fast tier alone with ``-m "not engine"``.
"""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(items):
    for item in items:
        if "/tests/engine/" in str(item.fspath):
            item.add_marker(pytest.mark.engine)
