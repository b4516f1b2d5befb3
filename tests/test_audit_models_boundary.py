"""Audit of the DDLSTM boundary pre-stage's width against the paper (Sec. 5: 128 hidden units
per LSTM cell, the only width it gives for any of its LSTMs), and that a run trained with the
earlier 64-unit pre-stage is rebuilt and resumed with the width it recorded."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
from actrec import boundary
from actrec.io.features import FeatureStore
from actrec.runs import load_checkpoint
from actrec.train import TrainSpec, train_model


def _store(path):
    """A real Zarr store: 6 videos of 48 frames, 3 classes in runs, 4-dim features."""
    rng = np.random.default_rng(0)
    ids = [f"v{i}" for i in range(6)]
    store = FeatureStore.open_or_create(
        path, dataset="toyb", split_scheme="default", classes=["a", "b", "c"],
        splits={"1": {"train": ids[:4], "test": ids[4:]}}, extractor="toy",
        extractor_config={"seed": 0}, lookahead=0, dtype="float32")
    centres = rng.normal(size=(3, 4))
    for vid in ids:
        y = np.repeat(rng.integers(0, 3, size=8), rng.integers(4, 9, size=8))[:48]
        x = centres[y] + 0.3 * rng.normal(size=(len(y), 4))
        store.write_video(vid, x.astype(np.float32), y, fps=15.0, source=None)
    return path


def test_a_fresh_pre_stage_has_128_units_and_records_them(tmp_path):
    store = _store(tmp_path / "s.zarr")
    spec = TrainSpec(model="lstm", d1=store, model_options={"hidden": 8}, history=16,
                     iterations=2, mix=(2, 0), lr=0.01, optimizer="adam", seed=1,
                     boundary=True, boundary_iters=1)
    train_model(spec, tmp_path / "run")
    ckpt = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert ckpt["boundary"]["hidden"] == 128
    assert tuple(ckpt["model"]["pre.lstm.weight_hh_l0"].shape) == (4 * 128, 128)


def test_a_run_recorded_with_64_units_is_rebuilt_and_resumed_with_64():
    layout = SimpleNamespace(width=5)
    from actrec.nn.models import TorchRNNClassifier

    main = TorchRNNClassifier(7, 3, 4)  # the main model (features + the pre-stage's 2 outputs)
    old = {"hidden": 64, "sigma": 5.0, "iterations": 3, "outputs": ["mu", "log sigma"]}
    assert boundary.rebuild(old, layout, main).pre.lstm.hidden_size == 64
    assert boundary.rebuild({**old, "hidden": 128}, layout, main).pre.lstm.hidden_size == 128
    spec = TrainSpec(model="lstm", d1="x.zarr", history=16, iterations=4, boundary=True)
    data = SimpleNamespace(layout=layout)
    resumed = boundary.attach(spec, data, main, "cpu", None, fresh=False, recorded=old)
    assert resumed.pre.lstm.hidden_size == 64 and resumed.boundary_record["hidden"] == 64
    # A checkpoint from before the record existed: its pre-stage had 64 units, and says so.
    legacy = boundary.attach(spec, data, main, "cpu", None, fresh=False, recorded=None)
    assert legacy.pre.lstm.hidden_size == 64 and legacy.boundary_record["hidden"] == 64
