"""Audit of `actrec reproduce` against the papers: each test guards a cell that ran another
protocol than the paper's while printing a number beside the paper's (plans only, on real
synthetic Zarr stores; nothing is trained)."""

from __future__ import annotations

from pathlib import Path

import pytest

from actrec.errors import ConfigError
from actrec.paper_tables import load_table
from actrec.reproduce import PRESETS, plan_table, resolve_stores


@pytest.fixture(scope="module")
def kitchens(tmp_path_factory):
    """The tiny preset's kitchens a, b, c (4 leave-person-out splits each) and a kitchen b
    with 5 folds (a store split like MS-TCN's 50 Salads folds, not like the papers')."""
    from actrec.pipeline import extract_dataset

    root = tmp_path_factory.mktemp("audit-repro")
    stores = resolve_stores(load_table("ddlstm-table1"), root, PRESETS["tiny"])
    five = root / "salads5.zarr"
    extract_dataset("synthetic:kitchen=b", dataset_options={
        "root": str(root / "data5"), **PRESETS["tiny"].kitchen, "participants": "5",
        "folds": "5"}, out=five)
    return root, stores, five


def _units(plan, prefix):
    return [u for u in plan.units if u["key"].startswith(prefix)]


def test_recurrent_assistance_transfer_pretrains_for_the_papers_300000_iterations(kitchens):
    """Recurrent Assistance Sec. 5.2: the source split is trained for 300,000 iterations, then
    fine-tuned; the table's count was overwritten by the preset's 50,000."""
    root, stores, _ = kitchens
    plan = plan_table(load_table("recassist-table6"), root, PRESETS["paper"], stores)
    transfer = _units(plan, "transfer-")
    assert len(transfer) == 8 and {u["spec"]["pretrain_iters"] for u in transfer} == {300000}
    assert {u["spec"]["iterations"] for u in transfer} == {50000}  # fine-tuning
    assert all("pretrain_iters" not in u["spec"] for u in _units(plan, "single-"))
    # The tiny preset caps it like its other counts; DDLSTM gives none: as many as fine-tuning.
    tiny = plan_table(load_table("recassist-table6"), root, PRESETS["tiny"], stores)
    assert {u["spec"]["pretrain_iters"] for u in _units(tiny, "transfer-")} == {30}
    ddlstm = plan_table(load_table("ddlstm-table1"), root, PRESETS["paper"], stores)
    assert {u["spec"]["pretrain_iters"] for u in _units(ddlstm, "lstm-d")} == {50000}


def test_a_method_s_own_pretraining_count_is_kept(kitchens, tmp_path):
    root, stores, _ = kitchens
    text = load_table("ddlstm-table1").path.read_text()
    path = tmp_path / "t.toml"
    path.write_text(text.replace('[methods.lstm-d1-d2.train]\n',
                                 '[methods.lstm-d1-d2.train]\npretrain-iters = 1234\n'))
    plan = plan_table(load_table(path), root, PRESETS["paper"], stores)
    assert {u["spec"]["pretrain_iters"] for u in _units(plan, "lstm-d1-d2-")} == {1234}
    assert {u["spec"]["pretrain_iters"] for u in _units(plan, "lstm-d2-d1-")} == {50000}


@pytest.mark.parametrize("table", ["recassist-table7", "ddlstm-table1"])
def test_a_store_split_otherwise_than_the_paper_is_named_in_the_notes(kitchens, table):
    """Both papers use 4 leave-person-out splits (Recurrent Assistance Sec. 3, DDLSTM Sec. 4):
    a 5-fold 50 Salads store's split i is another split; a per-split table said nothing."""
    root, stores, five = kitchens
    loaded = load_table(table)
    assert loaded.splits == 4
    same = plan_table(loaded, root, PRESETS["tiny"], stores)
    assert not any("not the paper's split" in n for n in same.notes)
    other = plan_table(loaded, root, PRESETS["tiny"], {**stores, "salads": five})
    notes = [n for n in other.notes if "not the paper's split" in n]
    assert notes == [("the store of 50 Salads has 5 splits, the paper's protocol 4: its split "
                      "i is not the paper's split i, so its cells are not comparable with the "
                      "paper's (extract it with the paper's split rule, see the dataset's "
                      "split_scheme option)")]


def test_table_splits_must_be_a_positive_integer(tmp_path):
    text = load_table("recassist-table4").path.read_text()
    path = tmp_path / "t.toml"
    path.write_text(text.replace("splits = 4", "splits = 0"))
    with pytest.raises(ConfigError, match=r"t.toml: splits: expected an integer >= 1, got 0"):
        load_table(path)


def test_a_frame_classifier_scoring_d2_reads_d2_s_fixed_split(kitchens, tmp_path):
    """A frame-classifier cell scoring D2 with a fixed D2 split (the source column of
    Recurrent Assistance Tables 6-8 scored alone) read D2 at the row's split (or crashed)."""
    root, stores, _ = kitchens
    text = load_table("recassist-table6").path.read_text()
    path = tmp_path / "t.toml"
    text = text.replace('label_arrangement = "concat"\n', '')  # not for a classifier alone
    text = text.replace('[methods.single]\n', '[methods.cnn]\nkind = "frame-classifier"\n\n'
                        '[methods.single]\n') + """
[[columns]]
label = "50 Salads 1 alone"
method = "cnn"
D2 = "salads"
D2_split = 1
score = "D2"
"""
    path.write_text(text.replace(
        'paper = [30.78, 32.23, 34.01]', 'paper = [30.78, 32.23, 34.01, 0]').replace(
        'paper = [19.53, 21.37, 20.56]', 'paper = [19.53, 21.37, 20.56, 0]').replace(
        'paper = [28.75, 28.51, 28.77]', 'paper = [28.75, 28.51, 28.77, 0]').replace(
        'paper = [32.26, 31.94, 32.29]', 'paper = [32.26, 31.94, 32.29, 0]').replace(
        'paper = [27.83, 28.51, 28.91]', 'paper = [27.83, 28.51, 28.91, 0]'))
    table = load_table(path)
    plan = plan_table(table, root, PRESETS["tiny"], stores)
    from actrec.io.features import FeatureStore
    from actrec.sweep import split_order

    second = sorted(FeatureStore.open(stores["salads"]).splits, key=split_order)[1]
    for row in range(4):
        (key, domain), = plan.cells[(row, 3)]["samples"][0]
        unit = next(u for u in plan.units if u["key"] == key)
        assert unit["split"] == second and "salads" in Path(unit["store"]).name and domain == 0


@pytest.mark.parametrize("validation, grouped", [
    ({}, True),  # no validation: the interval only says when it saved
    ({"val_fraction": 0.2, "select": "best-val", "val_every": 50}, True),
    ({"val_fraction": 0.2, "select": "best-val"}, False),  # validated at each checkpoint
    ({"select_on_test": True}, False),
])
def test_a_split_sweep_keeps_runs_apart_whose_checkpoints_timed_their_validation(
        tmp_path, validation, grouped):
    """Without ``val_every`` a run validates (selects its weights) at its checkpoints: runs
    with other checkpoint intervals selected other weights, not a sweep of one setting."""
    import json

    from actrec.sweep import group_split_runs

    folders = []
    for split, every in (("1", 100), ("2", 300)):
        folder = tmp_path / f"run{split}"
        folder.mkdir()
        spec = {"model": "lstm", "split": split, "iterations": 600, "checkpoint_every": every,
                **validation}
        (folder / "config.json").write_text(json.dumps(
            {"spec": spec, "stores": [{"path": "s.zarr", "split": split}]}))
        folders.append(folder)
    if grouped:
        assert list(group_split_runs(folders)) == ["1", "2"]
    else:
        with pytest.raises(ConfigError, match=r"differ in checkpoint_every, not only in the "
                                              r"split"):
            group_split_runs(folders)


def _salads_store(path, classes, background):
    """A 4-split 50 Salads stand-in with the given label set (a real Zarr store)."""
    import numpy as np

    from actrec.io.features import FeatureStore

    people = [f"p{i}" for i in range(4)]
    splits = {str(k + 1): {"train": [p for p in people if p != people[k]], "test": [people[k]]}
              for k in range(4)}
    store = FeatureStore.open_or_create(
        path, dataset="salads", split_scheme="default", classes=classes, splits=splits,
        extractor="toy", extractor_config={}, lookahead=0, dtype="float32",
        background=background)
    rng = np.random.default_rng(0)
    for vid in people:
        y = rng.integers(0, len(classes), size=30)
        store.write_video(vid, rng.normal(size=(30, 4)).astype(np.float32), y, fps=30.0,
                          source=None)
    return path


@pytest.mark.parametrize("classes, background, note", [
    (19, (), ("19 classes and no background class, the paper's label set 52 classes with a "
              "background class")),  # MS-TCN's mid-level set, the reader's default
    (52, (), ("52 classes and no background class, the paper's label set 52 classes with a "
              "background class")),
    (52, (0,), None),  # the papers' lowest level with the added background
])
def test_a_store_with_another_label_set_than_the_paper_is_named_in_the_notes(
        kitchens, tmp_path, classes, background, note):
    """Recurrent Assistance Sec. 3.2 / DDLSTM Sec. 4: 50 Salads' lowest-level actions and an
    added background class, 52 classes; a store of the 19 MS-TCN classes ran silently."""
    root, stores, _ = kitchens
    names = ["background" if background else "c0"] + [f"c{i}" for i in range(1, classes)]
    store = _salads_store(tmp_path / "s.zarr", names, background)
    for table in ("recassist-table4", "ddlstm-table1"):
        plan = plan_table(load_table(table), root, PRESETS["tiny"], {**stores, "salads": store})
        found = [n for n in plan.notes if "label set" in n]
        assert found == ([] if note is None else [
            (f"the store of 50 Salads has {note}: another label set, so its cells are not "
             f"comparable with the paper's (see the dataset's label_set option)")])


def test_the_tiny_kitchens_are_not_held_to_the_papers_label_sets(kitchens):
    root, stores, _ = kitchens
    plan = plan_table(load_table("ddlstm-table1"), root, PRESETS["tiny"], stores)
    assert not [n for n in plan.notes if "label set" in n or "split i" in n]


@pytest.mark.parametrize("edit, message", [
    (("classes = 52", "classes = 0"), "datasets.salads.classes: expected an integer >= 1, got 0"),
    (("classes = 52\nbackground = true", "classes = 52\nbackground = 1"),
     "datasets.salads.background: expected bool, got 1"),
])
def test_a_bad_paper_label_set_names_the_key(tmp_path, edit, message):
    path = tmp_path / "t.toml"
    path.write_text(load_table("recassist-table4").path.read_text().replace(*edit))
    with pytest.raises(ConfigError, match=message):
        load_table(path)
