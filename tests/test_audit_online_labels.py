"""A result on features that look ahead is never presented as online: evaluated online with
``--allow-noncausal-features``, it is named, filed and shown as ``online-features-ahead-F``
(``-unknown`` for imported features whose reach nobody recorded), and so is a late fusion
with such a member. Before, it was ``eval-online.json`` under an "online evaluation" title."""

from __future__ import annotations

import json

from click.testing import CliRunner
from test_train_eval import make_store

from actrec.cli import cli
from actrec.evaluate import evaluate_run
from actrec.fusion import fuse_runs
from actrec.lookahead import evaluation_mode, features_reach
from actrec.train import TrainSpec, train_model


def _run(store, run_dir):
    train_model(TrainSpec(model="lstm", d1=store, model_options={"hidden": 4}, history=12,
                          iterations=2, mix=(4, 0), seed=0), run_dir)
    return run_dir


def test_mode_names_by_hand():
    assert evaluation_mode(False, 0, None) == "offline"
    assert evaluation_mode(True, 0) == "online"
    assert evaluation_mode(True, 2, 0) == "lookahead-2"
    assert evaluation_mode(True, 0, 10) == "online-features-ahead-10"
    assert evaluation_mode(True, 2, None) == "lookahead-2-features-ahead-unknown"
    assert features_reach([]) == 0
    assert features_reach([{"lookahead": 0, "causal": True},
                           {"lookahead": 10, "causal": False}]) == 10
    assert features_reach([{"lookahead": 3}, {"lookahead": -1, "causal": False}]) is None
    assert features_reach([{"lookahead": 0, "causal": False}]) is None  # marked, no reach


def test_unknown_lookahead_features_are_not_presented_as_online(tmp_path):
    store = make_store(tmp_path / "imported.zarr", dim=6, classes=3, n_train=3, n_test=2,
                       seed=3, lookahead=-1)  # as `actrec import` writes public features
    run = _run(store, tmp_path / "run")
    result = evaluate_run(run, online=True, allow_noncausal_features=True)
    assert result.protocol["mode"] == "online-features-ahead-unknown"
    assert result.protocol["frames_ahead"] is None
    assert not (run / "eval-online.json").exists()
    saved = json.loads((run / "eval-online-features-ahead-unknown.json").read_text())
    assert saved["protocol"]["noncausal_features_used"] is True
    out = CliRunner().invoke(cli, ["eval", str(run), "--allow-noncausal-features"])
    assert out.exit_code == 0, out.output
    assert "online-features-ahead-unknown evaluation" in out.output
    assert "online evaluation" not in out.output
    # A late fusion with such a member is not online either.
    causal = _run(make_store(tmp_path / "causal.zarr", dim=6, classes=3, n_train=3, n_test=2,
                             seed=3), tmp_path / "causal-run")
    fused = fuse_runs([causal, run], allow_noncausal_features=True)
    assert fused.protocol["mode"] == "online-features-ahead-unknown"
    assert fused.protocol["frames_ahead"] is None
