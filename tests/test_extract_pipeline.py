"""The pipelined extraction host (``process_tasks``): its opener and reader threads claim,
open and decode the next video while the extractor works on the current one. Its results must equal
extracting each video alone, whatever fails on the way, and it must never hold more claims
than it says or leave one behind (real mp4 files, real Zarr stores)."""

from __future__ import annotations

import dataclasses
import errno
import threading
import time
from typing import ClassVar

import numpy as np
import pytest
from actrec_plugins.extractors.colorgrad import ColorGradient

from actrec.errors import DataError
from actrec.extract_claims import CLAIMS
from actrec.extract_video import HostOptions, VideoTask, extract_video, process_tasks
from actrec.io.features import FeatureStore

CG = ColorGradient.Config(grid=2, bins=4, resize=16)
OPTIONS = HostOptions(batch_size=4, prefetch=2)


class FailsOnBright(ColorGradient):
    """colorgrad that raises on the first nearly white batch of a video."""

    def extract(self, batches):
        def checked():
            for batch in batches:
                if batch.mean() > 240:
                    raise ValueError("bright frame, cannot cope")
                yield batch

        yield from super().extract(checked())


class CountsClaims(ColorGradient):
    """colorgrad that notes how many claims the store holds at every batch and, after each
    video's last batch but the last video's, once ``expect`` claims are held (waiting 10 s at
    most: the reader claims ahead) and again after giving it 0.3 s to claim one too many."""

    def __init__(self, config, store_path, videos: int, expect: int):
        super().__init__(config)
        self.claims_dir = store_path / CLAIMS
        self.seen: list[int] = []
        self.videos, self.expect, self.done = videos, expect, 0

    def count(self) -> int:
        return len(list(self.claims_dir.glob("*.json")))

    def wait(self, claims: int, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while self.count() < claims and time.monotonic() < deadline:
            time.sleep(0.01)
        self.seen.append(self.count())

    def extract(self, batches):
        def counted():
            for batch in batches:
                self.seen.append(self.count())
                yield batch
            self.done += 1
            if self.done < self.videos:
                self.wait(self.expect, 10)
                self.wait(self.expect + 1, 0.3)

        yield from super().extract(counted())


class FailingStore(FeatureStore):
    """A real store whose disk is full from the ``fail_at``-th video written on."""

    fail_at = 2

    def write_video(self, *args, **kwargs):
        type(self).fail_at -= 1
        if type(self).fail_at <= 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        return super().write_video(*args, **kwargs)


def _store(path, index, cls=FeatureStore):
    FeatureStore.open_or_create(path, dataset="r", split_scheme="s", classes=index.classes,
                                splits={}, extractor="colorgrad", extractor_config={},
                                lookahead=0, dtype="float32")
    return cls.open(path)


def _task(vid, path, frames) -> VideoTask:
    return VideoTask(vid, path, np.zeros(frames, np.int64), 15.0)


def _kitchen_tasks(index) -> list[VideoTask]:
    return [VideoTask(r.id, r.path, r.labels, float(r.fps)) for r in index.videos.values()]


def _no_reader_left() -> bool:
    return not any(t.name in ("actrec-decode", "actrec-open") for t in threading.enumerate())


def test_a_run_of_good_and_failing_videos_equals_each_video_alone(tiny_kitchen, tmp_path,
                                                                   write_mp4):
    _, index = tiny_kitchen
    good = _kitchen_tasks(index)
    bright = write_mp4(tmp_path / "bright.mp4", np.full((40, 32, 32, 3), 250, np.uint8))
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(good[0].path.read_bytes()[:300])
    # The bright video fails at its first batch while the reader has queued more of its
    # batches: those must not reach the next video's extractor.
    tasks = [good[0], _task("bright", bright, 40), good[1],
             dataclasses.replace(_task("nofile", None, 10), missing_reason="no file found"),
             _task("cut", cut, 40), good[2]]
    path = tmp_path / "s.zarr"
    store = _store(path, index)
    outcomes, started, frames = [], [], []
    process_tasks(tasks, FailsOnBright(CG), store, OPTIONS, on_done=outcomes.append,
                  on_start=lambda vid, n: started.append((vid, n)), on_frames=frames.append)
    assert [o.id for o in outcomes] == [t.id for t in tasks]
    assert [o.ok for o in outcomes] == [True, False, True, False, False, True]
    errors = {o.id: o.error for o in outcomes if not o.ok}
    assert "extractor 'colorgrad' failed: ValueError: bright frame" in errors["bright"]
    assert errors["nofile"] == "video 'nofile': no file found"
    assert "cut.mp4: cannot decode video" in errors["cut"]
    # Each written video holds what extracting it alone gives.
    for task in (good[0], good[1], good[2]):
        alone = extract_video(task, ColorGradient(CG), OPTIONS)
        x, y = store.read(task.id)
        np.testing.assert_array_equal(x, alone.features)
        np.testing.assert_array_equal(y, alone.labels)
    # Started for every opened video; every frame of the good videos counted.
    assert [v for v, _ in started] == [good[0].id, "bright", good[1].id, good[2].id]
    assert sum(frames) == sum(n for v, n in started if v != "bright")
    assert not list((path / CLAIMS).glob("*.json")) and _no_reader_left()


@pytest.mark.parametrize("ahead", [1, 2])
def test_the_reader_claims_at_most_ahead_videos(tiny_kitchen, tmp_path, ahead):
    _, index = tiny_kitchen
    path = tmp_path / "s.zarr"
    store = _store(path, index)
    tasks = _kitchen_tasks(index)
    extractor = CountsClaims(CG, path, len(tasks), expect=ahead)
    outcomes = []
    process_tasks(tasks, extractor, store, OPTIONS, on_done=outcomes.append, ahead=ahead)
    assert all(o.ok for o in outcomes) and len(outcomes) == len(tasks)
    # ahead=2: before a video's features are written the next one is claimed (and being
    # decoded), never a third; ahead=1: one video at a time.
    assert max(extractor.seen) == ahead and min(extractor.seen) >= 1
    assert not list((path / CLAIMS).glob("*.json")) and _no_reader_left()


def test_a_store_that_cannot_be_written_stops_the_run_and_releases_every_claim(
        tiny_kitchen, tmp_path):
    _, index = tiny_kitchen
    path = tmp_path / "s.zarr"
    store = _store(path, index, FailingStore)
    tasks = _kitchen_tasks(index)
    outcomes = []
    with pytest.raises(DataError, match=f"cannot write video '{tasks[1].id}': No space left"):
        process_tasks(tasks, ColorGradient(CG), store, OPTIONS, on_done=outcomes.append)
    assert [o.id for o in outcomes] == [tasks[0].id] and store.videos() == [tasks[0].id]
    assert not list((path / CLAIMS).glob("*.json")) and _no_reader_left()


class PausesOnDark(FailsOnBright):
    """FailsOnBright that, at the first batch of a dark video, waits until the reader has
    stopped decoding ahead and notes how many batches of that video it has decoded."""

    def __init__(self, config, decoded):
        super().__init__(config)
        self.decoded, self.ahead = decoded, []

    def extract(self, batches):
        def paused():
            for i, batch in enumerate(batches):
                if i == 0 and batch.mean() < 40:
                    before = -1
                    while before != sum(self.decoded.values()):  # the reader is blocked
                        before = sum(self.decoded.values())
                        time.sleep(0.3)
                    self.ahead.append(self.decoded["dark"])
                yield batch

        yield from super().extract(paused())


def test_videos_failing_mid_decode_do_not_let_the_reader_run_further_ahead(
        tiny_kitchen, tmp_path, write_mp4, monkeypatch):
    # Each video whose extractor fails while the reader still decodes it is cancelled; the
    # batches the reader may queue beyond the one in use must stay ``prefetch``, not grow by
    # one per cancelled video (memory: a run of failing videos would end up decoding whole
    # videos ahead).
    import collections

    import actrec.extract_video as host

    decoded: collections.Counter = collections.Counter()
    real = host._decode

    def counted(video, batch_size):  # the real decoder, its batches counted per video
        for batch in real(video, batch_size):
            decoded[video.task.id] += 1
            yield batch

    monkeypatch.setattr(host, "_decode", counted)
    _, index = tiny_kitchen
    bright = write_mp4(tmp_path / "bright.mp4", np.full((48, 32, 32, 3), 250, np.uint8))
    dark = write_mp4(tmp_path / "dark.mp4", np.full((48, 32, 32, 3), 10, np.uint8))
    tasks = [_task(f"bright{i}", bright, 48) for i in range(4)] + [_task("dark", dark, 48)]
    store = _store(tmp_path / "s.zarr", index)
    extractor = PausesOnDark(CG, decoded)
    outcomes = []
    process_tasks(tasks, extractor, store, OPTIONS, on_done=outcomes.append)
    assert [o.ok for o in outcomes] == [False] * 4 + [True]
    assert all(decoded[f"bright{i}"] < 12 for i in range(4))  # each was cut short
    # The batch in use, ``prefetch`` queued, and one decoded waiting for room.
    assert extractor.ahead == [1 + OPTIONS.prefetch + 1]


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_a_store_whose_claims_cannot_be_made_stops_the_run_naming_it(tiny_kitchen, tmp_path,
                                                                      workers):
    # A file where the claims folder belongs (as a full disk or a read-only store would):
    # a DataError naming the store, also from worker processes (not each video failing as
    # "the worker process died").
    from actrec.extract import extract_features

    _, index = tiny_kitchen
    path = tmp_path / "s.zarr"
    first = min(index.videos)
    extract_features(index, ColorGradient(CG), path, dataset_ref="r", video_ids=[first])
    (path / CLAIMS).write_text("not a folder")
    with pytest.raises(DataError, match=rf"feature store {path}: cannot claim video '\w+': "
                                        rf"File exists \({path / CLAIMS}\)"):
        extract_features(index, ColorGradient(CG), path, dataset_ref="r", workers=workers)
    assert FeatureStore.open(path).videos() == [first] and _no_reader_left()


@pytest.mark.parametrize("ahead", [1, 2])
def test_the_next_video_is_opened_while_the_current_one_is_still_decoding(
        tiny_kitchen, tmp_path, write_mp4, monkeypatch, ahead):
    # Claiming and opening a file (its checks, the decoder's start) take a few ms per video:
    # with ahead=2 they run beside the decoding of the video before, not after its last
    # batch (the decoder would wait for them); ahead=1 (worker processes) claims no video
    # before the previous one is done.
    import actrec.extract_video as host

    opened: list[str] = []
    real = host._open

    def noted(task, extractor, options):
        video = real(task, extractor, options)
        opened.append(task.id)
        return video

    monkeypatch.setattr(host, "_open", noted)
    _, index = tiny_kitchen
    clip = write_mp4(tmp_path / "long.mp4", np.full((64, 32, 32, 3), 90, np.uint8))
    tasks = [_task(f"v{i}", clip, 64) for i in range(3)]  # 16 batches of 4 frames each
    seen: list[tuple[str, list[str]]] = []

    class Notes(ColorGradient):
        def extract(self, batches):
            def noted():
                for i, batch in enumerate(batches):
                    if i == 0:  # the first batch: 12 of this video's not decoded yet
                        deadline = time.monotonic() + (5 if ahead == 2 else 0.3)
                        while len(opened) < min(len(tasks), len(seen) + 2) and \
                                time.monotonic() < deadline:
                            time.sleep(0.01)
                        seen.append((f"v{len(seen)}", list(opened)))
                    yield batch

            yield from super().extract(noted())

    outcomes = []
    process_tasks(tasks, Notes(CG), _store(tmp_path / "s.zarr", index), OPTIONS,
                  on_done=outcomes.append, ahead=ahead)
    assert all(o.ok for o in outcomes)
    if ahead == 2:
        assert seen == [("v0", ["v0", "v1"]), ("v1", ["v0", "v1", "v2"]),
                        ("v2", ["v0", "v1", "v2"])]
    else:
        assert seen == [("v0", ["v0"]), ("v1", ["v0", "v1"]), ("v2", ["v0", "v1", "v2"])]
    assert _no_reader_left()


class SlowStore(FeatureStore):
    """A real store that takes 0.4 s to write a video, noting when each write ends."""

    ended: ClassVar[dict] = {}

    def write_video(self, video_id, *args, **kwargs):
        time.sleep(0.4)
        super().write_video(video_id, *args, **kwargs)
        type(self).ended[video_id] = time.monotonic()


def test_a_video_is_written_while_the_next_is_extracted_and_callers_hear_in_order(
        tiny_kitchen, tmp_path, write_mp4):
    # The store write runs on a writer thread: the extractor starts on the next video
    # before the previous one's write has ended; outcomes and progress still come in task
    # order (a video's outcome before the next video's start), after its claim is released.
    _, index = tiny_kitchen
    clip = write_mp4(tmp_path / "clip.mp4", np.full((12, 32, 32, 3), 90, np.uint8))
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video")
    tasks = [_task("v0", clip, 12), _task("v1", clip, 12), _task("bad", bad, 12),
             _task("v2", clip, 12)]
    path = tmp_path / "s.zarr"
    store = _store(path, index, SlowStore)
    first_batch: dict = {}

    class Notes(ColorGradient):
        def extract(self, batches):
            video = len(first_batch)

            def noted():
                for batch in batches:
                    first_batch.setdefault(video, time.monotonic())
                    yield batch

            yield from super().extract(noted())

    heard = []

    def done(outcome):
        claims = sorted(p.stem for p in (path / CLAIMS).glob("*.json"))
        heard.append(("done", outcome.id, outcome.ok, outcome.id in claims))

    process_tasks(tasks, Notes(CG), store, OPTIONS, on_done=done,
                  on_start=lambda video, n: heard.append(("start", video)),
                  on_frames=lambda n: heard.append(("frames", n)))
    assert first_batch[1] < SlowStore.ended["v0"] and first_batch[2] < SlowStore.ended["v1"]
    frames = [("frames", 4)] * 3
    assert heard == [("start", "v0"), *frames, ("done", "v0", True, False),
                     ("start", "v1"), *frames, ("done", "v1", True, False),
                     ("done", "bad", False, False), ("start", "v2"), *frames,
                     ("done", "v2", True, False)]
    assert store.videos() == ["v0", "v1", "v2"] and _no_reader_left()
    assert not any(t.name.startswith("actrec-write") for t in threading.enumerate())


def test_an_error_releasing_a_claim_on_the_writer_thread_is_raised_not_hung_on(
        tiny_kitchen, tmp_path, write_mp4, monkeypatch):
    # The writer thread releases a video's claim when its write ends, then tells the host's
    # loop. An exception there (in a future's callback) is only logged by concurrent.futures:
    # the loop waited forever for the message. It is raised by process_tasks, as it was when
    # this thread released the claim itself.
    import contextlib

    import actrec.extract_video as host

    _, index = tiny_kitchen
    clip = write_mp4(tmp_path / "clip.mp4", np.full((12, 32, 32, 3), 90, np.uint8))
    tasks = [_task(f"v{i}", clip, 12) for i in range(3)]
    store = _store(tmp_path / "s.zarr", index)
    real = host.claim

    @contextlib.contextmanager
    def failing_release(store_path, video_id, **kwargs):
        with real(store_path, video_id, **kwargs) as mine:
            yield mine
        if video_id == "v0":
            raise RuntimeError("claim release failed")

    monkeypatch.setattr(host, "claim", failing_release)
    raised: list[BaseException] = []
    heard: list = []

    def run() -> None:
        try:
            process_tasks(tasks, ColorGradient(CG), store, OPTIONS, on_done=heard.append)
        except BaseException as exc:  # noqa: BLE001 - checked below
            raised.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(30)
    assert not thread.is_alive(), "process_tasks hung"
    assert [str(e) for e in raised] == ["claim release failed"] and heard == []
    assert not list((tmp_path / "s.zarr" / CLAIMS).glob("*.json"))
    assert _no_reader_left()


_TWICE = """
import os, signal, sys, threading, time
from pathlib import Path
from actrec_plugins.datasets.synthetic import SyntheticKitchen
from actrec_plugins.extractors.colorgrad import ColorGradient
from actrec.extract import ExtractInterrupted, extract_features
import actrec.io.features as F

root = Path(sys.argv[1])
index = SyntheticKitchen(SyntheticKitchen.Config(
    root=root / "data", kitchen="a", participants=3, videos_per_participant=1, frames_mean=40,
    size=32, folds=3, seed=7)).load()
real = F.FeatureStore._commit_video
first = min(index.videos)

def slow(self, video_id, *args, **kwargs):
    if video_id == first:  # Ctrl-C while this write is under way, and again as the run stops
        for delay in (0.2, 1.0)[:int(sys.argv[2])]:
            threading.Timer(delay, os.kill, (os.getpid(), signal.SIGINT)).start()
        time.sleep(2.0)
    real(self, video_id, *args, **kwargs)

F.FeatureStore._commit_video = slow
try:
    extract_features(index, ColorGradient(ColorGradient.Config(grid=2, bins=4, resize=16)),
                     root / "s.zarr", dataset_ref="r")
except ExtractInterrupted as exc:
    print("interrupted", exc.report.written)
"""


@pytest.mark.parametrize("interrupts", [1, 2])
def test_ctrl_c_while_the_writer_thread_writes_leaves_no_claim(tmp_path, interrupts):
    # Ctrl-C while the writer thread writes a video, and again while the stopped run waits
    # for that write: the write was cut off at the interpreter's exit (the interrupted
    # Thread.join marked the running writer as stopped, so Python did not wait for it) and
    # its claim stayed in the store, where other machines wait a lease for it. Now the
    # write ends at exit: the video is whole, no claim and no temp folder are left. Once
    # (the next video's write queued, then cancelled): the stop waits for the write under
    # way only, which is whole and reported written.
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", _TWICE, str(tmp_path), str(interrupts)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "interrupted" in out.stdout, out.stdout + out.stderr
    if interrupts == 1:
        assert "interrupted ('a_P01_01',)" in out.stdout, out.stdout
    store = tmp_path / "s.zarr"
    assert not list((store / CLAIMS).glob("*.json")) if (store / CLAIMS).exists() else True
    assert not (store / ".tmp").exists() or not any((store / ".tmp").iterdir())
    opened = FeatureStore.open(store)
    assert opened.videos() == ["a_P01_01"] and not opened.damage("a_P01_01")
