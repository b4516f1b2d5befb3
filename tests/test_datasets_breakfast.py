"""The Breakfast plugin on the real files in shared/data (252 videos of P03-P15) and on
written files for the fine segmentation and the bad-input cases."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from actrec.errors import ConfigError, DataError
from actrec.io import annotations as A
from actrec_plugins.datasets.breakfast import Breakfast, parse_video_id

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
BF = DATA / "breakfast"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason="shared/data is absent")


def load(**options):
    return Breakfast(Breakfast.Config(**options)).load()


@pytest.fixture(scope="module")
def coarse():
    return load(root=BF, source="coarse")


@pytest.fixture(scope="module")
def mstcn():
    return load(root=BF, source="mstcn")


@needs_data
def test_coarse_counts_match_an_independent_parse(coarse):
    files = sorted(BF.glob("segmentation_coarse/*/*.txt"))
    # independent count: a video lasts until the largest 'last' frame of its file
    expected = sum(max(int(m[1]) for m in re.finditer(r"^\d+-(\d+)", f.read_text(), re.M))
                   for f in files)
    assert len(coarse.videos) == 252
    assert sum(v.num_frames for v in coarse.videos.values()) == expected == 506496
    assert len(coarse.classes) == 48 and coarse.classes[0] == "SIL"
    # No background in the MS-TCN set: its evaluation scores SIL segments like any other.
    assert coarse.background is None and coarse.background_classes == ()
    assert coarse.fps == 15.0
    # two real files hold empty ranges ('477-476 SIL', '1-0 SIL'): dropped and counted
    assert coarse.repairs == {"empty segments (dropped)": 2}


@needs_data
def test_video_metadata(coarse):
    v = coarse.videos["P03_cam01_P03_coffee"]
    assert (v.participant, v.camera, v.recipe) == ("P03", "cam01", "coffee")
    # golden from the file: 1-38 SIL, 39-199 take_cup, ... 776-921 SIL
    take_cup = coarse.classes.index("take_cup")
    assert v.num_frames == 921
    assert v.labels[37] == 0 and v.labels[38] == take_cup and v.labels[198] == take_cup
    assert v.labels[199] == coarse.classes.index("pour_coffee") and v.labels[-1] == 0
    assert parse_video_id("P12_stereo01_P12_scrambledegg") == ("P12", "stereo01",
                                                                "scrambledegg")


@needs_data
def test_xml_gives_the_same_labels_as_coarse(coarse):
    xml = load(root=BF, source="xml")
    assert xml.videos.keys() == coarse.videos.keys()
    for vid, rec in coarse.videos.items():
        np.testing.assert_array_equal(xml.videos[vid].labels, rec.labels, err_msg=vid)


@needs_data
def test_coarse_and_mstcn_agree_over_the_common_prefix(coarse, mstcn):
    same = total = overrun = 0
    for vid, rec in mstcn.videos.items():
        x, y = coarse.videos[vid].labels, rec.labels
        n = min(len(x), len(y))
        same += int(np.count_nonzero(x[:n] == y[:n]))
        total += n
        overrun += len(x) - n
    # measured on these files: 504,782 of 505,422 frames (99.87 %); the MS-TCN ground truth
    # is cut to the feature length, so the coarse files run 3-23 frames longer (1,074 in all)
    assert total == 505422 == sum(v.num_frames for v in mstcn.videos.values())
    assert same == 504782 and round(same / total, 4) == 0.9987
    assert overrun == 1074


@needs_data
def test_official_splits_equal_the_mstcn_bundles(mstcn):
    bundles = load(root=BF, source="mstcn", split_scheme="bundles")
    for n in "1234":
        assert mstcn.split(n) == bundles.split(n)
        train = A.read_bundle(BF / "splits" / f"train.split{n}.bundle")
        test = A.read_bundle(BF / "splits" / f"test.split{n}.bundle")
        lo, hi = [(3, 15), (16, 28), (29, 41), (42, 54)][int(n) - 1]
        assert all(lo <= int(v[1:3]) <= hi for v in test)
        assert not any(lo <= int(v[1:3]) <= hi for v in train)
    assert len(mstcn.split(1).test) == 252 and mstcn.split(1).train == ()
    assert len(mstcn.split(2).train) == 252
    # the bundles list all 1712 videos, only 252 have ground truth here: the rest are counted
    assert bundles.repairs == {"split entries without annotations (dropped)": 4 * 1712 - 4 * 252}


@needs_data
def test_lowest_label_set_folds_sil_into_background(coarse):
    low = load(root=BF, source="coarse", label_set="lowest")
    assert low.classes[0] == "background" and "SIL" not in low.classes
    assert low.background_classes == (0,)
    assert low.classes[1:] == tuple(sorted(set(coarse.classes[1:]) & set(low.classes)))
    rec, ref = low.videos["P03_cam01_P03_coffee"], coarse.videos["P03_cam01_P03_coffee"]
    names = np.array(low.classes)[rec.labels]
    expected = np.array(coarse.classes)[ref.labels]
    expected[expected == "SIL"] = "background"
    np.testing.assert_array_equal(names, expected)


def test_fine_segmentation_with_classes_file(tmp_path):
    (tmp_path / "segmentation_fine" / "tea").mkdir(parents=True)
    (tmp_path / "segmentation_fine" / "tea" / "P20_cam01_P20_tea.txt").write_text(
        "1-2 SIL\n3-5 take_cup\n6-6 pour_water\n")
    (tmp_path / "classes.txt").write_text("SIL\npour_water\ntake_cup\nstir\n")
    idx = load(root=tmp_path, source="fine", label_set="lowest",
               classes_file=tmp_path / "classes.txt")
    assert idx.classes == ("background", "pour_water", "take_cup", "stir")
    assert idx.videos["P20_cam01_P20_tea"].labels.tolist() == [0, 0, 2, 2, 2, 1]
    # person P20 is held out in official split 2
    assert idx.split(2).test == ("P20_cam01_P20_tea",) and idx.split(1).test == ()


def test_label_missing_from_mapping_names_file_and_line(tmp_path):
    (tmp_path / "segmentation_coarse" / "tea").mkdir(parents=True)
    (tmp_path / "mapping.txt").write_text("0 SIL\n1 take_cup\n")
    f = tmp_path / "segmentation_coarse" / "tea" / "P03_cam01_P03_tea.txt"
    f.write_text("1-2 SIL\n3-5 take_cup\n6-9 pour_water\n")
    with pytest.raises(DataError, match=re.escape(f"{f}:3: label 'pour_water' is not in")):
        load(root=tmp_path)


def test_duplicate_video_id_names_both_files(tmp_path):
    for recipe in ("tea", "coffee"):
        d = tmp_path / "segmentation_coarse" / recipe
        d.mkdir(parents=True)
        (d / "P03_cam01_P03_tea.txt").write_text("1-2 SIL\n")
    (tmp_path / "mapping.txt").write_text("0 SIL\n")
    with pytest.raises(DataError, match=r"duplicate video id 'P03_cam01_P03_tea': .*coffee.*tea"):
        load(root=tmp_path)


def test_empty_annotation_file(tmp_path):
    # skipped and counted (see test_datasets_damaged.py); strict=True keeps the error
    (tmp_path / "segmentation_coarse" / "tea").mkdir(parents=True)
    (tmp_path / "mapping.txt").write_text("0 SIL\n")
    (tmp_path / "segmentation_coarse" / "tea" / "P03_cam01_P03_tea.txt").write_text("")
    (tmp_path / "segmentation_coarse" / "tea" / "P04_cam01_P04_tea.txt").write_text("1-2 SIL\n")
    assert list(load(root=tmp_path).videos) == ["P04_cam01_P04_tea"]
    with pytest.raises(DataError, match=r"P03_cam01_P03_tea\.txt: empty file"):
        load(root=tmp_path, strict=True)


def test_missing_root_names_path_and_env_var(tmp_path, monkeypatch):
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError, match=r"nowhere.*ACTREC_DATA_BREAKFAST"):
        load(root=missing)
    monkeypatch.setenv("ACTREC_DATA_BREAKFAST", str(missing))
    with pytest.raises(DataError, match=r"nowhere.*ACTREC_DATA_BREAKFAST"):
        load()


@needs_data
def test_env_var_gives_the_root(tmp_path, monkeypatch):
    shutil.copytree(BF / "splits", tmp_path / "splits")
    shutil.copy(BF / "mapping.txt", tmp_path)
    (tmp_path / "groundTruth").mkdir()
    shutil.copy(BF / "groundTruth" / "P03_cam01_P03_coffee.txt", tmp_path / "groundTruth")
    monkeypatch.setenv("ACTREC_DATA_BREAKFAST", str(tmp_path))
    idx = load(source="mstcn")
    assert list(idx.videos) == ["P03_cam01_P03_coffee"]
    assert idx.videos["P03_cam01_P03_coffee"].num_frames == 917


def test_bad_options_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="source must be one of"):
        load(root=tmp_path, source="videos")
    with pytest.raises(ConfigError, match="unknown option 'sauce'"):
        Breakfast.Config.from_options({"sauce": "x"}, owner="dataset 'breakfast'")


def test_a_root_of_another_source_names_the_source_it_holds(tmp_path):
    # an MS-TCN-layout root read with the default source: say which -o source fits it
    (tmp_path / "groundTruth").mkdir()
    with pytest.raises(DataError, match=r"segmentation_coarse: folder not found .*"
                                         r"-o source=mstcn \(groundTruth/\)"):
        Breakfast(Breakfast.Config(root=tmp_path)).load()
