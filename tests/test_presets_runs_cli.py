"""Presets (files, precedence, recording), `actrec train` protocol options and `actrec runs`,
through the real command line on small real Zarr stores."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from actrec.cli import cli
from actrec.errors import ConfigError
from actrec.io.features import FeatureStore
from actrec.presets import available, load_preset


def make_store(path, seed, classes=3, dim=None):
    """6 videos, two per participant (P0, P1, P2); split '1' trains on P0 and P1's."""
    rng = np.random.default_rng(seed)
    dim = dim or classes
    ids = [f"v{i}" for i in range(6)]
    store = FeatureStore.open_or_create(
        path, dataset=f"toy{seed}", split_scheme="default",
        classes=[f"c{k}" for k in range(classes)],
        splits={"1": {"train": ids[:4], "test": ids[4:]}}, extractor="toy",
        extractor_config={"seed": seed}, lookahead=0, dtype="float32")
    centres = rng.normal(size=(classes, dim))
    for i, vid in enumerate(ids):
        y = np.repeat(rng.integers(0, classes, size=10), 5)
        x = centres[y] + 0.3 * rng.normal(size=(len(y), dim))
        store.write_video(vid, x.astype(np.float32), y, fps=15.0, source=None,
                          extra={"participant": f"P{i // 2}"})
    return path


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("stores")
    return make_store(root / "a.zarr", 1), make_store(root / "b.zarr", 2, classes=5)


def invoke(args, home):
    result = CliRunner().invoke(cli, args, env={"ACTREC_HOME": str(home)},
                                catch_exceptions=True)
    return result


def test_shipped_presets_parse_and_hold_the_papers_numbers():
    assert {"ddlstm", "recassist", "sign"} <= set(available())
    dd = load_preset("ddlstm")
    assert dd.train["history"] == 200 and dd.train["iterations"] == 50000
    assert dd.train["mix"] == "64:64" and dd.train["lr"] == 0.01 and dd.train["momentum"] == 0.9
    assert dd.train["options"] == {"hidden": 128, "layers": 3}
    ra = load_preset("recassist")
    assert ra.train["history"] == 300 and ra.train["lr"] == 0.001 and ra.train["mix"] == "80:48"
    with pytest.raises(ConfigError, match="no preset 'ddlstn'"):
        load_preset("ddlstn")
    sign = load_preset("sign")  # Borg & Camilleri Sec. 5.1: 20-frame segments, 5 folds
    assert sign.train["history"] == 20 and sign.train["val-fraction"] == 0.2
    assert sign.train["lr-schedule"] == "sign" and sign.train["mix"] == "32:32"


@pytest.mark.parametrize("name", available())
def test_every_shipped_preset_is_accepted_by_actrec_train(name, tmp_path):
    """Every key of a shipped preset is an option `actrec train` has, of the right type (the
    eager --preset callback validates it before --help exits)."""
    out = invoke(["train", "lstm", "--preset", name, "--help"], tmp_path)
    assert out.exit_code == 0, (out.output, out.exception)
    bad = tmp_path / "bad.toml"
    bad.write_text("[train]\nhistory = \"long\"\n")
    refused = invoke(["train", "lstm", "--preset", str(bad), "--help"], tmp_path)
    assert refused.exit_code != 0 and "history" in str(refused.exception or refused.output)


def test_preset_file_values_are_overridden_by_flags_and_recorded(stores, tmp_path):
    a, b = stores
    preset = tmp_path / "mine.toml"
    preset.write_text('description = "mine"\n[train]\nhistory = 12\nlr = 0.05\n'
                      'labels = "merged"\nval-fraction = 0.4\n[train.options]\nhidden = 6\n'
                      'layers = 2\n')
    run_dir = tmp_path / "run"
    out = invoke(["train", "lstm", "--d1", str(a), "--d2", str(b), "--preset", str(preset),
                  "--lr", "0.02", "-o", "hidden=5", "--iterations", "3", "--mix", "2:2",
                  "--run-dir", str(run_dir), "--json"], tmp_path)
    assert out.exit_code == 0, out.output
    config = json.loads((run_dir / "config.json").read_text())
    assert config["spec"]["history"] == 12 and config["sources"]["history"] == "preset mine"
    assert config["spec"]["lr"] == 0.02 and config["sources"]["lr"] == "command line"
    assert config["spec"]["labels"] == "merged" and config["spec"]["preset"] == "mine"
    assert config["model"]["config"]["hidden"] == 5 and config["model"]["config"]["layers"] == 2
    assert config["preset"]["values"]["lr"] == 0.05 and len(config["preset"]["sha256"]) == 64
    assert config["validation"][0]["val_videos"]  # carved by participant

    bad = tmp_path / "bad.toml"
    bad.write_text("[train]\nhistroy = 3\n")
    refused = invoke(["train", "lstm", "--d1", str(a), "--preset", str(bad)], tmp_path)
    assert refused.exit_code != 0 and "histroy" in str(refused.exception or refused.output)


def test_protocol_options_reach_the_run_and_runs_lists_it(stores, tmp_path):
    a, b = stores
    run_dir = tmp_path / "runs" / "t"
    out = invoke(["train", "lstm", "--data", f"{a},{b}", "--protocol", "transfer",
                  "--pretrain-iters", "3", "--finetune-iters", "2", "--mix", "2:2",
                  "--history", "12", "-o", "hidden=4", "--labels", "random", "--val-fraction",
                  "0.4", "--val-every", "1", "--run-dir", str(run_dir), "--json"], tmp_path)
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["iterations"] == 5
    config = json.loads((run_dir / "config.json").read_text())
    assert config["labels"]["score_inputs"] is True  # 3 classes, 3 feature columns
    assert [p["name"] for p in config["phases"]] == ["pretrain", "finetune"]
    ev = invoke(["eval", str(run_dir), "--json"], tmp_path)
    assert ev.exit_code == 0, ev.output
    listed = invoke(["runs", "--json"], tmp_path)
    assert listed.exit_code == 0, listed.output
    (row,) = json.loads(listed.output)
    assert row["protocol"] == "transfer" and row["labels"] == "random" and row["iterations"] == 5
    assert row["best_val"] is not None and set(row["evaluations"]) == {"online"}
    table = invoke(["runs"], tmp_path)
    assert "transfer" in table.output and "random" in table.output
    both = invoke(["train", "lstm", "--d1", str(a), "--data", f"{a},{b}"], tmp_path)
    assert both.exit_code != 0 and "not both" in both.output


def test_a_preset_sits_between_the_config_file_and_the_environment(stores, tmp_path):
    a, _ = stores
    preset = tmp_path / "p.toml"
    preset.write_text("[train]\nhistory = 10\nseed = 5\n[train.options]\nlayers = 2\n")
    config = tmp_path / "c.toml"
    config.write_text("[train]\nhistory = 20\nlr = 0.07\n[train.options]\nhidden = 3\n")
    run_dir = tmp_path / "run"
    result = CliRunner().invoke(
        cli, ["--config", str(config), "train", "lstm", "--d1", str(a), "--preset", str(preset),
              "--iterations", "1", "--mix", "2:0", "--run-dir", str(run_dir), "--json"],
        env={"ACTREC_HOME": str(tmp_path), "ACTREC_TRAIN_SEED": "9"},
        auto_envvar_prefix="ACTREC")
    assert result.exit_code == 0, result.output
    rec = json.loads((run_dir / "config.json").read_text())
    assert rec["spec"]["history"] == 10 and rec["sources"]["history"] == "preset p"  # > config
    assert rec["spec"]["lr"] == 0.07 and rec["sources"]["lr"] == "config file"
    assert rec["spec"]["seed"] == 9 and rec["sources"]["seed"] == "environment"  # env > preset
    assert rec["model"]["config"]["hidden"] == 3 and rec["model"]["config"]["layers"] == 2


def test_runs_lists_a_damaged_run_with_its_problem(tmp_path):
    from actrec.runs import summarize_runs

    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{not json")
    (tmp_path / "empty").mkdir()  # no config.json: not a run
    (row,) = summarize_runs(tmp_path)
    assert row["run"] == "broken" and "invalid JSON" in row["problem"]
    shown = CliRunner().invoke(cli, ["runs", "--root", str(tmp_path)])
    assert shown.exit_code == 0 and "broken" in shown.output


def test_iterations_on_the_command_line_override_a_presets_epochs(stores, tmp_path):
    """Command line > preset also between the two ways of giving the length: a preset's
    ``epochs`` must not silently replace an explicit ``--iterations`` (and vice versa)."""
    a, _ = stores
    preset = tmp_path / "p.toml"
    preset.write_text("[train]\nepochs = 3\nhistory = 10\nmix = \"2:0\"\n"
                      "[train.options]\nhidden = 3\n")
    run_dir = tmp_path / "run"
    out = invoke(["train", "lstm", "--d1", str(a), "--preset", str(preset), "--iterations", "2",
                  "--run-dir", str(run_dir), "--json"], tmp_path)
    assert out.exit_code == 0, out.output
    rec = json.loads((run_dir / "config.json").read_text())
    assert rec["spec"]["iterations"] == 2 and rec["spec"]["epochs"] is None
    assert json.loads(out.output)["iterations"] == 2


def test_multi_random_on_score_inputs_trains_and_evaluates(stores, tmp_path):
    a, b = stores  # 3 classes, 3 feature columns each: per-class scores
    run_dir = tmp_path / "runs" / "m"
    out = invoke(["train", "lstm", "--d1", str(a), "--d2", str(b), "--labels", "multi-random",
                  "--label-maps", "3", "--mix", "2:2", "--iterations", "4", "--history", "12",
                  "-o", "hidden=4", "--run-dir", str(run_dir), "--json"], tmp_path)
    assert out.exit_code == 0, out.output
    config = json.loads((run_dir / "config.json").read_text())
    assert config["labels"]["arrangement"] == "multi-random" and config["labels"]["score_inputs"]
    ev = invoke(["eval", str(run_dir), "--json"], tmp_path)
    assert ev.exit_code == 0, ev.output
    assert json.loads(ev.output)["protocol"]["labels"] == "multi-random"


def test_runs_of_a_folder_that_does_not_exist_is_an_error(tmp_path):
    out = invoke(["runs", "--root", str(tmp_path / "nowhere")], tmp_path)
    assert out.exit_code == 2 and "does not exist" in out.output


def test_runs_table_keeps_run_names_whole_in_an_80_column_terminal():
    """Run names are what users copy into `actrec eval RUN`: never folded across lines."""
    from rich.console import Console

    from actrec.cli.runs_cmd import render_runs

    row = {"run": "20261201-172623-lstm", "model": "ddlstm",
           "data": ["synthetic:kitchen=a", "synthetic:kitchen=b"], "protocol": "transfer",
           "labels": "multi-random", "iterations": 50000, "best_val": 0.8125,
           "selected_on_test": False,
           "evaluations": {"online": {"a": 0.9927, "b": 0.5}, "lookahead-12": {"a": 0.99}}}
    console = Console(width=80, record=True, color_system=None)
    console.print(render_runs([row, {**row, "run": "20261201-172623-ddlstm-split1"}]))
    text = console.export_text()
    assert "20261201-172623-lstm " in text and "20261201-172623-ddlstm-split1" in text
    assert max(map(len, text.splitlines())) <= 80
