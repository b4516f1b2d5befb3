"""The fused whole-sequence DDLSTM / BNLSTM layer: one autograd node per layer and sequence.

``ddlstm_layer`` runs one training-mode layer over a whole time-major sequence with the time
loop in C++ (``actrec::ddlstm_layer_forward`` / ``_backward`` in ``csrc/``), and returns the
per-step batch statistics so that the caller updates its running statistics once per sequence.
The maths is exactly that of ``shared/design/ddbn.md`` (and of the per-step layers in
``actrec.nn``): gates = DDBN_h(h W_hh^T) + DDBN_x(x W_ih^T) + bias, gate order i, f, g, o;
h_t = sigmoid(o) tanh(BN(c_t)) with plain batch norm on c_t. ``dual_domain=False``, n1 == 0 or
n1 == N give exact plain batch norm (the BNLSTM).

``ddlstm_layer_eval`` is the evaluation-mode counterpart (running statistics, no autograd):
``eval_affine`` folds every normalisation into per-(domain, t, column) scales and shifts, and
``actrec::ddlstm_layer_eval`` runs the whole sequence with the time loop in C++ (one GEMM and
one element-wise pass per step; rows are independent and may come from either domain).

The op takes the DDBN contribution weights ``w [2, T, N]`` made by
``actrec.ops.domains.contribution_weights`` (the one place the formula lives) and the weights of
the batch norm on c_t (the 0/1 padding mask); its backward returns dL/dw and autograd carries it
to alpha. A padding ``mask [T, N]`` therefore keeps padded frames out of every statistic (x
path, h path, c path); where a domain has no real row at a timestep its statistics are 0.

Importing this module imports neither torch nor the extension; the fake (meta) and autograd
registrations are made once, on first use.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, NamedTuple

from actrec.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from torch import Tensor

__all__ = ["PHASES", "EvalAffine", "LayerOutput", "LayerStats", "ddlstm_layer",
           "ddlstm_layer_eval", "eval_affine", "fused_layer_available", "release_workspace",
           "timed_phases", "workspace_bytes"]

_FWD = "actrec::ddlstm_layer_forward"
_BWD = "actrec::ddlstm_layer_backward"
_EVAL = "actrec::ddlstm_layer_eval"
_lock = threading.Lock()
_registered = False


class LayerStats(NamedTuple):
    """Per-step batch statistics of one layer call (detached; biased variances).

    ``mean_x, var_x`` (input path x W_ih^T) and ``mean_h, var_h`` (hidden path h W_hh^T) are
    ``[2, T, 4H]``, domain 0 (D1) then domain 1 (D2); for a single-domain call both slots hold
    the same plain batch statistics. ``mean_c, var_c`` are ``[T, H]`` over the whole batch.
    Padded frames enter none of them.

    ``n_eff`` ``[2, T]`` (float64) are the effective sample sizes of
    :func:`actrec.ops.domains.effective_sizes` and ``n_c`` ``[T]`` (float64) the real rows per
    timestep. Both are 0 at a timestep where a domain (for ``n_c``: the batch) has no real
    frame; the statistics there are 0 and carry no information, so **callers must not update
    running statistics at (domain, t) where n_eff (n_c) is 0**.
    """

    mean_x: Tensor
    var_x: Tensor
    mean_h: Tensor
    var_h: Tensor
    mean_c: Tensor
    var_c: Tensor
    n_eff: Tensor
    n_c: Tensor

    def unbiased_var_x(self) -> Tensor:  # [2, T, 4H]
        return self.var_x * _bessel(self.n_eff, self.var_x)[..., None]

    def unbiased_var_h(self) -> Tensor:  # [2, T, 4H]
        return self.var_h * _bessel(self.n_eff, self.var_h)[..., None]

    def unbiased_var_c(self) -> Tensor:  # [T, H]
        return self.var_c * _bessel(self.n_c, self.var_c)[..., None]


class LayerOutput(NamedTuple):
    """``out`` [T, N, H] (every h_t), ``h_n`` and ``c_n`` [N, H], and the batch ``stats``.

    ``h_n``/``c_n`` are the states after step T - 1 for every row; a row whose sequence ends
    earlier (padding) has its last real state in ``out`` at its own last real step."""

    out: Tensor
    h_n: Tensor
    c_n: Tensor
    stats: LayerStats


def _bessel(n: Tensor, like: Tensor) -> Tensor:
    """``actrec.ops.domains.bessel`` in ``like``'s dtype and device (the one formula)."""
    from actrec.ops.domains import bessel

    return bessel(n).to(dtype=like.dtype, device=like.device)


def _ext_disabled() -> bool:
    from actrec.ops import _ext

    return _ext.disabled()


def _op_exists() -> bool:
    """True when the layer op's schema is registered (public API: ``torch.ops`` lookup)."""
    import torch

    return hasattr(torch.ops.actrec, "ddlstm_layer_forward")


def _ensure_loaded() -> bool:
    """Load the extension unless the ops are already registered (a prebuilt, JIT or test build);
    register the fake and autograd formulas once. True when the op exists (its CPU kernel is
    compiled with its schema, always)."""
    from actrec.ops import _ext

    if not _op_exists():
        _ext.load()
    if not _op_exists():
        return False
    _register_python_side()
    return True


def _has_kernel(device_type: str) -> bool:
    """Whether the loaded extension has a kernel for ``device_type``: CPU always; CUDA when its
    ``build_info()`` says the CUDA sources were compiled in."""
    from actrec.ops import _ext

    if device_type == "cpu":
        return True
    if device_type == "cuda":
        return bool(_ext.status(build=False).compiled_with.get("cuda"))
    return False


def fused_layer_available(x: Tensor) -> bool:
    """True when ``ddlstm_layer`` can run for ``x``: the extension is loaded, not disabled by
    ``ACTREC_DISABLE_EXT=1``, has a kernel for x's device, and x is float32 or float64."""
    import torch

    from actrec.ops import _ext

    if _ext.disabled() or x.dtype not in (torch.float32, torch.float64):
        return False
    return _ensure_loaded() and _has_kernel(x.device.type)


def workspace_bytes() -> int:
    """Bytes of freed CPU buffers the fused layer ops keep for reuse (0 without the extension).

    The training op's ``[T, N, 4H]`` buffers (hundreds of MB per step) are kept when freed and
    handed out again to the next call of the same size, instead of being unmapped and faulted
    in again by the kernel on every call; at most ``ACTREC_WORKSPACE_CACHE_MB`` MiB (read when
    the extension loads; default 1024, 0 turns the cache off)."""
    import torch

    if _ext_disabled() or not _ensure_loaded():
        return 0
    return int(torch.ops.actrec.workspace_cache_bytes())


def release_workspace() -> int:
    """Frees the buffers :func:`workspace_bytes` counts (after training, say); returns the bytes
    released. Buffers still in use are not touched and return to the cache when freed."""
    import torch

    if _ext_disabled() or not _ensure_loaded():
        return 0
    return int(torch.ops.actrec.workspace_cache_clear())


# The CPU training ops' phases, in the order of actrec::phase::Phase (csrc/cpu/phase_times.h).
# Microseconds summed over the calls timed, except the *_steps and threads counts. Per call:
# fwd_total, x_proj (x W_ih^T, one GEMM per chunk of steps), x_stats (its per-step DDBN
# statistics), bwd_total, weight_grads (the weight-gradient GEMMs and dL/dx, one set per chunk
# of steps). Per step:
# *_region (the step's parallel region, wall), *_gemm (its recurrent GEMM) and *_kernels (its
# fused element-wise kernel), both summed over the region's threads, *_busy (the busiest
# thread's GEMM + kernel time: region - busy is fork/join and waiting), *_steps (steps timed);
# *_gemm_outside: recurrent GEMMs run on the calling thread outside the regions (every step's
# for small layers or builds without MKL; grad_h0's). threads: the most one region used.
PHASES = ("fwd_total", "x_proj", "x_stats", "fwd_region", "fwd_gemm", "fwd_kernels", "fwd_busy",
          "fwd_steps", "bwd_total", "bwd_region", "bwd_gemm", "bwd_kernels", "bwd_busy",
          "bwd_steps", "weight_grads", "fwd_gemm_outside", "bwd_gemm_outside", "threads")


@contextmanager
def timed_phases() -> Iterator[dict[str, float]]:
    """Times the phases of the fused CPU training ops (:data:`PHASES`) called while the block
    runs, in every thread; the yielded dict is filled when the block ends. For benchmarks:
    where a train step's time goes inside the op, which a profiler cannot show once the
    per-step GEMMs run inside the step's parallel region. Raises ``ConfigError`` when the
    extension is not loaded or has no phase timers."""
    import torch

    if _ext_disabled() or not _ensure_loaded() or not hasattr(torch.ops.actrec,
                                                                 "ddlstm_phase_times_start"):
        raise ConfigError("the fused DDLSTM layer op's phase timers are not available "
                          "(extension disabled, not built, or built from older sources)")
    got: dict[str, float] = {}
    torch.ops.actrec.ddlstm_phase_times_start()
    try:
        yield got
    finally:
        values = torch.ops.actrec.ddlstm_phase_times_stop()
        if len(values) != len(PHASES):  # the extension and this module disagree
            raise ConfigError(f"the extension reports {len(values)} phases, this module knows "
                              f"{len(PHASES)}: rebuild the extension")
        got.update(zip(PHASES, values))


def _check_mask(mask: Tensor, t: int, n: int, device) -> Tensor:
    """``mask`` as bool on ``device`` after checking it is ``[T, N]`` with each row's padding
    at the end (a real frame after a padded one would make the recurrence read padding)."""
    import torch

    if tuple(mask.shape) != (t, n):
        raise ConfigError(f"ddlstm_layer: mask must be [T={t}, N={n}], got {tuple(mask.shape)}")
    if mask.dtype != torch.bool:
        raise ConfigError(f"ddlstm_layer: mask must be a bool tensor, got {mask.dtype}")
    mask = mask.to(device)
    if t > 1 and bool((mask[1:] & ~mask[:-1]).any()):
        raise ConfigError("ddlstm_layer: mask has a real frame after a padded one; padding "
                          "must come at the end of each sequence (mask [T, N], True on real "
                          "frames)")
    return mask


def ddlstm_layer(x: Tensor, weight_ih: Tensor, weight_hh: Tensor, bias: Tensor,
                 gamma_x: Tensor, beta_x: Tensor, gamma_h: Tensor, beta_h: Tensor,
                 gamma_c: Tensor, beta_c: Tensor, alpha: Tensor, n1: int, eps: float,
                 h0: Tensor | None = None, c0: Tensor | None = None,
                 dual_domain: bool = True, mask: Tensor | None = None) -> LayerOutput:
    """One training-mode DDLSTM layer (BNLSTM with ``dual_domain=False``) over x [T, N, D].

    Rows must be sorted with the ``n1`` D1 rows first. ``mask [T, N]`` (bool, True on real
    frames, padding at the end of each row) keeps padded frames out of every batch statistic;
    the recurrence still runs through them (their outputs are finite but meaningless, and do
    not influence real rows). Padding values must be finite. The DDBN contribution weights
    come from :func:`actrec.ops.domains.contribution_weights`; gradients reach ``alpha``
    through them by autograd. Differentiable w.r.t. every tensor argument. Raises
    ``ConfigError`` when the fused op is unavailable for x (check
    ``fused_layer_available(x)`` first) or when the shapes do not fit together.
    """
    import torch

    from actrec.ops.domains import contribution_weights, effective_sizes

    if not fused_layer_available(x):
        raise ConfigError(
            f"the fused DDLSTM layer op is not available for a {x.dtype} tensor on {x.device} "
            "(extension disabled, not built, or dtype/device unsupported); use the per-step "
            "layers in actrec.nn instead")
    if x.dim() != 3:
        raise ConfigError(f"ddlstm_layer: x must be [T, N, D], got shape {tuple(x.shape)}")
    t_len, n = x.shape[0], x.shape[1]
    if not 0 <= int(n1) <= n:
        raise ConfigError(f"ddlstm_layer: n1 must be in [0, N={n}], got {n1}")
    if alpha.shape != (2,):
        raise ConfigError(f"ddlstm_layer: alpha must be [2], got {tuple(alpha.shape)}")
    if mask is not None:
        mask = _check_mask(mask, t_len, n, x.device)
    w = contribution_weights(alpha.to(x.device), int(n1), t_len, n, mask, dual=bool(dual_domain),
                             dtype=x.dtype)  # [2, T, N]
    w_c = (mask.to(x.dtype) if mask is not None
           else torch.ones(t_len, n, dtype=x.dtype, device=x.device))  # [T, N]
    try:
        res = torch.ops.actrec.ddlstm_layer_forward(
            x, weight_ih, weight_hh, bias, gamma_x, beta_x, gamma_h, beta_h, gamma_c, beta_c,
            w, w_c, int(n1), float(eps), bool(dual_domain), h0, c0)
    except RuntimeError as e:
        msg = str(e).splitlines()[0]
        if "ddlstm_layer" in msg:
            raise ConfigError(msg) from None
        raise
    out, h_n, c_n = res[0], res[1], res[2]
    stats = LayerStats(*(t.detach() for t in res[6:12]), n_eff=effective_sizes(w),  # [2, T]
                       n_c=w_c.detach().to(torch.float64).sum(1))  # [T]
    return LayerOutput(out, h_n, c_n, stats)


class EvalAffine(NamedTuple):
    """Every normalisation of one layer at evaluation, folded into affine maps:
    ``gates = gh * scale_h + xp * scale_x + shift`` with ``gh = h W_hh^T``, ``xp = x W_ih^T``
    (``[2, S, 4H]``, indexed by each row's domain and the step's slot), and
    ``BN(c_t) = c_t * scale_c + shift_c`` (``[S, H]``). Step t uses slot ``min(t, S - 1)``."""

    scale_x: Tensor
    scale_h: Tensor
    shift: Tensor
    scale_c: Tensor
    shift_c: Tensor


def eval_affine(mean_x: Tensor, var_x: Tensor, gamma_x: Tensor, beta_x: Tensor,
                mean_h: Tensor, var_h: Tensor, gamma_h: Tensor, beta_h: Tensor, bias: Tensor,
                mean_c: Tensor, var_c: Tensor, gamma_c: Tensor, beta_c: Tensor,
                eps: float) -> EvalAffine:
    """Fold running statistics into :class:`EvalAffine`. ``mean_x, var_x, mean_h, var_h`` are
    ``[2, T, 4H]`` (per domain; a BNLSTM passes its one set expanded to both slots) and
    ``mean_c, var_c`` ``[T, H]``, already indexed by step (slot ``min(t, trained - 1)``).
    ``y = (z - mean) / sqrt(var + eps) * gamma + beta`` becomes ``z * scale + shift``."""
    import torch

    sx = gamma_x * torch.rsqrt(var_x + eps)  # [2, T, 4H]
    sh = gamma_h * torch.rsqrt(var_h + eps)
    shift = (beta_x - mean_x * sx) + (beta_h - mean_h * sh) + bias
    sc = gamma_c * torch.rsqrt(var_c + eps)  # [T, H]
    return EvalAffine(sx.contiguous(), sh.contiguous(), shift.contiguous(), sc.contiguous(),
                      (beta_c - mean_c * sc).contiguous())


def ddlstm_layer_eval(x: Tensor, weight_ih: Tensor, weight_hh: Tensor, affine: EvalAffine,
                      domain: Tensor, h0: Tensor | None = None,
                      c0: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """One evaluation-mode layer over ``x [T, N, D]`` from ``(h0, c0)`` (zeros when None):
    ``(out [T, N, H], h_n, c_n)``. Row n uses domain ``domain[n]`` (0/1, int64 ``[N]``; any
    order) of ``affine`` (:func:`eval_affine`; step t uses its slot ``min(t, S - 1)``, so
    maps over the trained slots serve sequences of any length). No autograd: call it where gradients are not
    needed (``torch.no_grad``); raises ``ConfigError`` when the op is unavailable for x or the
    shapes do not fit."""
    import torch

    if not fused_layer_available(x):
        raise ConfigError(
            f"the fused DDLSTM layer op is not available for a {x.dtype} tensor on {x.device}; "
            "use the per-step layers in actrec.nn instead")
    try:
        out, h_n, c_n = torch.ops.actrec.ddlstm_layer_eval(
            x, weight_ih, weight_hh, *affine, domain.to(device=x.device, dtype=torch.long),
            h0, c0)
    except RuntimeError as e:
        msg = str(e).splitlines()[0]
        if "ddlstm_layer" in msg:
            raise ConfigError(msg) from None
        raise
    return out, h_n, c_n


# ---------------------------------------------------------------------------------------------
# torch.library registrations (fake tensors and autograd), made once after the op exists


def _fwd_fake(x, weight_ih, weight_hh, bias, gamma_x, beta_x, gamma_h, beta_h, gamma_c, beta_c,
              w, w_c, n1, eps, dual_domain, h0, c0):
    t, n, _ = x.shape
    h = weight_hh.shape[1]
    g = 4 * h
    e = x.new_empty
    return (e(t, n, h), e(n, h), e(n, h), e(t, n, g), e(t, n, g), e(t, n, h),
            e(2, t, g), e(2, t, g), e(2, t, g), e(2, t, g), e(t, h), e(t, h))


def _bwd_fake(grad_out, grad_h_n, grad_c_n, x, weight_ih, weight_hh, bias, gamma_x, beta_x,
              gamma_h, beta_h, gamma_c, beta_c, w, w_c, h0, c0, xp, gh, out, cs, mean_x, var_x,
              mean_h, var_h, mean_c, var_c, n1, eps, dual_domain, need_grad_x):
    n = x.shape[1]
    h = weight_hh.shape[1]
    gx = x.new_empty(x.shape) if need_grad_x else x.new_empty(0)
    return (gx, weight_ih.new_empty(weight_ih.shape), weight_hh.new_empty(weight_hh.shape),
            bias.new_empty(bias.shape), gamma_x.new_empty(gamma_x.shape),
            beta_x.new_empty(beta_x.shape), gamma_h.new_empty(gamma_h.shape),
            beta_h.new_empty(beta_h.shape), gamma_c.new_empty(gamma_c.shape),
            beta_c.new_empty(beta_c.shape), w.new_empty(w.shape), x.new_empty(n, h),
            x.new_empty(n, h))


def _eval_fake(x, weight_ih, weight_hh, scale_x, scale_h, shift, scale_c, shift_c, domain,
               h0, c0):
    t, n, _ = x.shape
    h = weight_hh.shape[1]
    return x.new_empty(t, n, h), x.new_empty(n, h), x.new_empty(n, h)


def _setup_context(ctx, inputs, output):
    # Gradients of the saved-for-backward outputs (xp, gh, cs, statistics) are never used:
    # do not materialise them as zeros (two [T, N, 4H] fills per call).
    ctx.set_materialize_grads(False)
    (x, w_ih, w_hh, bias, gx, bx, gh, bh, gc, bc, w, w_c, n1, eps, dual, h0, c0) = inputs
    out, _, _, xp, ghs, cs, mx, vx, mh, vh, mc, vc = output
    ctx.n1, ctx.eps, ctx.dual = n1, eps, dual
    ctx.has_h0, ctx.has_c0 = h0 is not None, c0 is not None
    ctx.save_for_backward(x, w_ih, w_hh, bias, gx, bx, gh, bh, gc, bc, w, w_c, h0, c0,
                          xp, ghs, out, cs, mx, vx, mh, vh, mc, vc)


def _backward(ctx, *grads):
    import torch

    (x, w_ih, w_hh, bias, gx, bx, gh, bh, gc, bc, w, w_c, h0, c0,
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
        g_out, g_hn, g_cn, x, w_ih, w_hh, bias, gx, bx, gh, bh, gc, bc, w, w_c, h0, c0,
        xp, ghs, out, cs, mx, vx, mh, vh, mc, vc, ctx.n1, ctx.eps, ctx.dual, need_x)
    grad_x = r[0] if need_x else None
    # w_c (the padding mask) is not differentiable; n1, eps, dual_domain are not tensors.
    return (grad_x, *r[1:11], None, None, None, None,
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
        if hasattr(torch.ops.actrec, "ddlstm_layer_eval"):
            torch.library.register_fake(_EVAL)(_eval_fake)
        torch.library.register_autograd(_FWD, _backward, setup_context=_setup_context)
        _registered = True
