"""Feature standardisation: values by hand, checkpoint round trip."""

import numpy as np
import pytest
import torch

from actrec.data.scaling import FeatureScaler


def test_fit_by_hand():
    a = np.array([[0.0, 5.0], [2.0, 5.0]])
    b = np.array([[4.0, 5.0]])
    s = FeatureScaler.fit([a, b])
    # column 0: mean 2, population std sqrt((4 + 0 + 4) / 3); column 1 constant: only centred
    assert s.mean.tolist() == [2.0, 5.0]
    assert s.std[0] == pytest.approx(np.sqrt(8 / 3))
    assert s.std[1] == 1.0
    assert s(np.array([[2.0, 6.0]])).tolist() == [[0.0, 1.0]]


def test_state_round_trip_is_weights_only_safe(tmp_path):
    s = FeatureScaler.fit([np.random.default_rng(0).normal(3, 2, (50, 4))])
    torch.save(s.to_state(), tmp_path / "s.pt")
    back = FeatureScaler.from_state(torch.load(tmp_path / "s.pt", weights_only=True))
    assert np.array_equal(back.mean, s.mean) and np.array_equal(back.std, s.std)


def test_fit_rejects_no_frames():
    with pytest.raises(ValueError):
        FeatureScaler.fit([])
    with pytest.raises(ValueError):
        FeatureScaler.fit([np.ones((0, 2))])
