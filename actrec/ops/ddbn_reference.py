"""Dual-domain batch norm (DDBN) in readable pure PyTorch: the fallback and the test oracle.

Follows ``shared/design/ddbn.md`` exactly. All inputs are time-major ``h [T, N, C]``;
statistics are per timestep t and channel c, over the batch. Rows ``0 .. n1-1`` are domain D1,
rows ``n1 .. N-1`` domain D2. Batch row index j in the contribution functions is 1-based.

The contribution weights come from ``actrec.ops.domains`` (the one place they are made); a mask
``[T, N]`` keeps padded frames out of every statistic. Running statistics (``[2, T_max, C]`` for
the DDBN, ``[T_max, C]`` for plain batch norm) are kept by ``actrec.nn.ddbn``; at evaluation
timesteps ``t >= T_max`` use slot ``T_max - 1``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from actrec.ops.domains import check_domain_flags, contribution_weights, tau_weights

__all__ = [
    "tau_weights",
    "weighted_stats",
    "ddbn_reference",
    "ddbn_eval_reference",
    "bn_reference",
    "bn_eval_reference",
]


def _check(h: Tensor, gamma: Tensor, beta: Tensor) -> None:
    if h.dim() != 3:
        raise ValueError(f"expected h of shape [T, N, C], got {tuple(h.shape)}")
    c = h.shape[2]
    if gamma.shape != (c,) or beta.shape != (c,):
        raise ValueError(
            f"gamma and beta must be [C={c}], got {tuple(gamma.shape)} and {tuple(beta.shape)}"
        )


def weighted_stats(h: Tensor, w: Tensor) -> tuple[Tensor, Tensor]:
    """Weighted per-(t, c) statistics of ``h [T, N, C]`` with weights ``w [2, T, N]``:
    ``(mean [2, T, C], var [2, T, C])``, the variance biased and two-pass. Where a domain has
    no weight at a timestep (S = 0: every row there is padding) both are 0."""
    s = w.sum(-1)  # [2, T]
    s = torch.where(s > 0, s, torch.ones_like(s))[..., None]  # [2, T, 1]; S = 0 -> sums are 0
    mean = torch.einsum("itn,tnc->itc", w, h) / s  # [2, T, C]
    d = h[None] - mean[:, :, None]  # [2, T, N, C]: every row against both domains' means
    var = torch.einsum("itn,itnc->itc", w, d * d) / s  # [2, T, C]
    return mean, var


def bn_reference(
    h: Tensor,
    gamma: Tensor,
    beta: Tensor,
    eps: float = 1e-5,
    *,
    mask: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Plain per-timestep batch norm over the whole batch: ``(y [T,N,C], mean [T,C], var [T,C])``.

    ``var`` is the biased batch variance (two-pass) of the real frames (``mask [T, N]``, True on
    real frames; all of them when None). Padded rows enter no statistic; their outputs are
    finite but meaningless.
    """
    _check(h, gamma, beta)
    t, n, _ = h.shape
    w = contribution_weights(None, n, t, n, mask, dual=False, dtype=h.dtype,
                             device=h.device)  # [2, T, N]
    mean, var = weighted_stats(h, w[:1])  # [1, T, C]
    y = (h - mean[0][:, None]) * torch.rsqrt(var[0] + eps)[:, None] * gamma + beta  # [T, N, C]
    return y, mean[0], var[0]


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
    mask: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """DDBN of ``h [T, N, C]`` in training mode: ``(y [T,N,C], mean [2,T,C], var [2,T,C])``.

    ``mean``/``var`` are each domain's weighted batch statistics (variance biased, two-pass)
    with the weights of :func:`actrec.ops.domains.contribution_weights`: if ``n1`` is 0 or N the
    op is exactly plain per-timestep batch norm and both slots hold the plain statistics.
    ``mask [T, N]`` (True on real frames) keeps padding out of every statistic. Running
    statistics are the caller's (``actrec.nn.ddbn``): this function has no side effects.
    """
    _check(h, gamma, beta)
    t, n, _ = h.shape
    if alpha.shape != (2,):
        raise ValueError(f"alpha must be [2], got {tuple(alpha.shape)}")
    if not 0 <= n1 <= n:
        raise ValueError(f"split point n1={n1} outside 0..{n}")
    w = contribution_weights(alpha, n1, t, n, mask, dtype=h.dtype, device=h.device)  # [2, T, N]
    mean, var = weighted_stats(h, w)  # [2, T, C] each
    r = torch.rsqrt(var + eps)  # [2, T, C]
    z = torch.cat([(h[:, :n1] - mean[0, :, None]) * r[0, :, None],
                   (h[:, n1:] - mean[1, :, None]) * r[1, :, None]], 1)  # [T, N, C]
    return z * gamma + beta, mean, var


def ddbn_eval_reference(
    h: Tensor,
    domain: Tensor,
    running_mean: Tensor,
    running_var: Tensor,
    gamma: Tensor,
    beta: Tensor,
    eps: float = 1e-5,
    *,
    checked: bool = False,
) -> Tensor:
    """DDBN at evaluation: row n of ``h [T, N, C]`` uses domain ``domain[n]``'s running
    statistics ``[2, T_max, C]``; timesteps t >= T_max use slot T_max - 1. Rows need not be sorted.
    Domain flags other than 0/1 are a ValueError unless ``checked`` (by the caller) is set.
    """
    _check(h, gamma, beta)
    if not checked:
        domain = check_domain_flags(domain, h.shape[1])  # only 0/1: never wrapped
    t_max = running_mean.shape[1]
    idx = torch.arange(h.shape[0], device=h.device).clamp_max(t_max - 1)
    mean = running_mean[domain][:, idx].transpose(0, 1).to(h.dtype)  # [N, T, C] -> [T, N, C]
    var = running_var[domain][:, idx].transpose(0, 1).to(h.dtype)  # [T, N, C]
    return (h - mean) * torch.rsqrt(var + eps) * gamma + beta
