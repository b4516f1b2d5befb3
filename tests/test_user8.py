"""What a new user met on workflows no earlier trial covered (session 8): Ctrl-C during
`actrec reproduce` says how to finish the grid (not a cell's own --run-dir advice), and the
grid then finishes from the interrupted cell's checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.progress import Progress

from actrec.errors import Interrupted
from actrec.reproduce import reproduce

_ONE_CELL = """
id = "onecell"
title = "one LSTM cell"
report = "split"
metric = "frame_accuracy"
decimals = 2
preset = "recassist"
inputs = "softmax"
header = ["Split"]

[source]
paper = "test"
file = "none"
table = "Table 0"
caption = "a test table"

[datasets.breakfast]
name = "Breakfast"
ref = "breakfast"
tiny = "synthetic:kitchen=a"

[methods.lstm]
kind = "train"
model = "lstm"
protocol = "single"

[defaults]
D1 = "breakfast"

[[columns]]
label = "LSTM"
method = "lstm"

[[rows]]
labels = ["0"]
split = 0
paper = [30.78]
"""


class _CtrlCInTraining(Progress):
    """A real (silent) progress display whose Nth training step is where the user pressed
    Ctrl-C: the KeyboardInterrupt comes out of the training loop as it would from a signal."""

    def __init__(self, after: int) -> None:
        super().__init__(disable=True)
        self.after, self.training = after, set()

    def add_task(self, description, *args, **kwargs):
        task = super().add_task(description, *args, **kwargs)
        if description.endswith(" lstm"):  # train.py's task: "<phase> <model>"
            self.training.add(task)
        return task

    def advance(self, task, advance=1):
        super().advance(task, advance)
        if task in self.training:
            self.after -= 1
            if self.after == 0:
                raise KeyboardInterrupt


@pytest.mark.slow
def test_ctrl_c_in_a_reproduce_cell_says_run_reproduce_again_and_the_rerun_finishes(tmp_path):
    table = tmp_path / "onecell.toml"
    table.write_text(_ONE_CELL)
    with pytest.raises(Interrupted) as info:
        reproduce(table, tmp_path, preset="tiny", inputs="store", progress=_CtrlCInTraining(20))
    message = str(info.value)
    # The cell's own advice ("run the same command again with --run-dir <cell>") would train
    # that one cell outside the grid: the user is told to run reproduce again instead.
    assert "--run-dir" not in message
    assert "run the same `actrec reproduce` command again" in message
    folder = tmp_path / "reproduce" / "tiny" / "onecell"
    assert str(folder) in message
    (cell,) = (folder / "runs").iterdir()
    assert not (cell / "eval-online.json").exists()
    assert not (folder / "table.json").exists()

    result = reproduce(table, tmp_path, preset="tiny", inputs="store")
    assert result["complete"], result["failures"]
    lines = [json.loads(x) for x in (cell / "metrics.jsonl").read_text().splitlines()]
    assert [x["iteration"] for x in lines if x.get("phase") == "train"] == [10, 20, 30]
    scored = json.loads((cell / "eval-online.json").read_text())
    value = result["rows"][0]["cells"][0]["mean"]
    assert value == pytest.approx(next(iter(scored["datasets"].values()))["frame_accuracy"])


def test_train_all_splits_table_keeps_run_names_whole_at_80_columns():
    """`actrec train --all-splits` lists its runs: the names `actrec eval` takes must be whole
    in an 80-column terminal (full workspace paths were cut to "/home/…/runs/2026…")."""
    from rich.console import Console

    from actrec.cli.train_cmd import _render_splits
    from actrec.train import TrainResult

    folder = Path("/home/someone/.cache/actrec/runs")
    names = [f"20261201-195847-ddlstm-split{k}" for k in "1234"]
    results = [TrainResult(folder / n, 50000, 0, 0.123456, 10.0, folder / n / "checkpoint.pt")
               for n in names]
    console = Console(width=80, record=True, color_system=None)
    console.print(_render_splits(results))
    text = console.export_text()
    assert "…" not in text
    assert max(map(len, text.splitlines())) <= 80
    rows = [line.split("│") for line in text.splitlines() if "split" in line and "│" in line]
    assert [r[1].strip() for r in rows] == names
    assert [r[4].strip() for r in rows] == ["0.1235"] * 4
    assert str(folder) in text
    assert f"actrec eval {folder / names[0]} --all-splits" in " ".join(text.split())
