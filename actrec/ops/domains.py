"""How the rows of a batch feed each domain's statistics: the one place the DDBN weights are made.

Every implementation of dual-domain batch norm (the reference, the fused C++/CUDA DDBN op, the
fused DDLSTM layer op) takes the contribution weights ``w [2, T, N]`` made here, so the formula
of ``shared/design/ddbn.md`` is written once:

- a two-domain batch (``0 < n1 < N``, ``dual``): ``w[i, t, j] = tau_i(j) * mask[t, j]``;
- a single-domain batch, or plain batch norm: ``w[i, t, j] = mask[t, j]`` (0 or 1) in both slots.

``mask [T, N]`` is True on real frames; padding (False) contributes to no statistic, so a batch
padded with any values gives the statistics of its real frames alone. Gradients reach ``alpha``
through these weights by ordinary autograd.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "tau_weights",
    "contribution_weights",
    "effective_sizes",
    "bessel",
    "check_domain_flags",
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


def contribution_weights(
    alpha: Tensor | None,
    n1: int,
    steps: int,
    n: int,
    mask: Tensor | None = None,
    *,
    dual: bool = True,
    dtype: torch.dtype | None = None,
    device: torch.device | None = None,
) -> Tensor:  # -> [2, steps, n]
    """The weights ``w [2, T, N]`` with which row j at timestep t enters domain i's statistics.

    Tanh contributions times the mask for a two-domain batch (``dual`` and ``0 < n1 < n``),
    else the mask (ones without one) in both slots: plain batch norm, exactly, as the spec asks
    for single-domain batches. ``mask [T, N]`` (bool, True on real frames) may be None.
    ``dtype`` defaults to alpha's (float32 without alpha), ``device`` to alpha's or the mask's
    (give the statistics' device: without alpha and mask nothing else says it); differentiable
    in ``alpha``.
    """
    if not 0 <= n1 <= n:
        raise ValueError(f"split point n1={n1} outside 0..{n}")
    if mask is not None and tuple(mask.shape) != (steps, n):
        raise ValueError(f"mask must be [T={steps}, N={n}], got {tuple(mask.shape)}")
    two = dual and 0 < n1 < n
    if two and alpha is None:
        raise ValueError("a two-domain batch needs alpha")
    if dtype is None:
        dtype = alpha.dtype if alpha is not None else torch.float32
    if device is None:
        device = alpha.device if alpha is not None else (mask.device if mask is not None
                                                         else None)
    m = (torch.ones(steps, n, dtype=dtype, device=device) if mask is None
         else mask.to(device=device, dtype=dtype))  # [T, N]
    if not two:
        return m.expand(2, steps, n).contiguous()
    tau = tau_weights(n, n1, alpha.to(device=device, dtype=dtype))  # [2, N]
    return tau[:, None, :] * m  # [2, T, N]


def effective_sizes(weights: Tensor) -> Tensor:  # [2, T, N] (or [T, N]) -> [2, T] (or [T])
    """``n_eff = S^2 / sum_j w_j^2`` per domain and timestep (the count of real rows for hard
    weights); 0 where a domain has no real row at that timestep (S = 0)."""
    w = weights.detach().to(torch.float64)
    s = w.sum(-1)
    s2 = (w * w).sum(-1)
    return torch.where(s > 0, s * s / s2.clamp_min(torch.finfo(torch.float64).tiny),
                       torch.zeros_like(s))


def bessel(n_eff: Tensor) -> Tensor:
    """The factor ``n / (n - 1)`` that makes a batch variance unbiased; 1 where ``n <= 1`` (a
    single sample keeps its biased variance, as PyTorch's BatchNorm does not, to stay finite)."""
    return torch.where(n_eff > 1, n_eff / (n_eff - 1).clamp_min(1e-12), torch.ones_like(n_eff))


def check_domain_flags(domain: Tensor, n: int | None = None) -> Tensor:
    """``domain`` as int64 after checking it holds only 0 (D1) and 1 (D2), shape ``[n]``.

    The one rule for every backend: any other value is an error, never wrapped or clamped.
    Under ``torch.compile`` the value check (data-dependent) is left to eager calls.
    """
    if domain.dim() != 1 or (n is not None and domain.shape[0] != n):
        want = f"[N={n}]" if n is not None else "[N]"
        raise ValueError(f"domain must be {want}, got {tuple(domain.shape)}")
    if domain.dtype.is_floating_point or domain.dtype.is_complex:
        raise ValueError(f"domain flags must be integers 0 (D1) or 1 (D2), got {domain.dtype}")
    if torch.compiler.is_compiling():
        return domain.long()
    if domain.numel() and bool(((domain != 0) & (domain != 1)).any()):
        bad = sorted({int(v) for v in domain[(domain != 0) & (domain != 1)].tolist()})
        raise ValueError(f"domain flags must be 0 (D1) or 1 (D2), got {bad}")
    return domain.long()
