"""Whole training runs on 2 gloo processes against the same runs in one process.

What the step-level tests (tests/test_distributed.py) do not reach: stride windows with a
learning-rate schedule driven by validation, the best checkpoint, re-estimated statistics at the
end of a run, and a run whose second process dies between two checkpoints and is resumed by 2
processes. Every run is compared with the one-process run of the same spec: weights, running
statistics and trained lengths, logged losses and validation scores, the best checkpoint.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import socket
from pathlib import Path

import pytest
import torch
import torch._dynamo  # DDP imports it (seconds): once, before forking
import torch.distributed as dist
from test_distributed import make_store

import actrec.distributed
import actrec.nn.models
import actrec.train  # noqa: F401  (imported once, before forking)
from actrec.io.features import FeatureStore

ITERATIONS = 6
DIE_AT = 5  # rank 1 dies before its 5th iteration: the last checkpoint is the 4th's


def spec_of(root: Path, kind: str):
    from actrec.train import TrainSpec

    base = {"model": "ddlstm", "d1": root / "a.zarr", "d2": root / "b.zarr",
            "model_options": {"hidden": 8, "layers": 2}, "history": 10,
            "iterations": ITERATIONS, "mix": (4, 2), "lr": 0.01, "optimizer": "adam",
            "log_every": 1, "checkpoint_every": 2, "windows": "stride:3",
            "loss_frames": "all", "seed": 7}
    if kind == "selected":  # validation drives the schedule and picks best.pt
        base.update(select_on_test=True, val_every=2, lr_schedule="plateau", lr_patience=1)
    elif kind == "reestimated":  # re-estimated statistics at the end
        base.update(reestimate_batches=3, windows="random")
    elif kind == "copies":  # each process reads its own copy of D1 (another machine's)
        base.update(d1=root / f"copy{os.environ.get('RANK', '0')}" / "a.zarr", iterations=2)
    else:  # the gru model: torch's BatchNorm1d synchronised, re-estimated at the end
        base.update(model="gru", reestimate_batches=3,
                    model_options={"hidden": 8, "fc": 6, "gru_dropout": 0.0, "dropout": 0.0})
    return TrainSpec(**base)


class _Died(Exception):
    pass


def _worker(rank: int, world: int, port: int, root: str, jobs: list) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from actrec.distributed import session
    from actrec.train import _Loop, train_model

    root = Path(root)
    for kind, run, die in jobs:
        if die and rank == 1:  # this process dies abruptly before iteration DIE_AT
            real = _Loop.batch

            def batch(self, rng, iteration=None, real=real):
                if iteration == DIE_AT - 1:
                    os._exit(3)
                return real(self, rng, iteration)

            _Loop.batch = batch
        writes = _watch_writes(root / run) if rank else []
        try:
            with session():
                train_model(spec_of(root, kind), root / run)
        except Exception as exc:  # noqa: BLE001 - record what each process said
            (root / f"{run}.rank{rank}.error").write_text(str(exc))
        if rank:
            (root / f"{run}.rank{rank}.writes").write_text(json.dumps(writes))


def _watch_writes(run_dir: Path) -> list:
    """Record every write, folder creation, rename or removal of this (forked, rank 1)
    process under ``run_dir``: only rank 0 may write a run."""
    import builtins
    import pathlib

    seen: list = []
    inside = str(run_dir)

    def under(path) -> bool:
        return str(path).startswith(inside)

    real_open, real_replace, real_mkstemp = builtins.open, os.replace, __import__("tempfile").mkstemp

    def open_(file, mode="r", *a, **k):
        if any(c in mode for c in "wax+") and under(file):
            seen.append(["open", str(file), mode])
        return real_open(file, mode, *a, **k)

    def replace(src, dst, *a, **k):
        if under(dst):
            seen.append(["replace", str(dst)])
        return real_replace(src, dst, *a, **k)

    def mkstemp(*a, dir=None, **k):
        if dir is not None and under(dir):
            seen.append(["mkstemp", str(dir)])
        return real_mkstemp(*a, dir=dir, **k)

    for name in ("mkdir", "unlink", "write_text", "write_bytes", "rename", "touch"):
        real = getattr(pathlib.Path, name)

        def wrapped(self, *a, real=real, name=name, **k):
            if under(self):
                seen.append([name, str(self)])
            return real(self, *a, **k)

        setattr(pathlib.Path, name, wrapped)
    builtins.open, os.replace = open_, replace
    __import__("tempfile").mkstemp = mkstemp
    return seen


def spawn_runs(root: Path, jobs: list) -> list[int]:
    """Train ``jobs`` ((kind, run folder, rank 1 dies)) on 2 forked gloo processes, one
    process group per job; returns the exit codes."""
    codes = []
    for job in jobs:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        ctx = multiprocessing.get_context("fork")
        procs = [ctx.Process(target=_worker, args=(r, 2, port, str(root), [job]))
                 for r in range(2)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(120)
            if p.is_alive():  # never leave a process behind
                p.kill()
                p.join()
        codes.append([p.exitcode for p in procs])
    return codes


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from actrec.train import train_model

    root = tmp_path_factory.mktemp("runs")
    make_store(root / "a.zarr", dim=5, classes=3, seed=1)
    make_store(root / "b.zarr", dim=4, classes=2, seed=2)
    for kind in ("selected", "reestimated", "gru"):
        train_model(spec_of(root, kind), root / f"single-{kind}")
    codes = spawn_runs(root, [("selected", "dist-selected", False),
                              ("reestimated", "dist-reestimated", False),
                              ("selected", "dist-killed", True),
                              ("gru", "dist-gru", False)])
    assert dist.is_available()
    killed = {"codes": codes[2], "checkpoint": None}
    ckpt = root / "dist-killed" / "checkpoint.pt"
    if ckpt.exists():
        killed["checkpoint"] = torch.load(ckpt, weights_only=False)["iteration"]
    killed["error"] = (root / "dist-killed.rank0.error").read_text() \
        if (root / "dist-killed.rank0.error").exists() else None
    spawn_runs(root, [("selected", "dist-killed", False)])  # resumed by 2 processes
    # Two machines whose stores at the same path differ: process 1's copy of D1 holds one
    # training video with other features (an older extraction, say).
    import shutil

    for rank in range(2):
        shutil.copytree(root / "a.zarr", root / f"copy{rank}" / "a.zarr")
    copy = FeatureStore.open(root / "copy1" / "a.zarr")
    x, y = copy.read("tr2")
    copy.write_video("tr2", x * 0.5, y, fps=15.0, source=None)
    spawn_runs(root, [("copies", "dist-copies", False)])
    return root, killed


def checkpoint(run: Path, name: str = "checkpoint.pt") -> dict:
    from actrec.runs import load_checkpoint

    return load_checkpoint(run / name)


def logged(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def assert_same_weights(got: dict, want: dict, what: str) -> None:
    assert set(got) == set(want)
    for key, value in want.items():
        if value.dtype.is_floating_point:  # float32: only the order of sums differs
            torch.testing.assert_close(got[key], value, rtol=1e-4, atol=2e-5,
                                       msg=f"{what}: {key}")
        else:  # trained lengths: exactly
            assert torch.equal(got[key], value), f"{what}: {key} {got[key]} != {value}"


@pytest.mark.slow
@pytest.mark.parametrize("run", ["dist-selected", "dist-killed"])
def test_validated_run_on_two_processes_is_the_one_process_run(runs, run):
    root, _ = runs
    single = root / "single-selected"
    assert_same_weights(checkpoint(root / run)["model"], checkpoint(single)["model"], run)
    assert_same_weights(checkpoint(root / run, "best.pt")["model"],
                        checkpoint(single, "best.pt")["model"], f"{run} best.pt")
    want, got = logged(single), logged(root / run)
    vals = [v for m in want if "val" in m
            for v in (m["iteration"], m["val"]["score"], m["val"]["loss"])]
    assert [v for m in got if "val" in m
            for v in (m["iteration"], m["val"]["score"], m["val"]["loss"])] \
        == pytest.approx(vals, rel=1e-5)
    # Every iteration logged once, with the one-process loss and learning rate.
    steps = [v for m in want if "loss" in m and "phase" in m
             for v in (m["iteration"], m["loss"], m["lr"])]
    assert [m["iteration"] for m in got if "loss" in m and "phase" in m] == \
        list(range(1, ITERATIONS + 1))
    assert [v for m in got if "loss" in m and "phase" in m
            for v in (m["iteration"], m["loss"], m["lr"])] == pytest.approx(steps, rel=1e-4)
    # The rest of the checkpoint a resume goes on from: the optimiser's moments, the window
    # streams, the numpy generator, the schedule's state.
    got_ckpt, want_ckpt = checkpoint(root / run), checkpoint(single)
    assert got_ckpt["windows_drawn"] == want_ckpt["windows_drawn"]
    assert got_ckpt["rng"]["numpy"] == want_ckpt["rng"]["numpy"]
    assert torch.equal(got_ckpt["rng"]["torch"], want_ckpt["rng"]["torch"])
    assert got_ckpt["monitor"]["stopped_at"] == want_ckpt["monitor"]["stopped_at"]
    got_opt, want_opt = got_ckpt["optimizer"], want_ckpt["optimizer"]
    assert [g["lr"] for g in got_opt["param_groups"]] == \
        pytest.approx([g["lr"] for g in want_opt["param_groups"]], rel=1e-9)
    for k, state in want_opt["state"].items():
        for name, value in state.items():
            torch.testing.assert_close(got_opt["state"][k][name], value, rtol=1e-3, atol=1e-6,
                                       msg=f"optimizer state {k}.{name}")
    chosen, want_chosen = checkpoint(root / run)["selected"], checkpoint(single)["selected"]
    assert chosen["iteration"] == want_chosen["iteration"]
    assert chosen["score"] == pytest.approx(want_chosen["score"], rel=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("run", ["dist-selected", "dist-reestimated", "dist-gru"])
def test_rank_one_writes_nothing_in_the_run(runs, run):
    root, _ = runs
    assert json.loads((root / f"{run}.rank1.writes").read_text()) == []
    assert (root / run / "checkpoint.pt").is_file()


@pytest.mark.slow
def test_a_process_dying_between_checkpoints_leaves_the_last_one_whole(runs):
    _, killed = runs
    assert killed["codes"][1] == 3  # rank 1 died
    assert killed["checkpoint"] == DIE_AT - 1 - (DIE_AT - 1) % 2  # the last whole checkpoint
    assert killed["error"] is not None and "another process" in killed["error"]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["reestimated", "gru"])
def test_reestimated_statistics_are_those_of_the_global_batches(runs, kind):
    root, _ = runs
    single = checkpoint(root / f"single-{kind}")["model"]
    got = checkpoint(root / f"dist-{kind}")["model"]
    assert_same_weights(got, single, kind)
    assert any("running_var" in k for k in single)
    if kind == "reestimated":  # not the momentum statistics (the check above means something)
        momentum = checkpoint(root / "single-selected")["model"]
        key = "rnn.layers.0.bn_h.running_mean"
        assert float((single[key] - momentum[key]).abs().max()) > 1e-3


@pytest.mark.slow
def test_processes_reading_different_copies_of_a_store_are_stopped(runs):
    """Every process reads the stores itself: a machine whose store at the same path holds
    other data would train its share of every batch on it, silently. Both processes stop
    before anything is written, saying which process read what."""
    root, _ = runs
    for rank in range(2):
        error = (root / f"dist-copies.rank{rank}.error").read_text()
        assert "process 1 of 2 read other data than process 0" in error, error
        assert "'tr2'" in error and "a.zarr" in error
    assert not (root / "dist-copies" / "checkpoint.pt").exists()
