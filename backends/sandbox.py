"""Run generated Python code in a sandboxed subprocess: never in the library's own process.

``run_code(code)`` / ``run_tests(code, tests)`` start a fresh ``python -I`` child for every
run and return a ``SandboxResult`` with a status:

| status | meaning |
|---|---|
| ``passed`` | the code ran to the end (or exited with status 0) |
| ``failed`` | an ``AssertionError``, or ``sys.exit`` with a non-zero status (a failed test) |
| ``error`` | any other exception, or the child died of a signal |
| ``timeout`` | wall-time (or CPU-time) limit reached: the whole process group was killed |
| ``memory`` | the memory limit was reached (``MemoryError``) |
| ``blocked`` | the code tried something the sandbox forbids (network, writing outside its directory, starting processes, ctypes) |

What is enforced, and where:

* **Time** — in the parent: the child leads its own process group (``start_new_session``)
  and the whole group gets SIGKILL at the wall-time limit. In the child: ``RLIMIT_CPU`` as
  a second stop.
* **Memory** — in the child, before the code runs: ``RLIMIT_AS`` (address space), so an
  allocation beyond the limit raises ``MemoryError``. Also ``RLIMIT_FSIZE`` (files and
  captured output at most ``output_limit_bytes``) and ``RLIMIT_CORE`` = 0.
* **No network** — by the kernel when possible: the child starts inside a new, empty
  network namespace (``unshare -n``, needs root or user namespaces; ``network_namespace``
  in the result says whether it did). Always, in the child: an audit hook (PEP 578)
  refuses to create sockets.
* **Files** — a fresh temporary directory is the child's working directory, ``HOME`` and
  ``TMPDIR``, deleted afterwards. The audit hook refuses every open-for-writing, remove,
  rename, mkdir, chmod, link and truncate whose path resolves (symlinks followed) outside
  it. Reading is not restricted.
* **No escape from the hook** — the hook also refuses starting processes
  (``subprocess``, ``os.system``, ``exec*``, ``fork``, ``posix_spawn``) and ``ctypes``,
  which would run code the hook does not see. ``-I`` (isolated mode) ignores ``PYTHON*``
  environment variables, the user's site directory and the current directory on
  ``sys.path``; the environment is reduced to ``PATH``, ``HOME``, ``TMPDIR`` and ``LANG``.

The child runs as the same user as the parent: the audit hook is in-process, so code that
finds a way around Python's audit events (a C extension already imported, for one) is
contained only by the rlimits, the namespace and the kill. Treat the status as a grade of
honest code, not as proof against code written to cheat the grader (``os._exit(0)``
reports ``passed``).

    >>> from ppl.backends.sandbox import run_code, run_tests
    >>> run_code("print(6 * 7)").stdout
    '42\\n'
    >>> run_tests("def add(a, b):\\n    return a + b", "assert add(2, 2) == 5").status
    'failed'
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

STATUSES = ("passed", "failed", "error", "timeout", "memory", "blocked")

# Exit statuses of the bootstrap below (the code's own sys.exit(n) maps n > 0 to 1).
_FAILED, _ERROR, _MEMORY, _BLOCKED = 1, 2, 3, 4
_BLOCKED_MARK = "ppl-sandbox: blocked: "

# Runs in the child (python -I -c): limits, the audit hook, then the code as __main__.
_BOOTSTRAP = r"""
import os, resource, signal, sys, traceback, types
root, script, memory, cpu, fsize = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
source = open(script, encoding="utf-8").read()
root = os.path.realpath(root)

class SandboxViolation(PermissionError):
    pass

def _inside(path):
    try:
        path = os.fsdecode(path)
    except TypeError:
        return True  # a file descriptor: opened already, under the same rules
    full = os.path.realpath(path)
    return full == root or full.startswith(root + os.sep)

def _refuse(what):
    sys.stderr.write("ppl-sandbox: blocked: " + what + "\n")
    raise SandboxViolation("ppl sandbox: " + what + " is not allowed")

_PATH_EVENTS = {"os.remove", "os.rmdir", "os.mkdir", "os.chmod", "os.chown", "os.truncate",
                "os.utime", "shutil.rmtree", "os.link", "os.symlink", "os.rename", "shutil.copyfile",
                "shutil.copytree", "shutil.move"}
_PROCESS_EVENTS = {"subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn",
                   "os.fork", "os.forkpty", "pty.spawn", "os.startfile", "os.kill", "os.killpg"}

def _hook(event, args):
    if event == "open":
        path, mode, flags = args
        writing = (mode is not None and any(c in str(mode) for c in "wax+")) or (
            isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC))
        if writing and path is not None and not _inside(path):
            _refuse("writing outside the sandbox directory (" + str(path) + ")")
    elif event.startswith("socket.") and event in ("socket.__new__", "socket.connect", "socket.bind",
                                                    "socket.getaddrinfo", "socket.sendto", "socket.socketpair"):
        _refuse("network access (" + event + ")")
    elif event in _PROCESS_EVENTS:
        _refuse("starting or signalling processes (" + event + ")")
    elif event.startswith("ctypes."):
        _refuse("ctypes (" + event + ")")
    elif event in _PATH_EVENTS:
        paths = [a for a in args if isinstance(a, (str, bytes, os.PathLike))]
        if event in ("os.symlink",):
            paths = paths[1:]  # the link itself; its target is checked when opened
        for p in paths:
            if not _inside(p):
                _refuse(event + " outside the sandbox directory (" + str(p) + ")")

def _finish(status, show_traceback=False):
    if show_traceback:
        traceback.print_exc()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:
            pass
    os._exit(status)

sys.dont_write_bytecode = True  # no __pycache__ writes (they would be refused outside the directory)
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # too much output: an OSError, not a silent death
sys.argv = ["main.py"]
sys.addaudithook(_hook)
main = types.ModuleType("__main__")  # a real __main__, so unittest.main() finds the tests
main.__file__ = "main.py"
sys.modules["__main__"] = main
try:
    exec(compile(source, "main.py", "exec"), main.__dict__)
except SystemExit as stop:
    if stop.code in (None, 0):
        _finish(0)
    if not isinstance(stop.code, int):
        sys.stderr.write(str(stop.code) + "\n")
    _finish(1)
except MemoryError:
    _finish(3, True)
except SandboxViolation:
    _finish(4, True)
except AssertionError:
    _finish(1, True)
except BaseException:
    _finish(2, True)
_finish(0)
"""


@dataclass(frozen=True)
class SandboxResult:
    """How a sandboxed run ended (``status``, one of ``STATUSES``) and what it printed (truncated)."""

    status: str
    stdout: str
    stderr: str
    returncode: int | None
    wall_time: float
    reason: str = ""
    network_namespace: bool = False

    @property
    def passed(self) -> bool:
        return self.status == "passed"


@dataclass(frozen=True)
class Sandbox:
    """Limits for sandboxed runs; ``run`` and ``run_many`` apply them.

    ``time_limit`` (seconds of wall time), ``memory_limit_mb`` (address space),
    ``output_limit_bytes`` (per captured stream and per file written), ``namespace`` ("auto":
    a new network namespace when ``unshare -n`` works here; "never"; "always": fail if not),
    ``python``: the interpreter of the child (default: this one).
    """

    time_limit: float = 10.0
    memory_limit_mb: int = 512
    output_limit_bytes: int = 1 << 20
    show_chars: int = 4000
    namespace: str = "auto"
    python: str = sys.executable

    def __post_init__(self):
        if not self.time_limit > 0:
            raise ValueError(f"time_limit must be positive, got {self.time_limit}")
        if self.memory_limit_mb < 64:
            raise ValueError(
                f"memory_limit_mb must be at least 64 (Python itself needs it), got {self.memory_limit_mb}"
            )
        if self.namespace not in ("auto", "never", "always"):
            raise ValueError(f"namespace must be 'auto', 'never' or 'always', got {self.namespace!r}")

    def _prefix(self) -> list[str]:
        if self.namespace == "never":
            return []
        unshare = shutil.which("unshare")
        works = False
        if unshare is not None:
            try:
                works = (
                    subprocess.run([unshare, "-n", "true"], capture_output=True, timeout=10).returncode == 0
                )
            except (OSError, subprocess.TimeoutExpired):
                works = False
        if works:
            return [unshare, "-n"]
        if self.namespace == "always":
            raise RuntimeError("the sandbox cannot create a network namespace here (`unshare -n` fails)")
        return []

    def run(self, code: str, *, prefix: list[str] | None = None) -> SandboxResult:
        """Run ``code`` as ``__main__`` in a fresh sandboxed child; never raises for the code's faults."""
        if not isinstance(code, str):
            raise TypeError(f"code must be a str, got {type(code).__name__}")
        prefix = self._prefix() if prefix is None else prefix
        with (
            tempfile.TemporaryDirectory(prefix="ppl-sandbox-") as root,
            tempfile.TemporaryDirectory(prefix="ppl-sandbox-out-") as outdir,
        ):
            script = os.path.join(outdir, "main.py")
            with open(script, "w", encoding="utf-8") as f:
                f.write(code)
            memory = self.memory_limit_mb * 1024 * 1024
            cpu = max(1, int(self.time_limit) + 1)
            command = [
                *prefix,
                self.python,
                "-I",
                "-c",
                _BOOTSTRAP,
                root,
                script,
                str(memory),
                str(cpu),
                str(self.output_limit_bytes),
            ]
            env = {"PATH": "/usr/bin:/bin", "HOME": root, "TMPDIR": root, "LANG": "C.UTF-8"}
            out_path, err_path = os.path.join(outdir, "stdout"), os.path.join(outdir, "stderr")
            started = time.perf_counter()
            timed_out = False
            with open(out_path, "wb") as out, open(err_path, "wb") as err:
                child = subprocess.Popen(
                    command,
                    cwd=root,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                    start_new_session=True,
                )
                try:
                    child.wait(timeout=self.time_limit)
                except subprocess.TimeoutExpired:
                    timed_out = True
                finally:
                    _kill_group(child)
            wall = time.perf_counter() - started
            stdout, stderr = _read(out_path, self.show_chars), _read(err_path, self.show_chars)
        return _result(child.returncode, timed_out, stdout, stderr, wall, bool(prefix))

    def run_many(self, codes: Sequence[str], *, workers: int = 2) -> list[SandboxResult]:
        """Run each code in its own child, ``workers`` at a time; one result per code, in order."""
        prefix = self._prefix()
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            return list(pool.map(lambda code: self.run(code, prefix=prefix), codes))


def _kill_group(child: subprocess.Popen) -> None:
    """SIGKILL the child's whole process group (it leads it), then reap the child."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child.pid, signal.SIGKILL)
    child.wait()


def _read(path: str, limit: int) -> str:
    with open(path, "rb") as f:
        data = f.read(limit * 4 + 4)
    text = data.decode("utf-8", errors="replace")
    return text if len(text) <= limit else text[:limit] + "\n[... truncated]"


def _result(
    code: int | None, timed_out: bool, stdout: str, stderr: str, wall: float, ns: bool
) -> SandboxResult:
    blocked = [line[len(_BLOCKED_MARK) :] for line in stderr.splitlines() if line.startswith(_BLOCKED_MARK)]
    if timed_out:
        status, reason = "timeout", f"killed after {wall:.1f} s"
    elif code == 0:
        status, reason = "passed", ""
    elif code == _MEMORY:
        status, reason = "memory", "the memory limit was reached"
    elif code == _BLOCKED or blocked:
        status, reason = "blocked", blocked[0] if blocked else "a forbidden operation"
    elif code == _FAILED:
        status, reason = "failed", _last_line(stderr) or "a test failed"
    elif code is not None and code < 0 and -code in (signal.SIGXCPU, signal.SIGKILL):
        status, reason = "timeout", f"stopped by signal {signal.Signals(-code).name}"
    elif code is not None and code < 0:
        status, reason = "error", f"died of signal {signal.Signals(-code).name}"
    else:
        status, reason = "error", _last_line(stderr) or f"exit status {code}"
    return SandboxResult(status, stdout, stderr, code, wall, reason, ns)


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def run_code(code: str, **limits) -> SandboxResult:
    """Run ``code`` in a ``Sandbox(**limits)``."""
    return Sandbox(**limits).run(code)


def run_tests(code: str, tests: str, **limits) -> SandboxResult:
    """Run ``code`` followed by ``tests`` (asserts, or ``unittest.main()``) in a ``Sandbox(**limits)``."""
    return Sandbox(**limits).run(f"{code}\n\n{tests}\n")
