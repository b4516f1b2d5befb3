"""The fused evaluation-mode DDLSTM / BNLSTM path (running statistics, C++ time loop) against
stepping the same layer one frame at a time (``NormLSTMLayer.step``, the online path) and the
per-step Python loop; the folding of running statistics into affine maps; bad input."""

from __future__ import annotations

import pytest
import torch

from actrec.errors import ConfigError
from actrec.nn.lstm import BNLSTM, DDLSTM
from actrec.ops import ddlstm_layer as dl


@pytest.fixture(scope="module", autouse=True)
def extension():
    if dl._ext_disabled():
        pytest.skip("ACTREC_DISABLE_EXT is set")
    assert dl.fused_layer_available(torch.zeros(1, 1, 1)), "the actrec extension did not load"


def _trained(cls, dtype, max_len=6, seed=0):
    """A 2-layer stack whose running statistics and parameters are not at their defaults."""
    torch.manual_seed(seed)
    m = cls(5, 12, num_layers=2, max_len=max_len).to(dtype)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.2 * torch.randn_like(p))
    dom = torch.tensor([0] * 4 + [1] * 4)
    m.train()
    for k in range(3):
        m(torch.randn(max_len, 8, 5, dtype=dtype) * (1 + k), dom)
    return m.eval()


def _stepped(m, x, dom, fused=False):
    """Frame-by-frame stepping (the online path); ``fused=False``: the per-step Python cell."""
    for layer in m.layers:
        layer.fused = fused
    try:
        st = m.init_state(x.shape[1], x)
        outs = []
        for t in range(x.shape[0]):
            h, st = m.step(x[t], st, t, dom)
            outs.append(h)
        return torch.stack(outs)
    finally:
        for layer in m.layers:
            layer.fused = True


@pytest.mark.parametrize("cls", [DDLSTM, BNLSTM])
def test_fused_eval_equals_stepping_float64(cls):
    m = _trained(cls, torch.float64)
    # more steps than trained slots (t >= T_train uses the last one), rows of both domains mixed
    x = torch.randn(9, 7, 5, dtype=torch.float64)
    dom = torch.tensor([1, 0, 0, 1, 1, 0, 1])
    calls = []
    real = dl.ddlstm_layer_eval

    def spy(*a, **k):
        calls.append(1)
        return real(*a, **k)

    with torch.no_grad():
        stepped = _stepped(m, x, dom)
        dl_mod = dl
        dl_mod.ddlstm_layer_eval = spy
        try:
            fused = m(x, dom)
        finally:
            dl_mod.ddlstm_layer_eval = real
    assert len(calls) == 2  # one fused call per layer: the C++ loop really ran
    assert stepped.abs().max() > 1e-2  # not a degenerate all-zero output
    torch.testing.assert_close(fused, stepped, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("cls", [DDLSTM, BNLSTM])
def test_fused_online_step_equals_python_step_and_follows_changes(cls):
    m = _trained(cls, torch.float64)
    x = torch.randn(9, 5, 5, dtype=torch.float64)  # past max_len=6: the last slot
    dom = torch.tensor([1, 0, 1, 1, 0])
    with torch.no_grad():
        ref = _stepped(m, x, dom)
        got = _stepped(m, x, dom, fused=True)
        torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)
        # the cached affine maps follow in-place changes of statistics and parameters
        m.layers[0].bn_h.running_mean.add_(0.3)
        m.layers[1].bn_c.weight.mul_(1.5)
        ref2 = _stepped(m, x, dom)
        got2 = _stepped(m, x, dom, fused=True)
    assert (ref2 - ref).abs().max() > 1e-3
    torch.testing.assert_close(got2, ref2, rtol=1e-12, atol=1e-12)


def test_fused_eval_float32_agrees_with_float64_stepping():
    m64 = _trained(DDLSTM, torch.float64)
    m32 = _trained(DDLSTM, torch.float32)
    m32.load_state_dict({k: v.float() if v.is_floating_point() else v
                         for k, v in m64.state_dict().items()})
    x = torch.randn(10, 6, 5, dtype=torch.float64)
    dom = torch.tensor([0, 1, 1, 0, 1, 0])
    with torch.no_grad():
        ref = _stepped(m64, x, dom)
        got = m32(x.float(), dom)
    torch.testing.assert_close(got.double(), ref, rtol=1e-4, atol=2e-5)


def test_eval_with_gradients_uses_the_differentiable_path():
    m = _trained(DDLSTM, torch.float64)
    x = torch.randn(4, 3, 5, dtype=torch.float64, requires_grad=True)
    dom = torch.tensor([0, 1, 0])
    out = m(x, dom)  # grad mode on, parameters require grad: the per-step autograd path
    out.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    with torch.no_grad():
        torch.testing.assert_close(m(x.detach(), dom), out.detach(), rtol=1e-12, atol=1e-12)


def _op_args(t=4, n=5, d=3, hid=4, dtype=torch.float64, seed=1):
    g = torch.Generator().manual_seed(seed)

    def r(*s):
        return torch.randn(*s, generator=g, dtype=dtype)

    aff = dl.EvalAffine(r(2, t, 4 * hid), r(2, t, 4 * hid), r(2, t, 4 * hid), r(t, hid),
                        r(t, hid))
    return r(t, n, d), r(4 * hid, d), r(4 * hid, hid), aff, torch.tensor([0, 1, 1, 0, 1][:n])


def _plain(x, w_ih, w_hh, aff, dom, h=None, c=None):
    """The op's contract written with torch ops, one step at a time."""
    t_len, n, _ = x.shape
    hid = w_hh.shape[1]
    h = x.new_zeros(n, hid) if h is None else h
    c = x.new_zeros(n, hid) if c is None else c
    outs = []
    for t in range(t_len):
        s = min(t, aff.scale_c.shape[0] - 1)  # past the last slot: the last slot
        z = (h @ w_hh.T) * aff.scale_h[dom, s] + (x[t] @ w_ih.T) * aff.scale_x[dom, s] \
            + aff.shift[dom, s]
        i, f, g, o = z.chunk(4, 1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c * aff.scale_c[s] + aff.shift_c[s])
        outs.append(h)
    return torch.stack(outs), h, c


def test_op_matches_plain_composition_with_initial_state():
    x, w_ih, w_hh, aff, dom = _op_args()
    h0, c0 = torch.randn(5, 4, dtype=torch.float64), torch.randn(5, 4, dtype=torch.float64)
    got = dl.ddlstm_layer_eval(x, w_ih, w_hh, aff, dom, h0, c0)
    ref = _plain(x, w_ih, w_hh, aff, dom, h0, c0)
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_op_steps_past_the_last_slot_use_it():
    x, w_ih, w_hh, aff, dom = _op_args(t=7)
    short = dl.EvalAffine(*(a[:, :3] for a in aff[:3]), *(a[:3] for a in aff[3:]))
    got = dl.ddlstm_layer_eval(x, w_ih, w_hh, short, dom)
    clamped = dl.EvalAffine(*(torch.cat([a[:, :3]] + [a[:, 2:3]] * 4, 1) for a in aff[:3]),
                            *(torch.cat([a[:3]] + [a[2:3]] * 4) for a in aff[3:]))
    ref = _plain(x, w_ih, w_hh, clamped, dom)
    assert not torch.allclose(ref[0], _plain(x, w_ih, w_hh, aff, dom)[0])
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_op_one_row_float32_small_gemm():
    # online / per-video batches: N = 1 takes the vectorised small-GEMM path
    x, w_ih, w_hh, aff, _ = _op_args(t=5, n=1, d=7, hid=24, dtype=torch.float32)
    for dom in (torch.tensor([0]), torch.tensor([1])):
        got = dl.ddlstm_layer_eval(x, w_ih, w_hh, aff, dom)
        ref = _plain(x.double(), w_ih.double(), w_hh.double(),
                     dl.EvalAffine(*(a.double() for a in aff)), dom)
        torch.testing.assert_close(got[0].double(), ref[0], rtol=1e-4, atol=1e-5)


def test_op_large_rows_threaded_float32():
    # enough rows for several parallel tasks and the BLAS GEMM path; float32 vectorised kernel
    x, w_ih, w_hh, aff, _ = _op_args(t=3, n=5, d=16, hid=40, dtype=torch.float32)
    x = torch.randn(3, 300, 16)
    dom = torch.randint(0, 2, (300,))
    got = dl.ddlstm_layer_eval(x, w_ih, w_hh, aff, dom)
    ref = _plain(x.double(), w_ih.double(), w_hh.double(),
                 dl.EvalAffine(*(a.double() for a in aff)), dom)
    torch.testing.assert_close(got[0].double(), ref[0], rtol=1e-4, atol=1e-5)


def test_eval_affine_folds_batch_norm():
    g = torch.Generator().manual_seed(3)
    z = torch.randn(2, 3, 8, generator=g, dtype=torch.float64)
    m, v = torch.randn(2, 3, 8, generator=g, dtype=torch.float64), torch.rand(2, 3, 8, generator=g, dtype=torch.float64)
    gam, bet = torch.randn(8, generator=g, dtype=torch.float64), torch.randn(8, generator=g, dtype=torch.float64)
    zc, mc, vc = z[0, :, :2], m[0, :, :2], v[0, :, :2]
    aff = dl.eval_affine(m, v, gam, bet, m, v, gam, bet, torch.zeros(8, dtype=torch.float64),
                         mc, vc, gam[:2], bet[:2], 1e-5)
    bn = (z - m) / torch.sqrt(v + 1e-5) * gam + bet
    torch.testing.assert_close(z * aff.scale_x + z * aff.scale_h + aff.shift, 2 * bn)
    torch.testing.assert_close(zc * aff.scale_c + aff.shift_c,
                               (zc - mc) / torch.sqrt(vc + 1e-5) * gam[:2] + bet[:2])


def test_opcheck_eval():
    x, w_ih, w_hh, aff, dom = _op_args()
    torch.library.opcheck(torch.ops.actrec.ddlstm_layer_eval,
                          (x, w_ih, w_hh, *aff, dom, None, None),
                          test_utils=("test_schema", "test_faketensor"))


def test_bad_input_is_a_config_error():
    x, w_ih, w_hh, aff, dom = _op_args()
    with pytest.raises(ConfigError, match="domain flags must be 0 or 1"):
        dl.ddlstm_layer_eval(x, w_ih, w_hh, aff, torch.tensor([0, 1, 2, 0, 1]))
    with pytest.raises(ConfigError, match=r"scale_x, scale_h and shift must be \[2, S, 4H\]"):
        dl.ddlstm_layer_eval(x, w_ih, w_hh, aff._replace(scale_x=aff.scale_x[:, :2]), dom)
