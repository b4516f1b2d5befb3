"""Audit of the training data path: numbers that came out silently wrong, each pinned by a test
that failed before its fix (real Zarr stores written here, real training runs)."""

from __future__ import annotations

import shutil

import pytest
import torch

from actrec.runs import load_checkpoint
from actrec.train import TrainSpec, train_model

from test_train_eval import make_store


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("stores")
    return {
        "a": make_store(root / "a.zarr", dim=6, classes=3, n_train=6, n_test=2, seed=11),
        "b": make_store(root / "b.zarr", dim=4, classes=2, n_train=6, n_test=2, seed=12),
    }


def spec(stores, **kw):
    base = dict(model="lstm", d1=stores["a"], model_options={"hidden": 8}, history=12,
                iterations=3, mix=(4, 4), lr=0.02, optimizer="adam", log_every=1, seed=5)
    base.update(kw)
    return TrainSpec(**base)


class KillAfter:
    """A progress display that interrupts training after ``after`` iterations, like Ctrl-C."""

    def __init__(self, after):
        self.left = after

    def add_task(self, description, *a, **k):
        return 0 if description.split()[0] in ("train", "pretrain", "finetune") else 1

    def update(self, *a, **k):
        pass

    def remove_task(self, *a, **k):
        pass

    def advance(self, task, n=1):
        if task == 0:
            self.left -= 1
            if self.left == 0:
                raise KeyboardInterrupt


def test_transfer_finetuning_walks_the_stride_windows_from_the_first_epoch(stores, tmp_path):
    """Fine-tuning's stride windows start at D1's first epoch, as when fine-tuning starts a run
    (``init_from``): they used to start at stream position ``pretrain_iters * n1``, mid-epoch,
    so ``--epochs`` epochs of fine-tuning visited some windows once more than others."""
    s = spec(stores, d2=stores["b"], protocol="transfer", pretrain_iters=3, iterations=3,
             windows="stride:3", checkpoint_every=3)
    with pytest.raises(KeyboardInterrupt):  # stopped in fine-tuning's first step
        train_model(s, tmp_path / "run", progress=KillAfter(4))
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["iteration"] == 3
    shutil.copytree(tmp_path / "run", tmp_path / "pretrained")
    train_model(s, tmp_path / "run")  # fine-tuning from global iteration 3
    # The same pre-trained weights fine-tuned by a run that starts at global iteration 0.
    again = spec(stores, d2=stores["b"], protocol="transfer", iterations=3, windows="stride:3",
                 init_from=str(tmp_path / "pretrained"))
    train_model(again, tmp_path / "again")
    a = load_checkpoint(tmp_path / "run" / "checkpoint.pt")["model"]
    b = load_checkpoint(tmp_path / "again" / "checkpoint.pt")["model"]
    for name in a:
        assert torch.equal(a[name], b[name]), name
