"""A full disk during ``actrec extract``: on a real 2 MiB tmpfs filled to every level from
"no byte left" to "room for the run", the run either finishes or stops with an error naming
the store and ENOSPC, a report of what it did (``--json`` too), the videos written before
intact, no claim or temp file left, and a re-run once space is freed completes the store as
an uninterrupted run would have. Needs root (``mount -t tmpfs``); skipped elsewhere."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from actrec_plugins.extractors.colorgrad import ColorGradient

from actrec.extract import ExtractStopped, extract_features
from actrec.extract_claims import list_claims
from actrec.io.features import FeatureStore

CG = ColorGradient.Config(grid=2, bins=4, resize=32)
NO_SPACE = "No space left on device"


@pytest.fixture
def small_disk(tmp_path):
    """A mounted 2 MiB tmpfs (unmounted after the test)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)],
                             capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def _fill(disk: Path, leave_pages: int) -> list[Path]:
    """Fill ``disk`` with 4 KiB files until ENOSPC, then delete ``leave_pages`` of them."""
    files = []
    while True:
        f = disk / f"filler-{len(files)}"
        try:
            f.write_bytes(b"x" * 4096)
        except OSError as exc:
            assert exc.errno == 28, exc
            f.unlink(missing_ok=True)
            break
        files.append(f)
    for f in files[len(files) - leave_pages:]:
        f.unlink()
    return files[:len(files) - leave_pages]


def _content(path) -> dict:
    store = FeatureStore.open(path)
    return {v: tuple(a.tobytes() for a in store.read(v)) for v in store.videos()}


def _leftovers(path: Path) -> list[str]:
    """Claims, temp files and folders a run may leave in a folder store."""
    return sorted(str(p.relative_to(path)) for p in path.rglob("*")
                  if p.name.startswith((".tmp", ".claims")) or p.name.endswith((".tmp", ".new"))
                  or p.parent.name in (".tmp", ".claims"))


@pytest.mark.slow
def test_a_run_on_a_full_disk_stops_cleanly_at_every_fill_level(tiny_kitchen, tmp_path,
                                                               small_disk):
    _, index = tiny_kitchen
    ids = sorted(index.videos)
    reference = tmp_path / "reference.zarr"
    extract_features(index, ColorGradient(CG), reference, dataset_ref="r")
    expected = _content(reference)
    seen = set()
    for leave in (0, 1, 2, 3, 4, 6, 8, 10, 12, 40):
        path = small_disk / f"s{leave}.zarr"
        extract_features(index, ColorGradient(CG), path, dataset_ref="r", video_ids=ids[:1])
        fillers = _fill(small_disk, leave)
        try:
            report = extract_features(index, ColorGradient(CG), path, dataset_ref="r")
        except ExtractStopped as exc:
            report = exc.report
            assert str(path) in str(exc) and NO_SPACE in str(exc), (leave, str(exc))
            assert "run the command again" in str(exc)
            assert report.stopped.startswith(f"feature store {path}: cannot ")
            assert NO_SPACE in report.stopped and not report.ok
            for vid, error in report.failed:  # the video being written when it stopped
                assert error.startswith(f"feature store {path}: cannot ") and NO_SPACE in error
            seen.add("record" if "record this run" in report.stopped else
                     "claim" if "cannot claim video" in report.stopped else
                     "write" if "cannot write video" in report.stopped else report.stopped)
        else:
            seen.add("finished")
            assert report.ok and not report.not_done
        assert report.skipped == (ids[0],)
        assert sorted([*report.written, *(v for v, _ in report.failed), *report.not_done]) \
            == ids[1:], leave
        assert report.to_dict()["not_done"] == list(report.not_done)
        # what is stored is whole, nothing of the run is left
        assert _content(path) == {v: expected[v] for v in (ids[0], *report.written)}
        assert list_claims(path) == [] and _leftovers(path) == [], (leave, _leftovers(path))
        for f in fillers:  # space again: the re-run does the rest
            f.unlink()
        again = extract_features(index, ColorGradient(CG), path, dataset_ref="r")
        assert again.ok and sorted(again.written) == sorted(set(ids[1:]) - set(report.written))
        assert _content(path) == expected
        FeatureStore.open(path)  # (the store's own files are fine)
        for p in sorted(path.rglob("*"), reverse=True):  # room for the next level
            p.unlink() if p.is_file() else p.rmdir()
        path.rmdir()
    # the levels tried stop at the run's record, a claim, a video's write, or not at all
    assert seen == {"record", "claim", "write", "finished"}, seen


TINY = {"kitchen": "a", "participants": "3", "videos_per_participant": "1",
        "frames_mean": "40", "size": "32", "folds": "3", "seed": "7"}


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_the_command_on_a_full_disk_prints_its_json_summary(tiny_kitchen, tmp_path, small_disk,
                                                            workers):
    dataset, index = tiny_kitchen
    ids = sorted(index.videos)
    out = small_disk / "s.zarr"
    args = [sys.executable, "-m", "actrec", "extract", "synthetic", "--root",
            str(dataset.config.root), "--out", str(out), *[f"-o{k}={v}" for k, v in TINY.items()],
            "--workers", str(workers), "--json"]
    env = {**os.environ, "ACTREC_HOME": str(tmp_path / "home")}
    first = subprocess.run([*args, "--shard", "3/3"], capture_output=True, text=True, env=env,
                           check=False)
    assert first.returncode == 0, first.stderr
    done = json.loads(first.stdout)["written"]
    fillers = _fill(small_disk, 6)  # room for the run record and claims, not for two videos
    res = subprocess.run(args, capture_output=True, text=True, env=env,
                           check=False)
    assert res.returncode == 1, res.stderr
    assert "Traceback" not in res.stderr
    payload = json.loads(res.stdout)  # one JSON document: the summary
    assert payload["workers"] == workers
    assert payload["stopped"].startswith(f"feature store {out}: cannot ")
    assert NO_SPACE in payload["stopped"]
    assert payload["failed"] and all(NO_SPACE in f["error"] for f in payload["failed"])
    assert sorted(payload["skipped"]) == sorted(done)
    assert sorted([*payload["written"], *(f["video"] for f in payload["failed"]),
                   *payload["not_done"]]) == sorted(set(ids) - set(done))
    error = next(x for x in res.stderr.splitlines() if x.startswith("Error:"))
    assert error.startswith(f"Error: feature store {out}: cannot ") and NO_SPACE in error
    assert list_claims(out) == [] and _leftovers(out) == []
    kept = done + payload["written"]
    store = FeatureStore.open(out)
    assert store.videos() == sorted(kept) and all(not store.damage(v) for v in kept)
    for f in fillers:
        f.unlink()
    res = subprocess.run(args, capture_output=True, text=True, env=env,
                           check=False)
    assert res.returncode == 0, res.stderr
    again = json.loads(res.stdout)
    assert sorted(again["written"]) == sorted(set(ids) - set(kept)) and again["stopped"] is None
    assert FeatureStore.open(out).videos() == ids
