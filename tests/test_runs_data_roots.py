"""`actrec runs` tells apart datasets of one name read from two data folders (`--d1
mstcn:root=a --d2 mstcn:root=b` both showed `mstcn`): such a dataset is named by the reference
of its folder, keyed under the table. Real stores, real training runs."""

from __future__ import annotations

import numpy as np
import pytest
from rich.console import Console

from actrec.cli.runs_cmd import render_runs
from actrec.io.features import FeatureStore
from actrec.runs import summarize_runs
from actrec.train import TrainSpec, train_model


def _store(path, root: str, seed: int):
    """An 'mstcn' store of 4 videos extracted (as recorded) from data folder ``root``."""
    rng = np.random.default_rng(seed)
    ids = [f"v{i}" for i in range(4)]
    store = FeatureStore.open_or_create(
        path, dataset="mstcn", split_scheme="default", classes=["a", "b"],
        splits={"1": {"train": ids[:3], "test": ids[3:]}}, extractor="toy",
        extractor_config={}, lookahead=0, dtype="float32",
        source={"dataset": "mstcn", "options": {"root": root}, "extractor": "toy"})
    for vid in ids:
        y = np.repeat(rng.integers(0, 2, size=4), 10)
        store.write_video(vid, (np.eye(2, 4)[y] + 0.2 * rng.normal(size=(40, 4)))
                          .astype(np.float32), y, fps=15.0, source=None)
    return path


def _text(renderable) -> str:
    console = Console(width=80, record=True, color_system=None)
    console.print(renderable)
    return console.export_text()


@pytest.mark.slow
def test_one_dataset_name_from_two_data_folders_reads_apart(tmp_path):
    a = _store(tmp_path / "a.zarr", "/data/kitchen-a", 0)
    b = _store(tmp_path / "b.zarr", "/data/kitchen-b", 1)
    spec = {"model": "lstm", "model_options": {"hidden": 4}, "history": 8, "iterations": 2,
            "lr": 0.02, "optimizer": "adam", "log_every": 1}
    train_model(TrainSpec(d1=a, d2=b, mix=(2, 2), **spec), tmp_path / "runs" / "joint")
    train_model(TrainSpec(d1=a, mix=(2, 0), **spec), tmp_path / "runs" / "single")
    rows = summarize_runs(tmp_path / "runs")
    by_run = {r["run"]: r for r in rows}
    assert by_run["joint"]["data"] == ["mstcn", "mstcn"]  # --json keeps the names
    assert by_run["joint"]["roots"] == ["/data/kitchen-a", "/data/kitchen-b"]
    text = _text(render_runs(rows))
    lines = [" ".join(line.split()) for line in text.splitlines()]
    assert "[1] mstcn:root=/data/kitchen-a" in lines and "[2] mstcn:root=/data/kitchen-b" in lines
    joint = lines.index(next(x for x in lines if x.startswith("joint ")))
    assert "mstcn [1]" in lines[joint] and "mstcn [2]" in lines[joint + 1]
    assert "mstcn [1]" in next(x for x in lines if x.startswith("single "))
    # one folder per name: the name alone, as before
    only_a = _text(render_runs([by_run["single"]]))
    assert "root=" not in only_a and "mstcn" in only_a
