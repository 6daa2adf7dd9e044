"""Every module's docstring examples run (NumPyro's habit: each handler with a runnable example)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import ppl


def modules():
    names = []
    for package in ("ppl", "ppl.algorithms", "ppl.app", "ppl.backends", "ppl.grammar"):
        module = importlib.import_module(package)
        names.append(package)
        names += [f"{package}.{m.name}" for m in pkgutil.iter_modules(module.__path__) if not m.ispkg]
    return sorted(set(names))


@pytest.mark.parametrize("name", modules())
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0


def test_every_public_name_is_documented():
    for name in ppl.__all__:
        assert getattr(ppl, name).__doc__, name


def test_readme_python_blocks_run():
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, re.S)
    assert blocks
    for block in blocks:
        namespace: dict = {}
        exec(compile(block, "README.md", "exec"), namespace)
        assert namespace["posterior"].log_evidence > 0
