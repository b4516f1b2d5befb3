"""Leftovers of the importers: LSTR's THUMOS ``Ambiguous`` frames are unlabelled, as THUMOS'14's
evaluation leaves them out (they were imported as a 22nd class that models learned and the
metrics scored)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from actrec.errors import ConfigError
from actrec.importers import import_lstr
from actrec.io.features import FeatureStore

CLASSES = ["Background", "Jump", "Throw", "Ambiguous"]


def _thumos(root: Path, ambiguous_name="Ambiguous") -> Path:
    for d in ("rgb", "target_perframe"):
        (root / d).mkdir(parents=True)
    classes = CLASSES[:3] + [ambiguous_name]
    (root / "data_info.json").write_text(json.dumps({"THUMOS": {
        "class_index": classes, "train_session_set": ["video_a"],
        "test_session_set": ["video_b"]}}))
    rng = np.random.default_rng(2)
    targets = {
        # background, jump, ambiguous, ambiguous + throw, throw, none
        "video_a": [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1], [0, 0, 1, 1], [0, 0, 1, 0],
                    [0, 0, 0, 0]],
        "video_b": [[0, 0, 0, 1], [0, 1, 1, 0], [1, 0, 0, 0]],
    }
    for video, target in targets.items():
        np.save(root / "rgb" / f"{video}.npy", rng.normal(size=(len(target), 4)))
        np.save(root / "target_perframe" / f"{video}.npy", np.array(target, np.float32))
    return root


def test_thumos_ambiguous_frames_are_imported_unlabelled(tmp_path):
    root = _thumos(tmp_path / "lstr")
    report = import_lstr(root, tmp_path / "s.zarr", name="thumos", rgb_dir="rgb")
    store = FeatureStore.open(tmp_path / "s.zarr")
    assert store.classes == CLASSES  # indices stay those of the files
    assert store.read("video_a")[1].tolist() == [0, 1, -1, -1, 2, -1]
    assert store.read("video_b")[1].tolist() == [-1, 1, 0]
    assert report.repairs == {
        "frames marked Ambiguous (unlabelled: the evaluation ignores them)": 3,
        "frames with no target class (unlabelled)": 1,
        "frames with several target classes (first kept)": 1}
    # as a class, on request
    kept = import_lstr(root, tmp_path / "k.zarr", name="thumos", rgb_dir="rgb", ambiguous=None)
    assert FeatureStore.open(tmp_path / "k.zarr").read("video_a")[1].tolist() == \
        [0, 1, 3, 2, 2, -1]
    assert "frames with several target classes (first kept)" in kept.repairs
    with pytest.raises(ConfigError, match="ambiguous class 'Unsure' is not one of the classes"):
        import_lstr(root, tmp_path / "x.zarr", name="thumos", rgb_dir="rgb", ambiguous="Unsure")


def test_a_store_imported_with_ambiguous_as_a_class_is_relabelled(tmp_path):
    """A store imported before (Ambiguous a class, the default source) has its labels
    imported again: the files are the same, the labels they give are not."""
    root = _thumos(tmp_path / "lstr", ambiguous_name="ambiguous")  # any case
    store_path = tmp_path / "s.zarr"
    import_lstr(root, store_path, name="thumos", rgb_dir="rgb", ambiguous="none")
    meta = store_path / "zarr.json"  # as the importer recorded it before the option existed
    doc = json.loads(meta.read_text())
    doc["attributes"]["source"]["options"].pop("ambiguous")
    meta.write_text(json.dumps(doc))
    again = import_lstr(root, store_path, name="thumos", rgb_dir="rgb")
    assert again.written == 2
    assert again.repairs["videos whose files changed since imported (imported again)"] == 2
    assert FeatureStore.open(store_path).read("video_b")[1].tolist() == [-1, 1, 0]
