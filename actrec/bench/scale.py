"""``python -m actrec.bench scale [--json] [--steps N] [...]``

DDLSTM training throughput on 1 and 2 processes (gloo, this machine's CPUs), measured in the
same run: samples (windows) per second of the global batch, the speed-up over one process, and
the time spent in collectives per step as a fraction of the step.

Candidates, each one training step (forward, global-batch loss, backward, optimiser step) of the
same model on the same global batch, ``--threads`` torch threads per process:

- ``1 process``: one process holding the whole batch (the fused whole-sequence op when built);
- ``1 process, Python time loop``: the same without the fused op (the per-step path a
  synchronised layer takes: what sync costs beyond its collectives);
- ``2 processes, sync-bn on``: each rank holds half of the batch; DDBN / BN statistics are
  all-reduced every timestep (``actrec.ops.ddbn_sync``, a Python time loop), gradients by DDP;
- ``2 processes, sync-bn off``: per-rank statistics (the fused op), only DDP's all-reduce.

"collectives" is the wall time rank 0 spends inside ``torch.distributed`` calls made from
Python (the statistics' all-reduces and all-gathers and the loss's counts), waiting for the
other rank included; DDP's gradient all-reduce runs inside its C++ reducer, overlapped with the
backward, so it is reported apart: one all-reduce of all gradients, timed alone.
Timings on a shared machine are noisy: read the ratios, and rerun on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Setup:
    dim: int = 64
    classes: int = 10
    hidden: int = 64
    layers: int = 2
    history: int = 32
    n1: int = 16
    n2: int = 16
    steps: int = 8
    warmup: int = 2
    threads: int = 1


CANDIDATES = (  # (name, processes, sync_bn, fused whole-sequence op allowed)
    ("1 process", 1, True, True),
    ("1 process, Python time loop", 1, True, False),
    ("2 processes, sync-bn on", 2, True, True),
    ("2 processes, sync-bn off", 2, False, True),
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _batch(setup: Setup):
    """The global batch: D1 rows then D2 rows, a few windows padded at their end."""
    import torch

    g = torch.Generator().manual_seed(0)
    n = setup.n1 + setup.n2
    x = torch.randn(setup.history, n, setup.dim, generator=g)
    y = torch.randint(0, setup.classes, (setup.history, n), generator=g)
    mask = torch.ones(setup.history, n, dtype=torch.bool)
    mask[setup.history // 2 :, :: max(1, n // 4)] = False
    y[~mask] = -1
    domain = torch.tensor([0] * setup.n1 + [1] * setup.n2)
    return x, y, mask, domain


class _CollectiveClock:
    """Wall time inside ``torch.distributed`` collectives called from Python (patched)."""

    NAMES = ("all_reduce", "all_gather", "broadcast")

    def __init__(self) -> None:
        import torch.distributed as dist

        self.seconds = 0.0
        self.calls = 0
        self._orig = {k: getattr(dist, k) for k in self.NAMES}
        for name, fn in self._orig.items():
            setattr(dist, name, self._timed(fn))

    def _timed(self, fn):
        def call(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - t0
                self.calls += 1
        return call

    def restore(self) -> None:
        import torch.distributed as dist

        for name, fn in self._orig.items():
            setattr(dist, name, fn)


def _rank(rank: int, world: int, port: int, setup: Setup, sync_bn: bool, fused: bool,
          out: str) -> None:
    import torch
    import torch.distributed as dist

    from actrec.data.windows import share_of
    from actrec.distributed import current
    from actrec.losses import frame_loss
    from actrec.nn.models import NormLSTMClassifier

    torch.set_num_threads(setup.threads)
    ctx = None
    if world > 1:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        dist.init_process_group("gloo", rank=rank, world_size=world)
        ctx = current(sync_bn)
    torch.manual_seed(0)
    model = NormLSTMClassifier(setup.dim, setup.classes, hidden=setup.hidden,
                               layers=setup.layers, max_len=setup.history).train()
    for m in model.modules():
        if hasattr(m, "fused"):
            m.fused = fused
    x, y, mask, domain = _batch(setup)
    if ctx is not None:
        a, b = share_of(setup.n1, rank, world), share_of(setup.n2, rank, world)
        rows = torch.cat([torch.arange(a.start, a.stop), setup.n1 + torch.arange(b.start, b.stop)])
        x, y, mask, domain = x[:, rows], y[:, rows], mask[:, rows], domain[rows]
    forward = model if ctx is None else ctx.wrap(model, torch.device("cpu"), find_unused=False)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step() -> None:
        logits = forward(x, domain, mask=mask)
        if ctx is None:
            to_backward = frame_loss(logits, y, mask, "all")
        else:
            _, to_backward = ctx.frame_loss(logits, y, mask, "all")
        optimizer.zero_grad(set_to_none=True)
        to_backward.backward()
        optimizer.step()
        model.after_optimizer_step()

    for _ in range(setup.warmup):
        step()
    clock = _CollectiveClock() if ctx is not None else None
    times, comm = [], []
    for _ in range(setup.steps):
        if ctx is not None:
            dist.barrier()  # every step starts together: a step's time is the slowest rank's
        before = clock.seconds if clock else 0.0
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
        comm.append((clock.seconds - before) if clock else 0.0)
    grads = 0.0
    if ctx is not None:
        clock.restore()
        flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
        samples = []
        for _ in range(5):
            dist.barrier()
            t0 = time.perf_counter()
            dist.all_reduce(flat)
            samples.append(time.perf_counter() - t0)
        grads = statistics.median(samples)
        ctx.close()
    if rank == 0:
        Path(out).write_text(json.dumps({
            "step_s": statistics.median(times), "collectives_s": statistics.median(comm),
            "grad_allreduce_s": grads,
            "parameters": sum(p.numel() for p in model.parameters())}))
    if ctx is not None:
        dist.destroy_process_group()


def run(setup: Setup) -> list[dict[str, Any]]:
    """Measure every candidate (each in fresh processes); rows with ratios to 1 process."""
    import torch.multiprocessing as mp

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, world, sync, fused in CANDIDATES:
            out = str(Path(tmp) / f"{len(rows)}.json")
            mp.start_processes(_rank, args=(world, _free_port(), setup, sync, fused, out),
                               nprocs=world, join=True, start_method="spawn")
            r = json.loads(Path(out).read_text())
            n = setup.n1 + setup.n2
            rows.append({"candidate": name, "processes": world, "sync_bn": sync, "fused": fused,
                         "step_ms": 1e3 * r["step_s"], "samples_per_s": n / r["step_s"],
                         "collectives_ms": 1e3 * r["collectives_s"],
                         "collectives_fraction": r["collectives_s"] / r["step_s"],
                         "grad_allreduce_ms": 1e3 * r["grad_allreduce_s"],
                         "grad_allreduce_fraction": r["grad_allreduce_s"] / r["step_s"],
                         "parameters": r["parameters"]})
    base = rows[0]["samples_per_s"]
    for r in rows:
        r["speedup"] = r["samples_per_s"] / base
    return rows


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m actrec.bench scale",
                                description="DDLSTM training samples/s on 1 and 2 processes.")
    p.add_argument("--json", action="store_true")
    for field, default in asdict(Setup()).items():
        p.add_argument(f"--{field}", type=int, default=default)
    args = p.parse_args(argv)
    setup = Setup(**{k: getattr(args, k) for k in asdict(Setup())})
    if setup.n1 % 2 or setup.n2 % 2:
        p.error("--n1 and --n2 must be even (2 processes hold half of each)")
    rows = run(setup)
    if args.json:
        print(json.dumps({"benchmark": "scale", "setup": asdict(setup), "cpus": os.cpu_count(),
                          "results": rows}, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"DDLSTM {setup.layers}x{setup.hidden}, T={setup.history}, batch "
                        f"{setup.n1}+{setup.n2}, {setup.threads} thread(s)/process, median of "
                        f"{setup.steps} steps")
    for col in ("candidate", "samples/s", "x 1 process", "step ms", "collectives ms",
                "% of step", "grad all-reduce ms (alone)", "% of step "):
        table.add_column(col, justify="left" if col == "candidate" else "right")
    for r in rows:
        table.add_row(r["candidate"], f"{r['samples_per_s']:.1f}", f"{r['speedup']:.2f}x",
                      f"{r['step_ms']:.0f}", f"{r['collectives_ms']:.0f}",
                      f"{100 * r['collectives_fraction']:.0f}%",
                      f"{r['grad_allreduce_ms']:.2f}", f"{100 * r['grad_allreduce_fraction']:.1f}%")
    Console().print(table)
    return 0


if __name__ == "__main__":  # pragma: no cover
    import sys

    sys.exit(main(sys.argv[1:]))
