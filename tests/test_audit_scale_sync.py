"""Synchronised DDBN / BN modules on 2 gloo processes whose rows are split unevenly.

Training through ``actrec train`` splits every domain evenly over the processes, but the
synchronised norms (``actrec.ops.ddbn_sync``) promise the global batch's statistics for ANY
row counts: a process holding only D1 rows, only padding, or no row at all, and timesteps where
a domain has a single real frame. Each spawned rank runs the real norm module
(``DualDomainBatchNorm`` / ``SequenceBatchNorm``) on its rows; the test process runs the same
module on the whole batch and compares outputs, gradients (alpha's included), running
statistics and trained lengths in float64.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import actrec.nn.ddbn
import actrec.ops.ddbn_sync  # noqa: F401  (imported once, before forking)

T, C = 5, 3

# name: (n1, n2, rank 0's (D1, D2) row counts, dual); rank 1 holds the rest.
CASES = {
    "rank0-only-d1-rank1-only-d2": (3, 2, (3, 0), True),
    "rank1-only-padding": (3, 2, (2, 1), True),
    "rank1-no-rows": (2, 3, (2, 3), True),
    "one-real-d2-frame-late": (3, 3, (1, 2), True),
    "one-domain-uneven": (5, 0, (1, 0), True),
    "d2-windows-shorter": (2, 4, (1, 3), True),  # D2's trained length stops 2 steps early
    "plain-bn-rank1-only-padding": (3, 2, (2, 1), False),
}


def _worker(rank: int, world: int, port: int, job, args: tuple) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        job(rank, world, *args)
    finally:
        dist.destroy_process_group()


def spawn_jobs(job, *args, world: int = 2) -> None:
    """``job(rank, world, *args)`` on ``world`` gloo processes forked from this one."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(_worker, args=(world, port, job, args), nprocs=world, join=True,
                       start_method="fork")


def global_batch(name: str):
    n1, n2, _, _ = CASES[name]
    n = n1 + n2
    g = torch.Generator().manual_seed(len(name))
    h = 2 * torch.randn(T, n, C, generator=g, dtype=torch.float64) + 1
    up = torch.randn(T, n, C, generator=g, dtype=torch.float64)
    mask = torch.ones(T, n, dtype=torch.bool)
    mask[T - 1 :, 0] = False
    if name.endswith("rank1-only-padding"):
        mask[:, [2, 4]] = False  # rank 1's rows: D1 row 2 and D2 row 4
    if name == "d2-windows-shorter":
        mask[T - 2 :, n1:] = False
    if name == "one-real-d2-frame-late":
        mask[2:, 3:5] = False  # timesteps 2..4: D2 row 5 alone is real
    return h, up, mask


def rows_of(name: str, rank: int) -> torch.Tensor:
    n1, n2, (a1, a2), _ = CASES[name]
    if rank == 0:
        return torch.cat([torch.arange(0, a1), n1 + torch.arange(0, a2)])
    return torch.cat([torch.arange(a1, n1), n1 + torch.arange(a2, n2)])


def make_norm(dual: bool):
    from actrec.nn.ddbn import DualDomainBatchNorm, SequenceBatchNorm

    norm = (DualDomainBatchNorm(C, max_len=T + 2) if dual
            else SequenceBatchNorm(C, max_len=T + 2)).double()
    with torch.no_grad():
        norm.weight.copy_(torch.tensor([0.7, 1.3, 0.4]))
        norm.bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
    return norm.train()


def run_norm(name: str, rows: torch.Tensor, sync=None):
    """Two training forwards of the norm on ``rows`` of the global batch (timesteps 0..T-1,
    then the same again from t0 = 2), backward of ``sum(y * up)``; returns what to compare."""
    n1, _, _, dual = CASES[name]
    h, up, mask = global_batch(name)
    h, up, mask = h[:, rows].clone().requires_grad_(), up[:, rows], mask[:, rows]
    domain = (rows >= n1).long()
    norm = make_norm(dual)
    alpha = torch.tensor([0.83, 0.71], dtype=torch.float64, requires_grad=True)
    outs, total = [], 0.0
    for t0 in (0, 2):
        kw = {} if sync is None else {"sync": sync(domain, mask, t0)}
        y = (norm(h, alpha, domain, t0, mask, **kw) if dual else norm(h, t0, mask, **kw))
        total = total + (y * up).sum()
        outs.append(y.detach())
    total.backward()
    return {"y": outs, "grad_h": h.grad, "grad_alpha": alpha.grad, "grad_gamma": norm.weight.grad,
            "grad_beta": norm.bias.grad,
            "buffers": {k: b.clone() for k, b in norm.named_buffers()}}


def _norm_job(rank: int, world: int, out: str) -> None:
    from actrec.ops.ddbn_sync import RowPartition

    results = {}
    for name, (_, _, _, dual) in CASES.items():
        rows = rows_of(name, rank)

        def partition(domain, mask, t0, dual=dual):
            # A layer's partition covers the sequence from timestep 0; the norm reads its
            # timesteps t0 .. t0+T-1 (RowPartition.at).
            n1 = int((domain == 0).sum()) if dual else domain.numel()
            ahead = torch.ones(t0, mask.shape[1], dtype=torch.bool)
            return RowPartition.gather(dist.group.WORLD, domain.numel(), n1,
                                       torch.cat([ahead, mask]), t0 + T)

        results[name] = run_norm(name, rows, partition)
    torch.save(results, Path(out) / f"rank{rank}.pt")


@pytest.fixture(scope="module")
def normed(tmp_path_factory):
    folder = tmp_path_factory.mktemp("norms")
    spawn_jobs(_norm_job, str(folder))
    return [torch.load(folder / f"rank{r}.pt") for r in range(2)]


@pytest.mark.parametrize("name", list(CASES))
def test_any_split_of_the_rows_gives_the_global_batch_statistics(normed, name):
    n1, n2, _, dual = CASES[name]
    whole = torch.arange(n1 + n2)
    ref = run_norm(name, whole)
    ranks = [r[name] for r in normed]
    for rank, got in enumerate(ranks):
        rows = rows_of(name, rank)
        for a, b in zip(got["y"], ref["y"]):
            torch.testing.assert_close(a, b[:, rows], rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(got["grad_h"], ref["grad_h"][:, rows], rtol=1e-9, atol=1e-12)
        for k, b in ref["buffers"].items():  # running statistics, trained lengths
            torch.testing.assert_close(got["buffers"][k], b, rtol=1e-10, atol=1e-12, msg=k)
    # Parameter gradients: each process's share; summed (DDP) they are the whole batch's.
    for k in ("grad_gamma", "grad_beta") + (("grad_alpha",) if dual and n1 and n2 else ()):
        total = sum(r[k] for r in ranks)
        torch.testing.assert_close(total, ref[k], rtol=1e-9, atol=1e-12, msg=k)
    if dual and n1 and n2:
        assert float(ref["grad_alpha"].abs().min()) > 1e-8  # the alpha check means something
    if name == "d2-windows-shorter":  # per-domain trained lengths (t0 = 2: reached T + 2 - 2)
        assert ref["buffers"]["trained_len"].tolist() == [T + 2, T]
