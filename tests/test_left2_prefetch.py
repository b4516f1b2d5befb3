"""Closing a ``prefetch`` early: its producer thread, blocked on the full queue, is let go (the
queue drained, no poll) and has ended when the close returns, the source it was reading is
closed there (a decoder it holds lets go of its file), and nothing more is produced. What a
close takes is not timed here (a loaded machine makes any bound flaky): the thread's end, the
source's close and the items made are asserted instead."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from actrec.extract_video import prefetch


def _counted(made: list, closed: list, full: threading.Event, when: int):
    """Endless items ``[4, 8]`` of their index; ``made`` counts those produced, ``closed``
    gets ``True`` when the generator is closed, ``full`` is set once ``when`` are made."""
    try:
        i = 0
        while True:
            made.append(i)
            if len(made) == when:
                full.set()
            yield np.full((4, 8), i, np.float32)
            i += 1
    finally:
        closed.append(True)


def _producers() -> set:
    return {t for t in threading.enumerate() if t.name == "actrec-decode"}


@pytest.mark.parametrize("depth", [1, 2, 8])
def test_closing_early_stops_the_producer_and_closes_its_source(depth):
    """Closed while its producer waits on the full queue (item 0 taken, items 1..depth
    queued, item depth+1 made and waiting for room): when ``close()`` returns the producer
    thread has ended, the source was closed by it (the test holds the source, so nothing
    else closes it: a decoder lets go of its file), and no item was made after the close."""
    made: list = []
    closed: list = []
    full = threading.Event()
    source = _counted(made, closed, full, depth + 2)
    others = _producers()
    items = prefetch(source, depth)
    assert int(next(items)[0, 0]) == 0
    assert full.wait(60)  # the producer made item depth+1: the queue is full, it waits
    (producer,) = _producers() - others
    items.close()
    assert not producer.is_alive()
    assert closed == [True]
    assert made == list(range(depth + 2))  # nothing made after the close
    assert source.gi_frame is None  # closed: a next() would raise StopIteration at once


def test_items_and_errors_come_through_in_order():
    def failing():
        yield from range(5)
        raise KeyError("broken file")

    got: list = []
    with pytest.raises(KeyError, match="broken file"):
        got.extend(prefetch(failing(), 2))
    assert got == [0, 1, 2, 3, 4]
    assert list(prefetch(iter(range(7)), 3)) == list(range(7))
    assert list(prefetch(iter(range(7)), 0)) == list(range(7))
