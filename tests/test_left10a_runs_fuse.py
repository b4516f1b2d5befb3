"""The `actrec runs` and `actrec fuse` tables on real runs: the streams a run read and a
transfer run's target are shown, evaluation modes break after a hyphen at 80 columns, and
fuse explains the stream 'own' only where a row shows it."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from rich.console import Console
from test_fusion import _train, make_two_stream_store
from test_train_eval import make_store

from actrec.cli import cli
from actrec.cli.runs_cmd import render_runs
from actrec.runs import summarize_runs
from actrec.train import TrainSpec, train_model


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Under one runs folder: a run on stream a and one on stream b of a two-stream store, a
    transfer run (pre-trained on store q, fine-tuned on store p) and two runs on p's own
    features (no stream named)."""
    root = tmp_path_factory.mktemp("left10a-runs")
    folder = root / "runs"
    two = make_two_stream_store(root / "s.zarr")
    p = make_store(root / "p.zarr", dim=4, classes=3, n_train=4, n_test=2, seed=5)
    q = make_store(root / "q.zarr", dim=4, classes=2, n_train=4, n_test=2, seed=6)
    out = {"a": _train(two, folder / "1-stream-a", ("a",)),
           "b": _train(two, folder / "2-stream-b", ("b",))}
    spec = {"model": "lstm", "model_options": {"hidden": 4}, "history": 8, "iterations": 3,
            "lr": 0.02, "optimizer": "adam", "log_every": 1}
    out["transfer"] = folder / "3-transfer"
    train_model(TrainSpec(d1=p, d2=q, protocol="transfer", pretrain_iters=2, mix=(4, 4),
                          **spec), out["transfer"])
    for seed in (0, 1):
        out[f"own{seed}"] = root / f"own{seed}"
        train_model(TrainSpec(d1=p, mix=(4, 0), seed=seed, **spec), out[f"own{seed}"])
    return folder, out


def _text(renderable, width: int = 80) -> str:
    console = Console(width=width, record=True, color_system=None)
    console.print(renderable)
    return console.export_text()


def test_runs_lists_the_streams_and_the_transfer_roles(runs):
    folder, _ = runs
    rows = {r["run"]: r for r in summarize_runs(folder)}
    assert rows["1-stream-a"]["streams"] == ["a"] and rows["2-stream-b"]["streams"] == ["b"]
    assert rows["1-stream-a"]["roles"] == [] and rows["3-transfer"]["streams"] is None
    assert rows["3-transfer"]["data"] == ["toy5", "toy6"]
    assert rows["3-transfer"]["roles"] == ["target", "source"]  # D1 fine-tuned, D2 pre-trains

    text = _text(render_runs(list(rows.values())))
    assert max(map(len, text.splitlines())) <= 80
    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("run "))
    start, end = header.index("data"), header.index("protocol")
    cells: dict[str, list[str]] = {}
    for line in lines[lines.index(header) + 2:]:  # under the rule: the data column's lines
        name = line[:start].split()[0] if line[:start].strip() else list(cells)[-1]
        if line[start:end].strip():
            cells.setdefault(name, []).append(line[start:end].strip())
    assert cells["1-stream-a"][0] == "toy [a]" and cells["2-stream-b"][0] == "toy [b]"
    assert cells["3-transfer"][:2] == ["toy5 (target)", "toy6 (source)"]


def test_runs_breaks_an_evaluation_mode_after_a_hyphen_at_80_columns():
    row = {"run": "20261201-172623-lstm", "model": "lstm", "data": ["mstcn:root=mydata"],
           "protocol": "single", "labels": "concat", "iterations": 300, "best_val": None,
           "selected_on_test": False, "streams": None, "roles": [],
           "evaluations": {"online-features-ahead-unknown": {"x": 0.9927}}}
    text = _text(render_runs([row]))
    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("run "))
    at = header.index("best val") + len("best val")  # the scores' column starts there
    score_column = [line[at:].strip() for line in lines[lines.index(header) + 2:]
                    if line[at:].strip() and not line.startswith("[1]")]
    mode = score_column[:-1]  # then "D1 99.27 %"
    assert score_column[-1] == "D1 99.27 %"
    assert "".join(mode) == "online-features-ahead-unknown:"
    assert all(part.endswith("-") for part in mode[:-1]), mode  # never inside a word
    wide = _text(render_runs([row]), width=140)
    assert "online-features-ahead-unknown:" in wide  # one line where it fits


def test_fuse_explains_the_stream_own_only_where_a_row_shows_it(runs):
    _, out = runs
    runner = CliRunner()
    named = runner.invoke(cli, ["fuse", str(out["a"]), str(out["b"]), "--offline"])
    assert named.exit_code == 0, named.output
    assert "weighted mean of the runs' class probabilities" in named.output
    assert "own" not in named.output
    own = runner.invoke(cli, ["fuse", str(out["own0"]), str(out["own1"]), "--offline"])
    assert own.exit_code == 0, own.output
    text = " ".join(own.output.split())
    assert "streams 'own': the store's own" in text
    assert sum(line.split()[1:2] == ["own"] for line in own.output.splitlines()) == 2
