"""What a new user met on workflows no earlier trial covered (session 8): Ctrl-C during
`actrec reproduce` says how to finish the grid (not a cell's own --run-dir advice), and the
grid then finishes from the interrupted cell's checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.progress import Progress
from test_reproduce import breakfast_table

from actrec.errors import Interrupted
from actrec.reproduce import reproduce

_ONE_CELL = breakfast_table(
    "onecell", "one LSTM cell",
    """[methods.lstm]
kind = "train"
model = "lstm"
protocol = "single"

""",
    """[[columns]]
label = "LSTM"
method = "lstm"

[[rows]]
labels = ["0"]
split = 0
paper = [30.78]
""")


class _CtrlCInTraining(Progress):
    """A real (silent) progress display whose Nth training step is where the user pressed
    Ctrl-C: the KeyboardInterrupt comes out of the training loop as it would from a signal."""

    def __init__(self, after: int) -> None:
        super().__init__(disable=True)
        self.after, self.training = after, set()

    def add_task(self, description, *args, **kwargs):
        task = super().add_task(description, *args, **kwargs)
        if description.endswith(" lstm"):  # train.py's task: "<phase> <model>"
            self.training.add(task)
        return task

    def advance(self, task, advance=1):
        super().advance(task, advance)
        if task in self.training:
            self.after -= 1
            if self.after == 0:
                raise KeyboardInterrupt


@pytest.mark.slow
def test_ctrl_c_in_a_reproduce_cell_says_run_reproduce_again_and_the_rerun_finishes(tmp_path):
    table = tmp_path / "onecell.toml"
    table.write_text(_ONE_CELL)
    with pytest.raises(Interrupted) as info:
        reproduce(table, tmp_path, preset="tiny", inputs="store", progress=_CtrlCInTraining(20))
    message = str(info.value)
    # The cell's own advice ("run the same command again with --run-dir <cell>") would train
    # that one cell outside the grid: the user is told to run reproduce again instead.
    assert "--run-dir" not in message
    assert "run the same `actrec reproduce` command again" in message
    folder = tmp_path / "reproduce" / "tiny" / "onecell"
    assert str(folder) in message
    (cell,) = (folder / "runs").iterdir()
    assert not (cell / "eval-online.json").exists()
    assert not (folder / "table.json").exists()

    result = reproduce(table, tmp_path, preset="tiny", inputs="store")
    assert result["complete"], result["failures"]
    lines = [json.loads(x) for x in (cell / "metrics.jsonl").read_text().splitlines()]
    assert [x["iteration"] for x in lines if x.get("phase") == "train"] == [10, 20, 30]
    scored = json.loads((cell / "eval-online.json").read_text())
    value = result["rows"][0]["cells"][0]["mean"]
    assert value == pytest.approx(next(iter(scored["datasets"].values()))["frame_accuracy"])


def test_train_all_splits_table_keeps_run_names_whole_at_80_columns():
    """`actrec train --all-splits` lists its runs: the names `actrec eval` takes must be whole
    in an 80-column terminal (full workspace paths were cut to "/home/…/runs/2026…")."""
    from rich.console import Console

    from actrec.cli.train_cmd import _render_splits
    from actrec.train import TrainResult

    folder = Path("/home/someone/.cache/actrec/runs")
    names = [f"20261201-195847-ddlstm-split{k}" for k in "1234"]
    results = [TrainResult(folder / n, 50000, 0, 0.123456, 10.0, folder / n / "checkpoint.pt")
               for n in names]
    console = Console(width=80, record=True, color_system=None)
    console.print(_render_splits(results))
    text = console.export_text()
    assert "…" not in text
    assert max(map(len, text.splitlines())) <= 80
    rows = [line.split("│") for line in text.splitlines() if "split" in line and "│" in line]
    assert [r[1].strip() for r in rows] == names
    assert [r[4].strip() for r in rows] == ["0.1235"] * 4
    assert str(folder) in text
    assert f"actrec eval {folder / names[0]} --all-splits" in " ".join(text.split())


def _damage_one_chunk(store: Path, video: str) -> None:
    """Alter a features chunk of ``video`` in place (same size: only its checksum tells)."""
    chunk = next(p for p in sorted((store / "videos" / video / "features").rglob("*"))
                 if p.is_file() and p.name != "zarr.json")
    data = bytearray(chunk.read_bytes())
    data[-1] ^= 0xFF
    chunk.write_bytes(bytes(data))


def _advised_command(output: str, verb: str) -> list[str]:
    import re
    import shlex

    found = re.search(r"`(actrec import [^`]+)` " + verb, " ".join(output.split()))
    assert found, output
    return shlex.split(found.group(1))[1:]


def _mstcn_tree(root: Path) -> Path:
    """A small MS-TCN-layout folder: D x T features, one label name a line, no split lists."""
    import numpy as np

    rng = np.random.default_rng(0)
    (root / "features").mkdir(parents=True)
    (root / "groundTruth").mkdir()
    (root / "mapping.txt").write_text("0 background\n1 pour\n2 stir\n")
    for i, frames in enumerate((30, 24, 27, 21)):
        video = f"P{i}_cam01_tea"
        np.save(root / "features" / f"{video}.npy", rng.normal(size=(6, frames)))
        names = ["background", "pour", "stir"]
        (root / "groundTruth" / f"{video}.txt").write_text(
            "".join(names[(t // 8) % 3] + "\n" for t in range(frames)))
    return root


def _lstr_tree(root: Path) -> Path:
    import numpy as np

    rng = np.random.default_rng(1)
    for d in ("rgb_feats", "flow_feats", "target_perframe"):
        (root / d).mkdir(parents=True)
    (root / "data_info.json").write_text(json.dumps({"TOY": {
        "class_index": ["Background", "Jump", "Throw"],
        "train_session_set": ["video_a"], "test_session_set": ["video_b"]}}))
    for video, frames in (("video_a", 9), ("video_b", 7)):
        np.save(root / "rgb_feats" / f"{video}.npy", rng.normal(size=(frames, 4)))
        np.save(root / "flow_feats" / f"{video}.npy", rng.normal(size=(frames, 2)))
        np.save(root / "target_perframe" / f"{video}.npy",
                np.eye(3, dtype=np.float32)[np.arange(frames) % 3])
    return root


@pytest.mark.parametrize("layout", ["mstcn", "lstr"])
def test_check_of_an_imported_store_gives_the_import_command_that_redoes_damaged_videos(
        tmp_path, layout):
    """`actrec check` of an imported store named `actrec extract` as the way to redo the
    videos it removes, which cannot rebuild imported features: it gives the import command
    with the store's own root, name and options, and that command restores the store."""
    import numpy as np
    from click.testing import CliRunner

    from actrec.cli import cli
    from actrec.io.features import FeatureStore

    env = {"ACTREC_HOME": str(tmp_path / "home")}
    store = tmp_path / "imported.zarr"
    if layout == "mstcn":
        root = _mstcn_tree(tmp_path / "tea")
        made = ["import", "mstcn", str(root), "--name", "tea", "--out", str(store),
                "--lookahead", "10", "--splits", "kfold:2:seed=3", "--fps", "30"]
        video = "P1_cam01_tea"
    else:
        root = _lstr_tree(tmp_path / "toy")
        made = ["import", "lstr", str(root), "--name", "toy", "--out", str(store),
                "--rgb-dir", "rgb_feats", "--flow-dir", "flow_feats"]
        video = "video_b"
    out = CliRunner().invoke(cli, made, env=env)
    assert out.exit_code == 0, out.output
    before = FeatureStore.open(store).read(video)
    _damage_one_chunk(store, video)
    # Reading it (as train or eval do) refuses it, pointing at check, not at extract.
    from actrec.errors import DataError

    with pytest.raises(DataError, match=r"damaged.*it prints the `actrec import` command") as bad:
        FeatureStore.open(store).read(video)
    assert "actrec extract" not in str(bad.value)

    out = CliRunner().invoke(cli, ["check", str(store)], env=env, terminal_width=400)
    assert out.exit_code == 1
    assert "actrec extract" not in out.output
    first = _advised_command(out.output, "then imports them again")
    out = CliRunner().invoke(cli, ["check", str(store), "--drop-damaged"], env=env,
                             terminal_width=400)
    assert f"removed 1 damaged video from the store: {video}" in " ".join(out.output.split())
    redo = _advised_command(out.output, "imports it again")
    assert redo == first
    assert redo[:3] == made[:3] and redo[redo.index("--out") + 1] == str(store)
    advised = dict(zip(redo[3::2], redo[4::2]))
    for flag, value in zip(made[3::2], made[4::2]):  # every option it was imported with
        assert advised[flag] == (str(float(value)) if flag == "--fps" else value)
    assert not FeatureStore.open(store).has(video)

    again = CliRunner().invoke(cli, redo, env=env)
    assert again.exit_code == 0, again.output
    out = CliRunner().invoke(cli, ["check", str(store)], env=env)
    assert out.exit_code == 0, out.output
    feats, labels = FeatureStore.open(store).read(video)
    np.testing.assert_array_equal(feats, before[0])
    np.testing.assert_array_equal(labels, before[1])


def test_the_guides_import_section_names_only_options_that_exist():
    """docs/guide.md "Public features" tells users the import flags: each must exist (on
    `import mstcn` or `import lstr`, or on the command it names it with)."""
    import re

    import click

    from actrec.cli import cli

    guide = (Path(__file__).resolve().parents[1] / "docs" / "guide.md").read_text()
    start = guide.index("## Public features: `actrec import mstcn|lstr`")
    section = guide[start:guide.index("\n## ", start + 1)]
    ctx = click.Context(cli)

    def flags(*path: str) -> set[str]:
        command = cli
        for name in path:
            command = command.get_command(ctx, name)
        return {o for p in command.params for o in getattr(p, "opts", [])
                if o.startswith("--")} | {o for p in command.params
                                          for o in getattr(p, "secondary_opts", [])}

    known = flags("import", "mstcn") | flags("import", "lstr") | flags("train") | \
        flags("eval") | flags("check")
    named = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", section))
    assert named and named <= known, sorted(named - known)
    assert {"--rgb-dir", "--flow-dir", "--dataset-key", "--lookahead", "--splits"} <= named


def test_a_dataset_pointing_at_no_store_names_its_option(tmp_path):
    from actrec.errors import DataError
    from actrec.paper_tables import load_table
    from actrec.reproduce import PRESETS, plan_table, resolve_stores

    table = load_table("recassist-table4")
    nowhere = tmp_path / "nonexist.zarr"
    stores = resolve_stores(table, tmp_path, PRESETS["paper"],
                            {k: str(nowhere) for k in ("breakfast", "salads", "mpii")})
    with pytest.raises(DataError) as err:
        plan_table(table, tmp_path, PRESETS["paper"], stores)
    assert str(err.value).startswith(f"Breakfast (--dataset breakfast=...): {nowhere}: ")


def test_short_dataset_names_golden():
    from actrec.cli.eval_cmd import short_dataset_names

    a = "synthetic:folds=4,frames_mean=40,kitchen=a,size=32"
    b = "synthetic:folds=4,frames_mean=40,kitchen=b,size=32"
    assert short_dataset_names([a, b]) == (
        {a: "kitchen=a", b: "kitchen=b"},
        "each dataset is synthetic:<row>,folds=4,frames_mean=40,size=32")
    assert short_dataset_names([a]) == ({a: a}, None)  # one dataset: whole
    assert short_dataset_names(["bfidt", "sal"]) == ({"bfidt": "bfidt", "sal": "sal"}, None)
    mixed = ["mstcn:fps=30,root=/d/x", "gtea:fps=30"]
    assert short_dataset_names(mixed) == (
        {mixed[0]: "mstcn:root=/d/x", mixed[1]: "gtea"}, "every dataset also has fps=30")
    odd = ["weird:no-pairs-here", "weird:x=1"]
    assert short_dataset_names(odd) == ({n: n for n in odd}, None)


def test_eval_tables_tell_two_kitchens_apart_at_80_columns():
    """A joint run on two synthetic kitchens: the rows were "synthetic:folds=4,fr..." folded
    over nine lines (eval) or cut to "synthe…" (latency), the kitchens indistinguishable."""
    from types import SimpleNamespace

    from rich.console import Console

    from actrec.cli.eval_cmd import render_eval

    refs = [f"synthetic:folds=4,frames_mean=40,kitchen={k},participants=4,size=32,"
            f"videos_per_participant=2" for k in "ab"]
    score = {"videos": 2, "frames": 74, "frame_accuracy": 0.6351, "mean_video_accuracy": 0.6711,
             "edit": 1.0, "f1": {"10": 1.0, "25": 1.0, "50": 0.5}}
    latency = {"step_ms": {"median": 0.11, "p99": 24.06}, "frames_per_second_per_stream": 359,
               "throughput": {"streams": 2, "frames_per_second_per_stream": 32},
               "delay_frames": 0, "device": "cpu"}
    data = {"run_dir": "runs/joint", "online": True, "protocol": {"mode": "online"},
            "datasets": {r: score for r in refs}, "latency": {r: latency for r in refs}}
    console = Console(width=80, record=True, color_system=None)
    console.print(render_eval(SimpleNamespace(to_dict=lambda: data)))
    text = console.export_text()
    rows = [line for line in text.splitlines() if line.startswith(("│", "┃", "└", "┏"))]
    assert max(map(len, rows)) <= 80, text
    names = [line.split("│")[1].strip() for line in rows if line.startswith("│")
             and line.split("│")[1].strip()]
    assert names == ["kitchen=a", "kitchen=b", "kitchen=a", "kitchen=b"], text
    caption = ("each dataset is synthetic:<row>,folds=4,frames_mean=40,participants=4,"
               "size=32,videos_per_participant=2")  # wrapped at 80: compared without spaces
    assert "".join(text.split()).count("".join(caption.split())) == 1


def test_spec_errors_name_the_options_inside_a_sentence(tmp_path):
    """`--protocol transfer` without --pretrain-iters said "needs a source: d2 with
    pretrain_iters > 0, or init_from a trained run": field names, not the flags to type."""
    from click.testing import CliRunner

    from actrec.cli import cli

    env = {"ACTREC_HOME": str(tmp_path / "home")}
    stores = []
    for name in ("tea", "coffee"):
        root = _mstcn_tree(tmp_path / name)
        stores.append(str(tmp_path / f"{name}.zarr"))
        out = CliRunner().invoke(cli, ["import", "mstcn", str(root), "--name", name, "--out",
                                       stores[-1], "--lookahead", "0", "--splits", "kfold:2"],
                                 env=env)
        assert out.exit_code == 0, out.output
    out = CliRunner().invoke(cli, ["train", "lstm", "--d1", stores[0], "--d2", stores[1],
                                   "--protocol", "transfer", "--run-dir", str(tmp_path / "r")],
                             env=env)
    message = str(out.exception)
    assert message == ("invalid training spec: --protocol 'transfer' needs a source: --d2 with "
                       "--pretrain-iters > 0, or --init-from a trained run"), message
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_a_cell_whose_split_has_no_test_frames_is_not_reproducible_never_nan(tmp_path):
    """50 Salads imported from 10 of its 50 videos: split 2's test list names only videos
    the store lacks. Its cell printed "nan" with a difference of "+nan" as if scored."""
    from click.testing import CliRunner

    from actrec.cli import cli
    from actrec.reproduce_report import to_csv, to_markdown

    root = _mstcn_tree(tmp_path / "tea")
    (root / "splits").mkdir()
    videos = sorted(p.stem for p in (root / "groundTruth").glob("*.txt"))
    (root / "splits" / "train.split1.bundle").write_text(
        "".join(f"{v}.txt\n" for v in videos[:3]))
    (root / "splits" / "test.split1.bundle").write_text(f"{videos[3]}.txt\n")
    (root / "splits" / "train.split2.bundle").write_text(
        "".join(f"{v}.txt\n" for v in videos))
    (root / "splits" / "test.split2.bundle").write_text("P9_cam01_gone.txt\n")  # not shipped
    store = tmp_path / "tea.zarr"
    out = CliRunner().invoke(cli, ["import", "mstcn", str(root), "--name", "tea", "--out",
                                   str(store), "--lookahead", "0"],
                             env={"ACTREC_HOME": str(tmp_path / "home")})
    assert out.exit_code == 0, out.output
    table = tmp_path / "two.toml"
    table.write_text(_ONE_CELL.replace('id = "onecell"', 'id = "two"') + """
[[rows]]
labels = ["1"]
split = 1
paper = [19.53]
""")
    result = reproduce(table, tmp_path, preset="tiny", inputs="store",
                       datasets={"breakfast": str(store)})
    first, second = (r["cells"][0] for r in result["rows"])
    assert first["status"] == "ok" and 0 <= first["mean"] <= 1
    assert second["status"] == "not reproducible" and second["mean"] is None
    assert "D1 has no labelled test frame to score" in second["reason"]
    for text in (to_markdown(result), to_csv(result)):
        assert "nan" not in text.lower()


@pytest.mark.slow
def test_reproduce_on_features_that_look_ahead_needs_and_records_the_allowance(tmp_path):
    """The public MS-TCN I3D features look 10 frames ahead: every temporal cell failed,
    advising --allow-noncausal-features, an option `actrec reproduce` did not have."""
    from click.testing import CliRunner

    from actrec.cli import cli

    env = {"ACTREC_HOME": str(tmp_path / "home")}
    root = _mstcn_tree(tmp_path / "tea")
    store = tmp_path / "tea.zarr"
    out = CliRunner().invoke(cli, ["import", "mstcn", str(root), "--name", "tea", "--out",
                                   str(store), "--lookahead", "3", "--splits", "kfold:2"],
                             env=env)
    assert out.exit_code == 0, out.output
    table = tmp_path / "onecell.toml"
    table.write_text(_ONE_CELL)
    refused = reproduce(table, tmp_path, preset="tiny", inputs="store",
                        datasets={"breakfast": str(store)})
    (cell,) = refused["rows"][0]["cells"]
    assert cell["status"] == "failed" and "--allow-noncausal-features" in cell["reason"]

    args = ["reproduce", str(table), "--preset", "tiny", "--inputs", "store", "--root",
            str(tmp_path), "--dataset", f"breakfast={store}", "--json"]
    out = CliRunner().invoke(cli, args + ["--allow-noncausal-features"], env=env)
    assert out.exit_code == 0, out.output
    result = json.loads(out.stdout)  # stderr has a line per unit (no terminal here)
    (cell,) = result["rows"][0]["cells"]
    assert cell["status"] == "ok", cell
    assert ("scored online although features look ahead (--allow-noncausal-features): "
            "Breakfast 3 frame(s)") in result["notes"]
    (run,) = cell["runs"]
    folder = tmp_path / "reproduce" / "tiny" / "onecell" / "runs" / run
    # not filed as online: its features saw 3 frames ahead (actrec.lookahead)
    scored = json.loads((folder / "eval-online-features-ahead-3.json").read_text())
    assert scored["protocol"]["noncausal_features_allowed"] is True
    assert cell["mean"] == pytest.approx(
        next(iter(scored["datasets"].values()))["frame_accuracy"])
    again = CliRunner().invoke(cli, args + ["--allow-noncausal-features"], env=env)
    assert again.exit_code == 0, again.output
    assert {u["status"] for u in json.loads(again.stdout)["units"].values()} == {"skipped"}


def test_reproduce_table_numbers_reasons_below_instead_of_widening_cells():
    """Reasons of cells without a value were printed in the cells: one long reason made every
    row of its column 95 characters wide (the table ran to 240 columns)."""
    from rich.console import Console

    from actrec.cli.reproduce_cmd import _render

    long = "feature store /data/x.zarr holds non-causal features " + "so on " * 12
    cells = [
        {"paper": 0.3078, "mean": 0.2269, "std": None, "status": "ok", "reason": None},
        {"paper": 0.1953, "mean": None, "std": None, "status": "failed", "reason": long},
        {"paper": 0.2875, "mean": None, "std": None, "status": "not reproducible",
         "reason": "the paper's split 2 is not among them"},
        {"paper": 0.3226, "mean": None, "std": None, "status": "failed", "reason": long},
    ]
    result = {"title": "T", "source": {"paper": "P", "table": "Table 4"}, "preset": "tiny",
              "elapsed_s": 3.0, "header": ["Split"], "columns": ["CNN + LSTM"],
              "decimals": 2, "notes": ["a note"], "failures": [long], "files": ["t.md"],
              "rows": [{"labels": [str(i)], "cells": [c]} for i, c in enumerate(cells)]}
    console = Console(width=100, record=True, color_system=None)
    console.print(_render(result))
    text = console.export_text()
    table = [line for line in text.splitlines() if line.startswith("│")]
    assert [line.split("│")[2].strip() for line in table] == [
        "22.69", "failed [1]", "not reproducible [2]", "failed [1]"]
    assert max(map(len, table)) < 60
    flat = " ".join(text.split())
    assert f"[1] failed: {' '.join(long.split())}" in flat
    assert "[2] not reproducible: the paper's split 2 is not among them" in flat
    assert "[3]" not in flat


def test_sweep_table_of_a_dataset_on_one_split_in_every_run_names_d1s_splits():
    """A joint sweep with --d2-split 1: D2's table had columns "1 | 1" under "over the
    splits of D2", as if D2 had two splits; they are the runs of D1's splits 1 and 2."""
    from rich.console import Console

    from actrec.cli.eval_cmd import render_splits

    stats = {"mean": 0.24, "std": 0.0, "per_split": {"1": 0.24, "2": 0.24}}
    d1 = {"mean": 0.0458, "std": 0.046, "per_split": {"1": 0.0133, "2": 0.0784}}
    summary = {"mode": "online", "missing": [], "splits": ["1", "2"],
               "runs": {"1": "/r/j-split1", "2": "/r/j-split2"},
               "datasets": {"bf": {"metrics": {"frame_accuracy": d1},
                                   "splits": {"1": "1", "2": "2"}},
                            "kitchen": {"metrics": {"frame_accuracy": stats},
                                        "splits": {"1": "1", "2": "1"}}}}
    console = Console(width=200, record=True, color_system=None)
    console.print(render_splits(summary))
    text = console.export_text()
    flat = " ".join(text.split())  # titles wrap to their table's width
    assert "online evaluation over the splits of bf (%)" in flat
    assert "online evaluation of kitchen, its split 1 in every run, by D1's split (%)" in flat
    heads = [[c.strip() for c in line.split("┃")[1:-1]]
             for line in text.splitlines() if "metric \\" in line]
    assert heads == [["metric \\ split", "1", "2", "mean ± std (2)"],
                     ["metric \\ D1 split", "1", "2", "mean ± std (2)"]]


@pytest.mark.slow
def test_plots_of_a_transfer_run_whose_source_has_no_test_frames(tmp_path):
    """D2 (the transfer source) with no test video in its store: `plot confusion` drew an
    empty matrix titled "frame accuracy nan %", `plot per-class` failed saying "evaluate the
    run again" (which cannot help); the curves did not show where fine-tuning begins."""
    import matplotlib
    from click.testing import CliRunner

    from actrec.cli import cli
    from actrec.errors import DataError
    from actrec.plots import plot_run

    env = {"ACTREC_HOME": str(tmp_path / "home")}
    stores = {}
    for name, test in (("tea", "P3_cam01_tea"), ("coffee", "P9_gone")):
        root = _mstcn_tree(tmp_path / name)
        (root / "splits").mkdir()
        (root / "splits" / "train.split1.bundle").write_text(
            "".join(f"P{i}_cam01_tea.txt\n" for i in range(3)))
        (root / "splits" / "test.split1.bundle").write_text(f"{test}.txt\n")
        stores[name] = str(tmp_path / f"{name}.zarr")
        out = CliRunner().invoke(cli, ["import", "mstcn", str(root), "--name", name, "--out",
                                       stores[name], "--lookahead", "0"], env=env)
        assert out.exit_code == 0, out.output
    run = tmp_path / "transfer"
    out = CliRunner().invoke(cli, [
        "train", "lstm", "--d1", stores["tea"], "--d2", stores["coffee"], "--protocol",
        "transfer", "--pretrain-iters", "10", "--iterations", "10", "--history", "8",
        "--mix", "4:4", "-o", "hidden=8", "--run-dir", str(run)], env=env)
    assert out.exit_code == 0, out.output
    assert CliRunner().invoke(cli, ["eval", str(run)], env=env).exit_code == 0

    for what in ("confusion", "per-class"):
        written = plot_run(run, what)
        assert sorted(p.name for p in written) == [f"{what}-online-tea.png",
                                                   f"{what}-online-tea.svg"]
    only_d2 = tmp_path / "only-d2"
    out = CliRunner().invoke(cli, ["train", "lstm", "--d1", stores["coffee"], "--iterations",
                                   "5", "--history", "8", "--mix", "4", "-o", "hidden=8",
                                   "--run-dir", str(only_d2)], env=env)
    assert out.exit_code == 0, out.output
    assert CliRunner().invoke(cli, ["eval", str(only_d2)], env=env).exit_code == 0
    for what in ("confusion", "per-class"):
        with pytest.raises(DataError, match="no dataset of this evaluation has labelled test "
                                            r"frames \(coffee\)"):
            plot_run(only_d2, what)

    with matplotlib.rc_context({"svg.fonttype": "none"}):  # text kept as text in the SVG
        (svg,) = [p for p in plot_run(run, "curves") if p.suffix == ".svg"]
    assert "finetune starts" in svg.read_text()


def test_the_readmes_transfer_command_is_a_valid_training(tmp_path):
    """README's tour trained `--protocol transfer` without --pretrain-iters: refused as
    written ("needs a source: --d2 with --pretrain-iters > 0"). Run as written on two small
    stores (only the iteration counts scaled down, the model made tiny)."""
    import re
    import shlex

    from click.testing import CliRunner

    from actrec.cli import cli

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    (line,) = [x for x in readme.splitlines() if "--protocol transfer" in x]
    args = shlex.split(line.split("#")[0])[1:]
    env = {"ACTREC_HOME": str(tmp_path / "home")}
    stores = {}
    for name in ("salads", "breakfast"):
        root = _mstcn_tree(tmp_path / name)
        stores[name] = str(tmp_path / f"{name}.zarr")
        out = CliRunner().invoke(cli, ["import", "mstcn", str(root), "--name", name, "--out",
                                       stores[name], "--lookahead", "0", "--splits", "loo"],
                                 env=env)
        assert out.exit_code == 0, out.output
    args = [stores.get(a, a) for a in args]
    args = shlex.split(re.sub(r"--pretrain-iters \d+", "--pretrain-iters 4", shlex.join(args)))
    out = CliRunner().invoke(cli, args + ["--iterations", "4", "--history", "4", "--mix", "4:4",
                                          "-o", "hidden=4", "--run-dir", str(tmp_path / "r")],
                             env=env)
    assert out.exit_code == 0, out.output
    config = json.loads((tmp_path / "r" / "config.json").read_text())
    assert config["spec"]["protocol"] == "transfer" and config["spec"]["pretrain_iters"] == 4


def test_eval_table_shows_no_f1_for_a_dataset_without_test_frames():
    """D2 with no test video in its store: the table showed F1 "0.00 / 0.00 / 0.00" beside
    "-" for every other score; nothing was scored."""
    from types import SimpleNamespace

    from rich.console import Console

    from actrec.cli.eval_cmd import render_eval

    empty = {"videos": 0, "frames": 0, "frame_accuracy": None, "mean_video_accuracy": None,
             "edit": None, "f1": {"10": 0.0, "25": 0.0, "50": 0.0}}
    scored = {"videos": 2, "frames": 2036, "frame_accuracy": 0.0486, "mean_video_accuracy":
              0.0483, "edit": 0.0379, "f1": {"10": 0.024, "25": 0.008, "50": 0.0}}
    data = {"run_dir": "runs/joint", "online": True, "protocol": {"mode": "online"},
            "datasets": {"bfidt": scored, "sal": empty}}
    console = Console(width=120, record=True, color_system=None)
    console.print(render_eval(SimpleNamespace(to_dict=lambda: data)))
    rows = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:-1]]
            for line in console.export_text().splitlines() if line.startswith("│")}
    assert rows["bfidt"] == ["2", "2036", "4.86 %", "4.83 %", "3.79 %", "2.40 / 0.80 / 0.00"]
    assert rows["sal"] == ["0", "0", "-", "-", "-", "- / - / -"]
