"""Random windows and two-domain batches: shapes, padding, content, determinism, row order."""

import numpy as np
import pytest
import torch

from actrec.data.labels import InputLayout, LabelSpace
from actrec.data.windows import VideoBank, sample_windows, two_domain_batch
from actrec.errors import DataError
from actrec.io.features import FeatureStore


def ramp_bank(lengths, dim=3, classes=4, offset=0.0, name="bank"):
    """Videos whose feature row t is (offset + 1000 * video + t) in every column, so a
    window's content tells which video and frame it came from."""
    videos = []
    for v, n in enumerate(lengths):
        t = np.arange(n)
        x = np.repeat((offset + 1000 * v + t)[:, None], dim, axis=1).astype(np.float32)
        videos.append((f"v{v}", x, t % classes))
    return VideoBank.from_arrays(videos, name=name)


def test_window_shapes_and_content():
    bank = ramp_bank([50, 60, 70])
    w = sample_windows(bank, 8, 20, np.random.default_rng(0))
    assert w.features.shape == (20, 8, 3) and w.features.dtype == np.float32
    assert w.labels.shape == (20, 8) and w.labels.dtype == np.int64
    assert w.mask.all()
    for i in range(8):
        v, s = int(w.video[i]), int(w.start[i])
        assert 0 <= s <= bank.labels[v].shape[0] - 20
        np.testing.assert_array_equal(w.features[:, i, 0], 1000 * v + s + np.arange(20))
        np.testing.assert_array_equal(w.labels[:, i], bank.labels[v][s : s + 20])


def test_short_video_is_padded_at_the_end():
    bank = ramp_bank([5])
    w = sample_windows(bank, 2, 8, np.random.default_rng(1))
    assert (w.start == 0).all()
    np.testing.assert_array_equal(w.mask[:, 0], [True] * 5 + [False] * 3)
    np.testing.assert_array_equal(w.labels[:, 0], [0, 1, 2, 3, 0, -1, -1, -1])
    np.testing.assert_array_equal(w.features[:, 0, 1], [0, 1, 2, 3, 4, 0, 0, 0])


def test_every_start_is_reachable():
    bank = ramp_bank([12])  # history 10 -> starts 0, 1, 2
    w = sample_windows(bank, 300, 10, np.random.default_rng(2))
    assert set(w.start.tolist()) == {0, 1, 2}
    counts = np.bincount(w.start)
    assert counts.min() > 60  # roughly uniform (expected 100 each)


def test_determinism_from_the_generator():
    bank = ramp_bank([30, 40, 50, 60])
    a = sample_windows(bank, 6, 10, np.random.default_rng(7))
    b = sample_windows(bank, 6, 10, np.random.default_rng(7))
    c = sample_windows(bank, 6, 10, np.random.default_rng(8))
    np.testing.assert_array_equal(a.features, b.features)
    np.testing.assert_array_equal(a.start, b.start)
    assert not (np.array_equal(a.video, c.video) and np.array_equal(a.start, c.start))


def test_two_domain_batch_order_labels_and_blocks():
    d1 = ramp_bank([30, 30], dim=3, classes=3, name="d1")
    d2 = ramp_bank([25, 40], dim=2, classes=2, offset=0.5, name="d2")
    labels = LabelSpace((("a", "b", "c"), ("x", "y")))
    layout = InputLayout((3, 2), "blocks")
    batch = two_domain_batch([d1, d2], (4, 3), 10, np.random.default_rng(3), labels, layout)
    assert batch.x.shape == (10, 7, 5) and batch.x.dtype == torch.float32
    assert batch.domain.tolist() == [0, 0, 0, 0, 1, 1, 1]
    # D1 rows: features in columns 0..2, zeros in 3..4, labels 0..2.
    assert (batch.x[:, :4, 3:] == 0).all() and (batch.x[:, 4:, :3] == 0).all()
    assert batch.y[:, :4].min() >= 0 and batch.y[:, :4].max() <= 2
    # D2 rows: labels offset by L1 = 3; features are the half-integer ramp of d2.
    assert batch.y[:, 4:].min() >= 3 and batch.y[:, 4:].max() <= 4
    assert torch.all(batch.x[:, 4:, 3:] % 1 == 0.5)
    # The same generator state gives the same batch.
    again = two_domain_batch([d1, d2], (4, 3), 10, np.random.default_rng(3), labels, layout)
    assert torch.equal(batch.x, again.x) and torch.equal(batch.y, again.y)


def test_single_domain_batch():
    d1 = ramp_bank([30, 30])
    labels = LabelSpace((("a", "b", "c", "d"),))
    batch = two_domain_batch([d1], (5,), 12, np.random.default_rng(0), labels,
                             InputLayout((3,), "blocks"))
    assert batch.x.shape == (12, 5, 3)
    assert batch.domain.tolist() == [0] * 5


def test_bank_checks_shapes():
    with pytest.raises(DataError, match="v0"):
        VideoBank.from_arrays([("v0", np.zeros((4, 3)), np.zeros(5))], name="bad")
    with pytest.raises(DataError, match="no videos"):
        VideoBank.from_arrays([], name="empty")


def test_bank_from_real_store(tmp_path):
    store = FeatureStore.open_or_create(
        tmp_path / "s.zarr", dataset="toy", split_scheme="default", classes=["a", "b"],
        splits={"1": {"train": ["p", "q"], "test": []}}, extractor="toy",
        extractor_config={}, lookahead=0, dtype="float32",
    )
    x = np.arange(12, dtype=np.float32).reshape(6, 2)
    store.write_video("p", x, np.array([0, 0, 1, 1, -1, 0]), fps=10.0, source=None)
    bank = VideoBank.from_store(store, ["p"], name="toy")
    np.testing.assert_array_equal(bank.features[0], x)
    assert bank.labels[0].tolist() == [0, 0, 1, 1, -1, 0] and bank.num_frames == 6
    with pytest.raises(DataError, match="q"):
        VideoBank.from_store(store, ["p", "q"], name="toy")
