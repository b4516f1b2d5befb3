"""`actrec demo` end to end on a tiny plan: every stage runs, and a second run reuses it all."""

from __future__ import annotations

import json
import os

import pytest

from actrec.demo import DemoPlan, run_demo

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
    assert all(0.0 <= r["frame_accuracy"] <= 1.0 and r["frames"] > 0 for r in first.rows)
    alphas = rows[("ddlstm-joint", "kitchen a")]["alphas"]
    assert len(alphas) == 1 and all(0.5 <= a <= 1.0 for a in next(iter(alphas.values())))
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
