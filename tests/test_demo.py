"""`actrec demo` end to end on a tiny plan: every stage runs, and a second run reuses it all."""

from __future__ import annotations

import json
import os

import pytest

from actrec.demo import DemoPlan, run_demo
from actrec.evaluate import evaluate_run
from actrec.io.features import FeatureStore

TINY = DemoPlan(
    runs=(("lstm-single", "lstm", False, {"hidden": "8"}),
          ("ddlstm-joint", "ddlstm", True, {"hidden": "8", "layers": "1", "max_len": "16"})),
    history=16, iterations=4, mix=(2, 2),
    kitchen_options=(("participants", "3"), ("videos_per_participant", "1"),
                     ("frames_mean", "40"), ("size", "32")),
)


@pytest.mark.slow
def test_demo_runs_every_stage_and_resumes(tmp_path):
    first = run_demo(tmp_path, plan=TINY)
    rows = {(r["run"], r["dataset"]): r for r in first.rows}
    assert set(rows) == {("lstm-single", "kitchen a"), ("ddlstm-joint", "kitchen a"),
                         ("ddlstm-joint", "kitchen b")}
    # Every row scores exactly the labelled frames of its kitchen's test videos, read here
    # straight from the feature store.
    for (run, kitchen), row in rows.items():
        store = FeatureStore.open(tmp_path / "features" / (kitchen[-1] + ".zarr"))
        test = next(iter(store.splits.values()))["test"]
        assert row["frames"] == sum(int((store.read(v)[1] >= 0).sum()) for v in test)
        assert row["videos"] == len(test)
    # The printed online accuracy is what an independent offline pass gives (for a model
    # whose stepping equals its forward pass), and what the run's results file holds.
    offline = evaluate_run(tmp_path / "runs" / "lstm-single", online=False)
    (off,) = offline.datasets.values()
    assert rows[("lstm-single", "kitchen a")]["frame_accuracy"] == off.frame_accuracy
    saved = json.loads((tmp_path / "runs" / "ddlstm-joint" / "eval-online.json").read_text())
    got = [d["frame_accuracy"] for d in saved["datasets"].values()]
    assert got == [rows[("ddlstm-joint", k)]["frame_accuracy"] for k in ("kitchen a", "kitchen b")]
    # The alphas shown are the trained ones the last training log line recorded.
    logged = [json.loads(line) for line in
              (tmp_path / "runs" / "ddlstm-joint" / "metrics.jsonl").read_text().splitlines()]
    shown = rows[("ddlstm-joint", "kitchen a")]["alphas"]
    assert len(shown) == 1
    assert [round(a, 4) for a in next(iter(logged[-1]["alphas"].values()))] == \
        next(iter(shown.values()))
    assert rows[("lstm-single", "kitchen a")]["alphas"] == {}

    made = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")
            if p.is_file() and p.suffix in (".mp4", ".pt") or p.name == "zarr.json"}
    second = run_demo(tmp_path, plan=TINY)
    assert [r["frame_accuracy"] for r in second.rows] == [r["frame_accuracy"] for r in first.rows]
    assert {p: p.stat().st_mtime_ns for p in made} == made  # nothing regenerated or retrained


def test_demo_table_and_json(tmp_path):
    """What `actrec demo` prints: one row per run and test kitchen, accuracy in percent."""
    from rich.console import Console

    from actrec.cli.demo_cmd import _render

    plan = DemoPlan(runs=TINY.runs[:1], history=8, iterations=1, mix=(2, 0),
                    kitchen_options=TINY.kitchen_options)
    result = run_demo(tmp_path, plan=plan)
    console = Console(width=200, record=True, file=open(os.devnull, "w"))
    console.print(_render(result))
    text = console.export_text()
    accuracy = result.rows[0]["frame_accuracy"]
    assert "lstm-single" in text and "kitchen a" in text and f"{100 * accuracy:.1f} %" in text
    assert json.loads(json.dumps(result.to_dict()))["results"][0]["run"] == "lstm-single"
