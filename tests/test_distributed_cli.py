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


def toy_store(path, dim: int, classes: int, seed: int, *, test_videos: bool = True):
    """A real Zarr feature store of 6 training and 2 test videos (the test videos listed in
    the split but not written when ``test_videos`` is False)."""
    import numpy as np

    from actrec.io.features import FeatureStore

    rng = np.random.default_rng(seed)
    train, test = [f"tr{i}" for i in range(6)], [f"te{i}" for i in range(2)]
    store = FeatureStore.open_or_create(
        path, dataset=f"toy{seed}", split_scheme="default",
        classes=[f"c{k}" for k in range(classes)], splits={"1": {"train": train, "test": test}},
        extractor="toy", extractor_config={"seed": seed}, lookahead=0, dtype="float32")
    for vid in train + (test if test_videos else []):
        t = int(rng.integers(12, 30))
        y = np.repeat(rng.integers(0, classes, size=t // 4 + 1), 4)[:t]
        store.write_video(vid, rng.normal(size=(t, dim)).astype(np.float32), y, fps=15.0,
                          source=None)
    return path


@pytest.mark.slow
def test_a_failing_process_stops_the_others_at_once_with_a_clear_message(tmp_path):
    """Rank 0 alone evaluates (--eval-every) and fails on D1's missing test videos while rank
    1 waits in the next collective: rank 1 stops at once (not after the group's 180-minute
    timeout), saying why, and neither prints a traceback of its own."""
    import re

    stores = [toy_store(tmp_path / "a.zarr", 5, 3, 1, test_videos=False),
              toy_store(tmp_path / "b.zarr", 4, 2, 2)]
    env = {**os.environ, "ACTREC_HOME": str(tmp_path / "home"), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "-m", "actrec", "train", "ddlstm", "--d1", str(stores[0]), "--d2", str(stores[1]),
         "-o", "hidden=8", "--history", "8", "--iterations", "6", "--mix", "2:2",
         "--eval-every", "2", "--run-dir", str(tmp_path / "run")],
        check=False, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode != 0
    err = done.stderr
    assert re.search(r"Error: process 0 of 2: feature store \S+a\.zarr: 2 test video", err), err
    assert "Error: process 1 of 2: another process of this torchrun job stopped" in err, err
    assert not re.search(r"\[rank\d\]:\s*Traceback", err), err  # torchrun's summary only
    assert "find_unused_parameters" not in err  # joint DDLSTM: every parameter, every step


def test_which_runs_can_leave_parameters_without_gradients():
    """DDP looks for unused parameters (a graph traversal per step, and a warning when there
    are none) only where a batch can lack a dataset or a single-domain DDLSTM batch leaves the
    alphas out."""
    from actrec.distributed import unused_parameters_possible
    from actrec.nn.models import NormLSTMClassifier, TorchRNNClassifier
    from actrec.train import TrainSpec

    ddlstm = NormLSTMClassifier(5, 4, hidden=6, layers=1, max_len=8, dual=True)
    lstm = TorchRNNClassifier(5, 4, hidden=6, layers=1)
    joint = TrainSpec(model="ddlstm", d1="a.zarr", d2="b.zarr", mix=(2, 2))
    transfer = TrainSpec(model="ddlstm", d1="a.zarr", d2="b.zarr", mix=(2, 2),
                         protocol="transfer", pretrain_iters=2, finetune_iters=2)
    single = TrainSpec(model="lstm", d1="a.zarr", mix=(4,))
    assert not unused_parameters_possible(joint, ddlstm)
    assert unused_parameters_possible(transfer, ddlstm)
    assert unused_parameters_possible(transfer, lstm)  # a phase without D1 (conservative)
    assert unused_parameters_possible(single, ddlstm)  # single-domain DDBN: plain batch norm
    assert not unused_parameters_possible(single, lstm)


def test_a_lost_peer_is_told_from_other_errors():
    from actrec.distributed import _first_line, peer_lost

    gloo = RuntimeError("[/__w/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:553] "
                        "Connection closed by peer [127.0.0.1]:4242. This is typically caused "
                        "by a remote worker crashing.")
    assert peer_lost(gloo) and _first_line(gloo) == "Connection closed by peer [127.0.0.1]:4242"
    assert peer_lost(torch.distributed.DistBackendError("NCCL watchdog: Timed out"))
    assert not peer_lost(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))


def test_sync_bn_given_to_one_process_is_noted(tmp_path, capsys, monkeypatch):
    """Outside torchrun --sync-bn changes nothing (it is recorded, so a run keeps it when
    resumed under torchrun): said on stderr, not an error."""
    from actrec.cli import main

    monkeypatch.setenv("ACTREC_HOME", str(tmp_path / "home"))
    store = toy_store(tmp_path / "a.zarr", 5, 3, 1)
    main(["train", "lstm", "--d1", str(store), "-o", "hidden=4", "--history", "6",
          "--iterations", "1", "--mix", "2", "--sync-bn", "off", "--run-dir",
          str(tmp_path / "run"), "--json"])
    assert "note: --sync-bn off only changes training under torchrun" in capsys.readouterr().err
    assert json.loads((tmp_path / "run" / "config.json").read_text())["spec"]["sync_bn"] is False
