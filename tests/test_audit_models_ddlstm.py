"""Audit of the ``ddlstm``/``bnlstm`` defaults against the DDLSTM paper (Sec. 3 and 5) and
``ddbn.md``: 3 layers of 128 units, alphas 0.75, momentum 0.1, eps 1e-5, batch-norm scale 0.1
and offset 0; and ``-o norm_affine=fixed`` keeps the scale and offset at those values through
training, as the paper writes they are "in practice" (Sec. 3), while the default learns them."""

from __future__ import annotations

import pytest
import torch

from actrec.errors import ConfigError
from actrec.train import optimizer_groups
from actrec_plugins.models.ddlstm import BNLSTMModel, DDLSTMModel


def _norms(model):
    return [bn for layer in model.rnn.layers for bn in layer.norms()]


def test_defaults_are_the_papers():
    c = DDLSTMModel.Config()
    assert (c.hidden, c.layers, c.alpha_init, c.momentum, c.eps) == (128, 3, 0.75, 0.1, 1e-5)
    assert c.norm_affine == "learned" and BNLSTMModel.Config().norm_affine == "learned"
    model = DDLSTMModel(DDLSTMModel.Config(max_len=200)).build(48, 48 + 52)
    assert len(model.rnn.layers) == 3 and model.rnn.hidden_size == 128
    for layer in model.rnn.layers:
        assert layer.alpha.tolist() == [0.75, 0.75]
        # forget-gate bias 1 (gate order i, f, g, o), every other bias 0
        assert layer.bias[128:256].eq(1).all() and layer.bias[:128].eq(0).all()
        assert layer.bias[256:].eq(0).all()
    for bn in _norms(model):
        assert bn.weight.eq(0.1).all() and bn.bias.eq(0).all()
        assert (bn.momentum, bn.eps, bn.max_len) == (0.1, 1e-5, 200)


@pytest.mark.parametrize("plugin", [DDLSTMModel, BNLSTMModel], ids=["ddlstm", "bnlstm"])
@pytest.mark.parametrize("affine", ["learned", "fixed"])
def test_fixed_norm_affine_keeps_gamma_and_beta_through_training(plugin, affine):
    cfg = plugin.Config.from_options({"hidden": "4", "layers": "2", "max_len": "6",
                                      "norm_affine": affine}, owner=f"model '{plugin.name}'")
    torch.manual_seed(0)
    model = plugin(cfg).build(3, 5).double().train()
    start = [(bn.weight.clone(), bn.bias.clone()) for bn in _norms(model)]
    assert all(w.eq(torch.tensor(0.1, dtype=torch.float32).double()).all() and not b.any()
               for w, b in start)
    opt = torch.optim.SGD(optimizer_groups(model, 0.0, lr=0.5), lr=0.5)
    x = torch.randn(6, 4, 3, dtype=torch.float64)
    domain = torch.tensor([0, 0, 1, 1])
    y = torch.randint(0, 5, (6, 4))
    for _ in range(2):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x, domain).reshape(-1, 5), y.reshape(-1)).backward()
        opt.step()
        model.after_optimizer_step()
    moved = [not (torch.equal(bn.weight, w) and torch.equal(bn.bias, b))
             for bn, (w, b) in zip(_norms(model), start)]
    assert all(moved) if affine == "learned" else not any(moved)
    assert model.head.weight.grad is not None  # the rest trains either way


def test_norm_affine_must_be_a_known_value():
    with pytest.raises(ConfigError, match="'norm_affine' must be one of learned, fixed"):
        DDLSTMModel.Config.from_options({"norm_affine": "frozen"}, owner="model 'ddlstm'")
