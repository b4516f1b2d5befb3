"""The fused whole-sequence DDLSTM / BNLSTM layer op against a plain autograd composition.

The oracle below is written from shared/design/ddbn.md with ordinary torch ops, one step at
a time, so that any disagreement with the C++ op (forward values, every gradient, the batch
statistics) shows up. float64 gradcheck covers the hand-derived backward, alpha included.
With a padding mask the oracle is built per step from ``actrec.ops.ddbn_reference`` (which
takes the mask and the contribution weights of ``actrec.ops.domains``); padded frames must
enter no statistic, and garbage in them must change no loss or gradient bit.
"""

from __future__ import annotations

import math

import pytest
import torch

from actrec.errors import ConfigError
from actrec.ops import ddlstm_layer as dl
from actrec.ops.ddbn_reference import bn_reference, ddbn_reference
from actrec.ops.domains import bessel, contribution_weights, effective_sizes

# --------------------------------------------------------------------------------------------
# The oracle: DDBN and the layer written plainly, per step


def ddbn_plain(z, n1, alpha, gamma, beta, eps, dual):
    """DDBN of one step z [N, C]; returns (normalised [N, C], [(mu, var) of D1, of D2])."""
    n = z.shape[0]
    if not dual or n1 == 0 or n1 == n:  # exactly plain batch norm
        mu = z.mean(0)
        var = ((z - mu) ** 2).mean(0)
        return beta + gamma * (z - mu) / torch.sqrt(var + eps), [(mu, var), (mu, var)]
    j = torch.arange(1, n + 1, dtype=z.dtype)
    tau1 = (1 - torch.tanh(j - alpha[0] * n)) / 2
    tau2 = (1 + torch.tanh(j - (1 - alpha[1]) * n)) / 2
    parts, stats = [], []
    for tau, rows in ((tau1, slice(0, n1)), (tau2, slice(n1, n))):
        s = tau.sum()
        mu = (tau[:, None] * z).sum(0) / s
        var = (tau[:, None] * (z - mu) ** 2).sum(0) / s
        parts.append(beta + gamma * (z[rows] - mu) / torch.sqrt(var + eps))
        stats.append((mu, var))
    return torch.cat(parts), stats


def layer_plain(x, w_ih, w_hh, bias, gx, bx, gh, bh, gc, bc, alpha, n1, eps, dual=True,
                h0=None, c0=None):
    """(out [T, N, H], h_n, c_n, stats) with stats as LayerStats' first six fields."""
    t_len, n, _ = x.shape
    hid = w_hh.shape[1]
    h = h0 if h0 is not None else x.new_zeros(n, hid)
    c = c0 if c0 is not None else x.new_zeros(n, hid)
    outs, sx, sh, sc = [], [], [], []
    for t in range(t_len):
        zx, stx = ddbn_plain(x[t] @ w_ih.T, n1, alpha, gx, bx, eps, dual)
        zh, sth = ddbn_plain(h @ w_hh.T, n1, alpha, gh, bh, eps, dual)
        i, f, g, o = (zx + zh + bias).chunk(4, 1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        cm = c.mean(0)
        cv = ((c - cm) ** 2).mean(0)
        h = torch.sigmoid(o) * torch.tanh(gc * (c - cm) / torch.sqrt(cv + eps) + bc)
        outs.append(h)
        sx.append(stx)
        sh.append(sth)
        sc.append((cm, cv))

    def per_domain(st, k):  # [2, T, 4H]
        return torch.stack([torch.stack([s[d][k] for s in st]) for d in range(2)]).detach()

    stats = (per_domain(sx, 0), per_domain(sx, 1), per_domain(sh, 0), per_domain(sh, 1),
             torch.stack([s[0] for s in sc]).detach(), torch.stack([s[1] for s in sc]).detach())
    return torch.stack(outs), h, c, stats


def layer_reference(x, w_ih, w_hh, bias, gx, bx, gh, bh, gc, bc, alpha, n1, eps, dual=True,
                    h0=None, c0=None, mask=None):
    """The layer per step with ``ddbn_reference``/``bn_reference`` and a padding mask
    ``[T, N]``: (out, h_n, c_n, stats) as ``layer_plain``."""
    t_len, n, _ = x.shape
    hid = w_hh.shape[1]
    m = mask if mask is not None else torch.ones(t_len, n, dtype=torch.bool)
    h = h0 if h0 is not None else x.new_zeros(n, hid)
    c = c0 if c0 is not None else x.new_zeros(n, hid)

    def norm(z, t, gamma, beta):  # z [N, C] -> (y [N, C], mean [2, C], var [2, C])
        if dual:
            y, mu, var = ddbn_reference(z[None], alpha, n1, gamma, beta, eps, mask=m[t:t + 1])
            return y[0], mu[:, 0], var[:, 0]
        y, mu, var = bn_reference(z[None], gamma, beta, eps, mask=m[t:t + 1])
        return y[0], mu.expand(2, -1), var.expand(2, -1)

    outs, st = [], []
    for t in range(t_len):
        zx, mx, vx = norm(x[t] @ w_ih.T, t, gx, bx)
        zh, mh, vh = norm(h @ w_hh.T, t, gh, bh)
        i, f, g, o = (zx + zh + bias).chunk(4, 1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        yc, mc, vc = bn_reference(c[None], gc, bc, eps, mask=m[t:t + 1])
        h = torch.sigmoid(o) * torch.tanh(yc[0])
        outs.append(h)
        st.append((mx, vx, mh, vh, mc[0], vc[0]))
    stats = [torch.stack([s[k] for s in st], -2).detach() for k in range(6)]  # [2, T, C] / [T, C]
    return torch.stack(outs), h, c, stats


def lengths_mask(lengths, t_len):
    """[T, N] bool, True on the first ``lengths[j]`` frames of row j (padding at the end)."""
    return torch.arange(t_len)[:, None] < torch.tensor(lengths)[None, :]


PARAM_NAMES = ["weight_ih", "weight_hh", "bias", "gamma_x", "beta_x", "gamma_h", "beta_h",
               "gamma_c", "beta_c", "alpha"]


def make_params(d, hid, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)

    def r(*shape, scale=1.0, shift=0.0):
        return (torch.randn(*shape, generator=g, dtype=dtype) * scale + shift).requires_grad_()

    return [r(4 * hid, d, scale=0.5), r(4 * hid, hid, scale=0.5), r(4 * hid, scale=0.1),
            r(4 * hid, scale=0.3, shift=1.0), r(4 * hid, scale=0.1),
            r(4 * hid, scale=0.3, shift=1.0), r(4 * hid, scale=0.1),
            r(hid, scale=0.3, shift=1.0), r(hid, scale=0.1),
            torch.tensor([0.7, 0.8], dtype=dtype, requires_grad=True)]


@pytest.fixture(scope="module", autouse=True)
def extension():
    """The op must be built here (a compiler is part of the dev setup); no silent skip."""
    x = torch.zeros(1, 1, 1)
    if dl._ext_disabled():
        pytest.skip("ACTREC_DISABLE_EXT is set")
    assert dl.fused_layer_available(x), "the actrec extension with the DDLSTM layer op did not load"


# --------------------------------------------------------------------------------------------
# Golden values and gradcheck


def test_golden_single_step_plain_bn():
    # T=1, N=2, D=H=1, x = [+1, -1], every weight 1, gammas 1, betas and bias 0, eps 1e-5.
    # h0 = 0 so W_hh h = 0 and BN of it is beta_h = 0; W_ih x = [+1, -1] normalises to +-r,
    # r = 1/sqrt(1 + eps), so every gate of row 0 is +r and of row 1 is -r:
    #   c = sigmoid(+-r) tanh(+-r);  BN(c) = +-1/sqrt(1 + eps/var_c);  h = sigmoid(+-r) tanh(BN(c)).
    eps = 1e-5
    x = torch.tensor([[[1.0], [-1.0]]], dtype=torch.float64)
    one4, one1 = torch.ones(4, 1, dtype=torch.float64), torch.ones(1, dtype=torch.float64)
    p = [one4, one4.clone(), torch.zeros(4, dtype=torch.float64), torch.ones(4, dtype=torch.float64),
         torch.zeros(4, dtype=torch.float64), torch.ones(4, dtype=torch.float64),
         torch.zeros(4, dtype=torch.float64), one1, torch.zeros(1, dtype=torch.float64),
         torch.tensor([0.75, 0.75], dtype=torch.float64)]
    res = dl.ddlstm_layer(x, *p, n1=1, eps=eps, dual_domain=False)
    r = 1 / math.sqrt(1 + eps)
    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    c = [sig(r) * math.tanh(r), sig(-r) * math.tanh(-r)]
    var_c = ((c[0] - c[1]) / 2) ** 2
    bn = 1 / math.sqrt(1 + eps / var_c)
    h = [sig(r) * math.tanh(bn), sig(-r) * math.tanh(-bn)]
    assert res.out[0, :, 0].tolist() == pytest.approx(h, abs=1e-12)
    assert res.c_n[:, 0].tolist() == pytest.approx(c, abs=1e-12)
    assert res.stats.mean_c[0, 0].item() == pytest.approx((c[0] + c[1]) / 2, abs=1e-12)
    assert res.stats.var_c[0, 0].item() == pytest.approx(var_c, abs=1e-12)
    assert res.stats.var_x[:, 0, :].tolist() == [[1.0] * 4, [1.0] * 4]  # both slots: plain BN


@pytest.mark.parametrize("n1,dual,with_state", [(3, True, False), (0, True, False),
                                                (6, True, False), (2, False, True),
                                                (4, True, True)])
def test_gradcheck_float64(n1, dual, with_state):
    torch.manual_seed(1)
    t_len, n, d, hid = 3, 6, 3, 2
    p = make_params(d, hid, torch.float64, seed=2)
    x = torch.randn(t_len, n, d, dtype=torch.float64, requires_grad=True)
    state = ([(torch.randn(n, hid, dtype=torch.float64) * 0.5).requires_grad_() for _ in range(2)]
             if with_state else [None, None])

    def f(x, *args):
        *params, h0, c0 = args
        r = dl.ddlstm_layer(x, *params, n1=n1, eps=1e-5, h0=h0, c0=c0, dual_domain=dual)
        return r.out, r.h_n, r.c_n

    inputs = (x, *p, *state)
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-7, rtol=1e-5)


# --------------------------------------------------------------------------------------------
# Values and gradients against the plain composition

SHAPES = [  # T, N, n1, D, H, dual, with_state
    (5, 11, 4, 7, 19, True, False),   # odd H spanning two 16-unit tiles, N odd
    (1, 5, 2, 3, 3, True, False),     # T = 1
    (4, 9, 0, 5, 17, True, False),    # single domain (all D2): plain BN
    (4, 9, 9, 5, 17, True, False),    # single domain (all D1)
    (6, 13, 6, 4, 33, False, False),  # BNLSTM
    (3, 7, 3, 2, 16, True, True),     # given h0, c0
    # BLAS-sized steps (N 4H H > 2^16): the per-step GEMMs run inside the tiles' parallel
    # region, each task on its own columns (5 tiles: two tasks with 2 threads, a partial tile)
    (3, 128, 50, 5, 72, True, True),
    # The backward takes the weight gradients and dL/dx per chunk of ceil(1024 / N) steps
    # (at least 2): several chunks, a partial one at the end of the sequence, with and
    # without h0 (step 0's chunk pairs its first step with h0)
    (11, 256, 100, 5, 16, True, True),
    (11, 256, 100, 5, 16, True, False),
    (5, 512, 300, 3, 16, False, True),
]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("shape", SHAPES)
def test_matches_plain_composition(dtype, shape):
    t_len, n, n1, d, hid, dual, with_state = shape
    torch.manual_seed(3)
    p = make_params(d, hid, dtype, seed=4)
    x = torch.randn(t_len, n, d, dtype=dtype, requires_grad=True)
    h0 = (torch.randn(n, hid, dtype=dtype) * 0.5).requires_grad_() if with_state else None
    c0 = (torch.randn(n, hid, dtype=dtype) * 0.5).requires_grad_() if with_state else None
    res = dl.ddlstm_layer(x, *p, n1=n1, eps=1e-5, h0=h0, c0=c0, dual_domain=dual)
    ref = layer_plain(x, *p, n1, 1e-5, dual, h0, c0)
    tol = dict(rtol=1e-10, atol=1e-11) if dtype == torch.float64 else dict(rtol=2e-4, atol=2e-5)
    torch.testing.assert_close(res.out, ref[0], **tol)
    torch.testing.assert_close(res.h_n, ref[1], **tol)
    torch.testing.assert_close(res.c_n, ref[2], **tol)

    g_out = torch.randn_like(ref[0])
    leaves = [x, *p] + ([h0, c0] if with_state else [])
    names = ["x", *PARAM_NAMES] + (["h0", "c0"] if with_state else [])

    def grads(out, h_n, c_n):
        loss = (out * g_out).sum() + 0.3 * h_n.sum() + 0.7 * c_n.sum()
        return torch.autograd.grad(loss, leaves, allow_unused=True, materialize_grads=True)

    got, want = grads(res.out, res.h_n, res.c_n), grads(*ref[:3])
    gtol = dict(rtol=1e-9, atol=1e-10) if dtype == torch.float64 else dict(rtol=1e-3, atol=1e-4)
    for name, a, b in zip(names, got, want):
        torch.testing.assert_close(a, b, **gtol, msg=lambda m, name=name: f"grad {name}: {m}")
    if not dual or n1 in (0, n):
        assert got[names.index("alpha")].abs().max().item() == 0.0


def test_input_gradient_skipped_when_not_needed():
    p = make_params(4, 5, torch.float64)
    x = torch.randn(3, 6, 4, dtype=torch.float64)  # no grad: the op skips the dX GEMM
    res = dl.ddlstm_layer(x, *p, n1=2, eps=1e-5)
    ref = layer_plain(x, *p, 2, 1e-5)
    got = torch.autograd.grad(res.out.sum(), p)
    want = torch.autograd.grad(ref[0].sum(), p)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


def test_only_h_n_used():
    # grads of out and c_n are None inside the autograd formula: they must count as zero
    p = make_params(3, 4, torch.float64)
    x = torch.randn(4, 5, 3, dtype=torch.float64, requires_grad=True)
    got = torch.autograd.grad(dl.ddlstm_layer(x, *p, n1=2, eps=1e-5).h_n.sum(), [x, *p])
    want = torch.autograd.grad(layer_plain(x, *p, 2, 1e-5)[1].sum(), [x, *p])
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


# --------------------------------------------------------------------------------------------
# Batch statistics for the running-statistics update


@pytest.mark.parametrize("n1,dual", [(5, True), (0, True), (5, False)])
def test_batch_statistics_match_plain(n1, dual):
    t_len, n, d, hid = 4, 12, 3, 6
    p = make_params(d, hid, torch.float64, seed=5)
    x = torch.randn(t_len, n, d, dtype=torch.float64)
    st = dl.ddlstm_layer(x, *p, n1=n1, eps=1e-5, dual_domain=dual).stats
    want = layer_plain(x, *p, n1, 1e-5, dual)[3]
    for name, a, b in zip(["mean_x", "var_x", "mean_h", "var_h", "mean_c", "var_c"], st[:6], want):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12, msg=lambda m, k=name: f"{k}: {m}")
    assert not any(t.requires_grad for t in st[:7])

    # effective sample sizes, written out: S^2 / sum tau^2 per domain (the same at every
    # step without padding), N for plain BN; n_c = N real rows at every step
    if dual and 0 < n1 < n:
        a = p[-1].detach()
        j = torch.arange(1, n + 1, dtype=torch.float64)
        taus = [(1 - torch.tanh(j - a[0] * n)) / 2, (1 + torch.tanh(j - (1 - a[1]) * n)) / 2]
        n_eff = torch.stack([tau.sum() ** 2 / (tau**2).sum() for tau in taus])
    else:
        n_eff = torch.full((2,), float(n), dtype=torch.float64)
    torch.testing.assert_close(st.n_eff, n_eff[:, None].expand(2, t_len))
    torch.testing.assert_close(st.n_c, torch.full((t_len,), float(n), dtype=torch.float64))
    torch.testing.assert_close(st.unbiased_var_h(), want[3] * (n_eff / (n_eff - 1)).view(2, 1, 1))
    torch.testing.assert_close(st.unbiased_var_c(), want[5] * n / (n - 1))


def test_masked_statistics_counts_and_bessel():
    # D1 = rows 0-2 of lengths 4, 4, 1; D2 = rows 3-5 of lengths 3, 2, 1 (n1 = 3)
    t_len, n, n1, d, hid = 4, 6, 3, 3, 5
    lengths = [4, 4, 1, 3, 2, 1]
    mask = lengths_mask(lengths, t_len)
    p = make_params(d, hid, torch.float32, seed=6)
    x = torch.randn(t_len, n, d)
    st = dl.ddlstm_layer(x, *p, n1=n1, eps=1e-5, mask=mask).stats
    w = contribution_weights(p[-1].detach(), n1, t_len, n, mask, dtype=torch.float32)
    torch.testing.assert_close(st.n_eff, effective_sizes(w))
    assert st.n_eff.shape == (2, t_len) and st.n_eff.dtype == torch.float64
    assert st.n_c.tolist() == [6.0, 4.0, 3.0, 2.0]  # real rows per step
    # unbiased variances in the statistics' dtype, with the one Bessel formula
    assert st.unbiased_var_x().dtype == torch.float32
    torch.testing.assert_close(st.unbiased_var_x(),
                               st.var_x * bessel(effective_sizes(w)).float()[..., None])
    torch.testing.assert_close(st.unbiased_var_c(),
                               st.var_c * torch.tensor([6 / 5, 4 / 3, 3 / 2, 2.0])[:, None])
    # BNLSTM with one real row at the last step: n_c = 1, Bessel factor 1 (not a division by 0)
    st1 = dl.ddlstm_layer(x, *p, n1=n1, eps=1e-5, dual_domain=False,
                          mask=lengths_mask([4, 3, 3, 2, 1, 1], t_len)).stats
    assert st1.n_c.tolist() == [6.0, 4.0, 3.0, 1.0]
    assert st1.n_eff.tolist() == [[6.0, 4.0, 3.0, 1.0]] * 2
    torch.testing.assert_close(st1.unbiased_var_c()[3], st1.var_c[3])


# --------------------------------------------------------------------------------------------
# Padding: the mask keeps padded frames out of every statistic

MASKED = [  # T, N, n1, D, H, dual, lengths
    (5, 7, 3, 4, 19, True, [5, 3, 5, 5, 2, 4, 1]),    # two tiles, ragged lengths in both domains
    (4, 6, 3, 3, 5, True, [4, 4, 4, 2, 1, 1]),        # D2 has a single real row at t >= 2
    (4, 6, 3, 3, 5, True, [3, 2, 2, 3, 1, 1]),        # no real row at all at t = 3
    (4, 6, 0, 3, 5, True, [4, 3, 2, 2, 1, 1]),        # single domain (all D2): plain BN
    (5, 8, 4, 3, 17, False, [5, 5, 1, 3, 4, 2, 2, 3]),  # BNLSTM
]


def _masked_case(shape, dtype, seed=7, garbage=None):
    t_len, n, n1, d, hid, dual, lengths = shape
    torch.manual_seed(seed)
    p = make_params(d, hid, dtype, seed=seed)
    mask = lengths_mask(lengths, t_len)
    x = torch.randn(t_len, n, d, dtype=dtype)
    if garbage is not None:  # padded frames get other values: must change nothing
        x = torch.where(mask[..., None], x, garbage.to(dtype))
    return p, mask, x.requires_grad_()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("shape", MASKED)
def test_masked_matches_reference(dtype, shape):
    """Outputs, batch statistics and every gradient (of a masked loss) against the per-step
    reference with the mask; padded rows' outputs are compared too (finite, same recurrence)."""
    n1, dual = shape[2], shape[5]
    p, mask, x = _masked_case(shape, dtype)
    res = dl.ddlstm_layer(x, *p, n1=n1, eps=1e-5, dual_domain=dual, mask=mask)
    ref = layer_reference(x, *p, n1, 1e-5, dual, mask=mask)
    tol = dict(rtol=1e-10, atol=1e-10) if dtype == torch.float64 else dict(rtol=2e-4, atol=5e-5)
    real = mask[..., None].expand_as(ref[0])
    torch.testing.assert_close(res.out[real], ref[0][real], **tol)
    if dtype == torch.float64:
        torch.testing.assert_close(res.out, ref[0], **tol)
    else:
        # A padded row is normalised with statistics it does not enter; where only one or two
        # rows are real those are ill-conditioned and float32 rounding is amplified (~1e-4 in
        # the float32 reference itself). Hold padded rows to the reference's own error against
        # the same inputs computed in float64.
        exact = layer_reference(x.detach().double(), *[q.detach().double() for q in p], n1,
                                1e-5, dual, mask=mask)[0]
        err_ref = (ref[0].detach().double() - exact)[~real].abs().max()
        err = (res.out.detach().double() - exact)[~real].abs().max()
        assert err <= 4 * err_ref + 5e-5, (err, err_ref)
    torch.testing.assert_close(res.c_n, ref[2], **tol)
    for name, a, b in zip(["mean_x", "var_x", "mean_h", "var_h", "mean_c", "var_c"],
                          res.stats[:6], ref[3]):
        torch.testing.assert_close(a, b, **tol, msg=lambda m, k=name: f"{k}: {m}")
    empty = ~mask.any(1)  # steps with no real frame: statistics exactly 0
    if empty.any():
        assert res.stats.n_c[empty].eq(0).all() and res.stats.n_eff[:, empty].eq(0).all()
        for st in res.stats[:6]:
            assert st[..., empty, :].eq(0).all()

    g_out = torch.randn_like(ref[0]) * mask[..., None]
    leaves = [x, *p]

    def grads(out):
        return torch.autograd.grad((out * g_out).sum(), leaves, materialize_grads=True)

    got, want = grads(res.out), grads(ref[0])
    gtol = dict(rtol=1e-8, atol=1e-9) if dtype == torch.float64 else dict(rtol=2e-3, atol=2e-4)
    for name, a, b in zip(["x", *PARAM_NAMES], got, want):
        assert torch.isfinite(a).all(), name
        torch.testing.assert_close(a, b, **gtol, msg=lambda m, name=name: f"grad {name}: {m}")
    assert got[0][~mask].eq(0).all()  # no gradient reaches a padded frame


@pytest.mark.parametrize("shape", [MASKED[0], MASKED[2], MASKED[4]])
def test_gradcheck_float64_masked(shape):
    """The hand-derived backward with padding, alpha included (through contribution_weights),
    with h0/c0; every output (padded rows' too) enters the checked function."""
    n1, dual = shape[2], shape[5]
    p, mask, x = _masked_case(shape[:3] + (3, 3) + shape[5:], torch.float64, seed=8)
    n, hid = shape[1], 3
    state = [(torch.randn(n, hid, dtype=torch.float64) * 0.5).requires_grad_() for _ in range(2)]

    def f(x, *args):
        *params, h0, c0 = args
        r = dl.ddlstm_layer(x, *params, n1=n1, eps=1e-3, h0=h0, c0=c0, dual_domain=dual,
                            mask=mask)
        return r.out, r.h_n, r.c_n

    assert torch.autograd.gradcheck(f, (x, *p, *state), eps=1e-6, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [MASKED[0], MASKED[2], MASKED[4]])
def test_padding_garbage_changes_no_bit(dtype, shape):
    """Two different garbage fillings of the padded frames: the masked loss and every gradient
    are bit-for-bit the same, and so are the real rows' outputs and the batch statistics."""
    n1, dual = shape[2], shape[5]
    t_len, n, d = shape[0], shape[1], shape[3]
    runs = []
    for k, scale in enumerate((3.0, 40.0)):
        gen = torch.Generator().manual_seed(100 + k)
        garbage = torch.randn(t_len, n, d, generator=gen, dtype=torch.float64) * scale + 5 * k
        p, mask, x = _masked_case(shape, dtype, garbage=garbage)
        res = dl.ddlstm_layer(x, *p, n1=n1, eps=1e-5, dual_domain=dual, mask=mask)
        g = torch.randn(res.out.shape, generator=torch.Generator().manual_seed(5), dtype=dtype)
        loss = (res.out * g * mask[..., None]).sum()
        grads = torch.autograd.grad(loss, [x, *p], materialize_grads=True)
        runs.append((loss, res, grads, x.detach(), mask))
    (l0, r0, g0, x0, mask), (l1, r1, g1, x1, _) = runs
    assert not torch.equal(x0, x1)  # the fillings differ
    assert torch.equal(l0, l1)
    assert torch.equal(r0.out[mask], r1.out[mask])
    for a, b in zip(r0.stats, r1.stats):
        assert torch.equal(a, b)
    for name, a, b in zip(["x", *PARAM_NAMES], g0, g1):
        assert torch.equal(a, b), f"grad {name} depends on the padding"
    if dual and 0 < n1 < n:
        assert g0[-1].abs().sum() > 0  # alpha's gradient exists (and is padding-independent)


@pytest.mark.parametrize("n1,dual", [(4, False), (0, True)])
def test_all_padding_rows_change_nothing(n1, dual):
    """Plain batch norm: a batch with two extra rows that are padding throughout (garbage in
    x, h0 and c0) gives the real rows' outputs and every parameter gradient of the real
    batch alone (no reference involved: the op against itself)."""
    t_len, n, d, hid = 4, 4, 3, 6
    p = make_params(d, hid, torch.float64, seed=12)
    x = torch.randn(t_len, n, d, dtype=torch.float64)
    h0, c0 = (torch.randn(n, hid, dtype=torch.float64) for _ in range(2))
    g = torch.randn(t_len, n, hid, dtype=torch.float64)

    def pad(a):  # two garbage rows appended along the batch dimension (-2)
        return torch.cat([a, 50 * torch.randn(*a.shape[:-2], 2, a.shape[-1], dtype=a.dtype)], -2)

    mask = torch.ones(t_len, n + 2, dtype=torch.bool)
    mask[:, n:] = False
    runs = []
    for xs, hs, cs, m in ((x, h0, c0, None), (pad(x), pad(h0), pad(c0), mask)):
        ps = [q.detach().clone().requires_grad_() for q in p]
        r = dl.ddlstm_layer(xs, *ps, n1=n1, eps=1e-5, h0=hs, c0=cs, dual_domain=dual, mask=m)
        grads = torch.autograd.grad((r.out[:, :n] * g).sum(), ps, materialize_grads=True)
        runs.append((r, grads))
    (alone, g_alone), (padded, g_padded) = runs
    torch.testing.assert_close(padded.out[:, :n], alone.out, rtol=1e-12, atol=1e-12)
    for a, b in zip(padded.stats[:6], alone.stats[:6]):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert padded.stats.n_c.tolist() == [float(n)] * t_len
    for name, a, b in zip(PARAM_NAMES, g_padded, g_alone):
        torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-12, msg=lambda m, k=name: f"{k}: {m}")


def test_float32_agrees_with_float64():
    """The float32 op (double-accumulated statistics) against the float64 op on the same
    inputs: outputs within 1e-5 absolute, each gradient within 3e-5 of its largest entry
    (measured: 2.5e-6 and 4e-6)."""
    shape = (6, 24, 10, 8, 20, True, [6] * 12 + [4] * 6 + [6] * 4 + [2, 1])
    n1 = shape[2]
    p64, mask, x64 = _masked_case(shape, torch.float64, seed=11)
    x32 = x64.detach().float().requires_grad_()
    p32 = [q.detach().float().requires_grad_() for q in p64]
    g = torch.randn(shape[0], shape[1], shape[4], dtype=torch.float64) * mask[..., None]
    outs, grads = [], []
    for x, p in ((x64, p64), (x32, p32)):
        r = dl.ddlstm_layer(x, *p, n1=n1, eps=1e-5, mask=mask)
        outs.append(r.out.double())
        grads.append([q.double() for q in torch.autograd.grad((r.out * g.to(x.dtype)).sum(),
                                                               [x, *p])])
    torch.testing.assert_close(outs[1], outs[0], rtol=0, atol=1e-5)
    for name, a, b in zip(["x", *PARAM_NAMES], grads[1], grads[0]):
        scale = b.abs().max().item()
        assert (a - b).abs().max().item() <= 3e-5 * scale, name


def test_float32_statistics_accumulate_in_double():
    """x W_ih^T = x (D = 1, W_ih = 1) with a large offset over many rows: a float running sum
    loses the low bits of the mean (and the variance then grows by the mean's error squared);
    double accumulation keeps both within float rounding of the exact values."""
    t_len, n, hid = 2, 4096, 1
    gen = torch.Generator().manual_seed(3)
    x = (3000.0 + torch.randn(t_len, n, 1, generator=gen, dtype=torch.float64)).float()
    p = [t.detach() for t in make_params(1, hid, torch.float32, seed=1)]
    p[0] = torch.ones(4 * hid, 1)
    st = dl.ddlstm_layer(x, *p, n1=n, eps=1e-5, dual_domain=False).stats
    xd = x.double()[..., 0]  # [T, N] the float inputs, exactly
    mean, var = xd.mean(1), xd.var(1, unbiased=False)
    assert (st.mean_x[0, :, 0].double() - mean).abs().max().item() <= 2 * 3000 * 2**-24
    assert (st.var_x[0, :, 0].double() - var).abs().max().item() <= 1e-5


# --------------------------------------------------------------------------------------------
# torch.library registrations, errors, availability


def test_opcheck_forward_and_backward():
    p = [t.detach() for t in make_params(3, 5, torch.float64)]
    x = torch.randn(3, 7, 3, dtype=torch.float64)
    mask = lengths_mask([3, 2, 3, 1, 3, 3, 2], 3)
    w = contribution_weights(p[-1], 3, 3, 7, mask)  # [2, T, N]
    w_c = mask.double()
    fwd_args = (x, *p[:-1], w, w_c, 3, 1e-5, True, None, None)
    torch.library.opcheck(torch.ops.actrec.ddlstm_layer_forward, fwd_args)
    xr = x.clone().requires_grad_()
    pr = [t.clone().requires_grad_() for t in p[:-1]]
    torch.library.opcheck(torch.ops.actrec.ddlstm_layer_forward,
                          (xr, *pr, w.clone().requires_grad_(), w_c, 3, 1e-5, True, None, None),
                          test_utils=("test_schema", "test_autograd_registration",
                                      "test_faketensor"))
    out = torch.ops.actrec.ddlstm_layer_forward(*fwd_args)
    g = torch.randn_like(out[0])
    z = torch.zeros_like(out[1])
    bwd_args = (g, z, z, x, *p[:-1], w, w_c, None, None, out[3], out[4], out[0], out[5],
                *out[6:12], 3, 1e-5, True, True)
    torch.library.opcheck(torch.ops.actrec.ddlstm_layer_backward, bwd_args)


def test_weight_gradient_is_dl_dw():
    """The op's gradient w.r.t. the contribution weights themselves (what autograd carries
    to alpha), by gradcheck on w directly: S = 0 at the padded last step is not a point
    gradcheck can cross, so only real frames' weights are perturbed."""
    p = [t.detach() for t in make_params(2, 3, torch.float64, seed=9)]
    x = torch.randn(3, 5, 2, dtype=torch.float64)
    mask = lengths_mask([3, 2, 3, 3, 1], 3)
    w0 = contribution_weights(p[-1], 2, 3, 5, mask)
    sel = mask.expand(2, 3, 5)
    free = w0[sel].clone().requires_grad_()

    def f(free):
        w = w0.masked_scatter(sel, free)
        return torch.ops.actrec.ddlstm_layer_forward(x, *p[:-1], w, mask.double(), 2, 1e-3, True,
                                                     None, None)[0]

    assert torch.autograd.gradcheck(f, (free,), eps=1e-6, atol=1e-6, rtol=1e-5)


def test_bad_shapes_are_config_errors():
    p = make_params(3, 4, torch.float32)
    x = torch.randn(2, 5, 3)
    with pytest.raises(ConfigError, match="weight_ih"):
        dl.ddlstm_layer(x, p[0][:, :2], *p[1:], n1=2, eps=1e-5)
    with pytest.raises(ConfigError, match="gamma_c"):
        dl.ddlstm_layer(x, *p[:7], p[7][:3], *p[8:], n1=2, eps=1e-5)
    with pytest.raises(ConfigError, match="n1"):
        dl.ddlstm_layer(x, *p, n1=6, eps=1e-5)
    with pytest.raises(ConfigError, match=r"\[T, N, D\]"):
        dl.ddlstm_layer(x[0], *p, n1=2, eps=1e-5)
    with pytest.raises(ConfigError, match="dtype"):
        dl.ddlstm_layer(x, p[0].double(), *p[1:], n1=2, eps=1e-5)
    with pytest.raises(ConfigError, match=r"mask must be \[T=2, N=5\]"):
        dl.ddlstm_layer(x, *p, n1=2, eps=1e-5, mask=torch.ones(5, 2, dtype=torch.bool))
    with pytest.raises(ConfigError, match="bool"):
        dl.ddlstm_layer(x, *p, n1=2, eps=1e-5, mask=torch.ones(2, 5))
    gap = torch.ones(2, 5, dtype=torch.bool)
    gap[0, 3] = False  # row 3: padding, then a real frame
    with pytest.raises(ConfigError, match="padding must come at the end"):
        dl.ddlstm_layer(x, *p, n1=2, eps=1e-5, mask=gap)


def test_availability(monkeypatch):
    assert dl.fused_layer_available(torch.zeros(1, 1, 1, dtype=torch.float64))
    assert not dl.fused_layer_available(torch.zeros(1, 1, 1, dtype=torch.int64))
    assert not dl.fused_layer_available(torch.zeros(1, 1, 1, dtype=torch.float16))
    monkeypatch.setenv("ACTREC_DISABLE_EXT", "1")
    assert not dl.fused_layer_available(torch.zeros(1, 1, 1))
    with pytest.raises(ConfigError, match="not available"):
        dl.ddlstm_layer(torch.zeros(1, 1, 1), *make_params(1, 1, torch.float32), n1=0, eps=1e-5)


CUDA_CASES = [  # (T, N, n1, D, H, dual, eps, lengths): odd H and N, single domain, another eps
    (7, 12, 5, 5, 9, True, 1e-5, None),
    (3, 37, 0, 4, 8, True, 1e-5, None),
    (5, 8, 4, 3, 16, False, 1e-5, None),
    (5, 8, 4, 3, 16, True, 1e-3, None),
    (6, 12, 5, 5, 9, True, 1e-5, [6, 6, 3, 1, 6, 5, 2, 6, 6, 4, 1, 6]),  # padding
    (4, 6, 3, 3, 5, True, 1e-5, [3, 2, 2, 3, 1, 1]),  # padding, no real row at t = 3
]


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("graphs", ["1", "0"])
def test_cuda_matches_cpu_op(extension, monkeypatch, graphs, dtype):
    """The CUDA layer (CUDA-graph replay and eager loop) against the float64 CPU op: outputs,
    batch statistics and every gradient of a masked loss; each shape twice with new inputs (and
    the same mask), so a replayed graph that kept stale inputs (or an old eps) would fail.

    Tolerances: float64 1e-9 (outputs) / 1e-8 relative (gradients); float32 (fast-math
    activations, double-accumulated statistics) 5e-5 absolute on outputs and statistics, and
    each gradient within 2e-4 of its largest entry (the CPU float32 op is within 3e-5)."""
    monkeypatch.setenv("ACTREC_CUDA_GRAPHS", graphs)
    f32 = dtype == torch.float32
    for t, n, n1, d, hid, dual, eps, lengths in CUDA_CASES:
        mask = lengths_mask(lengths, t) if lengths else None
        for seed in (0, 1):
            torch.manual_seed(seed)
            x = torch.randn(t, n, d, dtype=torch.float64)
            p = make_params(d, hid, torch.float64, seed=seed)
            g = torch.randn(t, n, hid, dtype=torch.float64)
            if mask is not None:
                g = g * mask[..., None]
            grads, results = [], []
            for device, dt in (("cpu", torch.float64), ("cuda", dtype)):
                xs = x.to(device, dt).requires_grad_()
                ps = [q.detach().to(device, dt).requires_grad_() for q in p]
                r = dl.ddlstm_layer(xs, *ps, n1=n1, eps=eps, dual_domain=dual,
                                    mask=None if mask is None else mask.to(device))
                loss = (r.out * g.to(device, dt)).sum() + r.c_n.sum() * (mask is None)
                gs = torch.autograd.grad(loss, [xs, *ps], materialize_grads=True)
                results.append(r)
                grads.append([q.double().cpu() for q in gs])
            cpu, gpu = results
            tol = dict(rtol=0, atol=5e-5) if f32 else dict(rtol=1e-9, atol=1e-9)
            real = mask[..., None].expand_as(cpu.out) if mask is not None else slice(None)
            torch.testing.assert_close(gpu.out.double().cpu()[real], cpu.out[real], **tol)
            if mask is None:  # c_n of a padded row is meaningless
                torch.testing.assert_close(gpu.c_n.double().cpu(), cpu.c_n, **tol)
            for a, b in zip(gpu.stats[:6], cpu.stats[:6]):
                torch.testing.assert_close(a.double().cpu(), b, **(tol if f32 else {}))
            torch.testing.assert_close(gpu.stats.n_eff.cpu(), cpu.stats.n_eff,
                                       **(dict(rtol=1e-5, atol=1e-5) if f32 else {}))
            for name, g_gpu, g_cpu in zip(["x", *PARAM_NAMES], grads[1], grads[0]):
                if f32:
                    scale = g_cpu.abs().max().item()
                    assert (g_gpu - g_cpu).abs().max().item() <= 2e-4 * scale + 1e-7, name
                else:
                    torch.testing.assert_close(g_gpu, g_cpu, rtol=1e-8, atol=1e-9)
