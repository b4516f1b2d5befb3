"""Split sweeps (actrec.sweep, ``actrec eval --all-splits``) on real runs trained here on a real
Zarr store with three splits."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from rich.progress import Progress

from actrec.cli import cli
from actrec.errors import ConfigError
from actrec.io.features import FeatureStore
from actrec.runs import read_json
from actrec.sweep import (
    evaluate_splits,
    gather_split_runs,
    group_split_runs,
    summarize_splits,
)
from actrec.train import TrainSpec, train_model


def make_store(path, seed=5):
    """Nine videos in three groups; split k tests on group k and trains on the others."""
    rng = np.random.default_rng(seed)
    groups = [[f"g{g}v{i}" for i in range(3)] for g in range(3)]
    splits = {str(k + 1): {"train": [v for g in groups if g is not groups[k] for v in g],
                           "test": list(groups[k])} for k in range(3)}
    store = FeatureStore.open_or_create(
        path, dataset="toy3", split_scheme="default", classes=["a", "b", "c"], splits=splits,
        extractor="toy", extractor_config={"seed": seed}, lookahead=0, dtype="float32")
    centres = rng.normal(size=(3, 4))
    for vid in (v for g in groups for v in g):
        t = int(rng.integers(20, 40))
        y = np.repeat(rng.integers(0, 3, size=t // 5 + 1), 5)[:t]
        x = centres[y] + 0.7 * rng.normal(size=(t, 4))
        store.write_video(vid, x.astype(np.float32), y, fps=15.0, source=None)
    return path


def spec(store, split, **kw):
    return TrainSpec(**{"model": "lstm", "d1": store, "split": split, "history": 8,
                        "model_options": {"hidden": 4}, "iterations": 8, "mix": (4, 0),
                        "lr": 0.05, "optimizer": "adam", "log_every": 4, "seed": 0, **kw})


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """runs/ with one run per split (seed 0) and one run of split 1 with seed 1."""
    root = tmp_path_factory.mktemp("sweep")
    store = make_store(root / "s.zarr")
    runs = root / "home" / "runs"
    made = {}
    for k in ("1", "2", "3"):
        made[k] = runs / f"lstm-split{k}"
        train_model(spec(store, k), made[k])
    made["seed1"] = runs / "lstm-seed1-split1"
    train_model(spec(store, "1", seed=1), made["seed1"])
    return root, store, made


def result(values, split="1"):
    """An evaluation result dict of one dataset with every metric equal to ``values``' entry."""
    fa, mva, edit, f10, f25, f50 = values
    return {"run_dir": f"/runs/r{split}", "protocol": {"mode": "online"},
            "datasets": {"toy": {"split": split, "frame_accuracy": fa,
                                 "mean_video_accuracy": mva, "edit": edit,
                                 "f1": {"10": f10, "25": f25, "50": f50}}}}


def test_summary_golden_values():
    results = {"1": result([0.5, 0.1, 0.2, 0.3, 0.3, 0.3], "1"),
               "2": result([0.7, 0.1, 0.4, 0.3, 0.3, float("nan")], "2"),
               "10": result([0.9, 0.1, 0.6, 0.3, 0.3, 0.3], "10")}
    summary = summarize_splits(results, missing=["11", "3"])
    assert summary["splits"] == ["1", "2", "10"]  # natural order
    assert summary["missing"] == ["3", "11"] and summary["complete"] is False
    metrics = summary["datasets"]["toy"]["metrics"]
    fa = metrics["frame_accuracy"]
    assert fa["per_split"] == {"1": 0.5, "2": 0.7, "10": 0.9}
    assert fa["mean"] == pytest.approx(0.7) and fa["std"] == pytest.approx(0.2) and fa["n"] == 3
    assert metrics["edit"]["mean"] == pytest.approx(0.4)
    assert metrics["edit"]["std"] == pytest.approx(0.2)
    assert metrics["mean_video_accuracy"]["std"] == pytest.approx(0.0)
    # A split without a value: no mean over fewer splits.
    assert metrics["f1@50"]["mean"] is None and metrics["f1@50"]["n"] == 2
    one = summarize_splits({"2": result([0.5, 0.5, 0.5, 0.5, 0.5, 0.5], "2")})
    assert one["datasets"]["toy"]["metrics"]["f1@25"] == {
        "per_split": {"2": 0.5}, "mean": 0.5, "std": None, "n": 1}
    assert one["complete"] is True and one["missing"] == []


def test_gather_finds_the_runs_of_each_split_only(sweep):
    _, _, made = sweep
    for start in ("1", "2", "3"):
        grouped, missing = gather_split_runs(made[start])
        assert grouped == {"1": made["1"], "2": made["2"], "3": made["3"]}
        assert missing == []
    # The seed-1 run has no partner on splits 2 and 3.
    grouped, missing = gather_split_runs(made["seed1"])
    assert grouped == {"1": made["seed1"]} and missing == ["2", "3"]


def test_mixed_or_duplicate_runs_are_refused(sweep, tmp_path):
    _, _, made = sweep
    with pytest.raises(ConfigError, match=r"differ in seed, not only in the split"):
        group_split_runs([made["2"], made["seed1"]])
    runs = tmp_path / "runs"
    shutil.copytree(made["1"], runs / "a")
    shutil.copytree(made["1"], runs / "b")
    with pytest.raises(ConfigError, match=r"both trained on split '1'") as info:
        gather_split_runs(runs / "a")
    assert str(runs / "a") in str(info.value) and str(runs / "b") in str(info.value)


def test_evaluate_splits_mean_and_std_are_those_of_each_runs_results(sweep):
    _, _, made = sweep
    summary = evaluate_splits(made["1"], online=True)
    assert summary["splits"] == ["1", "2", "3"] and summary["complete"]
    assert summary["mode"] == "online" and summary["lookahead_without_delay"] == []
    assert summary["runs"] == {k: str(made[k]) for k in ("1", "2", "3")}
    own = {k: read_json(made[k] / "eval-online.json")["datasets"]["toy3"] for k in "123"}
    assert {k: own[k]["split"] for k in own} == {"1": "1", "2": "2", "3": "3"}
    metrics = summary["datasets"]["toy3"]["metrics"]
    for key, read in (("frame_accuracy", lambda d: d["frame_accuracy"]),
                      ("edit", lambda d: d["edit"]), ("f1@25", lambda d: d["f1"]["25"])):
        values = [read(own[k]) for k in "123"]
        assert [metrics[key]["per_split"][k] for k in "123"] == values
        assert metrics[key]["mean"] == pytest.approx(np.mean(values))
        assert metrics[key]["std"] == pytest.approx(np.std(values, ddof=1))
    assert len({own[k]["frame_accuracy"] for k in own}) > 1  # the splits really differ


def test_cli_table_json_and_missing_split(sweep, tmp_path):
    root, _, made = sweep
    env = {"ACTREC_HOME": str(root / "home"), "COLUMNS": "250"}
    out = CliRunner().invoke(cli, ["eval", "lstm-split2", "--all-splits", "--offline", "--json"],
                             env=env)
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    assert data["mode"] == "offline" and data["splits"] == ["1", "2", "3"]
    fa = data["datasets"]["toy3"]["metrics"]["frame_accuracy"]
    values = [read_json(made[k] / "eval-offline.json")["datasets"]["toy3"]["frame_accuracy"]
              for k in "123"]
    assert fa["mean"] == pytest.approx(np.mean(values))
    assert fa["std"] == pytest.approx(np.std(values, ddof=1))

    table = CliRunner().invoke(cli, ["eval", "lstm-split2", "--all-splits", "--offline"],
                               env=env, terminal_width=250)
    assert table.exit_code == 0, table.output
    row = next(line for line in table.output.splitlines() if line.startswith("│ frame accuracy"))
    assert [c.strip() for c in row.split("│")[2:-1]] == [
        *(f"{100 * v:.2f}" for v in values),
        f"{100 * np.mean(values):.2f} ± {100 * np.std(values, ddof=1):.2f}"]
    assert "INCOMPLETE" not in table.output

    # Split 2 absent: said in the JSON and loudly in the table, in its place among the splits.
    runs = tmp_path / "runs"
    for k in ("1", "3"):
        shutil.copytree(made[k], runs / f"r{k}")
    part = CliRunner().invoke(cli, ["eval", str(runs / "r1"), "--all-splits", "--offline"],
                              env=env, terminal_width=250)
    assert part.exit_code == 0, part.output
    assert "INCOMPLETE: no run for split 2" in part.output
    lines = part.output.splitlines()
    header = next(line for line in lines if line.startswith("┃ metric"))
    assert [c.strip() for c in header.split("┃")[1:-1]] == [
        "metric \\ split", "1", "2 missing", "3", "mean ± std (2)"]
    row = next(line for line in lines if line.startswith("│ frame accuracy"))
    assert [c.strip() for c in row.split("│")[2:-1]] == [
        f"{100 * values[0]:.2f}", "-", f"{100 * values[2]:.2f}",
        f"{100 * np.mean([values[0], values[2]]):.2f} ± "
        f"{100 * np.std([values[0], values[2]], ddof=1):.2f}"]
    runs_rows = [line.split("│")[1:-1] for line in lines
                 if line.startswith("│") and line.count("│") == 3]
    assert [[c.strip() for c in r] for r in runs_rows] == [
        ["1", "r1"], ["2", "missing"], ["3", "r3"]]
    as_json = json.loads(CliRunner().invoke(
        cli, ["eval", str(runs / "r1"), "--all-splits", "--offline", "--json"], env=env).output)
    assert as_json["missing"] == ["2"] and as_json["complete"] is False
    assert as_json["splits"] == ["1", "3"]
    assert math.isclose(as_json["datasets"]["toy3"]["metrics"]["frame_accuracy"]["mean"],
                        np.mean([values[0], values[2]]))

    refused = CliRunner().invoke(cli, ["eval", "lstm-split2", "--all-splits", "--split", "1"],
                                 env=env)
    assert refused.exit_code == 2 and "--all-splits" in refused.output
    both = CliRunner().invoke(cli, ["eval", "lstm-split2", "--all-splits", "--online",
                                    "--offline"], env=env)
    assert both.exit_code == 2 and "give one" in both.output


def test_sweep_table_fits_80_columns_and_keeps_run_names_whole():
    """Five splits and every metric in an 80-column terminal: no cell folded into unreadable
    pieces, run names (what `actrec eval RUN` takes) whole."""
    from rich.console import Console

    from actrec.cli.eval_cmd import render_splits

    keys = ["frame_accuracy", "mean_video_accuracy", "edit", "f1@10", "f1@25", "f1@50",
            "mean_class_precision"]
    per_split = {"1": 0.51, "2": 0.49, "4": 0.5, "5": 0.625}
    metrics = {k: {"mean": 0.53125, "std": 0.06, "per_split": per_split} for k in keys}
    summary = {"mode": "online", "missing": ["3"], "splits": ["1", "2", "4", "5"],
               "runs": {k: f"/runs/20261201-172623-ddlstm-split{k}" for k in "1245"},
               "datasets": {"salads": {"metrics": metrics, "splits": {k: k for k in "1245"}}}}
    console = Console(width=80, record=True, color_system=None)
    console.print(render_splits(summary))
    text = console.export_text()
    assert max(map(len, text.splitlines())) <= 80
    edit = next(line for line in text.splitlines() if line.startswith("│ edit"))
    assert [c.strip() for c in edit.split("│")[2:-1]] == [
        "51.00", "49.00", "-", "50.00", "62.50", "53.12 ± 6.00"]
    for k in "1245":
        assert f"20261201-172623-ddlstm-split{k}" in text


def test_lookahead_sweep_of_runs_trained_without_delay_says_so(sweep):
    root, _, made = sweep
    env = {"ACTREC_HOME": str(root / "home"), "COLUMNS": "250"}
    out = CliRunner().invoke(cli, ["eval", "lstm-split3", "--all-splits", "--lookahead", "2",
                                   "--json"], env=env)
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    assert data["mode"] == "lookahead-2" and data["lookahead_without_delay"] == ["1", "2", "3"]
    fa = data["datasets"]["toy3"]["metrics"]["frame_accuracy"]["per_split"]
    assert fa == {k: read_json(made[k] / "eval-lookahead-2.json")["datasets"]["toy3"][
        "frame_accuracy"] for k in "123"}
    table = CliRunner().invoke(cli, ["eval", "lstm-split3", "--all-splits", "--lookahead", "2"],
                               env=env, terminal_width=250)
    assert "trained to answer at once" in table.output and "1, 2, 3" in table.output


def test_train_all_splits_makes_the_sweep_eval_all_splits_gathers(tmp_path):
    store = make_store(tmp_path / "s.zarr")
    home = tmp_path / "home"
    runner = CliRunner()
    base = home / "runs" / "sweep"
    args = ["train", "lstm", "--d1", str(store), "--history", "8", "--iterations", "4",
            "--mix", "4:0", "-o", "hidden=4", "--all-splits", "--run-dir", str(base), "--json"]
    out = runner.invoke(cli, args, env={"ACTREC_HOME": str(home)})
    assert out.exit_code == 0, out.output
    made = [r["run_dir"] for r in json.loads(out.output)]
    assert made == [str(base.with_name(f"sweep-split{k}")) for k in ("1", "2", "3")]
    for k in ("1", "2", "3"):
        assert read_json(base.with_name(f"sweep-split{k}") / "config.json")["spec"]["split"] == k
    again = runner.invoke(cli, args, env={"ACTREC_HOME": str(home)})  # done: resumes nothing
    assert again.exit_code == 0 and all(r["resumed_from"] == 4
                                        for r in json.loads(again.output))
    ev = runner.invoke(cli, ["eval", made[0], "--all-splits", "--json"],
                       env={"ACTREC_HOME": str(home)})
    assert ev.exit_code == 0, ev.output
    summary = json.loads(ev.output)
    assert summary["splits"] == ["1", "2", "3"] and summary["complete"] is True
    bad = runner.invoke(cli, [*args[:-1], "--split", "1"], env={"ACTREC_HOME": str(home)})
    assert bad.exit_code == 2 and "drop --split" in bad.output


class _CtrlCInSplit2(Progress):
    """A real (silent) progress display whose first training step of split 2 is where the
    user pressed Ctrl-C (the KeyboardInterrupt leaves the training loop as from a signal)."""

    def __init__(self) -> None:
        super().__init__(disable=True)
        self.trainings, self.watch = 0, None

    def add_task(self, description, *args, **kwargs):
        task = super().add_task(description, *args, **kwargs)
        if description.endswith(" lstm"):  # train.py's task: "<phase> <model>"
            self.trainings += 1
            self.watch = task if self.trainings == 2 else None
        return task

    def advance(self, task, advance=1):
        super().advance(task, advance)
        if task == self.watch:
            raise KeyboardInterrupt


def test_ctrl_c_in_a_split_sweep_says_how_to_resume_the_sweep(tmp_path, monkeypatch):
    """The split's own advice (--run-dir <R>-split2) would train split 2 alone, or with
    --all-splits a sweep named <R>-split2-split<K>: the sweep's base name is given instead,
    and following it finishes the sweep with split 1 kept as it was."""
    from actrec.errors import Interrupted
    from actrec.pipeline import train_all_splits

    monkeypatch.setenv("ACTREC_HOME", str(tmp_path / "home"))
    store = make_store(tmp_path / "s.zarr")
    base = tmp_path / "home" / "runs" / "sweep"
    fields = {"d1": str(store), "history": 8, "iterations": 4, "mix": (4, 0),
              "model_options": {"hidden": 4}}
    with pytest.raises(Interrupted) as info:
        train_all_splits("lstm", run_dir=base, progress=_CtrlCInSplit2(), **fields)
    message = str(info.value)
    assert f"--all-splits --run-dir {base} " in message and "split 2" in message
    assert f"--run-dir {base}-split2" not in message
    first = (base.with_name("sweep-split1") / "metrics.jsonl").read_text()
    results = train_all_splits("lstm", run_dir=base, **fields)
    assert [r.run_dir.name for r in results] == ["sweep-split1", "sweep-split2", "sweep-split3"]
    assert (base.with_name("sweep-split1") / "metrics.jsonl").read_text() == first


def test_a_transfer_sweep_names_its_target_and_source():
    """Each transfer run's result records which dataset it is for (protocol.roles); the split
    summary carries them and the table titles say which dataset is the target."""
    from rich.console import Console

    from actrec.cli.eval_cmd import render_splits

    def transfer(split):
        r = result([0.5, 0.5, 0.5, 0.5, 0.5, 0.5], split)
        r["protocol"]["roles"] = {"toy": "target", "src": "source"}
        r["datasets"]["src"] = dict(r["datasets"]["toy"])
        return r

    summary = summarize_splits({"1": transfer("1"), "2": transfer("2")})
    assert summary["roles"] == {"toy": "target", "src": "source"}
    assert summarize_splits({"1": result([0.5] * 6)})["roles"] == {}
    console = Console(width=120, record=True, color_system=None)
    console.print(render_splits(summary))
    text = console.export_text()
    assert "online evaluation over the splits of toy (target) (%)" in text
    assert "online evaluation over the splits of src (source) (%)" in text
