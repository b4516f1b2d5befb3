"""Audit of the extraction path for silent wrong numbers: each test guards a fix (real Zarr
stores, real backbone files, real videos written with OpenCV)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from actrec import registry
from actrec.errors import ConfigError, DataError
from actrec.io.features import FeatureStore

from test_backbones import small_resnet


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
