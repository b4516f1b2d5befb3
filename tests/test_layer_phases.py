"""The fused layer ops' phase timers (csrc/cpu/phase_times.*, ``timed_phases``): what the
benchmark's "where a train step's time goes" table is made of. The counts are exact, the
times consistent with each other (parts inside their whole), and nothing is timed outside
the block."""

from __future__ import annotations

import pytest
import torch

from actrec.bench.ddlstm import _layer_params
from actrec.ops import ddlstm_layer as dl


@pytest.fixture(scope="module", autouse=True)
def extension():
    if dl._ext_disabled():
        pytest.skip("ACTREC_DISABLE_EXT is set")
    assert dl.fused_layer_available(torch.zeros(1, 1, 1)), "the actrec extension did not load"


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def _params(d, h, seed=0):
    return _layer_params(d, h, torch.Generator().manual_seed(seed))


def _train_step(t_len, n, d, h):
    x = torch.randn(t_len, n, d)
    res = dl.ddlstm_layer(x, *_params(d, h), n1=n // 2, eps=1e-5, dual_domain=True)
    res.out.sum().backward()


def _consistent(ph):
    slack = 50.0  # us: the wholes are timed around their parts by separate clock reads
    assert ph["fwd_total"] + slack >= (ph["x_proj"] + ph["x_stats"] + ph["fwd_region"]
                                       + ph["fwd_gemm_outside"])
    assert ph["bwd_total"] + slack >= (ph["bwd_region"] + ph["weight_grads"]
                                       + ph["bwd_gemm_outside"])
    for k in ("fwd", "bwd"):
        th = ph["threads"]
        # the busiest thread's time is inside the region and at least the mean thread's
        assert ph[f"{k}_busy"] <= ph[f"{k}_region"] + slack
        assert ph[f"{k}_busy"] * th + slack >= ph[f"{k}_kernels"]
        assert ph[f"{k}_kernels"] > 0


def test_blas_sized_layer_counts_steps_threads_and_in_region_gemms(two_threads):
    # N 4H H > 2^16: the per-step GEMMs run inside the step region; 5 tiles of 16 units make
    # two tasks with 2 threads (4 tiles and 1).
    t_len = 3
    _train_step(t_len, 128, 5, 72)  # warm-up (workspace, first-use registrations)
    with dl.timed_phases() as ph:
        _train_step(t_len, 128, 5, 72)
    assert set(ph) == set(dl.PHASES)
    assert ph["fwd_steps"] == t_len and ph["bwd_steps"] == t_len
    assert ph["threads"] == 2
    # every forward step and every backward step but the first (t = T - 1 has no dL/dh_t
    # product) ran its GEMM in the region; only grad_h0's (after step 0) ran outside
    assert ph["fwd_gemm"] > 0 and ph["bwd_gemm"] > 0
    assert ph["fwd_gemm_outside"] == 0 and ph["bwd_gemm_outside"] > 0
    assert ph["x_proj"] > 0 and ph["weight_grads"] > 0
    assert ph["fwd_busy"] * 2 + 50.0 >= ph["fwd_gemm"] + ph["fwd_kernels"]
    _consistent(ph)


def test_small_layer_times_its_gemms_outside_the_region():
    # N 4H H <= 2^16: the step GEMM runs on the calling thread before a one-thread region.
    t_len = 4
    with dl.timed_phases() as ph:
        _train_step(t_len, 4, 3, 8)
    assert ph["fwd_steps"] == t_len and ph["bwd_steps"] == t_len
    assert ph["threads"] == 1
    assert ph["fwd_gemm"] == 0 and ph["bwd_gemm"] == 0
    assert ph["fwd_gemm_outside"] > 0 and ph["bwd_gemm_outside"] > 0
    _consistent(ph)


def test_nothing_is_timed_outside_the_block():
    with dl.timed_phases() as ph:
        _train_step(2, 4, 3, 8)
    before = dict(ph)
    _train_step(2, 4, 3, 8)  # timers off: adds nothing, and ph is a snapshot
    assert ph == before
    with dl.timed_phases() as empty:
        pass
    assert all(v == 0.0 for v in empty.values())
    # a new block starts from zero
    with dl.timed_phases() as again:
        _train_step(2, 4, 3, 8)
    assert again["fwd_steps"] == 2 and again["bwd_steps"] == 2


def test_evaluation_op_is_not_timed():
    p = _params(3, 8)
    aff = dl.eval_affine(torch.zeros(2, 2, 32), torch.ones(2, 2, 32), p[3].detach(),
                         p[4].detach(), torch.zeros(2, 2, 32), torch.ones(2, 2, 32),
                         p[5].detach(), p[6].detach(), p[2].detach(), torch.zeros(2, 8),
                         torch.ones(2, 8), p[7].detach(), p[8].detach(), 1e-5)
    with torch.no_grad(), dl.timed_phases() as ph:
        dl.ddlstm_layer_eval(torch.randn(2, 4, 3), p[0].detach(), p[1].detach(), aff,
                             torch.zeros(4, dtype=torch.long))
    assert ph["fwd_steps"] == 0 and ph["fwd_total"] == 0.0


def test_benchmark_step_breakdown_adds_up():
    from actrec.bench.ddlstm import gemm_inside_vs_alone, step_phases

    gen = torch.Generator().manual_seed(0)
    x, grad = torch.randn(4, 128, 8, generator=gen), torch.randn(4, 128, 32, generator=gen)
    layers = [_layer_params(8, 32, gen)]
    ph = step_phases(x, grad, layers, 64, rounds=2)
    parts = [k for k in ph if k.startswith(("fwd_", "bwd_", "outside"))]
    assert len(parts) == 12
    # the ops' parts (per-thread ones as means over threads) fit inside the ops' time: each
    # region's mean thread is at most its busiest, and nothing is counted twice
    assert sum(ph[k] for k in parts if k != "outside_ops") <= ph["step"] - ph["outside_ops"] + 1e-6
    assert ph["fwd_gemm"] > 0 and ph["bwd_kernels"] > 0 and ph["threads"] >= 1
    gemm = gemm_inside_vs_alone(x, grad, layers, 64, rounds=1, phases=ph)
    # inside the op: the phase timers' per-thread step GEMM (or the profiler's per-step call)
    assert gemm["us"]["inside_fwd"] is not None and gemm["us"]["inside_fwd"] > 0
