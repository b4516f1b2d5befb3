"""The online training recipe through the command line: the ``miniroad`` preset, the new
options recorded with the run, AdamW's decoupled weight decay, and clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from actrec.cli import cli
from actrec.io.features import FeatureStore
from actrec.presets import load_preset
from actrec.train import TrainSpec, make_optimizer


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("recipe") / "a.zarr"
    rng = np.random.default_rng(0)
    ids = [f"v{i}" for i in range(5)]
    s = FeatureStore.open_or_create(
        path, dataset="toy", split_scheme="default", classes=["a", "b", "c"],
        splits={"1": {"train": ids[:4], "test": ids[4:]}}, extractor="toy",
        extractor_config={}, lookahead=0, dtype="float32")
    centres = rng.normal(size=(3, 4))
    for vid in ids:
        y = np.repeat(rng.integers(0, 3, size=8), 5)
        s.write_video(vid, (centres[y] + 0.3 * rng.normal(size=(40, 4))).astype(np.float32), y,
                      fps=15.0, source=None)
    return path


def invoke(args, home):
    return CliRunner().invoke(cli, args, env={"ACTREC_HOME": str(home)}, catch_exceptions=True)


def test_the_miniroad_preset_holds_the_published_recipe():
    p = load_preset("miniroad")
    t = p.train
    assert (t["history"], t["windows"], t["loss-frames"], t["epochs"]) == (128, "stride:4",
                                                                          "last", 10)
    assert (t["optimizer"], t["lr"], t["weight-decay"], t["mix"]) == ("adamw", 1e-4, 0.05,
                                                                     "16:16")
    assert t["options"] == {"hidden": 1024, "embed": 2048, "layers": 1, "dropout": 0.2}


def test_train_with_the_miniroad_preset_records_the_recipe(store, tmp_path):
    run = tmp_path / "run"
    out = invoke(["train", "miniroad", "--d1", str(store), "--preset", "miniroad",
                  "--history", "10", "--epochs", "1", "-o", "hidden=6", "-o", "embed=5",
                  "--run-dir", str(run), "--json"], tmp_path)
    assert out.exit_code == 0, out.output
    config = json.loads((run / "config.json").read_text())
    spec = config["spec"]
    assert (spec["windows"], spec["loss_frames"], spec["optimizer"]) == ("stride:4", "last",
                                                                         "adamw")
    # one epoch: 160 training frames, window ends 4 apart -> 40 windows, batches of 16 -> 3
    assert spec["epochs"] == 1 and spec["iterations"] == 3
    assert config["sources"]["epochs"] == "command line"
    assert "last real, labelled frame" in config["protocol"]["loss"]
    assert config["model"]["config"] == {"hidden": 6, "embed": 5, "layers": 1, "dropout": 0.2,
                                         "input_projection": False}
    ev = invoke(["eval", str(run), "--online", "--json"], tmp_path)
    assert ev.exit_code == 0, ev.output


def test_iterations_and_epochs_together_and_bad_values_are_clear_errors(store, tmp_path):
    both = invoke(["train", "lstm", "--d1", str(store), "--iterations", "5", "--epochs", "2"],
                  tmp_path)
    assert both.exit_code != 0 and "--iterations or --epochs, not both" in both.output
    for flag, value, words in (("--loss-frames", "after:x", "after:K"),
                               ("--windows", "stride:0", "stride:S"),
                               ("--loss-frames", "after:30", "burn-in K=30")):
        out = invoke(["train", "lstm", "--d1", str(store), "--history", "30", flag, value,
                      "--run-dir", str(tmp_path / "never")], tmp_path)
        assert out.exit_code != 0
        message = out.output + str(out.exception or "")
        assert words in message and "Traceback" not in message
        assert not (tmp_path / "never").exists()


def test_adamw_decays_weights_decoupled_and_spares_norm_parameters(tmp_path):
    """With zero gradients AdamW's step is pure decay: w <- w (1 - lr wd) for weight matrices,
    nothing for biases and LayerNorm parameters (Adam's L2 would move nothing at all)."""
    from actrec.registry import create

    model = create("models", "lstm", {"hidden": 4, "embed": 3}).build(5, 2)
    spec = TrainSpec(model="lstm", d1=tmp_path, optimizer="adamw", lr=0.1, weight_decay=0.5)
    opt = make_optimizer(spec, model)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    for name, p in model.named_parameters():
        factor = 1 - 0.1 * 0.5 if p.dim() >= 2 else 1.0
        torch.testing.assert_close(p.detach(), before[name] * factor, msg=name)
    assert "embedding.1.weight" in before  # the LayerNorm gain is among the spared


def test_a_run_resumes_with_its_own_settings_where_the_command_leaves_defaults(store, tmp_path):
    # Started with non-default settings and stopped at 4 of 8 iterations; the resume gives
    # only the model, the data and the run folder: the recorded recipe applies, not today's
    # defaults (which would be refused as a different spec, or train up to 2000 iterations).
    run = tmp_path / "run"
    first = ["train", "lstm", "--d1", str(store), "--history", "10", "--iterations", "8",
             "--windows", "random", "--loss-frames", "all", "--optimizer", "adam", "--lr",
             "0.01", "--weight-decay", "0", "--mix", "4:0", "-o", "hidden=6",
             "--checkpoint-every", "4", "--run-dir", str(run), "--json"]
    whole = tmp_path / "whole"
    out = invoke([a if a != str(run) else str(whole) for a in first], tmp_path)
    assert out.exit_code == 0, out.output
    stopped = [a if a != "8" else "4" for a in first]
    assert invoke(stopped, tmp_path).exit_code == 0
    out = invoke(["train", "lstm", "--d1", str(store), "--run-dir", str(run), "--json"], tmp_path)
    assert out.exit_code == 0, out.output
    result = json.loads(out.output)  # the stopped run asked for 4: nothing is left to do
    assert (result["iterations"], result["resumed_from"]) == (4, 4)
    spec = json.loads((run / "config.json").read_text())["spec"]
    assert (spec["history"], spec["optimizer"], spec["windows"]) == (10, "adam", "random")
    # given explicitly, a value still wins: 8 iterations now, the same as the whole run
    out = invoke(["train", "lstm", "--d1", str(store), "--run-dir", str(run), "--iterations",
                  "8", "--json"], tmp_path)
    assert out.exit_code == 0, out.output
    a = torch.load(run / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(whole / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    # an explicit value that differs from the run is still refused
    out = invoke(["train", "lstm", "--d1", str(store), "--run-dir", str(run), "--history",
                  "12"], tmp_path)
    assert out.exit_code != 0 and "history: 10 -> 12" in str(out.exception)


def test_bad_recipe_values_name_the_command_line_options(store, tmp_path):
    """The training spec's errors name its fields (right from Python); the command names the
    options the user typed: --windows, --history, --val-fraction, --loss-frames."""
    args = ["train", "lstm", "--d1", str(store), "--windows", "foo", "--history", "0",
            "--val-fraction", "2", "--loss-frames", "after:x", "--run-dir", str(tmp_path / "r")]
    result = CliRunner().invoke(cli, args, env={"ACTREC_HOME": str(tmp_path)})
    message = str(result.exception)
    assert message.startswith("invalid training spec: ")
    assert "--history must be > 0, got 0" in message
    assert "--val-fraction must be in [0, 1), got 2.0" in message
    assert "--windows: expected 'random', 'uniform' or 'stride:S'" in message
    assert "--loss-frames" in message and "; history" not in message
    assert not (tmp_path / "r").exists()
