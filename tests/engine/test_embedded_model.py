"""The embedded default model is converted for real, once, into a fresh cache directory."""

from __future__ import annotations

import json

from ppl.backends import embedded


def test_prepare_converts_the_gguf_into_a_loadable_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("PPL_CACHE_DIR", str(tmp_path))
    messages: list[str] = []
    path = embedded.prepare(progress=messages.append)
    assert embedded.is_prepared(embedded.DEFAULT_MODEL)
    assert {"config.json", "tokenizer.json", embedded.MARKER} <= {p.name for p in path.iterdir()}
    assert json.loads((path / embedded.MARKER).read_text())["name"] == embedded.DEFAULT_MODEL
    assert messages[0].startswith("preparing") and messages[-1].startswith("prepared")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    assert tokenizer.eos_token_id == 2 and tokenizer.chat_template
    rows = embedded.list_models()
    assert rows[0]["prepared"] and rows[0]["package_installed"]
