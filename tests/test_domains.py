"""actrec.ops.domains, the one place the DDBN contribution weights are made: golden values
worked out by hand, the padding mask, effective sizes and the domain-flag rule."""

from __future__ import annotations

import math

import pytest
import torch

from actrec.ops.domains import (
    bessel,
    check_domain_flags,
    contribution_weights,
    effective_sizes,
    tau_weights,
)

DT = torch.float64
# (1 - tanh(x)) / 2 = sigmoid(-2x) = 1 / (1 + e^(2x)): the logistic values used below.
S2 = 1 / (1 + math.exp(-2))  # sigmoid(2)  = 0.8807970779778823
S4 = 1 / (1 + math.exp(-4))  # sigmoid(4)  = 0.9820137900379085
# N = 4, n1 = 2, alpha = (0.5, 0.5): both transitions sit at row 2 (1-based rows j = 1..4).
TAU1 = [S2, 0.5, 1 - S2, 1 - S4]  # (1 - tanh(j - 2)) / 2
TAU2 = [1 - S2, 0.5, S2, S4]  # (1 + tanh(j - 2)) / 2
MASK = torch.tensor([[1, 1, 1, 1], [1, 0, 1, 0], [0, 0, 0, 0]], dtype=torch.bool)  # [T=3, N=4]


def test_logistic_constants():
    assert S2 == pytest.approx(0.8807970779778823, abs=1e-16)
    assert S4 == pytest.approx(0.9820137900379085, abs=1e-16)


def test_tau_weights_by_hand():
    tau = tau_weights(4, 2, torch.tensor([0.5, 0.5], dtype=DT))
    assert tau.shape == (2, 4)
    assert tau[0].tolist() == pytest.approx(TAU1, abs=1e-15)
    assert tau[1].tolist() == pytest.approx(TAU2, abs=1e-15)


def test_two_domain_weights_are_tau_times_the_mask():
    w = contribution_weights(torch.tensor([0.5, 0.5], dtype=DT), 2, 3, 4, MASK)
    assert w.shape == (2, 3, 4) and w.dtype == DT
    want = torch.tensor([[TAU1, [S2, 0, 1 - S2, 0], [0, 0, 0, 0]],
                         [TAU2, [1 - S2, 0, S2, 0], [0, 0, 0, 0]]], dtype=DT)
    torch.testing.assert_close(w, want, rtol=0, atol=1e-15)
    assert (w[:, ~MASK] == 0).all()  # padding is exactly 0, not merely small


@pytest.mark.parametrize("n1,dual", [(0, True), (4, True), (2, False)])
def test_single_domain_or_plain_bn_weights_are_the_mask(n1, dual):
    w = contribution_weights(torch.tensor([0.5, 0.5], dtype=DT), n1, 3, 4, MASK, dual=dual)
    assert torch.equal(w, MASK.to(DT).expand(2, 3, 4))
    ones = contribution_weights(None, n1, 2, 4, None, dual=False)
    assert ones.dtype == torch.float32 and torch.equal(ones, torch.ones(2, 2, 4))


def test_effective_sizes_by_hand():
    w = contribution_weights(torch.tensor([0.5, 0.5], dtype=DT), 2, 3, 4, MASK)
    n_eff = effective_sizes(w)
    assert n_eff.shape == (2, 3)
    # t = 0, D1: S = S2 + 0.5 + (1 - S2) + (1 - S4) = 2.5 - S4
    s, q = 2.5 - S4, S2**2 + 0.25 + (1 - S2) ** 2 + (1 - S4) ** 2
    assert n_eff[0, 0].item() == pytest.approx(s * s / q, rel=1e-14)
    # t = 1: rows 1 and 3 padded; S = S2 + (1 - S2) = 1 for both domains.
    both = 1 / (S2**2 + (1 - S2) ** 2)  # = 1.2658...
    assert n_eff[:, 1].tolist() == pytest.approx([both, both], rel=1e-14)
    assert n_eff[:, 2].tolist() == [0.0, 0.0]  # no real row at t = 2
    # Hard weights count the real rows.
    hard = effective_sizes(contribution_weights(None, 4, 3, 4, MASK, dual=False))
    assert hard.tolist() == [[4.0, 2.0, 0.0], [4.0, 2.0, 0.0]]


def test_bessel_by_hand():
    got = bessel(torch.tensor([4.0, 2.0, 1.0, 0.5, 0.0], dtype=DT))
    assert got.tolist() == pytest.approx([4 / 3, 2.0, 1.0, 1.0, 1.0])


def test_alpha_gradient_by_hand():
    # d tau_i(j) / d alpha_i = (N/2) sech^2(...): at the transition row j = 2 that is N/2 = 2,
    # counted once per real frame of row j (row 2 is real only at t = 0).
    alpha = torch.tensor([0.5, 0.5], dtype=DT, requires_grad=True)
    w = contribution_weights(alpha, 2, 3, 4, MASK)
    (g,) = torch.autograd.grad(w[:, :, 1].sum(), alpha, retain_graph=True)
    assert g.tolist() == pytest.approx([2.0, 2.0], abs=1e-15)
    # Row 1 (j = 1) is real at t = 0, 1: 2 frames x 2 sech^2(1 - 2); sech^2(x) = 1 - tanh^2(x).
    (g,) = torch.autograd.grad(w[0, :, 0].sum(), alpha)
    assert g.tolist() == pytest.approx([2 * 2 * (1 - math.tanh(1.0) ** 2), 0.0], abs=1e-14)


def test_weights_follow_the_requested_dtype_and_device():
    alpha = torch.tensor([0.75, 0.75])  # float32
    assert contribution_weights(alpha, 2, 3, 4, MASK, dtype=DT).dtype == DT
    assert contribution_weights(alpha, 2, 3, 4, MASK).dtype == torch.float32


def test_bad_arguments_raise():
    alpha = torch.tensor([0.75, 0.75], dtype=DT)
    with pytest.raises(ValueError, match="n1=5 outside 0..4"):
        contribution_weights(alpha, 5, 3, 4)
    with pytest.raises(ValueError, match=r"mask must be \[T=3, N=4\], got \(4, 3\)"):
        contribution_weights(alpha, 2, 3, 4, MASK.T)
    with pytest.raises(ValueError, match="needs alpha"):
        contribution_weights(None, 2, 3, 4)
    with pytest.raises(ValueError, match="n1=9"):
        tau_weights(4, 9, alpha)


def test_domain_flags_rule():
    assert check_domain_flags(torch.tensor([0, 1, 1], dtype=torch.int32), 3).dtype == torch.int64
    assert check_domain_flags(torch.tensor([], dtype=torch.long)).numel() == 0
    with pytest.raises(ValueError, match=r"0 \(D1\) or 1 \(D2\), got \[2\]"):
        check_domain_flags(torch.tensor([0, 2, 1]))
    with pytest.raises(ValueError, match=r"got \[-1, 3\]"):
        check_domain_flags(torch.tensor([3, -1, 1, -1]))
    with pytest.raises(ValueError, match="integers"):
        check_domain_flags(torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"domain must be \[N=4\], got \(3,\)"):
        check_domain_flags(torch.tensor([0, 1, 1]), 4)
    with pytest.raises(ValueError, match="domain must be"):
        check_domain_flags(torch.zeros(2, 2, dtype=torch.long))


def test_weights_are_made_on_the_statistics_device():
    """Without alpha and mask nothing but the caller says the device: plain batch norm of a
    tensor on another device (meta here, as CUDA would be) must not build its weights on the
    CPU."""
    from actrec.ops.ddbn_reference import bn_reference, ddbn_reference

    meta = torch.device("meta")
    assert contribution_weights(None, 4, 3, 4, dual=False, device=meta).device == meta
    h = torch.empty(3, 4, 2, device=meta)
    g, b = torch.ones(2, device=meta), torch.zeros(2, device=meta)
    assert bn_reference(h, g, b)[0].device == meta
    assert ddbn_reference(h, torch.full((2,), 0.75, device=meta), 4, g, b)[0].device == meta
