"""The program that runs inside the sandbox: limits, the audit hook, the code, its tests, the verdict.

``HARNESS`` is the source ``ppl.backends.sandbox`` starts as ``python -I -c HARNESS root in_fd
out_fd limits...``. It is a string, never imported: it runs in the sandboxed child only.

How it makes a result impossible to fake (docs/design.md, "The code sandbox"):

* **The verdict is not the exit status.** The parent writes a JSON job — a random nonce, the
  code, the tests — to a file it has unlinked and passes only as a descriptor. A *guard*
  generator reads it, keeps the nonce in its own frame (reachable only through
  ``gi_frame``, which the audit hook refuses, and ``gc``, which it refuses too) and closes
  the descriptor before any of the code runs. At the end the harness asks the guard to
  write ``nonce verdict`` to the verdict descriptor. No verdict line, a wrong nonce, or
  anything else written there means the run failed: ``os._exit(0)``, a kill, printing the
  harness's marker or writing it to every descriptor all end without a valid verdict.
* **Only the harness's own frame can ask for the verdict.** The guard checks the frame that
  resumed it *is* the harness frame it was primed from (frame identity: code cannot make
  another frame be that one, and tracing, which could move that frame's line, is refused).
  A call from the code is recorded as tampering and turns the verdict into a failure.
* **Phases.** The code runs first, then the tests, in the same ``__main__`` namespace.
  ``sys.exit`` in the code's phase, when there are tests, is a failure ("exited before the
  tests ran"); in the tests' phase ``SystemExit(0)`` counts as the end only when the real
  ``unittest.main`` raised it (the traceback's frames are checked one by one).
* **The test runner is not patched.** ``builtins``, the ``unittest`` modules and their
  classes are snapshotted before the code runs and compared (by identity) after each phase;
  a code that defines ``load_tests`` (which would replace the tests) fails too.
* **Every refusal sticks.** The hook records what it refused; a run that tried something
  forbidden ends ``blocked`` even if the code caught the refusal.
"""

HARNESS = r'''
import builtins, json, os, resource, signal, subprocess, sys, types
import unittest, unittest.main

class SandboxViolation(PermissionError):
    pass

def _guard(in_fd, out_fd, root, holder, refusals):
    """Holds the nonce; installs the audit hook; writes the verdict when the harness asks.

    Every name the hook uses is a local of this frame (a closure cell): the code can reach
    the harness's globals through frames, so nothing here looks a global up after priming.
    """
    getframe, write, dumps, violation = sys._getframe, os.write, json.dumps, SandboxViolation
    realpath, fsdecode, sep, stderr = os.path.realpath, os.fsdecode, os.sep, sys.stderr
    _str, _any, _isinstance, _int, _TypeError, _BaseException = str, any, isinstance, int, TypeError, BaseException
    path_types = (str, bytes, os.PathLike)
    writing_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
    chunks = []
    while True:
        chunk = os.read(in_fd, 1 << 20)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(in_fd)
    job = json.loads(b"".join(chunks))
    nonce = job.pop("nonce")
    harness = getframe(1)
    tampering = []
    no_imports = frozenset({"ctypes", "_ctypes", "_posixsubprocess", "_testcapi", "_testinternalcapi",
                            "_xxsubinterpreters", "_xxinterpchannels"})
    paths = frozenset({"os.remove", "os.rmdir", "os.mkdir", "os.chmod", "os.chown", "os.truncate", "os.utime",
                       "shutil.rmtree", "os.link", "os.symlink", "os.rename", "shutil.copyfile",
                       "shutil.copytree", "shutil.move"})
    processes = frozenset({"subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork",
                           "os.forkpty", "pty.spawn", "os.startfile", "os.kill", "os.killpg",
                           "signal.pthread_kill"})
    sockets = frozenset({"socket.__new__", "socket.connect", "socket.bind", "socket.getaddrinfo",
                         "socket.sendto", "socket.socketpair"})
    introspection = frozenset({"gc.get_objects", "gc.get_referrers", "gc.get_referents", "sys.settrace",
                               "sys.setprofile"})
    guarded = ("gi_frame", "gi_code")

    def inside(path):
        try:
            path = fsdecode(path)
        except _TypeError:
            return True  # a file descriptor: opened already, under the same rules
        full = realpath(path)
        return full == root or full.startswith(root + sep)

    def system(path):
        try:
            full = realpath(fsdecode(path))
        except _TypeError:
            return False
        return full in ("/proc", "/sys") or full.startswith(("/proc/", "/sys/"))

    def refuse(what):
        refusals.append(what)
        try:
            stderr.write("ppl-sandbox: blocked: " + what + "\n")
        except _BaseException:
            pass
        raise violation("ppl sandbox: " + what + " is not allowed")

    def hook(event, args):
        if event == "open":
            path, mode, flags = args
            writes = (mode is not None and _any(c in _str(mode) for c in "wax+")) or (
                _isinstance(flags, _int) and flags & writing_flags)
            if path is not None and system(path):
                refuse("reading the system's process files (" + _str(path) + ")")
            if writes and path is not None and not inside(path):
                refuse("writing outside the sandbox directory (" + _str(path) + ")")
        elif event in sockets:
            refuse("network access (" + event + ")")
        elif event in processes:
            refuse("starting or signalling processes (" + event + ")")
        elif event.startswith("ctypes."):
            refuse("ctypes (" + event + ")")
        elif event == "import" and args[0] in no_imports:
            refuse("importing " + _str(args[0]))
        elif event in introspection:
            refuse("inspecting the harness (" + event + ")")
        elif event == "object.__getattr__" and args[1] in guarded and args[0] is holder[0]:
            refuse("reading the harness's guard")
        elif event in paths:
            found = [a for a in args if _isinstance(a, path_types)]
            if event == "os.symlink":
                found = found[1:]  # the link itself; its target is checked when opened
            for p in found:
                if not inside(p):
                    refuse(event + " outside the sandbox directory (" + _str(p) + ")")

    sys.addaudithook(hook)
    message = yield job["code"], job.get("tests")
    while True:
        if getframe(1) is not harness:
            tampering.append("the code asked the harness's guard for a verdict")
            message = yield None
            continue
        status, reason = message
        if tampering:
            status, reason = "failed", "tampering: " + tampering[0]
        elif refusals and status in ("passed", "failed", "error"):
            status, reason = "blocked", refusals[0]
        write(out_fd, (nonce + " " + dumps([status, reason]) + "\n").encode())
        message = yield None


def _snapshot(modules):
    state = {}
    for module in modules:
        state[module.__name__] = sys.modules.get(module.__name__)
        for key, value in list(vars(module).items()):
            state[(module.__name__, key)] = value
            if isinstance(value, type) and value.__module__ == module.__name__:
                for attribute, member in list(vars(value).items()):
                    state[(module.__name__, key, attribute)] = member
    return state


def _changed(before, after):
    """The first runner attribute replaced or removed, or added to one of its classes."""
    for key in before.keys() | after.keys():
        if key in before and (key not in after or before[key] is not after[key]):
            return key if isinstance(key, str) else ".".join(key)
        if key not in before and isinstance(key, tuple) and len(key) == 3 and key[:2] in before:
            return ".".join(key)
    return None


def _codes(code, types_code=types.CodeType):
    found, stack = set(), [code]
    while stack:
        current = stack.pop()
        found.add(current)
        stack.extend(c for c in current.co_consts if isinstance(c, types_code))
    return found


def _harness():
    root, in_fd, out_fd = os.path.realpath(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    memory, cpu, fsize, nofile, nproc = (int(a) for a in sys.argv[4:9])
    for limit, value in ((resource.RLIMIT_AS, memory), (resource.RLIMIT_FSIZE, fsize),
                         (resource.RLIMIT_NOFILE, nofile), (resource.RLIMIT_NPROC, nproc),
                         (resource.RLIMIT_CORE, 0)):
        resource.setrlimit(limit, (value, value))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # too much output: an OSError, not a silent death
    sys.dont_write_bytecode = True
    # Processes only through audited paths: the unaudited fork_exec leaves sys.modules.
    del sys.modules["_posixsubprocess"]
    subprocess._posixsubprocess = None
    # From here on only locals: the code can reach this module's globals through frames.
    _exec, _compile, _type, _len, _repr, _all = exec, compile, type, len, repr, all
    _SystemExit, _MemoryError, _AssertionError = SystemExit, MemoryError, AssertionError
    _Violation, _BaseException, _snapshot_, _changed_, _codes_ = SandboxViolation, BaseException, _snapshot, _changed, _codes
    _modules, _sys_exit, _os_exit, here = sys.modules, sys.exit, os._exit, sys._getframe()
    mine, ours = globals(), vars(builtins)
    saved_mine, saved_ours = list(mine.items()), list(ours.items())
    mine_get, ours_get, mine_len, ours_len = mine.get, ours.get, mine.__len__, ours.__len__
    n_mine, n_ours, missing = mine_len(), ours_len(), object()
    sys_get = vars(sys).get

    def intact():
        """The first thing the code changed that the harness relies on, or None."""
        if mine_len() != n_mine:
            return "the harness's globals"
        for key, value in saved_mine:
            if mine_get(key, missing) is not value:
                return "the harness's " + key
        if ours_len() != n_ours:
            return "builtins"
        for key, value in saved_ours:
            if ours_get(key, missing) is not value:
                return "builtins." + key
        if sys_get("exit") is not _sys_exit or sys_get("modules") is not _modules:
            return "sys"
        return None

    runner_modules = [unittest] + [m for n, m in sorted(sys.modules.items())
                                             if n.startswith("unittest.") and m is not None]
    init_code = sys.modules["unittest.main"].TestProgram.__init__.__code__
    run_code = sys.modules["unittest.main"].TestProgram.runTests.__code__
    holder, refusals = [], []
    guard = _guard(in_fd, out_fd, root, holder, refusals)
    holder.append(guard)
    del holder
    code, tests = guard.send(None)
    main = types.ModuleType("__main__")  # a real __main__, so unittest.main() finds the tests
    main.__file__ = "main.py"
    _modules["__main__"] = main
    sys.argv = ["main.py"]
    namespace = main.__dict__
    before = _snapshot_(runner_modules)

    def runner_changed():
        broken = intact()
        if broken is None:
            broken = _changed_(before, _snapshot_(runner_modules))
        if broken is None and _modules.get("__main__") is not main:
            broken = "sys.modules['__main__']"
        return broken

    status, reason, failure, phase, tests_code = "passed", "", None, "code", None
    try:
        _exec(_compile(code, "main.py", "exec"), namespace)
        if tests is not None:
            changed = runner_changed()
            if changed is not None:
                status, reason = "failed", "the code changed the test runner (" + changed + ")"
            elif "load_tests" in namespace:
                status, reason = "failed", "the code defines load_tests, which would replace the tests"
            else:
                tests_code = _compile(tests, "tests.py", "exec")
                phase = "tests"
                _exec(tests_code, namespace)
    except _SystemExit as stop:
        exact = _type(stop) is _SystemExit
        exit_code = stop.code if exact else 1
        if phase == "code" and tests is None:
            if not exact or exit_code not in (None, 0):
                status, reason, failure = "failed", "exited with status " + _repr(exit_code), stop
        elif phase == "code":
            status, reason = "failed", "the code exited (sys.exit) before the tests ran"
        else:
            frames, tb = [], stop.__traceback__ if exact else None
            while tb is not None:
                frames.append(tb.tb_frame)
                tb = tb.tb_next
            allowed = _codes_(tests_code)
            genuine = (
                exact and _len(frames) >= 4 and frames[0] is here
                and frames[-1].f_code is run_code and frames[-2].f_code is init_code
                and _all(f.f_code in allowed for f in frames[1:-2]))
            if not genuine:
                status, reason = "failed", "the code exited (sys.exit) during the tests"
            elif exit_code not in (None, 0, False):
                status, reason = "failed", "a test failed"
    except _MemoryError as error:
        status, reason, failure = "memory", "the memory limit was reached", error
    except _Violation as error:
        status, reason, failure = "blocked", "", error
    except _AssertionError as error:
        status, reason, failure = "failed", "", error
    except _BaseException as error:
        status, reason, failure = "error", "", error
    if status == "passed" and tests is not None:
        changed = runner_changed()
        if changed is not None:
            status, reason = "failed", "the code changed the test runner (" + changed + ")"
    guard.send((status, reason))
    if failure is not None:
        try:
            import traceback
            traceback.print_exception(_type(failure), failure, failure.__traceback__.tb_next)
        except _BaseException:
            pass
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except _BaseException:
            pass
    _os_exit(0)

_harness()
'''
