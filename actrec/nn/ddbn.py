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
``actrec.ops.domains``; a slot whose batch has a single real frame (effective size <= 1) keeps
its running variance, since one frame says nothing about the variance (PyTorch's batch norm
refuses such a batch), while its running mean still moves.

Trained length: ``trained_len`` (a persistent int64 buffer, one per statistics slot: ``[2]``
for the DDBN, a scalar for plain batch norm) is the number of leading timesteps training has
reached with a real frame of that slot's domain (at most ``max_len``). Evaluation uses slot
``min(t, trained_len - 1)`` for every t, so slots that only hold their initial statistics are
never used (``ddbn.md``: timesteps past the training history use the last trained one), also
when one domain's training windows are shorter than the other's. A norm (domain) that never
trained uses ``max_len`` instead; a state dict saved before the buffer existed loads as
``max_len``, one saved with a single DDBN length gives it to both domains.

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
        # Leading timesteps reached by training per slot (0: never trained); saved with the model.
        self.register_buffer("trained_len", torch.zeros(slots, dtype=torch.long))
        # Batches averaged per slot while re-estimating, for the means and for the variances
        # (a single-frame batch counts for the mean only); non-persistent: not part of a model.
        self.register_buffer("counts", torch.zeros(*slots, max_len), persistent=False)
        self.register_buffer("counts_var", torch.zeros(*slots, max_len), persistent=False)
        self.cumulative = False

    def extra_repr(self) -> str:
        return (
            f"{self.num_channels}, max_len={self.max_len}, momentum={self.momentum}, eps={self.eps}"
        )

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        key = prefix + "trained_len"
        if key not in state_dict:  # saved before the buffer existed: every slot counts as trained
            state_dict[key] = torch.full_like(self.trained_len, self.max_len)
        elif state_dict[key].shape != self.trained_len.shape and state_dict[key].numel() == 1:
            # saved when both DDBN domains shared one trained length: each domain gets it
            state_dict[key] = state_dict[key].reshape(()).expand(self.trained_len.shape).clone()
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def reset_running_stats(self) -> None:
        """Running means to 0, variances to 1, re-estimation counts to 0 (the trained length
        stays: it says which slots are in use)."""
        self.running_mean.zero_()
        self.running_var.fill_(1.0)
        self.counts.zero_()
        self.counts_var.zero_()

    def slots_in_use(self) -> Tensor:
        """int64, the statistics' slot shape (``[2]`` DDBN, scalar plain): ``trained_len``, or
        ``max_len`` where that slot never trained."""
        t = self.trained_len.clamp_max(self.max_len)
        return torch.where(t > 0, t, torch.full_like(t, self.max_len))

    def eval_slots(self, t0: int, steps: int, device: torch.device) -> Tensor:  # [*slots, T]
        """The running-statistics timestep read for timesteps ``t0 .. t0+steps-1``, per slot
        (``[2, T]`` DDBN, ``[T]`` plain): ``min(t, used - 1)``."""
        t = torch.arange(t0, t0 + steps, device=device)
        return torch.minimum(t, self.slots_in_use().to(device)[..., None] - 1)

    def eval_stats(self, t0: int, steps: int, device: torch.device) -> tuple[Tensor, Tensor]:
        """Running ``(mean, var)`` ``[*slots, T, C]`` that evaluation uses for timesteps
        ``t0 .. t0+steps-1`` (each slot at its own ``eval_slots``)."""
        idx = self.eval_slots(t0, steps, device)
        if idx.dim() == 1:
            return self.running_mean[idx], self.running_var[idx]
        at = idx[..., None].expand(*idx.shape, self.num_channels)
        return self.running_mean.gather(-2, at), self.running_var.gather(-2, at)

    @torch.no_grad()
    def _note_reach(self, present: Tensor, t0: int) -> None:
        """``present [*slots, steps]``: which timesteps ``t0 ..`` had a real frame of each slot's
        domain; raise ``trained_len`` to the last of them + 1 (capped at ``max_len``)."""
        if self.cumulative:
            return
        steps = present.shape[-1]
        ends = torch.arange(t0 + 1, t0 + steps + 1, device=present.device)  # t + 1
        reach = (present * ends).amax(-1).clamp_max(self.max_len)  # 0 where none
        torch.maximum(self.trained_len, reach.to(self.trained_len.device), out=self.trained_len)

    @torch.no_grad()
    def absorb(
        self, mean: Tensor, var: Tensor, slot: tuple = (), t0: int = 0, valid: Tensor | None = None,
        valid_var: Tensor | None = None,
    ) -> None:
        """Fold batch statistics ``mean``, unbiased ``var`` [T, C] of timesteps ``t0 ..`` into
        the running statistics (of domain ``slot`` for the DDBN): a momentum update, or in
        ``cumulative`` mode an exact running average over the slots in use. Timesteps
        ``>= max_len`` and those where ``valid [T]`` is False (no real frame) are skipped; the
        variance also where ``valid_var [T]`` is False (a single real frame, whose variance
        says nothing). Touches only slots ``t0 .. t0+T-1``."""
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
            keep = keep & (t < self.slots_in_use()[slot].to(rm.device))
        keep_var = keep if valid_var is None else keep & valid_var[:k].to(rm.device)
        if self.cumulative:
            cnt, cnt_var = self.counts[slot][t0:t1], self.counts_var[slot][t0:t1]  # views [k]
            cnt.add_(keep.to(cnt.dtype))
            cnt_var.add_(keep_var.to(cnt_var.dtype))
            new_m = rm + (m - rm) / cnt.clamp_min(1)[:, None]
            new_v = rv + (v - rv) / cnt_var.clamp_min(1)[:, None]
        else:
            new_m = rm * (1 - self.momentum) + m * self.momentum
            new_v = rv * (1 - self.momentum) + v * self.momentum
        rm.copy_(torch.where(keep[:, None], new_m, rm))
        rv.copy_(torch.where(keep_var[:, None], new_v, rv))


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
            rm, rv = self.eval_stats(t0, t, h.device)  # [2, T, C], each domain its own slots
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
        self.absorb_domains(mean.detach(), var, n1, n, t0, valid if own is None else valid & own,
                            valid_var=n_eff > 1)
        self.note_trained(t0, t, mask, n1=n1, n=n)
        return y

    def absorb_domains(
        self, mean: Tensor, var: Tensor, n1: int, n: int, t0: int = 0, valid: Tensor | None = None,
        valid_var: Tensor | None = None,
    ) -> None:
        """``absorb`` per-domain statistics ``[2, T, C]`` (unbiased variances) of a batch of
        ``n`` rows, ``n1`` of them D1: a single-domain batch updates only its own domain's
        slot (0 when n1 == n, 1 when n1 == 0). ``valid [2, T]`` (None: all) marks the
        (domain, t) pairs to update: those with a real frame of that domain; ``valid_var
        [2, T]`` those whose variance is also folded in (effective size > 1)."""
        for i in _domain_slots(n1, n):
            self.absorb(mean[i], var[i], (i,), t0, None if valid is None else valid[i],
                        None if valid_var is None else valid_var[i])

    def note_trained(self, t0: int, steps: int, mask: Tensor | None = None, *, n1: int,
                     n: int) -> None:
        """Record that a training forward of ``n`` rows (``n1`` of them D1) reached timesteps
        ``t0 .. t0+steps-1``: each domain up to its last timestep with a real frame of its own
        rows (``mask [steps, N]``; None: every frame is real), capped at ``max_len``. A domain
        without rows keeps its length. No host sync."""
        own = own_frames(mask, n1, steps)
        if own is None:
            own = torch.tensor([[n1 > 0], [n > n1]], device=self.trained_len.device)
            own = own.expand(2, steps)
        self._note_reach(own, t0)

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
            rm, rv = self.eval_stats(t0, t, h.device)  # [T, C]
            return bn_eval_reference(h, rm, rv, self.weight, self.bias, self.eps)
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
        self.absorb(mean.detach(), var, (), t0, valid=n_real > 0, valid_var=n_real > 1)
        self.note_trained(t0, t, mask)
        return y

    def note_trained(self, t0: int, steps: int, mask: Tensor | None = None, **_: int) -> None:
        """Record that a training forward reached timesteps ``t0 .. t0+steps-1`` (those with a
        real frame, with ``mask [steps, N]``), capped at ``max_len``. No host sync. (Keywords
        of ``DualDomainBatchNorm.note_trained`` are accepted and unused: one batch.)"""
        present = (mask.any(1) if mask is not None
                   else torch.ones(steps, dtype=torch.bool, device=self.trained_len.device))
        self._note_reach(present, t0)

    def step(self, h_t: Tensor, t: int) -> Tensor:  # [N, C] -> [N, C]
        """One timestep ``t``; meant for eval mode."""
        return self.forward(h_t[None], t0=t)[0]
