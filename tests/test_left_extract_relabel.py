"""A labels-only change rewrites the labels only: the same video file, extractor and rows with
corrected annotations get their new labels and keep their features (the whole video was
extracted again). Labels of another length change the rows: extracted again. A store written
before stores recorded the labels' digest is compared by its label array."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from actrec_plugins.extractors.colorgrad import ColorGradient

from actrec.extract import extract_features
from actrec.io.features import FeatureStore, encode_video_id

CG = ColorGradient.Config(grid=1, bins=4, resize=16)
CHANGED = ("its labels changed since it was extracted (the dataset's annotations differ); its "
           "labels were rewritten, its features kept")


def _with_labels(index, vid, labels):
    return dataclasses.replace(index, videos={
        **index.videos, vid: dataclasses.replace(index.videos[vid], labels=labels)})


def _extract(index, path):
    return extract_features(index, ColorGradient(CG), path, dataset_ref="r", batch_size=8,
                            dtype="float32")


def _store_files(store, vid):
    """The bytes of a stored video's feature chunk files."""
    folder = store.video_dir(vid) / "features"
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != "zarr.json"}


@pytest.fixture
def extracted(tiny_kitchen, tmp_path):
    _, index = tiny_kitchen
    path = tmp_path / "s.zarr"
    assert _extract(index, path).ok
    return index, path, min(index.videos)


def test_labels_alone_are_rewritten_and_the_features_kept(extracted):
    index, path, vid = extracted
    store = FeatureStore.open(path)
    features, old_labels = store.read(vid)
    chunks = _store_files(store, vid)
    fixed = index.videos[vid].labels.copy()
    fixed[3:9] = (fixed[3:9] + 1) % len(index.classes)
    report = _extract(_with_labels(index, vid, fixed), path)
    assert report.ok and report.relabelled == ((vid, CHANGED),)
    assert not report.written and not report.redone_changed and report.frames == 0
    assert sorted(report.skipped) == sorted(set(index.videos) - {vid})
    store = FeatureStore.open(path)
    new_features, labels = store.read(vid)
    np.testing.assert_array_equal(labels, fixed[:labels.shape[0]])
    assert not np.array_equal(labels, old_labels)
    np.testing.assert_array_equal(new_features, features)
    assert _store_files(store, vid) == chunks  # the same feature bytes
    assert store.damage(vid) == []
    attrs = store.video_attrs(vid)
    assert attrs["frames_cut"] and attrs["label_fps"] == index.videos[vid].fps
    assert report.to_dict()["relabelled"] == [{"video": vid, "change": CHANGED}]
    again = _extract(_with_labels(index, vid, fixed), path)  # recorded: nothing to do
    assert not again.relabelled and not again.written and len(again.skipped) == len(index.videos)


def test_labels_of_another_length_extract_the_video_again(extracted):
    index, path, vid = extracted
    longer = np.concatenate([index.videos[vid].labels, [0, 0]])  # two more frames' labels
    report = _extract(_with_labels(index, vid, longer), path)
    assert report.written == (vid,) and not report.relabelled
    assert report.redone_changed == ((vid, ("its labels changed since it was extracted (the "
                                            "dataset's annotations differ)")),)
    assert report.cut == ((vid, 0, 2),)  # the length policy judged them on the video


@pytest.mark.parametrize("record", ["integrity digest", "array only"])
def test_a_store_from_before_the_labels_digest_is_compared_by_its_labels(extracted, record):
    index, path, vid = extracted
    for name in index.videos:  # as written before stores recorded the labels' digest
        meta = FeatureStore.open(path).path / "videos" / encode_video_id(name) / "zarr.json"
        doc = json.loads(meta.read_text())
        doc["attributes"].pop("labels_digest")
        if record == "array only":
            doc["attributes"]["integrity"]["labels"].pop("sha256")
        meta.write_text(json.dumps(doc))
    same = _extract(index, path)
    assert len(same.skipped) == len(index.videos) and not same.relabelled
    fixed = index.videos[vid].labels.copy()
    fixed[0] = (fixed[0] + 1) % len(index.classes)
    report = _extract(_with_labels(index, vid, fixed), path)
    assert report.relabelled == ((vid, CHANGED),) and not report.written
    store = FeatureStore.open(path)
    assert store.read(vid)[1][0] == fixed[0]
    assert "labels_digest" in store.video_attrs(vid)  # recorded now
