"""The MS-TCN layout reader (``mstcn``) and GTEA, on written files and the real GTEA splits."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from actrec.errors import DataError
from actrec_plugins.datasets.gtea import CLASSES, GTEA
from actrec_plugins.datasets.mstcn import MSTCN, participant_of

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason="shared/data is absent")


def make_layout(root: Path, videos: dict[str, list[str]], classes=("bg", "a", "b"),
                test=("v1",), train=("v2",)) -> Path:
    (root / "groundTruth").mkdir(parents=True)
    (root / "splits").mkdir()
    (root / "mapping.txt").write_text("".join(f"{i} {c}\n" for i, c in enumerate(classes)))
    for v, labels in videos.items():
        (root / "groundTruth" / f"{v}.txt").write_text("\n".join(labels) + "\n")
    (root / "splits" / "test.split1.bundle").write_text("".join(f"{v}.txt\n" for v in test))
    (root / "splits" / "train.split1.bundle").write_text("".join(f"{v}.txt\n" for v in train))
    return root


def load(root, **options):
    return MSTCN(MSTCN.Config(root=root, **options)).load()


def test_text_ground_truth_and_bundles(tmp_path):
    root = make_layout(tmp_path, {"v1": ["bg", "a", "a", "b"], "v2": ["b", "b", "bg"]})
    idx = load(root, background="bg", fps=10)
    assert idx.classes == ("bg", "a", "b") and idx.background == 0 and idx.fps == 10
    assert idx.videos["v1"].labels.tolist() == [0, 1, 1, 2]
    assert idx.videos["v2"].labels.tolist() == [2, 2, 0]
    assert idx.split(1).train == ("v2",) and idx.split(1).test == ("v1",)
    assert idx.repairs == {}


def test_features_at_another_frame_rate_are_refused_under_either_policy(tmp_path):
    """Labels of 60 frames, features of 30 (half the rate): cut to 30, the labels would be
    misaligned from the first second on. Refused whatever the length policy, naming both
    lengths; a raised max_length_share lets it through, cut and counted."""
    from click.testing import CliRunner

    from actrec.cli import cli
    from actrec.importers import import_mstcn

    root = make_layout(tmp_path / "m", {"v1": ["a"] * 30 + ["b"] * 30, "v2": ["b"] * 12})
    (root / "features").mkdir()
    np.save(root / "features" / "v1.npy", np.zeros((4, 30), np.float32))
    np.save(root / "features" / "v2.npy", np.zeros((4, 12), np.float32))
    for policy in ("truncate", "error"):
        with pytest.raises(DataError, match=r"v1\.txt: 60 labelled frames but the features have "
                                            r"30: they differ by 50 % of the longer"):
            load(root, length_policy=policy)
    idx = load(root, max_length_share=0.6)
    assert idx.videos["v1"].labels.tolist() == [1] * 30
    assert idx.repairs == {"label frames beyond the feature length (truncated)": 30}
    with pytest.raises(DataError, match="differ by 50 %"):
        import_mstcn(root, tmp_path / "s1", name="m")
    out = CliRunner().invoke(cli, ["import", "mstcn", str(root), "--name", "m", "--out",
                                   str(tmp_path / "s2"), "--max-length-share", "0.6", "--json"])
    assert out.exit_code == 0, out.output
    refused = CliRunner().invoke(cli, ["import", "mstcn", str(root), "--name", "m", "--out",
                                       str(tmp_path / "s3")])
    assert isinstance(refused.exception, DataError)  # actrec.cli.main prints it, exit 1
    assert "--max-length-share" in str(refused.exception)
    assert not (tmp_path / "s3").exists()


def test_npy_ground_truth(tmp_path):
    root = make_layout(tmp_path, {"v1": ["a"]})
    (root / "groundTruth" / "v1.txt").unlink()
    np.save(root / "groundTruth" / "v1.npy", np.array([0, 2, 2, 1]))
    (root / "splits" / "train.split1.bundle").write_text("v1.npy\n")
    (root / "splits" / "test.split1.bundle").write_text("v9.txt\n")  # not v1 again: leakage
    idx = load(root)
    assert idx.videos["v1"].labels.tolist() == [0, 2, 2, 1]
    assert idx.background is None


def test_features_set_the_length_truncate_policy(tmp_path):
    root = make_layout(tmp_path, {"v1": ["bg", "a", "a", "b", "b"], "v2": ["b", "b"]})
    (root / "features").mkdir()
    np.save(root / "features" / "v1.npy", np.zeros((7, 3), np.float32))  # D=7, T=3
    np.save(root / "features" / "v2.npy", np.zeros((7, 4), np.float32))  # T=4 > 2 labels
    idx = load(root)
    assert idx.videos["v1"].labels.tolist() == [0, 1, 1]
    assert idx.videos["v2"].labels.tolist() == [2, 2, -1, -1]
    assert idx.repairs == {"label frames beyond the feature length (truncated)": 2,
                           "feature frames without labels (unlabelled)": 2}
    with pytest.raises(DataError, match=r"v1\.txt: 5 labelled frames but the features have 3"):
        load(root, length_policy="error")


def test_split_entry_without_annotation_is_dropped_and_counted(tmp_path):
    root = make_layout(tmp_path, {"v1": ["a"], "v2": ["b"]}, train=("v2", "v3", "v4"))
    idx = load(root)
    assert idx.split(1).train == ("v2",)
    assert idx.repairs == {"split entries without annotations (dropped)": 2}
    with pytest.raises(DataError, match=r"train\.split1\.bundle:2: split entry 'v3' has no "
                                        r"annotation file"):
        load(root, strict_splits=True)


def test_bad_inputs_name_file_and_line(tmp_path):
    root = make_layout(tmp_path / "a", {"v1": ["bg", "a", "zz"], "v2": ["a"]})
    with pytest.raises(DataError, match=re.escape(
            f"{root / 'groundTruth' / 'v1.txt'}:3: label 'zz' is not in the mapping")):
        load(root)
    root = make_layout(tmp_path / "b", {"v1": ["bg"], "v2": ["a"]})
    (root / "groundTruth" / "v2.txt").write_text("\n")
    with pytest.raises(DataError, match=r"v2\.txt: empty file"):
        load(root, strict=True)  # else skipped and counted (test_datasets_damaged.py)
    root = make_layout(tmp_path / "c", {"v1": ["bg"], "v2": ["a"]})
    np.save(root / "groundTruth" / "v1.npy", np.array([0]))
    with pytest.raises(DataError, match=r"duplicate video id 'v1'"):
        load(root)
    root = make_layout(tmp_path / "d", {"v1": ["bg"], "v2": ["a"]})
    (root / "splits" / "train.split1.bundle").unlink()
    with pytest.raises(DataError, match=r"train\.split1\.bundle: missing"):
        load(root)
    with pytest.raises(DataError, match=r"splits/mapping\.txt: file not found"):
        load(root / "splits")
    shutil.rmtree(root / "groundTruth")
    with pytest.raises(DataError, match=r"groundTruth: folder not found"):
        load(root)


def test_participant_of():
    assert participant_of("P03_cam01_P03_tea") == "P03"
    assert participant_of("S1_Coffee_C1") == "S1"
    assert participant_of("rgb-01-2") == "01"


@needs_data
def test_gtea_with_the_real_split_lists(tmp_path):
    shutil.copytree(DATA / "gtea" / "splits", tmp_path / "splits")
    (tmp_path / "groundTruth").mkdir()
    videos = (DATA / "gtea" / "splits" / "all.txt").read_text().split()
    rng = np.random.default_rng(0)
    written = {}
    for v in videos:
        labels = rng.integers(0, 11, size=int(rng.integers(5, 20)))
        written[v] = labels
        (tmp_path / "groundTruth" / f"{v}.txt").write_text(
            "".join(CLASSES[i] + "\n" for i in labels))
    idx = GTEA(GTEA.Config(root=tmp_path)).load()
    assert idx.classes[10] == "background" and idx.background == 10 and len(idx.classes) == 11
    assert len(idx.videos) == 28 and idx.fps == 15.0
    for v, labels in written.items():
        np.testing.assert_array_equal(idx.videos[v].labels, labels)
    assert list(idx.splits) == ["1", "2", "3", "4"]
    for n, s in idx.splits.items():
        assert (len(s.train), len(s.test)) == (21, 7)
        held = {idx.videos[v].participant for v in s.test}
        assert held == {f"S{n}"}  # leave one subject out
        assert f"S{n}" not in {idx.videos[v].participant for v in s.train}


def test_gtea_mapping_in_another_order_is_refused(tmp_path):
    make_layout(tmp_path, {"S1_Tea_C1": ["take"], "v2": ["open"]},
                classes=("background",) + CLASSES[:10])
    with pytest.raises(DataError, match=r"mapping\.txt: classes background, take.*expected"):
        GTEA(GTEA.Config(root=tmp_path)).load()


def test_mstcn_on_the_real_breakfast_folder():
    if not DATA.is_dir():
        pytest.skip("shared/data is absent")
    idx = load(DATA / "breakfast", background="SIL")
    assert len(idx.videos) == 252 and idx.background == 0 and len(idx.classes) == 48
    assert sum(v.num_frames for v in idx.videos.values()) == 505422


def test_mstcn_background_auto_is_the_class_named_background(tmp_path):
    """MS-TCN's evaluation leaves out the class named "background"; "auto" (the default)
    declares exactly that one, and none where no class has that name."""
    root = make_layout(tmp_path / "named", {"v1": ["background", "a"], "v2": ["a"]},
                       classes=("a", "background"))
    assert load(root).background == 1 and load(root).background_classes == (1,)
    assert load(root, background=None).background is None
    assert load(root, background="a").background_classes == (0,)
    other = make_layout(tmp_path / "sil", {"v1": ["SIL", "a"], "v2": ["a"]}, classes=("SIL", "a"))
    assert load(other).background is None  # SIL is scored, as in MS-TCN's Breakfast numbers
    assert MSTCN.Config.from_options({"background": "none"}).background is None
