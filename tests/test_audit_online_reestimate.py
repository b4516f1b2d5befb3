"""Re-estimating batch-norm statistics (``actrec.nn.reestimate``) replaces them only where its
batches say something: a domain the batches do not hold (a transfer run's pre-training
dataset, re-estimated on fine-tuning batches) and timesteps no window reaches keep what
training left, never mean 0 / variance 1 (which evaluated that dataset through statistics of
no data: its accuracy moved by 19 points on a toy transfer run)."""

from __future__ import annotations

import torch

from actrec.nn.models import GRUClassifier, NormLSTMClassifier
from actrec.nn.reestimate import reestimate_statistics

DT = torch.float64


def _trained_ddlstm() -> NormLSTMClassifier:
    """A DDLSTM whose running statistics hold training momentum averages of both domains."""
    torch.manual_seed(0)
    model = NormLSTMClassifier(3, 4, hidden=5, layers=2, max_len=4, dual=True).double()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for _ in range(3):  # two-domain batches: rows 0-1 D1, rows 2-3 D2 (shifted data)
            x = torch.randn(4, 4, 3, generator=g, dtype=DT)
            x[:, 2:] = 3 * x[:, 2:] + 2
            model(x, torch.tensor([0, 0, 1, 1]))
    return model


def _norms(model):
    return [bn for layer in model.rnn.layers for bn in layer.norms()]


def test_a_domain_the_batches_do_not_hold_keeps_its_training_statistics():
    model = _trained_ddlstm()
    before = [(bn.running_mean.clone(), bn.running_var.clone()) for bn in _norms(model)]
    assert all(not torch.equal(m[1], torch.zeros_like(m[1])) for m, _ in before[:2])
    g = torch.Generator().manual_seed(2)
    d1_only = [(torch.randn(4, 3, 3, generator=g, dtype=DT), torch.zeros(3, dtype=torch.long))
               for _ in range(2)]
    assert reestimate_statistics(model, d1_only) == 2
    for bn, (mean, var) in zip(_norms(model), before):
        if bn.running_mean.dim() == 3:  # DDBN [2, T, C]: D2's slot is untouched, D1's is new
            assert torch.equal(bn.running_mean[1], mean[1])
            assert torch.equal(bn.running_var[1], var[1])
            assert not torch.equal(bn.running_mean[0], mean[0])
        else:  # the plain batch norm of the cell: re-estimated on the batches
            assert not torch.equal(bn.running_mean, mean)


def test_timesteps_no_window_reaches_keep_their_statistics_and_others_are_exact():
    model = _trained_ddlstm()
    bn_c = model.rnn.layers[0].bn_c  # plain per-timestep batch norm, trained on 4 timesteps
    old_mean, old_var = bn_c.running_mean.clone(), bn_c.running_var.clone()
    g = torch.Generator().manual_seed(3)
    x = torch.randn(4, 2, 3, generator=g, dtype=DT)
    mask = torch.tensor([[1, 1], [1, 1], [0, 0], [0, 0]]).bool()  # windows end at t = 1
    reestimate_statistics(model, [(x, torch.zeros(2, dtype=torch.long), mask)])
    assert torch.equal(bn_c.running_mean[2:], old_mean[2:])
    assert torch.equal(bn_c.running_var[2:], old_var[2:])
    assert not torch.equal(bn_c.running_mean[:2], old_mean[:2])


def test_no_batch_or_a_failing_batch_leaves_every_statistic_as_it_was():
    model = _trained_ddlstm()
    gru = GRUClassifier(3, 4, hidden=5, layers=1, fc=6).double()
    with torch.no_grad():
        gru(torch.randn(3, 2, 3, dtype=DT) + 1, torch.zeros(2, dtype=torch.long))
    for m in (model, gru):
        stats = {k: v.clone() for k, v in m.state_dict().items() if "running" in k}
        assert reestimate_statistics(m, []) == 0
        assert all(torch.equal(m.state_dict()[k], v) for k, v in stats.items())

        def failing():
            yield torch.randn(3, 2, 3, dtype=DT), torch.zeros(2, dtype=torch.long)
            raise RuntimeError("disk gone")

        try:
            reestimate_statistics(m, failing())
        except RuntimeError:
            pass
        assert all(torch.equal(m.state_dict()[k], v) for k, v in stats.items())
