"""`actrec reproduce`: formatting and aggregation by hand, the grid a table expands into on
real (synthetic) feature stores, failures reported per cell, the tiny grid end to end, and a
killed grid finished by a re-run without redoing finished cells."""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from actrec.errors import ConfigError
from actrec.paper_tables import load_table
from actrec.reproduce import (
    PRESETS,
    Plan,
    build_result,
    plan_table,
    reproduce,
    resolve_stores,
)
from actrec.reproduce_report import (
    aggregate,
    format_diff,
    format_value,
    to_csv,
    to_markdown,
)

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------ formatting, by hand

def test_format_value_and_difference_golden():
    assert format_value(0.47312, 0.01204, 1) == "47.3 ± 1.2"
    assert format_value(0.47312, None, 2) == "47.31"
    assert format_value(None, None, 1) == ""
    assert format_diff(0.473, 47.1, 1) == "+0.2"
    assert format_diff(0.2, 24.5, 1) == "-4.5"
    assert format_diff(0.47099, 47.1, 1) == "+0.0"  # never "-0.0"
    assert format_diff(0.3078, 30.78, 2) == "+0.00"
    assert format_diff(None, 30.78, 2) == "" and format_diff(0.3, None, 2) == ""


def test_aggregate_is_mean_and_sample_std():
    mean, std, n = aggregate([0.2, 0.4, 0.6])
    assert (round(mean, 12), round(std, 12), n) == (0.4, 0.2, 3)  # sqrt((0.04+0+0.04)/2)
    assert aggregate([0.25]) == (0.25, None, 1)


def _hand_plan(table) -> Plan:
    """Table 6's cells filled by hand: each split cell one unit per column."""
    plan = Plan(table, PRESETS["tiny"], Path("/nowhere"), "head", {})
    for cell in table.cells:
        entry = {"samples": [[(f"u{cell.row}{cell.column}", 0)]], "reason": None}
        plan.cells[(cell.row, cell.column)] = entry
    return plan


def test_build_result_golden_with_an_aggregate_row_and_a_failure():
    table = load_table("recassist-table6")
    plan = _hand_plan(table)
    scores = {0: [0.30, 0.31, 0.32], 1: [0.20, 0.21, 0.22], 2: [0.28, 0.29, 0.30],
              3: [0.34, 0.33, 0.32]}
    results = {f"u{r}{c}": {"status": "done", "scores": [scores[r][c]]}
               for r in range(4) for c in range(3)}
    results["u21"] = {"status": "failed", "scores": [], "error": "out of memory"}
    plan.cells[(3, 2)] = {"samples": [], "reason": "no split 3 here"}
    out = build_result(plan, results)
    rows = {tuple(r["labels"]): r["cells"] for r in out["rows"]}
    assert rows[("0",)][0] | {"per_split": None} == {
        "paper": 0.3078, "mean": 0.30, "std": None, "n": 1, "status": "ok", "reason": None,
        "per_split": None, "runs": ["u00"]}
    assert rows[("2",)][1]["status"] == "failed"
    assert rows[("2",)][1]["reason"] == "u21: out of memory"
    assert rows[("3",)][2]["status"] == "not reproducible"
    avg = rows[("Avg.",)]
    # One unit in the data: actrec's numbers and the paper's are both fractions of frames.
    assert avg[0]["paper"] == pytest.approx(0.2783) and "fraction" in out["values"]
    assert avg[0]["mean"] == pytest.approx(0.28)  # (0.30 + 0.20 + 0.28 + 0.34) / 4
    assert avg[0]["std"] == pytest.approx(math.sqrt((0.0004 + 0.0064 + 0 + 0.0036) / 3))
    assert avg[1]["status"] == avg[2]["status"] == "incomplete"
    assert out["failures"] == ["u21: out of memory"] and not out["complete"]
    md = to_markdown(out).splitlines()
    assert md[4] == ("| Split | No transfer actrec | No transfer paper | No transfer Δ | "
                     "50 Salads 1 actrec | 50 Salads 1 paper | 50 Salads 1 Δ | "
                     "MPII 2 actrec | MPII 2 paper | MPII 2 Δ |")
    assert md[6] == "| 0 | 30.00 | 30.78 | -0.78 | 31.00 | 32.23 | -1.23 | 32.00 | 34.01 | -2.01 |"
    assert md[8].startswith("| 2 | 28.00 | 28.75 | -0.75 | failed: u21: out of memory | 28.51 |  |")
    assert md[10].startswith("| Avg. | 28.00 ± 5.89 | 27.83 | +0.17 | incomplete: ")
    lines = to_csv(out).splitlines()
    assert lines[0] == "Split,column,actrec_mean,actrec_std,n,paper,difference,status,reason"
    assert lines[1] == "0,No transfer,30.0000,,1,30.78,-0.7800,ok,"
    assert len(lines) == 1 + 5 * 3


# ------------------------------------------------------------------ the grid on real stores

@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    """Synthetic kitchens a, b, c as --preset tiny makes them (shared by the tests here)."""
    root = tmp_path_factory.mktemp("reproduce")
    table = load_table("ddlstm-table1")
    stores = resolve_stores(table, root, PRESETS["tiny"])
    return root, stores


@pytest.mark.slow
def test_table1_grid_expands_over_every_split_once_per_unit(tiny_root):
    root, stores = tiny_root
    table = load_table("ddlstm-table1")
    plan = plan_table(table, root, PRESETS["tiny"], stores)
    kinds = [u["kind"] for u in plan.units]
    assert len(plan.heads) == 3 * 4  # a frame classifier per dataset and split
    assert kinds.count("frame-classifier") == 3 * 4  # shared by the pairs a dataset is in
    assert kinds.count("train") == 3 * 5 * 4  # pairs x trained methods x splits
    assert all(len(e["samples"]) == 4 and not e["reason"] for e in plan.cells.values())
    # "D1,D2" on 50 Salads (D1) with MPII (D2): actrec fine-tunes MPII (its d1) after
    # pre-training on 50 Salads (its d2), so the table's D1 column reads actrec's domain 1.
    row = next(i for i, r in enumerate(table.rows)
               if r["labels"] == ["D1,D2", "LSTM", "50 Salads", "MPII Cooking 2"])
    (key, domain), = plan.cells[(row, 0)]["samples"][0]
    unit = next(u for u in plan.units if u["key"] == key)
    assert domain == 1 and plan.cells[(row, 1)]["samples"][0][0][1] == 0
    assert unit["spec"]["protocol"] == "transfer" and "mpii" in Path(unit["d1"]).name
    assert "salads" in Path(unit["d2"]).name and unit["spec"]["boundary"] is True
    assert unit["spec"]["pretrain_iters"] == unit["spec"]["iterations"] == 30
    # The paper's batch of 128 in each single-dataset phase (joint: 64 + 64), scaled for tiny.
    assert unit["spec"]["mix"] == (8, 8)
    joint_unit = next(u for u in plan.units if u["key"].startswith("lstm-joint-"))
    assert joint_unit["spec"]["mix"] == (4, 4)
    # Joint cells pair D1's split k with D2's split k.
    joint = [u for u in plan.units if u["key"].startswith("ddlstm-joint-breakfast2-")]
    assert [(u["spec"]["split"], u["spec"]["d2_split"]) for u in joint] == [("2", "2")] * 2


@pytest.mark.slow
def test_store_inputs_that_are_not_scores_mark_the_classifier_cells(tiny_root):
    root, stores = tiny_root
    table = load_table("recassist-table4")
    plan = plan_table(table, root, PRESETS["tiny"], stores, inputs="store")
    cnn = [e for (r, c), e in plan.cells.items() if c == 0]
    assert all(e["reason"].endswith("are not class scores: no frame classifier to score "
                                    "without --inputs head") for e in cnn)
    assert all(not e["reason"] for (r, c), e in plan.cells.items() if c == 1)
    assert not plan.heads


@pytest.mark.slow
def test_a_split_the_store_lacks_is_not_reproducible(tiny_root, tmp_path):
    root, stores = tiny_root
    table = load_table("recassist-table4")
    path = tmp_path / "three.toml"  # the paper's split 4 does not exist in a 4-split store
    path.write_text(table.path.read_text().replace("split = 3", "split = 4"))
    plan = plan_table(load_table(path), root, PRESETS["tiny"], stores)
    reasons = {e["reason"] for e in plan.cells.values() if e["reason"]}
    assert len(reasons) == 3 and all("has 4 split(s); the paper's split 4 is not among them"
                                     in r for r in reasons)


@pytest.mark.slow
def test_unknown_dataset_override_is_refused(tiny_root):
    root, _ = tiny_root
    with pytest.raises(ConfigError, match="table ddlstm-table1 has no dataset 'salad'"):
        resolve_stores(load_table("ddlstm-table1"), root, PRESETS["paper"], {"salad": "x"})


def breakfast_table(table_id: str, title: str, methods: str, layout: str) -> str:
    """A paper-table TOML of the shape every reproduce test uses: one dataset (Breakfast,
    played by synthetic kitchen a under ``--preset tiny``) under the recassist preset, with
    ``methods`` (its ``[methods.*]`` tables) and ``layout`` (its ``[[columns]]`` and
    ``[[rows]]``)."""
    return (_TABLE_HEAD.format(id=table_id, title=title) + methods
            + '[defaults]\nD1 = "breakfast"\n\n' + layout)


_TABLE_HEAD = '''
id = "{id}"
title = "{title}"
report = "split"
metric = "frame_accuracy"
decimals = 2
preset = "recassist"
inputs = "softmax"
header = ["Split"]

[source]
paper = "test"
file = "none"
table = "Table 0"
caption = "a test table"

[datasets.breakfast]
name = "Breakfast"
ref = "breakfast"
tiny = "synthetic:kitchen=a"

'''


_SMALL = breakfast_table(
    "small", "two cells and a broken one",
    """[methods.cnn]
kind = "frame-classifier"

[methods.lstm]
kind = "train"
model = "lstm"
protocol = "single"

[methods.broken]
kind = "train"
model = "no-such-model"
protocol = "single"

""",
    """[[columns]]
label = "CNN"
method = "cnn"

[[columns]]
label = "LSTM"
method = "lstm"

[[columns]]
label = "broken"
method = "broken"

[[rows]]
labels = ["0"]
split = 0
paper = [22.0, 30.78, 1.0]

[[rows]]
labels = ["1"]
split = 1
paper = [16.19, 19.53, 1.0]
""")


@pytest.mark.slow
def test_a_failed_cell_is_reported_and_the_others_finish(tiny_root, tmp_path):
    root, _ = tiny_root
    path = tmp_path / "small.toml"
    path.write_text(_SMALL)
    out = reproduce(path, root, preset="tiny")
    cells = [r["cells"] for r in out["rows"]]
    assert [[c["status"] for c in row] for row in cells] == [["ok", "ok", "failed"]] * 2
    assert all("no-such-model" in row[2]["reason"] for row in cells)
    assert all(0.0 <= row[c]["mean"] <= 1.0 for row in cells for c in (0, 1))
    assert len(out["failures"]) == 2
    # The frame classifier's score is the argmax accuracy of the head store's test videos.
    from actrec.io.features import FeatureStore

    store = FeatureStore.open(next((root / "reproduce" / "tiny" / "features").glob(
        "breakfast-*-softmax-split1.zarr")))
    test = store.splits["1"]["test"]
    hits = frames = 0
    for vid in test:
        x, y = store.read(vid)
        keep = y >= 0
        hits += int((x.argmax(1)[keep] == y[keep]).sum())
        frames += int(keep.sum())
    assert cells[0][0]["mean"] == hits / frames
    written = json.loads((root / "reproduce" / "tiny" / "small" / "table.json").read_text())
    assert written["rows"][0]["cells"][1]["mean"] == cells[0][1]["mean"]


def _cli(*args, env: dict | None = None, **kwargs):
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "actrec", "reproduce", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, **kwargs)


@pytest.mark.slow
def test_tiny_table1_end_to_end_and_a_rerun_skips_everything(tiny_root):
    root, _ = tiny_root
    proc = _cli("ddlstm-table1", "--preset", "tiny", "--root", str(root), "--jobs", "2",
                "--json")
    out, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err[-3000:]
    result = json.loads(out)
    assert result["complete"] and not result["failures"]
    assert len(result["rows"]) == 18
    for row in result["rows"]:
        for cell in row["cells"]:
            assert cell["status"] == "ok" and cell["n"] == 4
            assert 0.0 <= cell["mean"] <= 1.0 and cell["std"] is not None
            assert cell["paper"] is not None
    first = result["rows"][0]
    assert first["labels"] == ["Single", "None", "50 Salads", "MPII Cooking 2"]
    assert [c["paper"] for c in first["cells"]] == [0.411, 0.383]  # no float noise
    from actrec.extract_workers import cpu_cores

    assert {u["threads"] for u in result["units"].values()} == {max(1, cpu_cores() // 2)}
    folder = root / "reproduce" / "tiny" / "ddlstm-table1"
    md = (folder / "table.md").read_text()
    assert "| Joint | DDLSTM | 50 Salads | MPII Cooking 2 |" in md and "| 47.1 |" in md
    assert len((folder / "table.csv").read_text().splitlines()) == 1 + 36
    stamps = {p: p.stat().st_mtime_ns for p in (folder / "runs").rglob("*") if p.is_file()}
    again = _cli("ddlstm-table1", "--preset", "tiny", "--root", str(root), "--json")
    out2, err2 = again.communicate(timeout=600)
    assert again.returncode == 0, err2[-3000:]
    second = json.loads(out2)
    assert {u["status"] for u in second["units"].values()} == {"skipped"}  # heads too
    assert [[c["mean"] for c in r["cells"]] for r in second["rows"]] == \
        [[c["mean"] for c in r["cells"]] for r in result["rows"]]
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # nothing retrained or rescored


# In the killed run's process (a sitecustomize first on its path): after its first training
# cell, a mark and a pause, so that the kill lands there however late the test gets to it.
_PAUSE_AFTER_FIRST_CELL = """
import os
import time
from pathlib import Path

import actrec.reproduce_units as units

_run_unit = units.run_unit


def run_unit(unit, *args, **kwargs):
    result = _run_unit(unit, *args, **kwargs)
    if unit["key"].startswith("lstm-"):
        Path(os.environ["ACTREC_TEST_PAUSED"]).write_text(unit["key"])
        time.sleep(600)
    return result


units.run_unit = run_unit
"""


@pytest.mark.slow
def test_killed_grid_finishes_on_rerun_without_redoing_finished_cells(tiny_root, tmp_path):
    root, _ = tiny_root
    path = tmp_path / "killme.toml"
    path.write_text(_SMALL.replace('id = "small"', 'id = "killme"').replace(
        """
[[columns]]
label = "broken"
method = "broken"
""", "").replace(", 1.0]", "]"))
    runs = root / "reproduce" / "tiny" / "killme" / "runs"
    site, paused = tmp_path / "site", tmp_path / "paused"
    site.mkdir()
    (site / "sitecustomize.py").write_text(_PAUSE_AFTER_FIRST_CELL)
    proc = _cli(str(path), "--preset", "tiny", "--root", str(root), env={
        "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)]),
        "ACTREC_TEST_PAUSED": str(paused)})
    try:
        deadline = time.monotonic() + 600
        while not paused.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        with contextlib.suppress(ProcessLookupError):  # gone already: it failed (err says)
            os.killpg(proc.pid, signal.SIGKILL)
        _, err = proc.communicate()
    assert paused.exists(), f"the grid did not reach its first training cell's end: {err[-3000:]}"
    # Killed after its first training cell (and before anything else started)
    done = list(runs.glob("lstm-*/eval-online.json"))
    assert [d.parent.name for d in done] == [paused.read_text()]
    finished = {d.parent.name for d in done}
    stamps = {p: p.stat().st_mtime_ns for d in done for p in d.parent.rglob("*") if p.is_file()}
    assert not (root / "reproduce" / "tiny" / "killme" / "table.json").exists()
    again = _cli(str(path), "--preset", "tiny", "--root", str(root), "--json")
    out, err = again.communicate(timeout=600)
    assert again.returncode == 0, err[-3000:]
    result = json.loads(out)
    assert result["complete"]
    cells = {k: u["status"] for k, u in result["units"].items() if k.startswith("lstm-")}
    assert len(cells) == 2
    assert cells == {k: "skipped" if k in finished else "done" for k in cells}
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps


@pytest.mark.slow
def test_tiny_recurrent_assistance_table6_transfers_from_a_fixed_source_split(tiny_root):
    root, _ = tiny_root
    out = reproduce("recassist-table6", root, preset="tiny", jobs=2)
    assert out["complete"], out["failures"]
    rows = {tuple(r["labels"]): r["cells"] for r in out["rows"]}
    assert list(rows) == [("0",), ("1",), ("2",), ("3",), ("Avg.",)]
    for col in range(3):
        split_means = [rows[(str(s),)][col]["mean"] for s in range(4)]
        assert rows[("Avg.",)][col]["mean"] == pytest.approx(sum(split_means) / 4)
        assert rows[("Avg.",)][col]["n"] == 4
    # Paper split 1 of 50 Salads is the second split of its store ("2" in the synthetic one):
    # every transfer cell of that column pre-trains on it, whatever Breakfast split it targets.
    runs = root / "reproduce" / "tiny" / "recassist-table6" / "runs"
    for s in range(4):
        (key,) = rows[(str(s),)][1]["runs"]
        config = json.loads((runs / key / "config.json").read_text())
        assert config["spec"]["protocol"] == "transfer"
        assert config["spec"]["split"] == str(s + 1) and config["spec"]["d2_split"] == "2"
        assert "salads" in Path(config["spec"]["d2"]).name


@pytest.mark.slow
def test_workers_share_the_cores_among_the_processes_that_run(monkeypatch, tmp_path):
    """--jobs 4 with two units starts two workers: each takes half the cores, not a quarter."""
    from actrec import extract_workers
    from actrec.reproduce_workers import run_units

    monkeypatch.setattr(extract_workers, "cpu_cores", lambda: 8)
    units = [{"kind": "frame-classifier", "key": f"u{i}", "store": str(tmp_path / f"none{i}.zarr"),
              "split": "1", "metric": "frame_accuracy", "dir": str(tmp_path / f"u{i}")}
             for i in range(2)]
    results = run_units(units, jobs=4)
    assert {r["status"] for r in results.values()} == {"failed"}  # no such stores
    assert all("none" in r["error"] for r in results.values())
    assert {r["threads"] for r in results.values()} == {4}


def _one_cell_table(path: Path, extra: str = "") -> Path:
    """_SMALL cut to its LSTM cell on split 0 (``extra`` appended to the LSTM method)."""
    text = _SMALL.replace('id = "small"', f'id = "{path.stem}"')
    text = text.replace('[methods.broken]\nkind = "train"\nmodel = "no-such-model"\n'
                        'protocol = "single"\n', "")
    text = text.replace('[[columns]]\nlabel = "CNN"\nmethod = "cnn"\n\n', "")
    text = text.replace('[[columns]]\nlabel = "broken"\nmethod = "broken"\n', "")
    text = text.split("[[rows]]")[0] + '[[rows]]\nlabels = ["0"]\nsplit = 0\npaper = [30.78]\n'
    text = text.replace('protocol = "single"\n', 'protocol = "single"\n' + extra, 1)
    path.write_text(text)
    return path


@pytest.mark.slow
def test_changed_settings_or_inputs_run_again_and_keep_the_old_run(tiny_root, tmp_path):
    """A finished cell is reused only when its spec and input stores are as trained; otherwise
    it is trained again and the old run is moved aside, never trained over or deleted."""
    from actrec.io.features import FeatureStore

    root, _ = tiny_root
    path = _one_cell_table(tmp_path / "stale.toml")
    first = reproduce(path, root, preset="tiny")
    assert first["complete"], first["failures"]
    (key,) = first["rows"][0]["cells"][0]["runs"]
    runs = root / "reproduce" / "tiny" / "stale" / "runs"
    again = reproduce(path, root, preset="tiny")
    assert again["units"][key]["status"] == "skipped"

    # Other settings: trained again; the old run is kept beside it, untouched.
    old = {p.relative_to(runs / key): p.read_bytes() for p in (runs / key).rglob("*")
           if p.is_file()}
    _one_cell_table(path, "\n[methods.lstm.train]\ngrad_clip = 1.0\n")
    changed = reproduce(path, root, preset="tiny")
    assert changed["complete"], changed["failures"]
    (key2,) = changed["rows"][0]["cells"][0]["runs"]
    assert changed["units"][key2]["status"] == "done"
    config = json.loads((runs / key2 / "config.json").read_text())
    assert config["spec"]["grad_clip"] == 1.0
    kept = [p for p in runs.iterdir() if p.name.startswith(key) and p.name != key2]
    assert len(kept) == 1 and kept[0].name != key2
    assert {p.relative_to(kept[0]): p.read_bytes() for p in kept[0].rglob("*")
            if p.is_file()} == old
    assert any(key2 in n and "moved" in n for n in changed["notes"])

    # A changed input store (one test video's features rewritten): trained again too.
    store = FeatureStore.open(Path(config["spec"]["d1"]))
    vid = store.splits[config["spec"]["split"]]["test"][0]
    x, y = store.read(vid)
    attrs = store.video_attrs(vid)  # kept, so the head unit takes the video for its own
    # Labels as the backbone's: a head store whose labels differ from them is redone (repaired).
    store.write_video(vid, x[::-1].copy(), y, fps=float(attrs["fps"]), source=None,
                      extra={k: attrs[k] for k in ("backbone_sha256", "head_train_video")})
    rerun = reproduce(path, root, preset="tiny")
    assert rerun["complete"], rerun["failures"]
    assert rerun["units"][key2]["status"] == "done"
    assert len([p for p in runs.iterdir() if p.name.startswith(key)]) == 3
    assert reproduce(path, root, preset="tiny")["units"][key2]["status"] == "skipped"


@pytest.mark.slow
def test_a_head_whose_backbone_changed_is_rebuilt_and_the_old_outputs_kept(tiny_root, tmp_path):
    """Re-extracted backbone features retrain the split's frame classifier; its output store is
    rebuilt (the old one moved aside, not overwritten), so the cells on it train again."""
    import shutil

    import numpy as np

    from actrec.io.features import FeatureStore
    from actrec.reproduce_units import run_unit

    _, stores = tiny_root
    backbone = tmp_path / "kitchen.zarr"
    shutil.copytree(stores["breakfast"], backbone)
    unit = {"kind": "head", "key": "head-x", "backbone": str(backbone), "split": "1",
            "output": "softmax", "out": str(tmp_path / "features" / "head.zarr"),
            "head_config": dict(PRESETS["tiny"].head)}
    first = run_unit(unit)
    assert first["status"] == "done", first["error"]
    before = FeatureStore.open(unit["out"])
    test_vid = before.splits["1"]["test"][0]
    old_out = before.read(test_vid)[0].copy()

    store = FeatureStore.open(backbone)
    vid = store.splits["1"]["train"][0]
    x, y = store.read(vid)
    attrs = store.video_attrs(vid)
    store.write_video(vid, -x, y, fps=float(attrs["fps"]), source=None)  # re-extracted
    second = run_unit(unit)
    assert second["status"] == "done", second["error"]
    assert "another head" in second["moved_because"]
    kept = FeatureStore.open(second["moved"])
    assert np.array_equal(kept.read(test_vid)[0], old_out)
    assert not np.array_equal(FeatureStore.open(unit["out"]).read(test_vid)[0], old_out)
    third = run_unit(unit)  # nothing changed since: the head and its store are reused
    assert third["status"] == "skipped" and "moved" not in third


def test_missing_stores_are_all_named_with_the_option_that_points_at_one(monkeypatch, tmp_path):
    from actrec.errors import ActrecError

    monkeypatch.setenv("ACTREC_HOME", str(tmp_path / "empty-workspace"))
    with pytest.raises(ActrecError) as err:
        resolve_stores(load_table("ddlstm-table1"), tmp_path, PRESETS["paper"],
                       {"mpii": str(tmp_path / "mpii.zarr")})
    message = str(err.value)
    assert message.startswith("table ddlstm-table1 has no feature store for 2 of its datasets")
    assert "Breakfast (--dataset breakfast=...): no features of 'breakfast' yet" in message
    assert "50 Salads (--dataset salads=...): no features of 'salads' yet" in message
    assert "MPII" not in message  # given as a store path: opened (and checked) when planned


def test_a_unit_runs_after_its_needs_and_not_at_all_when_one_failed(tmp_path):
    from actrec.reproduce_workers import run_units

    def unit(key, needs=()):
        return {"kind": "frame-classifier", "key": key, "store": str(tmp_path / f"{key}.zarr"),
                "split": "1", "metric": "frame_accuracy", "dir": str(tmp_path / key),
                "needs": list(needs)}

    seen = []
    results = run_units([unit("b", ["a"]), unit("a"), unit("c", ["elsewhere"])],
                        on_result=lambda r: seen.append(r["key"]))
    assert seen.index("a") < seen.index("b")
    assert "a.zarr" in results["a"]["error"]  # ran, and failed on its missing store
    assert results["b"]["status"] == "failed" and "b.zarr" not in results["b"]["error"]
    assert results["b"]["error"].startswith("not run: it needs a, which failed (")
    assert "c.zarr" in results["c"]["error"]  # a need outside the units is not waited for


def _explode():
    raise RuntimeError("this unit cannot be unpickled")


class _Unpicklable(dict):
    """A unit that kills the worker taking it, before the worker can say which it took."""

    def __reduce__(self):
        return (_explode, ())


@pytest.mark.slow
def test_a_worker_that_dies_on_taking_a_unit_fails_that_unit_and_the_grid_goes_on(tmp_path):
    import threading

    from actrec.reproduce_workers import run_units

    units = [_Unpicklable({"kind": "frame-classifier", "key": "doomed", "needs": []})] + [
        {"kind": "frame-classifier", "key": f"u{i}", "store": str(tmp_path / f"u{i}.zarr"),
         "split": "1", "metric": "frame_accuracy", "dir": str(tmp_path / f"u{i}")}
        for i in range(2)]
    box = {}
    thread = threading.Thread(target=lambda: box.update(run_units(units, jobs=2)), daemon=True)
    thread.start()
    thread.join(timeout=120)
    assert not thread.is_alive(), "run_units hung on a unit its worker died taking"
    assert box["doomed"]["status"] == "failed"
    assert "worker process running it died" in box["doomed"]["error"]
    assert all(f"u{i}.zarr" in box[f"u{i}"]["error"] for i in range(2))


@pytest.mark.slow
def test_a_mean_row_averages_the_same_splits_in_every_cell(tiny_root, tmp_path):
    """With 4 Breakfast splits and 3 of 50 Salads, every cell of a Breakfast/50 Salads row,
    the frame classifier alone included, averages the 3 splits both stores have."""
    from actrec.pipeline import extract_dataset

    root, stores = tiny_root
    three = tmp_path / "salads3.zarr"
    extract_dataset("synthetic:kitchen=b", dataset_options={
        "root": str(tmp_path / "data"), **PRESETS["tiny"].kitchen, "folds": "3"}, out=three)
    table = load_table("ddlstm-table1")
    plan = plan_table(table, root, PRESETS["tiny"], {**stores, "salads": three})
    rows = [i for i, r in enumerate(table.rows) if r["labels"][2:] == ["Breakfast", "50 Salads"]]
    counts = {(i, j): len(plan.cells[(i, j)]["samples"]) for i in rows for j in range(2)}
    assert set(counts.values()) == {3}, counts
    assert any("Breakfast: 4, 50 Salads: 3" in n for n in plan.notes)
