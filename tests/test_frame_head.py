"""actrec.frame_head on real Zarr stores: the head learns from the split's training videos
only, its outputs fill a second store, and re-runs reuse, redo or refuse as documented."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from actrec.errors import ConfigError, DataError
from actrec.frame_head import (
    HeadConfig,
    extract_head_features,
    head_digest,
    head_outputs,
    head_store_path,
    load_head,
    train_frame_head,
)
from actrec.io.features import FeatureStore

CLASSES = ("a", "b", "c")
SPLITS = {"1": {"train": ["v0", "v1", "v2"], "test": ["v3"]},
          "2": {"train": ["v1", "v2", "v3"], "test": ["v0"]}}
FAST = HeadConfig(epochs=15, batch_size=32, lr=0.01, min_steps=1)


def toy_video(seed: int, frames: int = 48) -> tuple[np.ndarray, np.ndarray]:
    """Features [T, 6] where class c lifts dimension c by 3 (separable), and labels [T] with
    a few unlabelled frames (-1)."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(3), frames // 3)
    feats = rng.normal(0, 0.5, (frames, 6)).astype(np.float32) + 10.0  # off-centre on purpose
    feats[np.arange(frames), labels] += 3.0
    labels[::7] = -1
    return feats, labels


def make_store(path, videos=None) -> FeatureStore:
    store = FeatureStore.open_or_create(
        path, dataset="toy", split_scheme="default", classes=CLASSES, splits=SPLITS,
        extractor="toyfeat", extractor_config={"k": 1}, lookahead=0, dtype="float32")
    for i in range(4):
        x, y = videos[f"v{i}"] if videos and f"v{i}" in videos else toy_video(i)
        store.write_video(f"v{i}", x, y, fps=15.0, source=None)
    return store


def test_head_learns_the_training_frames_and_classifies_the_test_video(tmp_path):
    store = make_store(tmp_path / "toy.zarr")
    for model in ("linear", "mlp"):
        head = train_frame_head(store, 1, HeadConfig(**{**FAST.to_dict(), "model": model}))
        assert head.train_videos == ("v0", "v1", "v2") and head.split == "1"
        assert head.frames == 3 * 41  # 48 frames, 7 unlabelled, per training video
        assert head.accuracy == 1.0 and head.losses[-1] < head.losses[0], model
        # Standardised by the labelled training frames' mean and std (no test frame).
        train = np.concatenate([x[y >= 0] for x, y in map(store.read, ("v0", "v1", "v2"))])
        np.testing.assert_allclose(head.module.mean.numpy(), train.mean(0), rtol=1e-5)
        np.testing.assert_allclose(head.module.std.numpy(), train.std(0), rtol=1e-4)
        x, y = store.read("v3")
        probs = head_outputs(head, x, "softmax")
        logits = head_outputs(head, x, "logits")
        assert probs.shape == (48, 3) and probs.dtype == np.float32
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-6)
        np.testing.assert_allclose(torch.softmax(torch.from_numpy(logits), 1).numpy(), probs,
                                   rtol=1e-5, atol=1e-7)
        keep = y >= 0
        assert (probs.argmax(axis=1)[keep] == y[keep]).all()


def test_small_splits_get_at_least_min_steps(tmp_path):
    store = make_store(tmp_path / "toy.zarr")
    # 123 labelled frames in batches of 32: 4 steps an epoch, so 100 steps need 25 epochs.
    short = HeadConfig(**{**FAST.to_dict(), "epochs": 3, "min_steps": 100})
    assert len(train_frame_head(store, "1", short).losses) == 25
    long = HeadConfig(**{**FAST.to_dict(), "epochs": 30, "min_steps": 100})
    assert len(train_frame_head(store, "1", long).losses) == 30


def test_videos_streamed_through_a_small_buffer(tmp_path):
    store = make_store(tmp_path / "toy.zarr")
    # 6 float32 features a frame: 0.0005 MB holds 21 frames, fewer than a video's 41.
    small = HeadConfig(**{**FAST.to_dict(), "buffer_mb": 0.0005})
    head = train_frame_head(store, "1", small)
    assert head.accuracy == 1.0 and head.frames == 3 * 41
    assert head_digest(train_frame_head(store, "1", small)) == head_digest(head)  # seeded
    whole = train_frame_head(store, "1", FAST).module.state_dict()["net.weight"]
    assert not torch.equal(head.module.state_dict()["net.weight"], whole)  # another order


def test_no_test_video_influences_the_head(tmp_path):
    store = make_store(tmp_path / "toy.zarr")
    first = train_frame_head(store, "1", FAST)
    # The test video of split 1 becomes something else entirely: features and labels.
    rng = np.random.default_rng(99)
    store.write_video("v3", rng.normal(0, 50, (30, 6)).astype(np.float32),
                      rng.integers(0, 3, 30), fps=15.0, source=None)
    second = train_frame_head(store, "1", FAST)
    assert head_digest(second) == head_digest(first)
    for (name, a), b in zip(first.module.state_dict().items(),
                            second.module.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    # A training video does change it (so the comparison above can fail).
    x, y = toy_video(0)
    store.write_video("v0", x + 0.01, y, fps=15.0, source=None)
    assert head_digest(train_frame_head(store, "1", FAST)) != head_digest(first)
    # So does the seed.
    other = HeadConfig(**{**FAST.to_dict(), "seed": 1})
    assert head_digest(train_frame_head(store, "1", other)) != head_digest(first)


def test_head_store_is_written_beside_the_backbone_store(tmp_path):
    backbone = make_store(tmp_path / "toy.zarr")
    report = extract_head_features(backbone.path, 1, output="softmax", config=FAST)
    assert report.store == tmp_path / "toy-softmax-split1.zarr" == head_store_path(
        backbone.path, "softmax", 1)
    assert report.head == tmp_path / "toy-softmax-split1.head.pt" and report.head.is_file()
    assert report.trained and report.train_videos == 3 and report.train_accuracy == 1.0
    assert sorted(report.written) == ["v0", "v1", "v2", "v3"] and not report.skipped
    store = FeatureStore.open(report.store)
    attrs = store.attrs
    saved = load_head(report.head)
    cfg = attrs["extractor_config"]
    assert attrs["extractor"] == "toyfeat-softmax-split1" and attrs["lookahead"] == 0
    # Only split 1: split 2 tests v0, a training video of this head.
    assert attrs["classes"] == list(CLASSES) and attrs["splits"] == {"1": SPLITS["1"]}
    assert cfg["head_digest"] == head_digest(saved) and cfg["head_file"] == report.head.name
    assert cfg["train_videos"] == ["v0", "v1", "v2"] and cfg["backbone_identity"] == \
        backbone.identity and cfg["head_config"] == FAST.to_dict()
    for vid in ("v0", "v3"):
        x, y = backbone.read(vid)
        got, labels = store.read(vid)
        np.testing.assert_allclose(got, head_outputs(saved, x, "softmax"), rtol=1e-6)
        np.testing.assert_array_equal(labels, y)
        assert store.video_attrs(vid)["head_train_video"] is (vid != "v3")
    logits = extract_head_features(backbone.path, 1, output="logits", config=FAST)
    assert logits.store.name == "toy-logits-split1.zarr"
    x, _ = FeatureStore.open(logits.store).read("v1")
    assert np.abs(x).max() > 1.0  # logits, not probabilities


def test_rerun_reuses_redoes_changed_videos_and_refuses_another_head(tmp_path):
    backbone = make_store(tmp_path / "toy.zarr")
    extract_head_features(backbone.path, "1", config=FAST)
    again = extract_head_features(backbone.path, "1", config=FAST)
    assert not again.trained and again.written == () and len(again.skipped) == 4
    # A test video's features change: the head stays, only that video is redone.
    x, y = toy_video(3)
    backbone.write_video("v3", x * 2, y, fps=15.0, source=None)
    redo = extract_head_features(backbone.path, "1", config=FAST)
    assert not redo.trained and redo.written == ("v3",)
    # A training video changes: the head would differ, the old outputs are not mixed in.
    x, y = toy_video(1)
    backbone.write_video("v1", x + 1, y, fps=15.0, source=None)
    before = (tmp_path / "toy-softmax-split1.head.pt").read_bytes()
    with pytest.raises(DataError, match="holds the outputs of another head.*--overwrite"):
        extract_head_features(backbone.path, "1", config=FAST)
    assert (tmp_path / "toy-softmax-split1.head.pt").read_bytes() == before  # left alone
    replaced = extract_head_features(backbone.path, "1", config=FAST, overwrite=True)
    assert replaced.trained and len(replaced.written) == 4


def test_missing_training_videos_and_unknown_splits(tmp_path):
    backbone = make_store(tmp_path / "toy.zarr")
    backbone.remove("v1")
    with pytest.raises(DataError, match="1 of split 1's 3 training videos are not stored "
                                        r"\(v1\).*allow_missing=true"):
        extract_head_features(backbone.path, "1", config=FAST)
    lenient = HeadConfig(**{**FAST.to_dict(), "allow_missing": True})
    report = extract_head_features(backbone.path, "1", config=lenient)
    assert report.missing_train_videos == ("v1",) and report.train_videos == 2
    with pytest.raises(ConfigError, match="has no split '7'; expected one of: 1, 2"):
        extract_head_features(backbone.path, "7", config=FAST)
    with pytest.raises(ConfigError, match="head option 'model' must be 'linear' or 'mlp'"):
        HeadConfig.from_options({"model": "svm"})


def test_head_on_a_named_stream_of_the_store(tmp_path):
    make_store(tmp_path / "toy.zarr")
    flow = FeatureStore.open_or_create(
        tmp_path / "toy.zarr", dataset="toy", split_scheme="default", classes=CLASSES,
        splits=SPLITS, extractor="flowfeat", extractor_config={}, lookahead=0,
        dtype="float32", stream="flow")
    for i in range(4):
        x, y = toy_video(10 + i)
        flow.write_video(f"v{i}", x[:, ::-1].copy(), y, fps=15.0, source=None)
    report = extract_head_features(tmp_path / "toy.zarr", "1", config=FAST, stream="flow")
    assert report.store == tmp_path / "toy-flow-softmax-split1.zarr"
    out = FeatureStore.open(report.store)
    assert out.attrs["extractor"] == "flowfeat-softmax-split1"
    saved = load_head(report.head)
    assert head_digest(saved) == head_digest(train_frame_head(flow, "1", FAST))
    np.testing.assert_allclose(out.read("v3")[0], head_outputs(saved, flow.read("v3")[0],
                                                               "softmax"), rtol=1e-6)
