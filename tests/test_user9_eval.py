"""`actrec eval` of a run whose feature store was moved or renamed, and what an evaluation
records about a transfer run's datasets: through the real command line on real Zarr stores."""

from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner
from test_presets_runs_cli import make_store

from actrec.cli import cli
from actrec.io.features import FeatureStore


def invoke(args, home):
    return CliRunner().invoke(cli, args, env={"ACTREC_HOME": str(home)})


@pytest.fixture(scope="module")
def transfer_run(tmp_path_factory):
    """A transfer run: pre-trained on toy2 (D2, 5 classes), fine-tuned on toy1 (D1)."""
    root = tmp_path_factory.mktemp("u9eval")
    home = root / "home"
    a = make_store(home / "features" / "toy1@1" / "toy.zarr", 1)
    b = make_store(home / "features" / "toy2@2" / "toy.zarr", 2, classes=5)
    run = root / "runs" / "transfer"
    out = invoke(["train", "lstm", "--d1", str(a), "--d2", str(b), "--protocol", "transfer",
                  "--pretrain-iters", "2", "--finetune-iters", "2", "--mix", "2:2",
                  "--history", "12", "-o", "hidden=4", "--run-dir", str(run)], home)
    assert out.exit_code == 0, out.output
    return home, run, a, b


def test_a_transfer_runs_result_names_its_target_and_source(transfer_run):
    home, run, _, _ = transfer_run
    out = invoke(["eval", str(run), "--json"], home)
    assert out.exit_code == 0, out.output
    protocol = json.loads(out.output)["protocol"]
    assert protocol["training_protocol"] == "transfer"
    assert protocol["roles"] == {"toy1": "target", "toy2": "source"}
    table = invoke(["eval", str(run)], home)
    assert "toy1" in table.output and "(target)" in table.output
    assert "(source)" in table.output and "transfer run" in table.output


@pytest.mark.slow
def test_a_moved_store_is_found_by_identity_and_evaluated_with_store(transfer_run, tmp_path):
    home, run, a, b = transfer_run
    scores = json.loads(invoke(["eval", str(run), "--json"], home).output)["datasets"]
    moved = a.parent.with_name("toy1-renamed")
    a.parent.rename(moved)
    try:
        out = invoke(["eval", str(run)], home)
        assert out.exit_code == 1 and not isinstance(out.exception, AssertionError)
        message = " ".join(str(out.exception).split())
        assert f"D1's feature store {a} (dataset 'toy1', extractor 'toy')" in message
        assert "which is not there any more" in message
        assert f"in {(moved / 'toy.zarr').resolve()}:" in message
        assert f"--store {(moved / 'toy.zarr').resolve()} --store {b}" in message

        again = invoke(["eval", str(run), "--json", "--store", str(moved / "toy.zarr"),
                        "--store", str(b)], home)
        assert again.exit_code == 0, again.output
        got = json.loads(again.output)["datasets"]
        assert got["toy1"]["store"] == str((moved / "toy.zarr").resolve()) or \
            got["toy1"]["store"] == str(moved / "toy.zarr")
        for name in scores:  # the same data, the same scores
            assert {**got[name], "store": None} == {**scores[name], "store": None}
        # filed as the run's own online result (it is the trained data), with the path used
        assert sorted(p.name for p in run.glob("eval-*.json")) == ["eval-online.json"]
        assert json.loads((run / "eval-online.json").read_text())["protocol"]["stores"][0] \
            == str(moved / "toy.zarr")

        # A copy whose videos changed is refused like the trained store itself would be.
        changed = tmp_path / "changed.zarr"
        shutil.copytree(moved / "toy.zarr", changed)
        store = FeatureStore.open(changed)
        x, y = store.read("v4")
        store.write_video("v4", x[:40], y[:40], fps=15.0, source=None)
        refused = invoke(["eval", str(run), "--store", str(changed), "--store", str(b)], home)
        assert refused.exit_code == 1
        assert "changed since run" in str(refused.exception)
        assert "'v4': 50 -> 40" in str(refused.exception)

        # Elsewhere than the workspace: nothing found, and the option is named.
        far = tmp_path / "far"
        moved.rename(far)
        lost = invoke(["eval", str(run)], home)
        text = " ".join(str(lost.exception).split())
        assert lost.exit_code == 1 and "No store with the same data" in text
        assert f"--store PATH --store {b}" in text
        far.rename(moved)
    finally:
        moved.rename(a.parent)
