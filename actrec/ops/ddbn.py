"""The public DDBN op: the fused C++/CUDA kernels when the extension is loaded, else the reference.

``ddbn`` and ``ddbn_eval`` have the signatures and results of ``ddbn_reference`` and
``ddbn_eval_reference`` (see there and shared/design/ddbn.md). The extension is found or
compiled on first use (``actrec.ops._ext``), never at import; ``ACTREC_DISABLE_EXT=1`` forces the
reference. The compiled ops are ``torch.ops.actrec.{ddbn_forward, ddbn_backward, ddbn_eval}``.
``ddbn_forward`` takes the contribution weights ``[2, T, N]`` of
:func:`actrec.ops.domains.contribution_weights` (so the weight formula and the padding mask live
in one place, and alpha's gradient flows through them by autograd) and mutates nothing; its
fake (meta) kernels and autograd formula (the backward is its own op) are registered here with
the public ``torch.library`` API, so they work under ``torch.compile`` and ``opcheck``.
"""

from __future__ import annotations

import threading

import torch
from torch import Tensor

from actrec.ops import _ext
from actrec.ops.ddbn_reference import ddbn_eval_reference, ddbn_reference
from actrec.ops.domains import check_domain_flags, contribution_weights

__all__ = ["ddbn", "ddbn_eval", "extension_ops"]

_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_CUDA_MAX_BATCH = 1024  # cuda::kMaxBatch in csrc/cuda/ddbn_kernels.cuh
_lock = threading.Lock()
_registered = False


def _stat_dtype(dtype: torch.dtype) -> torch.dtype:
    """Saved statistics are float64 for float64 inputs and float32 otherwise."""
    return torch.float64 if dtype == torch.float64 else torch.float32


# ------------------------------------------------------------------------------------------
# Python-side registrations of the C++ ops (done once, after the library is loaded)


def _fake_forward(h, weights, n1, gamma, beta, eps):
    t, _, c = h.shape
    st = _stat_dtype(h.dtype)
    y = h.new_empty(h.shape)  # contiguous, as the kernels write it
    return y, h.new_empty((2, t, c), dtype=st), h.new_empty((2, t, c), dtype=st)


def _fake_backward(grad_y, h, weights, n1, gamma, mean, var, eps):
    c = h.shape[2]
    return (h.new_empty(h.shape), weights.new_empty(weights.shape), gamma.new_empty((c,)),
            gamma.new_empty((c,)))


def _fake_eval(h, domain, running_mean, running_var, gamma, beta, eps):
    return h.new_empty(h.shape)


def _setup_context(ctx, inputs, output):
    h, weights, n1, gamma, _beta, eps = inputs
    _y, mean, var = output
    ctx.save_for_backward(h, weights, gamma, mean, var)
    ctx.n1, ctx.eps = n1, eps
    ctx.mark_non_differentiable(mean, var)  # statistics are outputs for inspection only


def _backward(ctx, grad_y, _grad_mean, _grad_var):
    h, weights, gamma, mean, var = ctx.saved_tensors
    gh, gw, gg, gb = torch.ops.actrec.ddbn_backward(
        grad_y, h, weights, ctx.n1, gamma, mean, var, ctx.eps
    )
    return gh, gw, None, gg, gb, None


def _eval_setup_context(ctx, inputs, output):
    h, domain, running_mean, running_var, gamma, _beta, eps = inputs
    ctx.save_for_backward(h, domain, running_mean, running_var, gamma)
    ctx.eps = eps


def _eval_backward(ctx, grad_y):
    # y = (h - mu) * gamma * s + beta with the (constant) running statistics of each row's slot.
    h, domain, running_mean, running_var, gamma = ctx.saved_tensors
    idx = torch.arange(h.shape[0], device=h.device).clamp_max(running_mean.shape[1] - 1)
    mu = running_mean[domain][:, idx].transpose(0, 1)  # [N, T, C] -> [T, N, C]
    s = torch.rsqrt(running_var[domain][:, idx].transpose(0, 1) + ctx.eps)  # [T, N, C]
    gy = grad_y.to(s.dtype)
    gh = (gy * s * gamma.to(s.dtype)).to(h.dtype) if ctx.needs_input_grad[0] else None
    gg = (gy * (h.to(s.dtype) - mu) * s).sum((0, 1)).to(gamma.dtype)  # [C]
    gb = gy.sum((0, 1)).to(gamma.dtype)  # [C]
    return gh, None, None, None, gg, gb, None


def _register() -> None:
    """Fake kernels and the autograd formulas of the loaded ``torch.ops.actrec`` DDBN ops."""
    global _registered
    if _registered:
        return
    with _lock:
        if _registered:
            return
        torch.library.register_fake("actrec::ddbn_forward")(_fake_forward)
        torch.library.register_fake("actrec::ddbn_backward")(_fake_backward)
        torch.library.register_fake("actrec::ddbn_eval")(_fake_eval)
        torch.library.register_autograd("actrec::ddbn_forward", _backward,
                                        setup_context=_setup_context)
        torch.library.register_autograd("actrec::ddbn_eval", _eval_backward,
                                        setup_context=_eval_setup_context)
        _registered = True


def extension_ops():
    """``torch.ops.actrec`` with the DDBN ops registered, or None when the reference is in use."""
    if _ext.load() is None:
        return None
    _register()
    return torch.ops.actrec


# ------------------------------------------------------------------------------------------
# Public API


def _ext_supports(h: Tensor) -> bool:
    """True when the compiled op should run on ``h``: extension loaded, device and dtype built."""
    if torch.compiler.is_compiling():
        mod = _ext._module  # decided before tracing; loading is not traceable
        if mod is None or not _registered:
            return False
    else:
        if extension_ops() is None:
            return False
    if h.dtype not in _DTYPES:
        return False
    if h.device.type == "cpu":
        return True
    if h.device.type == "cuda":  # the CUDA kernels keep the batch's weights in shared memory
        built = _ext.status(build=False).compiled_with.get("cuda", False)
        return bool(built) and h.dim() == 3 and h.shape[1] <= _CUDA_MAX_BATCH
    return False


def _check(h: Tensor, alpha: Tensor, n1: int, gamma: Tensor, beta: Tensor) -> None:
    if h.dim() != 3:
        raise ValueError(f"expected h of shape [T, N, C], got {tuple(h.shape)}")
    c = h.shape[2]
    if gamma.shape != (c,) or beta.shape != (c,):
        raise ValueError(
            f"gamma and beta must be [C={c}], got {tuple(gamma.shape)} and {tuple(beta.shape)}"
        )
    if alpha.shape != (2,):
        raise ValueError(f"alpha must be [2], got {tuple(alpha.shape)}")
    if not 0 <= n1 <= h.shape[1]:
        raise ValueError(f"split point n1={n1} outside 0..{h.shape[1]}")


def ddbn(
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

    Same contract as :func:`actrec.ops.ddbn_reference.ddbn_reference`: rows ``0..n1-1`` are
    domain D1; ``mean``/``var`` are each domain's weighted batch statistics (variance biased)
    with the weights of :func:`actrec.ops.domains.contribution_weights`; ``mask [T, N]`` (bool,
    True on real frames) keeps padding out of every statistic, and where a domain has no real
    row at t its mean and var are 0. No side effects (running statistics are the caller's).
    Differentiable in h, alpha, gamma and beta (alpha through the weights). With the extension,
    ``mean``/``var`` carry no gradient and are float32 for half/bfloat16 inputs.
    """
    n1 = int(n1)
    if not _ext_supports(h):
        return ddbn_reference(h, alpha, n1, gamma, beta, eps, mask=mask)
    _check(h, alpha, n1, gamma, beta)
    t, n, _ = h.shape
    w = contribution_weights(alpha, n1, t, n, mask, dtype=_stat_dtype(h.dtype),
                             device=h.device)  # [2, T, N]
    return torch.ops.actrec.ddbn_forward(h, w.to(h.device), n1, gamma, beta, float(eps))


def ddbn_eval(
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
    """DDBN at evaluation, as :func:`actrec.ops.ddbn_reference.ddbn_eval_reference`: row n of
    ``h [T, N, C]`` uses domain ``domain[n]``'s running statistics ``[2, T_max, C]``; timesteps
    ``t >= T_max`` use slot ``T_max - 1``.

    ``domain [N]`` must hold only 0 (D1) and 1 (D2): anything else is a ValueError, checked
    here for every backend (:func:`actrec.ops.domains.check_domain_flags`), unless ``checked``
    says the caller did so already (a model checks its sequences' flags once, in
    ``init_state``, not at every step: the check costs a host sync).
    """
    if h.dim() != 3:
        raise ValueError(f"expected h of shape [T, N, C], got {tuple(h.shape)}")
    if not checked:
        domain = check_domain_flags(domain, h.shape[1])
    if not _ext_supports(h):
        return ddbn_eval_reference(h, domain, running_mean, running_var, gamma, beta, eps,
                                   checked=True)
    return torch.ops.actrec.ddbn_eval(h, domain, running_mean, running_var, gamma, beta,
                                      float(eps))
