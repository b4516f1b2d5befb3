"""The DDLSTM's ``alpha_lr`` option (actrec.nn.alpha): the alphas get their own optimiser group
with that learning rate (kept in ratio by lr schedules), 0 freezes them at ``alpha_init``, unset
trains them with the weights as before; bad values are refused naming the option; the run
records the option."""

from __future__ import annotations

import json

import pytest
import torch
from test_train_eval import make_store

from actrec.errors import ConfigError
from actrec.nn.alpha import alpha_parameters
from actrec.registry import plugin_class
from actrec.runs import load_checkpoint
from actrec.train import TrainSpec, optimizer_groups, train_model


def _ddlstm(**options):
    cls = plugin_class("models", "ddlstm")
    cfg = cls.Config.from_options({"hidden": "4", "layers": "2", "max_len": "8", **options},
                                  owner="model 'ddlstm'")
    torch.manual_seed(0)
    return cls(cfg).build(6, 3)


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("stores")
    return (make_store(root / "a.zarr", dim=6, classes=3, n_train=6, n_test=3, seed=1),
            make_store(root / "b.zarr", dim=4, classes=2, n_train=6, n_test=3, seed=2))


def _train(stores, run_dir, **kw):
    base = {"model": "ddlstm", "d1": stores[0], "d2": stores[1], "history": 12,
            "iterations": 12, "mix": (4, 4), "lr": 0.05, "optimizer": "adam", "log_every": 1,
            "seed": 0, "model_options": {"hidden": "6", "layers": "2"}}
    base.update(kw)
    train_model(TrainSpec(**base), run_dir)
    lines = [json.loads(s) for s in (run_dir / "metrics.jsonl").read_text().splitlines()]
    alphas = [line["alphas"] for line in lines if "alphas" in line]
    return alphas, load_checkpoint(run_dir / "checkpoint.pt"), json.loads(
        (run_dir / "config.json").read_text())


def test_alpha_lr_values_are_checked():
    cfg = plugin_class("models", "ddlstm").Config
    assert cfg().alpha_lr is None
    assert cfg.from_options({"alpha_lr": "1e-4"}).alpha_lr == pytest.approx(1e-4)
    assert cfg.from_options({"alpha_lr": "0"}).alpha_lr == 0.0
    for bad in ("-0.1", "nan", "inf"):
        with pytest.raises(ConfigError, match="alpha_lr"):
            cfg.from_options({"alpha_lr": bad})
    with pytest.raises(ConfigError, match="alpha_lr"):  # not an option of the BNLSTM
        plugin_class("models", "bnlstm").Config.from_options({"alpha_lr": "0.1"})


def test_alphas_get_their_own_group_and_learning_rate():
    model = _ddlstm(alpha_lr="0.001")
    groups = optimizer_groups(model, 0.5, lr=0.1)
    alphas = alpha_parameters(model)
    assert len(alphas) == 2 and len(groups) == 3
    assert [id(p) for p in groups[2]["params"]] == [id(p) for p in alphas]
    assert groups[2]["lr"] == 0.001 and groups[2]["lr_scale"] == pytest.approx(0.01)
    assert groups[2]["weight_decay"] == 0.0
    others = {id(p) for g in groups[:2] for p in g["params"]}
    assert not others & {id(p) for p in alphas}
    assert len(others) + 2 == len(list(model.parameters()))
    # Behaviour: Adam's first step moves every parameter by its group's lr (gradient sign).
    opt = torch.optim.Adam(groups, lr=0.1)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = -torch.ones_like(p)
    opt.step()
    for n, p in model.named_parameters():
        step = 0.001 if n.endswith("alpha") else 0.1
        torch.testing.assert_close(p.detach() - before[n], torch.full_like(p, step),
                                   rtol=1e-4, atol=1e-6)


def test_default_keeps_alphas_with_the_weights():
    model = _ddlstm()
    groups = optimizer_groups(model, 0.0, lr=0.1)
    assert len(groups) == 2 and not any("lr_scale" in g for g in groups)
    keep = {id(p) for p in groups[1]["params"]}
    assert all(id(p) in keep for p in alpha_parameters(model))


@pytest.mark.slow
def test_frozen_alphas_stay_at_their_initial_value(stores, tmp_path):
    alphas, ckpt, config = _train(stores, tmp_path / "frozen",
                                  model_options={"hidden": "6", "layers": "2",
                                                 "alpha_init": "0.8", "alpha_lr": "0"})
    assert len(alphas) == 12
    for line in alphas:
        assert line == {"rnn.layers.0.alpha": [0.8, 0.8], "rnn.layers.1.alpha": [0.8, 0.8]}
    state = ckpt["model"]
    torch.testing.assert_close(state["rnn.layers.1.alpha"], torch.full((2,), 0.8))
    assert config["model"]["config"]["alpha_lr"] == 0.0
    # The weights did train (the run is not simply idle).
    moving, _, _ = _train(stores, tmp_path / "moving",
                          model_options={"hidden": "6", "layers": "2", "alpha_init": "0.8"})
    assert moving[-1]["rnn.layers.0.alpha"] != [0.8, 0.8]


@pytest.mark.slow
def test_alpha_lr_sets_the_pace_and_follows_the_schedule(stores, tmp_path):
    """Adam moves a parameter by at most about its lr per step: with alpha_lr 1e-4 the alphas
    move less than 12 steps x 1e-4 (x 1.01 for Adam's bias correction) from 0.75, while with
    the weights' lr 0.05 they move by far more. A cosine schedule scales the alpha group's lr
    in the same ratio as the weights'."""
    alphas, ckpt, config = _train(stores, tmp_path / "slow", lr_schedule="cosine",
                                  model_options={"hidden": "6", "layers": "2",
                                                 "alpha_lr": "0.0001"})
    assert config["model"]["config"]["alpha_lr"] == pytest.approx(1e-4)
    moved = max(abs(v - 0.75) for line in alphas for pair in line.values() for v in pair)
    assert 0 < moved <= 12 * 1e-4 * 1.01
    groups = ckpt["optimizer"]["param_groups"]
    assert len(groups) == 3
    assert groups[2]["lr"] == pytest.approx(groups[0]["lr"] * 1e-4 / 0.05)
    assert groups[0]["lr"] < 0.05  # the schedule did lower it
    fast, _, _ = _train(stores, tmp_path / "fast")
    assert max(abs(v - 0.75) for pair in fast[-1].values() for v in pair) > 10 * moved


@pytest.mark.slow
def test_no_standardize_trains_on_raw_features(stores, tmp_path):
    """`actrec train --no-standardize` records standardize false and saves identity scalers
    (evaluation then feeds raw features); the default fits each dataset's own statistics."""
    from click.testing import CliRunner

    from actrec.cli import cli

    def run(name, *flags):
        args = ["train", "ddlstm", "--d1", str(stores[0]), "--d2", str(stores[1]),
                "--history", "12", "--iterations", "2", "--mix", "4:4", "-o", "hidden=4",
                "-o", "layers=1", "--run-dir", str(tmp_path / name), "--json", *flags]
        result = CliRunner().invoke(cli, args, env={"ACTREC_HOME": str(tmp_path / "home")})
        assert result.exit_code == 0, result.output
        config = json.loads((tmp_path / name / "config.json").read_text())
        return config, load_checkpoint(tmp_path / name / "checkpoint.pt")["input_scalers"]

    config, scalers = run("raw", "--no-standardize")
    assert config["spec"]["standardize"] is False
    assert config["sources"]["standardize"] == "command line"
    for state, dim in zip(scalers, (6, 4)):
        assert torch.equal(torch.as_tensor(state["mean"]), torch.zeros(dim))
        assert torch.equal(torch.as_tensor(state["std"]), torch.ones(dim))
    config, scalers = run("std")
    assert config["spec"]["standardize"] is True
    assert all(float(torch.as_tensor(s["mean"]).abs().max()) > 0.1 for s in scalers)
    preset = tmp_path / "raw.toml"  # a preset (or config file) can say it too
    preset.write_text('description = "raw"\n[train]\nstandardize = false\n')
    config, scalers = run("preset", "--preset", str(preset))
    assert config["spec"]["standardize"] is False
    assert torch.equal(torch.as_tensor(scalers[0]["mean"]), torch.zeros(6))
