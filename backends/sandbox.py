"""Run generated Python code in a sandboxed subprocess: never in the library's own process.

``run_code(code)`` / ``run_tests(code, tests)`` start a fresh child for every run and return
a ``SandboxResult`` with a status and the **guarantee level** it ran under:

| status | meaning |
|---|---|
| ``passed`` | the code (and its tests) ran to the harness's end, and the harness said so |
| ``failed`` | a failed test (``AssertionError``, ``sys.exit`` non-zero, unittest's failures), or a faked result: exiting before the tests or without the harness's verdict, a forged verdict, a patched test runner |
| ``error`` | any other exception, or the child died of a signal |
| ``timeout`` | wall-time (or CPU-time) limit reached: the whole sandbox was killed |
| ``memory`` | the memory limit was reached (``MemoryError``) |
| ``blocked`` | the code tried something the sandbox forbids (network, writing outside its directory, starting or signalling processes, ctypes, reading the harness) |

| guarantee | how the child runs |
|---|---|
| ``namespaced`` | under bubblewrap (``bwrap``): its own mount, PID, network, IPC and UTS namespaces, as the unprivileged user 65534 (``nobody``), seeing only ``/usr`` and the Python runtime read-only, ``/dev``'s null devices, and a fresh size-limited tmpfs ``/tmp`` as its only writable directory, ``HOME`` and working directory; no ``/proc``, no host files, datasets, task files, other runs' directories, home directory or environment (``--clearenv``) |
| ``fallback`` | bubblewrap is missing or does not work here: the same user as the library, a fresh temporary directory, the minimal environment; the audit hook and the limits below are all that hold it |

In both, the child's limits are set before Python starts (``prlimit``) and again by the
harness: CPU time, address space (memory), processes, open files, file size (so captured
output too), no core dumps; the parent kills the whole sandbox at the wall-time limit.
Inside, the harness (``ppl.backends.harness``) installs an audit hook (PEP 578) refusing
sockets, processes, signals, ctypes, writes outside its directory and introspection of the
harness, runs the code and then the tests, and writes the verdict with a per-run nonce to a
descriptor the parent reads: exit statuses, output and markers printed by the code count
for nothing (see ``ppl.backends.harness`` for how a result is made impossible to fake).

``Sandbox.isolation``: ``"auto"`` (namespaced when bubblewrap works here, else fallback),
``"namespaced"`` (refuse to run otherwise: ``SandboxUnavailable``) or ``"fallback"``.
``scripts/install.sh`` installs bubblewrap (Debian package ``bubblewrap``).

    >>> from ppl.backends.sandbox import run_code, run_tests
    >>> run_code("print(6 * 7)").stdout
    '42\\n'
    >>> run_tests("def add(a, b):\\n    return a + b", "assert add(2, 2) == 5").status
    'failed'
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from .harness import HARNESS

STATUSES = ("passed", "failed", "error", "timeout", "memory", "blocked")
GUARANTEES = ("namespaced", "fallback")
NOBODY = 65534  # the unprivileged user the namespaced child runs as
_BLOCKED_MARK = "ppl-sandbox: blocked: "
_INSIDE = "/tmp"  # the child's only writable directory, in its own namespace
NAMESPACED_FLAGS = ("-s", "-P")  # -I less -E: no user site, no script directory on sys.path


class SandboxUnavailable(RuntimeError):
    """``isolation="namespaced"`` was asked for and bubblewrap cannot provide it here."""


@dataclass(frozen=True)
class SandboxResult:
    """How a sandboxed run ended (``status``, one of ``STATUSES``), what it printed (truncated),
    and the guarantee level it ran under (``guarantee``: "namespaced" or "fallback", with
    ``guarantee_note`` saying why when it fell back)."""

    status: str
    stdout: str
    stderr: str
    returncode: int | None
    wall_time: float
    reason: str = ""
    guarantee: str = "fallback"
    guarantee_note: str = ""

    @property
    def passed(self) -> bool:
        return self.status == "passed"


@dataclass(frozen=True)
class Launch:
    """How children are started: the guarantee level and the command before the interpreter."""

    guarantee: str
    prefix: tuple[str, ...]
    python: str
    note: str = ""
    flags: tuple[str, ...] = ("-I",)  # isolated mode; namespaced: -s -P with PYTHONHOME set by bwrap


@dataclass(frozen=True)
class Sandbox:
    """Limits for sandboxed runs; ``run`` and ``run_many`` apply them.

    ``time_limit`` (seconds of wall time; CPU time is limited to it, rounded up),
    ``memory_limit_mb`` (address space), ``output_limit_bytes`` (per captured stream and per
    file written), ``disk_limit_mb`` (the namespaced child's whole writable directory),
    ``max_processes``, ``max_open_files``, ``isolation`` ("auto", "namespaced" or
    "fallback"), ``python``: the interpreter of the child (default: this one; a virtual
    environment's interpreter runs as its base installation, without the environment's
    packages, when namespaced).
    """

    time_limit: float = 10.0
    memory_limit_mb: int = 512
    output_limit_bytes: int = 1 << 20
    disk_limit_mb: int = 64
    max_processes: int = 64
    max_open_files: int = 64
    show_chars: int = 4000
    isolation: str = "auto"
    python: str = sys.executable

    def __post_init__(self):
        if not self.time_limit > 0:
            raise ValueError(f"time_limit must be positive, got {self.time_limit}")
        if self.memory_limit_mb < 64:
            raise ValueError(
                f"memory_limit_mb must be at least 64 (Python itself needs it), got {self.memory_limit_mb}"
            )
        for name in ("output_limit_bytes", "disk_limit_mb", "max_processes", "max_open_files"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.max_open_files < 16:
            raise ValueError(
                f"max_open_files must be at least 16 (Python itself needs them), got {self.max_open_files}"
            )
        if self.isolation not in ("auto", "namespaced", "fallback"):
            raise ValueError(f"isolation must be 'auto', 'namespaced' or 'fallback', got {self.isolation!r}")

    # --- how children start ----------------------------------------------------------------

    def _limits(self) -> list[str]:
        """The numbers the harness gets (and prlimit sets): memory, CPU, file size, files, processes."""
        return [
            str(self.memory_limit_mb * 1024 * 1024),
            str(max(1, int(self.time_limit) + 1)),
            str(self.output_limit_bytes),
            str(self.max_open_files),
            str(self.max_processes),
        ]

    def _prlimit(self) -> list[str]:
        prlimit = shutil.which("prlimit")
        if prlimit is None:
            return []  # the harness sets the same limits itself
        memory, cpu, fsize, nofile, nproc = self._limits()
        return [
            prlimit,
            f"--as={memory}",
            f"--cpu={cpu}:{int(cpu) + 1}",
            f"--fsize={fsize}",
            f"--nofile={nofile}",
            f"--nproc={nproc}",
            "--core=0",
            "--",
        ]

    def _bwrap(self, bwrap: str, python: str) -> list[str]:
        """The bubblewrap command for a namespaced child running ``python``."""
        command = [bwrap, "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts"]
        command += ["--unshare-cgroup-try", "--die-with-parent", "--new-session", "--clearenv"]
        root = os.geteuid() == 0
        if not root:  # an ordinary user: a user namespace is how bwrap gets its mounts
            command += ["--unshare-user", "--uid", str(NOBODY), "--gid", str(NOBODY), "--disable-userns"]
        for name, value in (
            ("HOME", _INSIDE),
            ("TMPDIR", _INSIDE),
            ("LANG", "C.UTF-8"),
            ("PATH", "/usr/bin:/bin"),
        ):
            command += ["--setenv", name, value]
        command += ["--ro-bind", "/usr", "/usr"]
        for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64"):
            if os.path.islink(top):
                command += ["--symlink", os.readlink(top), top]
            elif os.path.isdir(top):
                command += ["--ro-bind", top, top]
        prefix = os.path.dirname(os.path.dirname(python))
        if prefix != "/usr" and not prefix.startswith("/usr/"):
            command += ["--ro-bind", prefix, prefix]
            parent = os.path.dirname(prefix)  # bwrap copies e.g. /root's mode 0700 onto the ones it makes
            while parent != "/":
                command += ["--chmod", "0755", parent]
                parent = os.path.dirname(parent)
        # Without /proc the interpreter cannot find its own prefix (it would take /usr's
        # Python library): name it. -E is therefore not used; bwrap cleared the rest.
        command += ["--setenv", "PYTHONHOME", prefix]
        command += ["--dev", "/dev", "--perms", "1777", "--size", str(self.disk_limit_mb * 1024 * 1024)]
        command += ["--tmpfs", _INSIDE, "--chdir", _INSIDE]
        if root:  # bwrap as root makes the namespaces; setpriv then drops to nobody for real
            setpriv = shutil.which("setpriv") or "/usr/bin/setpriv"
            command += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID", "--", setpriv]
            command += ["--reuid", str(NOBODY), "--regid", str(NOBODY), "--clear-groups"]
            command += ["--inh-caps=-all", "--bounding-set=-all", "--no-new-privs"]
        return [*command, "--"]

    def launch(self) -> Launch:
        """Decide how children start here: namespaced if bubblewrap runs a Python, else fallback."""
        if self.isolation == "fallback":
            return Launch(
                "fallback", tuple(self._prlimit()), self.python, "isolation='fallback' was asked for"
            )
        bwrap = shutil.which("bwrap")
        python = os.path.realpath(self.python)
        note = ""
        if bwrap is None:
            note = "bubblewrap (bwrap) is not installed; scripts/install.sh installs it"
        else:
            prefix = (*self._prlimit(), *self._bwrap(bwrap, python))
            try:
                probe = subprocess.run(
                    [
                        *prefix,
                        python,
                        *NAMESPACED_FLAGS,
                        "-c",
                        "import os, sys; print(os.getuid(), sys.prefix)",
                    ],
                    capture_output=True,
                    text=True,
                    timeout=30,
                    stdin=subprocess.DEVNULL,
                )
            except (OSError, subprocess.TimeoutExpired) as error:
                note = f"bubblewrap does not start here ({error})"
            else:
                expected = f"{NOBODY} {os.path.dirname(os.path.dirname(python))}"
                if probe.returncode == 0 and probe.stdout.strip() == expected:
                    return Launch("namespaced", prefix, python, flags=NAMESPACED_FLAGS)
                detail = (probe.stderr.strip().splitlines() or [f"exit status {probe.returncode}"])[-1]
                note = f"bubblewrap does not work here ({detail})"
        if self.isolation == "namespaced":
            raise SandboxUnavailable(f"the sandbox cannot use namespaces: {note}")
        return Launch("fallback", tuple(self._prlimit()), self.python, note)

    def guarantee(self) -> str:
        """The guarantee level runs get here: "namespaced" or "fallback"."""
        return self.launch().guarantee

    # --- runs --------------------------------------------------------------------------------

    def run(self, code: str, tests: str | None = None, *, launch: Launch | None = None) -> SandboxResult:
        """Run ``code`` as ``__main__`` (then ``tests``, in the same namespace) in a fresh
        sandboxed child; never raises for the code's faults."""
        if not isinstance(code, str):
            raise TypeError(f"code must be a str, got {type(code).__name__}")
        if tests is not None and not isinstance(tests, str):
            raise TypeError(f"tests must be a str or None, got {type(tests).__name__}")
        launch = self.launch() if launch is None else launch
        nonce = secrets.token_hex(16)
        with tempfile.TemporaryDirectory(prefix="ppl-sandbox-") as outdir:
            if launch.guarantee == "namespaced":
                root, cwd, env = _INSIDE, None, None  # bwrap sets them inside
            else:
                root = os.path.join(outdir, "work")
                os.mkdir(root)
                cwd, env = root, {"PATH": "/usr/bin:/bin", "HOME": root, "TMPDIR": root, "LANG": "C.UTF-8"}
            job_path, verdict_path = os.path.join(outdir, "job"), os.path.join(outdir, "verdict")
            with open(job_path, "w", encoding="utf-8") as f:
                json.dump({"nonce": nonce, "code": code, "tests": tests}, f)
            job_fd = os.open(job_path, os.O_RDONLY)
            os.unlink(job_path)  # reachable only through the descriptor the harness reads and closes
            verdict_fd = os.open(verdict_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            command = [
                *launch.prefix,
                launch.python,
                *launch.flags,
                "-c",
                HARNESS,
                root,
                str(job_fd),
                str(verdict_fd),
            ]
            command += self._limits()
            out_path, err_path = os.path.join(outdir, "stdout"), os.path.join(outdir, "stderr")
            started = time.perf_counter()
            timed_out = False
            try:
                with open(out_path, "wb") as out, open(err_path, "wb") as err:
                    child = subprocess.Popen(
                        command,
                        cwd=cwd,
                        env=env,
                        stdin=subprocess.DEVNULL,
                        stdout=out,
                        stderr=err,
                        pass_fds=(job_fd, verdict_fd),
                        start_new_session=True,
                    )
            finally:
                os.close(job_fd)
                os.close(verdict_fd)
            try:
                child.wait(timeout=self.time_limit)
            except subprocess.TimeoutExpired:
                timed_out = True
            finally:
                _kill_group(child)
            wall = time.perf_counter() - started
            stdout, stderr = _read(out_path, self.show_chars), _read(err_path, self.show_chars)
            with open(verdict_path, "rb") as f:
                verdict = f.read(1 << 16)
            if launch.guarantee == "fallback":
                shutil.rmtree(root, ignore_errors=True)
        status, reason = _status(verdict, nonce, child.returncode, timed_out, stderr, wall)
        return SandboxResult(
            status, stdout, stderr, child.returncode, wall, reason, launch.guarantee, launch.note
        )

    def run_many(
        self, codes: Sequence[str], tests: Sequence[str | None] | None = None, *, workers: int = 2
    ) -> list[SandboxResult]:
        """Run each code (with its tests) in its own child, ``workers`` at a time; one result
        per code, in order."""
        tests = [None] * len(codes) if tests is None else list(tests)
        if len(tests) != len(codes):
            raise ValueError(f"run_many got {len(codes)} codes and {len(tests)} tests")
        launch = self.launch()
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            return list(pool.map(lambda pair: self.run(*pair, launch=launch), zip(codes, tests)))


def _kill_group(child: subprocess.Popen) -> None:
    """SIGKILL the child's whole process group (it leads it; bwrap takes its namespace with
    it, ``--die-with-parent``), then reap the child."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child.pid, signal.SIGKILL)
    child.wait()


def _read(path: str, limit: int) -> str:
    with open(path, "rb") as f:
        data = f.read(limit * 4 + 4)
    text = data.decode("utf-8", errors="replace")
    return text if len(text) <= limit else text[:limit] + "\n[... truncated]"


def _status(verdict: bytes, nonce: str, code: int | None, timed_out: bool, stderr: str, wall: float):
    """The status and reason from the harness's verdict line; no valid verdict is a failure."""
    if timed_out:
        return "timeout", f"killed after {wall:.1f} s"
    if code is not None and code < 0 and -code in (signal.SIGXCPU, signal.SIGKILL):
        return "timeout", f"stopped by signal {signal.Signals(-code).name}"
    lines = verdict.decode("utf-8", errors="replace").splitlines()
    mine = [line for line in lines if line.startswith(nonce + " ")]
    if len(lines) != 1 or len(mine) != 1:
        if lines:
            return "failed", "tampering: something other than the harness wrote to its verdict"
        if code is not None and code < 0:
            return "error", f"died of signal {signal.Signals(-code).name} before the harness's verdict"
        return "failed", f"no verdict: the process ended (status {code}) before the harness did (os._exit?)"
    status, reason = json.loads(mine[0][len(nonce) + 1 :])
    if status == "blocked" and not reason:
        blocked = [
            line[len(_BLOCKED_MARK) :] for line in stderr.splitlines() if line.startswith(_BLOCKED_MARK)
        ]
        reason = blocked[0] if blocked else "a forbidden operation"
    if not reason and status in ("failed", "error"):
        reason = _last_line(stderr) or ("a test failed" if status == "failed" else "an exception")
    return status, reason


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def run_code(code: str, **limits) -> SandboxResult:
    """Run ``code`` in a ``Sandbox(**limits)``."""
    return Sandbox(**limits).run(code)


def run_tests(code: str, tests: str, **limits) -> SandboxResult:
    """Run ``code``, then ``tests`` (asserts, or ``unittest.main()``) in a ``Sandbox(**limits)``."""
    return Sandbox(**limits).run(code, tests)
