"""Normalisation modules over time-major sequences, with per-timestep running statistics.

``DualDomainBatchNorm`` (DDBN, Perrett & Damen 2019) keeps statistics per domain and timestep
``[2, T_max, C]``; ``SequenceBatchNorm`` is the plain per-timestep batch norm of the BNLSTM
(Cooijmans et al.) with ``[T_max, C]``. Both take ``t0``, the timestep of ``h``'s first row, so
a recurrent cell can normalise one step at a time into the right slot, and an optional
``mask [T, N]`` (True on real frames) that keeps padding out of every statistic.

The batch statistics come from ``actrec.ops`` (fused where built, reference otherwise), which
is pure; these modules fold them into their running statistics, touching only the slots of the
timesteps they normalised (O(C) work per step) and skipping a (domain, t) slot with no real
frame. Variances are made unbiased with ``bessel(effective_sizes(w))`` of
``actrec.ops.domains``.

Trained length: ``trained_len`` (a persistent int64 buffer) is the number of leading timesteps
training has reached (at most ``max_len``). Evaluation uses slot ``min(t, trained_len - 1)``
for every t, so slots that only hold their initial statistics are never used (``ddbn.md``:
timesteps past the training history use the last trained one). A norm that never trained uses
``max_len`` instead; a state dict saved before the buffer existed loads as ``max_len``.

Setting a module's ``cumulative`` to True (see ``actrec.nn.reestimate``) makes training-mode
forwards accumulate exact averages of the batch statistics into the trained slots instead of
momentum updates, and leaves ``trained_len`` alone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from actrec.nn.base import split_point
from actrec.ops.ddbn_reference import bn_eval_reference, bn_reference
from actrec.ops.domains import bessel, contribution_weights, effective_sizes

if TYPE_CHECKING:  # pragma: no cover
    from actrec.ops.ddbn_sync import RowPartition

__all__ = [
    "PerTimestepNorm",
    "DualDomainBatchNorm",
    "SequenceBatchNorm",
    "new_alpha",
    "project_alpha_",
]

GAMMA_INIT = 0.1  # Cooijmans et al.: a small gamma keeps tanh/sigmoid out of saturation early


def new_alpha(alpha_init: float = 0.75) -> nn.Parameter:
    """A fresh raw ``(alpha1, alpha2)`` parameter [2], both at ``alpha_init``."""
    return nn.Parameter(torch.full((2,), float(alpha_init)))


@torch.no_grad()
def project_alpha_(alpha: Tensor, floor: Tensor) -> None:
    """Clamp ``alpha_i`` into ``[floor_i, 1]`` in place; ``floor = (n1/N, n2/N)`` [2]."""
    alpha.copy_(torch.maximum(alpha, floor.to(alpha)).clamp_max(1.0))


def own_frames(mask: Tensor | None, n1: int, steps: int) -> Tensor | None:  # -> [2, T] bool
    """Whether each domain has a real frame of its OWN rows at each timestep (None: always).

    A DDBN slot (i, t) is updated only then: with tanh weights the other domain's rows also
    weigh in domain i's statistic, but a batch with no domain-i frame at t says nothing about
    domain i there."""
    if mask is None:
        return None
    return torch.stack([mask[:steps, :n1].any(1), mask[:steps, n1:].any(1)])  # [2, T]


def _domain_slots(n1: int, n: int) -> list[int]:
    """The running-statistics slots a training batch updates: both, or its only domain's."""
    return [0] if n1 == n else [1] if n1 == 0 else [0, 1]


class PerTimestepNorm(nn.Module):
    """Shared parts: gamma/beta, running buffers with a leading slot shape, the trained length,
    re-estimation."""

    def __init__(
        self, slots: tuple[int, ...], num_channels: int, max_len: int, momentum: float, eps: float
    ):
        super().__init__()
        if max_len < 1:
            raise ValueError(f"max_len must be >= 1, got {max_len}")
        self.num_channels, self.max_len = num_channels, max_len
        self.momentum, self.eps = momentum, eps
        self.weight = nn.Parameter(torch.full((num_channels,), GAMMA_INIT))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.register_buffer("running_mean", torch.zeros(*slots, max_len, num_channels))
        self.register_buffer("running_var", torch.ones(*slots, max_len, num_channels))
        # Leading timesteps reached by training (0: never trained); saved with the model.
        self.register_buffer("trained_len", torch.zeros((), dtype=torch.long))
        # Batches averaged per slot while re-estimating (non-persistent: not part of a model).
        self.register_buffer("counts", torch.zeros(*slots, max_len), persistent=False)
        self.cumulative = False

    def extra_repr(self) -> str:
        return (
            f"{self.num_channels}, max_len={self.max_len}, momentum={self.momentum}, eps={self.eps}"
        )

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        key = prefix + "trained_len"
        if key not in state_dict:  # saved before the buffer existed: every slot counts as trained
            state_dict[key] = torch.tensor(self.max_len, dtype=torch.long)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def reset_running_stats(self) -> None:
        """Running means to 0, variances to 1, re-estimation counts to 0 (the trained length
        stays: it says which slots are in use)."""
        self.running_mean.zero_()
        self.running_var.fill_(1.0)
        self.counts.zero_()

    def slots_in_use(self) -> Tensor:
        """int64 scalar: ``trained_len``, or ``max_len`` for a norm that never trained."""
        t = self.trained_len.clamp_max(self.max_len)
        return torch.where(t > 0, t, torch.full_like(t, self.max_len))

    def eval_slots(self, t0: int, steps: int, device: torch.device) -> Tensor:  # -> [T]
        """The running-statistics slot of timesteps ``t0 .. t0+steps-1``: ``min(t, used - 1)``."""
        t = torch.arange(t0, t0 + steps, device=device)
        return torch.minimum(t, self.slots_in_use().to(device) - 1)

    @torch.no_grad()
    def note_trained(self, t0: int, steps: int, mask: Tensor | None = None) -> None:
        """Record that a training forward reached timesteps ``t0 .. t0+steps-1`` (those with a
        real frame, with ``mask [steps, N]``), capped at ``max_len``. No host sync."""
        if self.cumulative:
            return
        if mask is None:
            self.trained_len.clamp_(min=min(t0 + steps, self.max_len))
            return
        ends = torch.arange(t0 + 1, t0 + steps + 1, device=mask.device)  # t + 1
        reach = (mask.any(1) * ends).max().clamp_max(self.max_len)  # 0 when all is padding
        torch.maximum(self.trained_len, reach.to(self.trained_len.device), out=self.trained_len)

    @torch.no_grad()
    def absorb(
        self, mean: Tensor, var: Tensor, slot: tuple = (), t0: int = 0, valid: Tensor | None = None
    ) -> None:
        """Fold batch statistics ``mean``, unbiased ``var`` [T, C] of timesteps ``t0 ..`` into
        the running statistics (of domain ``slot`` for the DDBN): a momentum update, or in
        ``cumulative`` mode an exact running average over the slots in use. Timesteps
        ``>= max_len`` and those where ``valid [T]`` is False (no real frame) are skipped.
        Touches only slots ``t0 .. t0+T-1``."""
        t1 = min(t0 + mean.shape[0], self.max_len)
        if t1 <= t0:
            return
        k = t1 - t0
        m, v = mean[:k].to(self.running_mean), var[:k].to(self.running_var)  # [k, C]
        rm, rv = self.running_mean[slot][t0:t1], self.running_var[slot][t0:t1]  # views [k, C]
        keep = (torch.ones(k, dtype=torch.bool, device=rm.device) if valid is None
                else valid[:k].to(rm.device))  # [k]
        if self.cumulative:  # re-estimation: only the slots evaluation will read
            t = torch.arange(t0, t1, device=rm.device)
            keep = keep & (t < self.slots_in_use().to(rm.device))
            cnt = self.counts[slot][t0:t1]  # view [k]
            cnt.add_(keep.to(cnt.dtype))
            new_m = rm + (m - rm) / cnt.clamp_min(1)[:, None]
            new_v = rv + (v - rv) / cnt.clamp_min(1)[:, None]
        else:
            new_m = rm * (1 - self.momentum) + m * self.momentum
            new_v = rv * (1 - self.momentum) + v * self.momentum
        rm.copy_(torch.where(keep[:, None], new_m, rm))
        rv.copy_(torch.where(keep[:, None], new_v, rv))


class DualDomainBatchNorm(PerTimestepNorm):
    """DDBN over ``[T, N, C]``: training normalises each domain with its own tanh-weighted batch
    statistics of the real frames and updates running statistics ``[2, max_len, C]``;
    evaluation normalises every sequence with its own domain's running statistics.

    It does not own alpha: the layer passes its shared ``alpha`` [2] to ``forward``.
    """

    def __init__(self, num_channels: int, max_len: int, momentum: float = 0.1, eps: float = 1e-5):
        super().__init__((2,), num_channels, max_len, momentum, eps)

    def forward(
        self, h: Tensor, alpha: Tensor, domain: Tensor, t0: int = 0, mask: Tensor | None = None,
        *, domain_checked: bool = False, sync: RowPartition | None = None,
    ) -> Tensor:
        """``h [T, N, C]`` holds timesteps ``t0 .. t0+T-1``; ``domain [N]``, sorted in training;
        ``mask [T, N]`` True on real frames (training only: evaluation has no batch statistics).
        ``domain_checked``: the caller has checked the flags (0/1) already, so evaluation skips
        the check (a host sync) at every step. ``sync`` (training): these rows are part of a
        batch spread over processes (``actrec.ops.ddbn_sync``; its mask, not ``mask``, says
        which frames are real): statistics and running statistics are the global batch's.
        """
        from actrec.ops import ddbn, ddbn_eval

        t, n, _ = h.shape
        if not self.training:
            idx = self.eval_slots(t0, t, h.device)  # [T]
            rm, rv = self.running_mean[:, idx], self.running_var[:, idx]  # [2, T, C]
            return ddbn_eval(h, domain, rm, rv, self.weight, self.bias, self.eps,
                             checked=domain_checked)
        n1 = split_point(domain)
        if sync is None:
            y, mean, var = ddbn(h, alpha, n1, self.weight, self.bias, self.eps, mask=mask)
        else:
            from actrec.ops.ddbn_sync import sync_ddbn

            sync = sync.at(t0, t)
            y, mean, var = sync_ddbn(h, alpha, sync, self.weight, self.bias, self.eps)
            n1, n, mask = sync.n1, sync.n, sync.mask  # the global batch's, from here on
        w = contribution_weights(alpha.detach(), n1, t, n, mask, dtype=torch.float64)  # [2,T,N]
        n_eff = effective_sizes(w)  # [2, T], 0 where a domain has no real frame
        var = var.detach() * bessel(n_eff)[..., None].to(var.dtype)  # unbiased [2, T, C]
        valid = n_eff > 0  # [2, T]
        own = own_frames(mask, n1, t)
        self.absorb_domains(mean.detach(), var, n1, n, t0, valid if own is None else valid & own)
        self.note_trained(t0, t, mask)
        return y

    def absorb_domains(
        self, mean: Tensor, var: Tensor, n1: int, n: int, t0: int = 0, valid: Tensor | None = None
    ) -> None:
        """``absorb`` per-domain statistics ``[2, T, C]`` (unbiased variances) of a batch of
        ``n`` rows, ``n1`` of them D1: a single-domain batch updates only its own domain's
        slot (0 when n1 == n, 1 when n1 == 0). ``valid [2, T]`` (None: all) marks the
        (domain, t) pairs to update: those with a real frame of that domain."""
        for i in _domain_slots(n1, n):
            self.absorb(mean[i], var[i], (i,), t0, None if valid is None else valid[i])

    def step(self, h_t: Tensor, t: int, alpha: Tensor, domain: Tensor) -> Tensor:  # [N, C]
        """One timestep ``t``; meant for eval mode (running statistics of each row's domain)."""
        return self.forward(h_t[None], alpha, domain, t0=t)[0]


class SequenceBatchNorm(PerTimestepNorm):
    """Plain per-timestep batch norm over the whole batch, running statistics ``[max_len, C]``."""

    def __init__(self, num_channels: int, max_len: int, momentum: float = 0.1, eps: float = 1e-5):
        super().__init__((), num_channels, max_len, momentum, eps)

    def forward(self, h: Tensor, t0: int = 0, mask: Tensor | None = None, *,
                sync: RowPartition | None = None) -> Tensor:
        """``h [T, N, C]`` holding timesteps ``t0 .. t0+T-1``; ``mask [T, N]`` True on real
        frames (training only); ``sync``: statistics of a batch spread over processes, as
        ``DualDomainBatchNorm.forward``."""
        t, n, _ = h.shape
        if not self.training:
            idx = self.eval_slots(t0, t, h.device)  # [T]
            return bn_eval_reference(
                h, self.running_mean[idx], self.running_var[idx], self.weight, self.bias, self.eps
            )
        if sync is None:
            y, mean, var = bn_reference(h, self.weight, self.bias, self.eps, mask=mask)
        else:
            from actrec.ops.ddbn_sync import sync_bn

            sync = sync.at(t0, t)
            y, mean, var = sync_bn(h, sync, self.weight, self.bias, self.eps)
            n, mask = sync.n, sync.mask  # the global batch's, from here on
        n_real = (mask.sum(1, dtype=torch.float64) if mask is not None  # [T]: real rows
                  else torch.full((t,), float(n), dtype=torch.float64, device=h.device))
        var = var.detach() * bessel(n_real)[:, None].to(var.dtype)  # unbiased [T, C]
        self.absorb(mean.detach(), var, (), t0, valid=n_real > 0)
        self.note_trained(t0, t, mask)
        return y

    def step(self, h_t: Tensor, t: int) -> Tensor:  # [N, C] -> [N, C]
        """One timestep ``t``; meant for eval mode."""
        return self.forward(h_t[None], t0=t)[0]
