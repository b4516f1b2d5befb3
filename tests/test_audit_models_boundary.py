"""Audit of the DDLSTM boundary pre-stage's width against the paper (Sec. 5: 128 hidden units
per LSTM cell, the only width it gives for any of its LSTMs), and that a run trained with the
earlier 64-unit pre-stage is rebuilt and resumed with the width it recorded; the wrapper passes
the main model's optimiser settings (the DDLSTM's ``alpha_lr``) on."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

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


def test_the_pre_stage_keeps_the_main_models_optimiser_settings():
    """``-o alpha_lr`` gives the DDLSTM's alphas their own learning rate through
    ``optimizer_overrides``; behind the boundary pre-stage the wrapper must pass it on, or the
    alphas silently train at the weights' learning rate."""
    from actrec.nn.models import NormLSTMClassifier
    from actrec.train import optimizer_groups

    main = NormLSTMClassifier(5 + boundary.OUTPUTS, 3, hidden=4, layers=2, max_len=8,
                              alpha_lr=1e-4)
    wrapped = boundary.rebuild({"hidden": 8}, SimpleNamespace(width=5), main)
    (alphas, settings), = wrapped.optimizer_overrides()
    assert settings == {"lr": 1e-4}
    assert [id(p) for p in alphas] == [id(layer.alpha) for layer in main.rnn.layers]
    groups = optimizer_groups(wrapped, 0.05, lr=0.01)
    (own,) = [g for g in groups if "lr" in g]
    assert own["lr"] == 1e-4 and own["lr_scale"] == pytest.approx(0.01)
    assert own["weight_decay"] == 0.0
    trained = {id(p) for g in groups for p in g["params"]}
    assert not any(id(p) in trained for p in wrapped.pre.parameters())  # frozen
