"""What ``FeatureStore.write_video`` leaves on disk is what zarr's step-by-step API makes (a
group created with the video's attributes, each array created then filled, the record and
the complete marker added last), byte for byte: stores written before and after the write
path changed are the same format, and every chunk file exists (also all-fill ones)."""

from __future__ import annotations

import numpy as np
import pytest

from actrec.io.features import FeatureStore
from actrec.io.integrity import array_record, check_store


def _store(path, dtype="float16"):
    return FeatureStore.open_or_create(
        path, dataset="kitchen", split_scheme="s", classes=["bg", "cut", "stir"],
        splits={"1": {"train": ["a"], "test": ["b"]}}, extractor="colorgrad",
        extractor_config={"grid": 2}, lookahead=0, dtype=dtype, chunk_frames=256)


def _step_by_step(folder, attrs, features, labels, dtype, chunk):
    """A video's group as write_video made it one zarr call at a time."""
    import zarr
    from zarr.codecs import BloscCodec, Crc32cCodec

    codec = [BloscCodec(cname="zstd", clevel=3, shuffle="bitshuffle"), Crc32cCodec()]
    every = {"write_empty_chunks": True}
    t = max(1, features.shape[0])
    group = zarr.open_group(store=str(folder), mode="w-", attributes=attrs)
    feats = group.create_array("features", shape=features.shape, dtype=dtype,
                               compressors=codec, chunks=(min(chunk, t), features.shape[1]),
                               config=every)
    feats[...] = features
    labs = group.create_array("labels", shape=labels.shape, dtype="int64",
                              chunks=(min(chunk, t),), compressors=codec, config=every)
    labs[...] = labels
    group.attrs.update({"integrity": {
        "features": array_record(folder / "features", features, dtype, min(chunk, t)),
        "labels": array_record(folder / "labels", labels, "int64", min(chunk, t))},
        "complete": True})


def _files(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_written_video_is_zarrs_step_by_step_group_byte_for_byte(tmp_path, dtype):
    store = _store(tmp_path / "s.zarr", dtype)
    rng = np.random.default_rng(7)
    for frames in (0, 1, 256, 600):
        features = rng.standard_normal((frames, 5)).astype(np.float32)
        features[256:512] = 0  # an all-fill chunk: its file must be written all the same
        labels = rng.integers(0, 3, frames)
        video = f"P03_cam01_{frames}"
        store.write_video(video, features, labels, fps=15.0, source=None,
                          extra={"frames_cut": {"video": 0, "labels": 2}})
        attrs = store.video_attrs(video)
        mine = {k: v for k, v in attrs.items() if k not in ("integrity", "complete")}
        ref = tmp_path / f"ref-{dtype}-{frames}"
        ref.mkdir()
        _step_by_step(ref, mine, features.astype(dtype), labels.astype(np.int64), dtype, 256)
        written = _files(store.video_dir(video))
        assert written == _files(ref)
        chunks = -(-frames // 256)
        assert sorted(k for k in written if k.startswith("features/c/")) == \
            [f"features/c/{i}/0" for i in range(chunks)]
        got, got_labels = store.read(video)
        np.testing.assert_array_equal(got, features.astype(dtype).astype(np.float32))
        np.testing.assert_array_equal(got_labels, labels)
    report = check_store(store)
    assert [v.status for v in report.videos] == ["ok"] * 4


def test_direct_writer_leaves_other_codec_chains_and_empty_rows_to_zarr(tmp_path):
    """Only the chain it knows (bytes, blosc, crc32c) is written directly; anything else
    (another compressor, rows of zero values) goes to zarr, whose files are then the truth."""
    from zarr.codecs import BloscCodec, Crc32cCodec, GzipCodec

    from actrec.io.zarr_files import ArrayFiles

    ours = [BloscCodec(cname="zstd", clevel=3, shuffle="bitshuffle"), Crc32cCodec()]
    assert ArrayFiles.for_array("float16", (5,), ours) is not None
    assert ArrayFiles.for_array("float16", (5,), [GzipCodec(level=1)]) is None
    assert ArrayFiles.for_array("float16", (5,), [ours[0]]) is None  # no checksum
    assert ArrayFiles.for_array("float16", (0,), ours) is None
    store = _store(tmp_path / "s.zarr", "float32")
    store.write_video("empty-rows", np.zeros((7, 0), np.float32), np.zeros(7, np.int64),
                      fps=15.0, source=None)
    got, labels = store.read("empty-rows")
    assert got.shape == (7, 0) and labels.tolist() == [0] * 7


def test_a_new_store_is_zarrs_groups_byte_for_byte(tmp_path):
    """The root group (the store's attributes) and the videos group, as zarr makes them."""
    import zarr

    store = _store(tmp_path / "s.zarr")
    ref = tmp_path / "ref.zarr"
    root = zarr.open_group(store=str(ref), mode="w-", attributes=store.attrs)
    root.create_group("videos")
    assert _files(tmp_path / "s.zarr") == _files(ref)
    assert FeatureStore.open(tmp_path / "s.zarr").attrs == store.attrs
    assert zarr.open_group(str(tmp_path / "s.zarr"), mode="r")["videos"].attrs.asdict() == {}
