"""`actrec train` records where each model option came from: -o merges the config file, a
preset, the environment and the command line key by key, so one source for all of them
(what the run recorded before) was wrong for every key but the last layer's."""

from __future__ import annotations

import json

import numpy as np
from click.testing import CliRunner

from actrec.cli import cli
from actrec.io.features import FeatureStore


def test_each_model_option_records_its_own_source(tmp_path):
    ids = [f"v{i}" for i in range(4)]
    store = FeatureStore.open_or_create(
        tmp_path / "s.zarr", dataset="toy", split_scheme="default", classes=["a", "b"],
        splits={"1": {"train": ids[:3], "test": ids[3:]}}, extractor="toy",
        extractor_config={}, lookahead=0, dtype="float32")
    rng = np.random.default_rng(0)
    for vid in ids:
        store.write_video(vid, rng.normal(size=(20, 2)).astype(np.float32),
                          np.repeat([0, 1], 10), fps=15.0, source=None)
    config = tmp_path / "c.toml"
    config.write_text("[train]\nhistory = 8\n[train.options]\nhidden = 3\nlayers = 2\n"
                      "input_dropout = 0.1\n")
    preset = tmp_path / "p.toml"
    preset.write_text("[train]\nmix = \"2:0\"\n[train.options]\nlayers = 1\n")
    run = tmp_path / "run"
    out = CliRunner().invoke(
        cli, ["--config", str(config), "train", "lstm", "--d1", str(tmp_path / "s.zarr"),
              "--preset", str(preset), "-o", "hidden=5", "--iterations", "1",
              "--run-dir", str(run)],
        env={"ACTREC_HOME": str(tmp_path / "home"), "ACTREC_TRAIN_OPTIONS": "dropout=0.0"},
        auto_envvar_prefix="ACTREC")
    assert out.exit_code == 0, (out.output, out.exception)
    recorded = json.loads((run / "config.json").read_text())
    assert recorded["model"]["config"]["hidden"] == 5
    assert recorded["model"]["config"]["layers"] == 1
    assert recorded["model"]["config"]["input_dropout"] == 0.1
    sources = recorded["sources"]
    assert {k: v for k, v in sources.items() if k.startswith("options.")} == {
        "options.hidden": "command line", "options.layers": "preset p",
        "options.input_dropout": "config file", "options.dropout": "environment"}
