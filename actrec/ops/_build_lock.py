"""A build lock that dies with its holder, and builds whose compilers die with their parent.

``torch.utils.cpp_extension.load`` serialises builds of one directory with a "baton": the file
``<build dir>/lock``, created with ``O_EXCL`` and removed when the build ends. A build killed in
between (SIGKILL, the OOM killer, a closed terminal) leaves that file behind, and every later
``load`` of the directory waits for it forever. Here instead:

* :func:`build_lock` holds an exclusive ``fcntl.flock`` on ``<build dir>/actrec-build.lock``;
  the kernel releases it when the holding process ends, however it ends. While it is held no
  other actrec process builds in that directory, so a torch baton found then is a dead build's:
  it is removed. A process that has to wait says once, on stderr, which folder it waits for and
  which process holds it.
* :meth:`BuildLock.run_guarded` runs the compiling ``load`` in a child process which, on Linux,
  is told by the kernel when its parent dies (``PR_SET_PDEATHSIG``) and adopts its orphaned
  descendants (``PR_SET_CHILD_SUBREAPER``): it then ends ninja and the compilers before it exits.
  The child shares the lock, so the folder stays locked until they are gone.

Without ``fcntl`` (Windows) there is no lock here and torch's baton behaves as before.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["LOCK_NAME", "TORCH_BATON", "BuildLock", "build_lock"]

LOCK_NAME = "actrec-build.lock"
TORCH_BATON = "lock"  # torch.utils.cpp_extension's FileBaton in the build directory


class BuildLock:
    """The held lock of one build directory (see :func:`build_lock`)."""

    def __init__(self, directory: Path, fd: int | None, stale_baton_removed: bool):
        self.directory = directory
        self.fd = fd
        self.stale_baton_removed = stale_baton_removed

    def run_guarded(self, target: str, kwargs: dict[str, Any], *,
                    timeout: float | None = None) -> tuple[bool, str]:
        """Call ``target`` (``"module:function"``) with the JSON-able ``kwargs`` in a child
        process whose descendants end when this process ends. Returns ``(ok, why)``: ``why`` is
        the last lines the child wrote on stderr when it failed.

        If this process is interrupted meanwhile, the child is asked to stop (it ends its own
        descendants first) and the exception propagates.
        """
        # Run as a script, not `-m actrec...`: the child imports nothing of actrec, so nothing
        # there can ask for the extension (and wait for the lock this process holds).
        argv = [sys.executable, __file__, target, json.dumps(kwargs), str(os.getpid())]
        fds = () if self.fd is None else (self.fd,)
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True, pass_fds=fds,
                                cwd=self.directory)
        try:
            _, err = proc.communicate(timeout=timeout)
        except BaseException:
            proc.terminate()  # the child's SIGTERM handler ends ninja and the compilers
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
            raise
        if proc.returncode == 0:
            return True, ""
        tail = " | ".join((err or "").strip().splitlines()[-3:])[:400]
        return False, tail or f"the build process exited with status {proc.returncode}"


def holder_pid(path: Path) -> int | None:
    """The PID written in a lock file by its holder, or None when unreadable."""
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


@contextlib.contextmanager
def build_lock(directory: Path, *, wait_message: bool = True) -> Iterator[BuildLock]:
    """Hold the exclusive OS lock of build ``directory`` (created if missing) for the block.

    The lock ends with its holding process, so a killed build never blocks a later one. On
    entry a torch baton left in ``directory`` by a dead build is removed. When another process
    holds the lock, one line on stderr names the folder and that process, then this waits.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if fcntl is None:
        yield BuildLock(directory, None, False)
        return
    path = directory / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)  # not inherited by exec'd programs
    try:
        try:
            _acquire(fd, path, wait_message)
        except OSError as exc:  # a file system without locks (some NFS): torch's baton only
            print(f"actrec: cannot lock {path} ({exc.strerror}); a build killed there may "
                  f"leave {directory / TORCH_BATON} behind", file=sys.stderr, flush=True)
            yield BuildLock(directory, None, False)
        else:
            yield _held(fd, directory)
    finally:
        os.close(fd)  # releases the lock (the guarded child, if any, has ended by now)


def _acquire(fd: int, path: Path, wait_message: bool) -> None:
    """Take the exclusive flock on ``fd``; when another process holds it, say so once (folder
    and PID) and wait."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return
    except BlockingIOError:
        pass
    if wait_message:
        pid = holder_pid(path)
        who = f"process {pid}" if pid else "another process"
        print(f"actrec: waiting for {who}, which is building the C++ extension in "
              f"{path.parent} (lock {path.name})...", file=sys.stderr, flush=True)
    fcntl.flock(fd, fcntl.LOCK_EX)


def _held(fd: int, directory: Path) -> BuildLock:
    """Record our PID in the lock just taken and remove a stale torch baton."""
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    # Only a build that died while holding it leaves torch's baton while we hold our lock.
    removed = False
    with contextlib.suppress(FileNotFoundError):
        (directory / TORCH_BATON).unlink()
        removed = True
    return BuildLock(directory, fd, removed)


# --------------------------------------------------------------------------------------------
# The guarded child: python .../_build_lock.py MODULE:FUNCTION JSON_KWARGS PARENT_PID

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36


def _prctl(option: int, value: int) -> bool:
    """``prctl(option, value)`` on Linux; False where it is not available."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(option, value, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _descendants(root: int) -> list[int]:
    """PIDs of every live descendant of ``root`` (Linux ``/proc``), parents before children."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path("/proc", entry, "stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])  # after "(comm) state"
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], list(children.get(root, []))
    while todo:
        pid = todo.pop(0)
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def _end_descendants(grace: float = 3.0) -> None:
    """SIGTERM every descendant (ninja passes it on to its compilers), reap them, and SIGKILL
    whatever is still there after ``grace`` seconds (giving up ``grace`` seconds later on a
    process that not even SIGKILL ends, e.g. one stuck in the kernel)."""
    if not Path("/proc").is_dir():
        return
    me = os.getpid()
    deadline = time.monotonic() + grace
    signum = signal.SIGTERM
    while True:
        pids = _descendants(me)
        if not pids or time.monotonic() > deadline + grace:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signum)
        time.sleep(0.05)
        with contextlib.suppress(ChildProcessError):
            while os.waitpid(-1, os.WNOHANG)[0] > 0:  # we adopted the orphans: reap them
                pass
        if time.monotonic() > deadline:
            signum = signal.SIGKILL


def _child_main(argv: list[str]) -> int:
    target, kwargs, parent = argv[0], json.loads(argv[1]), int(argv[2])

    def stop(signum: int, _frame: Any) -> None:
        _end_descendants()
        os._exit(128 + signum)

    for name in ("SIGTERM", "SIGHUP"):  # (no SIGHUP on Windows)
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), stop)
    _prctl(_PR_SET_CHILD_SUBREAPER, 1)
    _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the parent died before we asked to be told
        return 1
    module, _, name = target.partition(":")
    try:
        getattr(importlib.import_module(module), name)(**kwargs)
    except Exception as exc:  # the build log arrives in the message
        print(str(exc).strip() or type(exc).__name__, file=sys.stderr)
        return 1
    finally:
        _end_descendants()  # nothing the build started outlives it
    return 0


if __name__ == "__main__":
    del sys.path[0]  # this script's folder (actrec/ops): its modules must not shadow others
    sys.exit(_child_main(sys.argv[1:]))
