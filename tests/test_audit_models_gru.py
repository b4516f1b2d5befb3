"""Audit of the ``gru`` model against Borg & Camilleri (ICASSP 2019) and their released Keras
model: the parameter counts of their Table 3, Keras 2's GRU cell worked by hand (hard-sigmoid
gates, one bias per gate, reset before the recurrent product), and where the "GRU dropout"
acts (each layer's input, as ``GRU(dropout=0.3)``, not its state)."""

from __future__ import annotations

import math

import pytest
import torch

from actrec.nn.gru import DropoutGRU, hard_sigmoid
from actrec_plugins.models.borg_camilleri import GRUModel

DT = torch.float64


def _trainable(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("layers, expected", [(1, 3_360_259), (2, 3_754_243), (3, 4_148_227)])
def test_parameter_counts_are_table_3s(layers, expected):
    """Table 3 (GRU rows, 256 units, VGG-16 fc1 codes of 4096, 3 classes): 3 (D H + H H + H)
    per layer, batch norm's 2 x 256, Dense 64 and Dense 3. torch's two biases per gate would
    add 768 per layer."""
    cfg = GRUModel.Config.from_options({"layers": str(layers)}, owner="model 'gru'")
    model = GRUModel(cfg).build(4096, 3)
    assert _trainable(model) == expected


def test_hard_sigmoid_is_keras_2s():
    v = torch.tensor([-3.0, -2.5, -1.0, 0.0, 0.4, 2.5, 9.0], dtype=DT)
    assert hard_sigmoid(v).tolist() == pytest.approx([0.0, 0.0, 0.3, 0.5, 0.58, 1.0, 1.0])


def test_keras_gru_cell_by_hand():
    """One unit, one input, two steps, numbers worked by hand with Keras 2's formulas."""
    gru = DropoutGRU(1, 1, 1).double().eval()
    with torch.no_grad():
        gru.weight_ih_l0.copy_(torch.tensor([[0.5], [-1.0], [2.0]], dtype=DT))  # z, r, h
        gru.weight_hh_l0.copy_(torch.tensor([[1.0], [0.5], [-0.5]], dtype=DT))
        gru.bias_l0.copy_(torch.tensor([0.1, 0.2, -0.3], dtype=DT))
    out = gru(torch.tensor([[[1.0]], [[2.0]]], dtype=DT))[:, 0, 0]

    def hs(v):
        return min(1.0, max(0.0, 0.2 * v + 0.5))

    z1, r1 = hs(0.5 + 0.1), hs(-1.0 + 0.2)  # 0.62, 0.34 (h0 = 0)
    h1 = (1 - z1) * math.tanh(2.0 - 0.3)
    z2, r2 = hs(1.0 + 0.1 + 1.0 * h1), hs(-2.0 + 0.2 + 0.5 * h1)
    h2 = z2 * h1 + (1 - z2) * math.tanh(4.0 - 0.3 - 0.5 * (r2 * h1))  # reset BEFORE U_h
    assert (z1, r1) == pytest.approx((0.62, 0.34))
    assert out.tolist() == pytest.approx([h1, h2], rel=1e-14)
    assert h1 == pytest.approx(0.38 * 0.9354090706030991, rel=1e-14)


def test_keras_initialisation():
    torch.manual_seed(0)
    gru = DropoutGRU(40, 8, 2)
    bound = math.sqrt(6 / (40 + 24))  # Glorot over the whole [3H, D] kernel
    assert gru.weight_ih_l0.abs().max() <= bound and gru.weight_ih_l0.abs().max() > 0.9 * bound
    u = gru.weight_hh_l1.detach()  # [3H, H]: orthogonal columns
    torch.testing.assert_close(u.T @ u, torch.eye(8), atol=1e-5, rtol=0)
    assert not gru.bias_l0.any() and not gru.bias_l1.any()


def test_gru_dropout_acts_on_the_input_not_the_state():
    """With a zero input and non-zero biases the state moves, but an input dropout has nothing
    to drop: training equals evaluation exactly. (A dropout on the state would not.)"""
    gru = DropoutGRU(3, 6, 1, dropout=0.5).double()
    with torch.no_grad():
        gru.bias_l0.copy_(torch.linspace(-1, 1, 18, dtype=DT))
    x0 = torch.zeros(5, 4, 3, dtype=DT)
    torch.manual_seed(0)
    assert torch.equal(gru.train()(x0), gru.eval()(x0))
    x = torch.randn(5, 4, 3, dtype=DT)
    torch.manual_seed(0)
    assert not torch.allclose(gru.train()(x), gru.eval()(x))


def test_gru_input_masks_are_per_sequence_and_constant_over_time():
    """Recurrent weights 0 and a constant input: z and the candidate are then constant in
    time per unit, so h_t = cand (1 - z^(t+1)) exactly when the input masks stay fixed; the
    masks differ between sequences (same input, different outputs)."""
    gru = DropoutGRU(16, 5, 1, dropout=0.5).double()
    with torch.no_grad():
        gru.weight_hh_l0.zero_()
        gru.bias_l0.fill_(0.3)  # the candidate is tanh(0.3) != 0 even with every input dropped
        gru.weight_ih_l0.mul_(0.2)  # gates inside (0, 1): hard_sigmoid does not clip
    x = torch.linspace(0.5, 2.0, 16, dtype=DT).expand(6, 8, 16)  # T=6, N=8, same row everywhere
    torch.manual_seed(3)
    out = gru.train()(x)  # [6, 8, 5]
    z = out[1] / out[0] - 1  # h_2 / h_1 = 1 + z
    cand = out[0] / (1 - z)
    for t in range(6):
        torch.testing.assert_close(out[t], cand * (1 - z ** (t + 1)), rtol=1e-10, atol=1e-12)
    assert len({tuple(row.tolist()) for row in out[-1]}) == 8


def test_weights_of_the_earlier_torch_cell_are_refused_with_a_reason():
    gru = DropoutGRU(3, 4, 1)
    old = {"weight_ih_l0": torch.zeros(12, 3), "weight_hh_l0": torch.zeros(12, 4),
           "bias_ih_l0": torch.zeros(12), "bias_hh_l0": torch.zeros(12)}
    with pytest.raises(RuntimeError, match="torch-style GRU cell"):
        gru.load_state_dict(old)


def test_batch_norm_uses_keras_defaults():
    model = GRUModel(GRUModel.Config()).build(10, 3)
    assert (model.norm.eps, model.norm.momentum) == (1e-3, 0.01)
