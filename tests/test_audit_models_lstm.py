"""Audit of the ``lstm`` model against the Recurrent Assistance paper (Perrett & Damen, ICCVW
2017, Sec. 4): its LSTM is Greff et al.'s "vanilla" cell, peephole connections included
(``-o peepholes=true``). Worked by hand, equal to torch's LSTM with the peepholes at zero, and
stepped online like its whole-sequence forward."""

from __future__ import annotations

import math

import pytest
import torch

from actrec.nn.peephole import PeepholeLSTM
from actrec_plugins.models.lstm import LSTMModel

DT = torch.float64


def _sig(v: float) -> float:
    return 1 / (1 + math.exp(-v))


def test_peephole_cell_by_hand():
    lstm = PeepholeLSTM(1, 1).double()
    with torch.no_grad():
        lstm.weight_ih_l0.copy_(torch.tensor([[0.5], [-0.25], [1.0], [0.75]], dtype=DT))
        lstm.weight_hh_l0.copy_(torch.tensor([[0.1], [0.2], [-0.3], [0.4]], dtype=DT))
        lstm.bias_ih_l0.copy_(torch.tensor([0.0, 1.0, 0.0, -0.5], dtype=DT))
        lstm.bias_hh_l0.zero_()
        lstm.peep_i_l0.fill_(0.6)
        lstm.peep_f_l0.fill_(-0.7)
        lstm.peep_o_l0.fill_(0.8)
    out, (h_n, c_n) = lstm(torch.tensor([[[1.0]], [[-2.0]]], dtype=DT))
    h, c, expected = 0.0, 0.0, []
    for x in (1.0, -2.0):
        i = _sig(0.5 * x + 0.1 * h + 0.6 * c)
        f = _sig(-0.25 * x + 1.0 + 0.2 * h - 0.7 * c)
        c = f * c + i * math.tanh(1.0 * x - 0.3 * h)
        o = _sig(0.75 * x - 0.5 + 0.4 * h + 0.8 * c)  # the output gate sees the NEW cell
        h = o * math.tanh(c)
        expected.append(h)
    assert out[:, 0, 0].tolist() == pytest.approx(expected, rel=1e-14)
    assert (h_n.item(), c_n.item()) == pytest.approx((h, c), rel=1e-14)


def test_zero_peepholes_are_torchs_lstm():
    torch.manual_seed(0)
    lstm = PeepholeLSTM(3, 5, 2).double()
    with torch.no_grad():
        for k in range(2):
            for g in "ifo":
                getattr(lstm, f"peep_{g}_l{k}").zero_()
    ref = torch.nn.LSTM(3, 5, 2).double()
    ref.load_state_dict({k: v for k, v in lstm.state_dict().items() if "peep" not in k})
    x = torch.randn(6, 4, 3, dtype=DT)
    out, (h, c) = lstm(x)
    rout, (rh, rc) = ref(x)
    for a, b in ((out, rout), (h, rh), (c, rc)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_the_plugin_option_builds_it_and_steps_online_like_forward():
    cfg = LSTMModel.Config.from_options({"hidden": "5", "layers": "2", "peepholes": "true"},
                                        owner="model 'lstm'")
    torch.manual_seed(0)
    model = LSTMModel(cfg).build(3, 4).double().eval()
    plain = LSTMModel(LSTMModel.Config.from_options({"hidden": "5", "layers": "2"})).build(3, 4)
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params == sum(p.numel() for p in plain.parameters()) + 2 * 3 * 5  # 3 H per layer
    assert isinstance(model.rnn, PeepholeLSTM) and not LSTMModel.Config().peepholes
    x = torch.randn(7, 2, 3, dtype=DT)
    domain = torch.zeros(2, dtype=torch.long)
    with torch.no_grad():
        whole = model(x, domain)
        state = model.init_state(2, domain)
        steps = []
        for t in range(7):
            logits, state = model.step(x[t], state)
            steps.append(logits)
    torch.testing.assert_close(torch.stack(steps), whole, rtol=1e-12, atol=1e-12)


def _reference(lstm: PeepholeLSTM, x, h0, c0):
    """The peephole LSTM stepped with plain autograd (the formulas of actrec.nn.peephole)."""
    H = lstm.hidden_size
    hs, cs = [], []
    for k in range(lstm.num_layers):
        g = {n: getattr(lstm, f"{n}_l{k}") for n in
             ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "peep_i", "peep_f", "peep_o")}
        h, c, out = h0[k], c0[k], []
        for t in range(x.shape[0]):
            a = x[t] @ g["weight_ih"].T + g["bias_ih"] + g["bias_hh"] + h @ g["weight_hh"].T
            i = torch.sigmoid(a[:, :H] + g["peep_i"] * c)
            f = torch.sigmoid(a[:, H:2 * H] + g["peep_f"] * c)
            c = f * c + i * torch.tanh(a[:, 2 * H:3 * H])
            h = torch.sigmoid(a[:, 3 * H:] + g["peep_o"] * c) * torch.tanh(c)
            out.append(h)
        x = torch.stack(out)
        hs.append(h)
        cs.append(c)
    return x, (torch.stack(hs), torch.stack(cs))


def test_the_hand_written_backward_equals_autograd_and_passes_gradcheck():
    from actrec.nn.peephole import PeepholeSequence

    torch.manual_seed(0)
    lstm = PeepholeLSTM(3, 4, 2).double()
    x = torch.randn(7, 5, 3, dtype=DT, requires_grad=True)
    h0 = torch.randn(2, 5, 4, dtype=DT, requires_grad=True)
    c0 = torch.randn(2, 5, 4, dtype=DT, requires_grad=True)
    w = torch.randn(7, 5, 4, dtype=DT)
    w[4:, 1] = 0  # a row whose later outputs the loss does not use
    grads = []
    for run in (lambda: lstm(x, (h0, c0)), lambda: _reference(lstm, x, h0, c0)):
        out, (h_n, c_n) = run()
        loss = (out * w).sum() + (c_n ** 2).sum() + 0.5 * h_n.sum()
        params = [x, h0, c0, *lstm.parameters()]
        grads.append(torch.autograd.grad(loss, params))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    gx = torch.randn(4, 3, 8, dtype=DT, requires_grad=True)
    args = [gx] + [torch.randn(s, dtype=DT, requires_grad=True)
                   for s in ((8, 2), (2,), (2,), (2,), (3, 2), (3, 2))]
    assert torch.autograd.gradcheck(PeepholeSequence.apply, args)
