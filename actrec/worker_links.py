"""One private pipe between a parent process and each of its worker processes.

A ``multiprocessing.Queue`` that several workers write to shares one lock among them: a
worker that dies while its feeder thread holds that lock (killed, out of memory, ``os._exit``
in a plugin) leaves it held for ever, the other workers' messages never leave their feeder
threads, and the parent waits for them for ever. Here each worker has a pipe of its own, so
a death cuts only its own messages, and the parent sees it as the end of that pipe, after
every message the worker sent before it died. Workers also die with their parent
(``die_with_parent``).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

__all__ = ["ENDED", "WorkerEnd", "WorkerLinks", "die_with_parent"]


class _Ended:
    def __repr__(self) -> str:
        return "ENDED"


ENDED: Any = _Ended()
"""What ``WorkerLinks.receive`` gives once for a worker whose pipe ended (its process
exited or died, or its last message was cut short)."""


class WorkerEnd:
    """A worker's end of its pipe: messages sent from any of its threads (whole, one at a
    time); replies read by one thread at a time."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn
        self._lock = threading.Lock()  # this process's threads only: dies with the process

    def send(self, message: Any) -> None:
        with self._lock:
            self._conn.send(message)

    def recv(self) -> Any:
        """The parent's next message (``EOFError`` once the parent has closed the pipe)."""
        return self._conn.recv()


class WorkerLinks:
    """The parent's ends of its workers' pipes, by worker number."""

    def __init__(self, ctx: Any) -> None:
        self._ctx = ctx
        self._conns: dict[int, Any] = {}

    def pipe(self, worker: int) -> Any:
        """A new pipe for ``worker``: the returned end is for its process (an argument of
        ``Process``); close this process's copy of it once the process has started, so that
        the pipe ends when the worker does."""
        ours, theirs = self._ctx.Pipe()
        self._conns[worker] = ours
        return theirs

    def send(self, worker: int, message: Any) -> bool:
        """Send ``message`` to ``worker``; ``False`` if its pipe is gone (the worker ended:
        its end is then read by ``receive``)."""
        conn = self._conns.get(worker)
        if conn is None:
            return False
        try:
            conn.send(message)
        except OSError:  # BrokenPipeError and the like: the worker is gone
            return False
        return True

    def receive(self, timeout: float) -> list[tuple[int, Any]]:
        """``(worker, message)`` for the messages that arrive within ``timeout`` seconds
        (every message already there, in each worker's order), with ``ENDED`` after a
        worker's last one; that worker's pipe is then closed here."""
        from multiprocessing.connection import wait

        if not self._conns:
            wait([], timeout)  # nothing to read: the caller's pace stays the same
            return []
        ready = set(wait(list(self._conns.values()), timeout))
        return [item for worker, conn in list(self._conns.items()) if conn in ready
                for item in self._read(worker)]

    def drain(self) -> list[tuple[int, Any]]:
        """``receive`` without waiting: what the workers sent that is not read yet."""
        return [item for worker in list(self._conns) for item in self._read(worker)]

    def _read(self, worker: int) -> Iterator[tuple[int, Any]]:
        conn = self._conns[worker]
        while True:
            try:
                if not conn.poll():
                    return
                message = conn.recv()
            except Exception:  # noqa: BLE001 - EOF, a message cut short by a death, an
                conn.close()  # unreadable one: this worker says nothing more
                del self._conns[worker]
                yield worker, ENDED
                return
            yield worker, message

    def close(self) -> None:
        for conn in self._conns.values():
            conn.close()
        self._conns.clear()


def die_with_parent() -> None:
    """Ask Linux to kill this process when its parent dies (no-op elsewhere): a worker never
    outlives the command that started it."""
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        pass
