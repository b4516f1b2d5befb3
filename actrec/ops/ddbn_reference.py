"""Dual-domain batch norm (DDBN) in readable pure PyTorch: the fallback and the test oracle.

Follows ``shared/design/ddbn.md`` exactly. All inputs are time-major ``h [T, N, C]``;
statistics are per timestep t and channel c, over the batch. Rows ``0 .. n1-1`` are domain D1,
rows ``n1 .. N-1`` domain D2. Batch row index j in the contribution functions is 1-based.

Running statistics are ``[2, T_max, C]`` (domain, timestep, channel) for the DDBN and
``[T_max, C]`` for the plain per-timestep batch norm; timesteps ``t >= T_max`` use slot
``T_max - 1`` at evaluation and are not updated in training.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "tau_weights",
    "unbiased_factors",
    "ddbn_reference",
    "ddbn_eval_reference",
    "bn_reference",
    "bn_eval_reference",
]


def tau_weights(n: int, n1: int, alpha: Tensor) -> Tensor:  # -> [2, n]
    """The contributions ``tau_i(j)`` of every row j = 1..n to domain i's statistics.

    ``tau1(j) = (1 - tanh(j - alpha1 n)) / 2`` and ``tau2(j) = (1 + tanh(j - (1 - alpha2) n)) / 2``;
    differentiable in ``alpha`` [2]. The weights depend on ``n1`` only through alpha's
    constraint ``n_i / n <= alpha_i <= 1``; ``n1`` is checked to be a valid split point.
    """
    if not 0 <= n1 <= n:
        raise ValueError(f"split point n1={n1} outside 0..{n}")
    j = torch.arange(1, n + 1, dtype=alpha.dtype, device=alpha.device)  # 1-based rows
    tau1 = (1 - torch.tanh(j - alpha[0] * n)) / 2
    tau2 = (1 + torch.tanh(j - (1 - alpha[1]) * n)) / 2
    return torch.stack([tau1, tau2])  # [2, n]


def _unbias(n_eff: Tensor) -> Tensor:
    # n/(n-1) Bessel factor; a (near-)single-sample domain keeps its biased variance.
    return torch.where(n_eff > 1, n_eff / (n_eff - 1).clamp_min(1e-12), torch.ones_like(n_eff))


def unbiased_factors(n: int, n1: int, alpha: Tensor) -> Tensor:  # -> [2]
    """Factors ``n_eff / (n_eff - 1)`` per domain that make a batch variance unbiased.

    ``n_eff = S_i^2 / sum_j tau_i(j)^2`` for a two-domain batch; ``n / (n - 1)`` for both slots
    of a single-domain batch (``n1`` 0 or n). A factor is 1 where ``n_eff <= 1``.
    """
    if n1 == 0 or n1 == n:
        n_eff = torch.full((2,), float(n), dtype=alpha.dtype, device=alpha.device)
    else:
        tau = tau_weights(n, n1, alpha.detach())  # [2, n]
        n_eff = tau.sum(1) ** 2 / (tau**2).sum(1)
    return _unbias(n_eff)


def _check(h: Tensor, gamma: Tensor, beta: Tensor) -> None:
    if h.dim() != 3:
        raise ValueError(f"expected h of shape [T, N, C], got {tuple(h.shape)}")
    c = h.shape[2]
    if gamma.shape != (c,) or beta.shape != (c,):
        raise ValueError(
            f"gamma and beta must be [C={c}], got {tuple(gamma.shape)} and {tuple(beta.shape)}"
        )


def _update_running(running: Tensor, batch: Tensor, momentum: float) -> None:
    """In place: ``running[:t] = (1 - m) running[:t] + m batch[:t]`` over the common timesteps."""
    tt = min(running.shape[0], batch.shape[0])
    running[:tt].mul_(1 - momentum).add_(batch[:tt].to(running.dtype), alpha=momentum)


def bn_reference(
    h: Tensor,
    gamma: Tensor,
    beta: Tensor,
    eps: float = 1e-5,
    *,
    running_mean: Tensor | None = None,
    running_var: Tensor | None = None,
    momentum: float = 0.1,
) -> tuple[Tensor, Tensor, Tensor]:
    """Plain per-timestep batch norm over the whole batch: ``(y [T,N,C], mean [T,C], var [T,C])``.

    ``var`` is the biased batch variance (two-pass). Running buffers ``[T_max, C]``, if given,
    are updated in place (no grad) for ``t < min(T, T_max)`` with the unbiased variance
    (``N / (N - 1)``; kept biased when N = 1).
    """
    _check(h, gamma, beta)
    n = h.shape[1]
    mean = h.mean(1)  # [T, C]
    d = h - mean[:, None]  # [T, N, C]
    var = (d * d).mean(1)  # [T, C]
    y = d * torch.rsqrt(var + eps)[:, None] * gamma + beta  # [T, N, C]
    if running_mean is not None and running_var is not None:
        with torch.no_grad():
            factor = n / (n - 1) if n > 1 else 1.0
            _update_running(running_mean, mean.detach(), momentum)
            _update_running(running_var, var.detach() * factor, momentum)
    return y, mean, var


def bn_eval_reference(
    h: Tensor,
    running_mean: Tensor,
    running_var: Tensor,
    gamma: Tensor,
    beta: Tensor,
    eps: float = 1e-5,
) -> Tensor:
    """Per-timestep batch norm with running statistics ``[T_max, C]``; t >= T_max uses slot
    T_max - 1."""
    _check(h, gamma, beta)
    t_max = running_mean.shape[0]
    idx = torch.arange(h.shape[0], device=h.device).clamp_max(t_max - 1)
    mean = running_mean[idx][:, None].to(h.dtype)  # [T, 1, C]
    var = running_var[idx][:, None].to(h.dtype)  # [T, 1, C]
    return (h - mean) * torch.rsqrt(var + eps) * gamma + beta


def ddbn_reference(
    h: Tensor,
    alpha: Tensor,
    n1: int,
    gamma: Tensor,
    beta: Tensor,
    eps: float = 1e-5,
    *,
    running_mean: Tensor | None = None,
    running_var: Tensor | None = None,
    momentum: float = 0.1,
) -> tuple[Tensor, Tensor, Tensor]:
    """DDBN of ``h [T, N, C]`` in training mode: ``(y [T,N,C], mean [2,T,C], var [2,T,C])``.

    ``mean``/``var`` are each domain's weighted batch statistics (variance biased, two-pass).
    If ``n1`` is 0 or N the op is exactly plain per-timestep batch norm (no tanh weights) and
    both slots of ``mean``/``var`` hold the plain statistics.

    Running buffers ``[2, T_max, C]``, if given, are updated in place without grad for
    ``t < min(T, T_max)``, with the variance made unbiased by ``n_eff / (n_eff - 1)``. A
    single-domain batch updates only its own domain's slot: slot 0 when ``n1 == N``, slot 1
    when ``n1 == 0``; the other domain's statistics are left as they are.
    """
    _check(h, gamma, beta)
    n = h.shape[1]
    if alpha.shape != (2,):
        raise ValueError(f"alpha must be [2], got {tuple(alpha.shape)}")
    if not 0 <= n1 <= n:
        raise ValueError(f"split point n1={n1} outside 0..{n}")

    if n1 == 0 or n1 == n:
        y, m, v = bn_reference(h, gamma, beta, eps)
        mean, var = torch.stack([m, m]), torch.stack([v, v])  # [2, T, C]
    else:
        tau = tau_weights(n, n1, alpha.to(h.dtype))  # [2, N]
        s = tau.sum(1)[:, None, None]  # [2, 1, 1]
        mean = torch.einsum("in,tnc->itc", tau, h) / s  # [2, T, C]
        d = h[None] - mean[:, :, None]  # [2, T, N, C]: every row against both domains' means
        var = torch.einsum("in,itnc->itc", tau, d * d) / s  # [2, T, C]
        r = torch.rsqrt(var + eps)  # [2, T, C]
        z = torch.cat([d[0, :, :n1] * r[0, :, None], d[1, :, n1:] * r[1, :, None]], 1)  # [T, N, C]
        y = z * gamma + beta

    if running_mean is not None and running_var is not None:
        with torch.no_grad():
            factors = unbiased_factors(n, n1, alpha)  # [2]
            slots = [0] if n1 == n else [1] if n1 == 0 else [0, 1]
            for i in slots:
                _update_running(running_mean[i], mean[i].detach(), momentum)
                _update_running(running_var[i], var[i].detach() * factors[i].item(), momentum)
    return y, mean, var


def ddbn_eval_reference(
    h: Tensor,
    domain: Tensor,
    running_mean: Tensor,
    running_var: Tensor,
    gamma: Tensor,
    beta: Tensor,
    eps: float = 1e-5,
) -> Tensor:
    """DDBN at evaluation: row n of ``h [T, N, C]`` uses domain ``domain[n]``'s running
    statistics ``[2, T_max, C]``; timesteps t >= T_max use slot T_max - 1. Rows need not be sorted.
    """
    _check(h, gamma, beta)
    if domain.shape != (h.shape[1],):
        raise ValueError(f"domain must be [N={h.shape[1]}], got {tuple(domain.shape)}")
    t_max = running_mean.shape[1]
    idx = torch.arange(h.shape[0], device=h.device).clamp_max(t_max - 1)
    mean = running_mean[domain][:, idx].transpose(0, 1).to(h.dtype)  # [N, T, C] -> [T, N, C]
    var = running_var[domain][:, idx].transpose(0, 1).to(h.dtype)  # [T, N, C]
    return (h - mean) * torch.rsqrt(var + eps) * gamma + beta
