"""The compiled DDBN ops (torch.ops.actrec.ddbn_*) against the pure-PyTorch reference.

The extension is obtained through ``actrec.ops._ext.load()``, which compiles it just in time
into the per-user cache on a fresh clone. CUDA tests run only where a GPU exists.
"""

from __future__ import annotations

import importlib
import math

import pytest
import torch

from actrec.ops import _ext
from actrec.ops.ddbn_reference import ddbn_eval_reference, ddbn_reference

# The module, not the function of the same name that actrec.ops re-exports.
ddbn_mod = importlib.import_module("actrec.ops.ddbn")


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


def alphas(n, n1):
    """Interior alphas and both bounds of the constraint n_i / N <= alpha_i <= 1."""
    lo = (n1 / n, (n - n1) / n)
    return [(0.75, 0.8), lo, (1.0, 1.0)]


def tol(dtype):
    return dict(rtol=1e-9, atol=1e-9) if dtype == torch.float64 else dict(rtol=2e-5, atol=2e-5)


SHAPES = [  # (T, N, C, n1)
    (1, 2, 1, 1),
    (3, 2, 7, 1),
    (2, 5, 3, 2),
    (4, 16, 33, 8),
    (2, 128, 130, 64),
    (2, 300, 65, 150),
    (3, 300, 5, 17),
    (1, 7, 129, 0),
    (2, 9, 3, 9),
    (1, 1, 3, 1),
]


# ------------------------------------------------------------------------------------------
# Golden values by hand


def test_single_domain_is_plain_batch_norm_by_hand(ops):
    h = torch.tensor([[[1.0], [3.0]]], dtype=torch.float64)  # T=1, N=2, C=1: mean 2, var 1
    one, zero = torch.ones(1, dtype=torch.float64), torch.zeros(1, dtype=torch.float64)
    alpha = torch.tensor([0.75, 0.75], dtype=torch.float64)
    for n1 in (0, 2):
        y, mean, rstd = ops.ddbn_forward(h, alpha, n1, 2 * one, one, 1e-5, None, None, 0.1)
        r = 1 / math.sqrt(1 + 1e-5)
        assert y.flatten().tolist() == pytest.approx([1 - 2 * r, 1 + 2 * r], abs=1e-15)
        assert mean.flatten().tolist() == [2.0, 2.0]  # both slots hold the plain statistics
        assert rstd.flatten().tolist() == pytest.approx([r, r], abs=1e-15)
        gh, ga, gg, gb = ops.ddbn_backward(torch.ones_like(h), h, alpha, n1, one, mean, rstd, 1e-5)
        assert ga.tolist() == [0.0, 0.0] and gb.tolist() == [2.0] and gg.tolist() == [0.0]
        assert gh.abs().max().item() < 1e-15  # a constant upstream gradient is normalised away


def test_two_domain_statistics_by_hand(ops):
    # N=2, n1=1, alpha=(1, 1): tau1(j) = (1 - tanh(j - 2))/2, tau2(j) = (1 + tanh(j))/2.
    h = torch.tensor([[[1.0], [3.0]]], dtype=torch.float64)
    alpha = torch.tensor([1.0, 1.0], dtype=torch.float64)
    one, zero = torch.ones(1, dtype=torch.float64), torch.zeros(1, dtype=torch.float64)
    y, mean, rstd = ops.ddbn_forward(h, alpha, 1, one, zero, 1e-5, None, None, 0.1)
    t1 = [(1 - math.tanh(1 - 2)) / 2, (1 - math.tanh(2 - 2)) / 2]
    t2 = [(1 + math.tanh(1)) / 2, (1 + math.tanh(2)) / 2]
    m = [(w[0] * 1 + w[1] * 3) / sum(w) for w in (t1, t2)]
    v = [(w[0] * (1 - mm) ** 2 + w[1] * (3 - mm) ** 2) / sum(w) for w, mm in zip((t1, t2), m)]
    assert mean.flatten().tolist() == pytest.approx(m, rel=1e-14)
    assert (rstd.flatten() ** -2 - 1e-5).tolist() == pytest.approx(v, rel=1e-12)
    want = [(1 - m[0]) / math.sqrt(v[0] + 1e-5), (3 - m[1]) / math.sqrt(v[1] + 1e-5)]
    assert y.flatten().tolist() == pytest.approx(want, rel=1e-13)


# ------------------------------------------------------------------------------------------
# Forward, running statistics and backward against the reference


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", SHAPES)
def test_forward_and_running_stats_match_reference(ops, shape, dtype):
    t, n, c, n1 = shape
    h, gamma, beta = inputs(t, n, c, dtype, seed=t * 1000 + n, offset=3.0)
    for k, a in enumerate(alphas(n, n1)):
        alpha = torch.tensor(a, dtype=dtype)
        t_max = t + 1 if k % 2 else max(1, t - 1)  # longer and shorter than the sequence
        rm = torch.randn(2, t_max, c, dtype=dtype)
        rv = torch.rand(2, t_max, c, dtype=dtype) + 0.5
        rm_ref, rv_ref = rm.clone(), rv.clone()
        y, mean, var = ddbn_mod.ddbn(h, alpha, n1, gamma, beta, running_mean=rm, running_var=rv,
                                     momentum=0.2)
        yr, mr, vr = ddbn_reference(h, alpha, n1, gamma, beta, running_mean=rm_ref,
                                    running_var=rv_ref, momentum=0.2)
        torch.testing.assert_close(y, yr, **tol(dtype))
        torch.testing.assert_close(mean, mr, **tol(dtype))
        torch.testing.assert_close(var, vr, **tol(dtype))
        torch.testing.assert_close(rm, rm_ref, **tol(dtype))
        torch.testing.assert_close(rv, rv_ref, **tol(dtype))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", SHAPES)
def test_backward_matches_reference_autograd(ops, shape, dtype):
    t, n, c, n1 = shape
    h, gamma, beta = inputs(t, n, c, dtype, seed=7 + n, offset=-2.0)
    gy = torch.randn(t, n, c, dtype=dtype, generator=torch.Generator().manual_seed(3))
    for a in alphas(n, n1):
        grads = []
        # The float32 op against the float64 reference on the same values: small batches are
        # ill-conditioned (the terms of dh cancel): a float32 reference is off by up to 4e-4 too.
        for fn, dt in ((ddbn_mod.ddbn, dtype), (ddbn_reference, torch.float64)):
            leaves = [x.to(dt).requires_grad_() for x in (h, torch.tensor(a, dtype=dtype), gamma,
                                                          beta)]
            y, _, _ = fn(leaves[0], leaves[1], n1, leaves[2], leaves[3])
            got = torch.autograd.grad(y, leaves, gy.to(dt), allow_unused=True)
            grads.append([torch.zeros_like(x) if g is None else g for x, g in zip(leaves, got)])
        for g_op, g_ref in zip(*grads):
            scale = max(1.0, g_ref.abs().max().item())
            t_ = tol(dtype) if dtype == torch.float64 else dict(rtol=5e-4, atol=5e-4)
            torch.testing.assert_close(g_op.double() / scale, g_ref / scale, **t_)


@pytest.mark.parametrize("shape", [(2, 6, 5, 2), (1, 9, 3, 4), (3, 4, 2, 0), (2, 5, 3, 5)])
def test_gradcheck_float64_with_alpha(ops, shape):
    t, n, c, n1 = shape
    h, gamma, beta = inputs(t, n, c, torch.float64, seed=11, offset=1.0)
    alpha = torch.tensor([max(0.7, n1 / n), max(0.6, (n - n1) / n)], dtype=torch.float64)
    args = [x.clone().requires_grad_() for x in (h, alpha, gamma, beta)]

    def f(h, alpha, gamma, beta):
        return ops.ddbn_forward(h, alpha, n1, gamma, beta, 1e-5, None, None, 0.1)[0]

    assert torch.autograd.gradcheck(f, args, eps=1e-6, atol=1e-7, rtol=1e-6)


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
    rm, rv = torch.zeros(2, 3, 17), torch.ones(2, 3, 17)
    rm_ref, rv_ref = rm.clone(), rv.clone()
    hl = h.to(dtype)
    y, mean, var = ddbn_mod.ddbn(hl, alpha, 16, gamma, beta, running_mean=rm, running_var=rv)
    assert y.dtype == dtype and mean.dtype == torch.float32 and var.dtype == torch.float32
    # Reference in float32 on the same (rounded) values: only the output rounding differs.
    yr, mr, vr = ddbn_reference(hl.float(), alpha, 16, gamma, beta, running_mean=rm_ref,
                                running_var=rv_ref)
    torch.testing.assert_close(mean, mr, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(var, vr, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(rm, rm_ref, rtol=1e-5, atol=1e-5)
    step = 8e-3 if dtype == torch.bfloat16 else 1e-3  # one rounding of y
    torch.testing.assert_close(y.float(), yr, rtol=step, atol=step * 4)
    gh, ga, gg, gb = ops.ddbn_backward(torch.ones_like(hl), hl, alpha, 16, gamma,
                                       *ops.ddbn_forward(hl, alpha, 16, gamma, beta, 1e-5, None,
                                                         None, 0.1)[1:], 1e-5)
    assert gh.dtype == dtype and ga.dtype == torch.float32 and gg.dtype == torch.float32


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
    alpha = torch.tensor([0.8, 0.7])
    gy = torch.randn_like(h)
    before = torch.get_num_threads()
    outs = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            y, m, r = ops.ddbn_forward(h, alpha, 20, gamma, beta, 1e-5, None, None, 0.1)
            outs.append((y, m, r, *ops.ddbn_backward(gy, h, alpha, 20, gamma, m, r, 1e-5)))
    finally:
        torch.set_num_threads(before)
    for a, b in zip(*outs):
        assert torch.equal(a, b)


def test_running_stats_single_domain_updates_own_slot(ops):
    h, gamma, beta = inputs(2, 6, 3, torch.float64, seed=8)
    alpha = torch.tensor([0.75, 0.75], dtype=torch.float64)
    for n1, own in ((6, 0), (0, 1)):
        rm, rv = torch.zeros(2, 2, 3, dtype=torch.float64), torch.ones(2, 2, 3, dtype=torch.float64)
        ops.ddbn_forward(h, alpha, n1, gamma, beta, 1e-5, rm, rv, 0.5)
        assert torch.equal(rm[1 - own], torch.zeros(2, 3, dtype=torch.float64))
        assert torch.equal(rv[1 - own], torch.ones(2, 3, dtype=torch.float64))
        torch.testing.assert_close(rm[own], 0.5 * h.mean(1))
        torch.testing.assert_close(rv[own], 0.5 + 0.5 * h.var(1, unbiased=True))


def test_running_buffers_of_another_dtype_are_updated_in_place(ops):
    h, gamma, beta = inputs(2, 6, 3, torch.float64, seed=8)
    alpha = torch.tensor([0.75, 0.75], dtype=torch.float64)
    rm, rv = torch.zeros(2, 2, 3), torch.ones(2, 2, 3)  # float32 buffers, float64 input
    rm_ref, rv_ref = rm.clone(), rv.clone()
    ddbn_mod.ddbn(h, alpha, 3, gamma, beta, running_mean=rm, running_var=rv)
    ddbn_reference(h, alpha, 3, gamma, beta, running_mean=rm_ref, running_var=rv_ref)
    assert rm.dtype == torch.float32 and rm.abs().sum() > 0
    torch.testing.assert_close(rm, rm_ref)
    torch.testing.assert_close(rv, rv_ref)


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


def test_eval_gradcheck_and_bad_domain(ops):
    h, gamma, beta = inputs(3, 4, 2, torch.float64, seed=3)
    rm, rv = torch.randn(2, 2, 2, dtype=torch.float64), torch.rand(2, 2, 2, dtype=torch.float64) + 1
    domain = torch.tensor([0, 1, 1, 0])
    args = [x.clone().requires_grad_() for x in (h, gamma, beta)]
    assert torch.autograd.gradcheck(
        lambda h, g, b: ddbn_mod.ddbn_eval(h, domain, rm, rv, g, b), args)
    with pytest.raises(RuntimeError, match=r"domain\[2\] = 2, expected 0 or 1"):
        ops.ddbn_eval(h, torch.tensor([0, 1, 2, 0]), rm, rv, gamma, beta, 1e-5)


# ------------------------------------------------------------------------------------------
# Registrations: schema, fake kernels, autograd, compile


@pytest.mark.parametrize("n1", [0, 3, 6])
def test_opcheck(ops, n1):
    h, gamma, beta = inputs(3, 6, 5, torch.float64, seed=n1)
    alpha = torch.tensor([0.75, 0.8], dtype=torch.float64)
    grads = [x.clone().requires_grad_() for x in (h, alpha, gamma, beta)]
    rm, rv = torch.zeros(2, 2, 5, dtype=torch.float64), torch.ones(2, 2, 5, dtype=torch.float64)
    for args in [(*grads[:2], n1, *grads[2:], 1e-5, None, None, 0.1),
                 (*grads[:2], n1, *grads[2:], 1e-5, rm, rv, 0.1)]:
        torch.library.opcheck(ops.ddbn_forward.default, args)
    y, m, r = ops.ddbn_forward(h, alpha, n1, gamma, beta, 1e-5, None, None, 0.1)
    torch.library.opcheck(ops.ddbn_backward.default,
                          (torch.randn_like(h), h, alpha, n1, gamma, m, r, 1e-5))
    torch.library.opcheck(ops.ddbn_eval.default,
                          (grads[0], torch.tensor([0, 1, 0, 1, 1, 0]), rm, rv, grads[2], grads[3],
                           1e-5))


def test_statistics_outputs_carry_no_gradient(ops):
    h, gamma, beta = inputs(2, 4, 3, torch.float64)
    h.requires_grad_()
    y, mean, var = ddbn_mod.ddbn(h, torch.tensor([0.75, 0.75], dtype=torch.float64), 2, gamma, beta)
    assert y.requires_grad and not mean.requires_grad and not var.requires_grad


def test_disable_env_forces_reference(ops, monkeypatch):
    h, gamma, beta = inputs(2, 6, 3, torch.float32, seed=1)
    h.requires_grad_()
    alpha = torch.tensor([0.75, 0.75])
    y, _, _ = ddbn_mod.ddbn(h, alpha, 3, gamma, beta)
    assert "ddbn_forward" in type(y.grad_fn).__name__  # the fused op's autograd node
    st = _ext.status()
    assert st.active and st.backend in ("cpu", "cpu+cuda")
    assert st.compiled_with["torch_version"] == torch.__version__.split("+")[0]

    monkeypatch.setenv("ACTREC_DISABLE_EXT", "1")
    assert _ext.load() is None
    st = _ext.status()
    assert (st.active, st.backend) == (False, "reference") and "ACTREC_DISABLE_EXT" in st.reason
    y2, m2, v2 = ddbn_mod.ddbn(h, alpha, 3, gamma, beta)
    yr, mr, vr = ddbn_reference(h, alpha, 3, gamma, beta)
    assert "ddbn_forward" not in type(y2.grad_fn).__name__
    assert torch.equal(y2, yr) and torch.equal(m2, mr) and torch.equal(v2, vr)
    monkeypatch.setenv("ACTREC_DISABLE_EXT", "0")
    assert _ext.load() is not None


@pytest.mark.slow
def test_torch_compile_matches_eager(ops):
    h, gamma, beta = inputs(4, 8, 6, torch.float32, seed=2)
    alpha = torch.tensor([0.7, 0.8])

    def loss(h, alpha, gamma, beta, rm, rv):
        y, _, _ = ddbn_mod.ddbn(h, alpha, 3, gamma, beta, running_mean=rm, running_var=rv)
        return (y * y.detach().sin()).sum()

    results = []
    for fn in (loss, torch.compile(loss, fullgraph=True)):
        leaves = [x.clone().requires_grad_() for x in (h, alpha, gamma, beta)]
        rm, rv = torch.zeros(2, 4, 6), torch.ones(2, 4, 6)
        out = fn(*leaves, rm, rv)
        results.append([out, *torch.autograd.grad(out, leaves), rm, rv])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b)


# ------------------------------------------------------------------------------------------
# CUDA (run where a GPU exists)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", SHAPES + [(2, 1024, 40, 500)])
def test_cuda_matches_reference(ops, shape, dtype):
    t, n, c, n1 = shape
    h, gamma, beta = inputs(t, n, c, dtype, seed=n, offset=2.0)
    gy = torch.randn(t, n, c, dtype=dtype, generator=torch.Generator().manual_seed(2))
    for a in alphas(n, n1):
        rm = torch.randn(2, t + 1, c, dtype=dtype)
        rv = torch.rand(2, t + 1, c, dtype=dtype) + 0.5
        res = []
        for dev, fn in (("cuda", ddbn_mod.ddbn), ("cpu", ddbn_reference)):
            leaves = [x.to(dev).requires_grad_() for x in (h, torch.tensor(a, dtype=dtype),
                                                           gamma, beta)]
            rmd, rvd = rm.to(dev), rv.to(dev)
            y, mean, var = fn(leaves[0], leaves[1], n1, leaves[2], leaves[3], running_mean=rmd,
                              running_var=rvd)
            got = torch.autograd.grad(y, leaves, gy.to(dev), allow_unused=True)
            got = [torch.zeros_like(x) if g is None else g for x, g in zip(leaves, got)]
            res.append([v.detach().cpu() for v in (y, mean, var, rmd, rvd, *got)])
        for a_, b_ in zip(*res):
            scale = max(1.0, b_.abs().max().item())
            torch.testing.assert_close(a_ / scale, b_ / scale, **tol(dtype))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_reduced_precision(ops, dtype):
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


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_gradcheck_opcheck_eval(ops):
    h, gamma, beta = inputs(2, 6, 5, torch.float64, seed=1, device="cuda")
    alpha = torch.tensor([0.7, 0.6], dtype=torch.float64, device="cuda")
    args = [x.clone().requires_grad_() for x in (h, alpha, gamma, beta)]
    assert torch.autograd.gradcheck(
        lambda h, a, g, b: ops.ddbn_forward(h, a, 2, g, b, 1e-5, None, None, 0.1)[0], args)
    rm = torch.randn(2, 1, 5, dtype=torch.float64, device="cuda")
    rv = torch.rand(2, 1, 5, dtype=torch.float64, device="cuda") + 0.5
    torch.library.opcheck(ops.ddbn_forward.default, (*args[:2], 2, *args[2:], 1e-5, rm, rv, 0.1))
    domain = torch.tensor([0, 1, 1, 0, 1, 0], device="cuda")
    y = ddbn_mod.ddbn_eval(h, domain, rm, rv, gamma, beta)
    torch.testing.assert_close(y, ddbn_eval_reference(h, domain, rm, rv, gamma, beta))
    torch.library.opcheck(ops.ddbn_eval.default, (h, domain, rm, rv, gamma, beta, 1e-5))
