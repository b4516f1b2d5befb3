"""Signal handlers swapped for a block and put back after it, whatever a signal does meanwhile.

Python acts on a signal between two bytecodes of the main thread, so a handler put back may
run (and raise) before the next one is put back; ``handlers_swapped`` still puts every one
back, then raises what was raised. Used where a block must take Ctrl-C and SIGTERM its own
way: the checkpoint's replace (``actrec.runs``), live recognition's stop requests
(``actrec.live``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

__all__ = ["handlers_swapped"]


@contextmanager
def handlers_swapped(handlers: Mapping[int, Callable[[int, Any], Any]]) -> Iterator[None]:
    """Each signal of ``handlers`` handled by its handler there in the block, and by the
    handler it had before after the block, even when a signal acted on while they are
    swapped or put back raises (it is raised once all are back). Main thread only (where
    Python lets handlers be set)."""
    import signal

    saved: dict[int, Any] = {}
    try:
        for signum, handler in handlers.items():
            saved[signum] = signal.getsignal(signum)  # first: put back even if cut short
            signal.signal(signum, handler)
        yield
    finally:
        pending = list(saved.items())
        interrupted: BaseException | None = None
        while pending:
            try:
                while pending:
                    signal.signal(*pending[0])
                    pending.pop(0)
            except BaseException as exc:  # noqa: BLE001 - raised once all are back
                interrupted = interrupted or exc
        if interrupted is not None:
            raise interrupted
