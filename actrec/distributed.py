"""Training on several processes and machines with torch.distributed (started by ``torchrun``).

``torchrun --nproc-per-node K -m actrec train ...`` starts K copies of ``actrec train``; each
finds its place in the environment torchrun sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``, ``MASTER_PORT``) and joins the process group (``join_from_env``): gloo on
CPU, NCCL on GPU (one GPU per process, ``cuda:LOCAL_RANK``). ``actrec.train.train_model`` then
trains with a ``Distributed`` (``current``) instead of alone:

- **The batch.** A global batch of ``N = n1 + n2`` windows is split so that every rank holds
  ``n1/W`` rows of D1 and ``n2/W`` of D2 (a mix that does not split is refused before anything
  runs, naming ``--mix``). The global batch's windows are a pure function of the seed and the
  iteration -- stride windows by construction (``actrec.data.sampling``), random windows
  because every rank draws the whole batch's choices from the same generator -- and each rank
  reads only its share of them (``actrec.data.windows.share_of``). This is "each rank samples
  its own windows, seeded per rank" made exact: rank r's windows are rows ``r*n/W ..`` of the
  one global stream, so training equals one process holding the whole batch, and a run resumes
  with another number of processes and still draws the same windows.
- **The loss** is the mean over the global batch's counted frames: each rank back-propagates
  ``W * (its cross-entropy sum) / (global frame count)``, so DDP's average over ranks is the
  single-process gradient exactly (``frame_loss``).
- **Batch statistics** (``--sync-bn on``, the default): the DDLSTM / BNLSTM layers reduce their
  per-(t, c), per-domain sums over all ranks in the forward and backward
  (``actrec.ops.ddbn_sync``), and so do torch batch norms (the ``gru`` model's), so
  statistics, running statistics, outputs and gradients (alphas included) are those of the
  global batch. ``--sync-bn off`` keeps each rank's statistics: a
  different model (the batch statistics of ``N/W`` rows; with DDBN's tanh weights over ``N/W``
  rows), whose running statistics are rank 0's.
- **Writing.** Only rank 0 shows progress, logs metrics, evaluates and writes checkpoints
  (atomically, ``actrec.runs``); every rank validates (the schedule and early stopping must
  agree everywhere), after rank 0's running statistics are broadcast.
- **Failures.** Errors name their process; a process whose collective fails because another
  one died stops at once with an ``ActrecError`` saying so (``session``), not at the timeout.
- **Randomness.** Rank 0 runs the torch generator of a single-process run; other ranks reseed
  theirs from ``(seed, rank, start iteration)``. Dropout masks therefore depend on the number of
  processes (models without dropout, the defaults, do not draw from it in training).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from actrec.errors import ActrecError, ConfigError

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = [
    "TORCHRUN_ENV",
    "Distributed",
    "check_mix",
    "current",
    "join_from_env",
    "launched",
    "peer_lost",
    "session",
    "sync_norms",
    "unused_parameters_possible",
]

TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
RANK_STREAM = 0xD157  # torch seeds of ranks > 0: (seed, RANK_STREAM, rank, start iteration)


def launched() -> bool:
    """Whether this process was started by torchrun (its environment variables are set)."""
    return all(os.environ.get(k) for k in TORCHRUN_ENV)


def join_from_env(device: str = "cpu") -> bool:
    """Join the process group torchrun describes in the environment: NCCL when ``device`` is a
    CUDA device, gloo otherwise. Returns True when this call joined it (False outside torchrun
    or when a group exists already). ``ConfigError`` for a malformed environment."""
    import torch
    import torch.distributed as dist

    if not launched() or not dist.is_available() or dist.is_initialized():
        return False
    try:
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local = int(os.environ["LOCAL_RANK"])
    except ValueError:
        raise ConfigError("torchrun environment: RANK, WORLD_SIZE and LOCAL_RANK must be "
                          "integers") from None
    cuda = str(device).startswith("cuda")
    if cuda:
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {device} under torchrun but torch sees no CUDA device")
        torch.cuda.set_device(local % torch.cuda.device_count())
    # Rank 0 alone evaluates (--eval-every) and writes while the others wait at the next
    # collective: a long evaluation must not time the job out (torch's default: 10-30 min).
    minutes = float(os.environ.get("ACTREC_DIST_TIMEOUT_MIN", "180"))
    dist.init_process_group("nccl" if cuda else "gloo", rank=rank, world_size=world,
                            timeout=timedelta(minutes=minutes))
    return True


@contextmanager
def session(device: str = "cpu") -> Iterator[bool]:
    """Within torchrun: join the process group for the block and leave it afterwards; yields
    whether this process is rank 0 (True outside torchrun)."""
    import torch.distributed as dist

    joined = join_from_env(device)
    try:
        yield not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0
    except ActrecError as exc:  # printed by every process: say which
        if joined:
            who = f"process {os.environ.get('RANK')} of {os.environ.get('WORLD_SIZE')}"
            exc.args = (f"{who}: {exc}", *exc.args[1:])
        raise
    except RuntimeError as exc:
        if joined and peer_lost(exc):
            raise ActrecError(
                f"process {os.environ.get('RANK')} of {os.environ.get('WORLD_SIZE')}: another "
                f"process of this torchrun job stopped (its own error is printed above or in "
                f"its node's log), so this one stops too ({_first_line(exc)})") from None
        raise
    finally:
        if joined:
            dist.destroy_process_group()


# What gloo / NCCL / the store say when a peer process died or stopped answering.
_PEER_LOST = ("connection closed by peer", "connection reset by peer", "broken pipe",
              "remote worker", "remote process", "timed out", "timeout", "socket closed")


def peer_lost(exc: BaseException) -> bool:
    """Whether ``exc`` is a collective failing because another process died or hung."""
    import torch.distributed as dist

    if isinstance(exc, getattr(dist, "DistError", ())):
        return True
    text = str(exc).lower()
    return any(marker in text for marker in _PEER_LOST)


def _first_line(exc: BaseException) -> str:
    """The reason in ``exc``'s first line, without gloo's ``[file.cc:line]`` prefix."""
    import re

    line = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
    return re.sub(r"^\[[^\]]*\]\s*", "", line).split(". ")[0]


def check_mix(mixes: Sequence[Sequence[int]], world: int, what: str = "--mix") -> None:
    """``ConfigError`` naming ``what`` unless every window count of every batch mix splits
    evenly over ``world`` processes."""
    for mix in mixes:
        bad = [(k, m) for k, m in enumerate(mix) if m % world]
        if bad:
            k, m = bad[0]
            raise ConfigError(
                f"{what} {':'.join(str(v) for v in mix)}: n{k + 1} = {m} windows of D{k + 1} do "
                f"not split evenly over {world} processes (every rank holds n{k + 1}/{world} of "
                f"them); use a multiple of {world}")


def sync_norms(model: Any, group: Any) -> int:
    """Point every batch-normalised LSTM layer and every torch batch norm (e.g. the ``gru``
    model's) of ``model`` at ``group`` (None: back to per-process statistics); returns the
    number of layers synchronised."""
    from torch import nn

    from actrec.nn.lstm import NormLSTMLayer

    layers = [m for m in model.modules() if isinstance(m, NormLSTMLayer)]
    for layer in layers:
        layer.sync_group = group
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
             and not isinstance(m, nn.SyncBatchNorm)]
    for norm in norms:  # an instance attribute shadows the class's forward
        if group is None:
            norm.__dict__.pop("forward", None)
        else:
            norm.forward = _SyncedBatchNorm(norm, group)
    return len(layers) + len(norms)


def unused_parameters_possible(spec: Any, model: Any) -> bool:
    """Whether a training step of ``spec`` can leave a trainable parameter of ``model``
    without a gradient: a phase whose batches lack one of the run's datasets (that dataset's
    own parameters, the DDBN alphas) or a one-dataset run of a model with alphas (a
    single-domain batch is plain batch norm). DDP must then look for such parameters at every
    step (``find_unused_parameters``), which costs a graph traversal and warns when none are."""
    from actrec.protocols import phase_mix

    n = len(spec.datasets)
    mixes = [phase_mix(spec, i, n) for i, count in enumerate(spec.phase_iterations) if count]
    if any(0 in mix for mix in mixes):
        return True
    alphas = any(p.requires_grad and name.endswith("alpha")
                 for name, p in model.named_parameters())
    return n < 2 and alphas


class _SyncedBatchNorm:
    """A torch batch norm's forward whose training statistics are those of all processes'
    rows (``actrec.ops.ddbn_sync.sync_torch_batch_norm``); evaluation as the module's own."""

    def __init__(self, module: Any, group: Any) -> None:
        self.module, self.group = module, group

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        module = self.module
        if not module.training:
            return type(module).forward(module, x)
        from actrec.ops.ddbn_sync import sync_torch_batch_norm

        return sync_torch_batch_norm(module, x, self.group)


@dataclass
class Distributed:
    """This process's place in a distributed training run, and the collectives it needs."""

    rank: int
    world: int
    local_rank: int
    backend: str
    sync_bn: bool
    norm_group: Any = None  # the group batch statistics are reduced over (sync_bn)

    @property
    def main(self) -> bool:
        """Rank 0: the process that logs and writes."""
        return self.rank == 0

    @property
    def part(self) -> tuple[int, int]:
        """``(rank, world)``: which share of every batch this process holds."""
        return self.rank, self.world

    def record(self) -> dict[str, Any]:
        """What a run records of how it was distributed."""
        return {"world_size": self.world, "backend": self.backend, "sync_bn": self.sync_bn}

    # -- setup
    def device(self, device: torch.device) -> torch.device:
        """``cuda:LOCAL_RANK`` for a CUDA run (one GPU per process), else ``device``."""
        import torch

        if device.type == "cuda":
            return torch.device("cuda", self.local_rank % torch.cuda.device_count())
        return device

    def check(self, spec: Any) -> None:
        """``ConfigError`` unless every batch the run will draw splits evenly over the ranks
        (every phase's mix, and the grown mixes of the ``sign`` schedule)."""
        from actrec.protocols import phase_mix

        n = len(spec.datasets)
        growths = spec.max_batch_growths if spec.lr_schedule == "sign" else 0
        for g in range(growths + 1):
            mixes = [phase_mix(spec, i, n, spec.batch_growth ** g)
                     for i, count in enumerate(spec.phase_iterations) if count]
            check_mix(mixes, self.world, "--mix" if g == 0 else
                      f"--mix grown {g} time(s) by --batch-growth {spec.batch_growth} to")

    def wrap(self, model: Any, device: torch.device, *, find_unused: bool = True) -> Any:
        """``model`` in DistributedDataParallel (gradients summed over ranks as averages:
        ``frame_loss`` scales for it); its layers' statistics synchronised when ``sync_bn``.
        Buffers are not broadcast at every forward: synchronised statistics are equal on every
        rank already, and per-rank ones (``--sync-bn off``) are meant to differ.
        ``find_unused``: some trainable parameters may get no gradient in a step (alphas and
        the other domain's input projection in single-domain batches); False saves DDP a
        graph traversal per step when every batch uses every parameter (joint training)."""
        import inspect

        from torch.nn.parallel import DistributedDataParallel

        if self.sync_bn:
            sync_norms(model, self.norm_group)
        if not any(p.requires_grad for p in model.parameters()):
            return model
        ids = [device.index] if device.type == "cuda" else None
        known = inspect.signature(DistributedDataParallel.__init__).parameters
        buffers = ({"forward_sync_buffers": False} if "forward_sync_buffers" in known
                   else {"broadcast_buffers": False})  # the newer name of the same switch
        return DistributedDataParallel(model, device_ids=ids, find_unused_parameters=find_unused,
                                       **buffers)

    def unwrap(self, model: Any) -> None:
        """Undo ``wrap``'s change to ``model`` (its layers' statistics per process again)."""
        sync_norms(model, None)

    def seed_torch(self, seed: int, start: int) -> None:
        """Reseed the torch generator of ranks > 0 (rank 0 keeps the single-process stream)."""
        import numpy as np
        import torch

        if self.rank:
            seq = np.random.SeedSequence([seed, RANK_STREAM, self.rank, start])
            torch.manual_seed(int(seq.generate_state(1, np.uint64)[0] >> np.uint64(1)))

    def close(self) -> None:
        """Release the statistics group."""
        import torch.distributed as dist

        if self.norm_group is not None:
            dist.destroy_process_group(self.norm_group)
            self.norm_group = None

    # -- collectives
    def _tensor(self, values: Sequence[float]) -> torch.Tensor:
        import torch

        device = torch.device("cuda", torch.cuda.current_device()) if self.backend == "nccl" \
            else torch.device("cpu")
        return torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)

    def sum(self, *values: float) -> list[float]:
        """Each value summed over all ranks."""
        import torch.distributed as dist

        t = self._tensor(values)
        dist.all_reduce(t)
        return t.cpu().tolist()

    def frame_loss(self, logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None,
                   rule: Any, start: torch.Tensor | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(loss, to_backward)`` for this rank's rows of the global batch: ``loss`` (no
        gradient) is ``actrec.losses.frame_loss`` of the global batch, the mean cross-entropy
        over all ranks' counted frames; ``to_backward`` is ``W * (this rank's cross-entropy
        sum) / (global count)``, whose gradient averaged over ranks (DDP) is the single-process
        gradient of ``loss``."""
        import torch
        import torch.nn.functional as F

        from actrec.losses import loss_frame_mask

        keep = loss_frame_mask(target, mask, rule, start)  # [T, n_local]
        if bool(keep.any()):
            local = F.cross_entropy(logits[keep], target[keep], reduction="sum")
        else:  # a zero that still depends on logits (every rank joins the backward)
            local = logits.sum() * 0.0
        total, count = self.sum(float(local.detach()), float(keep.sum()))
        count = max(count, 1.0)  # no counted frame anywhere: loss 0, gradients 0
        loss = torch.tensor(total / count, dtype=logits.dtype)
        return loss, local * (self.world / count)

    def broadcast_buffers(self, model: Any) -> None:
        """Every buffer of ``model`` (running statistics, ...) as rank 0 holds it."""
        import torch.distributed as dist

        for buf in model.buffers():
            dist.broadcast(buf.data, src=0)

    def agree(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank (a picklable object, e.g. a new run folder)."""
        import torch.distributed as dist

        box = [value if self.main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def everyone(self, value: Any) -> list[Any]:
        """Every rank's ``value`` (picklable), in rank order, on every rank."""
        import torch.distributed as dist

        box: list[Any] = [None] * self.world
        dist.all_gather_object(box, value)
        return box

    def barrier(self) -> None:
        import torch.distributed as dist

        dist.barrier()


def current(sync_bn: bool = True) -> Distributed | None:
    """The ``Distributed`` of this process when it belongs to an initialised process group of
    more than one process, else None (a plain single-process run). Collective: every rank
    calls it (it creates the group batch statistics are reduced over)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return None
    backend = str(dist.get_backend())
    ctx = Distributed(dist.get_rank(), dist.get_world_size(),
                      int(os.environ.get("LOCAL_RANK", dist.get_rank())), backend, bool(sync_bn))
    if sync_bn:  # its own group: never interleaved with DDP's gradient all-reduces
        ctx.norm_group = dist.new_group(backend=backend)
    return ctx


def rank_zero_value(make: Any) -> Any:
    """``make()`` computed on rank 0 only and shared with every rank (outside a distributed
    run: ``make()``). For values that must agree, e.g. a fresh run folder's name."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return make()
    box = [make() if dist.get_rank() == 0 else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]
