"""Importing public features (MS-TCN and LSTR layouts) into real actrec feature stores."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from actrec.errors import ConfigError, DataError
from actrec.importers import import_lstr, import_mstcn
from actrec.io import annotations as A
from actrec.io.features import FeatureStore

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
IDT = DATA / "features" / "breakfast-idt64"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason="shared/data is absent")


@needs_data
def test_import_mstcn_real_features(idt_root, tmp_path):
    calls = []
    report = import_mstcn(idt_root, tmp_path / "store", name="breakfast-idt",
                          progress=lambda done, total, vid: calls.append((done, total, vid)))
    assert (report.written, report.already_present, report.dim, report.classes) == (5, 0, 64, 48)
    assert report.frames == sum(len(np.loadtxt(IDT / "groundTruth" / f"{v}.txt", dtype=str))
                                for v in (p.stem for p in IDT.glob("P*.txt")))
    assert report.repairs == {} and [c[0] for c in calls] == [1, 2, 3, 4, 5]
    store = FeatureStore.open(tmp_path / "store")
    attrs = store.attrs
    assert attrs["extractor"] == "mstcn-import" and attrs["lookahead"] == -1
    assert attrs["causal"] is False and "not causal" in attrs["extractor_config"]["note"]
    assert store.splits["1"]["test"] == ["P03_cam01_P03_coffee", "P05_cam01_P05_coffee"]
    classes = A.read_mapping(IDT / "mapping.txt")
    assert store.classes == list(classes)
    feats, labels = store.read("P08_webcam01_P08_coffee")
    expected = np.loadtxt(IDT / "P08_webcam01_P08_coffee.txt")  # [T, D]
    np.testing.assert_allclose(feats, expected, rtol=1e-3, atol=1e-3)  # stored as float16
    gt = A.read_frame_labels(IDT / "groundTruth" / "P08_webcam01_P08_coffee.txt",
                             {c: i for i, c in enumerate(classes)})
    np.testing.assert_array_equal(labels, gt)
    # the participant is recorded: a validation carve must hold out a person's every camera
    assert {v: store.video_attrs(v)["participant"] for v in store.videos()} == {
        v: v.split("_")[0] for v in store.videos()}
    # a second run keeps what is there, overwrite=True rewrites it
    again = import_mstcn(idt_root, tmp_path / "store", name="breakfast-idt")
    assert (again.written, again.already_present) == (0, 5)
    again = import_mstcn(idt_root, tmp_path / "store", name="breakfast-idt", overwrite=True)
    assert (again.written, again.already_present) == (5, 0)
    # a video with a lost chunk file is not "already present": it is imported again
    vdir = next(p for p in (tmp_path / "store" / "videos").iterdir()
                if "P08_webcam01_P08_coffee" in p.name)
    chunk = next(p for p in (vdir / "features" / "c").rglob("*") if p.is_file())
    chunk.unlink()
    with pytest.raises(DataError, match="P08_webcam01_P08_coffee"):
        store.read("P08_webcam01_P08_coffee")
    again = import_mstcn(idt_root, tmp_path / "store", name="breakfast-idt")
    assert (again.written, again.already_present) == (1, 4)
    assert again.repairs == {"damaged videos imported again": 1}
    np.testing.assert_array_equal(store.read("P08_webcam01_P08_coffee")[1], gt)


@needs_data
def test_import_mstcn_length_policy_and_missing_features(idt_root, tmp_path):
    v = "P03_cam01_P03_coffee"
    full = np.load(idt_root / "features" / f"{v}.npy")
    np.save(idt_root / "features" / f"{v}.npy", full[:, :900])  # 917 labels, 900 features
    (idt_root / "features" / "P05_cam01_P05_coffee.npy").unlink()
    np.save(idt_root / "features" / "orphan.npy", full[:, :10])
    report = import_mstcn(idt_root, tmp_path / "store", name="bf")
    assert report.written == 4
    assert report.repairs == {"label frames beyond the feature length (truncated)": 17,
                              "videos with ground truth but no features (skipped)": 1,
                              "feature files without ground truth (skipped)": 1}
    assert FeatureStore.open(tmp_path / "store").num_frames(v) == 900
    with pytest.raises(DataError, match=r"P03_cam01_P03_coffee\.txt: 917 labelled frames but "
                                        r"the features have 900"):
        import_mstcn(idt_root, tmp_path / "store2", name="bf", length_policy="error")


def test_import_mstcn_bad_inputs(tmp_path):
    root = tmp_path / "m"
    (root / "groundTruth").mkdir(parents=True)
    (root / "mapping.txt").write_text("0 a\n1 b\n")
    (root / "groundTruth" / "v.txt").write_text("a\nb\n")
    with pytest.raises(DataError, match=r"features: folder not found; nothing to import"):
        import_mstcn(root, tmp_path / "s", name="m")
    (root / "features").mkdir()
    np.save(root / "features" / "v.npy", np.zeros(2))
    with pytest.raises(DataError, match=r"v\.npy: expected features D x T, got shape \(2,\)"):
        import_mstcn(root, tmp_path / "s", name="m")


def write_lstr(root: Path, *, info=None) -> Path:
    for d in ("rgb_kinetics_resnet50", "flow_kinetics_bninception", "target_perframe"):
        (root / d).mkdir(parents=True)
    info = info or {"THUMOS": {"class_index": ["Background", "Jump", "Throw"],
                               "train_session_set": ["video_a"],
                               "test_session_set": ["video_b"]}}
    (root / "data_info.json").write_text(json.dumps(info))
    rng = np.random.default_rng(1)
    for v, t in (("video_a", 5), ("video_b", 4)):
        np.save(root / "rgb_kinetics_resnet50" / f"{v}.npy", rng.normal(size=(t, 3)))
        np.save(root / "flow_kinetics_bninception" / f"{v}.npy", rng.normal(size=(t, 2)))
    np.save(root / "target_perframe" / "video_a.npy",
            np.array([[1, 0, 0], [0, 1, 0], [0, 1, 1], [0, 0, 0], [0, 0, 1]], np.float32))
    np.save(root / "target_perframe" / "video_b.npy",
            np.array([[1, 0, 0], [0, 0, 1], [0, 0, 1]], np.float32))  # one row short
    return root


def test_import_lstr(tmp_path):
    root = write_lstr(tmp_path / "lstr")
    report = import_lstr(root, tmp_path / "store", name="thumos",
                         flow_dir="flow_kinetics_bninception")
    assert (report.written, report.dim, report.frames) == (2, 5, 8)
    assert report.repairs == {
        "frames beyond the shortest of features and targets (dropped)": 1,
        "frames with no target class (unlabelled)": 1,
        "frames with several target classes (first kept)": 1}
    store = FeatureStore.open(tmp_path / "store")
    assert store.classes == ["Background", "Jump", "Throw"]
    assert store.splits == {"1": {"train": ["video_a"], "test": ["video_b"]}}
    assert store.attrs["extractor"] == "lstr-import" and store.attrs["causal"] is False
    feats, labels = store.read("video_a")
    expected = np.concatenate([np.load(root / "rgb_kinetics_resnet50" / "video_a.npy"),
                               np.load(root / "flow_kinetics_bninception" / "video_a.npy")], 1)
    np.testing.assert_allclose(feats, expected, rtol=1e-3, atol=2e-3)
    assert labels.tolist() == [0, 1, 1, -1, 2]
    assert store.read("video_b")[1].tolist() == [0, 2, 2]
    assert store.video_attrs("video_a")["fps"] == 4.0


def test_import_accepts_a_rich_progress(tmp_path):
    from rich.console import Console
    from rich.progress import Progress

    root = write_lstr(tmp_path / "lstr")
    with Progress(console=Console(file=open(tmp_path / "log", "w"))) as progress:
        import_lstr(root, tmp_path / "store", name="thumos", progress=progress)
        (task,) = progress.tasks
        assert (task.completed, task.total) == (2, 2)


def test_import_lstr_bad_inputs(tmp_path):
    root = write_lstr(tmp_path / "a")
    (root / "rgb_kinetics_resnet50" / "video_b.npy").unlink()
    with pytest.raises(DataError, match=r"session 'video_b' is listed but .*video_b\.npy"):
        import_lstr(root, tmp_path / "s", name="thumos")
    root = write_lstr(tmp_path / "b", info={"TVSERIES": {"class_index": ["a"]}, "X": {}})
    with pytest.raises(DataError, match=r"data_info\.json: no entry 'THUMOS'; entries: TVSERIES"):
        import_lstr(root, tmp_path / "s", name="thumos")
    with pytest.raises(DataError, match=r"\['TVSERIES'\]: missing 'train_session_set'"):
        import_lstr(root, tmp_path / "s", name="thumos", dataset_key="TVSERIES")
    (root / "data_info.json").write_text("{not json")
    with pytest.raises(DataError, match=r"data_info\.json: not valid JSON"):
        import_lstr(root, tmp_path / "s", name="thumos")
    root = write_lstr(tmp_path / "c")
    np.save(root / "target_perframe" / "video_a.npy", np.zeros((5, 4)))
    with pytest.raises(DataError, match=r"video_a\.npy: 4 target columns; data_info lists 3"):
        import_lstr(root, tmp_path / "s", name="thumos")


def _tiny_mstcn(root: Path, classes=("background", "a")) -> Path:
    (root / "groundTruth").mkdir(parents=True)
    (root / "features").mkdir()
    (root / "splits").mkdir()
    (root / "mapping.txt").write_text("".join(f"{i} {c}\n" for i, c in enumerate(classes)))
    (root / "groundTruth" / "v.txt").write_text(f"{classes[0]}\n{classes[1]}\n")
    np.save(root / "features" / "v.npy", np.zeros((3, 2), np.float32))  # D=3, T=2
    (root / "groundTruth" / "w.txt").write_text(f"{classes[1]}\n{classes[0]}\n")
    np.save(root / "features" / "w.npy", np.ones((3, 2), np.float32))
    (root / "splits" / "train.split1.bundle").write_text("v.txt\n")
    (root / "splits" / "test.split1.bundle").write_text("w.txt\n")  # never both: leakage
    return root


def test_reimport_after_a_file_changed_replaces_that_video_only(tmp_path):
    """Running the import again after a features file or a ground-truth file changed imports
    that video again (counted), instead of keeping the stale copy as already present; an
    unchanged video stays as it was. Likewise for the LSTR layout's target files."""
    import os

    root = _tiny_mstcn(tmp_path / "m")
    store_path = tmp_path / "s.zarr"
    import_mstcn(root, store_path, name="m")
    kept = FeatureStore.open(store_path).video_attrs("w")["written_at"]
    np.save(root / "features" / "v.npy", np.full((3, 2), 7.0, np.float32))  # same size
    stat = (root / "features" / "v.npy").stat()
    os.utime(root / "features" / "v.npy", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    again = import_mstcn(root, store_path, name="m")
    assert (again.written, again.already_present) == (1, 1)
    assert again.repairs["videos whose files changed since imported (imported again)"] == 1
    store = FeatureStore.open(store_path)
    assert (store.read("v")[0] == 7.0).all()
    assert store.video_attrs("w")["written_at"] == kept
    (root / "groundTruth" / "w.txt").write_text("a\na\n")  # a corrected annotation
    third = import_mstcn(root, store_path, name="m")
    assert (third.written, third.already_present) == (1, 1)
    assert FeatureStore.open(store_path).read("w")[1].tolist() == [1, 1]
    assert import_mstcn(root, store_path, name="m").written == 0

    lstr = write_lstr(tmp_path / "lstr")
    import_lstr(lstr, tmp_path / "l.zarr", name="thumos")
    np.save(lstr / "target_perframe" / "video_b.npy",
            np.array([[0, 1, 0], [0, 1, 0], [0, 0, 1]], np.float32))
    redo = import_lstr(lstr, tmp_path / "l.zarr", name="thumos")
    assert (redo.written, redo.already_present) == (1, 1)
    assert FeatureStore.open(tmp_path / "l.zarr").read("video_b")[1].tolist() == [1, 1, 2]


def test_online_eval_of_imported_features_of_unknown_reach_says_how_to_import(tmp_path):
    """Imported without --lookahead, features count as looking ahead: the refusal says to
    import them again with --lookahead 0 (re-extracting cannot make imported features)."""
    from actrec.errors import ActrecError
    from actrec.evaluate import evaluate_run
    from actrec.train import TrainSpec, train_model

    root = _tiny_mstcn(tmp_path / "m")
    import_mstcn(root, tmp_path / "s.zarr", name="m")
    run = tmp_path / "run"
    train_model(TrainSpec(model="lstm", d1=tmp_path / "s.zarr", history=2, iterations=1,
                          mix=(2, 0), model_options={"hidden": 4}), run)
    with pytest.raises(ActrecError, match=r"non-causal features.*import them again with "
                                          r"--lookahead 0") as refused:
        evaluate_run(run, online=True)
    assert "re-extract" not in str(refused.value)


def test_import_errors_name_the_missing_root_and_the_split_option(tmp_path):
    with pytest.raises(DataError, match=r"nowhere: no such folder to import from \(expected "
                                        r"the MS-TCN layout"):
        import_mstcn(tmp_path / "nowhere", tmp_path / "s.zarr", name="m")
    with pytest.raises(DataError, match=r"nowhere: no such folder .*LSTR layout"):
        import_lstr(tmp_path / "nowhere", tmp_path / "l.zarr", name="t")
    root = _tiny_mstcn(tmp_path / "m")
    with pytest.raises(ConfigError, match=r"^--splits: split rule kfold:9:seed=0 needs at "
                                          r"least 9 videos, got 2"):
        import_mstcn(root, tmp_path / "k.zarr", name="m", splits="kfold:9")


def test_import_records_the_background_class(tmp_path):
    root = _tiny_mstcn(tmp_path / "m")
    import_mstcn(root, tmp_path / "auto", name="m")  # "auto": the class named background
    assert FeatureStore.open(tmp_path / "auto").background == (0,)
    import_mstcn(root, tmp_path / "none", name="m", background="none")
    assert FeatureStore.open(tmp_path / "none").background == ()
    other = _tiny_mstcn(tmp_path / "sil", classes=("SIL", "a"))
    import_mstcn(other, tmp_path / "sil.zarr", name="b")  # no class named background
    assert FeatureStore.open(tmp_path / "sil.zarr").background == ()
    import_mstcn(other, tmp_path / "sil2.zarr", name="b", background="SIL")
    assert FeatureStore.open(tmp_path / "sil2.zarr").background == (0,)
    lstr = write_lstr(tmp_path / "lstr")
    import_lstr(lstr, tmp_path / "thumos", name="thumos")  # "Background", any case
    assert FeatureStore.open(tmp_path / "thumos").background == (0,)
    import_lstr(lstr, tmp_path / "throw", name="thumos", background="Throw")
    assert FeatureStore.open(tmp_path / "throw").background == (2,)
    with pytest.raises(ConfigError, match=r"background class 'Run' is not one of the classes"):
        import_lstr(lstr, tmp_path / "bad", name="thumos", background="Run")


def test_import_from_another_root_is_refused_naming_both(tmp_path):
    a = _tiny_mstcn(tmp_path / "a")
    b = _tiny_mstcn(tmp_path / "b")
    import_mstcn(a, tmp_path / "s.zarr", name="m")
    with pytest.raises(ConfigError, match=rf"holds features of dataset 'm' \(root={a}\).*"
                       rf"not of dataset 'm' \(root={b}\)"):
        import_mstcn(b, tmp_path / "s.zarr", name="m")
    assert FeatureStore.open(tmp_path / "s.zarr").source["options"]["root"] == str(a)


def test_import_default_store_differs_by_root(tmp_path):
    import os
    import subprocess
    import sys

    env = {**os.environ, "ACTREC_HOME": str(tmp_path / "home")}
    stores = []
    for name in ("a", "b"):
        root = _tiny_mstcn(tmp_path / name)
        done = subprocess.run([sys.executable, "-m", "actrec", "import", "mstcn", str(root),
                               "--name", "m", "--json"], capture_output=True, text=True,
                              env=env, timeout=300)
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout)
        assert report["written"] == 2
        stores.append(report["store"])
    assert stores[0] != stores[1]


def test_import_records_a_known_lookahead(tmp_path):
    root = _tiny_mstcn(tmp_path / "m")
    report = import_mstcn(root, tmp_path / "i3d.zarr", name="m", lookahead=10)
    attrs = FeatureStore.open(tmp_path / "i3d.zarr").attrs
    assert (attrs["lookahead"], attrs["causal"]) == (10, False)
    assert attrs["extractor_config"]["lookahead"] == 10
    assert "reaches 10 frame(s) past" in attrs["extractor_config"]["note"]
    assert report.to_dict()["lookahead"] == "10 (not causal)"
    import_mstcn(root, tmp_path / "causal.zarr", name="m", lookahead=0)
    assert FeatureStore.open(tmp_path / "causal.zarr").attrs["causal"] is True
    unknown = import_mstcn(root, tmp_path / "unknown.zarr", name="m")
    assert FeatureStore.open(tmp_path / "unknown.zarr").attrs["lookahead"] == -1
    assert unknown.to_dict()["lookahead"] == "unknown (not causal)"
    # the lookahead is part of what the store holds: another one is refused
    with pytest.raises(ConfigError, match=r"lookahead"):
        import_mstcn(root, tmp_path / "i3d.zarr", name="m", lookahead=5)
    with pytest.raises(ConfigError, match=r"--lookahead: expected the number of future frames"):
        import_mstcn(root, tmp_path / "neg.zarr", name="m", lookahead=-2)
    lstr = write_lstr(tmp_path / "lstr")
    import_lstr(lstr, tmp_path / "lstr.zarr", name="thumos", lookahead=5)
    assert FeatureStore.open(tmp_path / "lstr.zarr").attrs["lookahead"] == 5


def test_import_without_split_bundles_takes_a_recorded_rule(tmp_path):
    root = _tiny_mstcn(tmp_path / "m")
    for bundle in (root / "splits").iterdir():
        bundle.unlink()
    for vid in ("x", "y", "z"):
        (root / "groundTruth" / f"{vid}.txt").write_text("a\nbackground\n")
        np.save(root / "features" / f"{vid}.npy", np.zeros((3, 2), np.float32))
    with pytest.raises(DataError, match=r"splits: no split bundles .*--splits loo, kfold:K"):
        import_mstcn(root, tmp_path / "none.zarr", name="m")
    report = import_mstcn(root, tmp_path / "loo.zarr", name="m", splits="loo")
    store = FeatureStore.open(tmp_path / "loo.zarr")
    assert store.attrs["split_scheme"] == "loo" and report.splits == 5
    assert store.splits["1"] == {"train": ["w", "x", "y", "z"], "test": ["v"]}
    import_mstcn(root, tmp_path / "k.zarr", name="m", splits="kfold:2:seed=4")
    store = FeatureStore.open(tmp_path / "k.zarr")
    assert store.attrs["split_scheme"] == "kfold:2:seed=4"
    assert store.source["options"]["splits"] == "kfold:2:seed=4"
    tests = [set(s["test"]) for s in store.splits.values()]
    assert sorted(map(len, tests)) == [2, 3] and set.union(*tests) == {"v", "w", "x", "y", "z"}
    # a rule replaces shipped bundles too (LSTR's session split here)
    lstr = write_lstr(tmp_path / "lstr")
    import_lstr(lstr, tmp_path / "lstr.zarr", name="thumos", splits="loo")
    assert FeatureStore.open(tmp_path / "lstr.zarr").splits == {
        "1": {"train": ["video_b"], "test": ["video_a"]},
        "2": {"train": ["video_a"], "test": ["video_b"]}}


def test_split_rule_by_participant_keeps_each_person_and_recording_on_one_side(tmp_path):
    """Breakfast-style ids: two camera views of each recording. By video, a 2-fold rule puts
    views of one recording on both sides (the test scores a recording trained on); by
    participant it never does, and the rule is recorded as given."""
    root = _tiny_mstcn(tmp_path / "m")
    for bundle in (root / "splits").iterdir():
        bundle.unlink()
    for path in [*(root / "groundTruth").iterdir(), *(root / "features").iterdir()]:
        path.unlink()
    ids = [f"P{p:02d}_{cam}_P{p:02d}_{dish}" for p in (3, 4, 5, 6) for dish in ("tea", "juice")
           for cam in ("cam01", "webcam01")]
    for vid in ids:
        (root / "groundTruth" / f"{vid}.txt").write_text("a\nbackground\n")
        np.save(root / "features" / f"{vid}.npy", np.zeros((3, 2), np.float32))

    def person(v):
        return v.split("_")[0]

    import_mstcn(root, tmp_path / "video.zarr", name="m", splits="kfold:2:seed=0")
    by_video = FeatureStore.open(tmp_path / "video.zarr").splits
    assert any({person(v) for v in s["train"]} & {person(v) for v in s["test"]}
               for s in by_video.values())
    import_mstcn(root, tmp_path / "person.zarr", name="m", splits="kfold:2:by=participant")
    store = FeatureStore.open(tmp_path / "person.zarr")
    assert store.attrs["split_scheme"] == "kfold:2:seed=0:by=participant"
    for split in store.splits.values():
        assert not {person(v) for v in split["train"]} & {person(v) for v in split["test"]}
        assert sorted(split["train"] + split["test"]) == sorted(ids)
    assert sorted(len(s["test"]) for s in store.splits.values()) == [8, 8]
    import_mstcn(root, tmp_path / "lopo.zarr", name="m", splits="loo:by=participant")
    lopo = FeatureStore.open(tmp_path / "lopo.zarr").splits
    assert [sorted({person(v) for v in s["test"]}) for s in lopo.values()] == [
        ["P03"], ["P04"], ["P05"], ["P06"]]
    with pytest.raises(ConfigError, match=r"records no participant"):
        import_lstr(write_lstr(tmp_path / "lstr"), tmp_path / "l.zarr", name="t",
                    splits="loo:by=participant")


def test_import_command_line_lookahead_and_split_rule(tmp_path, monkeypatch, capsys):
    from actrec.cli import main

    monkeypatch.setenv("ACTREC_HOME", str(tmp_path / "home"))
    root = _tiny_mstcn(tmp_path / "m")
    for bundle in (root / "splits").iterdir():
        bundle.unlink()

    def actrec(*args):
        capsys.readouterr()
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
        return (code, *capsys.readouterr())

    code, _, err = actrec("import", "mstcn", root, "--name", "m", "--splits", "kfold:x")
    assert code == 1 and ("--splits: expected loo, kfold:K or kfold:K:seed=S, each optionally "
                          "with :by=participant, got 'kfold:x'") in err
    code, _, err = actrec("import", "mstcn", root, "--name", "m")
    assert code == 1 and "no split bundles" in err and "Traceback" not in err
    code, out, err = actrec("import", "mstcn", root, "--name", "m", "--splits", "loo",
                            "--lookahead", "10", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert (report["split_scheme"], report["splits"], report["lookahead"]) == (
        "loo", 2, "10 (not causal)")
    store = FeatureStore.open(report["store"])
    assert store.attrs["lookahead"] == 10 and store.attrs["split_scheme"] == "loo"
