"""``actrec fuse`` of joint runs (two datasets) prints one table per dataset, each with a row
per fused run and the fused row: the second table listed only "fused" (the loop over the
first table's rows rebound the runs' stream labels to the fused row's empty label). Real
runs trained here on real Zarr stores."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from test_train_eval import make_store

from actrec.cli import cli
from actrec.train import TrainSpec, train_model


@pytest.mark.slow  # two trainings and a fusion: ~10 s on a loaded 2-core machine
def test_every_dataset_table_of_a_joint_fusion_lists_every_run(tmp_path):
    p = make_store(tmp_path / "p.zarr", dim=4, classes=3, n_train=4, n_test=2, seed=5)
    q = make_store(tmp_path / "q.zarr", dim=4, classes=2, n_train=4, n_test=2, seed=6)
    runs = []
    for seed in (0, 1):
        runs.append(tmp_path / f"joint{seed}")
        train_model(TrainSpec(model="lstm", d1=p, d2=q, model_options={"hidden": 4},
                              history=8, iterations=3, mix=(4, 4), lr=0.02, optimizer="adam",
                              log_every=1, seed=seed), runs[-1])
    res = CliRunner().invoke(cli, ["fuse", *map(str, runs), "--offline"],
                             terminal_width=120)
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    titles = [i for i, line in enumerate(lines) if "late fusion on" in line]
    assert len(titles) == 2  # one table per dataset
    for start, end in zip(titles, titles[1:] + [len(lines)]):
        rows = [line.split() for line in lines[start:end]]
        named = [r[:2] for r in rows if r and r[0] in ("joint0", "joint1", "fused")]
        assert [r[0] for r in named] == ["joint0", "joint1", "fused"], named
        assert [r[1] for r in named[:2]] == ["own", "own"]  # their streams
