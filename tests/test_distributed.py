"""Distributed training on 2 gloo processes spawned here equals one process holding the batch.

Each spawned rank holds its share of one global batch (``n1/W`` D1 rows, ``n2/W`` D2 rows) and
trains through the library's own machinery (``actrec.distributed``: DDP, the global-batch loss,
synchronised DDBN / BN); the test process computes the same batch alone and compares losses,
gradients (alphas included), outputs and running statistics in float64.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch._dynamo  # DistributedDataParallel imports it (seconds): once, before forking
import torch.distributed as dist
import torch.multiprocessing as mp

# Imported here so that forked ranks inherit them instead of importing them again.
import actrec.distributed
import actrec.losses
import actrec.nn.models
import actrec.train  # noqa: F401

WORLD = 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, job: str, args: tuple) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        JOBS[job](rank, world, *args)
    finally:
        dist.destroy_process_group()


def spawn(job: str, *args, world: int = WORLD) -> None:
    """Run ``JOBS[job](rank, world, *args)`` on ``world`` gloo processes forked from this one
    (forked: a fresh interpreter would spend seconds importing torch again)."""
    mp.start_processes(_worker, args=(world, free_port(), job, args), nprocs=world, join=True,
                       start_method="fork")


# --------------------------------------------------------------------------------------------
# One training step: losses, gradients, statistics


CASES = {  # name: (layers, n1, n2, dual): uneven mixes, one and two layers; and the BNLSTM
    "1layer-2:4": (1, 2, 4, True),
    "2layers-6:2": (2, 6, 2, True),
    "bnlstm-2layers-4:2": (2, 4, 2, False),
    "gru-4:2": (1, 4, 2, None),  # torch's BatchNorm1d over the real frames (ranks: unequal)
}
T, D, K, H = 7, 5, 4, 6


def make_model(layers: int, dual: bool | None = True):
    from actrec.nn.models import GRUClassifier, NormLSTMClassifier

    torch.manual_seed(3)
    if dual is None:  # no dropout: the comparison is about the statistics alone
        return GRUClassifier(D, K, hidden=H, layers=layers, recurrent_dropout=0.0, fc=5,
                             dropout=0.0).double().train()
    model = NormLSTMClassifier(D, K, hidden=H, layers=layers, max_len=T, dual=dual).double()
    with torch.no_grad():  # alphas away from their floors: their gradients are not clipped
        for name, p in model.named_parameters():
            if name.endswith("alpha"):
                p.copy_(torch.tensor([0.81, 0.68]))
    return model.train()


def make_batch(n1: int, n2: int):
    """A global batch: D1 rows then D2 rows, some rows padded, some frames unlabelled."""
    g = torch.Generator().manual_seed(n1 * 10 + n2)
    n = n1 + n2
    x = torch.randn(T, n, D, generator=g, dtype=torch.float64)
    y = torch.randint(0, K, (T, n), generator=g)
    y[0, 1] = -1
    mask = torch.ones(T, n, dtype=torch.bool)
    mask[T - 2 :, 0] = False  # a short window of D1
    mask[T - 3 :, n - 1] = False  # a short window of D2
    y[~mask] = -1
    domain = torch.tensor([0] * n1 + [1] * n2)
    return x, y, mask, domain


def share(n1: int, n2: int, rank: int, world: int) -> torch.Tensor:
    """Global indices of rank's rows: its D1 share, then its D2 share."""
    from actrec.data.windows import share_of

    a, b = share_of(n1, rank, world), share_of(n2, rank, world)
    return torch.cat([torch.arange(a.start, a.stop), n1 + torch.arange(b.start, b.stop)])


def one_step(model, x, y, mask, domain, loss_fn):
    logits = model(x, domain, mask=mask)
    loss, to_backward = loss_fn(logits)
    to_backward.backward()
    return logits.detach(), float(loss.detach())


def _step_job(rank: int, world: int, out: str) -> None:
    for sync_bn in (True, False):
        _step(rank, world, Path(out) / f"sync{sync_bn}-rank{rank}.pt", sync_bn)


def _step(rank: int, world: int, out: Path, sync_bn: bool) -> None:
    from actrec.distributed import current

    ctx = current(sync_bn)
    results = {}
    for name, (layers, n1, n2, dual) in CASES.items():
        model = make_model(layers, dual)
        x, y, mask, domain = make_batch(n1, n2)
        rows = share(n1, n2, rank, world)
        ddp = ctx.wrap(model, torch.device("cpu"))
        logits, loss = one_step(
            ddp, x[:, rows], y[:, rows], mask[:, rows], domain[rows],
            lambda z, y=y[:, rows], m=mask[:, rows]: ctx.frame_loss(z, y, m, "all"))
        ctx.unwrap(model)
        results[name] = {
            "loss": loss, "logits": logits, "rows": rows,
            "grads": {k: p.grad.clone() for k, p in model.named_parameters()
                      if p.grad is not None},
            "buffers": {k: b.clone() for k, b in model.named_buffers()},
        }
    ctx.close()
    torch.save(results, out)


def reference_step(name: str):
    """The step of one process holding the whole batch (the fused op where it is built)."""
    from actrec.losses import frame_loss

    layers, n1, n2, dual = CASES[name]
    model = make_model(layers, dual)
    x, y, mask, domain = make_batch(n1, n2)
    logits, loss = one_step(model, x, y, mask, domain,
                            lambda z: (frame_loss(z, y, mask, "all"),) * 2)
    return {"loss": loss, "logits": logits,
            "grads": {k: p.grad.clone() for k, p in model.named_parameters()
                      if p.grad is not None},
            "buffers": {k: b.clone() for k, b in model.named_buffers()}}


@pytest.fixture(scope="module")
def stepped(tmp_path_factory):
    """Both ranks' results of one step of every case, with sync on and off."""
    folder = tmp_path_factory.mktemp("step")
    spawn("step", str(folder))
    return {sync: [torch.load(folder / f"sync{sync}-rank{r}.pt") for r in range(WORLD)]
            for sync in (True, False)}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CASES))
def test_two_processes_equal_one_holding_the_global_batch(stepped, name):
    ref = reference_step(name)
    ranks = [r[name] for r in stepped[True]]
    for r in ranks:
        assert r["loss"] == pytest.approx(ref["loss"], rel=1e-12, abs=1e-12)
        # Each rank's outputs are the global batch's outputs of its rows.
        torch.testing.assert_close(r["logits"], ref["logits"][:, r["rows"]], rtol=1e-10,
                                   atol=1e-12)
        # Gradients after DDP's average: the single-process gradients, alphas included.
        assert set(r["grads"]) == set(ref["grads"])
        for k, g in ref["grads"].items():
            torch.testing.assert_close(r["grads"][k], g, rtol=1e-9, atol=1e-12, msg=k)
        # Running statistics (both domains, every timestep) and trained lengths.
        for k, b in ref["buffers"].items():
            torch.testing.assert_close(r["buffers"][k], b, rtol=1e-10, atol=1e-12, msg=k)
    alphas = [k for k in ref["grads"] if k.endswith("alpha")]
    assert all(float(ref["grads"][k].abs().min()) > 1e-6 for k in alphas)
    assert bool(alphas) == bool(CASES[name][3])  # the DDLSTM's alphas are checked, nonzero
    assert any("running_mean" in k for k in ref["buffers"])


@pytest.mark.slow
def test_per_rank_statistics_are_a_different_model(stepped):
    """--sync-bn off: each rank normalises with its own rows' statistics, so outputs and
    running statistics are not the global batch's (what the synchronised test guards)."""
    ref = reference_step("2layers-6:2")
    r = stepped[False][0]["2layers-6:2"]
    key = "rnn.layers.0.bn_h.running_mean"
    assert float((r["buffers"][key] - ref["buffers"][key]).abs().max()) > 1e-3
    assert float((r["logits"] - ref["logits"][:, r["rows"]]).abs().max()) > 1e-3


def test_synchronised_op_equals_the_reference_and_its_gradients_are_exact():
    """One process (a group of one): the op is the reference DDBN / BN of its rows, and its
    hand-written backward passes float64 gradcheck, alpha included."""
    from actrec.ops.ddbn_reference import bn_reference, ddbn_reference
    from actrec.ops.ddbn_sync import RowPartition, sync_bn, sync_ddbn

    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        t, n, c, n1 = 3, 7, 4, 3
        h = torch.randn(t, n, c, dtype=torch.float64, requires_grad=True)
        alpha = torch.tensor([0.8, 0.7], dtype=torch.float64, requires_grad=True)
        gamma = torch.rand(c, dtype=torch.float64, requires_grad=True)
        beta = torch.randn(c, dtype=torch.float64, requires_grad=True)
        mask = torch.ones(t, n, dtype=torch.bool)
        mask[2:, 1] = False
        mask[1:, 6] = False
        for split in (n1, n):  # two domains; one domain (plain batch norm, exactly)
            part = RowPartition.gather(dist.group.WORLD, n, split, mask, t)
            got = sync_ddbn(h, alpha, part, gamma, beta)
            want = ddbn_reference(h, alpha, split, gamma, beta, mask=mask)
            for a, b in zip(got, want):
                torch.testing.assert_close(a, b.detach(), rtol=1e-12, atol=1e-14)
            assert torch.autograd.gradcheck(
                lambda h, a, g, b, part=part: sync_ddbn(h, a, part, g, b)[0],
                (h, alpha, gamma, beta))
        part = RowPartition.gather(dist.group.WORLD, n, n, mask, t)
        for a, b in zip(sync_bn(h, part, gamma, beta), bn_reference(h, gamma, beta, mask=mask)):
            torch.testing.assert_close(a, b.detach(), rtol=1e-12, atol=1e-14)
        assert torch.autograd.gradcheck(lambda h, g, b: sync_bn(h, part, g, b)[0],
                                        (h, gamma, beta))
    finally:
        dist.destroy_process_group()


def test_synchronised_torch_batch_norm_equals_torch_in_a_group_of_one():
    """A torch BatchNorm1d / 2d forward through ``sync_torch_batch_norm`` (any input layout):
    outputs, input and affine gradients, running statistics (momentum and cumulative) and the
    batch counter as torch's own module gives them."""
    from actrec.ops.ddbn_sync import sync_torch_batch_norm

    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        torch.manual_seed(1)
        for make, shape in ((lambda: torch.nn.BatchNorm1d(3), (9, 3)),
                            (lambda: torch.nn.BatchNorm1d(3, momentum=None), (4, 3, 5)),
                            (lambda: torch.nn.BatchNorm2d(3), (2, 3, 4, 2))):
            ours, theirs = make().double(), make().double()
            with torch.no_grad():
                ours.weight.uniform_(0.5, 1.5)
                ours.bias.uniform_(-1, 1)
            theirs.load_state_dict(ours.state_dict())
            for _ in range(2):  # running statistics after two batches
                x = (3 * torch.randn(*shape, dtype=torch.float64) + 1).requires_grad_()
                up = torch.randn(*shape, dtype=torch.float64)
                y = sync_torch_batch_norm(ours, x, dist.group.WORLD)
                (gx,) = torch.autograd.grad((y * up).sum(), [x], retain_graph=True)
                (y * up).sum().backward()
                x2 = x.detach().clone().requires_grad_()
                y2 = theirs(x2)
                (y2 * up).sum().backward()
                torch.testing.assert_close(y, y2, rtol=1e-12, atol=1e-12)
                torch.testing.assert_close(gx, x2.grad, rtol=1e-10, atol=1e-12)
            for a, b in zip(ours.state_dict().values(), theirs.state_dict().values()):
                torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(ours.weight.grad, theirs.weight.grad)
            torch.testing.assert_close(ours.bias.grad, theirs.bias.grad)
    finally:
        dist.destroy_process_group()


# --------------------------------------------------------------------------------------------
# Training runs: resume with another number of processes


def make_store(path: Path, dim: int, classes: int, seed: int) -> Path:
    """A real Zarr feature store: 6 training and 2 test videos of 12..40 frames whose features
    encode their labels (segments of 4 frames)."""
    from actrec.io.features import FeatureStore

    rng = np.random.default_rng(seed)
    train, test = [f"tr{i}" for i in range(6)], [f"te{i}" for i in range(2)]
    store = FeatureStore.open_or_create(
        path, dataset=f"toy{seed}", split_scheme="default",
        classes=[f"c{k}" for k in range(classes)], splits={"1": {"train": train, "test": test}},
        extractor="toy", extractor_config={"seed": seed}, lookahead=0, dtype="float32")
    centres = rng.normal(size=(classes, dim))
    for vid in train + test:
        t = int(rng.integers(12, 40))
        y = np.repeat(rng.integers(0, classes, size=t // 4 + 1), 4)[:t]
        x = centres[y] + 0.5 * rng.normal(size=(t, dim))
        store.write_video(vid, x.astype(np.float32), y, fps=15.0, source=None)
    return path


def train_spec(root: Path, iterations: int, **kw):
    from actrec.train import TrainSpec

    base = {"model": "ddlstm", "d1": root / "a.zarr", "d2": root / "b.zarr",
            "model_options": {"hidden": 8, "layers": 2}, "history": 10,
            "iterations": iterations, "mix": (4, 2), "lr": 0.01, "optimizer": "adam",
            "log_every": 1, "checkpoint_every": 3, "windows": "random", "loss_frames": "all",
            "seed": 5, "select_on_test": True, "val_every": 3}
    base.update(kw)
    return TrainSpec(**base)


def _train_job(rank: int, world: int, root: str) -> None:
    from actrec.train import train_model

    root = Path(root)
    train_model(train_spec(root, 6), root / "dist-6")  # uninterrupted, 2 processes
    train_model(train_spec(root, 3), root / "dist-3-then-1")  # stopped after 3
    train_model(train_spec(root, 6), root / "1-then-dist")  # 3 done by one process: resumed
    train_model(transfer_spec(root), root / "dist-transfer")
    train_model(train_spec(root, 3, sync_bn=False), root / "dist-3-unsynced")


def transfer_spec(root: Path):
    """Pre-training on D2, fine-tuning on D1: single-domain batches (alphas get no gradient).
    (Batch norm over 2 rows leaves gradients of rounding size that Adam's first steps blow up
    to whole steps: batches of 6 and 4 keep the comparison about the distribution alone.)"""
    return train_spec(root, 0, protocol="transfer", pretrain_iters=2, finetune_iters=2,
                      mix=(4, 6))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from actrec.train import train_model

    root = tmp_path_factory.mktemp("runs")
    make_store(root / "a.zarr", dim=5, classes=3, seed=1)
    make_store(root / "b.zarr", dim=4, classes=2, seed=2)
    train_model(train_spec(root, 6), root / "single-6")
    train_model(train_spec(root, 3), root / "1-then-dist")
    train_model(transfer_spec(root), root / "single-transfer")
    train_model(train_spec(root, 3), root / "single-3")
    spawn("train", str(root))
    train_model(train_spec(root, 6), root / "dist-3-then-1")  # resumed by one process
    return root


def weights(run: Path) -> dict:
    from actrec.runs import load_checkpoint

    return load_checkpoint(run / "checkpoint.pt")["model"]


def logged(run: Path) -> list[dict]:
    import json

    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_resumed_with_another_process_count_ends_where_an_uninterrupted_run_does(runs):
    single = weights(runs / "single-6")
    moved = 0.0
    for name in ("dist-6", "dist-3-then-1", "1-then-dist"):
        other = weights(runs / name)
        assert set(other) == set(single)
        for key, value in single.items():
            # float32 training: only the order of sums differs between 1 and 2 processes.
            torch.testing.assert_close(other[key], value, rtol=1e-4, atol=2e-5,
                                       msg=f"{name}: {key}")
    first = weights(runs / "single-3")
    for key, value in single.items():
        if value.dtype.is_floating_point:
            moved = max(moved, float((value - first[key]).abs().max()))
    assert moved > 1e-2  # training moved the weights far beyond the tolerance above


@pytest.mark.slow
def test_transfer_and_per_rank_statistics_runs(runs):
    """Transfer (single-domain phases, a fresh optimiser between them) trains as one process
    does and rank 0 alone logs the fine-tuning start; --sync-bn off trains another model."""
    single, dist = weights(runs / "single-transfer"), weights(runs / "dist-transfer")
    for key, value in single.items():
        torch.testing.assert_close(dist[key], value, rtol=1e-4, atol=2e-5, msg=key)
    starts = [m for m in logged(runs / "dist-transfer") if m.get("event") == "start"]
    assert len(starts) == 1 and starts[0]["iteration"] == 3
    synced, unsynced = weights(runs / "single-3"), weights(runs / "dist-3-unsynced")
    key = "rnn.layers.0.bn_h.running_mean"
    assert float((synced[key] - unsynced[key]).abs().max()) > 1e-3


@pytest.mark.slow
def test_rank_zero_writes_one_log_and_records_the_processes(runs):
    import json

    from actrec.runs import load_checkpoint

    single, dist6 = logged(runs / "single-6"), logged(runs / "dist-6")
    steps = [m for m in dist6 if "loss" in m and "phase" in m]
    assert [m["iteration"] for m in steps] == [1, 2, 3, 4, 5, 6]  # once each: rank 0 logs
    for a, b in zip(steps, [m for m in single if "loss" in m and "phase" in m]):
        # The logged loss and accuracy are the global batch's, as one process has them.
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4)
        assert a["train_frame_accuracy"] == pytest.approx(b["train_frame_accuracy"], abs=1e-9)
    vals = [m["val"]["score"] for m in dist6 if "val" in m]
    assert vals == pytest.approx([m["val"]["score"] for m in single if "val" in m])
    assert (runs / "dist-6" / "best.pt").is_file()
    record = load_checkpoint(runs / "dist-6" / "checkpoint.pt")["distributed"]
    assert record == {"world_size": 2, "backend": "gloo", "sync_bn": True}
    config = json.loads((runs / "1-then-dist" / "config.json").read_text())
    assert config["distributed"] is None  # started by one process
    assert config["resumed"][-1]["distributed"]["world_size"] == 2


JOBS = {"step": _step_job, "train": _train_job}
