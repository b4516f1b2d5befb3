"""Stored videos are verifiable: a missing, truncated or altered chunk is never read as data,
and ``actrec check`` finds it (real Zarr stores on disk, no mocks)."""

from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest
from click.testing import CliRunner

from actrec.cli import cli
from actrec.errors import DataError
from actrec.io.features import FeatureStore
from actrec.io.integrity import array_digest, check_store

CLASSES = ["background", "cut", "stir"]


def _store(path, chunk_frames=16):
    return FeatureStore.open_or_create(
        path, dataset="synthetic", split_scheme="default", classes=CLASSES,
        splits={"1": {"train": ["v1"], "test": ["v2"]}}, extractor="colorgrad",
        extractor_config={"grid": 2}, lookahead=0, dtype="float16", chunk_frames=chunk_frames)


def _data(t=100, d=6, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(t, d)).astype(np.float32), rng.integers(1, 3, t).astype(np.int64)


def _filled(tmp_path, videos=("v1", "v2")):
    """A store of 100-frame videos in chunks of 16 (7 chunks per array), labels 1 or 2."""
    store = _store(tmp_path / "s.zarr")
    for i, vid in enumerate(videos):
        store.write_video(vid, *_data(seed=i), fps=15.0, source=None)
    return store


def _chunk(store, vid, array, index):
    sub = f"c/{index}/0" if array == "features" else f"c/{index}"
    return store.path / "videos" / vid / array / sub


def test_commit_records_every_chunk_and_the_checksums(tmp_path):
    store = _store(tmp_path / "s.zarr")
    feats, labels = _data()
    # All-zero stretches are where Zarr skips writing chunks by default: they must be written.
    feats[:32] = 0
    labels[:40] = 0
    store.write_video("v1", feats, labels, fps=15.0, source=None)
    rec = store.video_attrs("v1")["integrity"]
    for array, shape in (("features", [100, 6]), ("labels", [100])):
        files = sorted((store.path / "videos/v1" / array / "c").rglob("*"))
        files = [f for f in files if f.is_file()]
        assert rec[array]["chunks"] == len(files) == 7  # ceil(100 / 16), none skipped
        assert rec[array]["shape"] == shape and rec[array]["chunk_frames"] == 16
        assert {k: v for k, v in rec[array]["files"].items()} == {
            f.relative_to(store.path / "videos/v1" / array).as_posix(): f.stat().st_size
            for f in files}
    assert rec["features"]["sha256"] == array_digest(feats.astype(np.float16), "float16")
    assert rec["labels"]["sha256"] == array_digest(labels, "int64")
    import hashlib
    assert rec["labels"]["sha256"] == hashlib.sha256(labels.astype("<i8").tobytes()).hexdigest()
    assert store.damage("v1") == []
    np.testing.assert_array_equal(store.read("v1")[1], labels)


@pytest.mark.parametrize("array", ["features", "labels"])
def test_a_missing_chunk_is_refused_never_read_as_fill_values(tmp_path, array):
    store = _filled(tmp_path)
    _chunk(store, "v1", array, 3).unlink()  # frames 48..63
    key = "c/3/0" if array == "features" else "c/3"
    # Before: Zarr returned zeros there (labels of class 0, features 0) and training went on.
    with pytest.raises(DataError, match=rf"feature store {store.path}: video 'v1' is damaged "
                       rf"\({array}: chunk {key} is missing\).*actrec check"):
        store.read("v1")
    with pytest.raises(DataError, match=rf"{array}: chunk {key} is missing"):
        store.read_window("v1", 60, 10)  # touches chunks 3 and 4
    # Windows that do not need the chunk still read, and the other video is untouched.
    _, labels = _data(seed=0)
    _, y = store.read_window("v1", 0, 48)
    np.testing.assert_array_equal(y, labels[:48])
    assert store.damage("v1") == [f"{array}: chunk {key} is missing"]
    assert store.damage("v2") == [] and store.read("v2")[0].shape == (100, 6)
    (store.path / "videos/v2" / array / "zarr.json").unlink()
    assert store.damage("v2") == [f"{array}: array metadata zarr.json is missing"]
    with pytest.raises(DataError, match=rf"video 'v2' is damaged \({array}: array metadata"):
        store.read("v2")


def test_a_truncated_chunk_is_refused_on_read(tmp_path):
    store = _filled(tmp_path)
    chunk = _chunk(store, "v1", "labels", 5)
    size = chunk.stat().st_size
    with open(chunk, "r+b") as f:
        f.truncate(size - 7)
    with pytest.raises(DataError, match=rf"labels: chunk c/5 has {size - 7} bytes, "
                       rf"{size} were written"):
        store.read("v1")


def test_a_chunk_altered_in_place_fails_its_crc32c(tmp_path):
    """Same size, other bytes (a flipped bit): the chunk's crc32c refuses it on read."""
    store = _filled(tmp_path)
    chunk = _chunk(store, "v1", "features", 2)
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0x10
    chunk.write_bytes(bytes(data))
    assert store.damage("v1") == []  # the cheap check cannot see it ...
    with pytest.raises(DataError, match=r"cannot read video 'v1' frames 0\.\.100: .*checksum"):
        store.read("v1")
    report = check_store(store)  # ... actrec check does
    bad = {v.video: v for v in report.videos if v.bad}
    assert set(bad) == {"v1"} and bad["v1"].status == "damaged"
    # named by the chunk that fails (the third of features), not zarr's byte reprs
    assert bad["v1"].problems == (
        "features: chunk c/2/0 fails its crc32c checksum (altered in place after written)",)


def test_check_finds_deleted_truncated_and_changed_source(tmp_path):
    store = _store(tmp_path / "s.zarr")
    sources = {}
    for i, vid in enumerate(["a", "b", "c", "d", "e"]):
        sources[vid] = tmp_path / f"{vid}.mp4"
        sources[vid].write_bytes(b"x" * (100 + i))
        store.write_video(vid, *_data(seed=i), fps=15.0, source=sources[vid])
    _chunk(store, "a", "features", 0).unlink()
    _chunk(store, "b", "labels", 6).write_bytes(b"")  # truncated to nothing
    sources["c"].write_bytes(b"y" * 500)  # the source video was replaced
    t = os.stat(sources["d"]).st_mtime
    os.utime(sources["d"], (t + 10, t + 10))  # same size, touched later
    report = check_store(store)
    got = {v.video: (v.status, v.problems) for v in report.videos}
    assert got["a"] == ("damaged", ("features: chunk c/0/0 is missing",))
    assert got["b"][0] == "damaged" and got["b"][1][0].startswith("labels: chunk c/6 has 0 bytes")
    assert got["c"] == ("source changed",
                        (f"{sources['c']} has 500 bytes, 102 when extracted",))
    assert got["d"][0] == "source changed" and "modified after extraction" in got["d"][1][0]
    assert re.search(r"modified \d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{6}; ", got["d"][1][0])
    assert got["e"] == ("ok", ())
    assert not report.ok and report.count("damaged") == 2 and report.count("source changed") == 2
    assert check_store(store, sources=False).count("source changed") == 0
    # A store written before the records existed: unverified, not damaged.
    meta_path = store.path / "videos/e/zarr.json"
    meta = json.loads(meta_path.read_text())
    del meta["attributes"]["integrity"]
    meta_path.write_text(json.dumps(meta))
    assert {v.video: v.status for v in check_store(store).videos}["e"] == "unverified"
    assert store.damage("e") == [] and store.read("e")[0].shape == (100, 6)


def test_check_command_reports_and_exits_nonzero(tmp_path):
    store = _filled(tmp_path, videos=("v1", "v2", "v3"))
    runner = CliRunner()
    ok = runner.invoke(cli, ["check", str(store.path)])
    assert ok.exit_code == 0, ok.output
    assert "3 videos (3 ok): every video is intact" in " ".join(ok.output.split())
    _chunk(store, "v2", "labels", 1).unlink()
    chunk = _chunk(store, "v3", "features", 4)
    chunk.write_bytes(chunk.read_bytes()[:-20])
    res = runner.invoke(cli, ["check", str(store.path), "--json"])
    assert res.exit_code == 1
    payload = json.loads(res.stdout)
    assert payload["ok"] is False and payload["videos"] == 3
    assert payload["counts"] == {"ok": 1, "damaged": 2, "source changed": 0, "inconsistent": 0,
                                 "unverified": 0}
    problems = {p["video"]: p["problems"] for p in payload["problems"]}
    assert problems["v2"] == ["labels: chunk c/1 is missing"]
    assert problems["v3"][0].startswith("features: chunk c/4/0 has ")
    table = runner.invoke(cli, ["check", str(store.path)])
    assert table.exit_code == 1
    text = " ".join(table.output.split())
    assert "v2" in text and "labels: chunk c/1 is missing" in text and "1 ok, 2 damaged" in text
    missing = runner.invoke(cli, ["check", str(tmp_path / "nope.zarr")])
    assert missing.exit_code != 0 and "no feature store here" in str(missing.exception)


def test_a_source_recorded_by_a_relative_path_is_the_same_file(tmp_path, monkeypatch):
    """Older stores recorded the source path as given; the same file named absolutely is not
    a changed source (extract would otherwise redo every video of such a store)."""
    from actrec.io.integrity import source_change

    video = tmp_path / "v.mp4"
    video.write_bytes(b"x" * 10)
    monkeypatch.chdir(tmp_path)
    st = video.stat()
    recorded = {"path": "v.mp4", "size": st.st_size, "mtime": st.st_mtime}
    assert source_change(recorded, video) is None
    other = tmp_path / "w.mp4"
    other.write_bytes(b"x" * 10)
    assert "source is now" in source_change(recorded, other)
