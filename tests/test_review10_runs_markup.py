"""``actrec runs`` and ``actrec eval`` print run names (what ``actrec eval RUN`` takes), run
folders and a run's problem as they are: square brackets in them are text, not rich markup
(``lstm[bn]`` was shown as ``lstm``, and a problem naming ``.../exp[bad]/config.json`` as
``.../exp/config.json``). Real run folders: one of a real training, and one whose
config.json is not JSON."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from test_train_eval import make_store

from actrec.cli import cli
from actrec.train import TrainSpec, train_model


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("review10-markup")
    runs = tmp / "runs"
    store = make_store(runs.parent / "p.zarr", dim=4, classes=3, n_train=4, n_test=2, seed=5)
    train_model(TrainSpec(model="lstm", d1=store, model_options={"hidden": 4}, history=8,
                          iterations=2, mix=(4, 0), lr=0.02, optimizer="adam", log_every=1),
                runs / "lstm[bn]")
    broken = runs / "exp[bad]"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    return runs


def test_brackets_in_run_names_and_problems_are_shown_as_written(runs):
    res = CliRunner().invoke(cli, ["runs", "--root", str(runs)], terminal_width=400)
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert next(line for line in lines if line.startswith("lstm")).split()[0] == "lstm[bn]"
    line = next(line for line in lines if line.startswith("exp"))
    assert line.split()[0] == "exp[bad]"
    folded = "".join(res.output.split())  # the problem's column folds it over lines
    assert "".join(f"{runs / 'exp[bad]'}/config.json, line 1: invalid JSON".split()) in folded


def test_eval_names_the_run_folder_as_written(runs):
    res = CliRunner().invoke(cli, ["eval", str(runs / "lstm[bn]")], terminal_width=400)
    assert res.exit_code == 0, res.output
    assert f"online evaluation of {runs / 'lstm[bn]'}" in res.output


def test_train_names_the_run_folder_as_written(runs):
    run = runs.parent / "more" / "t[x]"
    res = CliRunner().invoke(cli, ["train", "lstm", "--d1", str(runs.parent / "p.zarr"),
                                   "--history", "8", "--iterations", "2", "--mix", "4:0",
                                   "-o", "hidden=4", "--run-dir", str(run)],
                             terminal_width=400)
    assert res.exit_code == 0, res.output
    assert f"run {run}" in res.output and f"score it: actrec eval {run}" in res.output
