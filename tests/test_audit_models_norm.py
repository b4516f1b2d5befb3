"""Audit of the DDLSTM / BNLSTM layers against ``shared/design/ddbn.md`` on the odd cases: the
fused whole-sequence op and the per-step PyTorch path give the same outputs, gradients
(alphas included) and running statistics in float64 for batches with padding, a domain with no
rows, and a domain with a single real row; padded frames change nothing."""

from __future__ import annotations

import pytest
import torch

from actrec.nn.ddbn import SequenceBatchNorm
from actrec.nn.lstm import NormLSTMLayer
from actrec.ops.ddlstm_layer import fused_layer_available

DT = torch.float64
T, D, H = 6, 3, 4


def _batch(n1: int, n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(T, n, D, generator=g, dtype=DT)
    x[:, n1:] = 1.5 * x[:, n1:] + 0.7  # the second domain's features differ
    mask = torch.ones(T, n, dtype=torch.bool)
    mask[T - 2:, 0] = False  # a short window of D1 (or of D2 when n1 = 0)
    mask[T - 3:, n - 1] = False  # a short window of the last domain
    domain = torch.tensor([0] * n1 + [1] * (n - n1))
    return x, mask, domain


def _layers(dual: bool):
    torch.manual_seed(3)
    a = NormLSTMLayer(D, H, max_len=T, dual=dual).double()
    b = NormLSTMLayer(D, H, max_len=T, dual=dual).double()
    b.load_state_dict(a.state_dict())
    if dual:
        with torch.no_grad():  # away from the floors, where the projection clips nothing
            a.alpha.copy_(torch.tensor([0.81, 0.68]))
            b.alpha.copy_(torch.tensor([0.81, 0.68]))
    b.fused = False
    return a, b


@pytest.mark.skipif(not fused_layer_available(torch.zeros(1, dtype=DT)),
                    reason="the fused layer op is not built")
@pytest.mark.parametrize("dual", [True, False], ids=["ddlstm", "bnlstm"])
@pytest.mark.parametrize("n1, n", [(3, 5), (5, 5), (0, 5), (1, 4)],
                         ids=["two-domains", "no-D2", "no-D1", "one-D1-row"])
def test_fused_and_per_step_layers_agree_on_odd_batches(dual, n1, n):
    fused, steps = _layers(dual)
    x, mask, domain = _batch(n1, n)
    outs, grads = [], []
    for layer in (fused, steps):
        xi = x.clone().requires_grad_(True)
        out = layer(xi, domain, mask)
        (out * mask[..., None]).pow(2).sum().backward()  # a loss over the real frames
        outs.append(out.detach() * mask[..., None])
        grads.append([xi.grad] + [p.grad for p in layer.parameters()])
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-10, atol=1e-12)
    for ga, gb in zip(*grads):
        torch.testing.assert_close(ga, gb, rtol=1e-9, atol=1e-11)
    for (name, p), (_, q) in zip(fused.named_buffers(), steps.named_buffers()):
        torch.testing.assert_close(p, q, rtol=1e-10, atol=1e-12, msg=name)


@pytest.mark.parametrize("dual", [True, False], ids=["ddlstm", "bnlstm"])
def test_padding_values_change_no_running_statistic(dual):
    x, mask, domain = _batch(3, 5)
    garbage = x.clone()
    garbage[~mask] = 1e6
    a, b = _layers(dual)
    b.fused = a.fused
    a(x, domain, mask)
    b(garbage, domain, mask)
    for (name, p), (_, q) in zip(a.named_buffers(), b.named_buffers()):
        assert torch.equal(p, q), name


def test_a_single_real_frame_says_nothing_about_the_variance():
    """Timestep 1 has one real frame: its batch variance is 0 by construction (no unbiased
    estimate exists), so the running variance there must keep its value (PyTorch's batch norm
    refuses such a batch); the running mean still moves toward that frame."""
    bn = SequenceBatchNorm(1, 2).double()
    h = torch.tensor([[[1.0], [3.0]], [[5.0], [0.0]]], dtype=DT)  # [T=2, N=2, C=1]
    mask = torch.tensor([[True, True], [True, False]])
    bn(h, mask=mask)
    assert bn.running_mean[:, 0].tolist() == pytest.approx([0.2, 0.5])
    assert bn.running_var[0, 0].item() == pytest.approx(0.9 + 0.1 * 2.0)  # unbiased var of 1, 3
    assert bn.running_var[1, 0].item() == 1.0  # was 0.9: the 0 of a single frame folded in


def test_each_domain_falls_back_to_its_own_last_trained_timestep():
    """ddbn.md: timesteps past the training history use the last TRAINED timestep. When one
    domain's training windows are shorter (padded), its later slots never saw a frame of it;
    evaluation of that domain there must use its own last trained slot, not the initial
    mean 0 / variance 1 (features around 5 would come out around 5 * gamma instead of 0)."""
    from actrec.nn.ddbn import DualDomainBatchNorm

    bn = DualDomainBatchNorm(1, 4).double()
    g = torch.Generator().manual_seed(0)
    h = torch.randn(4, 4, 1, generator=g, dtype=DT) + 5.0
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 0, 0]]).bool()
    alpha = torch.tensor([0.75, 0.75], dtype=DT)
    for _ in range(60):
        bn(h, alpha, torch.tensor([0, 0, 1, 1]), mask=mask)
    assert bn.running_mean[1, 2:].eq(0).all()  # D2 never reached timesteps 2 and 3
    bn.eval()
    x = torch.full((4, 1, 1), 5.0, dtype=DT)
    with torch.no_grad():
        y = bn(x, alpha, torch.tensor([1]))[:, 0, 0]
    torch.testing.assert_close(y[2:], y[1].expand(2), rtol=0, atol=0)  # D2's slot 1 again
