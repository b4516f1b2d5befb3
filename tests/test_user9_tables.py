"""Tables a researcher reads at 80 columns: long dataset references (every option of a
synthetic kitchen) and which dataset a transfer run is for."""

from __future__ import annotations

from types import SimpleNamespace

from rich.console import Console

LONG = "synthetic:kitchen=a,participants=3,videos_per_participant=2"
OTHER = "synthetic:kitchen=b,participants=3,videos_per_participant=2,seed=4"


def render(renderable) -> str:
    console = Console(width=80, record=True, color_system=None)
    console.print(renderable)
    return console.export_text()


def test_dataset_labels_key_long_references_and_keep_short_ones_golden():
    from actrec.cli.common import dataset_labels

    shown, legend = dataset_labels(["shapes", LONG, OTHER, LONG], width=13)
    assert shown == {"shapes": "shapes", LONG: "synthetic [1]", OTHER: "synthetic [2]"}
    assert legend == [f"[1] {LONG}", f"[2] {OTHER}"]
    shown, _ = dataset_labels(["a-very-long-dataset-name:x=1"], width=13)
    assert shown == {"a-very-long-dataset-name:x=1": "a-very-l… [1]"}


def test_runs_table_names_long_references_by_key_and_lists_them_below():
    """`actrec runs` folded "synthetic:kitchen=a,participants=3,..." into 5-letter pieces over
    a dozen lines ("synthe", "tic:", ...), and the scores as "onli/ne:"."""
    from actrec.cli.runs_cmd import render_runs

    row = {"run": "20261201-215104-ema", "model": "ema", "data": ["shapes", LONG],
           "protocol": "transfer", "labels": "concat", "iterations": 100, "best_val": None,
           "selected_on_test": False,
           "evaluations": {"online": {"shapes": 0.9912, LONG: 0.4725}}}
    joint = {**row, "run": "20261201-214945-ddlstm", "data": ["shapes", OTHER],
             "protocol": "joint", "evaluations": {}}
    text = render(render_runs([row, joint]))
    lines = text.splitlines()
    assert max(map(len, lines)) <= 80, text
    assert sum("synthetic [1]" in line for line in lines) == 1
    assert sum("synthetic [2]" in line for line in lines) == 1
    assert f"[1] {LONG}" in lines and f"[2] {OTHER}" in lines
    for whole in ("20261201-215104-ema", "20261201-214945-ddlstm", "online:", "D1 99.12 %",
                  "D2 47.25 %", "transfer"):
        assert whole in text, (whole, text)


def test_eval_table_says_which_dataset_is_a_transfer_runs_target():
    from actrec.cli.eval_cmd import render_eval

    score = {"videos": 3, "frames": 342, "frame_accuracy": 0.9912,
             "mean_video_accuracy": 0.9912, "edit": 1.0, "f1": {"10": 1.0, "25": 1.0, "50": 1.0}}
    data = {"run_dir": "runs/t", "online": True,
            "protocol": {"mode": "online", "training_protocol": "transfer",
                         "roles": {"shapes": "target", LONG: "source"}},
            "datasets": {"shapes": score, LONG: score}}
    text = render(render_eval(SimpleNamespace(to_dict=lambda: data)))
    lines = text.splitlines()
    assert max(map(len, lines)) <= 80, text
    cells = [line.split("│")[1].strip() for line in lines if line.startswith("│")]
    assert [c for c in cells if c] == ["shapes", "(target)", "synthetic", "[1]", "(source)"]
    assert f"[1] {LONG}" in lines
    assert "transfer run" in text

    joint = {**data, "protocol": {"mode": "online", "training_protocol": "joint", "roles": {}}}
    text = render(render_eval(SimpleNamespace(to_dict=lambda: joint)))
    assert "(target)" not in text and "(source)" not in text and "transfer" not in text


def test_train_summary_rounds_floats_and_names_the_command_that_scores_the_run():
    from actrec.cli.train_cmd import _render

    result = SimpleNamespace(to_dict=lambda: {
        "run_dir": "/runs/r1", "iterations": 200, "resumed_from": 0,
        "final_loss": 0.010000250581651927, "elapsed_s": 8.32})
    text = render(_render(result))
    assert "0.0100002505" not in text and "│ final_loss   │ 0.01 " in text, text
    assert "│ iterations   │ 200 " in text and "8.32" in text
    assert "score it: actrec eval /runs/r1" in text


def test_train_summary_of_a_non_causal_model_names_offline_evaluation(tmp_path):
    import json

    from actrec.cli.train_cmd import _render

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"model": {"name": "birnn", "causal": False}}))
    result = SimpleNamespace(to_dict=lambda: {"run_dir": str(run), "iterations": 2})
    text = " ".join(render(_render(result)).split())  # the long path wraps at 80 columns
    assert f"score it: actrec eval {run} --offline" in text


def test_progress_without_a_terminal_writes_nothing_when_no_bar_is_left(capsys):
    """rich printed an empty line on stderr when its display stopped, so every command that
    failed inside one said "\\nError: ..." when piped."""
    from actrec.cli.common import make_progress

    with make_progress() as progress:
        task = progress.add_task("eval", total=2)
        progress.advance(task)
        progress.remove_task(task)
    assert capsys.readouterr().err == ""
    with make_progress() as progress:
        progress.add_task("extract", total=2)
    err = capsys.readouterr().err
    assert err.startswith("extract") and "0/2" in err  # the bars left are still printed once


def test_fusion_table_keeps_run_names_whole_at_80_columns():
    """`actrec fuse` folded "20261201-214914-ema" into "20261201-214/914-ema"."""
    from pathlib import Path

    from actrec.cli.fuse_cmd import _render

    ds = SimpleNamespace(frame_accuracy=0.9971, edit=1.0, f1={"10": 1.0, "25": 1.0, "50": 1.0})
    members = [SimpleNamespace(run_dir=Path(f"/runs/{name}"), protocol={},
                               datasets={"shapes": ds})
               for name in ("20261201-214914-ema", "20261201-214940-lstm-split1")]
    result = SimpleNamespace(protocol={"mode": "online"}, online=True, datasets={"shapes": ds},
                             members=members, weights=[1.0, 2.0])
    text = render(_render(result))
    assert max(map(len, text.splitlines())) <= 80, text
    assert "20261201-214914-ema " in text and "20261201-214940-lstm-split1 " in text
    assert "F1@10/25/50" in text


def test_runs_table_shows_references_of_one_dataset_by_their_options():
    from actrec.cli.runs_cmd import render_runs

    row = {"run": "ddlstm-joint", "model": "ddlstm",
           "data": ["synthetic:kitchen=a", "synthetic:kitchen=b"], "protocol": "joint",
           "labels": "concat", "iterations": 300, "best_val": None, "selected_on_test": False,
           "evaluations": {"online": {"a": 0.8304, "b": 0.8992}}}
    text = render(render_runs([row]))
    lines = text.splitlines()
    assert any("kitchen=a" in line and "ddlstm-joint" in line for line in lines), text
    assert "each dataset is synthetic:<row>" in lines and "[1]" not in text


def test_progress_without_a_terminal_writes_lines_for_long_bars(capsys, monkeypatch):
    """A batch job (`2> log`) saw no bar until the end: a bar that runs long writes a line
    every LOG_EVERY_S seconds and one when it completes; quick ones write none."""
    from actrec.cli import common

    with common.make_progress() as progress:  # the default: 30 s, far longer than this
        task = progress.add_task("quick", total=2)
        progress.advance(task, 2)
    assert "quick:" not in capsys.readouterr().err
    monkeypatch.setattr(common, "LOG_EVERY_S", 0.0)  # every update is "long" now
    with common.make_progress() as progress:
        task = progress.add_task("[bold]videos[/]", total=1712)
        progress.advance(task, 120)
        progress.update(task, completed=1712)
        progress.advance(task)  # past its end: no second completion line
        progress.remove_task(task)
    lines = capsys.readouterr().err.splitlines()
    assert [line.rsplit(",", 1)[0] for line in lines] == [
        "videos: 120/1,712 (7 %)", "videos: 1,712/1,712 (100 %)"], lines
    assert all(line.endswith(", 00:00:00") for line in lines)


def test_split_tables_name_a_transfer_sweeps_target_when_the_summary_has_roles():
    from actrec.cli.eval_cmd import render_splits

    metric = {"per_split": {"1": 0.5, "2": 0.7}, "mean": 0.6, "std": 0.1414, "n": 2}
    entry = {"splits": {"1": "1", "2": "2"}, "metrics": {"frame_accuracy": metric}}
    summary = {"mode": "online", "missing": [], "splits": ["1", "2"],
               "datasets": {"shapes": entry, "kitchen": entry},
               "runs": {"1": "/r/t-split1", "2": "/r/t-split2"},
               "roles": {"shapes": "target", "kitchen": "source"}}
    text = " ".join(render(render_splits(summary)).split())
    assert "over the splits of shapes (target) (%)" in text
    assert "over the splits of kitchen (source) (%)" in text
    summary.pop("roles")
    assert "(target)" not in render(render_splits(summary))


def test_progress_without_a_terminal_prints_no_bars_above_an_error(capsys):
    import pytest

    from actrec.cli.common import make_progress

    with pytest.raises(RuntimeError), make_progress() as progress:
        progress.add_task("videos", total=9)
        raise RuntimeError("weights file missing")
    assert capsys.readouterr().err == ""
