"""The just-in-time build lock (issue 9, item 5): a killed build never blocks a later one, a
waiting process says what it waits for, and the compilers end with the process that started
them.

Every case runs the processes involved as subprocesses with timeouts, so that a regression shows
as a failure, not as a hung test run. The end-to-end case (marked slow) kills a real build.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from actrec.ops import _build_lock as B

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="needs /proc and prctl (Linux)")

# Takes the lock of argv[1] and prints "held" on stdout; then, per argv[2]: "release" lets go
# at once, "die" kills itself while holding it (what SIGKILL or the OOM killer do).
HOLDER = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    from actrec.ops._build_lock import build_lock
    with build_lock(Path(sys.argv[1])) as lock:
        print("held", lock.stale_baton_removed, flush=True)
        if sys.argv[2] == "die":
            os.kill(os.getpid(), signal.SIGKILL)
""")


def take(directory: Path, then: str = "release", timeout: float = 60, **kw):
    return subprocess.run([sys.executable, "-c", HOLDER, str(directory), then],
                          capture_output=True, text=True, timeout=timeout, **kw)


def alive(pid: int) -> bool:
    """A running (not zombie) process ``pid``."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


# ------------------------------------------------------------------ the lock itself

def test_stale_torch_baton_is_removed_under_the_lock(tmp_path):
    # what a killed torch build leaves: an empty 'lock' file that torch waits on forever
    (tmp_path / B.TORCH_BATON).touch()
    with B.build_lock(tmp_path) as lock:
        assert lock.stale_baton_removed and not (tmp_path / B.TORCH_BATON).exists()
        assert B.holder_pid(tmp_path / B.LOCK_NAME) == os.getpid()
    with B.build_lock(tmp_path) as lock:  # nothing left to remove
        assert not lock.stale_baton_removed


@linux_only
def test_lock_dies_with_its_holder(tmp_path):
    (tmp_path / B.TORCH_BATON).touch()
    first = take(tmp_path, "die")
    assert first.returncode == -signal.SIGKILL and first.stdout == "held True\n"
    # the killed holder left its lock file (with its PID) and no baton; the next one gets in
    assert (tmp_path / B.LOCK_NAME).is_file()
    (tmp_path / B.TORCH_BATON).touch()  # as a killed torch build would leave it
    second = take(tmp_path, timeout=30)
    assert second.returncode == 0 and second.stdout == "held True\n", second.stderr
    assert "waiting" not in second.stderr


def test_a_waiting_process_says_once_what_it_waits_for(tmp_path):
    with B.build_lock(tmp_path):
        waiter = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path), "release"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        lines: list[str] = []  # its first stderr line, written before it blocks on the lock
        reader = threading.Thread(target=lambda: lines.append(waiter.stderr.readline()))
        reader.start()
        reader.join(timeout=60)
        if not lines or waiter.poll() is not None:  # no message, or it did not wait for us
            waiter.kill()
            pytest.fail(f"the waiter said {lines!r} and exit status {waiter.poll()}")
        line = lines[0]
    out, err = waiter.communicate(timeout=30)
    assert line == (f"actrec: waiting for process {os.getpid()}, which is building the C++ "
                    f"extension in {tmp_path} (lock {B.LOCK_NAME})...\n")
    assert waiter.returncode == 0 and out == "held False\n" and "waiting" not in err


# ------------------------------------------------------------------ the guarded build child

TARGET = textwrap.dedent("""
    import subprocess, time
    from pathlib import Path

    def build(pids, seconds):
        # a 'ninja' (sh) that runs a 'compiler' (sleep) of its own, like the real build
        sh = subprocess.Popen(["sh", "-c", f"sleep {seconds} & echo $! > {pids}.c; wait"])
        while not Path(f"{pids}.c").exists():
            time.sleep(0.05)
        Path(pids).write_text(f"{sh.pid} {Path(pids + '.c').read_text().strip()}")
        time.sleep(seconds)

    def fail():
        raise RuntimeError("Error building extension 'x':\\nline 1\\nc++: fatal error: boom")
""")

# Holds the lock of argv[1] and runs argv[2] (module:function) guarded with kwargs argv[3].
PARENT = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    from actrec.ops._build_lock import build_lock
    with build_lock(Path(sys.argv[1])) as lock:
        print(lock.run_guarded(sys.argv[2], json.loads(sys.argv[3])), flush=True)
""")


def guarded(tmp_path: Path, target: str, kwargs: str) -> subprocess.Popen:
    (tmp_path / "hostile_target.py").write_text(TARGET)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(tmp_path), *filter(None, [os.environ.get("PYTHONPATH")])])}
    return subprocess.Popen([sys.executable, "-c", PARENT, str(tmp_path / "build"), target,
                             kwargs], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)


def test_guarded_failure_reports_the_last_lines(tmp_path):
    proc = guarded(tmp_path, "hostile_target:fail", "{}")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert out.strip() == ("(False, \"Error building extension 'x': | line 1 | c++: fatal "
                           "error: boom\")")


@linux_only
def test_compilers_end_when_the_building_process_is_killed(tmp_path):
    pids = tmp_path / "pids"
    proc = guarded(tmp_path, "hostile_target:build",
                   f'{{"pids": "{pids}", "seconds": 120}}')
    try:
        wait_for(pids.exists, 120, "the build child to start its 'compilers'")
        ninja, compiler = map(int, pids.read_text().split())
        assert alive(ninja) and alive(compiler)
        proc.kill()  # SIGKILL: no handler of the parent runs
        proc.wait(timeout=10)
        wait_for(lambda: not alive(ninja) and not alive(compiler), 20,
                 "the 'ninja' and 'compiler' of the killed build to end")
    finally:
        proc.kill()
    # the lock went with them: a new holder gets it at once
    again = take(tmp_path / "build", timeout=30)
    assert again.returncode == 0 and "waiting" not in again.stderr, again.stderr


# ------------------------------------------------------------------ a real build, killed

LOAD = textwrap.dedent("""
    from actrec.ops import _ext
    mod, why = _ext._jit(False)
    print("loaded" if mod is not None else "failed", why, flush=True)
""")


def comm(pid: int) -> str:
    """The program name of process ``pid`` ("" once it is gone)."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def build_processes(cache: Path) -> list[int]:
    """PIDs of live processes working in (cwd) or naming (command line) ``cache``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cwd = os.readlink(f"/proc/{entry}/cwd")
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if (cwd.startswith(str(cache)) or str(cache) in cmd) and alive(int(entry)):
            found.append(int(entry))
    return found


@pytest.mark.slow
@linux_only
def test_killed_build_leaves_nothing_running_and_blocks_nothing(tmp_path):
    from actrec.ops import _ext

    cache = tmp_path / "cache"
    env = {**os.environ, "ACTREC_EXT_CACHE": str(cache)}
    env.pop("ACTREC_DISABLE_EXT", None)
    first = subprocess.Popen([sys.executable, "-c", LOAD], env=env, cwd=tmp_path,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # kill it once torch holds its baton and compilers run in the build folder
        wait_for(lambda: any(cache.glob(f"*/{B.TORCH_BATON}")) and any(
            comm(p) in ("cc1plus", "c++", "g++", "clang")
            for p in build_processes(cache)), 300, "the compilers of the first build")
        first.kill()
        first.wait(timeout=10)
        wait_for(lambda: not build_processes(cache), 20,
                 f"every process of the killed build to end, left: {build_processes(cache)}")
    finally:
        first.kill()
    (build_dir,) = [p.parent for p in cache.glob(f"*/{B.TORCH_BATON}")]  # torch's stale baton
    # Finish the build: from this user's cache of the same key when there is one (cheap),
    # else for real (a minute or two). Either way the stale baton stays where it was.
    done = _ext.cache_root() / build_dir.name
    if any(done.glob("*.so")):
        for f in done.iterdir():
            if f.is_file() and f.name not in (B.TORCH_BATON, B.LOCK_NAME):
                (build_dir / f.name).write_bytes(f.read_bytes())
                (build_dir / f.name).chmod(f.stat().st_mode)
    second = subprocess.run([sys.executable, "-c", LOAD], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=600)
    assert second.returncode == 0 and second.stdout.startswith("loaded"), second.stderr[-2000:]
    if str(build_dir) not in second.stdout:
        pytest.skip("csrc/ changed while the test ran (another build key)")
    assert not (build_dir / B.TORCH_BATON).exists() and "waiting" not in second.stderr
    # a baton as torch leaves it, with the build complete: loading takes seconds, no build
    (build_dir / B.TORCH_BATON).touch()
    third = subprocess.run([sys.executable, "-c", LOAD], env=env, cwd=tmp_path,
                           capture_output=True, text=True, timeout=120)
    assert third.stdout.strip() == f"loaded cached build in {build_dir}", third.stderr[-2000:]
    assert "compiling" not in third.stderr


def test_an_unusable_cache_folder_is_a_reason_not_a_traceback(tmp_path, monkeypatch):
    import shutil

    from torch.utils import cpp_extension

    from actrec.ops import _ext

    if shutil.which(os.environ.get("CXX", "c++")) is None or \
            not cpp_extension.is_ninja_available():
        pytest.skip("no compiler or ninja: the build is refused before the folder is used")

    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be\n")
    monkeypatch.setenv("ACTREC_EXT_CACHE", str(blocker))
    mod, why = _ext._jit(False)
    assert mod is None and why.startswith(f"cannot lock the build folder {blocker}/"), why
