"""actrec.io.features: a real Zarr v3 store on disk (no mocks)."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from actrec.errors import ConfigError, DataError
from hypothesis import given
from hypothesis import strategies as st

from actrec.io.features import (FeatureStore, decode_video_id, encode_video_id,
                                 source_of)

CLASSES = ["background", "cut", "stir"]
SPLITS = {"1": {"train": ["v1"], "test": ["v 2/x"]}}


def _create(path, **changes):
    kwargs = dict(dataset="synthetic", split_scheme="default", classes=CLASSES, splits=SPLITS,
                  extractor="colorgrad", extractor_config={"grid": 2, "bins": 8, "fps": None},
                  lookahead=0, dtype="float16", chunk_frames=16)
    kwargs.update(changes)
    return FeatureStore.open_or_create(path, **kwargs)


def _data(t=50, d=6, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(t, d)).astype(np.float32), rng.integers(-1, 3, t).astype(np.int64)


def _snapshot(path):
    """Every file under ``path`` with its bytes and mtime."""
    return {str(p.relative_to(path)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(path.rglob("*")) if p.is_file()}


def test_roundtrip_float16_and_attributes(tmp_path):
    store = _create(tmp_path / "s.zarr")
    feats, labels = _data()
    src = tmp_path / "v1.mp4"
    src.write_bytes(b"0123456789")
    store.write_video("v1", feats, labels, fps=15.0, source=src)
    x, y = store.read("v1")
    assert x.dtype == np.float32 and y.dtype == np.int64
    np.testing.assert_array_equal(x, feats.astype(np.float16).astype(np.float32))
    np.testing.assert_array_equal(y, labels)
    assert store.videos() == ["v1"] and store.has("v1") and not store.has("v2")
    assert store.num_frames("v1") == 50 and store.dim == 6
    # Stored as float16 on disk: the array metadata says so.
    meta = json.loads((tmp_path / "s.zarr/videos/v1/features/zarr.json").read_text())
    assert meta["data_type"] == "float16"
    assert meta["chunk_grid"]["configuration"]["chunk_shape"] == [16, 6]
    attrs = store.attrs
    assert attrs["dataset"] == "synthetic" and attrs["classes"] == CLASSES
    assert attrs["splits"] == SPLITS and attrs["causal"] is True and attrs["lookahead"] == 0
    assert attrs["extractor"] == "colorgrad" and attrs["dtype"] == "float16"
    assert attrs["format_version"] == 1
    va = store.video_attrs("v1")
    assert va["fps"] == 15.0 and va["num_frames"] == 50 and va["complete"] is True
    assert va["source"]["path"] == str(src) and va["source"]["size"] == 10
    assert va["extractor_config"] == {"grid": 2, "bins": 8, "fps": None}
    # Reopened read-only, everything is still there.
    again = FeatureStore.open(tmp_path / "s.zarr")
    assert again.classes == CLASSES and again.splits == SPLITS and again.videos() == ["v1"]


def test_float32_store_is_exact(tmp_path):
    store = _create(tmp_path / "s.zarr", dtype="float32")
    feats, labels = _data()
    store.write_video("v1", feats, labels, fps=15.0, source=None)
    np.testing.assert_array_equal(store.read("v1")[0], feats)


def test_awkward_video_ids(tmp_path):
    store = _create(tmp_path / "s.zarr")
    ids = ["v 2/x", "__init", "a.b", "ü", "..", "P03_cam01_P03_coffee"]
    for k, vid in enumerate(ids):
        feats, labels = _data(5 + k)
        store.write_video(vid, feats, labels, fps=1.0, source=None)
    assert store.videos() == sorted(ids)
    assert store.num_frames("ü") == 8
    names = {p.name for p in (tmp_path / "s.zarr/videos").iterdir() if p.is_dir()}
    assert names == {encode_video_id(v) for v in ids}
    assert all("/" not in n and not n.startswith((".", "__")) for n in names)
    assert encode_video_id("v 2/x") == "v%202%2Fx"
    assert encode_video_id("P03_cam01") == "P03_cam01"


@given(st.text(min_size=1, max_size=40))
def test_video_id_encoding_is_safe_and_reversible(video_id):
    name = encode_video_id(video_id)
    assert decode_video_id(name) == video_id
    assert all(c.isascii() and (c.isalnum() or c in "-_%") for c in name)
    assert not name.startswith("_") and name not in (".", "..")


def test_length_mismatch_writes_nothing(tmp_path):
    store = _create(tmp_path / "s.zarr")
    feats, labels = _data()
    before = _snapshot(tmp_path / "s.zarr")
    with pytest.raises(DataError, match=r"video 'v1'.*50 feature rows but 49 labels"):
        store.write_video("v1", feats, labels[:49], fps=15.0, source=None)
    assert _snapshot(tmp_path / "s.zarr") == before and store.videos() == []


def test_float16_range_is_checked(tmp_path):
    store = _create(tmp_path / "s.zarr")
    feats, labels = _data()
    feats[3, 2] = 1e6
    with pytest.raises(DataError, match="float16 range"):
        store.write_video("v1", feats, labels, fps=15.0, source=None)
    assert store.videos() == []


def test_dimension_must_match_other_videos(tmp_path):
    store = _create(tmp_path / "s.zarr")
    store.write_video("v1", *_data(d=6), fps=15.0, source=None)
    with pytest.raises(DataError, match="D=7, the store holds D=6"):
        store.write_video("v2", *_data(d=7), fps=15.0, source=None)
    store.write_video("v1", *_data(d=7), fps=15.0, source=None)  # the only video: may change
    assert store.dim == 7


@pytest.mark.parametrize("field,value", [
    ("extractor", "other"),
    ("extractor_config", {"grid": 3, "bins": 8, "fps": None}),
    ("lookahead", 4),
    ("dtype", "float32"),
    ("classes", ["background", "cut"]),
])
def test_mismatched_store_is_refused_untouched(tmp_path, field, value):
    path = tmp_path / "s.zarr"
    store = _create(path)
    store.write_video("v1", *_data(), fps=15.0, source=None)
    before = _snapshot(path)
    with pytest.raises(DataError, match=rf"{path}.*different {field}"):
        _create(path, **{field: value})
    assert _snapshot(path) == before


def test_matching_reopen_updates_splits_only(tmp_path):
    path = tmp_path / "s.zarr"
    _create(path).write_video("v1", *_data(), fps=15.0, source=None)
    # A tuple config compares equal to the stored JSON list.
    store = _create(path, splits={"2": {"train": ["v1"], "test": []}}, split_scheme="other",
                    extractor_config={"fps": None, "bins": 8, "grid": 2})
    assert store.videos() == ["v1"]
    assert FeatureStore.open(path).splits == {"2": {"train": ["v1"], "test": []}}
    assert FeatureStore.open(path).attrs["split_scheme"] == "other"


def test_open_errors(tmp_path):
    with pytest.raises(DataError, match="no feature store here"):
        FeatureStore.open(tmp_path / "missing.zarr")
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain/zarr.json").write_text('{"zarr_format": 3, "node_type": "group", '
                                              '"attributes": {}}')
    with pytest.raises(DataError, match="not an actrec feature store"):
        FeatureStore.open(tmp_path / "plain")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy/notes.txt").write_text("mine")
    with pytest.raises(DataError, match="not a feature store"):
        _create(tmp_path / "busy")
    with pytest.raises(DataError, match="dtype"):
        _create(tmp_path / "new.zarr", dtype="int8")


def test_crash_leftovers_are_hidden_and_cleaned(tmp_path):
    path = tmp_path / "s.zarr"
    store = _create(path)
    feats, labels = _data()
    store.write_video("v1", feats, labels, fps=15.0, source=None)
    good = _snapshot(path / "videos/v1")
    # A crashed writer: a temp group of a dead process (pid 2**22 + 1 is above pid_max's
    # default) and a half-written group inside videos/ without the complete marker.
    import socket
    dead = path / ".tmp" / f"v2.{socket.gethostname()}.{2**22 + 1}.abcd1234"
    shutil.copytree(path / "videos/v1", dead)
    half = path / "videos/v3"
    shutil.copytree(path / "videos/v1", half)
    meta = json.loads((half / "zarr.json").read_text())
    meta["attributes"].update(id="v3", complete=False)
    (half / "zarr.json").write_text(json.dumps(meta))
    assert store.videos() == ["v1"] and not store.has("v3") and not store.has("v2")
    # Opening for writing removes both; the complete video is untouched.
    store = _create(path)
    assert not dead.exists() and not half.exists() and not (path / ".tmp").exists()
    assert store.videos() == ["v1"] and _snapshot(path / "videos/v1") == good
    # A temp dir of a live writer (this process) is left alone.
    live = path / ".tmp" / f"v4.{socket.gethostname()}.{os.getpid()}.abcd1234"
    live.mkdir(parents=True)
    _create(path)
    assert live.exists()


def test_write_is_atomic_rename(tmp_path, monkeypatch):
    # If the process dies before the final rename, the old complete copy is still served.
    path = tmp_path / "s.zarr"
    store = _create(path)
    old, old_labels = _data(seed=1)
    store.write_video("v1", old, old_labels, fps=15.0, source=None)

    def boom(*args):
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(store, "_move_into_place", boom)
    with pytest.raises(KeyboardInterrupt):
        store.write_video("v1", *_data(t=80, seed=2), fps=15.0, source=None)
    x, _ = store.read("v1")
    assert x.shape == (50, 6)
    np.testing.assert_array_equal(x, old.astype(np.float16).astype(np.float32))
    assert not (path / ".tmp").exists()


def test_overwrite_killed_between_its_two_renames_keeps_the_old_copy(tmp_path):
    """An overwrite moves the old copy aside, then the new one in; a crash in between leaves
    no copy in videos/. The next open for writing puts the old complete copy back."""
    import socket

    path = tmp_path / "s.zarr"
    store = _create(path)
    feats, labels = _data(seed=1)
    store.write_video("v1", feats, labels, fps=15.0, source=None)
    good = _snapshot(path / "videos/v1")
    aside = path / ".tmp" / f"v1.{socket.gethostname()}.{2**22 + 1}.abcd1234-old"
    aside.parent.mkdir()
    os.rename(path / "videos/v1", aside)  # the state right after the first rename
    assert store.videos() == []
    store = _create(path)
    assert store.videos() == ["v1"] and _snapshot(path / "videos/v1") == good
    assert not aside.exists()


def test_a_file_is_not_a_store(tmp_path):
    (tmp_path / "f.zarr").write_text("not a folder")
    with pytest.raises(DataError, match="exists and is not a folder"):
        _create(tmp_path / "f.zarr")


def test_overwrite_and_remove(tmp_path):
    store = _create(tmp_path / "s.zarr")
    store.write_video("v1", *_data(t=50, seed=1), fps=15.0, source=None)
    new, new_labels = _data(t=30, seed=2)
    store.write_video("v1", new, new_labels, fps=10.0, source=None)
    x, y = store.read("v1")
    assert x.shape == (30, 6) and store.video_attrs("v1")["fps"] == 10.0
    np.testing.assert_array_equal(y, new_labels)
    store.write_video("v2", *_data(), fps=15.0, source=None)
    store.remove("v1")
    store.remove("v1")  # twice is fine
    assert store.videos() == ["v2"]
    with pytest.raises(DataError, match="no video 'v1'"):
        store.read("v1")


def test_read_window_touches_only_needed_chunks(tmp_path):
    store = _create(tmp_path / "s.zarr")  # 16 frames per chunk
    feats, labels = _data(t=100)
    store.write_video("v1", feats, labels, fps=15.0, source=None)
    x, y = store.read_window("v1", 20, 10)  # frames 20..29: chunk 1 only
    expect = feats.astype(np.float16).astype(np.float32)
    np.testing.assert_array_equal(x, expect[20:30])
    np.testing.assert_array_equal(y, labels[20:30])
    # Corrupt every other chunk file: the window still reads, the whole video no longer does.
    chunks = tmp_path / "s.zarr/videos/v1"
    corrupted = 0
    for array in ("features", "labels"):
        for f in (chunks / array / "c").rglob("*"):
            if f.is_file() and f.relative_to(chunks / array / "c").parts[0] != "1":
                f.write_bytes(b"garbage, not a blosc frame")
                corrupted += 1
    assert corrupted == 2 * 6  # chunks 0, 2..6 of each array
    x2, y2 = store.read_window("v1", 20, 10)
    np.testing.assert_array_equal(x2, expect[20:30])
    np.testing.assert_array_equal(y2, labels[20:30])
    # The garbage has another size than what was written: refused before Zarr reads it.
    with pytest.raises(DataError, match=r"video 'v1' is damaged \(features: chunk c/0/0 has 26 "
                       r"bytes, \d+ were written"):
        store.read("v1")
    # Windows are clipped at the end.
    assert store.read_window("v1", 30, 2)[0].shape == (2, 6)
    fresh = _create(tmp_path / "t.zarr")
    fresh.write_video("v1", feats, labels, fps=15.0, source=None)
    assert fresh.read_window("v1", 95, 10)[0].shape == (5, 6)
    assert fresh.read_window("v1", 200, 10)[0].shape == (0, 6)


def _source(root="/data/a", **config):
    return source_of("shapes", {"root": root, "fps": 15.0}, "colorgrad",
                     {"grid": 2, "bins": 8, "fps": None, **config})


def test_background_is_recorded_and_old_stores_have_none(tmp_path):
    path = tmp_path / "s.zarr"
    store = _create(path, background=[0])
    assert store.background == (0,) and FeatureStore.open(path).background == (0,)
    # Reopening with another background (the dataset's declaration changed) updates it.
    assert _create(path, background=()).background == ()
    assert FeatureStore.open(path).background == ()
    with pytest.raises(DataError, match="background class 3 is not an index of the 3"):
        _create(tmp_path / "t.zarr", background=[3])
    # A store written before background was recorded: no attribute, no error.
    meta = path / "zarr.json"
    data = json.loads(meta.read_text())
    del data["attributes"]["background"], data["attributes"]["source"]
    meta.write_text(json.dumps(data))
    old = FeatureStore.open(path)
    assert old.background == () and old.source is None and len(old.identity) == 16


def test_store_refuses_another_source_naming_both(tmp_path):
    path = tmp_path / "s.zarr"
    store = _create(path, source=_source("/data/a"))
    store.write_video("v1", *_data(), fps=15.0, source=None)
    assert FeatureStore.open(path).source == _source("/data/a")
    before = _snapshot(path)
    with pytest.raises(ConfigError, match=r"s\.zarr holds features of dataset 'shapes' "
                       r"\(root=/data/a\).*not of dataset 'shapes' \(root=/data/b\)"):
        _create(path, source=_source("/data/b"))
    with pytest.raises(ConfigError, match=r"extractor 'colorgrad' \(grid=2\).*\(grid=3\)"):
        _create(path, source=_source("/data/a", grid=3))
    assert _snapshot(path) == before
    assert _create(path, source=_source("/data/a")).videos() == ["v1"]  # same source: reused


def test_identity_tells_sources_apart(tmp_path):
    a = _create(tmp_path / "a.zarr", source=_source("/data/a"))
    a2 = _create(tmp_path / "a2.zarr", source=_source("/data/a"))
    b = _create(tmp_path / "b.zarr", source=_source("/data/b"))
    assert a.identity == a2.identity != b.identity
    assert FeatureStore.open(tmp_path / "a.zarr").identity == a.identity


def test_store_without_source_is_adopted_only_when_it_shows_the_same_root(tmp_path):
    path = tmp_path / "s.zarr"
    _create(path)  # no source recorded (as stores before this attribute)
    assert _create(path, source=_source()).source == _source()  # empty: adopted
    old = tmp_path / "old.zarr"
    (tmp_path / "a").mkdir()
    video = tmp_path / "a" / "v1.mp4"
    video.write_bytes(b"")
    _create(old).write_video("v1", *_data(), fps=15.0, source=video)
    before = _snapshot(old)
    with pytest.raises(ConfigError, match=r"old\.zarr was written before stores recorded"):
        _create(old, source=_source(str(tmp_path / "b")))  # its video is not under b
    assert _snapshot(old) == before
    adopted = _create(old, source=_source(str(tmp_path / "a")))  # the video is under a
    assert adopted.source == _source(str(tmp_path / "a")) and adopted.videos() == ["v1"]
    nowhere = tmp_path / "nowhere.zarr"
    _create(nowhere).write_video("v1", *_data(), fps=15.0, source=None)
    with pytest.raises(ConfigError, match="written before stores recorded"):
        _create(nowhere, source=_source())  # no record of where its videos came from


def test_options_that_only_decide_errors_are_not_part_of_the_source():
    """`strict` (an empty annotation file is an error) changes no stored feature: a store
    extracted with it is the same source as one without."""
    from actrec.io.features import source_of

    plain = source_of("breakfast", {"root": "/d", "fps": 15.0, "strict": False}, "cg", {})
    strict = source_of("breakfast", {"root": "/d", "fps": 15.0, "strict": True}, "cg", {})
    assert plain == strict and "strict" not in plain["options"]
    assert source_of("breakfast", {"root": "/e", "fps": 15.0}, "cg", {}) != plain
