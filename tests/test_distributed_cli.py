"""`torchrun --nproc-per-node 2 -m actrec train` end to end on the synthetic kitchens, against
the same command in one process; and the refusals of a batch that does not split."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from actrec.errors import ConfigError

TINY = {"participants": "3", "videos_per_participant": "1", "frames_mean": "40", "size": "32"}


def train_args(stores, run_dir, *more):
    return ["train", "ddlstm", "--d1", str(stores[0]), "--d2", str(stores[1]),
            "-o", "hidden=8", "-o", "layers=2", "--history", "12", "--iterations", "4",
            "--mix", "2:4", "--windows", "stride:3", "--loss-frames", "all",
            "--checkpoint-every", "2", "--seed", "3",
            "--run-dir", str(run_dir), "--json", *more]


@pytest.fixture(scope="module")
def kitchens(tmp_path_factory):
    """Features of the synthetic kitchens a and b (real mp4 videos, colorgrad features)."""
    from actrec.pipeline import extract_dataset

    root = tmp_path_factory.mktemp("kitchens")
    stores = []
    for kitchen in ("a", "b"):
        out = root / f"{kitchen}.zarr"
        extract_dataset(f"synthetic:kitchen={kitchen}",
                        dataset_options={"root": str(root / "data"), **TINY}, out=out)
        stores.append(out)
    return stores


@pytest.mark.slow
def test_torchrun_two_processes_train_as_one(kitchens, tmp_path):
    from actrec.cli import main
    from actrec.runs import load_checkpoint

    env = {**os.environ, "ACTREC_HOME": str(tmp_path / "home"), "OMP_NUM_THREADS": "1"}
    run_dir = tmp_path / "torchrun"
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "-m", "actrec", *train_args(kitchens, run_dir)],
        check=False, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)  # one report: rank 0's
    assert result["iterations"] == 4 and result["run_dir"] == str(run_dir)
    config = json.loads((run_dir / "config.json").read_text())
    assert config["distributed"] == {"world_size": 2, "backend": "gloo", "sync_bn": True}
    assert config["spec"]["sync_bn"] is True
    steps = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["iteration"] for m in steps if "loss" in m] == [4]  # once: rank 0 logs

    alone = tmp_path / "alone"
    main(train_args(kitchens, alone))  # the same command in this one process
    ours, theirs = load_checkpoint(run_dir / "checkpoint.pt"), load_checkpoint(
        alone / "checkpoint.pt")
    for key, value in theirs["model"].items():
        torch.testing.assert_close(ours["model"][key], value, rtol=1e-4, atol=2e-5,
                                   msg=lambda m, key=key: f"{key}: {m}")
    single = [json.loads(line) for line in (alone / "metrics.jsonl").read_text().splitlines()]
    assert [m["loss"] for m in steps if "loss" in m] == pytest.approx(
        [m["loss"] for m in single if "loss" in m], rel=1e-4)


def test_a_batch_that_does_not_split_is_refused_naming_the_option():
    from actrec.distributed import Distributed, check_mix
    from actrec.train import TrainSpec

    with pytest.raises(ConfigError, match=r"--mix 3:2: n1 = 3 windows of D1 do not split "
                                          r"evenly over 2 processes"):
        check_mix([(3, 2)], 2)
    check_mix([(4, 2), (6, 0)], 2)
    four = Distributed(rank=0, world=4, local_rank=0, backend="gloo", sync_bn=True)
    spec = TrainSpec(model="ddlstm", d1="a.zarr", d2="b.zarr", mix=(8, 6))
    with pytest.raises(ConfigError, match="n2 = 6 windows of D2"):
        four.check(spec)
    # The batches a sign schedule grows to must split as well.
    grows = TrainSpec(model="ddlstm", d1="a.zarr", d2="b.zarr", mix=(4, 4),
                      lr_schedule="sign", val_fraction=0.3, batch_growth=1.5)
    with pytest.raises(ConfigError, match="--batch-growth 1.5"):
        four.check(grows)
    four.check(TrainSpec(model="ddlstm", d1="a.zarr", d2="b.zarr", mix=(8, 4)))


def test_rows_of_a_share_and_windows_read_only_for_them():
    """A process's share of a batch are exactly those rows of the whole batch, and reading
    only them leaves the generators where the whole batch leaves them."""
    import numpy as np

    from actrec.data.sampling import StrideWindows
    from actrec.data.windows import VideoBank, sample_windows, share_of

    assert share_of(6, 1, 2) == slice(3, 6)
    with pytest.raises(ValueError):
        share_of(5, 0, 2)
    rng = np.random.default_rng(0)
    bank = VideoBank.from_arrays(
        (f"v{i}", rng.normal(size=(t, 3)), np.arange(t) % 2) for i, t in enumerate((9, 30, 14)))
    whole = sample_windows(bank, 6, 10, np.random.default_rng(1))
    g = np.random.default_rng(1)
    part = sample_windows(bank, 6, 10, g, slice(2, 4))
    assert np.array_equal(part.features, whole.features[:, 2:4])
    assert np.array_equal(part.mask, whole.mask[:, 2:4]) and np.array_equal(part.start,
                                                                             whole.start[2:4])
    g2 = np.random.default_rng(1)
    sample_windows(bank, 6, 10, g2)
    assert g.integers(1 << 30) == g2.integers(1 << 30)
    stride = StrideWindows(bank, 10, 3, seed=4)
    a, b = stride.draw(5, 6), stride.draw(5, 6, rows=slice(3, 6))
    assert np.array_equal(b.features, a.features[:, 3:6]) and np.array_equal(b.video,
                                                                              a.video[3:6])
