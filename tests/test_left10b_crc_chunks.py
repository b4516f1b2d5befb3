"""A chunk altered in place is found by its crc32c, checked on the chunk files themselves
(the codec that closes the array's chain in its zarr.json), not recognised by the words of
zarr's error: ``actrec check`` and a read name the chunk by its key, and a chunk whose
crc32c holds but whose payload does not decode is not blamed on its checksum. Real Zarr
stores in a folder and in S3 (moto), flipped bytes."""

from __future__ import annotations

import numpy as np
import pytest

from actrec.errors import DataError
from actrec.io.features import FeatureStore
from actrec.io.integrity import check_store, crc32c_failures, verify_video

_NAMED = "fails its crc32c checksum (altered in place after written)"


def _store(where):
    store = FeatureStore.open_or_create(
        where, dataset="toy", split_scheme="default", classes=["a", "b", "c"],
        splits={"1": {"train": ["v"], "test": []}}, extractor="toy", extractor_config={},
        lookahead=0, chunk_frames=8)
    rng = np.random.default_rng(3)
    store.write_video("v", rng.normal(size=(40, 5)).astype(np.float32),  # 5 chunks of 8
                      rng.integers(0, 3, 40), fps=15.0, source=None)
    store.write_video("w", rng.normal(size=(16, 5)).astype(np.float32),
                      rng.integers(0, 3, 16), fps=15.0, source=None)
    return store


def _flip(data: bytes, at: int) -> bytes:
    out = bytearray(data)
    out[at] ^= 0x04
    return bytes(out)


def test_a_flipped_byte_is_named_by_its_chunk_key(tmp_path):
    store = _store(tmp_path / "s.zarr")
    arrays = store.video_dir("v")
    for key in ("features/c/3/0", "features/c/1/0", "labels/c/4"):
        chunk = arrays / key
        chunk.write_bytes(_flip(chunk.read_bytes(), 20))
    assert crc32c_failures(arrays / "features") == ["c/1/0", "c/3/0"]  # in chunk order
    assert crc32c_failures(arrays / "labels") == ["c/4"]
    assert crc32c_failures(store.video_dir("w") / "features") == []  # untouched
    fresh = FeatureStore.open(store.path)
    assert fresh.damage("v") == []  # sizes kept: the cheap check cannot see it
    assert verify_video(fresh, "v").problems == (
        "features: chunks c/1/0, c/3/0 fail their crc32c checksum (altered in place after written)",
        f"labels: chunk c/4 {_NAMED}")
    report = check_store(fresh)
    assert {v.video: v.status for v in report.videos} == {"v": "damaged", "w": "ok"}
    # a read names it too (was zarr's words with the checksums' byte reprs)
    with pytest.raises(DataError, match=r"cannot read video 'v' frames 0\.\.40: features: "
                                        r"chunks c/1/0, c/3/0 fail their crc32c checksum"):
        fresh.read("v")
    with pytest.raises(DataError, match=r"frames 24\.\.32: features: chunk c/3/0 fails its "):
        fresh.read_window("v", 24, 8)  # only the window's chunks are looked at
    x, _ = fresh.read_window("v", 16, 8)  # an intact chunk between them reads
    assert x.shape == (8, 5)


def test_a_valid_checksum_over_an_undecodable_payload_is_not_called_altered(tmp_path):
    """The payload's compression header broken and the crc32c made to match it (a writer's
    bug, not an alteration): the chunk's crc32c holds, so the problem is the decoder's."""
    import google_crc32c

    store = _store(tmp_path / "s.zarr")
    chunk = store.video_dir("v") / "labels" / "c" / "2"
    payload = bytes(8) + chunk.read_bytes()[8:-4]  # a blosc header of zeros
    chunk.write_bytes(payload + int(google_crc32c.value(payload)).to_bytes(4, "little"))
    assert crc32c_failures(chunk.parents[1]) == []
    (problem,) = verify_video(FeatureStore.open(store.path), "v").problems
    assert problem.startswith("labels: unreadable (") and "crc32c" not in problem


def test_an_array_without_a_crc32c_has_nothing_to_check(tmp_path):
    import zarr

    array = zarr.create_array(store=str(tmp_path / "a"), shape=(8,), chunks=(4,), dtype="i8")
    array[:] = np.arange(8)
    assert crc32c_failures(tmp_path / "a") is None
    assert crc32c_failures(tmp_path / "a", ["c/0"]) is None


def test_a_flipped_byte_at_a_url_is_named_by_its_chunk_key(bucket):
    import s3fs

    store = _store(f"s3://{bucket}/s.zarr")
    fs = s3fs.S3FileSystem()
    key = f"{store.video_dir('v').fs_path}/features/c/2/0"
    fs.pipe(key, _flip(fs.cat(key), 17))
    s3fs.S3FileSystem.clear_instance_cache()
    fresh = FeatureStore.open(store.path)
    assert verify_video(fresh, "v").problems == (f"features: chunk c/2/0 {_NAMED}",)
    with pytest.raises(DataError, match=r"frames 0\.\.40: features: chunk c/2/0 fails its "):
        fresh.read("v")
