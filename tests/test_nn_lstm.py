"""DDLSTM / BNLSTM layers and stacks: against torch.nn.LSTM, against the cell equations written
out here, DDLSTM on one domain == BNLSTM, alpha learns and stays in range."""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from actrec.nn.lstm import BNLSTM, DDLSTM, NormLSTMLayer
from actrec.nn.models import NormLSTMClassifier
from actrec.ops.ddbn_reference import bn_reference, ddbn_reference

DT = torch.float64


def _fused_available():
    from actrec.ops.ddlstm_layer import fused_layer_available

    return fused_layer_available(torch.zeros(1, 1, 1, dtype=DT))


def _x(T=5, N=6, D=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(T, N, D, generator=g, dtype=DT)


def test_parameter_names_and_shapes():
    layer = NormLSTMLayer(5, 3, 7, dual=True)
    shapes = {k: tuple(v.shape) for k, v in layer.named_parameters()}
    assert shapes == {
        "weight_ih": (12, 5), "weight_hh": (12, 3), "bias": (12,), "alpha": (2,),
        "bn_x.weight": (12,), "bn_x.bias": (12,), "bn_h.weight": (12,), "bn_h.bias": (12,),
        "bn_c.weight": (3,), "bn_c.bias": (3,),
    }
    assert layer.bn_x.running_mean.shape == (2, 7, 12) and layer.bn_c.running_mean.shape == (7, 3)
    assert layer.alpha.tolist() == [0.75, 0.75]
    assert layer.bias[3:6].tolist() == [1.0] * 3 and layer.bias[:3].tolist() == [0.0] * 3
    assert "alpha" not in dict(NormLSTMLayer(5, 3, 7, dual=False).named_parameters())


def test_identity_norms_reduce_to_torch_lstm():
    # Fresh running stats (0, 1) and gamma = sqrt(1 + eps), beta = 0 make every BN the identity
    # in eval mode: the BNLSTM must then be exactly an LSTM.
    torch.manual_seed(0)
    net = BNLSTM(4, 3, num_layers=2, max_len=3).double().eval()
    ref = torch.nn.LSTM(4, 3, 2).double()
    with torch.no_grad():
        for k, layer in enumerate(net.layers):
            for bn in (layer.bn_x, layer.bn_h, layer.bn_c):
                bn.weight.fill_(math.sqrt(1 + 1e-5))
            getattr(ref, f"weight_ih_l{k}").copy_(layer.weight_ih)
            getattr(ref, f"weight_hh_l{k}").copy_(layer.weight_hh)
            getattr(ref, f"bias_ih_l{k}").copy_(layer.bias)
            getattr(ref, f"bias_hh_l{k}").zero_()
    x = _x()
    torch.testing.assert_close(net(x, torch.zeros(6, dtype=torch.long)), ref(x)[0], rtol=1e-12, atol=1e-12)


def _cell_equations(layer, x, n1, mask=None):
    """A training-mode DDLSTM layer written out from the spec with the reference ops."""
    H = layer.hidden_size
    alpha = layer.alpha
    gx, _, _ = ddbn_reference(x @ layer.weight_ih.T, alpha, n1, layer.bn_x.weight, layer.bn_x.bias,
                              mask=mask)
    h = c = torch.zeros(x.shape[1], H, dtype=x.dtype)
    out = []
    for t in range(x.shape[0]):
        m = None if mask is None else mask[t : t + 1]
        gh, _, _ = ddbn_reference((h @ layer.weight_hh.T)[None], alpha, n1, layer.bn_h.weight,
                                  layer.bn_h.bias, mask=m)
        gates = gh[0] + gx[t] + layer.bias
        i, f, g, o = gates[:, :H], gates[:, H : 2 * H], gates[:, 2 * H : 3 * H], gates[:, 3 * H :]
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        bc, _, _ = bn_reference(c[None], layer.bn_c.weight, layer.bn_c.bias, mask=m)
        h = torch.sigmoid(o) * torch.tanh(bc[0])
        out.append(h)
    return torch.stack(out)


def _dual_layer(fused: bool) -> NormLSTMLayer:
    """A float64 DDLSTM layer (D=4, H=3, max_len 8) with alphas (0.6, 0.8), fused or not."""
    torch.manual_seed(1)
    layer = NormLSTMLayer(4, 3, 8, dual=True).double()
    layer.fused = fused
    with torch.no_grad():
        layer.alpha.copy_(torch.tensor([0.6, 0.8]))
    return layer


@pytest.mark.parametrize("fused", [False, True], ids=["per_step", "fused"])
def test_training_forward_matches_cell_equations_and_gradcheck(fused):
    if fused and not _fused_available():
        pytest.skip("the fused DDLSTM layer op is not built here")
    layer = _dual_layer(fused)
    with torch.no_grad():
        for bn in (layer.bn_x, layer.bn_h, layer.bn_c):
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.5, 0.5)
    x = _x()
    domain = torch.tensor([0, 0, 0, 1, 1, 1])
    torch.testing.assert_close(layer(x, domain), _cell_equations(layer, x, 3), rtol=1e-12, atol=1e-12)

    small = NormLSTMLayer(2, 2, 3, dual=True).double()
    small.fused = fused
    with torch.no_grad():
        small.alpha.copy_(torch.tensor([0.6, 0.7]))
    xs = _x(T=3, N=4, D=2, seed=2).requires_grad_()
    d = torch.tensor([0, 0, 1, 1])
    params = [xs, small.alpha, small.weight_hh, small.bn_h.weight]
    assert torch.autograd.gradcheck(lambda *_: small(xs, d), params, eps=1e-6, atol=1e-6)


def _copy_params(src, dst):
    with torch.no_grad():
        for (name, p), (name2, q) in zip(src.named_parameters(), dst.named_parameters()):
            assert name == name2
            q.copy_(p)


def test_ddlstm_on_one_domain_equals_bnlstm():
    # Exactly equal with the reference op; the fused DDBN kernel may differ in the last bits.
    def close(a, b):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-13)

    torch.manual_seed(2)
    dd = NormLSTMClassifier(4, 5, hidden=3, layers=2, max_len=4, dual=True).double()
    bn = NormLSTMClassifier(4, 5, hidden=3, layers=2, max_len=4, dual=False).double()
    with torch.no_grad():
        for layer in dd.rnn.layers:
            layer.alpha.copy_(torch.tensor([0.9, 0.6]))  # unused with one domain
    dd_params = [(k, v) for k, v in dd.named_parameters() if not k.endswith("alpha")]
    with torch.no_grad():
        for (k, p), (k2, q) in zip(dd_params, bn.named_parameters()):
            assert k == k2
            q.copy_(p)
    for seed, dom in [(0, 0), (1, 0), (2, 0)]:
        x = _x(T=6, seed=seed)  # T > max_len: the extra steps must not break anything
        domain = torch.full((6,), dom, dtype=torch.long)
        close(dd(x, domain), bn(x, domain))
    for a, b in zip(dd.rnn.layers, bn.rnn.layers):
        close(a.bn_x.running_mean[0], b.bn_x.running_mean)
        close(a.bn_h.running_var[0], b.bn_h.running_var)
        close(a.bn_c.running_var, b.bn_c.running_var)
        assert (a.bn_x.running_mean[1] == 0).all()  # D2's slots untouched by D1-only batches
        assert (a.bn_x.running_var[1] == 1).all()
    dd.eval(), bn.eval()
    x = _x(T=7, seed=9)
    zeros = torch.zeros(6, dtype=torch.long)
    close(dd(x, zeros), bn(x, zeros))
    # An all-D2 training batch (n1 = 0) is plain batch norm too.
    dd.train(), bn.train()
    ones = torch.ones(6, dtype=torch.long)
    close(dd(x, ones), bn(x, ones))


def test_alpha_learns_on_two_domain_data_and_stays_in_range():
    torch.manual_seed(3)
    T, n1, n2, D, K = 6, 4, 4, 3, 2
    model = NormLSTMClassifier(D, K, hidden=4, layers=2, max_len=T, dual=True)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    domain = torch.tensor([0] * n1 + [1] * n2)
    start = torch.stack([layer.alpha.detach().clone() for layer in model.rnn.layers])
    for it in range(5):
        g = torch.Generator().manual_seed(it)
        x = torch.randn(T, n1 + n2, D, generator=g)
        x[:, n1:] += 4.0  # D2 has a different mean per channel
        y = torch.randint(0, K, (T, n1 + n2), generator=g)
        loss = torch.nn.functional.cross_entropy(model(x, domain).reshape(-1, K), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        for layer in model.rnn.layers:
            assert layer.alpha.grad is not None and layer.alpha.grad.abs().sum() > 0
        opt.step()
        model.after_optimizer_step()
        for layer in model.rnn.layers:
            assert (layer.alpha >= 0.5 - 1e-7).all() and (layer.alpha <= 1.0).all()
    end = torch.stack([layer.alpha.detach() for layer in model.rnn.layers])
    assert (end - start).abs().max() > 1e-4


def test_stack_shapes():
    net = DDLSTM(4)
    assert [tuple(layer.weight_ih.shape) for layer in net.layers] == [(512, 4), (512, 128), (512, 128)]
    out = net(torch.randn(3, 4, 4), torch.tensor([0, 0, 1, 1]))
    assert out.shape == (3, 4, 128)


def _lengths_mask(lengths, T):
    return torch.arange(T)[:, None] < torch.tensor(lengths)[None]  # [T, N]


@pytest.mark.parametrize("fused", [False, True], ids=["per_step", "fused"])
def test_masked_training_forward_matches_cell_equations(fused):
    # D1 rows end after 3, 2, 2 frames: from t = 3 on D1 has no real frame, so its (domain, t)
    # running slots must stay as they were, while D2's are updated.
    if fused and not _fused_available():
        pytest.skip("the fused DDLSTM layer op is not built here")
    layer = _dual_layer(fused)
    x = _x(T=6)
    mask = _lengths_mask([3, 2, 2, 6, 5, 6], 6)
    domain = torch.tensor([0, 0, 0, 1, 1, 1])
    out = layer(x, domain, mask)
    torch.testing.assert_close(out[mask], _cell_equations(layer, x, 3, mask)[mask],
                               rtol=1e-12, atol=1e-12)
    for bn in (layer.bn_x, layer.bn_h):
        assert (bn.running_mean[0, 3:] == 0).all() and (bn.running_var[0, 3:] == 1).all()
        assert (bn.running_var[0, :3] != 1).all() and (bn.running_var[1, :6] != 1).all()
        assert (bn.running_var[:, 6:] == 1).all()
        assert bn.trained_len.tolist() == [3, 6]  # D1's rows end at t = 2, D2's at t = 5


def test_eval_past_the_trained_length_uses_the_last_trained_slot():
    # Trained on T = 8 windows with max_len = 32: slots 8..31 hold only their initial
    # statistics and must never be used. Evaluating T = 40 must equal a max_len = 8 model with
    # the same weights and statistics (which uses slot 7 for every t >= 7).
    torch.manual_seed(5)
    long = NormLSTMClassifier(3, 4, hidden=3, layers=2, max_len=32, dual=True).double()
    opt = torch.optim.SGD(long.parameters(), lr=0.1)
    domain = torch.tensor([0, 0, 0, 1, 1, 1])
    for it in range(3):
        x = _x(T=8, N=6, D=3, seed=it)
        loss = long(x, domain).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        long.after_optimizer_step()
    norms = [m for m in long.modules() if hasattr(m, "trained_len")]
    assert len(norms) == 6 and all((m.trained_len == 8).all() for m in norms)
    short = NormLSTMClassifier(3, 4, hidden=3, layers=2, max_len=8, dual=True).double()
    short.load_state_dict({
        k: v[..., :8, :] if k.endswith(("running_mean", "running_var")) else v
        for k, v in long.state_dict().items()
    })
    long.eval(), short.eval()
    x = _x(T=40, N=6, D=3, seed=9)
    mixed = torch.tensor([1, 0, 0, 1, 0, 1])
    with torch.no_grad():
        want = short(x, mixed)
        assert torch.equal(long(x, mixed), want)
        state = long.init_state(6, mixed)
        for t in range(40):  # stepping picks the same slots
            logits, state = long.step(x[t], state)
            torch.testing.assert_close(logits, want[t], rtol=1e-12, atol=1e-13)


class _ElementCount(TorchDispatchMode):
    """Counts the elements every aten op writes (its outputs; views write nothing)."""

    def __init__(self):
        super().__init__()
        self.elements = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if not func.is_view:
            self.elements += sum(t.numel() for t in tree_leaves(out) if isinstance(t, torch.Tensor))
        return out


def _elements_touched(max_len, mode):
    torch.manual_seed(0)
    layer = NormLSTMLayer(3, 2, max_len, dual=True).double()
    layer.fused = False
    x, domain = _x(T=4, N=4, D=3), torch.tensor([0, 0, 1, 1])
    mask = _lengths_mask([4, 3, 4, 2], 4)
    layer(x, domain, mask)  # trained_len 4, so every mode below works on the same slots
    if mode == "eval_step":
        layer.eval()
    for bn in layer.norms():
        bn.cumulative = mode == "reestimate"
    with _ElementCount() as count:
        if mode == "eval_step":
            state = layer.zero_state(4, x)
            for t in range(4):
                state = layer.step(x[t], state, t, domain)
        else:
            layer(x, domain, mask)
    return count.elements


@pytest.mark.parametrize("mode", ["train", "reestimate", "eval_step"])
def test_per_step_statistics_work_does_not_grow_with_max_len(mode):
    # Each step may touch only its own statistics slot (O(C)): no op may copy or write the
    # rest of the [.., max_len, C] running buffers, so the work is the same for any max_len.
    assert _elements_touched(4, mode) == _elements_touched(4000, mode)


@pytest.mark.parametrize("dual,n1", [(True, 3), (True, 6), (True, 0), (False, 3)])
def test_fused_layer_path_equals_per_step_path(dual, n1):
    if not _fused_available():
        pytest.skip("the fused DDLSTM layer op is not built here")
    torch.manual_seed(4)
    a = NormLSTMLayer(4, 3, 4, dual=dual).double()
    b = NormLSTMLayer(4, 3, 4, dual=dual).double()
    b.load_state_dict(a.state_dict())
    b.fused = False
    if dual:
        with torch.no_grad():
            a.alpha.copy_(torch.tensor([0.7, 0.9]))
            b.alpha.copy_(a.alpha)
    domain = torch.tensor([0] * n1 + [1] * (6 - n1))
    if not dual:
        domain = torch.tensor([1, 0, 1, 0, 0, 1])  # plain BN ignores domains: any order
    masks = [None, _lengths_mask([6, 2, 5, 6, 3, 1], 6)]  # the second: with padding
    for seed in range(2):
        x = _x(T=6, seed=seed)  # T > max_len
        ya, yb = a(x, domain, masks[seed]), b(x, domain, masks[seed])
        torch.testing.assert_close(ya, yb, rtol=1e-11, atol=1e-12)
        (ya**2).sum().backward()
        (yb**2).sum().backward()
    for (name, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-10, atol=1e-12, msg=name)
    for (name, p), (_, q) in zip(a.named_buffers(), b.named_buffers()):
        torch.testing.assert_close(p, q, rtol=1e-11, atol=1e-12, msg=name)


def test_domain_flags_are_checked_where_sequences_enter_not_at_every_step():
    """One rule (only 0/1) for eval, checked once: by init_state before stepping and by an
    eval-mode forward; the per-step ops then trust the flags (no host sync per step)."""
    from actrec.nn.models import NormLSTMClassifier

    model = NormLSTMClassifier(4, 3, hidden=5, layers=2, max_len=6).eval()
    x = torch.randn(3, 2, 4)
    for bad in ([0, 2], [-1, 0]):
        with pytest.raises(ValueError, match=r"domain flags must be 0 \(D1\) or 1 \(D2\)"):
            model.init_state(2, torch.tensor(bad))
        with pytest.raises(ValueError, match=r"domain flags must be 0 \(D1\) or 1 \(D2\)"):
            model(x, torch.tensor(bad))
    state = model.init_state(2, torch.tensor([0, 1]))
    stepped = []
    for t in range(3):
        logits, state = model.step(x[t], state)
        stepped.append(logits)
    torch.testing.assert_close(torch.stack(stepped), model(x, torch.tensor([0, 1])))
