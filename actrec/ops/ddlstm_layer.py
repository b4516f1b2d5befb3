"""The fused whole-sequence DDLSTM / BNLSTM layer: one autograd node per layer and sequence.

``ddlstm_layer`` runs one training-mode layer over a whole time-major sequence with the time
loop in C++ (``actrec::ddlstm_layer_forward`` / ``_backward`` in ``csrc/``), and returns the
per-step batch statistics so that the caller updates its running statistics once per sequence.
The maths is exactly that of ``shared/design/ddbn.md`` (and of the per-step layers in
``actrec.nn``): gates = DDBN_h(h W_hh^T) + DDBN_x(x W_ih^T) + bias, gate order i, f, g, o;
h_t = sigmoid(o) tanh(BN(c_t)) with plain batch norm on c_t. ``dual_domain=False``, n1 == 0 or
n1 == N give exact plain batch norm (the BNLSTM). Evaluation mode is not this op's job: it uses
running statistics per step, which needs no batch reductions.

Importing this module imports neither torch nor the extension; the fake (meta) and autograd
registrations are made once, on first use.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, NamedTuple

from actrec.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from torch import Tensor

__all__ = ["LayerStats", "LayerOutput", "ddlstm_layer", "fused_layer_available", "effective_sizes"]

_FWD = "actrec::ddlstm_layer_forward"
_BWD = "actrec::ddlstm_layer_backward"
_lock = threading.Lock()
_registered = False


class LayerStats(NamedTuple):
    """Per-step batch statistics of one layer call (detached; biased variances).

    ``mean_x, var_x`` (input path x W_ih^T) and ``mean_h, var_h`` (hidden path h W_hh^T) are
    ``[2, T, 4H]``, domain 0 (D1) then domain 1 (D2); for a single-domain call both slots hold
    the same plain batch statistics. ``mean_c, var_c`` are ``[T, H]`` over the whole batch.
    ``n_eff`` ``[2]`` are the effective sample sizes S_d^2 / sum tau_d^2 (N for plain batch
    norm) and ``n_c`` = N, for the unbiased running variance ``var * n / (n - 1)``.
    """

    mean_x: Tensor
    var_x: Tensor
    mean_h: Tensor
    var_h: Tensor
    mean_c: Tensor
    var_c: Tensor
    n_eff: Tensor
    n_c: int

    def unbiased_var_x(self) -> Tensor:  # [2, T, 4H]
        return self.var_x * _bessel(self.n_eff).view(2, 1, 1)

    def unbiased_var_h(self) -> Tensor:  # [2, T, 4H]
        return self.var_h * _bessel(self.n_eff).view(2, 1, 1)

    def unbiased_var_c(self) -> Tensor:  # [T, H]
        n = float(self.n_c)
        return self.var_c * (n / (n - 1.0) if n > 1 else 1.0)


class LayerOutput(NamedTuple):
    """``out`` [T, N, H] (every h_t), ``h_n`` and ``c_n`` [N, H], and the batch ``stats``."""

    out: Tensor
    h_n: Tensor
    c_n: Tensor
    stats: LayerStats


def _bessel(n_eff: Tensor) -> Tensor:
    return n_eff / (n_eff - 1.0).clamp_min(1e-12)


def effective_sizes(alpha: Tensor, n: int, n1: int, dual_domain: bool = True) -> Tensor:
    """``[2]`` effective sample sizes S_d^2 / sum_j tau_d(j)^2 of the two domains' statistics
    (both N for plain batch norm), in alpha's dtype on alpha's device."""
    import torch

    a = alpha.detach().to(torch.float64)
    if not dual_domain or n1 <= 0 or n1 >= n:
        return torch.full((2,), float(n), dtype=alpha.dtype, device=alpha.device)
    j = torch.arange(1, n + 1, dtype=torch.float64, device=a.device)
    tau = torch.stack([(1 - torch.tanh(j - a[0] * n)) / 2, (1 + torch.tanh(j - (1 - a[1]) * n)) / 2])
    return (tau.sum(1) ** 2 / (tau**2).sum(1)).to(alpha.dtype)


def _ext_disabled() -> bool:
    from actrec.ops import _ext

    return _ext.disabled()


def _op_registered(device_type: str) -> bool:
    import torch

    key = {"cpu": "CPU", "cuda": "CUDA"}.get(device_type)
    try:
        return key is not None and torch._C._dispatch_has_kernel_for_dispatch_key(_FWD, key)
    except RuntimeError:  # the op schema is not registered at all
        return False


def _ensure_loaded() -> bool:
    """Load the extension unless the ops are already registered (a prebuilt, JIT or test build);
    register the fake and autograd formulas once. True when the CPU op exists."""
    from actrec.ops import _ext

    if not _op_registered("cpu"):
        _ext.load()
    if not _op_registered("cpu"):
        return False
    _register_python_side()
    return True


def fused_layer_available(x: Tensor) -> bool:
    """True when ``ddlstm_layer`` can run for ``x``: the extension is loaded, not disabled by
    ``ACTREC_DISABLE_EXT=1``, has a kernel for x's device, and x is float32 or float64."""
    import torch

    from actrec.ops import _ext

    if _ext.disabled() or x.dtype not in (torch.float32, torch.float64):
        return False
    return _ensure_loaded() and _op_registered(x.device.type)


def ddlstm_layer(x: Tensor, weight_ih: Tensor, weight_hh: Tensor, bias: Tensor,
                 gamma_x: Tensor, beta_x: Tensor, gamma_h: Tensor, beta_h: Tensor,
                 gamma_c: Tensor, beta_c: Tensor, alpha: Tensor, n1: int, eps: float,
                 h0: Tensor | None = None, c0: Tensor | None = None,
                 dual_domain: bool = True) -> LayerOutput:
    """One training-mode DDLSTM layer (BNLSTM with ``dual_domain=False``) over x [T, N, D].

    Rows must be sorted with the ``n1`` D1 rows first. Differentiable w.r.t. every tensor
    argument (alpha included). Raises ``ConfigError`` when the fused op is unavailable for x
    (check ``fused_layer_available(x)`` first) or when the shapes do not fit together.
    """
    import torch

    if not fused_layer_available(x):
        raise ConfigError(
            f"the fused DDLSTM layer op is not available for a {x.dtype} tensor on {x.device} "
            "(extension disabled, not built, or dtype/device unsupported); use the per-step "
            "layers in actrec.nn instead")
    if x.dim() != 3:
        raise ConfigError(f"ddlstm_layer: x must be [T, N, D], got shape {tuple(x.shape)}")
    n = x.shape[1]
    if not 0 <= int(n1) <= n:
        raise ConfigError(f"ddlstm_layer: n1 must be in [0, N={n}], got {n1}")
    try:
        res = torch.ops.actrec.ddlstm_layer_forward(
            x, weight_ih, weight_hh, bias, gamma_x, beta_x, gamma_h, beta_h, gamma_c, beta_c,
            alpha, int(n1), float(eps), bool(dual_domain), h0, c0)
    except RuntimeError as e:
        msg = str(e).splitlines()[0]
        if "ddlstm_layer" in msg:
            raise ConfigError(msg) from None
        raise
    out, h_n, c_n = res[0], res[1], res[2]
    stats = LayerStats(*(t.detach() for t in res[6:12]),
                       n_eff=effective_sizes(alpha, n, int(n1), dual_domain), n_c=n)
    return LayerOutput(out, h_n, c_n, stats)


# ---------------------------------------------------------------------------------------------
# torch.library registrations (fake tensors and autograd), made once after the op exists


def _fwd_fake(x, weight_ih, weight_hh, bias, gamma_x, beta_x, gamma_h, beta_h, gamma_c, beta_c,
              alpha, n1, eps, dual_domain, h0, c0):
    t, n, _ = x.shape
    h = weight_hh.shape[1]
    g = 4 * h
    e = x.new_empty
    return (e(t, n, h), e(n, h), e(n, h), e(t, n, g), e(t, n, g), e(t, n, h),
            e(2, t, g), e(2, t, g), e(2, t, g), e(2, t, g), e(t, h), e(t, h))


def _bwd_fake(grad_out, grad_h_n, grad_c_n, x, weight_ih, weight_hh, bias, gamma_x, beta_x,
              gamma_h, beta_h, gamma_c, beta_c, alpha, h0, c0, xp, gh, out, cs, mean_x, var_x,
              mean_h, var_h, mean_c, var_c, n1, eps, dual_domain, need_grad_x):
    n = x.shape[1]
    h = weight_hh.shape[1]
    gx = x.new_empty(x.shape) if need_grad_x else x.new_empty(0)
    return (gx, weight_ih.new_empty(weight_ih.shape), weight_hh.new_empty(weight_hh.shape),
            bias.new_empty(bias.shape), gamma_x.new_empty(gamma_x.shape),
            beta_x.new_empty(beta_x.shape), gamma_h.new_empty(gamma_h.shape),
            beta_h.new_empty(beta_h.shape), gamma_c.new_empty(gamma_c.shape),
            beta_c.new_empty(beta_c.shape), alpha.new_empty(alpha.shape), x.new_empty(n, h),
            x.new_empty(n, h))


def _setup_context(ctx, inputs, output):
    (x, w_ih, w_hh, bias, gx, bx, gh, bh, gc, bc, alpha, n1, eps, dual, h0, c0) = inputs
    out, _, _, xp, ghs, cs, mx, vx, mh, vh, mc, vc = output
    ctx.n1, ctx.eps, ctx.dual = n1, eps, dual
    ctx.has_h0, ctx.has_c0 = h0 is not None, c0 is not None
    ctx.save_for_backward(x, w_ih, w_hh, bias, gx, bx, gh, bh, gc, bc, alpha, h0, c0,
                          xp, ghs, out, cs, mx, vx, mh, vh, mc, vc)


def _backward(ctx, *grads):
    import torch

    (x, w_ih, w_hh, bias, gx, bx, gh, bh, gc, bc, alpha, h0, c0,
     xp, ghs, out, cs, mx, vx, mh, vh, mc, vc) = ctx.saved_tensors
    g_out, g_hn, g_cn = grads[0], grads[1], grads[2]
    if g_out is None:
        g_out = torch.zeros_like(out)
    if g_hn is None:
        g_hn = out.new_zeros(out.shape[1:])
    if g_cn is None:
        g_cn = out.new_zeros(out.shape[1:])
    need_x = bool(ctx.needs_input_grad[0])
    r = torch.ops.actrec.ddlstm_layer_backward(
        g_out, g_hn, g_cn, x, w_ih, w_hh, bias, gx, bx, gh, bh, gc, bc, alpha, h0, c0,
        xp, ghs, out, cs, mx, vx, mh, vh, mc, vc, ctx.n1, ctx.eps, ctx.dual, need_x)
    grad_x = r[0] if need_x else None
    return (grad_x, *r[1:11], None, None, None,
            r[11] if ctx.has_h0 else None, r[12] if ctx.has_c0 else None)


def _register_python_side() -> None:
    global _registered
    if _registered:
        return
    import torch

    with _lock:
        if _registered:
            return
        torch.library.register_fake(_FWD)(_fwd_fake)
        torch.library.register_fake(_BWD)(_bwd_fake)
        torch.library.register_autograd(_FWD, _backward, setup_context=_setup_context)
        _registered = True
