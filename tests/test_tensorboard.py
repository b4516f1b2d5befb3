"""TensorBoard beside metrics.jsonl (actrec.tb_logging, `actrec train --tensorboard`): the event
files written during a real training hold exactly the numbers of the JSON lines log, read
back with TensorBoard's own EventAccumulator, also after a resume."""

import json
import sys

import pytest
from click.testing import CliRunner
from test_train_eval import make_store

from actrec.cli import cli
from actrec.errors import ConfigError
from actrec.tb_logging import scalars_of
from actrec.train import TrainSpec, train_model

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")


def read_events(folder):
    acc = event_accumulator.EventAccumulator(str(folder), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def expected(run_dir):
    out = {}
    for text in (run_dir / "metrics.jsonl").read_text().splitlines():
        line = json.loads(text)
        for tag, value in scalars_of(line):
            out.setdefault(tag, []).append((line["iteration"], value))
    return out


def assert_same(events, wanted):
    assert set(events) == set(wanted)
    for tag, points in wanted.items():
        got = events[tag]
        assert [s for s, _ in got] == [s for s, _ in points], tag
        assert [v for _, v in got] == pytest.approx([v for _, v in points], rel=1e-6), tag


def test_scalars_of_a_line_by_hand():
    line = {"iteration": 4, "phase": "train", "loss": 0.5, "lr": 0.01, "ok": True,
            "alphas": {"rnn.layers.0.alpha": [0.75, 0.8]},
            "val": {"D1": {"loss": 1.0, "videos": 2}, "on": "validation", "score": None}}
    assert dict(scalars_of(line)) == {
        "train/loss": 0.5, "train/lr": 0.01, "train/alphas/rnn.layers.0.alpha/0": 0.75,
        "train/alphas/rnn.layers.0.alpha/1": 0.8, "train/val/D1/loss": 1.0,
        "train/val/D1/videos": 2.0}
    assert dict(scalars_of({"iteration": 8, "eval": {"toy1": 0.9}})) == {"eval/toy1": 0.9}


@pytest.mark.slow
def test_training_mirrors_metrics_into_tensorboard_also_after_resume(tmp_path):
    a = make_store(tmp_path / "a.zarr", dim=6, classes=3, n_train=4, n_test=2, seed=1)
    b = make_store(tmp_path / "b.zarr", dim=4, classes=2, n_train=4, n_test=2, seed=2)
    spec = {"model": "ddlstm", "d1": a, "d2": b, "mix": (4, 4), "history": 16, "lr": 0.02,
            "optimizer": "adam", "log_every": 2, "eval_every": 4, "checkpoint_every": 4,
            "seed": 0, "model_options": {"hidden": 8, "layers": 2, "max_len": 16}}
    run = tmp_path / "run"
    train_model(TrainSpec(iterations=8, **spec), run, tensorboard=True)
    events = read_events(run / "tensorboard")
    wanted = expected(run)
    assert {"train/loss", "train/lr", "train/train_frame_accuracy",
            "train/alphas/rnn.layers.1.alpha/1", "eval/toy1", "eval/toy2"} <= set(events)
    assert_same(events, wanted)
    # Resumed: the log goes on from its checkpoint; TensorBoard shows each step once.
    train_model(TrainSpec(iterations=12, **spec), run, tensorboard=True)
    events = read_events(run / "tensorboard")
    assert [s for s, _ in events["train/loss"]] == [2, 4, 6, 8, 10, 12]
    assert_same(events, expected(run))


def test_cli_flag_and_missing_package(tmp_path, monkeypatch):
    a = make_store(tmp_path / "a.zarr", dim=6, classes=3, n_train=4, n_test=2, seed=1)
    run = tmp_path / "run"
    args = ["train", "lstm", "--d1", str(a), "--iterations", "2", "--history", "8",
            "--mix", "4:0", "-o", "hidden=4", "--run-dir", str(run), "--tensorboard"]
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # not installed
    result = CliRunner().invoke(cli, args)
    assert result.exit_code != 0 and isinstance(result.exception, ConfigError)
    assert "actrec[tensorboard]" in str(result.exception)
    assert not run.exists()  # refused before anything was written
    monkeypatch.delitem(sys.modules, "torch.utils.tensorboard")
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert read_events(run / "tensorboard")["train/loss"][-1][0] == 2
