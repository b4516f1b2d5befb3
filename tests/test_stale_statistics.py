"""A run whose batch norms' running statistics are still mostly their start says so: short runs
of BN models evaluate with those statistics, online and offline, and score far below what
their weights do (a 40-iteration DDLSTM scored 0 % where re-estimated statistics gave 80 %)."""

from __future__ import annotations

import pytest
import torch
from test_train_eval import make_store

from actrec.nn.ddbn import DualDomainBatchNorm, SequenceBatchNorm
from actrec.nn.reestimate import STALE_SHARE, stale_statistics_warning
from actrec.train import TrainSpec, train_model


class _Holder(torch.nn.Module):
    def __init__(self, norm):
        super().__init__()
        self.norm = norm


def _trained(norm, updates, scale, dual=False):
    """``norm`` after ``updates`` training forwards of activations of std ``scale``."""
    g = torch.Generator().manual_seed(0)
    for _ in range(updates):
        h = torch.randn(3, 8, 4, generator=g, dtype=torch.float64) * scale
        if dual:
            alpha = torch.tensor([0.75, 0.75], dtype=torch.float64)
            norm(h, alpha, torch.tensor([0] * 4 + [1] * 4))
        else:
            norm(h)
    return _Holder(norm)


def test_small_activations_after_few_updates_are_named_with_the_share_left():
    # variance of the batches 1e-3; after 40 updates at momentum 0.1, 0.9**40 = 1.48 % of the
    # start (1) is left: about 0.0148 / (0.0148 + 0.001) = 94 % of each running variance
    model = _trained(SequenceBatchNorm(4, 5).double(), 40, 0.03162)
    share = float((0.9 ** 40 / (model.norm.running_var[0] + model.norm.eps)).median())
    assert 0.90 < share < 0.97  # the batches' variances scatter around 1e-3
    text = stale_statistics_warning(model, 40)
    assert text is not None and text.startswith(
        f"after 40 update(s) at momentum 0.1, {100 * share:.0f} % of the running variances of "
        f"batch norm 'norm' (median over channels) is still their starting value 1")
    assert "--reestimate-batches 20" in text and "train at least ~44 iterations" in text


def test_converged_or_large_activations_give_no_warning():
    assert stale_statistics_warning(_trained(SequenceBatchNorm(4, 5).double(), 300, 0.03), 300) \
        is None
    # unit-variance activations: after 40 updates the start is 1.5 % of the running variance
    assert stale_statistics_warning(_trained(SequenceBatchNorm(4, 5).double(), 40, 1.0), 40) \
        is None


def test_a_channel_without_variance_counts_once_its_start_is_below_eps():
    # A recurrent norm's first step normalises W_h h0 = 0: its batches have variance 0, so its
    # running variance is the start's remainder alone (0.9**150 = 1.4e-7 after 150 updates),
    # which beside eps (1e-5) changes no output: no warning (it warned up to ~670 updates).
    def trained(updates):
        norm, g = SequenceBatchNorm(4, 5).double(), torch.Generator().manual_seed(0)
        for _ in range(updates):
            h = torch.randn(3, 8, 4, generator=g, dtype=torch.float64)
            h[0] = 0.0  # t = 0: a zero state
            norm(h)
        return _Holder(norm)

    long = trained(150)
    assert float(long.norm.running_var[0].max()) == pytest.approx(0.9 ** 150, rel=1e-9)
    assert stale_statistics_warning(long, 150) is None
    # 10 updates: 0.9**10 = 35 % of the start left, far above eps: still said
    assert stale_statistics_warning(trained(10), 10) is not None


def test_ddbn_domains_are_judged_where_they_trained_and_torch_batch_norm_too():
    ddbn = _trained(DualDomainBatchNorm(4, 5).double(), 40, 0.03162, dual=True)
    assert "batch norm 'norm'" in stale_statistics_warning(ddbn, 40)
    bn = torch.nn.BatchNorm1d(4).double()
    for _ in range(40):
        bn(torch.randn(16, 4, dtype=torch.float64) * 0.03162)
    text = stale_statistics_warning(_Holder(bn), 0)  # torch's counts its own updates
    assert text is not None and text.startswith("after 40 update(s)")
    assert STALE_SHARE == 0.25


@pytest.mark.slow
def test_a_short_ddlstm_run_warns_and_a_reestimated_one_does_not(tmp_path):
    store = make_store(tmp_path / "a.zarr", dim=6, classes=3, n_train=6, n_test=2, seed=11)
    base = dict(model="ddlstm", d1=store, model_options={"hidden": 8, "layers": 1}, history=12,
                iterations=4, mix=(4, 0), lr=0.02, optimizer="adam", log_every=1, seed=5)
    short = train_model(TrainSpec(**base), tmp_path / "short")
    assert short.warnings and "running variances of batch norm" in short.warnings[0]
    assert short.to_dict()["warnings"] == list(short.warnings)
    fixed = train_model(TrainSpec(**base, reestimate_batches=2), tmp_path / "fixed")
    assert fixed.warnings == () and "warnings" not in fixed.to_dict()


def test_the_cli_says_it_on_stderr_and_json_carries_it(tmp_path):
    from click.testing import CliRunner

    from actrec.cli import cli

    store = make_store(tmp_path / "a.zarr", dim=6, classes=3, n_train=6, n_test=2, seed=11)
    args = ["train", "ddlstm", "--d1", str(store), "--iterations", "3", "--history", "12",
            "--mix", "4", "-o", "hidden=8", "-o", "layers=1"]
    env = {"ACTREC_HOME": str(tmp_path / "home")}
    out = CliRunner().invoke(cli, args + ["--run-dir", str(tmp_path / "r1")], env=env)
    assert out.exit_code == 0, out.output
    assert "warning: after 3 update(s) at momentum 0.1" in out.stderr
    assert "warning" not in out.stdout  # the result alone on stdout
    as_json = CliRunner().invoke(cli, args + ["--run-dir", str(tmp_path / "r2"), "--json"],
                                 env=env)
    import json

    assert json.loads(as_json.stdout)["warnings"][0].startswith("after 3 update(s)")
    assert "warning" not in as_json.stderr
