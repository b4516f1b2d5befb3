"""Batch norm over a batch whose rows are spread over processes: synchronised DDBN and BN.

With ``W`` processes each holding some rows of one training batch, the *global* batch is every
process's D1 rows in rank order, then every process's D2 rows in rank order; a row's place in it
is its global index ``j``, and the contribution weights ``tau_i(j)`` are those of
``shared/design/ddbn.md`` over the global ``N`` (made by ``actrec.ops.domains`` for the global
batch and sliced to this process's rows). Each statistic is then

    reduce (over this process's rows) -> one collective -> element-wise (this process's rows)

forward (each process's ``S_i``, weighted mean and two-pass ``sum w (h - mean)^2``, gathered in
one message and combined exactly, as SyncBatchNorm does) and backward (each domain's ``sum g``
and ``sum g (h - mu)``, one all-reduce), so statistics, outputs and gradients equal those of
one process holding the whole batch. Gradients of ``gamma``, ``beta`` and of the weights (hence
alpha) are this process's share: summed over processes they are the whole batch's (DDP sums
them, see ``actrec.distributed``).

The fused whole-sequence DDLSTM op cannot all-reduce between timesteps, so a synchronised layer
runs its time loop in Python with these functions (``actrec.nn.lstm``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor

from actrec.ops.domains import contribution_weights

__all__ = ["RowPartition", "sync_bn", "sync_ddbn", "sync_torch_batch_norm"]


@dataclass(frozen=True)
class RowPartition:
    """Where this process's rows sit in the global batch, and the global batch's real frames."""

    group: Any  # the torch.distributed process group the statistics are reduced over
    n1: int  # D1 rows of the global batch
    n: int  # rows of the global batch
    index: Tensor  # [n_local] int64: the global index of each local row (local D1 rows first)
    local_n1: int  # D1 rows of this process
    mask: Tensor  # [steps, n] bool: real frames of the global batch
    t0: int = 0  # the first timestep ``mask`` covers

    @property
    def steps(self) -> int:
        return int(self.mask.shape[0])

    @classmethod
    def gather(cls, group: Any, n_local: int, local_n1: int, mask: Tensor | None, steps: int,
               device: torch.device | None = None) -> RowPartition:
        """Exchange every process's row counts and masks (two all-gathers over ``group``).

        This process holds ``n_local`` rows, the first ``local_n1`` of them D1 (plain batch
        norm: all of them); ``mask [steps, n_local]`` True on real frames (None: all real)."""
        import torch.distributed as dist

        device = mask.device if mask is not None else (device or torch.device("cpu"))
        world = dist.get_world_size(group)
        rank = dist.get_rank(group)
        mine = torch.tensor([local_n1, n_local - local_n1], dtype=torch.long, device=device)
        counts = [torch.empty_like(mine) for _ in range(world)]
        dist.all_gather(counts, mine, group=group)
        c = torch.stack(counts).cpu()  # [W, 2]
        c1, c2 = c[:, 0].tolist(), c[:, 1].tolist()
        n1, n = sum(c1), sum(c1) + sum(c2)
        first1, first2 = sum(c1[:rank]), n1 + sum(c2[:rank])
        index = torch.cat([torch.arange(first1, first1 + c1[rank]),
                           torch.arange(first2, first2 + c2[rank])]).to(device)  # [n_local]
        widest = max(a + b for a, b in zip(c1, c2))
        m = torch.ones(steps, n_local, dtype=torch.bool, device=device) if mask is None \
            else mask.to(torch.bool)
        padded = torch.zeros(steps, widest, dtype=torch.uint8, device=device)
        padded[:, :n_local] = m
        masks = [torch.empty_like(padded) for _ in range(world)]
        dist.all_gather(masks, padded, group=group)
        d1 = [masks[q][:, : c1[q]] for q in range(world)]
        d2 = [masks[q][:, c1[q] : c1[q] + c2[q]] for q in range(world)]
        full = torch.cat(d1 + d2, 1).to(torch.bool)  # [steps, n]: global row order
        return cls(group, n1, n, index, local_n1, full)

    def at(self, t0: int, steps: int) -> RowPartition:
        """The same rows for timesteps ``t0 .. t0+steps-1`` of the sequence (``t0`` relative to
        this partition's own first timestep)."""
        return replace(self, mask=self.mask[t0 : t0 + steps], t0=self.t0 + t0)


def _stat_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _by_slot(per_slot: Tensor, n1: int) -> Tensor:
    """Rows ``:n1`` from slot 0, the others from the last slot: ``[K, T, n, C] -> [T, n, C]``."""
    return torch.cat([per_slot[0][:, :n1], per_slot[-1][:, n1:]], 1)


class _SyncNorm(torch.autograd.Function):
    """Weighted batch norm of the local rows ``h [T, n, C]`` with weights ``w [K, T, n]``
    (K = 2: DDBN, rows ``:n1`` normalised with slot 0 and the rest with slot 1; K = 1: plain
    BN), statistics summed over ``group``. Returns ``(y, mean [K,T,C], var [K,T,C])``."""

    @staticmethod
    def forward(ctx, h, w, gamma, beta, n1, eps, group):
        import torch.distributed as dist

        st = _stat_dtype(h.dtype)
        hs, ws = h.to(st), w.to(st)
        c = h.shape[2]
        # Reduce: this process's weight, mean and two-pass sum of squared deviations (a
        # statistic of its own rows: no E[h^2] - E[h]^2); all-gather them in one message.
        s_own = ws.sum(-1)  # [K, T]
        safe = torch.where(s_own > 0, s_own, torch.ones_like(s_own))[..., None]
        m_own = torch.einsum("ktn,tnc->ktc", ws, hs) / safe  # [K, T, C]
        d = hs[None] - m_own[:, :, None]  # [K, T, n, C]
        q_own = torch.einsum("ktn,ktnc->ktc", ws, d * d)  # [K, T, C]
        mine = torch.cat([s_own[..., None], m_own, q_own], -1)  # [K, T, 1 + 2C]
        every = [torch.empty_like(mine) for _ in range(dist.get_world_size(group))]
        dist.all_gather(every, mine, group=group)
        parts = torch.stack(every)  # [W, K, T, 1 + 2C]
        # Element-wise: combine exactly (Chan et al.): S = sum S_r, mu = sum S_r mu_r / S,
        # sum w (h - mu)^2 = sum_r [Q_r + S_r (mu_r - mu)^2].
        s_r, m_r, q_r = parts[..., :1], parts[..., 1 : 1 + c], parts[..., 1 + c :]
        s = s_r.sum(0)[..., 0]  # [K, T]
        s = torch.where(s > 0, s, torch.ones_like(s))  # S = 0 (no real frame): stats are 0
        mean = (s_r * m_r).sum(0) / s[..., None]  # [K, T, C]
        var = (q_r + s_r * (m_r - mean) ** 2).sum(0) / s[..., None]
        d = hs[None] - mean[:, :, None]  # [K, T, n, C]
        r = torch.rsqrt(var + eps)  # [K, T, C]
        y = _by_slot(d * r[:, :, None], n1) * gamma.to(st) + beta.to(st)  # [T, n, C]
        ctx.save_for_backward(h, w, gamma, mean, var, s)
        ctx.n1, ctx.eps, ctx.group = n1, eps, group
        ctx.mark_non_differentiable(mean, var)
        return y.to(h.dtype), mean, var

    @staticmethod
    def backward(ctx, grad_y, _grad_mean, _grad_var):
        import torch.distributed as dist

        h, w, gamma, mean, var, s = ctx.saved_tensors
        n1 = ctx.n1
        st = mean.dtype
        hs, ws, g, gam = h.to(st), w.to(st), grad_y.to(st), gamma.to(st)
        k = ws.shape[0]
        r = torch.rsqrt(var + ctx.eps)  # [K, T, C]
        d = hs[None] - mean[:, :, None]  # [K, T, n, C]
        # Reduce, all-reduce: per slot, sum_{j in D_i} g_j and sum_{j in D_i} g_j (h_j - mu_i).
        sums = torch.zeros(2, k, *mean.shape[1:], dtype=st, device=h.device)  # [2, K, T, C]
        for rows, i in ((slice(0, n1), 0), (slice(n1, None), k - 1)):
            sums[0, i] += g[:, rows].sum(1)
            sums[1, i] += (g[:, rows] * d[i][:, rows]).sum(1)
        dist.all_reduce(sums, group=ctx.group)
        dmu = -gam * r * sums[0] / s[..., None]  # dL/dmu_i / S_i  [K, T, C]
        dv = -(gam * r**3 / 2) * sums[1] / s[..., None]  # dL/dvar_i / S_i
        grad_h = grad_w = grad_gamma = grad_beta = None
        if ctx.needs_input_grad[0]:
            grad_h = (g * gam * _by_slot(r[:, :, None].expand_as(d), n1)
                      + torch.einsum("ktn,ktc->tnc", ws, dmu)
                      + 2 * torch.einsum("ktn,ktnc->tnc", ws, d * dv[:, :, None]))
            grad_h = grad_h.to(h.dtype)
        if ctx.needs_input_grad[1]:
            grad_w = (torch.einsum("ktnc,ktc->ktn", d, dmu)
                      + torch.einsum("ktnc,ktc->ktn", d * d - var[:, :, None], dv)).to(w.dtype)
        if ctx.needs_input_grad[2]:
            grad_gamma = (g * _by_slot(d * r[:, :, None], n1)).sum((0, 1)).to(gamma.dtype)
        if ctx.needs_input_grad[3]:
            grad_beta = g.sum((0, 1)).to(gamma.dtype)
        return grad_h, grad_w, grad_gamma, grad_beta, None, None, None


def sync_ddbn(h: Tensor, alpha: Tensor, part: RowPartition, gamma: Tensor, beta: Tensor,
              eps: float = 1e-5) -> tuple[Tensor, Tensor, Tensor]:
    """DDBN in training mode of this process's rows ``h [T, n_local, C]`` (timesteps of
    ``part``), with the statistics of the global batch: ``(y [T, n_local, C], mean [2, T, C],
    var [2, T, C])`` as ``actrec.ops.ddbn_reference.ddbn_reference`` gives for the global batch
    (a single-domain global batch is plain batch norm). Differentiable in h, alpha, gamma, beta;
    the gradients of alpha, gamma and beta are this process's share (sum them over processes).
    """
    if h.shape[0] != part.steps or h.shape[1] != part.index.numel():
        raise ValueError(f"h {tuple(h.shape)} does not fit the partition "
                         f"(T={part.steps}, n_local={part.index.numel()})")
    st = _stat_dtype(h.dtype)
    w = contribution_weights(alpha, part.n1, part.steps, part.n, part.mask.to(h.device),
                             dtype=st, device=h.device)  # [2, T, N]: the global batch's
    w = w.index_select(2, part.index.to(h.device))  # [2, T, n_local]: this process's rows
    return _SyncNorm.apply(h, w, gamma, beta, part.local_n1, float(eps), part.group)


def sync_bn(h: Tensor, part: RowPartition, gamma: Tensor, beta: Tensor,
            eps: float = 1e-5) -> tuple[Tensor, Tensor, Tensor]:
    """Plain per-timestep batch norm of this process's rows over the global batch's real
    frames: ``(y, mean [T, C], var [T, C])`` as ``bn_reference`` gives for the global batch."""
    st = _stat_dtype(h.dtype)
    w = contribution_weights(None, part.n, part.steps, part.n, part.mask.to(h.device),
                             dual=False, dtype=st, device=h.device)[:1]  # [1, T, N]
    w = w.index_select(2, part.index.to(h.device))  # [1, T, n_local]
    y, mean, var = _SyncNorm.apply(h, w, gamma, beta, h.shape[1], float(eps), part.group)
    return y, mean[0], var[0]


def sync_torch_batch_norm(module: torch.nn.modules.batchnorm._BatchNorm, x: Tensor,
                          group: Any) -> Tensor:
    """What ``module`` (a torch ``BatchNorm1d/2d/3d`` in training mode) computes for this
    process's rows ``x [M, C, ...]``, with the batch statistics of all processes' rows in
    ``group`` (any number of rows each, none included): outputs, gradients and the running
    statistics (momentum or cumulative, unbiased with the global count) are those of one
    process holding every row, as ``torch.nn.SyncBatchNorm`` does on GPUs only."""
    import torch.distributed as dist

    c = x.shape[1]
    flat = x.movedim(1, -1).reshape(-1, c)  # [M, C]
    st = _stat_dtype(x.dtype)
    count = torch.tensor([float(flat.shape[0])], dtype=torch.float64, device=x.device)
    dist.all_reduce(count, group=group)
    total = float(count)
    if total < 2:
        raise ValueError(f"batch norm over {int(total)} value(s) per channel in the whole batch")
    w = torch.ones(1, 1, flat.shape[0], dtype=st, device=x.device)
    gamma = module.weight if module.weight is not None else x.new_ones(c)
    beta = module.bias if module.bias is not None else x.new_zeros(c)
    y, mean, var = _SyncNorm.apply(flat[None], w, gamma, beta, flat.shape[0],
                                   float(module.eps), group)
    if module.track_running_stats and module.running_mean is not None:
        with torch.no_grad():
            module.num_batches_tracked.add_(1)
            f = (1.0 / float(module.num_batches_tracked) if module.momentum is None
                 else float(module.momentum))
            rm, rv = module.running_mean, module.running_var
            rm.mul_(1 - f).add_(mean[0, 0].to(rm.dtype), alpha=f)
            rv.mul_(1 - f).add_((var[0, 0] * (total / (total - 1))).to(rv.dtype), alpha=f)
    return y[0].reshape(x.movedim(1, -1).shape).movedim(-1, 1)
