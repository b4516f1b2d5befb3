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


ONE = DemoPlan(runs=TINY.runs[:1], history=8, iterations=3, mix=(2, 0),
               kitchen_options=TINY.kitchen_options)
STAGES = ["demo 1/6 generate kitchen a (synthetic videos)",
          "demo 2/6 extract kitchen a (causal colorgrad features)",
          "demo 3/6 generate kitchen b (synthetic videos)",
          "demo 4/6 extract kitchen b (causal colorgrad features)",
          "demo 5/6 train lstm-single (lstm on kitchen a, 3 iterations)",
          "demo 6/6 eval lstm-single (online, frame by frame)"]


def test_demo_shows_each_stage_and_its_bars_and_is_quiet_under_json(tmp_path, monkeypatch,
                                                                     capsys):
    """A bar of the demo's stages over each stage's own bars (video generation, extraction,
    training iterations, evaluation), removed when their stage ends; one line per stage where
    bars are not redrawn (not a terminal); nothing on stderr under --json."""
    import io

    from rich.console import Console
    from rich.progress import Progress

    import actrec.demo
    from actrec.cli import main

    bars: list[tuple[str, float | None]] = []

    class Recording(Progress):  # rich's own Progress, remembering every bar it was given
        def add_task(self, description, *args, **kwargs):
            bars.append((description, kwargs.get("total")))
            return super().add_task(description, *args, **kwargs)

    log = io.StringIO()
    with Recording(console=Console(file=log, width=200)) as progress:
        run_demo(tmp_path, plan=ONE, progress=progress)
        (left,) = progress.tasks  # the stages' bar alone: every stage removed its own
    assert (left.description, left.completed, left.total) == ("demo", 6, 6)
    assert [line for line in log.getvalue().splitlines() if line.startswith("demo ")][:6] \
        == STAGES
    added = dict(bars)
    assert added["demo"] == 6
    assert added["synthetic kitchen a"] == added["synthetic kitchen b"] == 3  # videos made
    assert added["videos"] == 3 and added["frames"] > 0  # extraction
    assert added["train lstm"] == 3  # iterations, with ETA
    assert any(d.startswith("online eval synthetic:") for d in added)

    monkeypatch.setattr(actrec.demo, "DEFAULT_PLAN", ONE)
    main(["demo", "--cache", str(tmp_path), "--json"])
    out, err = capsys.readouterr()
    assert err == ""
    rows = json.loads(out)["results"]
    assert [(r["run"], r["dataset"]) for r in rows] == [("lstm-single", "kitchen a")]
    main(["demo", "--cache", str(tmp_path)])  # everything reused, the stages still named
    out, err = capsys.readouterr()
    assert [line for line in err.splitlines() if line.startswith("demo ")][:6] == STAGES
    assert "lstm-single" in out and "online frame accuracy" in out


def test_ctrl_c_in_the_demo_says_to_run_the_demo_again(tmp_path):
    """Ctrl-C while the demo trains: the message is the demo's (run it again), not the
    training's advice to pass --run-dir, which `actrec demo` does not take."""
    import _thread
    import threading
    import time
    from dataclasses import replace

    from actrec.errors import Interrupted

    plan = replace(TINY, iterations=100_000)
    config = tmp_path / "runs" / "lstm-single" / "config.json"

    def interrupt_once_training():
        deadline = time.monotonic() + 120
        while not config.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
        _thread.interrupt_main()

    threading.Thread(target=interrupt_once_training, daemon=True).start()
    with pytest.raises(Interrupted) as stopped:
        run_demo(tmp_path, plan=plan)
    message = str(stopped.value)
    assert f"is kept under {tmp_path}: run `actrec demo` again" in message
    assert "--run-dir" not in message
