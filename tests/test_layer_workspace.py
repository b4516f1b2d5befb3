"""The fused layer ops' workspace cache (csrc/cpu/workspace.cpp): the training op's large
buffers are reused across calls, reused memory never changes a result, and the cache is
bounded, can be emptied and can be switched off."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from actrec.ops import ddlstm_layer as dl

# T N 4H floats = 1.25 MiB per [T, N, 4H] buffer: large enough for the cache (>= 1 MiB).
T, N, D, H = 40, 16, 6, 128


@pytest.fixture(scope="module", autouse=True)
def extension():
    if dl._ext_disabled():
        pytest.skip("ACTREC_DISABLE_EXT is set")
    assert dl.fused_layer_available(torch.zeros(1, 1, 1)), "the actrec extension did not load"


def _params(seed):
    g = torch.Generator().manual_seed(seed)

    def r(*shape, shift=0.0):
        return (torch.randn(*shape, generator=g) * 0.3 + shift).requires_grad_()

    return [r(4 * H, D), r(4 * H, H), r(4 * H), r(4 * H, shift=1.0), r(4 * H),
            r(4 * H, shift=1.0), r(4 * H), r(H, shift=1.0), r(H),
            torch.tensor([0.7, 0.8], requires_grad=True)]


def _step(seed):
    """One training step: outputs, statistics and every gradient."""
    g = torch.Generator().manual_seed(seed + 100)
    x = torch.randn(T, N, D, generator=g).requires_grad_()
    p = _params(seed)
    res = dl.ddlstm_layer(x, *p, n1=N // 2, eps=1e-5, dual_domain=True)
    loss = (res.out * torch.randn(res.out.shape, generator=g)).sum()
    grads = torch.autograd.grad(loss, [x, *p])
    return [res.out.detach(), res.c_n.detach(), *[s.detach() for s in res.stats[:6]], *grads]


def test_buffers_are_reused_and_released():
    dl.release_workspace()
    _step(0)
    held = dl.workspace_bytes()
    # xp, gh (forward, freed with the graph) and their gradients (backward): >= 4 buffers
    assert held >= 4 * T * N * 4 * H * 4
    _step(1)
    assert dl.workspace_bytes() == held  # the second step took them all back out and returned them
    assert dl.release_workspace() == held
    assert dl.workspace_bytes() == 0


def test_reused_memory_changes_no_result():
    """Blocks come back holding the previous call's values: a kernel that read a buffer before
    writing it would see them. A step after a different one equals the same step on fresh
    memory, bit for bit."""
    dl.release_workspace()
    fresh = _step(2)
    _step(3)  # fills the cached blocks with other values
    assert dl.workspace_bytes() > 0
    reused = _step(2)
    for a, b in zip(fresh, reused):
        assert torch.equal(a, b)


def _run(env_value: str) -> str:
    code = ("import torch; from actrec.ops import ddlstm_layer as dl; "
            "import tests.test_layer_workspace as w; w._step(0); print(dl.workspace_bytes())")
    env = dict(os.environ, ACTREC_WORKSPACE_CACHE_MB=env_value)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=root, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1]


@pytest.mark.slow
def test_cache_limit_from_the_environment():
    assert _run("0") == "0"  # off: every buffer goes back to the system
    assert _run("5") == str(2 * (2 << 20))  # 5 MiB: two of the four 2 MiB-rounded blocks fit
