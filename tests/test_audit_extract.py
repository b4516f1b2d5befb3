"""Audit of the extraction path for silent wrong numbers: each test guards a fix (real Zarr
stores, real backbone files, real videos written with OpenCV)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_backbones import small_resnet

from actrec import registry
from actrec.errors import ConfigError, DataError
from actrec.io.features import FeatureStore


def _store(path, dtype="float16") -> FeatureStore:
    return FeatureStore.open_or_create(path, dataset="t", split_scheme="default", classes=["a", "b"],
                               splits={"1": {"train": ["v0"], "test": ["v1"]}},
                               extractor="colorgrad", extractor_config={}, lookahead=0,
                               dtype=dtype)


@pytest.mark.parametrize("dtype", ["float16", "float32"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_features_are_refused_before_anything_is_written(tmp_path, dtype, bad):
    # A NaN row stored silently is scored as class 0 at evaluation (argmax of NaN); only the
    # training videos were checked (at training time), never the test videos or a head's input.
    store = _store(tmp_path / "s.zarr", dtype)
    feats = np.ones((6, 3), np.float32)
    feats[4, 1] = bad
    with pytest.raises(DataError, match=r"video 'v1'.*1 feature row\(s\) hold NaN or infinity "
                                        r"\(first: frame 4, dimension 1"):
        store.write_video("v1", feats, np.zeros(6, np.int64), fps=15.0, source=None)
    assert store.videos() == []
    store.write_video("v1", np.ones((6, 3), np.float32), np.zeros(6, np.int64), fps=15.0,
                      source=None)
    assert store.videos() == ["v1"]


def test_a_backbone_giving_nan_is_named_as_such_not_as_dropout(tmp_path):
    model = small_resnet(seed=4)
    bn = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)][-1]
    with torch.no_grad():
        bn.running_var[0] = -1.0  # sqrt of a negative variance: NaN for every image
    torch.save(model.state_dict(), tmp_path / "m.pth")
    with pytest.raises(ConfigError, match="NaN or infinite outputs"):
        registry.create("extractors", "cnn", {"model": str(tmp_path / "m.pth"),
                                              "resize": "36", "crop": "32"})


def _with_record(index, vid, **changes):
    import dataclasses

    return dataclasses.replace(index, videos={
        **index.videos, vid: dataclasses.replace(index.videos[vid], **changes)})


def test_a_stored_video_paired_another_way_with_unchanged_labels_is_extracted_again(
        tiny_kitchen, tmp_path):
    # A store extracted before a dataset fixed its label rate (EPIC-55: 59.94 -> 60 fps) or
    # before it paired a 59.94 fps file with 60 fps labels by time (labels_by_time) holds the
    # same label arrays: the labels' digest is unchanged, so the drifted videos were skipped
    # and kept, beside newly extracted videos paired the new way.
    cv2 = pytest.importorskip("cv2")
    from actrec_plugins.extractors.colorgrad import ColorGradient

    from actrec.extract import extract_features
    from actrec.io.video import open_video, resample_indices

    n = 600  # at 59.94 vs 60 fps the time grid gains a frame near frame 500
    path = tmp_path / "P01_01.MP4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 59.94, (32, 32))
    for i in range(n):
        writer.write(np.full((32, 32, 3), 40 + (i % 8) * 24, np.uint8))
    writer.release()
    container = open_video(path).container_fps
    labels = np.arange(n + 1, dtype=np.int64) % 2  # round(n * 60 / 59.94) = n + 1
    _, index = tiny_kitchen
    vid = min(index.videos)
    store = tmp_path / "s.zarr"
    cg = ColorGradient.Config(grid=1, bins=4, resize=16)

    def run(**record):
        return extract_features(_with_record(index, vid, path=path, labels=labels, **record),
                                ColorGradient(cg), store, dataset_ref="r", batch_size=64,
                                max_length_share=1.0)

    first = run(fps=container)  # the camera's rate: one frame per label, the spare label cut
    assert vid in first.written and FeatureStore.open(store).num_frames(vid) == n
    again = run(fps=60.0)  # the labels' true rate: still one frame per label (nominal)
    assert again.written == (vid,)
    rate_changed = (f"its labels' frame rate changed since it was extracted ({container:g} "
                    f"-> 60 fps)")
    assert again.redone_changed == ((vid, rate_changed),)
    by_time = run(fps=60.0, labels_by_time=True)
    pairing_changed = (f"its frames were paired with its labels one frame per label at "
                       f"{container:g} fps; the dataset now pairs them by timestamps")
    assert by_time.written == (vid,) and by_time.redone_changed == ((vid, pairing_changed),)
    features, stored_labels = FeatureStore.open(store).read(vid)
    assert features.shape[0] == n + 1 == resample_indices(n, container, 60.0).shape[0]
    np.testing.assert_array_equal(stored_labels, labels)
    assert not run(fps=60.0, labels_by_time=True).written  # nothing changed: skipped


def test_a_head_store_takes_a_test_videos_corrected_labels(tmp_path):
    # `actrec extract` redoes a video whose annotations were corrected: same features, new
    # labels. The head store skipped it (only the features' digest was compared), so
    # evaluation on the head's outputs scored the test video against its OLD labels.
    from test_frame_head import FAST, make_store, toy_video

    from actrec.frame_head import extract_head_features

    backbone = make_store(tmp_path / "toy.zarr")
    first = extract_head_features(backbone.path, "1", config=FAST)
    x, y = toy_video(3)  # v3: split 1's test video
    fixed = y.copy()
    fixed[:10] = 2
    assert not np.array_equal(fixed, y)
    backbone.write_video("v3", x, fixed, fps=15.0, source=None)
    again = extract_head_features(backbone.path, "1", config=FAST)
    assert not again.trained and again.written == ("v3",)  # the head stays: a test video
    head_store = FeatureStore.open(first.store)
    np.testing.assert_array_equal(head_store.read("v3")[1], fixed)
    assert not extract_head_features(backbone.path, "1", config=FAST).written  # then skipped
