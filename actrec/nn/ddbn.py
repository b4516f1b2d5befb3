"""Normalisation modules over time-major sequences, with per-timestep running statistics.

``DualDomainBatchNorm`` (DDBN, Perrett & Damen 2019) keeps statistics per domain and timestep
``[2, T_max, C]``; ``SequenceBatchNorm`` is the plain per-timestep batch norm of the BNLSTM
(Cooijmans et al.) with ``[T_max, C]``. Both take ``t0``, the timestep of ``h``'s first row, so
a recurrent cell can normalise one step at a time into the right slot. Timesteps ``>= T_max``
use slot ``T_max - 1`` at evaluation and leave the buffers alone in training.

The math lives in ``actrec.ops`` (fused where built, reference otherwise). Setting a module's
``cumulative`` to True (see ``actrec.nn.reestimate``) makes training-mode forwards accumulate
exact averages of the batch statistics instead of momentum updates.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from actrec.nn.base import split_point
from actrec.ops.ddbn_reference import bn_reference, bn_eval_reference, unbiased_factors

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


def _domain_slots(n1: int, n: int) -> list[int]:
    """The running-statistics slots a training batch updates: both, or its only domain's."""
    return [0] if n1 == n else [1] if n1 == 0 else [0, 1]


def _slots(t0: int, t: int, t_max: int, device: torch.device) -> Tensor:
    return torch.arange(t0, t0 + t, device=device).clamp_max(t_max - 1)  # [T]


class PerTimestepNorm(nn.Module):
    """Shared parts: gamma/beta, running buffers with a leading slot shape, re-estimation."""

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
        # Batches averaged per slot while re-estimating (non-persistent: not part of a model).
        self.register_buffer("counts", torch.zeros(*slots, max_len), persistent=False)
        self.cumulative = False

    def extra_repr(self) -> str:
        return (
            f"{self.num_channels}, max_len={self.max_len}, momentum={self.momentum}, eps={self.eps}"
        )

    def reset_running_stats(self) -> None:
        """Running means to 0, variances to 1, re-estimation counts to 0."""
        self.running_mean.zero_()
        self.running_var.fill_(1.0)
        self.counts.zero_()

    @torch.no_grad()
    def absorb(self, mean: Tensor, var: Tensor, slot: tuple = (), t0: int = 0) -> None:
        """Fold batch statistics ``mean``, unbiased ``var`` [T, C] of timesteps ``t0 ..`` into
        the running statistics (of domain ``slot`` for the DDBN): a momentum update, or in
        ``cumulative`` mode an exact running average. Timesteps ``>= max_len`` are dropped."""
        t1 = min(t0 + mean.shape[0], self.max_len)
        if t1 <= t0:
            return
        m, v = mean[: t1 - t0].to(self.running_mean), var[: t1 - t0].to(self.running_var)
        rm, rv = self.running_mean[slot][t0:t1], self.running_var[slot][t0:t1]  # views
        if self.cumulative:
            cnt = self.counts[slot][t0:t1].add_(1)[:, None]  # [T', 1]
            rm.add_((m - rm) / cnt)
            rv.add_((v - rv) / cnt)
        else:
            rm.mul_(1 - self.momentum).add_(m, alpha=self.momentum)
            rv.mul_(1 - self.momentum).add_(v, alpha=self.momentum)

    def _window(self, t0: int) -> tuple[Tensor, Tensor] | tuple[None, None]:
        """The running buffers from timestep ``t0`` on (views, updated in place by the op)."""
        if t0 >= self.max_len:
            return None, None
        sl = (..., slice(t0, None), slice(None))
        return self.running_mean[sl], self.running_var[sl]


class DualDomainBatchNorm(PerTimestepNorm):
    """DDBN over ``[T, N, C]``: training normalises each domain with its own tanh-weighted batch
    statistics and updates running statistics ``[2, max_len, C]``; evaluation normalises every
    sequence with its own domain's running statistics.

    It does not own alpha: the layer passes its shared ``alpha`` [2] to ``forward``.
    """

    def __init__(self, num_channels: int, max_len: int, momentum: float = 0.1, eps: float = 1e-5):
        super().__init__((2,), num_channels, max_len, momentum, eps)

    def forward(self, h: Tensor, alpha: Tensor, domain: Tensor, t0: int = 0) -> Tensor:
        """``h [T, N, C]`` holds timesteps ``t0 .. t0+T-1``; ``domain [N]``, sorted in training."""
        from actrec.ops import ddbn, ddbn_eval

        t = h.shape[0]
        if not self.training:
            idx = _slots(t0, t, self.max_len, h.device)
            rm, rv = self.running_mean[:, idx], self.running_var[:, idx]  # [2, T, C]
            return ddbn_eval(h, domain, rm, rv, self.weight, self.bias, self.eps)
        n1 = split_point(domain)
        if self.cumulative:
            y, mean, var = ddbn(h, alpha, n1, self.weight, self.bias, self.eps)
            factors = unbiased_factors(h.shape[1], n1, alpha)  # [2]
            var = var.detach() * factors[:, None, None]
            self.absorb_domains(mean.detach(), var, n1, h.shape[1], t0)
            return y
        rm, rv = self._window(t0)
        y, _, _ = ddbn(
            h, alpha, n1, self.weight, self.bias, self.eps,
            running_mean=rm, running_var=rv, momentum=self.momentum,
        )
        return y

    def absorb_domains(self, mean: Tensor, var: Tensor, n1: int, n: int, t0: int = 0) -> None:
        """``absorb`` per-domain statistics ``[2, T, C]`` (unbiased variances) of a batch of
        ``n`` rows, ``n1`` of them D1: a single-domain batch updates only its own domain's
        slot (0 when n1 == n, 1 when n1 == 0), as ``actrec.ops.ddbn`` does."""
        for i in _domain_slots(n1, n):
            self.absorb(mean[i], var[i], (i,), t0)

    def step(self, h_t: Tensor, t: int, alpha: Tensor, domain: Tensor) -> Tensor:  # [N, C]
        """One timestep ``t``; meant for eval mode (running statistics of each row's domain)."""
        return self.forward(h_t[None], alpha, domain, t0=t)[0]


class SequenceBatchNorm(PerTimestepNorm):
    """Plain per-timestep batch norm over the whole batch, running statistics ``[max_len, C]``."""

    def __init__(self, num_channels: int, max_len: int, momentum: float = 0.1, eps: float = 1e-5):
        super().__init__((), num_channels, max_len, momentum, eps)

    def forward(self, h: Tensor, t0: int = 0) -> Tensor:
        """``h [T, N, C]`` holding timesteps ``t0 .. t0+T-1``."""
        t = h.shape[0]
        if not self.training:
            idx = _slots(t0, t, self.max_len, h.device)
            return bn_eval_reference(
                h, self.running_mean[idx], self.running_var[idx], self.weight, self.bias, self.eps
            )
        if self.cumulative:
            y, mean, var = bn_reference(h, self.weight, self.bias, self.eps)
            n = h.shape[1]
            self.absorb(mean.detach(), var.detach() * (n / (n - 1) if n > 1 else 1.0), (), t0)
            return y
        rm, rv = self._window(t0)
        y, _, _ = bn_reference(
            h, self.weight, self.bias, self.eps,
            running_mean=rm, running_var=rv, momentum=self.momentum,
        )
        return y

    def step(self, h_t: Tensor, t: int) -> Tensor:  # [N, C] -> [N, C]
        """One timestep ``t``; meant for eval mode."""
        return self.forward(h_t[None], t0=t)[0]
