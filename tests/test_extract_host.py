"""The extraction host: length policy, damaged videos, lookahead feeding, shards, worker
processes with their thread share, and kill-and-resume with a real SIGKILL (real mp4/avi files,
real Zarr stores, real processes)."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pytest
from actrec_plugins.extractors.colorgrad import ColorGradient

from actrec.errors import ConfigError, PluginError
from actrec.extract import extract_features, in_shard, parse_shard
from actrec.extract_video import CUT_LABELS, CUT_VIDEO
from actrec.extract_workers import cpu_cores
from actrec.io.features import FeatureStore
from actrec.io.video import open_video
from actrec.plugin_api import FeatureExtractor, VideoRecord

CG = ColorGradient.Config(grid=2, bins=4, resize=32)
TESTS = Path(__file__).resolve().parent


# ------------------------------------------------------------------ extractors used here
# (module level: worker processes rebuild them from their class)


class PeekAhead(FeatureExtractor):
    """Feature of frame t = mean grey level of frame t + 2 (the last frame received where the
    video ends): a lookahead of 2, yielded late, padded at the end."""

    name = "peek"
    lookahead = 2

    def dim(self) -> int:
        return 1

    def extract(self, batches: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        means: list[float] = []
        sent = 0
        for batch in batches:
            means.extend(float(f.mean()) for f in batch)
            ready = len(means) - self.lookahead  # rows whose future has arrived
            if ready > sent:
                yield np.array([[means[t + 2]] for t in range(sent, ready)], np.float32)
                sent = ready
        if len(means) > sent:
            yield np.array([[means[min(t + 2, len(means) - 1)]] for t in range(sent, len(means))],
                           np.float32)


class ThreadProbe(FeatureExtractor):
    """Every frame's feature says how its process was set up: [threads given, worker index,
    OpenCV threads, torch threads, process id]."""

    name = "threadprobe"
    lookahead = 0

    def setup(self, runtime) -> None:
        super().setup(runtime)
        import torch  # imported in setup, as a backbone would be

        self.torch = torch

    def dim(self) -> int:
        return 5

    def extract(self, batches):
        import cv2

        for batch in batches:
            row = [self.runtime.threads, self.runtime.worker, cv2.getNumThreads(),
                   self.torch.get_num_threads(), os.getpid() % 2048]
            yield np.tile(np.array(row, np.float32), (batch.shape[0], 1))


class NoLookahead(FeatureExtractor):
    """Forgets to declare lookahead."""

    name = "nolookahead"

    def dim(self) -> int:
        return 1

    def extract(self, batches):
        for batch in batches:
            yield np.zeros((batch.shape[0], 1), np.float32)


class Exploding(ColorGradient):
    """colorgrad that breaks on nearly white frames (some videos only)."""

    def extract(self, batches):
        for batch in batches:
            if batch.mean() > 240:
                raise ValueError("bright frame, cannot cope")
            yield from super().extract([batch])


class SlowColorGrad(ColorGradient):
    """colorgrad (same name, config and values) that sleeps per batch and leaves a marker file
    per batch in $ACTREC_TEST_MARKS, so a test can kill it in the middle of a video."""

    waited = False

    def extract(self, batches):
        marks = Path(os.environ["ACTREC_TEST_MARKS"])
        delay = float(os.environ.get("ACTREC_TEST_DELAY", "0.1"))
        count = 0
        barrier = os.environ.get("ACTREC_TEST_BARRIER")  # "DIR:N": N processes start together
        if barrier and not SlowColorGrad.waited:
            SlowColorGrad.waited = True
            folder, n = Path(barrier.rsplit(":", 1)[0]), int(barrier.rsplit(":", 1)[1])
            (folder / str(os.getpid())).touch()
            deadline = time.monotonic() + 60
            while len(list(folder.iterdir())) < n and time.monotonic() < deadline:
                time.sleep(0.01)

        def slow():
            nonlocal count
            for batch in batches:
                count += 1
                (marks / f"{os.getpid()}-{time.monotonic_ns()}").touch()
                time.sleep(delay)
                yield batch

        yield from super().extract(slow())


# ------------------------------------------------------------------ helpers


def _copy_index(index, **videos):
    return dataclasses.replace(index, videos={**index.videos, **videos})


def _store_content(path: Path) -> dict:
    """Everything a store holds that does not depend on when it was written."""
    store = FeatureStore.open(path)
    out = {"attrs": store.attrs}
    for vid in store.videos():
        x, y = store.read(vid)
        attrs = {k: v for k, v in store.video_attrs(vid).items() if k != "written_at"}
        out[vid] = (x.tobytes(), y.tobytes(), json.dumps(attrs, sort_keys=True))
    return out


def _record(vid: str, path: Path, labels) -> VideoRecord:
    return VideoRecord(id=vid, participant="P", labels=np.asarray(labels, np.int64), fps=15.0,
                       path=path)


# ------------------------------------------------------------------ length policy


def test_truncate_cuts_to_the_shorter_and_counts_both_ways(tiny_kitchen, tmp_path):
    _, index = tiny_kitchen
    a, b, c = sorted(index.videos)
    ra, rc = index.videos[a], index.videos[c]
    longer = np.concatenate([ra.labels, np.full(5, 1)])  # 5 labels past the video's end
    mine = _copy_index(index, **{a: dataclasses.replace(ra, labels=longer),
                                 c: dataclasses.replace(rc, labels=rc.labels[:-3])})
    path = tmp_path / "s.zarr"
    report = extract_features(mine, ColorGradient(CG), path, dataset_ref="r")
    assert report.ok and sorted(report.written) == [a, b, c]
    assert sorted(report.cut) == [(a, 0, 5), (c, 3, 0)]
    assert report.frames_cut == {CUT_VIDEO: 3, CUT_LABELS: 5}
    assert report.to_dict()["frames_cut"] == {CUT_VIDEO: 3, CUT_LABELS: 5}
    assert report.frames == ra.num_frames + index.videos[b].num_frames + rc.num_frames - 3
    store = FeatureStore.open(path)
    x, y = store.read(a)  # the whole video, its labels without the 5 extra
    np.testing.assert_array_equal(y, ra.labels)
    assert store.video_attrs(a)["frames_cut"] == {"video": 0, "labels": 5}
    x, y = store.read(c)  # the video cut to its labels: the first n - 3 frames
    n = rc.num_frames
    frames = open_video(rc.path).read(range(n - 3))
    direct = np.concatenate(list(ColorGradient(CG).extract([frames])))
    np.testing.assert_array_equal(x, direct.astype(np.float16).astype(np.float32))
    np.testing.assert_array_equal(y, rc.labels[:-3])
    assert store.video_attrs(c)["frames_cut"] == {"video": 3, "labels": 0}


def test_error_policy_refuses_and_large_gaps_fail_under_any_policy(tiny_kitchen, tmp_path):
    _, index = tiny_kitchen
    a, _, c = sorted(index.videos)
    ra = index.videos[a]
    n = ra.num_frames
    doubled = np.concatenate([ra.labels, ra.labels])  # n frames more: n / 15 s of labels
    mine = _copy_index(index, **{a: dataclasses.replace(ra, labels=doubled),
                                 c: dataclasses.replace(index.videos[c],
                                                        labels=index.videos[c].labels[:-1])})
    for policy in ("truncate", "error"):
        report = extract_features(mine, ColorGradient(CG), tmp_path / f"{policy}.zarr",
                                  dataset_ref="r", length_policy=policy, max_length_gap=1.0)
        failed = dict(report.failed)
        assert f"video '{a}'" in failed[a] and f"{n} frames ({n / 15:.1f} s)" in failed[a]
        assert f"{2 * n} labels" in failed[a] and "more than the 1 s" in failed[a]
        if policy == "error":
            assert set(failed) == {a, c} and "lengths must match" in failed[c]
        else:
            assert set(failed) == {a} and report.cut == ((c, 1, 0),)
    # The default gap (5 s) accepts these n frames (< 5 s) in seconds, but not as a share: the
    # labels are twice the video (what labels at twice the video's frame rate look like), 50 %
    # of the longer; c's one frame in 40 is cut
    report = extract_features(mine, ColorGradient(CG), tmp_path / "d.zarr", dataset_ref="r")
    assert set(dict(report.failed)) == {a} and report.cut == ((c, 1, 0),)
    assert dict(report.failed)[a].endswith(
        f"{n} frames ({n / 15:.1f} s) at 15 fps but {2 * n} labels at that rate: they differ by "
        f"50 % of the longer, more than the 20 % any length policy accepts (labels at another "
        f"frame rate than the video's? They are read at 15 fps, the dataset's rate; "
        f"--max-length-share raises the limit)")
    # ... unless the limit is raised: then they are cut
    report = extract_features(mine, ColorGradient(CG), tmp_path / "e.zarr", dataset_ref="r",
                              max_length_share=0.5)
    assert report.ok and (a, 0, n) in report.cut
    with pytest.raises(ConfigError, match=r"--max-length-share: expected a fraction in \[0, 1\]"):
        extract_features(index, ColorGradient(CG), tmp_path / "x.zarr", dataset_ref="r",
                         max_length_share=1.5)
    with pytest.raises(ConfigError, match="--length-policy: expected one of truncate, error"):
        extract_features(index, ColorGradient(CG), tmp_path / "x.zarr", dataset_ref="r",
                         length_policy="pad")


# ------------------------------------------------------------------ damaged videos


def test_zero_byte_truncated_and_short_videos_fail_and_a_rerun_retries_only_them(
        tiny_kitchen, tmp_path, level_frames):
    import cv2

    _, index = tiny_kitchen
    a, b, c = sorted(index.videos)
    # An AVI whose header says 60 frames, cut in half: it opens, then yields fewer frames.
    avi = tmp_path / "short.avi"
    writer = cv2.VideoWriter(str(avi), cv2.VideoWriter_fourcc(*"MJPG"), 15.0, (40, 32))
    for i, frame in enumerate(level_frames(60)):
        frame[:, i % 40] = 255  # some texture: frames of distinct sizes, as real ones
        writer.write(frame)
    writer.release()
    whole = avi.read_bytes()
    avi.write_bytes(whole[: len(whole) // 2])
    assert open_video(avi).num_frames < 30  # decord counts what it can index
    zero = tmp_path / "zero.mp4"
    zero.write_bytes(b"")
    cut_mp4 = tmp_path / "cut.mp4"
    cut_mp4.write_bytes(index.videos[c].path.read_bytes()[:300])
    mine = _copy_index(index, **{
        a: dataclasses.replace(index.videos[a], path=zero),
        c: dataclasses.replace(index.videos[c], path=cut_mp4),
        "short": _record("short", avi, np.zeros(60)),
        "nofile": dataclasses.replace(_record("nofile", None, np.zeros(10))),
    })
    mine = dataclasses.replace(mine, missing_videos={"nofile": "no video file found; looked "
                                                               "for /data/nofile.mp4"})
    path = tmp_path / "s.zarr"
    report = extract_features(mine, ColorGradient(CG), path, dataset_ref="r")
    failed = dict(report.failed)
    assert report.written == (b,) and set(failed) == {a, c, "short", "nofile"}
    assert "zero.mp4: empty file (0 bytes); expected a video" in failed[a]
    assert "cut.mp4: cannot decode video" in failed[c]
    assert "short.avi): the decoder finds" in failed["short"]
    assert "the file's header says 60 (truncated file?)" in failed["short"]
    assert failed["nofile"] == "video 'nofile': no video file found; looked for " \
                               "/data/nofile.mp4"
    assert FeatureStore.open(path).videos() == [b] and not (path / ".tmp").exists()
    # The files repaired: a second run does exactly the failed ones.
    avi.write_bytes(whole)
    fixed = _copy_index(index, short=_record("short", avi, np.zeros(60)))
    report = extract_features(fixed, ColorGradient(CG), path, dataset_ref="r")
    assert sorted(report.written) == sorted([a, c, "short"]) and report.skipped == (b,)


def test_an_extractor_failing_on_one_video_fails_that_video_only(tiny_kitchen, tmp_path,
                                                                  write_mp4, level_frames):
    _, index = tiny_kitchen
    bright = write_mp4(tmp_path / "bright.mp4", np.full((12, 32, 32, 3), 250, np.uint8))
    mine = _copy_index(index, bright=_record("bright", bright, np.zeros(12)))
    report = extract_features(mine, Exploding(CG), tmp_path / "s.zarr", dataset_ref="r")
    assert sorted(report.written) == sorted(index.videos)
    assert [v for v, _ in report.failed] == ["bright"]
    assert "extractor 'colorgrad' failed: ValueError: bright frame" in report.failed[0][1]


# ------------------------------------------------------------------ the plugin contract


def test_an_extractor_that_does_not_declare_lookahead_is_refused(tiny_kitchen, tmp_path):
    from actrec import registry

    with pytest.raises(PluginError, match="NoLookahead does not declare lookahead: every "
                       "extractor must say how many future frames"):
        registry.validate(NoLookahead, FeatureExtractor, "nolookahead")
    registry.validate(PeekAhead, FeatureExtractor, "peek")  # declared: accepted
    _, index = tiny_kitchen
    with pytest.raises(ConfigError, match=r"extractor 'nolookahead' \(NoLookahead\) does not "
                       r"declare lookahead"):
        extract_features(index, NoLookahead(), tmp_path / "s.zarr", dataset_ref="r")
    assert not (tmp_path / "s.zarr").exists()


def test_a_lookahead_extractor_sees_the_real_future_past_a_cut(tmp_path, write_mp4,
                                                               level_frames):
    from actrec.plugin_api import DatasetIndex, Split

    video = write_mp4(tmp_path / "v.mp4", level_frames(20))
    # frame i's mean as decoded (flat grey 20 + 9 i before compression)
    level = np.array([float(f.mean()) for f in open_video(video).read(range(20))], np.float32)
    assert np.all(np.diff(level) > 5)  # every frame tells which it is

    def run(n_labels: int, name: str):
        index = DatasetIndex("d", ("x",), {"v": _record("v", video, np.zeros(n_labels))},
                             {"1": Split("1", ("v",), ())}, 15.0)
        report = extract_features(index, PeekAhead(), tmp_path / name, dataset_ref="r",
                                  dtype="float32", batch_size=4)
        assert report.ok, report.failed
        return FeatureStore.open(tmp_path / name).read("v")[0][:, 0]

    cut = run(17, "cut.zarr")  # 17 labels: frames 0..16 kept, 17 and 18 fed as their future
    assert cut.shape == (17,)
    np.testing.assert_array_equal(cut, level[2:19])  # frame 16 sees frame 18
    whole = run(20, "whole.zarr")  # the video's end: the extractor repeats its last frame
    np.testing.assert_array_equal(whole, np.r_[level[2:], level[19], level[19]])


# ------------------------------------------------------------------ shards, devices, workers


def test_shards_partition_the_videos_by_id_alone(tiny_kitchen, tmp_path):
    ids = [f"P{p:02d}_{r}" for p in range(30) for r in ("coffee", "tea")]
    shards = [[v for v in ids if in_shard(v, (i, 3))] for i in (1, 2, 3)]
    assert sorted(v for s in shards for v in s) == sorted(ids)  # each video in exactly one shard
    assert all(len(s) > 5 for s in shards)
    # by id alone: the order or subset of the list changes nothing
    assert [v for v in reversed(ids[:7]) if in_shard(v, (2, 3))] == \
        [v for v in reversed(ids[:7]) if v in shards[1]]
    # by hand: sha1("P00_coffee") starts with 0x0b3b...; its first 8 bytes mod 3
    import hashlib

    value = int.from_bytes(hashlib.sha1(b"P00_coffee").digest()[:8], "big")
    assert in_shard("P00_coffee", (value % 3 + 1, 3))
    assert parse_shard("2/4") == (2, 4) and parse_shard(None) is None
    for bad in ("0/4", "5/4", "2", "a/b", "2/0"):
        with pytest.raises(ConfigError, match="--shard: expected I/N with 1 <= I <= N"):
            parse_shard(bad)
    _, index = tiny_kitchen
    stores = []
    for i in (1, 2):
        report = extract_features(index, ColorGradient(CG), tmp_path / "s.zarr",
                                  dataset_ref="r", shard=f"{i}/2")
        stores.append(set(report.written))
        assert report.shard == (i, 2)
        assert all(in_shard(v, (i, 2)) for v in report.written)
    assert stores[0] | stores[1] == set(index.videos) and not stores[0] & stores[1]


def test_device_option(tiny_kitchen, tmp_path):
    import torch

    _, index = tiny_kitchen
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="--device cuda: no CUDA device is available"):
            extract_features(index, ColorGradient(CG), tmp_path / "s.zarr", dataset_ref="r",
                             device="cuda")
        assert not (tmp_path / "s.zarr").exists()
    with pytest.raises(ConfigError, match="--device: expected cpu, cuda, cuda:N or auto"):
        extract_features(index, ColorGradient(CG), tmp_path / "s.zarr", dataset_ref="r",
                         device="tpu")
    probe = ThreadProbe()
    extract_features(index, probe, tmp_path / "p.zarr", dataset_ref="r", device="auto",
                     video_ids=[min(index.videos)])
    expected = "cuda:0" if torch.cuda.is_available() else "cpu"
    assert probe.runtime.device == expected and probe.runtime.threads == cpu_cores()


@pytest.mark.slow
def test_two_workers_write_the_same_store_as_one_each_with_its_share_of_threads(
        tiny_kitchen, tmp_path):
    _, index = tiny_kitchen
    import io

    from rich.console import Console
    from rich.progress import Progress

    one = extract_features(index, ColorGradient(CG), tmp_path / "one.zarr", dataset_ref="r")
    with Progress(console=Console(file=io.StringIO(), force_terminal=False)) as progress:
        two = extract_features(index, ColorGradient(CG), tmp_path / "two.zarr", dataset_ref="r",
                               workers=2, progress=progress)
        tasks = progress.tasks
    # the workers' frames reach the parent's bars; per-video bars are gone at the end
    assert [t.completed for t in tasks] == [len(index.videos), one.frames]
    assert [t.total for t in tasks] == [len(index.videos), one.frames]
    assert sorted(two.written) == sorted(one.written) == sorted(index.videos)
    assert two.workers == 2 and two.frames == one.frames
    a, b = _store_content(tmp_path / "one.zarr"), _store_content(tmp_path / "two.zarr")
    assert a == b
    # Threads: each of the 2 processes gets half the cores, in OpenCV and torch alike.
    probe = extract_features(index, ThreadProbe(), tmp_path / "p.zarr", dataset_ref="r",
                             workers=2)
    assert probe.ok, probe.failed
    share = max(1, cpu_cores() // 2)
    store = FeatureStore.open(tmp_path / "p.zarr")
    rows = np.concatenate([store.read(v)[0] for v in store.videos()])
    assert set(rows[:, 0]) == {share} and set(rows[:, 2]) == {share}
    assert set(rows[:, 3]) == {share}
    assert rows[:, 4].min() >= 0 and os.getpid() % 2048 not in set(rows[:, 4])  # not here


# ------------------------------------------------------------------ killed and resumed


_KILLABLE = textwrap.dedent("""
    import sys
    from actrec.extract import extract_features
    from actrec_plugins.datasets.synthetic import SyntheticKitchen
    from test_extract_host import CG, SlowColorGrad

    root, store, workers = sys.argv[1], sys.argv[2], int(sys.argv[3])
    ds = SyntheticKitchen(SyntheticKitchen.Config(
        root=root, kitchen="a", participants=3, videos_per_participant=1, frames_mean=40,
        size=32, folds=3, seed=7))
    extract_features(ds.load(), SlowColorGrad(CG), store, dataset_ref="r", workers=workers,
                     batch_size=8)
""")


def _claims_held(store: Path) -> bool:
    """True while some process holds a video claim of ``store`` (see ``extract_video.claim``)."""
    import fcntl

    for claim in (store / ".claims").glob("*"):
        try:
            fd = os.open(claim, os.O_RDWR)
        except FileNotFoundError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # closing drops the test's own lock at once
    return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (not yet reaped) is dead
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def _run_until_mid_video(tiny_kitchen, tmp_path, workers, *, batches=7, command=None,
                         pythonpath=(), new_session=False):
    """An uninterrupted reference store, and a killable extraction (``_KILLABLE``, or
    ``command``: arguments for ``python`` given the store's path, with ``pythonpath`` first on
    its path) into ``s.zarr`` left running once ``batches`` batches are done: ~40-frame videos
    in batches of 8 (5 each), so 7 is in the middle of a later video. Its stdout and stderr
    are pipes; ``new_session``: it leads a process group of its own (``os.killpg``).
    (index, reference, path, marks, process)."""
    dataset, index = tiny_kitchen
    reference = tmp_path / "reference.zarr"
    extract_features(index, ColorGradient(CG), reference, dataset_ref="r", batch_size=8)
    path, marks = tmp_path / "s.zarr", tmp_path / "marks"
    marks.mkdir()
    env = {**os.environ, "ACTREC_TEST_MARKS": str(marks), "ACTREC_TEST_DELAY": "0.15",
           "PYTHONPATH": os.pathsep.join([*map(str, pythonpath), str(TESTS), *sys.path])}
    args = (["-c", _KILLABLE, str(dataset.config.root), str(path), str(workers)]
            if command is None else command(path))
    proc = subprocess.Popen([sys.executable, *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=new_session)
    deadline = time.monotonic() + 120
    while len(list(marks.iterdir())) < batches and time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode()
        time.sleep(0.02)
    return index, reference, path, marks, proc


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_killed_mid_video_then_rerun_gives_the_uninterrupted_store(tiny_kitchen, tmp_path,
                                                                  workers):
    index, reference, path, marks, proc = _run_until_mid_video(tiny_kitchen, tmp_path, workers)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    pids = {int(m.name.split("-")[0]) for m in marks.iterdir()}
    if workers == 2:
        assert proc.pid not in pids and len(pids) == 2  # the workers did the work
    deadline = time.monotonic() + 20
    while any(_alive(p) for p in pids - {proc.pid}) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(p) for p in pids - {proc.pid}), "workers outlived their parent"
    # A dying worker's claims are freed when the kernel closes its files, which can trail its
    # state by a moment; a re-run during that moment rightly leaves those videos as busy.
    deadline = time.monotonic() + 20
    while _claims_held(path) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _claims_held(path), "a dead worker's claim is still held"
    done = FeatureStore.open(path).videos()
    assert len(done) < len(index.videos)  # killed before the end
    report = extract_features(index, ColorGradient(CG), path, dataset_ref="r", batch_size=8)
    assert sorted(report.skipped) == done and report.ok and not report.busy, report.to_dict()
    assert _store_content(path) == _store_content(reference)
    assert not (path / ".tmp").exists()


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_mid_video_releases_the_claims_and_the_rerun_completes(tiny_kitchen, tmp_path,
                                                                       workers):
    # A scheduler's SIGTERM stops the run as Ctrl-C does: exit status 143, the claims the
    # pipelined host holds (the video being extracted, the next one) or its stopped workers
    # held deleted, not left for another machine to wait a lease on.
    index, reference, path, _, proc = _run_until_mid_video(tiny_kitchen, tmp_path, workers)
    assert list((path / ".claims").glob("*.json"))  # videos being extracted are claimed
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 128 + signal.SIGTERM, proc.stderr.read().decode()
    assert not list((path / ".claims").glob("*.json"))
    done = FeatureStore.open(path).videos()
    assert len(done) < len(index.videos)  # stopped before the end
    report = extract_features(index, ColorGradient(CG), path, dataset_ref="r", batch_size=8)
    assert sorted(report.skipped) == done and report.ok and not report.busy, report.to_dict()
    assert _store_content(path) == _store_content(reference)


@pytest.mark.slow
def test_a_worker_that_dies_fails_only_its_video(tiny_kitchen, tmp_path, monkeypatch):
    """A worker killed (as by the OOM killer) mid-video: that video fails with the reason, a
    replacement worker does the rest, and the next run completes the store."""
    import threading

    _, index = tiny_kitchen
    marks = tmp_path / "marks"
    marks.mkdir()
    monkeypatch.setenv("ACTREC_TEST_MARKS", str(marks))
    monkeypatch.setenv("ACTREC_TEST_DELAY", "0.15")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS), *sys.path]))
    killed: list[int] = []

    def kill_first_worker():
        deadline = time.monotonic() + 120
        while not killed and time.monotonic() < deadline:
            for m in marks.iterdir():
                pid = int(m.name.split("-")[0])
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                return
            time.sleep(0.02)

    killer = threading.Thread(target=kill_first_worker)
    killer.start()
    path = tmp_path / "s.zarr"
    report = extract_features(index, SlowColorGrad(CG), path, dataset_ref="r", workers=2,
                              batch_size=8)
    killer.join()
    assert killed and killed[0] != os.getpid()
    assert len(report.failed) == 1 and len(report.written) == len(index.videos) - 1
    vid, error = report.failed[0]
    assert error == (f"video {vid!r}: the worker process extracting it died (exit code -9; "
                     f"out of memory?)")
    again = extract_features(index, ColorGradient(CG), path, dataset_ref="r", batch_size=8)
    assert again.written == (vid,) and again.ok


def test_an_extractor_workers_cannot_rebuild_is_a_clear_error(tiny_kitchen, tmp_path):
    class Inner(ColorGradient):  # not importable by a worker process
        pass

    _, index = tiny_kitchen
    with pytest.raises(ConfigError, match=r"extractor class .*Inner cannot be sent to worker "
                       r"processes .*define it at the top level"):
        extract_features(index, Inner(CG), tmp_path / "s.zarr", dataset_ref="r", workers=2)


_CONCURRENT = _KILLABLE.replace("batch_size=8)", "batch_size=8).to_dict()") \
    .replace("extract_features(ds.load()",
             "import json\nprint(json.dumps(extract_features(ds.load()")
_CONCURRENT = _CONCURRENT.rstrip() + "))\n"


@pytest.mark.slow
def test_two_commands_on_one_store_extract_each_video_once(tiny_kitchen, tmp_path):
    """Two `actrec extract` runs started together on one store: each video is claimed by one
    of them; the other leaves it (busy) or finds it written, and the store is complete."""
    dataset, index = tiny_kitchen
    reference = tmp_path / "reference.zarr"
    extract_features(index, ColorGradient(CG), reference, dataset_ref="r", batch_size=8)
    path = tmp_path / "s.zarr"
    marks = tmp_path / "marks"
    marks.mkdir()
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    # both runs plan all three videos, then start extracting together
    env = {**os.environ, "ACTREC_TEST_MARKS": str(marks), "ACTREC_TEST_DELAY": "0.1",
           "ACTREC_TEST_BARRIER": f"{barrier}:2",
           "PYTHONPATH": os.pathsep.join([str(TESTS), *sys.path])}
    procs = [subprocess.Popen([sys.executable, "-c", _CONCURRENT, str(dataset.config.root),
                               str(path), "1"], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    reports = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        reports.append(json.loads(out))
    written = [set(r["written"]) for r in reports]
    assert not written[0] & written[1]  # nobody extracted a video twice
    assert written[0] | written[1] == set(index.videos)
    for r in reports:
        assert sorted(r["written"] + r["skipped"] + r["busy"]) == sorted(index.videos)
        assert r["failed"] == [] and r["written"]  # both did some of the work
    assert _store_content(path) == _store_content(reference)
    assert not (path / ".claims").exists() and not (path / ".tmp").exists()
