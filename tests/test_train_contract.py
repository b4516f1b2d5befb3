"""What training and evaluation promise beyond learning: the model contract is checked when a
model is built, the history ties the per-timestep statistics, stores are not silently reused,
weight decay spares normalisation parameters, training accuracy follows evaluation's rule,
results of different settings are kept, and the segment metrics leave the background out."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from actrec.data.labels import LabelSpace
from actrec.errors import ConfigError, DataError
from actrec.evaluate import evaluate_run, score_dataset
from actrec.runs import latest_run, load_checkpoint
from actrec.train import TrainSpec, frame_hits, optimizer_groups, train_model

from test_registry import write_dist
from test_train_eval import make_store


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("stores")
    return {
        "a": make_store(root / "a.zarr", dim=6, classes=3, n_train=6, n_test=3, seed=1, short=1),
        "b": make_store(root / "b.zarr", dim=4, classes=2, n_train=6, n_test=3, seed=2),
    }


def spec(d1, **kw):
    base = dict(model="lstm", d1=d1, model_options={"hidden": 8}, history=16, iterations=4,
                mix=(4, 0), lr=0.02, optimizer="adam", log_every=1, seed=0)
    base.update(kw)
    return TrainSpec(**base)


# --------------------------------------------------------------------------------------------
# Third-party model plugins that break the contract, registered through real entry points

BAD_MODELS = '''
from dataclasses import dataclass

import torch

from actrec.nn.base import SequenceModel
from actrec.plugin_api import PluginConfig, TemporalModel


class NoStep(SequenceModel):
    """Declared causal, but cannot step: trainable, never evaluable online."""

    def __init__(self, d, k):
        super().__init__()
        self.lin = torch.nn.Linear(d, k)

    def forward(self, x, domain, mask=None):
        return self.lin(x)


class NoMask(NoStep):
    def forward(self, x, domain):
        return self.lin(x)


@dataclass(frozen=True)
class Cfg(PluginConfig):
    width: int = 4


class StepLess(TemporalModel):
    name = "stepless"
    Config = Cfg

    def build(self, input_dim, num_classes):
        return NoStep(input_dim, num_classes)


class MaskLess(TemporalModel):
    name = "maskless"
    Config = Cfg
    causal = False

    def build(self, input_dim, num_classes):
        return NoMask(input_dim, num_classes)


class Exploding(TemporalModel):
    name = "exploding-build"
    Config = Cfg

    def build(self, input_dim, num_classes):
        return {}["no such key"]
'''


@pytest.fixture
def bad_models(tmp_path, monkeypatch):
    site = tmp_path / "site"
    write_dist(site, "bad-models", """\
        [actrec.models]
        stepless = bad_models_plugin:StepLess
        maskless = bad_models_plugin:MaskLess
        exploding-build = bad_models_plugin:Exploding
        """)
    (site / "bad_models_plugin.py").write_text(BAD_MODELS)
    monkeypatch.syspath_prepend(str(site))
    return site


@pytest.mark.parametrize("model, message", [
    ("stepless", r"'stepless' is declared causal but NoStep does not implement init_state and "
                 r"step\(\)"),
    ("maskless", r"'maskless': NoMask.forward must accept forward\(x, domain, mask=None\)"),
    ("exploding-build", r"model plugin 'exploding-build' failed to build its module "
                        r"\(KeyError: 'no such key'\)"),
])
def test_a_model_breaking_the_contract_is_refused_before_anything_is_written(
        bad_models, stores, tmp_path, model, message):
    run = tmp_path / "fresh"
    run.mkdir()  # as `actrec train` makes it before training
    with pytest.raises(ConfigError, match=message):
        train_model(spec(stores["a"], model=model, model_options={}), run)
    assert not run.exists()  # the empty folder made for the run is gone again
    keep = tmp_path / "keep"
    keep.mkdir()
    (keep / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError):
        train_model(spec(stores["a"], model=model, model_options={}), keep)
    assert [p.name for p in keep.iterdir()] == ["notes.txt"]  # a user's folder is left alone


def test_cli_reports_a_broken_build_without_a_traceback(bad_models, stores, tmp_path):
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(bad_models), "ACTREC_HOME": str(tmp_path / "home")}
    proc = subprocess.run(
        [sys.executable, "-m", "actrec", "train", "exploding-build", "--d1", str(stores["a"]),
         "--iterations", "1", "--history", "8"],
        capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode != 0
    assert "failed to build its module" in proc.stderr and "Traceback" not in proc.stderr
    runs = tmp_path / "home" / "runs"
    assert not runs.exists() or not any(runs.iterdir())  # no empty run folder left behind


# --------------------------------------------------------------------------------------------
# The history ties the per-timestep statistics


def test_max_len_follows_the_history_and_a_shorter_one_is_refused(stores, tmp_path):
    opts = {"hidden": 4, "layers": 1}
    run = tmp_path / "tied"
    train_model(spec(stores["a"], model="ddlstm", model_options=opts, history=12,
                     iterations=2), run)
    ckpt = load_checkpoint(run / "checkpoint.pt")
    assert ckpt["model_config"]["max_len"] == 12
    slots = {k: v.shape for k, v in ckpt["model"].items() if k.endswith("running_mean")}
    assert slots and all(shape[-2] == 12 for shape in slots.values())  # [.., max_len, C]
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["config"]["max_len"] == 12
    evaluate_run(run, online=True)  # rebuilt from the recorded config: the weights fit
    with pytest.raises(ConfigError, match=r"max_len=8 is shorter than the training history "
                                          r"\(12 frames\)"):
        train_model(spec(stores["a"], model="ddlstm", model_options={**opts, "max_len": 8},
                         history=12), tmp_path / "short")
    # A longer max_len is allowed (its extra slots are never used: see tests/test_nn_ddbn.py).
    train_model(spec(stores["a"], model="bnlstm", model_options={**opts, "max_len": 20},
                     history=12, iterations=1), tmp_path / "long")


# --------------------------------------------------------------------------------------------
# Stores


def test_the_same_store_twice_is_an_error_unless_allowed(stores, tmp_path):
    with pytest.raises(ConfigError, match="--d1 and --d2 are the same feature store"):
        train_model(spec(stores["a"], d2=stores["a"], mix=(2, 2)), tmp_path / "same")
    assert not (tmp_path / "same").exists()
    # The same folder reached by another path is the same store too.
    other_path = stores["a"].parent / "." / stores["a"].name
    with pytest.raises(ConfigError, match="same feature store"):
        train_model(spec(stores["a"], d2=other_path, mix=(2, 2)), tmp_path / "same2")
    result = train_model(spec(stores["a"], d2=stores["a"], mix=(2, 2), allow_same_store=True,
                              iterations=1), tmp_path / "allowed")
    assert result.iterations == 1


# --------------------------------------------------------------------------------------------
# Optimiser and logged accuracy


def test_weight_decay_spares_biases_norm_parameters_and_alphas(stores, tmp_path):
    from actrec.registry import plugin_class

    cls = plugin_class("models", "ddlstm")
    model = cls(cls.Config(hidden=4, layers=1, max_len=8)).build(6, 3)
    groups = optimizer_groups(model, 0.5)
    decayed = {id(p) for p in groups[0]["params"]}
    names = {n for n, p in model.named_parameters() if id(p) in decayed}
    assert groups[0]["weight_decay"] == 0.5 and groups[1]["weight_decay"] == 0.0
    assert names == {"rnn.layers.0.weight_ih", "rnn.layers.0.weight_hh", "head.weight"}
    # Behaviour: one SGD step with zero gradients shrinks only the matrices.
    opt = torch.optim.SGD(groups, lr=0.1)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    for n, p in model.named_parameters():
        if n in names:
            torch.testing.assert_close(p.detach(), before[n] * (1 - 0.1 * 0.5))
        else:
            assert torch.equal(p.detach(), before[n]), n


def test_training_accuracy_uses_the_evaluation_rule():
    """Two datasets (3 + 2 classes). Frame logits whose global argmax falls in the other
    dataset's block but whose own-block argmax is right count as right under 'block' and as
    wrong under 'full'; unlabelled frames count for nothing."""
    from types import SimpleNamespace

    labels = LabelSpace((("a", "b", "c"), ("x", "y")))
    # T = 2 frames, N = 2 rows: row 0 from D1, row 1 from D2. Global targets (D2 offset 3).
    y = torch.tensor([[1, 4], [2, -1]])
    logits = torch.full((2, 2, 5), -5.0)
    logits[0, 0, 1], logits[0, 0, 3] = 1.0, 9.0  # D1 frame: own block says b (right), global x
    logits[1, 0, 0] = 2.0  # D1 frame: a, target c -> wrong either way
    logits[0, 1, 4] = 3.0  # D2 frame: y (right) in both rules
    logits[1, 1, 0] = 9.0  # unlabelled
    batch = SimpleNamespace(y=y, domain=torch.tensor([0, 1]))
    assert frame_hits(logits, batch, labels, "block") == (2, 3)
    assert frame_hits(logits, batch, labels, "full") == (1, 3)


# --------------------------------------------------------------------------------------------
# Results


def test_eval_without_a_run_evaluates_the_latest(stores, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from actrec.cli import cli

    home = tmp_path / "home"
    monkeypatch.setenv("ACTREC_HOME", str(home))
    with pytest.raises(DataError, match="no trained run"):
        latest_run()
    old, new = home / "runs" / "20260101-000000-lstm", home / "runs" / "20260102-000000-lstm"
    train_model(spec(stores["a"], iterations=1), old)
    train_model(spec(stores["a"], iterations=2), new)
    assert latest_run() == new
    out = CliRunner().invoke(cli, ["eval", "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["run_dir"] == str(new)
    assert (new / "eval-online.json").exists() and not list(old.glob("eval-*.json"))


def test_segment_scores_leave_the_background_out_by_hand():
    """Classes: 0 = background, 1, 2. Target  0 0 1 1 0 2 2 2; prediction 0 1 1 1 0 2 2 0.
    Without background: target segments [1, 2], predicted [1, 2] -> edit 1; with it: target
    [0, 1, 0, 2], predicted [0, 1, 0, 2, 0] -> Levenshtein 1 over 5 -> edit 0.8.
    F1@50 without background: 1 (frames 1-3 vs 2-3: IoU 2/3; 5-6 vs 5-7: IoU 2/3) -> tp 2."""
    y = np.array([0, 0, 1, 1, 0, 2, 2, 2])
    p = np.array([0, 1, 1, 1, 0, 2, 2, 0])
    without = score_dataset("d", "s", "1", ["v"], [p], [y], ("bg", "b", "c"), background=(0,))
    with_bg = score_dataset("d", "s", "1", ["v"], [p], [y], ("bg", "b", "c"))
    assert without.edit == pytest.approx(1.0)
    assert with_bg.edit == pytest.approx(0.8)
    assert without.f1["50"] == pytest.approx(1.0)
    assert without.segment_background == ("bg",) and with_bg.segment_background == ()
    # With background: predicted segments 0[0], 1[1-3], 0[4], 2[5-6], 0[7]; target 0[0-1],
    # 1[2-3], 0[4], 2[5-7]. IoU: 0[0] vs 0[0-1] 1/2 -> tp; 1 2/4 -> tp; 0[4] 1 -> tp; 2 2/3 ->
    # tp; 0[7] no match -> fp. P = 4/5, R = 4/4, F1 = 8/9.
    assert with_bg.f1["50"] == pytest.approx(8 / 9)


def test_bad_run_folders_and_devices_are_one_message_and_leave_nothing(stores, tmp_path):
    import os
    import subprocess
    import sys

    env = {**os.environ, "ACTREC_HOME": str(tmp_path / "home")}

    def train(*args):
        return subprocess.run([sys.executable, "-m", "actrec", "train", "lstm", "--d1",
                               str(stores["a"]), "--iterations", "1", "--history", "8", *args],
                              capture_output=True, text=True, env=env, timeout=300)

    a_file = tmp_path / "file.txt"
    a_file.write_text("mine")
    for args, message in ((["--run-dir", str(a_file)], "exists and is not a folder"),
                          (["--run-dir", str(a_file / "sub")], "cannot create run folder"),
                          (["--device", "gpu"], "unknown device 'gpu'")):
        proc = train(*args)
        assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
        assert message in proc.stderr
    assert a_file.read_text() == "mine"
    runs = tmp_path / "home" / "runs"
    assert not runs.exists() or not any(runs.iterdir())  # no empty run folder left behind
    proc = subprocess.run([sys.executable, "-m", "actrec", "train", "lstm", "--d1", "nosuch"],
                          capture_output=True, text=True, env=env, timeout=300)
    # --extractor defaults to discovering the dataset's one store: the message names no extractor
    assert proc.returncode == 1 and "no features of 'nosuch' yet" in proc.stderr
    assert "actrec extract nosuch" in proc.stderr


def test_the_eval_table_names_the_run_and_shows_segment_scores(stores, tmp_path):
    from rich.console import Console

    from actrec.cli.eval_cmd import render_eval

    run = tmp_path / "run"
    train_model(spec(stores["a"], iterations=2), run)
    console = Console(width=250, record=True, file=open(os.devnull, "w"))
    console.print(render_eval(evaluate_run(run, online=True)))
    text = console.export_text()
    assert f"online evaluation of {run}" in text
    assert "edit" in text and "F1@10/25/50" in text


def test_model_options_merge_key_by_key_across_config_environment_and_command_line(
        stores, tmp_path):
    from click.testing import CliRunner

    from actrec.cli import cli

    cfg = tmp_path / "c.toml"
    cfg.write_text("[train]\niterations = 1\nhistory = 8\n[train.options]\nhidden = 12\n"
                   "layers = 2\n")
    seen = []
    for i, (args, env) in enumerate((([], {}), (["-o", "hidden=20"], {}),
                                     (["-o", "hidden=20"], {"ACTREC_TRAIN_OPTIONS": "layers=3"}))):
        out = CliRunner().invoke(cli, ["--config", str(cfg), "train", "lstm", "--d1",
                                       str(stores["a"]), "--run-dir", str(tmp_path / str(i)),
                                       "--json", *args],
                                 auto_envvar_prefix="ACTREC", env=env)
        assert out.exit_code == 0, out.output
        config = json.loads((tmp_path / str(i) / "config.json").read_text())
        seen.append(config["spec"]["model_options"])
    assert seen == [{"hidden": "12", "layers": "2"}, {"hidden": "20", "layers": "2"},
                    {"hidden": "20", "layers": "3"}]


@pytest.mark.slow
def test_a_longer_max_len_evaluates_as_the_history_on_the_synthetic_kitchen(tmp_path):
    """Issue 8's acceptance, small: joint DDLSTM on two synthetic kitchens with history 16.
    max_len unset (= 16), 16 and 50 evaluate online to the same scores: slots past the
    trained length are never used (before, slots 16..49 kept their initial statistics and
    online accuracy collapsed for t >= 16)."""
    from actrec.pipeline import extract_dataset, train_from_refs

    kitchen = {"participants": "3", "videos_per_participant": "1", "frames_mean": "40",
               "size": "32", "root": str(tmp_path / "data")}
    stores = []
    for k in "ab":
        out = tmp_path / f"{k}.zarr"
        extract_dataset(f"synthetic:kitchen={k}", dataset_options=kitchen, out=out)
        stores.append(str(out))
    scores = {}
    for name, extra in (("unset", {}), ("16", {"max_len": "16"}), ("50", {"max_len": "50"})):
        run = train_from_refs("ddlstm", d1=stores[0], d2=stores[1],
                              model_options={"hidden": "8", "layers": "1", **extra},
                              run_dir=tmp_path / name, history=16, iterations=30, mix=(4, 4),
                              optimizer="adam", lr=0.003)
        result = evaluate_run(run.run_dir, online=True)
        scores[name] = [r.frame_accuracy for r in result.datasets.values()]
    assert scores["unset"] == scores["16"] == scores["50"]
    assert all(0 < a <= 1 for a in scores["16"])
