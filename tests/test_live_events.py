"""Pieces of live recognition checked by hand: events with a minimum duration, durations,
paced sources counting drops, and per-stream model states joined into batches."""

from __future__ import annotations

import time

import numpy as np
import pytest

from actrec.errors import ConfigError
from actrec.live_events import EventTracker, parse_duration


def _events(labels: str, fps: float, min_duration: float) -> list[tuple[int, tuple]]:
    """(frame at which it was reported, (kind, label, start, end)) for each event."""
    tracker = EventTracker(0, fps, min_duration)
    out = []
    for i, label in enumerate(labels):
        out += [(i, (e.kind, e.label, round(e.start, 6), e.end and round(e.end, 6)))
                for e in tracker.update(label, i)]
    out += [(len(labels), (e.kind, e.label, round(e.start, 6), round(e.end, 6)))
            for e in tracker.close()]
    return out


def test_min_duration_golden():
    """10 fps, 0.3 s: B (0.1 s) is flicker inside A; D (0.2 s) belongs to C, which ends where
    E starts; each start is reported on the frame that makes its run 0.3 s long."""
    assert _events("AAAABAACCCCDDEEE", 10.0, 0.3) == [
        (2, ("start", "A", 0.0, None)),
        (9, ("end", "A", 0.0, 0.7)), (9, ("start", "C", 0.7, None)),
        (15, ("end", "C", 0.7, 1.3)), (15, ("start", "E", 1.3, None)),
        (16, ("end", "E", 1.3, 1.6)),
    ]


def test_flicker_at_the_start_belongs_to_the_first_action_and_zero_keeps_every_segment():
    assert _events("XAAAA", 10.0, 0.3) == [(3, ("start", "A", 0.0, None)),
                                           (5, ("end", "A", 0.0, 0.5))]
    assert _events("XAAB", 10.0, 0.0) == [
        (0, ("start", "X", 0.0, None)), (1, ("end", "X", 0.0, 0.1)),
        (1, ("start", "A", 0.1, None)), (3, ("end", "A", 0.1, 0.3)),
        (3, ("start", "B", 0.3, None)), (4, ("end", "B", 0.3, 0.4))]
    assert _events("XY", 10.0, 0.5) == []  # nothing lasted: no action


def test_dropped_frames_count_by_time():
    """Frames 0, 3, 6 of a 10 fps stream (the others dropped) span 0.7 s."""
    tracker = EventTracker(2, 10.0, 0.5)
    assert tracker.update("A", 0) == [] and tracker.update("A", 3) == []
    (start,) = tracker.update("A", 6)
    assert (start.kind, start.stream, start.start) == ("start", 2, 0.0)


def test_parse_duration():
    assert parse_duration("0.5s") == 0.5
    assert parse_duration("500ms") == 0.5
    assert parse_duration("2") == 2.0
    for bad in ("-1s", "soon", "nan", "inf"):
        with pytest.raises(ConfigError, match="--min-duration"):
            parse_duration(bad)


def test_realtime_pacing_counts_every_frame_it_drops(tmp_path, write_mp4, level_frames):
    """A 60 fps file played in real time to a consumer taking a frame every 50 ms: every frame
    is either taken (in order) or counted as dropped."""
    from actrec.live_sources import PacedFrames, open_source

    path = write_mp4(tmp_path / "v.mp4", level_frames(30), fps=60.0)
    source = open_source(str(path), 60.0)
    assert (source.kind, source.num_frames) == ("file", 30)
    paced = PacedFrames(source, pace=True)
    taken = []
    while True:
        try:
            item = paced.take(1.0)
        except StopIteration:
            break
        if item is not None:
            taken.append(item[0])
            time.sleep(0.05)
    paced.close()
    assert taken == sorted(taken) and len(set(taken)) == len(taken)
    assert paced.dropped > 0 and len(taken) + paced.dropped == 30


def test_a_held_clock_waits_on_the_first_frame_and_counts_start_up_apart(
        tmp_path, write_mp4, level_frames):
    """``started=False``: a paced file hands over frame 0 and waits (no frame is due, none
    dropped, however long the consumer warms up); a live source whose frames the test releases
    one by one counts those replaced before ``start()`` as skipped, those after as dropped."""
    import threading

    from actrec.live_sources import FrameSource, PacedFrames, open_source

    path = write_mp4(tmp_path / "v.mp4", level_frames(10), fps=20.0)
    paced = PacedFrames(open_source(str(path), 20.0), pace=True, started=False)
    assert paced.peek()[0] == 0
    time.sleep(0.3)  # 6 frame periods of warm-up
    assert paced.peek()[0] == 0 and (paced.dropped, paced.skipped) == (0, 0)
    start = time.perf_counter()
    paced.start()
    taken, when = [], []
    while True:
        try:
            item = paced.take(1.0)
        except StopIteration:
            break
        if item is not None:
            taken.append(item[0])
            when.append(time.perf_counter() - start)
    paced.close()
    # Frame i is handed over no sooner than i / 20 s after start() (were the warm-up counted,
    # frames 1-6 would all be due at once); every frame is taken or counted as dropped (none
    # is, unless this process was held up for a frame period: a loaded machine).
    assert taken[0] == 0 and taken == sorted(set(taken)) and len(taken) + paced.dropped == 10
    for i, seconds in zip(taken, when, strict=True):
        assert i / 20.0 <= seconds + 1e-3, (i, seconds)

    release = [threading.Event() for _ in range(3)]
    frame = np.zeros((4, 4, 3), np.uint8)

    def camera():  # frames 0-2 come before start(), 3-4 while the consumer is busy, then 5
        for i in range(3):
            yield i, frame
        release[0].set()
        release[1].wait(5)
        yield 3, frame
        yield 4, frame
        release[2].wait(5)
        yield 5, frame

    live = PacedFrames(FrameSource("cam", "camera", 20.0, True, None, camera()), pace=False,
                       started=False)
    assert release[0].wait(5)
    assert live.peek()[0] == 2 and (live.skipped, live.dropped) == (2, 0)
    live.start()
    assert live.take(1.0)[0] == 2
    release[1].set()
    deadline = time.monotonic() + 5
    while live.dropped == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert live.take(1.0)[0] == 4 and (live.skipped, live.dropped) == (2, 1)
    release[2].set()
    assert live.take(1.0)[0] == 5
    live.close()


def test_sources_are_named_in_errors(tmp_path):
    from actrec.errors import DataError
    from actrec.live_sources import open_source, source_kind

    assert source_kind("rtsp://host/x") == "url" and source_kind("3") == "camera"
    assert source_kind(str(tmp_path)) == "folder"
    with pytest.raises(DataError, match="source 'nope.mp4': no such file"):
        open_source("nope.mp4", 15.0)
    with pytest.raises(DataError, match="source 'http://127.0.0.1:9/x.mp4': cannot open"):
        open_source("http://127.0.0.1:9/x.mp4", 15.0)


def test_states_are_joined_along_their_batch_axis_and_a_step_counter_is_shared():
    import torch

    from actrec.live_state import StateBatcher

    def init(n, domain):
        return {"t": 0, "domain": domain, "h": (torch.zeros(2, n, 3), torch.zeros(2, n, 3))}

    batcher = StateBatcher(init, lambda n: torch.zeros(n, dtype=torch.long))
    assert batcher.batchable and batcher.axes == [None, 0, 1, 1]
    a, b = batcher.fresh(), batcher.fresh()
    b = {**b, "h": (torch.ones(2, 1, 3), torch.full((2, 1, 3), 2.0))}
    assert batcher.key(a) == batcher.key(b)
    joined = batcher.join([a, b])
    assert joined["h"][0].shape == (2, 2, 3) and joined["t"] == 0
    back = batcher.split(joined, 2)
    assert all(torch.equal(x, y) for s, r in zip(back, (a, b)) for x, y in zip(s["h"], r["h"]))
    assert batcher.key({**a, "t": 5}) != batcher.key(b)  # another step: another batch
    odd = StateBatcher(lambda n, d: {"x": torch.zeros(n, n)}, lambda n: np.zeros(n))
    assert not odd.batchable and odd.key(odd.fresh()) != odd.key(odd.fresh())


def test_an_extractor_that_holds_rows_back_is_refused_live():
    """Live feeding gives one frame at a time; an extractor that waits for two batches before
    yielding cannot answer live and says so; one that yields per batch is fed row by row."""
    from actrec.plugin_api import FeatureExtractor
    from actrec.recognizer import ExtractorFeed

    class Mean(FeatureExtractor):
        name = "mean"
        lookahead = 0

        def dim(self):
            return 1

        def extract(self, batches):
            for b in batches:
                yield b.reshape(b.shape[0], -1).mean(1, keepdims=True).astype(np.float32)

    class Pairs(Mean):
        name = "pairs"

        def extract(self, batches):
            held = []
            for b in batches:
                held.append(b)
                if len(held) == 2:
                    yield from Mean.extract(self, [np.concatenate(held)])
                    held = []

    frames = [np.full((4, 4, 3), v, np.uint8) for v in (10, 20, 30)]
    feed = ExtractorFeed(Mean(), 1, "test")
    assert [float(feed.push(f)[0]) for f in frames] == [10.0, 20.0, 30.0]
    feed = ExtractorFeed(Pairs(), 1, "run X")
    with pytest.raises(ConfigError, match="run X: extractor 'pairs' holds a frame's features "
                                          "back"):
        feed.push(frames[0])


def test_export_names_only_operators_a_plain_torch_cannot_run():
    import torch

    from actrec.export import _custom_ops

    def twice_impl(x):
        return x * 2

    twice_impl.__annotations__ = {"x": torch.Tensor, "return": torch.Tensor}  # no string hints
    twice = torch.library.custom_op("actrec_exporttest::twice", mutates_args=())(twice_impl)

    @twice.register_fake
    def _(x):
        return torch.empty_like(x)

    class Step(torch.nn.Module):
        def forward(self, x, n: int):
            return twice(x) * torch.sym_min(n, 3)  # sym_min is torch's own: not named

    program = torch.export.export(Step(), (torch.ones(2), 5),
                                  dynamic_shapes=(None, torch.export.Dim.DYNAMIC))
    assert _custom_ops(program) == ["actrec_exporttest.twice.default"]
