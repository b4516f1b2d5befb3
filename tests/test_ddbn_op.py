"""The compiled DDBN ops (torch.ops.actrec.ddbn_*) against the pure-PyTorch reference.

The ops take the contribution weights ``[2, T, N]`` of ``actrec.ops.domains`` (tanh weights
times the padding mask); ``actrec.ops.ddbn`` builds them from alpha and the mask. The extension
is obtained through ``actrec.ops._ext.load()``, which compiles it just in time into the per-user
cache on a fresh clone. CUDA tests run only where a GPU exists.
"""

from __future__ import annotations

import importlib
import math
import re
from pathlib import Path

import pytest
import torch

from actrec.ops import _ext
from actrec.ops.ddbn_reference import ddbn_eval_reference, ddbn_reference
from actrec.ops.domains import contribution_weights

# The module, not the function of the same name that actrec.ops re-exports.
ddbn_mod = importlib.import_module("actrec.ops.ddbn")

ROOT = Path(__file__).resolve().parents[1]
EPS = 1e-5


@pytest.fixture(scope="module")
def ops():
    if _ext.disabled():
        pytest.skip("ACTREC_DISABLE_EXT is set")
    found = ddbn_mod.extension_ops()
    if found is None:
        pytest.fail(f"the extension did not load: {_ext.status(build=False).reason}")
    return found


def inputs(t, n, c, dtype, *, seed=0, device="cpu", offset=0.0):
    """h [T,N,C] with a per-channel offset and scale, gamma, beta."""
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(t, n, c, generator=g, dtype=torch.float64)
    h = h * (0.5 + torch.rand(c, generator=g, dtype=torch.float64)) + offset
    gamma = 0.5 + torch.rand(c, generator=g, dtype=torch.float64)
    beta = torch.randn(c, generator=g, dtype=torch.float64)
    return [x.to(device=device, dtype=dtype) for x in (h, gamma, beta)]


def make_mask(t, n, n1, *, seed=0):
    """Random padding [T, N] with, where T allows, a timestep at which every D1 row is padded
    (t = 1) and one at which every row is (t = 2: both domains have S = 0 there)."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(t, n, generator=g) > 0.3
    if t >= 2:
        mask[1, :n1] = False
    if t >= 3:
        mask[2] = False
    return mask


def fill_padding(h, mask, *, seed):
    """A copy of h whose padded frames hold large random garbage."""
    g = torch.Generator().manual_seed(seed)
    out = h.clone()
    pad = ~mask.to(h.device)
    junk = torch.randn(int(pad.sum()), h.shape[2], generator=g, dtype=torch.float64) * 50 + 7
    out[pad] = junk.to(h.device, h.dtype)
    return out


def alphas(n, n1):
    """Interior alphas and both bounds of the constraint n_i / N <= alpha_i <= 1."""
    lo = (n1 / n, (n - n1) / n)
    return [(0.75, 0.8), lo, (1.0, 1.0)]


def tol(dtype):
    return dict(rtol=1e-9, atol=1e-9) if dtype == torch.float64 else dict(rtol=2e-5, atol=2e-5)


SHAPES = [  # (T, N, C, n1)
    (1, 2, 1, 1),
    (3, 2, 7, 1),
    (3, 5, 3, 2),
    (4, 16, 33, 8),
    (3, 128, 130, 64),
    (3, 300, 65, 150),
    (3, 300, 5, 17),
    (1, 7, 129, 0),
    (3, 9, 3, 9),
    (1, 1, 3, 1),
]


def forward(h, alpha, n1, gamma, beta, mask=None):
    """The op called directly with the weights actrec.ops.ddbn would give it."""
    t, n, _ = h.shape
    st = torch.float64 if h.dtype == torch.float64 else torch.float32
    w = contribution_weights(alpha, n1, t, n, mask, dtype=st)
    return torch.ops.actrec.ddbn_forward(h, w, n1, gamma, beta, EPS)


def masked_grads(fn, h, alpha, n1, gamma, beta, mask, gy):
    """Gradients of sum(y * gy) over the real frames with respect to h, alpha, gamma, beta."""
    leaves = [x.clone().requires_grad_() for x in (h, alpha, gamma, beta)]
    y, mean, var = fn(leaves[0], leaves[1], n1, leaves[2], leaves[3], mask=mask)
    loss = (y * gy * mask[..., None].to(y.dtype)).sum()
    got = torch.autograd.grad(loss, leaves, allow_unused=True)
    return y, mean, var, [torch.zeros_like(x) if g is None else g for x, g in zip(leaves, got)]


# ------------------------------------------------------------------------------------------
# Golden values by hand


def test_single_domain_is_plain_batch_norm_by_hand(ops):
    h = torch.tensor([[[1.0], [3.0]]], dtype=torch.float64)  # T=1, N=2, C=1: mean 2, var 1
    one = torch.ones(1, dtype=torch.float64)
    w = torch.ones(2, 1, 2, dtype=torch.float64)  # plain BN: the (all-True) mask in both slots
    r = 1 / math.sqrt(1 + EPS)
    for n1, own in ((0, 1), (2, 0)):
        y, mean, var = ops.ddbn_forward(h, w, n1, 2 * one, one, EPS)
        assert y.flatten().tolist() == pytest.approx([1 - 2 * r, 1 + 2 * r], abs=1e-15)
        assert mean.flatten().tolist() == [2.0, 2.0]  # both slots hold the plain statistics
        assert var.flatten().tolist() == [1.0, 1.0]
        gh, gw, gg, gb = ops.ddbn_backward(torch.ones_like(h), h, w, n1, one, mean, var, EPS)
        assert gb.tolist() == [2.0] and gg.tolist() == [0.0]
        assert gh.abs().max().item() < 1e-15  # a constant upstream gradient is normalised away
        # dL/dw_k = dmu (h_k - mu) / S with dmu = -r * 2 (sum g), dv = 0: (r, -r) for the rows'
        # own slot; the other slot normalises no row, so its weights have no effect.
        assert gw[own, 0].tolist() == pytest.approx([r, -r], abs=1e-15)
        assert gw[1 - own, 0].tolist() == [0.0, 0.0]


def test_two_domain_statistics_by_hand(ops):
    # N=2, n1=1, alpha=(1, 1): tau1(j) = (1 - tanh(j - 2))/2, tau2(j) = (1 + tanh(j))/2.
    h = torch.tensor([[[1.0], [3.0]]], dtype=torch.float64)
    alpha = torch.tensor([1.0, 1.0], dtype=torch.float64)
    one, zero = torch.ones(1, dtype=torch.float64), torch.zeros(1, dtype=torch.float64)
    y, mean, var = forward(h, alpha, 1, one, zero)
    t1 = [(1 - math.tanh(1 - 2)) / 2, (1 - math.tanh(2 - 2)) / 2]
    t2 = [(1 + math.tanh(1)) / 2, (1 + math.tanh(2)) / 2]
    m = [(w[0] * 1 + w[1] * 3) / sum(w) for w in (t1, t2)]
    v = [(w[0] * (1 - mm) ** 2 + w[1] * (3 - mm) ** 2) / sum(w) for w, mm in zip((t1, t2), m)]
    assert mean.flatten().tolist() == pytest.approx(m, rel=1e-14)
    assert var.flatten().tolist() == pytest.approx(v, rel=1e-13)
    want = [(1 - m[0]) / math.sqrt(v[0] + EPS), (3 - m[1]) / math.sqrt(v[1] + EPS)]
    assert y.flatten().tolist() == pytest.approx(want, rel=1e-13)


def test_fully_padded_timestep_by_hand(ops):
    # t = 1 has no real frame: S = 0 for both domains, so mean = var = 0 there, y = h gamma /
    # sqrt(eps) + beta, and nothing is NaN, forwards or backwards.
    h = torch.tensor([[[1.0], [3.0]], [[5.0], [-2.0]]], dtype=torch.float64)  # [T=2, N=2, C=1]
    mask = torch.tensor([[True, True], [False, False]])
    alpha = torch.tensor([0.75, 0.75], dtype=torch.float64, requires_grad=True)
    gamma = torch.tensor([0.5], dtype=torch.float64, requires_grad=True)
    beta = torch.tensor([0.25], dtype=torch.float64, requires_grad=True)
    hh = h.clone().requires_grad_()
    y, mean, var = ddbn_mod.ddbn(hh, alpha, 1, gamma, beta, mask=mask)
    assert "ddbn_forward" in type(y.grad_fn).__name__
    assert mean[:, 1].tolist() == [[0.0], [0.0]] and var[:, 1].tolist() == [[0.0], [0.0]]
    assert y[1].flatten().tolist() == pytest.approx([5 * 0.5 / math.sqrt(EPS) + 0.25,
                                                     -2 * 0.5 / math.sqrt(EPS) + 0.25])
    (y * y).sum().backward()  # padded outputs in the loss too: still finite
    for g in (hh.grad, alpha.grad, gamma.grad, beta.grad):
        assert torch.isfinite(g).all()
    yr, mr, vr = ddbn_reference(h, alpha.detach(), 1, gamma.detach(), beta.detach(), mask=mask)
    torch.testing.assert_close(y.detach(), yr, rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------------------------------
# Forward and backward against the reference, with and without padding


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", SHAPES)
def test_forward_matches_reference_with_mask(ops, shape, dtype):
    t, n, c, n1 = shape
    h, gamma, beta = inputs(t, n, c, dtype, seed=t * 1000 + n, offset=3.0)
    for k, a in enumerate(alphas(n, n1)):
        mask = make_mask(t, n, n1, seed=k) if k else None  # the first alpha also unpadded
        hp = h if mask is None else fill_padding(h, mask, seed=k)
        alpha = torch.tensor(a, dtype=dtype)
        y, mean, var = ddbn_mod.ddbn(hp, alpha, n1, gamma, beta, mask=mask)
        yr, mr, vr = ddbn_reference(hp, alpha, n1, gamma, beta, mask=mask)
        real = torch.ones(t, n, dtype=torch.bool) if mask is None else mask
        torch.testing.assert_close(y[real], yr[real], **tol(dtype))
        torch.testing.assert_close(mean, mr, **tol(dtype))
        torch.testing.assert_close(var, vr, **tol(dtype))
        assert torch.isfinite(y).all() and torch.isfinite(mean).all() and torch.isfinite(var).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", SHAPES)
def test_backward_matches_reference_autograd_with_mask(ops, shape, dtype):
    t, n, c, n1 = shape
    h, gamma, beta = inputs(t, n, c, dtype, seed=7 + n, offset=-2.0)
    gy = torch.randn(t, n, c, dtype=dtype, generator=torch.Generator().manual_seed(3))
    for k, a in enumerate(alphas(n, n1)):
        mask = make_mask(t, n, n1, seed=10 + k)
        hp = fill_padding(h, mask, seed=k)
        # The float32 op against the float64 reference on the same values: small batches are
        # ill-conditioned (the terms of dh cancel): a float32 reference is off by up to 4e-4 too.
        *_, g_op = masked_grads(ddbn_mod.ddbn, hp, torch.tensor(a, dtype=dtype), n1, gamma, beta,
                                mask, gy)
        *_, g_ref = masked_grads(ddbn_reference, hp.double(), torch.tensor(a, dtype=torch.float64),
                                 n1, gamma.double(), beta.double(), mask, gy.double())
        for a_, b_ in zip(g_op, g_ref):
            assert torch.isfinite(a_).all()
            scale = max(1.0, b_.abs().max().item())
            t_ = tol(dtype) if dtype == torch.float64 else dict(rtol=5e-4, atol=5e-4)
            torch.testing.assert_close(a_.double() / scale, b_ / scale, **t_)


@pytest.mark.parametrize("shape", [(3, 6, 5, 2), (1, 9, 3, 4), (3, 4, 2, 0), (3, 5, 3, 5)])
def test_gradcheck_float64_with_alpha_and_mask(ops, shape):
    # alpha reaches the op only through the weights: this checks the weights' gradient and the
    # autograd chain through contribution_weights, padding (incl. S = 0 at t = 2) included.
    t, n, c, n1 = shape
    h, gamma, beta = inputs(t, n, c, torch.float64, seed=11, offset=1.0)
    mask = make_mask(t, n, n1, seed=4)
    h = fill_padding(h, mask, seed=1)
    alpha = torch.tensor([max(0.7, n1 / n), max(0.6, (n - n1) / n)], dtype=torch.float64)
    args = [x.clone().requires_grad_() for x in (h, alpha, gamma, beta)]
    real = mask[..., None].double()

    def f(h, alpha, gamma, beta):
        y, _, _ = ddbn_mod.ddbn(h, alpha, n1, gamma, beta, mask=mask)
        assert "ddbn_forward" in type(y.grad_fn).__name__
        return y * real

    assert torch.autograd.gradcheck(f, args, eps=1e-6, atol=1e-7, rtol=1e-6)


def test_gradcheck_of_the_op_with_respect_to_arbitrary_weights(ops):
    # Positive weights of no particular form, so the weights' gradient is checked on its own.
    h, gamma, beta = inputs(2, 5, 3, torch.float64, seed=2)
    w = 0.1 + torch.rand(2, 2, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(8))
    args = [x.clone().requires_grad_() for x in (h, w, gamma, beta)]
    assert torch.autograd.gradcheck(
        lambda h, w, g, b: ops.ddbn_forward(h, w, 2, g, b, EPS)[0], args, eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(4, 16, 70, 6), (3, 5, 3, 0), (5, 40, 130, 20)])
def test_padding_values_change_nothing_bitwise(ops, shape, dtype):
    """Two different garbage fillings of the padding: identical outputs on real frames,
    statistics and gradients of a loss over the real frames, to the last bit."""
    t, n, c, n1 = shape
    h, gamma, beta = inputs(t, n, c, dtype, seed=5, offset=1.0)
    mask = make_mask(t, n, n1, seed=6)
    alpha = torch.tensor([0.7, 0.8], dtype=dtype)
    gy = torch.randn(t, n, c, dtype=dtype, generator=torch.Generator().manual_seed(7))
    runs = [masked_grads(ddbn_mod.ddbn, fill_padding(h, mask, seed=s), alpha, n1, gamma, beta,
                         mask, gy) for s in (1, 2)]
    (y1, m1, v1, g1), (y2, m2, v2, g2) = runs
    assert not torch.equal(y1, y2)  # the padding did differ
    assert torch.equal(y1[mask], y2[mask])
    assert torch.equal(m1, m2) and torch.equal(v1, v2)
    for a, b in zip(g1, g2):
        assert torch.equal(a, b)
    assert torch.equal(g1[0][~mask], torch.zeros_like(g1[0][~mask]))  # padding gets no gradient


def test_all_true_mask_is_no_mask_bitwise(ops):
    h, gamma, beta = inputs(3, 10, 9, torch.float32, seed=3)
    alpha = torch.tensor([0.75, 0.75])
    a = ddbn_mod.ddbn(h, alpha, 5, gamma, beta)
    b = ddbn_mod.ddbn(h, alpha, 5, gamma, beta, mask=torch.ones(3, 10, dtype=torch.bool))
    for x, y in zip(a, b):
        assert torch.equal(x, y)


def test_alpha_gradient_is_nonzero_and_matches_finite_difference(ops):
    # gradcheck passing with a zero alpha gradient would prove little: check its size too.
    h, gamma, beta = inputs(2, 8, 4, torch.float64, seed=5)
    alpha = torch.tensor([0.6, 0.7], dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, 8, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    y, _, _ = ddbn_mod.ddbn(h, alpha, 4, gamma, beta)
    (ga,) = torch.autograd.grad((y * w).sum(), alpha)
    for i in range(2):
        d = torch.zeros(2, dtype=torch.float64)
        d[i] = 1e-6
        lp = (ddbn_reference(h, alpha.detach() + d, 4, gamma, beta)[0] * w).sum()
        lm = (ddbn_reference(h, alpha.detach() - d, 4, gamma, beta)[0] * w).sum()
        fd = ((lp - lm) / 2e-6).item()
        assert abs(fd) > 1e-3
        assert ga[i].item() == pytest.approx(fd, rel=1e-5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_reduced_precision_inputs_accumulate_in_float(ops, dtype):
    h, gamma, beta = inputs(3, 32, 17, torch.float32, seed=2, offset=4.0)
    alpha = torch.tensor([0.75, 0.75])
    mask = make_mask(3, 32, 16, seed=2)
    hl = h.to(dtype)
    y, mean, var = ddbn_mod.ddbn(hl, alpha, 16, gamma, beta, mask=mask)
    assert y.dtype == dtype and mean.dtype == torch.float32 and var.dtype == torch.float32
    # Reference in float32 on the same (rounded) values: only the output rounding differs.
    yr, mr, vr = ddbn_reference(hl.float(), alpha, 16, gamma, beta, mask=mask)
    torch.testing.assert_close(mean, mr, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(var, vr, rtol=1e-5, atol=1e-5)
    step = 8e-3 if dtype == torch.bfloat16 else 1e-3  # one rounding of y
    torch.testing.assert_close(y.float()[mask], yr[mask], rtol=step, atol=step * 4)
    w = contribution_weights(alpha, 16, 3, 32, mask)
    gh, gw, gg, gb = ops.ddbn_backward(torch.ones_like(hl), hl, w, 16, gamma, mean, var, EPS)
    assert gh.dtype == dtype and gw.dtype == torch.float32 and gg.dtype == torch.float32


def test_cpu_autocast_bfloat16(ops):
    """Under CPU autocast a Linear produces bfloat16; the op takes it, accumulates in float
    (statistics float32, close to the float32 reference of the same bfloat16 values) and
    returns bfloat16 whose gradient reaches the Linear's weights."""
    torch.manual_seed(3)
    x = torch.randn(4, 16, 24) + 2.0
    lin = torch.nn.Linear(24, 24)
    alpha = torch.tensor([0.75, 0.75])
    gamma, beta = torch.full((24,), 0.1), torch.zeros(24)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z = lin(x)
        y, mean, var = ddbn_mod.ddbn(z, alpha, 8, gamma, beta)
    assert z.dtype == torch.bfloat16 and y.dtype == torch.bfloat16
    assert mean.dtype == torch.float32 and var.dtype == torch.float32
    yr, mr, vr = ddbn_reference(z.detach().float(), alpha, 8, gamma, beta)
    torch.testing.assert_close(mean, mr, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(var, vr, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(y.float(), yr, rtol=8e-3, atol=3e-3)
    y.float().square().sum().backward()
    assert lin.weight.grad is not None and lin.weight.grad.abs().sum() > 0


def test_result_does_not_depend_on_thread_count(ops):
    h, gamma, beta = inputs(7, 40, 200, torch.float32, seed=4)
    mask = make_mask(7, 40, 20, seed=3)
    w = contribution_weights(torch.tensor([0.8, 0.7]), 20, 7, 40, mask)
    gy = torch.randn_like(h)
    before = torch.get_num_threads()
    outs = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            y, m, v = ops.ddbn_forward(h, w, 20, gamma, beta, EPS)
            outs.append((y, m, v, *ops.ddbn_backward(gy, h, w, 20, gamma, m, v, EPS)))
    finally:
        torch.set_num_threads(before)
    for a, b in zip(*outs):
        assert torch.equal(a, b)


def test_no_weight_formula_in_the_ddbn_kernels():
    # The contribution weights are made in one place (actrec/ops/domains.py) and passed in.
    for p in ["csrc/cpu/ddbn_cpu.cpp", "csrc/cuda/ddbn_kernels.cu", "csrc/cuda/ddbn_cuda.cu"]:
        assert "tanh(" not in (ROOT / p).read_text(), p


# ------------------------------------------------------------------------------------------
# Evaluation


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("t,t_max", [(5, 3), (2, 4), (1, 1)])
def test_eval_matches_reference(ops, dtype, t, t_max):
    h, gamma, beta = inputs(t, 7, 9, dtype, seed=t)
    g = torch.Generator().manual_seed(1)
    rm = torch.randn(2, t_max, 9, generator=g, dtype=torch.float64).to(dtype)
    rv = (torch.rand(2, t_max, 9, generator=g, dtype=torch.float64) + 0.2).to(dtype)
    domain = torch.tensor([1, 0, 0, 1, 1, 0, 1])  # unsorted
    y = ddbn_mod.ddbn_eval(h, domain, rm, rv, gamma, beta)
    torch.testing.assert_close(y, ddbn_eval_reference(h, domain, rm, rv, gamma, beta), **tol(dtype))


def test_eval_gradcheck(ops):
    h, gamma, beta = inputs(3, 4, 2, torch.float64, seed=3)
    rm, rv = torch.randn(2, 2, 2, dtype=torch.float64), torch.rand(2, 2, 2, dtype=torch.float64) + 1
    domain = torch.tensor([0, 1, 1, 0])
    args = [x.clone().requires_grad_() for x in (h, gamma, beta)]
    assert torch.autograd.gradcheck(
        lambda h, g, b: ddbn_mod.ddbn_eval(h, domain, rm, rv, g, b), args)


@pytest.mark.parametrize("backend", ["extension", "reference"])
@pytest.mark.parametrize("flags", [[0, 2, 1, 0], [0, -1, 1, 0], [1, 1, 1, 3]])
def test_eval_domain_flags_other_than_0_1_are_a_value_error(ops, monkeypatch, backend, flags):
    # One rule for every backend: the reference would wrap -1 to D2 (negative indexing), the
    # CUDA kernel read any nonzero flag as D2.
    if backend == "reference":
        monkeypatch.setenv("ACTREC_DISABLE_EXT", "1")
    h, gamma, beta = inputs(3, 4, 2, torch.float64, seed=3)
    rm, rv = torch.zeros(2, 2, 2, dtype=torch.float64), torch.ones(2, 2, 2, dtype=torch.float64)
    bad = sorted({f for f in flags if f not in (0, 1)})
    msg = r"domain flags must be 0 \(D1\) or 1 \(D2\), got " + re.escape(str(bad))
    with pytest.raises(ValueError, match=msg):
        ddbn_mod.ddbn_eval(h, torch.tensor(flags), rm, rv, gamma, beta)
    with pytest.raises(ValueError, match=msg):  # the reference called directly: same rule
        ddbn_eval_reference(h, torch.tensor(flags), rm, rv, gamma, beta)
    with pytest.raises(ValueError, match="integers"):
        ddbn_mod.ddbn_eval(h, torch.tensor([0.0, 1.0, 1.0, 0.0]), rm, rv, gamma, beta)
    y = ddbn_mod.ddbn_eval(h, torch.tensor([0, 1, 1, 0]), rm, rv, gamma, beta)
    assert torch.isfinite(y).all()


def test_eval_kernel_guards_direct_calls(ops):
    h, gamma, beta = inputs(3, 4, 2, torch.float64, seed=3)
    rm, rv = torch.zeros(2, 2, 2, dtype=torch.float64), torch.ones(2, 2, 2, dtype=torch.float64)
    with pytest.raises(RuntimeError, match=r"domain\[2\] = 2, expected 0 or 1"):
        ops.ddbn_eval(h, torch.tensor([0, 1, 2, 0]), rm, rv, gamma, beta, EPS)


# ------------------------------------------------------------------------------------------
# Registrations: schema, fake kernels, autograd, compile


@pytest.mark.parametrize("n1", [0, 3, 6])
def test_opcheck(ops, n1):
    h, gamma, beta = inputs(3, 6, 5, torch.float64, seed=n1)
    mask = make_mask(3, 6, n1, seed=n1)
    w = contribution_weights(torch.tensor([0.75, 0.8], dtype=torch.float64), n1, 3, 6, mask)
    leaves = [x.clone().requires_grad_() for x in (h, w, gamma, beta)]
    torch.library.opcheck(ops.ddbn_forward.default, (*leaves[:2], n1, *leaves[2:], EPS))
    torch.library.opcheck(ops.ddbn_forward.default, (h, w, n1, gamma, beta, EPS))
    y, m, v = ops.ddbn_forward(h, w, n1, gamma, beta, EPS)
    torch.library.opcheck(ops.ddbn_backward.default,
                          (torch.randn_like(h), h, w, n1, gamma, m, v, EPS))
    rm, rv = torch.zeros(2, 2, 5, dtype=torch.float64), torch.ones(2, 2, 5, dtype=torch.float64)
    torch.library.opcheck(ops.ddbn_eval.default,
                          (leaves[0], torch.tensor([0, 1, 0, 1, 1, 0]), rm, rv, leaves[2],
                           leaves[3], EPS))


def test_forward_mutates_nothing(ops):
    h, gamma, beta = inputs(2, 4, 3, torch.float64)
    w = contribution_weights(torch.tensor([0.75, 0.75], dtype=torch.float64), 2, 2, 4)
    before = [x.clone() for x in (h, w, gamma, beta)]
    ops.ddbn_forward(h, w, 2, gamma, beta, EPS)
    assert all(torch.equal(a, b) for a, b in zip(before, (h, w, gamma, beta)))
    assert not any(a.is_write for a in ops.ddbn_forward.default._schema.arguments if a.alias_info)


def test_statistics_outputs_carry_no_gradient(ops):
    h, gamma, beta = inputs(2, 4, 3, torch.float64)
    h.requires_grad_()
    y, mean, var = ddbn_mod.ddbn(h, torch.tensor([0.75, 0.75], dtype=torch.float64), 2, gamma, beta)
    assert y.requires_grad and not mean.requires_grad and not var.requires_grad


def test_disable_env_forces_reference(ops, monkeypatch):
    h, gamma, beta = inputs(2, 6, 3, torch.float32, seed=1)
    h.requires_grad_()
    alpha = torch.tensor([0.75, 0.75])
    mask = make_mask(2, 6, 3, seed=1)
    y, _, _ = ddbn_mod.ddbn(h, alpha, 3, gamma, beta, mask=mask)
    assert "ddbn_forward" in type(y.grad_fn).__name__  # the fused op's autograd node
    st = _ext.status()
    assert st.active and st.backend in ("cpu", "cpu+cuda")
    assert st.compiled_with["torch_version"] == torch.__version__.split("+")[0]

    monkeypatch.setenv("ACTREC_DISABLE_EXT", "1")
    assert _ext.load() is None
    st = _ext.status()
    assert (st.active, st.backend) == (False, "reference") and "ACTREC_DISABLE_EXT" in st.reason
    y2, m2, v2 = ddbn_mod.ddbn(h, alpha, 3, gamma, beta, mask=mask)
    yr, mr, vr = ddbn_reference(h, alpha, 3, gamma, beta, mask=mask)
    assert "ddbn_forward" not in type(y2.grad_fn).__name__
    assert torch.equal(y2, yr) and torch.equal(m2, mr) and torch.equal(v2, vr)
    monkeypatch.setenv("ACTREC_DISABLE_EXT", "0")
    assert _ext.load() is not None


@pytest.mark.slow
def test_torch_compile_matches_eager(ops):
    h, gamma, beta = inputs(4, 8, 6, torch.float32, seed=2)
    alpha = torch.tensor([0.7, 0.8])
    mask = make_mask(4, 8, 3, seed=2)

    def loss(h, alpha, gamma, beta):
        y, mean, _ = ddbn_mod.ddbn(h, alpha, 3, gamma, beta, mask=mask)
        return (y * y.detach().sin() * mask[..., None]).sum() + mean.sum()

    results = []
    for fn in (loss, torch.compile(loss, fullgraph=True)):
        leaves = [x.clone().requires_grad_() for x in (h, alpha, gamma, beta)]
        out = fn(*leaves)
        results.append([out, *torch.autograd.grad(out, leaves)])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b)


# ------------------------------------------------------------------------------------------
# CUDA (run where a GPU exists)

cuda_only = [pytest.mark.cuda,
             pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", SHAPES + [(3, 1024, 40, 500)])
@pytest.mark.usefixtures("ops")
@cuda_only[0]
@cuda_only[1]
def test_cuda_matches_reference_with_mask(shape, dtype):
    # Against the float64 reference on the same values (as the CPU backward test: a float32
    # reference is itself off by up to 4e-4 on small, ill-conditioned batches).
    t, n, c, n1 = shape
    h, gamma, beta = inputs(t, n, c, dtype, seed=n, offset=2.0)
    gy = torch.randn(t, n, c, dtype=dtype, generator=torch.Generator().manual_seed(2))
    for k, a in enumerate(alphas(n, n1)):
        mask = make_mask(t, n, n1, seed=k)
        hp = fill_padding(h, mask, seed=k)
        res = []
        for dev, fn, dt in (("cuda", ddbn_mod.ddbn, dtype), ("cpu", ddbn_reference, torch.float64)):
            y, mean, var, grads = masked_grads(
                fn, hp.to(dev, dt), torch.tensor(a, dtype=dt, device=dev), n1,
                gamma.to(dev, dt), beta.to(dev, dt), mask.to(dev), gy.to(dev, dt))
            assert dev == "cpu" or "ddbn_forward" in type(y.grad_fn).__name__
            res.append([v.detach().cpu().double() for v in (y[mask.to(dev)], mean, var, *grads)])
        for i, (a_, b_) in enumerate(zip(*res)):
            assert torch.isfinite(a_).all()
            scale = max(1.0, b_.abs().max().item())
            f32 = dict(rtol=2e-4, atol=2e-4) if i < 3 else dict(rtol=5e-4, atol=5e-4)
            t_ = tol(dtype) if dtype == torch.float64 else f32
            torch.testing.assert_close(a_ / scale, b_ / scale, **t_)


@pytest.mark.usefixtures("ops")
@cuda_only[0]
@cuda_only[1]
def test_cuda_padding_values_change_nothing_bitwise():
    t, n, c, n1 = 4, 48, 70, 20
    h, gamma, beta = inputs(t, n, c, torch.float32, seed=5, device="cuda")
    mask = make_mask(t, n, n1, seed=6).cuda()
    alpha = torch.tensor([0.7, 0.8], device="cuda")
    gy = torch.randn(t, n, c, device="cuda")
    runs = [masked_grads(ddbn_mod.ddbn, fill_padding(h, mask, seed=s), alpha, n1, gamma, beta,
                         mask, gy) for s in (1, 2)]
    (y1, m1, v1, g1), (y2, m2, v2, g2) = runs
    assert torch.equal(y1[mask], y2[mask]) and torch.equal(m1, m2) and torch.equal(v1, v2)
    for a, b in zip(g1, g2):
        assert torch.equal(a, b)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.usefixtures("ops")
@cuda_only[0]
@cuda_only[1]
def test_cuda_reduced_precision(dtype):
    h, gamma, beta = inputs(3, 64, 70, torch.float32, seed=6, offset=4.0)
    alpha = torch.tensor([0.75, 0.75])
    hl = h.to(dtype)
    y, mean, var = ddbn_mod.ddbn(hl.cuda(), alpha.cuda(), 32, gamma.cuda(), beta.cuda())
    yr, mr, vr = ddbn_reference(hl.float(), alpha, 32, gamma, beta)
    assert y.dtype == dtype and mean.dtype == torch.float32
    torch.testing.assert_close(mean.cpu(), mr, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(var.cpu(), vr, rtol=1e-4, atol=1e-5)
    step = 8e-3 if dtype == torch.bfloat16 else 1e-3
    torch.testing.assert_close(y.float().cpu(), yr, rtol=step, atol=step * 4)
    with torch.autocast("cuda", dtype=dtype):
        lin = torch.nn.Linear(70, 70).cuda()
        z = lin(h.cuda())
        y2, _, _ = ddbn_mod.ddbn(z, alpha.cuda(), 32, gamma.cuda(), beta.cuda())
    assert y2.dtype == dtype
    y2.float().sum().backward()
    assert lin.weight.grad is not None and torch.isfinite(lin.weight.grad).all()


@cuda_only[0]
@cuda_only[1]
def test_cuda_gradcheck_opcheck_eval(ops):
    h, gamma, beta = inputs(3, 6, 5, torch.float64, seed=1, device="cuda")
    mask = make_mask(3, 6, 2, seed=1).cuda()
    alpha = torch.tensor([0.7, 0.6], dtype=torch.float64, device="cuda")
    args = [x.clone().requires_grad_() for x in (h, alpha, gamma, beta)]
    real = mask[..., None].double()
    assert torch.autograd.gradcheck(
        lambda h, a, g, b: ddbn_mod.ddbn(h, a, 2, g, b, mask=mask)[0] * real, args)
    w = 0.1 + torch.rand(2, 3, 6, dtype=torch.float64, device="cuda")
    wargs = [x.clone().requires_grad_() for x in (h, w, gamma, beta)]
    assert torch.autograd.gradcheck(lambda h, w, g, b: ops.ddbn_forward(h, w, 2, g, b, EPS)[0],
                                    wargs)
    torch.library.opcheck(ops.ddbn_forward.default, (*wargs[:2], 2, *wargs[2:], EPS))
    rm = torch.randn(2, 1, 5, dtype=torch.float64, device="cuda")
    rv = torch.rand(2, 1, 5, dtype=torch.float64, device="cuda") + 0.5
    domain = torch.tensor([0, 1, 1, 0, 1, 0], device="cuda")
    y = ddbn_mod.ddbn_eval(h, domain, rm, rv, gamma, beta)
    torch.testing.assert_close(y, ddbn_eval_reference(h, domain, rm, rv, gamma, beta))
    torch.library.opcheck(ops.ddbn_eval.default, (h, domain, rm, rv, gamma, beta, EPS))
    with pytest.raises(ValueError, match="got \\[2\\]"):
        ddbn_mod.ddbn_eval(h, torch.tensor([0, 1, 2, 0, 1, 0], device="cuda"), rm, rv, gamma,
                           beta)
