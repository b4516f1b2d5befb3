"""Training on a split whose videos are not in the store says why: extraction failed on them
(the reason it recorded, and that another extract run alone cannot help) or they were never
extracted."""

from __future__ import annotations

import numpy as np
import pytest

from actrec.data.windows import VideoBank
from actrec.errors import DataError
from actrec.extract_status import record_failure
from actrec.io.features import FeatureStore


def _store(tmp_path):
    store = FeatureStore.open_or_create(
        tmp_path / "s.zarr", dataset="mine", split_scheme="test", classes=["a", "b"],
        splits={"1": {"train": ["alice_01", "bob_01", "carol_01"], "test": []}},
        extractor="colorgrad", extractor_config={}, lookahead=0)
    store.write_video("alice_01", np.zeros((5, 3), np.float32), np.zeros(5, np.int64), fps=15.0,
                      source=None)
    return store


def test_a_video_whose_extraction_failed_is_named_with_its_reason(tmp_path):
    store = _store(tmp_path)
    record_failure(store.path, "bob_01", "no video file found; looked for /data/bob_01.mp4", None)
    with pytest.raises(DataError) as err:
        VideoBank.from_store(store, ["alice_01", "bob_01", "carol_01"], name="D1 mine")
    msg = str(err.value)
    assert msg.startswith("D1 mine: 2 split video(s) not in the feature store")
    assert ("1 failed extraction: bob_01 (bob_01: no video file found; looked for "
            "/data/bob_01.mp4); fix the video file(s)") in msg
    assert f"actrec extract --status {store.path}" in msg
    assert msg.endswith("1 never extracted: carol_01; extract them first")


def test_videos_never_extracted_are_told_to_extract(tmp_path):
    store = _store(tmp_path)
    with pytest.raises(DataError, match=r"^D1: 1 split video\(s\) not in the feature store; "
                                        r"1 never extracted: bob_01; extract them first$"):
        VideoBank.from_store(store, ["alice_01", "bob_01"], name="D1")
    bank = VideoBank.from_store(store, ["alice_01"], name="D1")
    assert bank.ids == ("alice_01",)
