"""Closing a ``prefetch`` early returns at once: its producer thread, blocked on the full queue,
is let go (the queue drained) instead of noticing the stop on its next poll; and the source it
was reading is closed there, so that a decoder it holds lets go of its file at once too."""

from __future__ import annotations

import statistics
import time

import numpy as np
import pytest

from actrec.extract_video import prefetch


def _endless(closed: list):
    try:
        i = 0
        while True:
            yield np.full((4, 8), i, np.float32)
            i += 1
    finally:
        closed.append(True)


@pytest.mark.parametrize("depth", [1, 2, 8])
def test_closing_early_lets_the_blocked_producer_go_at_once(depth):
    """Latency, not speed: the old producer polled the stop every 0.1 s, so each close took
    about 0.1 s (median of 9 here: 0.10 s); now a close takes what a thread switch takes."""
    waits = []
    for _ in range(9):
        closed: list = []
        items = prefetch(_endless(closed), depth)
        assert int(next(items)[0, 0]) == 0
        time.sleep(0.01)  # the producer fills the queue and blocks on it
        started = time.perf_counter()
        items.close()
        waits.append(time.perf_counter() - started)
        assert closed == [True]  # the source was closed before close() returned
    assert statistics.median(waits) < 0.05, waits


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
