"""The DDBN reference op against the spec (shared/design/ddbn.md): a plain-loop oracle
written here from the spec (padding mask included), hand-computed values, float64 gradchecks,
plain batch norm. Running statistics belong to actrec.nn (tests/test_nn_ddbn.py)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from actrec.ops.ddbn_reference import (
    bn_eval_reference,
    bn_reference,
    ddbn_eval_reference,
    ddbn_reference,
    tau_weights,
)
from actrec.ops.domains import contribution_weights, effective_sizes

DT = torch.float64


# ---------------------------------------------------------------------------------------------
# An independent oracle: python floats and loops, straight from the spec.


def loop_ddbn(h, alpha, n1, gamma, beta, eps, mask=None):
    """Returns y[t][j][c], mean[i][t][c], var[i][t][c], n_eff[i][t] as nested lists.

    ``mask[t][j]`` (1 real, 0 padding) multiplies the contributions; a domain with no weight
    at t (S = 0) has mean = var = 0 and n_eff = 0."""
    T, N, C = len(h), len(h[0]), len(h[0][0])
    a1, a2 = alpha
    tau = [
        [(1 - math.tanh(j - a1 * N)) / 2 for j in range(1, N + 1)],
        [(1 + math.tanh(j - (1 - a2) * N)) / 2 for j in range(1, N + 1)],
    ]
    if n1 in (0, N):  # single-domain batch: plain batch norm over the real rows
        tau = [[1.0] * N, [1.0] * N]
    mask = mask or [[1] * N for _ in range(T)]
    mean = [[[0.0] * C for _ in range(T)] for _ in range(2)]
    var = [[[0.0] * C for _ in range(T)] for _ in range(2)]
    n_eff = [[0.0] * T for _ in range(2)]
    y = [[[0.0] * C for _ in range(N)] for _ in range(T)]
    for t in range(T):
        w = [[tau[i][j] * mask[t][j] for j in range(N)] for i in range(2)]
        for i in range(2):
            s = sum(w[i])
            if s > 0:
                n_eff[i][t] = s * s / sum(x * x for x in w[i])
            for c in range(C):
                if s == 0:
                    continue
                mu = sum(w[i][j] * h[t][j][c] for j in range(N)) / s
                v = sum(w[i][j] * (h[t][j][c] - mu) ** 2 for j in range(N)) / s
                mean[i][t][c], var[i][t][c] = mu, v
        for c in range(C):
            for j in range(N):
                d = 0 if j < n1 else 1
                y[t][j][c] = beta[c] + gamma[c] * (h[t][j][c] - mean[d][t][c]) / math.sqrt(
                    var[d][t][c] + eps
                )
    return y, mean, var, n_eff


def _mask(T, N, seed=0):
    """Random padding [T, N], every row of t = 1 padded when T > 1 (S = 0 there)."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(T, N, generator=g) > 0.35
    if T > 1:
        mask[1] = False
    return mask


def _garbage(h, mask, seed):
    g = torch.Generator().manual_seed(seed)
    out = h.clone()
    out[~mask] = torch.randn(int((~mask).sum()), h.shape[2], generator=g, dtype=h.dtype) * 40 - 3
    return out


def _inputs(T=3, N=6, C=4, seed=0, dtype=DT):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(T, N, C, generator=g, dtype=dtype) * 2 + 0.5
    gamma = torch.rand(C, generator=g, dtype=dtype) + 0.5
    beta = torch.randn(C, generator=g, dtype=dtype)
    return h, gamma, beta


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("n1,alpha", [(3, (0.5, 0.5)), (3, (0.75, 0.75)), (2, (0.4, 0.9)),
                                      (5, (1.0, 0.2)), (0, (0.7, 0.7)), (6, (0.7, 0.7))])
def test_matches_plain_loop_oracle(n1, alpha, masked):
    h, gamma, beta = _inputs()
    mask = _mask(3, 6, seed=n1) if masked else None
    if masked:
        h = _garbage(h, mask, seed=1)
    a = torch.tensor(alpha, dtype=DT)
    y, mean, var = ddbn_reference(h, a, n1, gamma, beta, 1e-5, mask=mask)
    ly, lm, lv, n_eff = loop_ddbn(h.tolist(), alpha, n1, gamma.tolist(), beta.tolist(), 1e-5,
                                  mask.int().tolist() if masked else None)
    torch.testing.assert_close(y, torch.tensor(ly, dtype=DT), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(mean, torch.tensor(lm, dtype=DT), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(var, torch.tensor(lv, dtype=DT), rtol=1e-12, atol=1e-12)
    w = contribution_weights(a, n1, 3, 6, mask)
    torch.testing.assert_close(effective_sizes(w), torch.tensor(n_eff, dtype=DT), rtol=1e-12,
                               atol=1e-12)


def test_reference_has_no_side_effects():
    h, gamma, beta = _inputs()
    alpha = torch.tensor([0.75, 0.75], dtype=DT)
    mask = _mask(3, 6)
    before = [x.clone() for x in (h, alpha, gamma, beta, mask)]
    ddbn_reference(h, alpha, 3, gamma, beta, mask=mask)
    bn_reference(h, gamma, beta, mask=mask)
    assert all(torch.equal(x, y) for x, y in zip(before, (h, alpha, gamma, beta, mask)))


def test_tau_values_by_hand_at_the_lower_bound():
    # N=4, n1=2, alpha = (0.5, 0.5) = (n1/N, n2/N): the transitions sit on the boundary rows.
    tau = tau_weights(4, 2, torch.tensor([0.5, 0.5], dtype=DT))
    t1 = math.tanh(1.0)  # 0.7615941559557649
    t2 = math.tanh(2.0)  # 0.9640275800758169
    expected1 = [(1 + t1) / 2, 0.5, (1 - t1) / 2, (1 - t2) / 2]  # tau1(j) = (1 - tanh(j - 2)) / 2
    expected2 = [(1 - t1) / 2, 0.5, (1 + t1) / 2, (1 + t2) / 2]  # tau2(j) = (1 + tanh(j - 2)) / 2
    assert tau[0].tolist() == pytest.approx(expected1, abs=1e-15)
    assert tau[1].tolist() == pytest.approx(expected2, abs=1e-15)
    assert tau[0, 0].item() == pytest.approx(0.8807970779778823, abs=1e-15)
    # alpha1 = 1 puts D1's transition past the last row: every row counts (nearly) fully.
    full = tau_weights(4, 2, torch.tensor([1.0, 1.0], dtype=DT))
    assert full[0].min().item() == pytest.approx((1 - math.tanh(0.0)) / 2)  # row N is at the edge
    assert full[0, 0].item() == pytest.approx((1 - math.tanh(-3.0)) / 2)


def test_hand_computed_two_row_case():
    # N=2, n1=1, alpha=(0.5, 0.5): tau1(j) = (1 - tanh(j - 1)) / 2, tau2(j) = (1 + tanh(j - 1)) / 2.
    h = torch.tensor([[[1.0], [3.0]]], dtype=DT)  # [T=1, N=2, C=1]
    w1 = [(1 - math.tanh(1 - 1.0)) / 2, (1 - math.tanh(2 - 1.0)) / 2]
    w2 = [(1 + math.tanh(1 - 1.0)) / 2, (1 + math.tanh(2 - 1.0)) / 2]
    mu1 = (w1[0] * 1 + w1[1] * 3) / sum(w1)
    mu2 = (w2[0] * 1 + w2[1] * 3) / sum(w2)
    v1 = (w1[0] * (1 - mu1) ** 2 + w1[1] * (3 - mu1) ** 2) / sum(w1)
    v2 = (w2[0] * (1 - mu2) ** 2 + w2[1] * (3 - mu2) ** 2) / sum(w2)
    one = torch.ones(1, dtype=DT)
    y, mean, var = ddbn_reference(h, torch.tensor([0.5, 0.5], dtype=DT), 1, one, 0 * one, eps=0.0)
    assert mean[:, 0, 0].tolist() == pytest.approx([mu1, mu2], abs=1e-14)
    assert var[:, 0, 0].tolist() == pytest.approx([v1, v2], abs=1e-14)
    assert y[0, :, 0].tolist() == pytest.approx(
        [(1 - mu1) / math.sqrt(v1), (3 - mu2) / math.sqrt(v2)], abs=1e-12
    )


@pytest.mark.parametrize("n1", [0, 6])
def test_single_domain_is_exactly_plain_batch_norm(n1):
    h, gamma, beta = _inputs(T=4, N=6)
    mask = _mask(4, 6, seed=3)
    mask[2, 1:] = False  # a single real row at t = 2: variance 0
    h = _garbage(h, mask, seed=2)
    alpha = torch.tensor([0.7, 0.9], dtype=DT)
    y, mean, var = ddbn_reference(h, alpha, n1, gamma, beta, 1e-5, mask=mask)
    for t in range(4):
        real = mask[t]
        if not real.any():
            assert (mean[:, t] == 0).all() and (var[:, t] == 0).all()
            continue
        # PyTorch's training-mode batch norm of the real rows alone (which refuses one row:
        # that row is its own mean, so its output is beta).
        ref = (F.batch_norm(h[t, real], None, None, gamma, beta, True, 0.1, 1e-5)
               if real.sum() > 1 else beta[None])
        torch.testing.assert_close(y[t, real], ref, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(mean[:, t], h[t, real].mean(0).expand(2, -1), rtol=1e-12,
                                   atol=1e-12)
        torch.testing.assert_close(var[:, t], h[t, real].var(0, unbiased=False).expand(2, -1),
                                   rtol=1e-12, atol=1e-12)
    # ... and the same numbers as the plain per-timestep batch norm helper.
    y_bn, m_bn, v_bn = bn_reference(h, gamma, beta, 1e-5, mask=mask)
    assert torch.equal(y, y_bn) and torch.equal(mean[0], m_bn) and torch.equal(var[1], v_bn)


def test_padding_values_change_nothing_bitwise():
    h, gamma, beta = _inputs(T=3, N=6, C=4, seed=4)
    mask = _mask(3, 6, seed=4)
    alpha = torch.tensor([0.6, 0.8], dtype=DT)
    gy = torch.randn(3, 6, 4, dtype=DT, generator=torch.Generator().manual_seed(1))
    runs = []
    for seed in (1, 2):
        leaves = [x.clone().requires_grad_() for x in (_garbage(h, mask, seed), alpha, gamma, beta)]
        y, mean, var = ddbn_reference(*leaves[:2], 3, *leaves[2:], mask=mask)
        grads = torch.autograd.grad((y * gy * mask[..., None]).sum(), leaves)
        runs.append((y[mask], mean, var, *grads))
    for a, b in zip(*runs):
        assert torch.equal(a, b)


def test_eval_uses_each_rows_domain_and_last_slot_beyond_t_max():
    T, N, C, t_max = 5, 4, 3, 2
    h, gamma, beta = _inputs(T=T, N=N, C=C)
    rm = torch.randn(2, t_max, C, dtype=DT)
    rv = torch.rand(2, t_max, C, dtype=DT) + 0.5
    domain = torch.tensor([1, 0, 1, 0])  # mixed and unsorted: allowed at evaluation
    y = ddbn_eval_reference(h, domain, rm, rv, gamma, beta, 1e-5)
    for t in range(T):
        s = min(t, t_max - 1)
        for n in range(N):
            d = int(domain[n])
            exp = (h[t, n] - rm[d, s]) / torch.sqrt(rv[d, s] + 1e-5) * gamma + beta
            torch.testing.assert_close(y[t, n], exp, rtol=1e-13, atol=1e-13)
    y_bn = bn_eval_reference(h, rm[0], rv[0], gamma, beta, 1e-5)
    torch.testing.assert_close(y_bn[:, 1], y[:, 1], rtol=0, atol=0)
    want = (h[4] - rm[0, 1]) / torch.sqrt(rv[0, 1] + 1e-5) * gamma + beta
    torch.testing.assert_close(y_bn[4], want)


def test_gradcheck_two_domains_alpha_gamma_beta():
    h, gamma, beta = _inputs(T=2, N=5, C=3, seed=1)
    alpha = torch.tensor([0.55, 0.8], dtype=DT)  # n1=2: bounds (0.4, 0.6); strictly inside
    args = [t.clone().requires_grad_() for t in (h, alpha, gamma, beta)]

    def f(h, alpha, gamma, beta):
        y, mean, var = ddbn_reference(h, alpha, 2, gamma, beta, 1e-5)
        return y, mean, var

    assert torch.autograd.gradcheck(f, args, eps=1e-6, atol=1e-7)
    assert torch.autograd.gradgradcheck(lambda *a: f(*a)[0], args, eps=1e-6, atol=1e-6)


def test_gradcheck_with_padding():
    h, gamma, beta = _inputs(T=3, N=5, C=2, seed=5)
    mask = _mask(3, 5, seed=5)
    h = _garbage(h, mask, seed=3)
    alpha = torch.tensor([0.55, 0.8], dtype=DT)
    args = [t.clone().requires_grad_() for t in (h, alpha, gamma, beta)]

    def f(h, alpha, gamma, beta):
        y, mean, var = ddbn_reference(h, alpha, 2, gamma, beta, 1e-5, mask=mask)
        return y * mask[..., None], mean, var

    assert torch.autograd.gradcheck(f, args, eps=1e-6, atol=1e-7)


def test_alpha_gets_a_nonzero_gradient():
    h, gamma, beta = _inputs(T=2, N=6, C=3, seed=2)
    h[:, 3:] += 3.0  # D2 has a different mean: contamination matters
    alpha = torch.tensor([0.75, 0.75], dtype=DT, requires_grad=True)
    y, _, _ = ddbn_reference(h, alpha, 3, gamma, beta)
    (y[:, :, 0] ** 3).sum().backward()
    assert (alpha.grad.abs() > 1e-6).all()


def test_gradcheck_single_domain():
    h, gamma, beta = _inputs(T=2, N=4, C=2, seed=3)
    args = [t.clone().requires_grad_() for t in (h, gamma, beta)]
    alpha = torch.tensor([0.75, 0.75], dtype=DT)
    assert torch.autograd.gradcheck(lambda h, g, b: ddbn_reference(h, alpha, 4, g, b)[0], args)


def test_float32_close_to_float64():
    h, gamma, beta = _inputs()
    alpha = torch.tensor([0.6, 0.7], dtype=DT)
    y64, m64, v64 = ddbn_reference(h, alpha, 3, gamma, beta)
    y32, m32, v32 = ddbn_reference(h.float(), alpha.float(), 3, gamma.float(), beta.float())
    assert y32.dtype == torch.float32
    torch.testing.assert_close(y32.double(), y64, rtol=1e-4, atol=1e-4)


def test_bad_arguments_raise():
    h, gamma, beta = _inputs()
    a = torch.tensor([0.75, 0.75], dtype=DT)
    with pytest.raises(ValueError, match="n1=7"):
        ddbn_reference(h, a, 7, gamma, beta)
    with pytest.raises(ValueError, match=r"\[T, N, C\]"):
        ddbn_reference(h[0], a, 3, gamma, beta)
    with pytest.raises(ValueError, match="gamma"):
        ddbn_reference(h, a, 3, gamma[:2], beta)
    with pytest.raises(ValueError, match="domain"):
        ddbn_eval_reference(h, torch.zeros(2, dtype=torch.long), torch.zeros(2, 3, 4, dtype=DT),
                            torch.ones(2, 3, 4, dtype=DT), gamma, beta)


try:
    from hypothesis import given, settings
    from hypothesis import strategies as st
except ImportError:  # pragma: no cover
    given = None

if given is not None:

    @settings(max_examples=25, deadline=None)
    @given(
        T=st.integers(1, 3), N=st.integers(2, 7), C=st.integers(1, 3), data=st.data(),
        seed=st.integers(0, 10_000),
    )
    def test_random_shapes_match_the_oracle(T, N, C, data, seed):
        n1 = data.draw(st.integers(1, N - 1))
        a1 = data.draw(st.floats(n1 / N, 1.0))
        a2 = data.draw(st.floats((N - n1) / N, 1.0))
        h, gamma, beta = _inputs(T=T, N=N, C=C, seed=seed)
        mask = _mask(T, N, seed=seed)
        y, mean, var = ddbn_reference(h, torch.tensor([a1, a2], dtype=DT), n1, gamma, beta, 1e-3,
                                      mask=mask)
        ly, lm, lv, _ = loop_ddbn(h.tolist(), (a1, a2), n1, gamma.tolist(), beta.tolist(), 1e-3,
                                  mask.int().tolist())
        torch.testing.assert_close(y, torch.tensor(ly, dtype=DT), rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(var, torch.tensor(lv, dtype=DT), rtol=1e-10, atol=1e-10)
