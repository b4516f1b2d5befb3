"""DualDomainBatchNorm / SequenceBatchNorm modules, alpha projection, statistics re-estimation."""

from __future__ import annotations

import pytest
import torch

from actrec.nn.ddbn import DualDomainBatchNorm, SequenceBatchNorm, project_alpha_
from actrec.nn.lstm import NormLSTMLayer
from actrec.nn.reestimate import reestimate_statistics
from actrec.ops.ddbn_reference import bn_reference, ddbn_reference
from actrec.ops.domains import bessel, contribution_weights, effective_sizes

DT = torch.float64


def _h(T=4, N=6, C=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(T, N, C, generator=g, dtype=DT) * 1.5 + 0.3


def test_ddbn_init_values():
    bn = DualDomainBatchNorm(5, 7)
    assert torch.equal(bn.weight, torch.full((5,), 0.1))
    assert torch.equal(bn.bias, torch.zeros(5))
    assert bn.running_mean.shape == (2, 7, 5) and bn.running_var.shape == (2, 7, 5)
    assert (bn.running_mean == 0).all() and (bn.running_var == 1).all()
    assert "counts" not in bn.state_dict()


def test_ddbn_training_matches_reference_and_updates_running_stats():
    bn = DualDomainBatchNorm(3, 3, momentum=0.2).double()
    h = _h()
    alpha = torch.tensor([0.6, 0.8], dtype=DT)
    domain = torch.tensor([0, 0, 0, 1, 1, 1])
    y = bn(h, alpha, domain)
    y_ref, mean, var = ddbn_reference(h, alpha, 3, bn.weight, bn.bias)
    # The module runs actrec.ops.ddbn (fused where built): equal to the reference to rounding.
    torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
    # Momentum 0.2 from (0, 1); unbiased with n_eff = S^2 / sum tau^2 of the tanh weights.
    # h has T = 4 > max_len = 3 timesteps: the last one has no slot.
    j = torch.arange(1, 7, dtype=DT)
    tau = torch.stack([(1 - torch.tanh(j - 0.6 * 6)) / 2, (1 + torch.tanh(j - (1 - 0.8) * 6)) / 2])
    n_eff = tau.sum(1) ** 2 / (tau**2).sum(1)  # [2]
    unbiased = var[:, :3] * (n_eff / (n_eff - 1))[:, None, None]
    torch.testing.assert_close(bn.running_mean, 0.2 * mean[:, :3], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(bn.running_var, 0.8 + 0.2 * unbiased, rtol=1e-12, atol=1e-12)
    assert bn.trained_len.tolist() == [3, 3] and bn.trained_len.dtype == torch.long


def test_running_stats_only_change_in_training_mode():
    bn = DualDomainBatchNorm(3, 4).double()
    alpha = torch.tensor([0.75, 0.75], dtype=DT)
    domain = torch.tensor([0, 0, 0, 1, 1, 1])
    bn.eval()
    bn(_h(), alpha, domain)
    assert (bn.running_mean == 0).all() and (bn.running_var == 1).all()
    bn.train()
    bn(_h(), alpha, domain)
    assert not (bn.running_mean == 0).all()


def test_eval_mixed_domains_and_slots_beyond_max_len():
    bn = DualDomainBatchNorm(3, 2).double().eval()
    with torch.no_grad():
        bn.running_mean.copy_(torch.arange(12, dtype=DT).reshape(2, 2, 3))
        bn.running_var.copy_(torch.arange(12, dtype=DT).reshape(2, 2, 3) + 1)
        bn.weight.fill_(2.0)
        bn.bias.fill_(-1.0)
    h = _h(T=4, N=3)
    domain = torch.tensor([1, 0, 1])
    y = bn(h, torch.tensor([0.75, 0.75], dtype=DT), domain)
    for t in range(4):
        s = min(t, 1)
        for n, d in enumerate(domain.tolist()):
            exp = (h[t, n] - bn.running_mean[d, s]) / torch.sqrt(bn.running_var[d, s] + 1e-5) * 2 - 1
            torch.testing.assert_close(y[t, n], exp)
    # step() at t picks the same slot as the batched forward.
    for t in range(4):
        yt = bn.step(h[t], t, torch.tensor([0.75, 0.75], dtype=DT), domain)
        torch.testing.assert_close(yt, y[t], rtol=0, atol=0)


def test_offset_training_updates_only_its_slot():
    bn = SequenceBatchNorm(3, 5, momentum=0.5).double()
    h = _h(T=1, N=4)
    bn(h, t0=3)
    assert (bn.running_mean[[0, 1, 2, 4]] == 0).all()
    torch.testing.assert_close(bn.running_mean[3], 0.5 * h[0].mean(0))
    torch.testing.assert_close(bn.running_var[3], 0.5 + 0.5 * h[0].var(0, unbiased=True))
    bn(h, t0=7)  # beyond max_len: no update, no error
    torch.testing.assert_close(bn.running_mean[3], 0.5 * h[0].mean(0))
    ddbn = DualDomainBatchNorm(3, 5, momentum=0.5).double()
    alpha = torch.tensor([0.75, 0.75], dtype=DT)
    ddbn(h, alpha, torch.tensor([0, 0, 1, 1]), t0=2)
    assert (ddbn.running_mean[:, [0, 1, 3, 4]] == 0).all()
    assert (ddbn.running_mean[:, 2] != 0).all()


def test_training_batches_must_be_sorted_by_domain():
    bn = DualDomainBatchNorm(3, 4).double()
    with pytest.raises(ValueError, match="D1 rows"):
        bn(_h(), torch.tensor([0.75, 0.75], dtype=DT), torch.tensor([0, 1, 0, 1, 1, 1]))


def test_project_alpha_clamps_into_bounds():
    a = torch.nn.Parameter(torch.tensor([0.3, 1.4]))
    project_alpha_(a, torch.tensor([0.5, 0.5]))
    assert a.tolist() == [0.5, 1.0]
    a = torch.nn.Parameter(torch.tensor([0.8, 0.26]))
    project_alpha_(a, torch.tensor([0.75, 0.25]))
    assert a.tolist() == pytest.approx([0.8, 0.26])


def test_layer_remembers_split_and_projects_on_load():
    layer = NormLSTMLayer(2, 3, 4, dual=True).double()
    x = _h(T=2, N=4, C=2)
    layer(x, torch.tensor([0, 0, 0, 1]))  # n1/N = 0.75, n2/N = 0.25
    layer(x, torch.zeros(4, dtype=torch.long))  # single-domain: bounds kept
    assert layer.alpha_floor.tolist() == [0.75, 0.25]
    with torch.no_grad():
        layer.alpha.copy_(torch.tensor([0.5, 2.0]))
    layer.project_alpha()
    assert layer.alpha.tolist() == [0.75, 1.0]
    state = layer.state_dict()
    state["alpha"] = torch.tensor([0.1, 0.1], dtype=DT)
    fresh = NormLSTMLayer(2, 3, 4, dual=True).double()
    fresh.load_state_dict(state)
    assert fresh.alpha.tolist() == [0.75, 0.25]


def test_reestimate_gives_exact_averages_and_leaves_parameters():
    torch.manual_seed(0)
    layer_bn = SequenceBatchNorm(3, 3).double()
    ddbn = DualDomainBatchNorm(3, 3).double()
    alpha = torch.tensor([0.6, 0.7], dtype=DT)

    class Both(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = layer_bn, ddbn
            self.drop = torch.nn.Dropout(0.5)

        def forward(self, x, domain):
            return self.b(self.a(self.drop(x)), alpha, domain)

    model = Both().train()
    batches = [(_h(T=2 + k, N=4, seed=k), torch.tensor([0, 0, 1, 1])) for k in range(3)]
    params = {k: v.clone() for k, v in model.state_dict().items() if "running" not in k}
    assert reestimate_statistics(model, batches) == 3
    assert model.training and model.drop.training and not layer_bn.cumulative
    for k, v in model.state_dict().items():
        if "running" not in k:
            assert torch.equal(v, params[k])
    # Plain BN: slot t averages the batches that reached t (batch k has T = 2 + k).
    for t in range(3):
        reached = [x for x, _ in batches if x.shape[0] > t]
        means = torch.stack([x[t].mean(0) for x in reached])
        vars_ = torch.stack([x[t].var(0, unbiased=True) for x in reached])
        torch.testing.assert_close(layer_bn.running_mean[t], means.mean(0))
        torch.testing.assert_close(layer_bn.running_var[t], vars_.mean(0))
    # DDBN: each domain slot averages the weighted batch statistics of the normalised inputs.
    f = bessel(effective_sizes(contribution_weights(alpha, 2, 1, 4)))[:, 0]  # [2]
    sums_m, sums_v = torch.zeros(2, 3, 3, dtype=DT), torch.zeros(2, 3, 3, dtype=DT)
    counts = torch.zeros(3)
    layer_bn.eval()
    for x, _ in batches:
        z = bn_reference(x, layer_bn.weight, layer_bn.bias)[0]  # what the DDBN saw
        _, m, v = ddbn_reference(z, alpha, 2, ddbn.weight, ddbn.bias)
        tt = min(x.shape[0], 3)  # timesteps beyond max_len are not tracked
        sums_m[:, :tt] += m[:, :tt]
        sums_v[:, :tt] += v[:, :tt] * f[:, None, None]
        counts[:tt] += 1
    torch.testing.assert_close(ddbn.running_mean, sums_m / counts[None, :, None].to(DT))
    torch.testing.assert_close(ddbn.running_var, sums_v / counts[None, :, None].to(DT))


def test_reestimate_through_whole_models():
    from actrec.nn.models import GRUClassifier, NormLSTMClassifier

    batches = [(_h(T=3, N=4, C=2, seed=k), torch.tensor([0, 0, 0, 1])) for k in range(3)]
    # Torch BatchNorm1d in the GRU model: an exact average with dropout off, momentum restored;
    # a batch with a mask contributes its real frames only (row 3 has one, the rest is garbage).
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 1, 0]]).bool()
    batches[2][0][~mask] = 1e6
    with_mask = [*batches[:2], (*batches[2], mask)]
    torch.manual_seed(0)
    gru = GRUClassifier(2, 3, hidden=4, layers=1, fc=5).double()
    reestimate_statistics(gru, with_mask)
    assert gru.norm.momentum == 0.01 and gru.training  # Keras default, restored
    gru.eval()
    with torch.no_grad():
        feats = [gru.rnn(x).reshape(-1, 4) for x, _ in batches]
        feats[2] = feats[2][mask.reshape(-1)]  # [11, 4]
    torch.testing.assert_close(gru.norm.running_mean, torch.stack([f.mean(0) for f in feats]).mean(0))
    torch.testing.assert_close(gru.norm.running_var, torch.stack([f.var(0) for f in feats]).mean(0))
    # A DDLSTM gives the same statistics through the fused layer op and the per-step path.
    torch.manual_seed(1)
    a = NormLSTMClassifier(2, 3, hidden=3, layers=2, max_len=2, dual=True).double()
    b = NormLSTMClassifier(2, 3, hidden=3, layers=2, max_len=2, dual=True).double()
    b.load_state_dict(a.state_dict())
    for layer in b.rnn.layers:
        layer.fused = False
    reestimate_statistics(a, batches)
    reestimate_statistics(b, batches)
    for (name, p), (_, q) in zip(a.named_buffers(), b.named_buffers()):
        torch.testing.assert_close(p, q, rtol=1e-10, atol=1e-12, msg=name)
    assert not torch.equal(a.rnn.layers[1].bn_h.running_mean[1], torch.zeros(2, 12, dtype=DT))


def test_sequence_batch_norm_statistics_of_real_frames_only():
    # Rows 2 and 3 are padding from t = 1 on, and t = 2 is all padding: the running statistics
    # take each timestep's real rows only (torch's unbiased variance over them) and slot 2 stays.
    bn = SequenceBatchNorm(3, 4, momentum=0.5).double()
    h = _h(T=3, N=4)
    h[1:, 2:] = 1e6  # garbage
    h[2] = -1e6
    mask = torch.tensor([[True] * 4, [True, True, False, False], [False] * 4])
    y = bn(h, mask=mask)
    real = [h[0], h[1, :2]]
    for t, rows in enumerate(real):
        torch.testing.assert_close(bn.running_mean[t], 0.5 * rows.mean(0))
        torch.testing.assert_close(bn.running_var[t], 0.5 + 0.5 * rows.var(0, unbiased=True))
        torch.testing.assert_close(
            y[t, : len(rows)],
            (rows - rows.mean(0)) / torch.sqrt(rows.var(0, unbiased=False) + 1e-5) * 0.1)
    assert (bn.running_mean[2:] == 0).all() and (bn.running_var[2:] == 1).all()
    assert bn.trained_len.item() == 2  # t = 2 had no real frame


def test_ddbn_skips_a_domain_without_frames_of_its_own():
    bn = DualDomainBatchNorm(3, 3, momentum=0.5).double()
    h = _h(T=2, N=4)
    mask = torch.tensor([[True] * 4, [False, False, True, True]])  # D1 rows end at t = 0
    bn(h, torch.tensor([0.75, 0.75], dtype=DT), torch.tensor([0, 0, 1, 1]), mask=mask)
    assert (bn.running_var[0, 1] == 1).all() and (bn.running_var[1, 1] != 1).all()
    assert (bn.running_var[:, 0] != 1).all() and (bn.running_var[:, 2] == 1).all()


def test_trained_length_is_recorded_saved_and_used_at_evaluation():
    bn = DualDomainBatchNorm(3, 6).double()
    alpha, domain = torch.tensor([0.75, 0.75], dtype=DT), torch.tensor([0, 0, 1, 1])
    assert bn.trained_len.tolist() == [0, 0] and "trained_len" in bn.state_dict()
    mask = torch.tensor([[True] * 4] * 2 + [[True, False, True, False]] + [[False] * 4] * 2)
    bn(_h(T=5, N=4), alpha, domain, mask=mask)
    assert bn.trained_len.tolist() == [3, 3]  # each domain's last real frame at t = 2
    bn(_h(T=2, N=4), alpha, domain)  # a shorter batch does not lower it
    assert bn.trained_len.tolist() == [3, 3]
    bn(_h(T=1, N=4), alpha, domain, t0=9)  # past max_len: capped
    assert bn.trained_len.tolist() == [6, 6]
    with torch.no_grad():
        bn.trained_len.fill_(3)
        bn.running_mean.copy_(torch.arange(36, dtype=DT).reshape(2, 6, 3))
    bn.eval()
    h = _h(T=6, N=4)
    y = bn(h, alpha, domain)
    for t in range(6):  # slot min(t, 2): the initial slots 3..5 are never read
        torch.testing.assert_close(y[t], bn(h[t : t + 1], alpha, domain, t0=min(t, 2))[0])
        torch.testing.assert_close(bn.step(h[t], t, alpha, domain), y[t], rtol=0, atol=0)
    # A state dict from before the buffer existed counts every slot as trained.
    old = {k: v for k, v in bn.state_dict().items() if k != "trained_len"}
    fresh = DualDomainBatchNorm(3, 6).double()
    fresh.load_state_dict(old)
    assert fresh.trained_len.tolist() == [6, 6]
    fresh.load_state_dict(bn.state_dict())
    assert fresh.trained_len.tolist() == [3, 3]
    # One saved when both domains shared a single length gives it to each domain.
    fresh.load_state_dict({**old, "trained_len": torch.tensor(4)})
    assert fresh.trained_len.tolist() == [4, 4]


def test_reestimate_fills_only_trained_slots_and_takes_masks():
    torch.manual_seed(0)
    bn = SequenceBatchNorm(3, 5).double()
    bn(_h(T=3, N=4))  # trained_len 3
    # Row 0 is real up to t = 3, but slot 3 is past the trained length: never re-estimated.
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0], [1, 0, 0, 0], [1, 0, 0, 0]]).bool()
    x = _h(T=4, N=4, seed=1)
    x[~mask] = 1e6  # garbage in the padding

    class Wrap(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.bn = bn

        def forward(self, x, domain, mask=None):
            return self.bn(x, mask=mask)

    d1 = torch.zeros(4, dtype=torch.long)
    batches = [(x, d1, mask), (x[:2], d1)]
    trained_var = bn.running_var.clone()
    assert reestimate_statistics(Wrap(), batches) == 2
    assert bn.trained_len.item() == 3
    for t in range(3):
        rows = x[t][mask[t]]
        m = rows.mean(0)
        if t < 2:  # both batches reached t
            m = (m + x[t, :4].mean(0)) / 2
            v = (rows.var(0, unbiased=True) + x[t, :4].var(0, unbiased=True)) / 2
        else:  # one real row at t = 2: its mean counts, it has no variance (training's stays)
            v = trained_var[t]
        torch.testing.assert_close(bn.running_mean[t], m)
        torch.testing.assert_close(bn.running_var[t], v)
    assert (bn.running_mean[3:] == 0).all() and (bn.running_var[3:] == 1).all()
