"""How a failing extractor is reported: an exception of any class raised by a plugin while it
extracts one video is that video's failure (type, message, extractor's name) in this process
and in worker processes alike; the other videos go on, the summary and the exit status say
so, a re-run does only that video. A worker that really dies is still reported as died.
Real mp4 files, real stores, a real third-party plugin distribution, real processes."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import extractor_plugin_site

from actrec.extract import extract_features
from actrec.io.features import FeatureStore
from actrec.plugin_api import FeatureExtractor

TESTS = Path(__file__).resolve().parent


class PluginTrouble(Exception):
    """A plugin's own exception class (no relation to the built-in ones)."""


class WhiteFrameHater(FeatureExtractor):
    """Per-frame mean grey level; raises ``$ACTREC_TEST_RAISE`` (KeyError, PluginTrouble) on a
    nearly white frame, so that one video of a dataset fails."""

    name = "whitehater"
    lookahead = 0

    def dim(self) -> int:
        return 1

    def extract(self, batches):
        for batch in batches:
            if batch.mean() > 240:
                if os.environ.get("ACTREC_TEST_RAISE") == "KeyError":
                    raise KeyError("white")
                raise PluginTrouble("cannot cope with a white frame")
            yield batch.reshape(batch.shape[0], -1).mean(axis=1, keepdims=True) \
                .astype(np.float32)


def _with_white_video(index, tmp_path, write_mp4):
    """``index`` with its first video replaced by a white one of the same length."""
    vid = min(index.videos)
    record = index.videos[vid]
    white = write_mp4(tmp_path / "white.mp4", np.full((record.num_frames, 32, 32, 3), 250,
                                                        np.uint8))
    return vid, dataclasses.replace(
        index, videos={**index.videos, vid: dataclasses.replace(record, path=white)})


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("raised, shown", [
    ("KeyError", "KeyError: 'white'"),
    ("PluginTrouble", "PluginTrouble: cannot cope with a white frame")])
def test_any_exception_of_an_extractor_fails_only_its_video(tiny_kitchen, tmp_path, write_mp4,
                                                            monkeypatch, workers, raised, shown):
    _, index = tiny_kitchen
    monkeypatch.setenv("ACTREC_TEST_RAISE", raised)  # worker processes inherit it
    vid, mine = _with_white_video(index, tmp_path, write_mp4)
    path = tmp_path / "s.zarr"
    report = extract_features(mine, WhiteFrameHater(), path, dataset_ref="r", workers=workers,
                              batch_size=8)
    assert sorted(report.written) == sorted(set(index.videos) - {vid})
    assert [v for v, _ in report.failed] == [vid]
    error = report.failed[0][1]
    assert error == (f"video {vid!r} ({mine.videos[vid].path}): extractor 'whitehater' failed: "
                     f"{shown}")
    assert "died" not in error
    assert FeatureStore.open(path).videos() == sorted(set(index.videos) - {vid})
    # The file fixed: a re-run does that video alone.
    again = extract_features(index, WhiteFrameHater(), path, dataset_ref="r", workers=workers,
                             batch_size=8)
    assert again.written == (vid,) and again.ok
    assert sorted(again.skipped) == sorted(set(index.videos) - {vid})


class BrokenRate(WhiteFrameHater):
    """Raises from its ``fps`` property, which the host reads outside ``extract``."""

    name = "brokenrate"

    @property
    def fps(self):
        return {}["fps"]


@pytest.mark.parametrize("workers", [1, 2])
def test_an_extractor_failing_outside_extract_fails_each_video_not_the_run(
        tiny_kitchen, tmp_path, workers):
    _, index = tiny_kitchen
    report = extract_features(index, BrokenRate(), tmp_path / "s.zarr", dataset_ref="r",
                              workers=workers, batch_size=8)
    assert not report.written and sorted(v for v, _ in report.failed) == sorted(index.videos)
    for vid, error in report.failed:
        assert error == (f"video {vid!r}: extraction stopped on an unexpected error (extractor "
                         f"'brokenrate'): KeyError: 'fps' (at test_extract_errors.py:"
                         f"{BrokenRate.fps.fget.__code__.co_firstlineno + 2} in fps)")


# ------------------------------------------------------------------ the command, a real plugin

PLUGIN = '''
import os

import numpy as np

from actrec.plugin_api import FeatureExtractor


class PickyError(Exception):
    """This plugin's own exception."""


# PICKY_DIE_AFTER_WRITE=<video id>: the process writing that video ends right after the write,
# before it can report it (a worker killed at that moment).
if os.environ.get("PICKY_DIE_AFTER_WRITE"):
    from actrec.io.features import FeatureStore

    _write = FeatureStore.write_video

    def _write_then_die(self, video_id, *args, **kwargs):
        _write(self, video_id, *args, **kwargs)
        if video_id == os.environ["PICKY_DIE_AFTER_WRITE"]:
            os._exit(3)

    FeatureStore.write_video = _write_then_die


def _die_mid_message():
    """End this process as if killed while one of its threads was sending a message to the
    parent, whatever carries them: every multiprocessing queue's write lock is held, and every
    connection has half a message on it."""
    import gc
    import struct
    from multiprocessing.connection import Connection
    from multiprocessing.queues import Queue

    for obj in gc.get_objects():
        if isinstance(obj, Queue):
            obj._wlock.acquire()
        elif isinstance(obj, Connection) and not obj.closed and obj.writable:
            os.write(obj.fileno(), struct.pack("!i", 1000) + b"cut short")
    os._exit(3)


class Picky(FeatureExtractor):
    name = "picky"
    lookahead = 0

    def dim(self):
        return 1

    def extract(self, batches):
        for batch in batches:
            if batch.mean() > 240:
                if os.environ.get("PICKY_DIE") == "1":
                    os._exit(3)  # the process really ends, saying nothing
                if os.environ.get("PICKY_DIE") == "mid-message":
                    _die_mid_message()
                raise PickyError("white frames are not my thing")
            yield batch.reshape(batch.shape[0], -1).mean(axis=1, keepdims=True).astype("float32")
'''


@pytest.fixture
def picky_site(tmp_path):
    return extractor_plugin_site(tmp_path / "site", "picky_plugin", "Picky", "picky",
                                 textwrap.dedent(PLUGIN))


def _white_copy(dataset, tmp_path, write_mp4):
    """A copy of the tiny kitchen's files with its first video made white; (root, video id,
    the original file)."""
    index = dataset.load()
    vid = min(index.videos)
    original = index.videos[vid].path
    root = tmp_path / "data"
    shutil.copytree(dataset.config.root, root)
    copy = root / original.parent.name / original.name
    write_mp4(copy, np.full((index.videos[vid].num_frames, 32, 32, 3), 250, np.uint8))
    return root, vid, original, copy


TINY = {"kitchen": "a", "participants": "3", "videos_per_participant": "1",
        "frames_mean": "40", "size": "32", "folds": "3", "seed": "7"}


def _extract(site, root, out, *extra, **env):
    args = [sys.executable, "-m", "actrec", "extract", "synthetic", "--root", str(root),
            "--out", str(out), "--extractor", "picky", *[f"-o{k}={v}" for k, v in TINY.items()],
            "--batch-size", "8", *extra]
    full_env = {**os.environ, "PYTHONPATH": str(site), "COLUMNS": "200", **env}
    return subprocess.run(args, capture_output=True, text=True, env=full_env, timeout=180,
                          check=False)


@pytest.mark.slow
def test_a_plugin_exception_in_a_worker_is_that_videos_failure_in_the_summary(
        tiny_kitchen, tmp_path, write_mp4, picky_site):
    dataset, index = tiny_kitchen
    root, vid, original, copy = _white_copy(dataset, tmp_path, write_mp4)
    out = tmp_path / "s.zarr"
    res = _extract(picky_site, root, out, "--workers", "2", "--json")
    assert res.returncode == 1, res.stderr
    assert "Traceback" not in res.stderr
    payload = json.loads(res.stdout)
    assert sorted(payload["written"]) == sorted(set(index.videos) - {vid})
    assert payload["failed"] == [{"video": vid, "error": (
        f"video {vid!r} ({copy}): extractor 'picky' failed: PickyError: white frames are not "
        f"my thing")}]
    # the table says the same
    res = _extract(picky_site, root, out, "--workers", "2")
    assert res.returncode == 1
    lines = [" ".join(x.replace("│", " ").split()) for x in res.stdout.splitlines()]
    assert "0 2 1 0 0 0 0 (0)" in lines, res.stdout
    assert any(x.startswith(f"{vid} failed video {vid!r}") and "PickyError" in "".join(lines)
               for x in lines), res.stdout
    # the file fixed: the re-run extracts that video alone
    shutil.copyfile(original, copy)
    res = _extract(picky_site, root, out, "--workers", "2", "--json")
    assert res.returncode == 0, res.stderr
    payload = json.loads(res.stdout)
    assert payload["written"] == [vid] and len(payload["skipped"]) == 2 and not payload["failed"]


@pytest.mark.slow
@pytest.mark.parametrize("how", ["1", "mid-message"])
def test_a_worker_that_really_ends_is_still_reported_as_died(tiny_kitchen, tmp_path, write_mp4,
                                                            picky_site, how):
    # mid-message: it dies while sending its parent a message; the other worker's messages
    # still arrive (a queue shared by the workers stayed locked: the run hung)
    dataset, index = tiny_kitchen
    root, vid, _, _ = _white_copy(dataset, tmp_path, write_mp4)
    out = tmp_path / "s.zarr"
    res = _extract(picky_site, root, out, "--workers", "2", "--json", PICKY_DIE=how)
    assert res.returncode == 1, res.stderr
    payload = json.loads(res.stdout)
    assert sorted(payload["written"]) == sorted(set(index.videos) - {vid})
    assert payload["failed"] == [{"video": vid, "error": (
        f"video {vid!r}: the worker process extracting it died (exit code 3; out of memory?)")}]
    # the claim the dead worker held is gone too
    assert not (out / ".claims").exists() or not list((out / ".claims").iterdir())


# ------------------------------------------------------------------ a stale copy on failure


class RateBrokenOnDemand(WhiteFrameHater):
    """``whitehater``'s frames, but its ``fps`` property raises while ``$ACTREC_TEST_BROKEN_RATE``
    is set (worker processes inherit it)."""

    name = "ratebroken"

    @property
    def fps(self):
        if os.environ.get("ACTREC_TEST_BROKEN_RATE"):
            return {}["fps"]
        return None


def _stored_then_changed(index, tmp_path, extractor, workers):
    """A store of ``index`` with its first video's file a copy (``index`` changed to use it),
    extracted by ``extractor``, then the copy's mtime changed (its stored copy now stale)."""
    vid = min(index.videos)
    record = index.videos[vid]
    copy = tmp_path / f"copy{record.path.suffix}"
    shutil.copyfile(record.path, copy)
    mine = dataclasses.replace(index, videos={**index.videos, vid: dataclasses.replace(
        record, path=copy)})
    path = tmp_path / "s.zarr"
    first = extract_features(mine, extractor, path, dataset_ref="r", workers=workers,
                             batch_size=8)
    assert first.ok and len(first.written) == len(index.videos)
    os.utime(copy, (1_000_000_000, 1_000_000_000))  # the source changed since
    return vid, mine, path


@pytest.mark.parametrize("workers", [1, 2])
def test_a_stale_copy_goes_when_its_redo_fails_outside_extract(tiny_kitchen, tmp_path,
                                                              monkeypatch, workers):
    # As on the normal failure path: a re-extraction that fails by an unexpected error (the
    # fallback path) removes the stale copy, so it is not read as current nor counted done.
    from actrec.extract_status import store_status

    _, index = tiny_kitchen
    vid, mine, path = _stored_then_changed(index, tmp_path, RateBrokenOnDemand(), workers)
    monkeypatch.setenv("ACTREC_TEST_BROKEN_RATE", "1")
    report = extract_features(mine, RateBrokenOnDemand(), path, dataset_ref="r",
                              workers=workers, batch_size=8)
    assert [v for v, _ in report.redone_changed] == [vid]
    assert [v for v, _ in report.failed] == [vid] and not report.written
    assert report.failed[0][1].startswith(
        f"video {vid!r}: extraction stopped on an unexpected error (extractor 'ratebroken'): "
        f"KeyError: 'fps'")
    assert report.failed[0][1].endswith(
        "(its stored copy was damaged or made from another file, and was removed)")
    assert FeatureStore.open(path).videos() == sorted(set(index.videos) - {vid})
    status = store_status(path)
    assert vid not in status.done and [v for v, _, _ in status.failed] == [vid]
    assert not (path / ".claims").exists()
    # fixed: the re-run does that video (not found done)
    monkeypatch.delenv("ACTREC_TEST_BROKEN_RATE")
    again = extract_features(mine, RateBrokenOnDemand(), path, dataset_ref="r",
                             workers=workers, batch_size=8)
    assert again.written == (vid,) and again.ok and not again.redone_changed


def _two_to_redo(tiny_kitchen, tmp_path, write_mp4, picky_site, grey: int):
    """A copy of the tiny kitchen extracted by `picky` with 2 workers, then two videos' stored
    copies made stale: the first's file rewritten as ``grey`` frames, the second's mtime
    changed (two videos to redo: one per worker). (root, store, first, second)."""
    dataset, index = tiny_kitchen
    root = tmp_path / "data"
    shutil.copytree(dataset.config.root, root)
    out = tmp_path / "s.zarr"
    res = _extract(picky_site, root, out, "--workers", "2", "--json")
    assert res.returncode == 0, res.stderr
    vid, other = sorted(index.videos)[:2]

    def copy(v):
        return root / index.videos[v].path.parent.name / index.videos[v].path.name

    write_mp4(copy(vid), np.full((index.videos[vid].num_frames, 32, 32, 3), grey, np.uint8))
    os.utime(copy(other), (1_000_000_000, 1_000_000_000))
    return root, out, vid, other


@pytest.mark.slow
def test_a_stale_copy_goes_when_the_worker_redoing_it_dies(tiny_kitchen, tmp_path, write_mp4,
                                                          picky_site):
    # A worker that really ends on a stale video: that copy is removed as on the normal
    # failure path; `actrec check` then finds the store sound (the video simply absent) and
    # `extract --status` says the video failed (it said done, reading the stale copy).
    _, index = tiny_kitchen
    root, out, vid, other = _two_to_redo(tiny_kitchen, tmp_path, write_mp4, picky_site, 250)
    res = _extract(picky_site, root, out, "--workers", "2", "--json", PICKY_DIE="1")
    assert res.returncode == 1, res.stderr
    payload = json.loads(res.stdout)
    assert sorted(r["video"] for r in payload["redone_changed"]) == [vid, other]
    assert payload["written"] == [other]
    assert payload["failed"] == [{"video": vid, "error": (
        f"video {vid!r}: the worker process extracting it died (exit code 3; out of memory?) "
        f"(its stored copy was damaged or made from another file, and was removed)")}]
    assert FeatureStore.open(out).videos() == sorted(set(index.videos) - {vid})
    env = {**os.environ, "COLUMNS": "200"}
    check = subprocess.run([sys.executable, "-m", "actrec", "check", str(out), "--json"],
                           capture_output=True, text=True, env=env, timeout=120, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    assert json.loads(check.stdout)["videos"] == len(index.videos) - 1
    status = subprocess.run([sys.executable, "-m", "actrec", "extract", "--status", str(out),
                             "--json"], capture_output=True, text=True, env=env, timeout=120,
                            check=False)
    assert status.returncode == 0, status.stderr
    counts = json.loads(status.stdout)
    assert [f["video"] for f in counts["failed"]] == [vid] and vid not in counts.get("done", [])
    assert counts["counts"]["done"] == len(index.videos) - 1


@pytest.mark.slow
def test_a_worker_that_dies_after_writing_its_video_has_it_written(tiny_kitchen, tmp_path,
                                                                  write_mp4, picky_site):
    # The worker redoing a stale video writes the new copy whole, then dies before saying so:
    # the video is written (it was reported failed, and the fresh copy removed as stale).
    _, index = tiny_kitchen
    root, out, vid, other = _two_to_redo(tiny_kitchen, tmp_path, write_mp4, picky_site, 200)
    res = _extract(picky_site, root, out, "--workers", "2", "--json",
                   PICKY_DIE_AFTER_WRITE=vid)
    assert res.returncode == 0, res.stderr
    payload = json.loads(res.stdout)
    assert sorted(r["video"] for r in payload["redone_changed"]) == [vid, other]
    assert sorted(payload["written"]) == [vid, other] and payload["failed"] == []
    store = FeatureStore.open(out)
    assert store.videos() == sorted(index.videos) and not store.damage(vid)
    features, _ = store.read(vid)  # the new file's: every frame the same grey (200 written)
    assert np.all(features == features[0]) and abs(float(features[0, 0]) - 200.0) < 5.0
    assert not (out / ".claims").exists() or not list((out / ".claims").iterdir())
    again = _extract(picky_site, root, out, "--workers", "2", "--json")
    assert again.returncode == 0 and sorted(json.loads(again.stdout)["skipped"]) == \
        sorted(index.videos)
