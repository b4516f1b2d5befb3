"""Audit of late fusion (``actrec.fusion``): it averages class probabilities, not logits (the
two give different decisions, worked by hand), weights them as asked, and refuses streams that
scored different frame counts, labels or video orders, naming the runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from actrec.errors import ConfigError
from actrec.evaluate import VideoProbabilities
from actrec.fusion import _check_same_videos, fuse_probabilities


def _part(probs, targets=None, ids=("v0",)):
    probs = [np.asarray(p, dtype=np.float32) for p in probs]
    targets = targets or [np.zeros(len(p), dtype=np.int64) for p in probs]
    return VideoProbabilities(store="s.zarr", split="1", ids=tuple(ids),
                              probabilities=tuple(probs), targets=tuple(targets),
                              classes=("a", "b", "c"), segment_background=(), dataset="toy")


def test_fusion_averages_probabilities_not_logits_by_hand():
    # Stream A is sure of class 0; stream B mildly prefers class 1 with class 0 close behind.
    # logits A = (4, 0, 0), B = (-10, 1, 0.9): the mean of the logits picks class 1 ((-3, .5,
    # .45)); the mean of the probabilities picks class 0.
    def softmax(z):
        e = np.exp(z - np.max(z))
        return e / e.sum()

    pa, pb = softmax(np.array([4.0, 0, 0])), softmax(np.array([-10.0, 1.0, 0.9]))
    (fused,) = fuse_probabilities([_part([pa[None]]), _part([pb[None]])], [1.0, 1.0])
    np.testing.assert_allclose(fused[0], (pa + pb) / 2, rtol=1e-6)
    assert fused[0].argmax() == 0
    assert np.argmax((np.array([4.0, 0, 0]) + np.array([-10.0, 1.0, 0.9])) / 2) == 1
    (weighted,) = fuse_probabilities([_part([pa[None]]), _part([pb[None]])], [1.0, 3.0])
    np.testing.assert_allclose(weighted[0], (pa + 3 * pb) / 4, rtol=1e-6)


def test_streams_with_different_frame_counts_labels_or_orders_are_refused():
    runs = [Path("runs/rgb"), Path("runs/flow")]
    a = _part([np.full((4, 3), 1 / 3)])
    with pytest.raises(ConfigError, match=r"runs/rgb and runs/flow.*'v0' has 4 frames in one "
                                          r"and 5 in the other"):
        _check_same_videos("toy", runs, [a, _part([np.full((5, 3), 1 / 3)])])
    other_labels = _part([np.full((4, 3), 1 / 3)], targets=[np.array([0, 0, 1, 1])])
    with pytest.raises(ConfigError, match="different labels"):
        _check_same_videos("toy", runs, [a, other_labels])
    two = _part([np.full((4, 3), 1 / 3)] * 2, ids=("v0", "v1"))
    swapped = _part([np.full((4, 3), 1 / 3)] * 2, ids=("v1", "v0"))
    with pytest.raises(ConfigError, match="in another order"):
        _check_same_videos("toy", runs, [two, swapped])
    _check_same_videos("toy", runs, [a, _part([np.full((4, 3), 0.5)])])  # same videos: fine
