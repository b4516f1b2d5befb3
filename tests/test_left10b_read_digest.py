"""A whole-video read still checks the sha256 its commit recorded when the features are hashed
beside the rest of the read (``PendingDigest``: a thread for a large video): valid chunks
exchanged in a video of more than a megabyte of features are refused, and the digest is
the one ``array_digest`` gives. Speed is measured by ``python -m actrec.bench store``, not
here. Real Zarr stores on disk."""

from __future__ import annotations

import numpy as np
import pytest

from actrec.errors import DataError
from actrec.io.features import FeatureStore
from actrec.io.integrity import PendingDigest, array_digest, recorded_digest


def _incompressible(frames: int, dim: int, seed: int = 0) -> np.ndarray:
    """Finite float16 values of random bits: blosc stores every chunk raw, so all chunks of
    a video have one size (an exchange of two is invisible to the sizes and the crc32c)."""
    bits = np.random.default_rng(seed).integers(0, 2 ** 16, size=(frames, dim), dtype=np.uint16)
    bits[(bits & 0x7C00) == 0x7C00] ^= 0x4000  # no inf / NaN
    return bits.view(np.float16).astype(np.float32)


def _large_store(path):
    store = FeatureStore.open_or_create(
        path, dataset="toy", split_scheme="default", classes=["a", "b"], splits={},
        extractor="toy", extractor_config={}, lookahead=0, chunk_frames=64)
    feats = _incompressible(640, 1024)  # 1.3 MB of float16 features: hashed in a thread
    store.write_video("v", feats, np.arange(640) % 2, fps=15.0, source=None)
    return store, feats


def test_a_large_video_read_whole_is_checked_against_its_sha256(tmp_path):
    store, feats = _large_store(tmp_path / "s.zarr")
    x, y = FeatureStore.open(store.path).read("v")
    np.testing.assert_array_equal(x, feats)  # float16 values: exact in float32
    np.testing.assert_array_equal(y, np.arange(640) % 2)
    chunks = store.video_dir("v") / "features" / "c"
    a, b = chunks / "1" / "0", chunks / "4" / "0"
    one, four = a.read_bytes(), b.read_bytes()
    assert len(one) == len(four)
    a.write_bytes(four)
    b.write_bytes(one)
    fresh = FeatureStore.open(store.path)
    assert fresh.damage("v") == []  # sizes hold; so does each chunk's crc32c
    with pytest.raises(DataError, match=r"video 'v' is damaged \(features: the values read "
                                        r"differ from the sha256 recorded"):
        fresh.read("v")
    x, _ = fresh.read_window("v", 0, 64)  # a window is not hashed: chunk 0 is intact
    np.testing.assert_array_equal(x, feats[:64])


def test_the_digest_beside_the_read_is_array_digest(tmp_path):
    store, feats = _large_store(tmp_path / "s.zarr")
    stored = feats.astype(np.float16)
    assert stored.nbytes > 1 << 20
    pending = PendingDigest(stored, "float16")
    assert pending.result() == array_digest(stored, "float16") == \
        recorded_digest(store.video_attrs("v"), "features")
    assert pending.result() == array_digest(stored, "float16")  # asked again: the same
    small = stored[:8]
    assert PendingDigest(small, "float16").result() == array_digest(small, "float16")
    assert PendingDigest(small, "bfloat16").result() is None  # not a dtype stores keep
    # a digest is of the bytes as stored: little endian, C order, whatever the input's layout
    assert array_digest(stored.T.copy().T, "float16") == array_digest(stored, "float16")
    assert array_digest(stored.astype(">f2"), "float16") == array_digest(stored, "float16")


def test_a_hash_that_fails_in_its_thread_is_raised_not_taken_for_no_digest():
    # None means "no digest to compare" and passes the check: a failure must not become it
    values = np.full(200_000, "x", dtype=object)  # 1.6 MB of pointers: hashed in a thread
    assert values.nbytes > 1 << 20
    pending = PendingDigest(values, "float16")
    with pytest.raises(ValueError):
        pending.result()
