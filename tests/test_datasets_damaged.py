"""Damaged dataset folders, per reader family (issue 9, items 3c and 4), on files written here.

- A hidden file (``.P03_copy.txt``, a macOS ``._X.txt`` resource fork, a file in
  ``.ipynb_checkpoints/``) is no video: skipped and counted under ``HIDDEN_FILES``.
- An empty annotation file is skipped and counted under ``A.EMPTY_FILES``; ``strict=true``
  makes it the error it was before; a folder of only empty files is still an error.
- Frame ranges are bounded by 24 hours at the dataset's own fps (``A.frame_limit(fps)``), not
  only by the global ``A.MAX_FRAMES``: a value past it names the file and line.

(The plugin-level cases of the issue's two hostile lines, under a memory cap, are in
test_hostile_annotations.py.)
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from actrec.errors import ConfigError, DataError
from actrec.io import annotations as A
from actrec_plugins.datasets._common import HIDDEN_FILES, TESTED_TWICE, UNTESTED, visible_files
from actrec_plugins.datasets.breakfast import Breakfast
from actrec_plugins.datasets.epic import EpicKitchens
from actrec_plugins.datasets.gtea import CLASSES as GTEA_CLASSES
from actrec_plugins.datasets.gtea import GTEA
from actrec_plugins.datasets.mpii import MPIICooking2
from actrec_plugins.datasets.mstcn import MSTCN
from actrec_plugins.datasets.salads import Salads
from actrec_plugins.datasets.signing import SigningInTheWild

# The first bytes of a real AppleDouble file (what macOS writes as ``._name`` on foreign
# file systems): magic 0x00051607, version 2, "Mac OS X", then binary entries. Not UTF-8.
APPLE_DOUBLE = (b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        \x00\x02\x00\x00\x00\t"
                b"\x00\x00\x002\x00\x00\x0e\xb0\x00\x00\x00\x02\x00\x00\x0e\xe2\x00\x00\x01"
                b"\x1e\xff\xfe\xca\xfe")


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def load(plugin, **options):
    return plugin(plugin.Config(**options)).load()


# ------------------------------------------------------------------ the shared helper

def test_visible_files_leaves_out_and_counts_dot_files(tmp_path):
    write(tmp_path / "tea" / "P03_cam01_P03_tea.txt", "1-2 SIL\n")
    write(tmp_path / "tea" / ".P03_copy.txt", "1-2 SIL\n")
    write(tmp_path / "tea" / "._P03_cam01_P03_tea.txt", APPLE_DOUBLE)
    write(tmp_path / ".ipynb_checkpoints" / "P04_cam01_P04_tea.txt", "1-2 SIL\n")
    write(tmp_path / "P05.txt", "1-2 SIL\n")
    repairs = {HIDDEN_FILES: 1}
    found = visible_files(tmp_path, ["*.txt", "*/*.txt", "*.txt"], repairs)
    assert found == [tmp_path / "P05.txt", tmp_path / "tea" / "P03_cam01_P03_tea.txt"]
    assert repairs == {HIDDEN_FILES: 1 + 3}  # each hidden file once, whatever the patterns


# ------------------------------------------------------------------ Breakfast

BF_PEOPLE = ("P03", "P16", "P29", "P42")


def breakfast_root(root: Path, source: str) -> Path:
    """Four videos (one per official split) in ``source``'s format, and ``mapping.txt``."""
    write(root / "mapping.txt", "0 SIL\n1 take_cup\n")
    for p in BF_PEOPLE:
        video = f"{p}_cam01_{p}_tea"
        if source == "mstcn":
            write(root / "groundTruth" / f"{video}.txt", "SIL\ntake_cup\ntake_cup\n")
        elif source == "xml":
            write(root / "segmentation_xml" / "tea" / f"{video}.xml",
                  '<?xml version="1.0"?>\n<Seg>\n'
                  '  <MotionLabel name="SIL" startPoint="1" endPoint="1"/>\n'
                  '  <MotionLabel name="take_cup" startPoint="2" endPoint="3"/>\n</Seg>\n')
        else:
            folder = {"coarse": "segmentation_coarse", "fine": "segmentation_fine"}[source]
            write(root / folder / "tea" / f"{video}.txt", "1-1 SIL\n2-3 take_cup\n")
    return root


def breakfast_folder(root: Path, source: str) -> Path:
    return root / {"coarse": "segmentation_coarse/tea", "fine": "segmentation_fine/tea",
                   "xml": "segmentation_xml/tea", "mstcn": "groundTruth"}[source]


@pytest.mark.parametrize("source,label_set", [("coarse", "mstcn"), ("xml", "mstcn"),
                                              ("fine", "lowest"), ("mstcn", "mstcn"),
                                              ("mstcn", "lowest")])
def test_breakfast_skips_hidden_and_empty_files(tmp_path, source, label_set):
    root = breakfast_root(tmp_path, source)
    folder = breakfast_folder(root, source)
    ext = ".xml" if source == "xml" else ".txt"
    write(folder / f".P03_copy{ext}", (folder / f"P03_cam01_P03_tea{ext}").read_text())
    write(folder / f"._P16_cam01_P16_tea{ext}", APPLE_DOUBLE)
    hidden = 2
    if source != "mstcn":  # recipe folders: a hidden one is no recipe
        write(folder.parent / ".ipynb_checkpoints" / f"P29_cam01_P29_tea{ext}", "junk\n")
        hidden += 1
    empty = write(folder / f"P42_cam01_P42_tea{ext}", "\n \n")
    idx = load(Breakfast, root=root, source=source, label_set=label_set)
    assert sorted(idx.videos) == ["P03_cam01_P03_tea", "P16_cam01_P16_tea", "P29_cam01_P29_tea"]
    take = idx.classes.index("take_cup")
    assert idx.videos["P29_cam01_P29_tea"].labels.tolist() == [0, take, take]
    assert idx.repairs == {HIDDEN_FILES: hidden, A.EMPTY_FILES: 1}
    assert idx.split(4).test == ()  # P42's only video was the empty file
    with pytest.raises(DataError, match=re.escape(f"{empty}: empty file")):
        load(Breakfast, root=root, source=source, label_set=label_set, strict=True)
    assert Breakfast.Config.from_options({"strict": "true"}).strict is True


def test_breakfast_all_files_empty_is_an_error(tmp_path):
    root = breakfast_root(tmp_path, "coarse")
    for f in breakfast_folder(root, "coarse").glob("*.txt"):
        f.write_text("")
    with pytest.raises(DataError, match=r"tea: every annotation file is empty \(4, e\.g\. "):
        load(Breakfast, root=root)


def test_breakfast_bounds_ranges_at_24_hours_of_its_fps(tmp_path):
    root = breakfast_root(tmp_path, "coarse")
    # 24 h at Breakfast's 15 fps: 1,296,000 frames; one more is a damaged file, although it is
    # far below the 60-fps bound A.MAX_FRAMES that a reader uses when it passes no fps
    bad = write(breakfast_folder(root, "coarse") / "P03_cam01_P03_tea.txt",
                "1-1 SIL\n2-1296001 take_cup\n")
    with pytest.raises(DataError, match=re.escape(f"{bad}:2: frame 1296001 is past the limit "
                                                  "1296000")):
        load(Breakfast, root=root)
    with pytest.raises(DataError, match=r"P03_cam01_P03_tea\.txt:2: frame 2592001 is past the "
                                        r"limit 2592000"):
        bad.write_text("1-1 SIL\n2-2592001 take_cup\n")
        load(Breakfast, root=root, fps=30.0)
    xml = breakfast_root(tmp_path / "xml", "xml")
    bad = write(breakfast_folder(xml, "xml") / "P16_cam01_P16_tea.xml",
                '<?xml version="1.0"?>\n<Seg>\n'
                '  <MotionLabel name="SIL" startPoint="1" endPoint="1296001"/>\n</Seg>\n')
    with pytest.raises(DataError, match=re.escape(f"{bad}:3: MotionLabel 'SIL': frame 1296001")):
        load(Breakfast, root=xml, source="xml")


# ------------------------------------------------------------------ 50 Salads

def salads_root(root: Path) -> Path:
    write(root / "mapping.txt", "0 cut_tomato\n1 action_start\n2 action_end\n")
    write(root / "labels" / "low_level_actions.txt", "cut_tomato_prep\ncut_tomato_core\n")
    write(root / "labels" / "high_level_actions.txt", "cut_and_mix_ingredients\n")
    for person in ("01", "02", "03", "04", "05"):
        write(root / "annotations" / f"{person}-1-activityAnnotation.txt",
              "0 100000 cut_tomato_prep\n100000 200000 cut_tomato_core\n")
        write(root / "groundTruth" / f"rgb-{person}-1.txt", "action_start\ncut_tomato\n")
    for n in (1, 2):
        write(root / "splits" / f"train.split{n}.bundle", "rgb-01-1.txt\nrgb-02-1.txt\n")
        write(root / "splits" / f"test.split{n}.bundle", "rgb-03-1.txt\nrgb-04-1.txt\n")
    return root


LOW = dict(source="annotations", label_set="low", start_us=0, fps=10.0, split_scheme="person")


def test_salads_annotations_skip_hidden_and_empty_files(tmp_path):
    root = salads_root(tmp_path)
    write(root / "annotations" / "._01-1-activityAnnotation.txt", APPLE_DOUBLE)
    write(root / "annotations" / ".06-1-activityAnnotation.txt", "0 100000 cut_tomato_prep\n")
    empty = write(root / "annotations" / "04-1-activityAnnotation.txt", "")
    idx = load(Salads, root=root, **LOW)
    assert sorted(idx.videos) == ["rgb-01-1", "rgb-02-1", "rgb-03-1", "rgb-05-1"]
    # 10 fps from 0 us: frame i at i * 100000 us; prep covers frame 0, core frame 1, then frame 2
    # (the last row's end) is background
    assert idx.videos["rgb-01-1"].labels.tolist() == [1, 2, 0]
    assert idx.repairs[HIDDEN_FILES] == 2 and idx.repairs[A.EMPTY_FILES] == 1
    with pytest.raises(DataError, match=re.escape(f"{empty}: empty file")):
        load(Salads, root=root, strict=True, **LOW)


def test_salads_ground_truth_skips_hidden_and_empty_files(tmp_path):
    root = salads_root(tmp_path)
    write(root / "groundTruth" / "._rgb-01-1.txt", APPLE_DOUBLE)
    empty = write(root / "groundTruth" / "rgb-04-1.txt", "\n")
    idx = load(Salads, root=root)
    assert sorted(idx.videos) == ["rgb-01-1", "rgb-02-1", "rgb-03-1", "rgb-05-1"]
    assert idx.videos["rgb-02-1"].labels.tolist() == [1, 0]
    assert idx.split(1).test == ("rgb-03-1",)  # the empty file's split entry is dropped
    assert idx.repairs == {HIDDEN_FILES: 1, A.EMPTY_FILES: 1,
                           "split entries without annotations (dropped)": 2,
                           # both folds test rgb-03-1; 01-1, 02-1 and 05-1 none
                           UNTESTED: 3, TESTED_TWICE: 1}
    with pytest.raises(DataError, match=re.escape(f"{empty}: empty file")):
        load(Salads, root=root, strict=True)


def test_salads_frame_count_is_bounded_before_allocating(tmp_path):
    root = salads_root(tmp_path)
    # a negative start_us turns a short file into 10^12 frames (np.arange of 8 TB before)
    with pytest.raises(ConfigError, match=r"salads: start_us must be >= 0 .* got -100000000000"):
        load(Salads, root=root, **{**LOW, "start_us": -100_000_000_000_000})
    with pytest.raises(ConfigError, match=r"salads: fps must be a positive number, got 0"):
        load(Salads, root=root, **{**LOW, "fps": 0.0})
    # at 1 fps a video may last 86400 frames: times 0 .. 86399 s; a time of 86400 s would be
    # frame 86400, the 86401st
    path = write(root / "annotations" / "02-1-activityAnnotation.txt",
                 "0 100000 cut_tomato_prep\n5 86399999999 cut_tomato_core\n")
    idx = load(Salads, root=root, **{**LOW, "fps": 1.0})
    assert idx.videos["rgb-02-1"].num_frames == 86400
    path.write_text("0 100000 cut_tomato_prep\n5 86400000000 cut_tomato_core\n")
    with pytest.raises(DataError, match=re.escape(
            f"{path}:2: time 86400000000 is frame 86400 at 1 fps from start_us=0, past the "
            "limit of 86400 frames (24 hours)")):
        load(Salads, root=root, **{**LOW, "fps": 1.0})


# ------------------------------------------------------------------ EPIC-Kitchens

EPIC_HEADER = ("narration_id,participant_id,video_id,narration_timestamp,start_timestamp,"
               "stop_timestamp,start_frame,stop_frame,narration,verb,verb_class,noun,noun_class,"
               "all_nouns,all_noun_classes\n")


def epic_root(root: Path, info: str, stop_frame: int = 3) -> Path:
    rows = "".join(f"{p}_0,{p},{p}_101,0,0,0,1,{stop_frame if p == 'P01' else 2},x,v,0,n,0,"
                   f"['n'],[0]\n" for p in ("P01", "P02", "P03", "P04"))
    write(root / "EPIC_100_train.csv", EPIC_HEADER + rows)
    write(root / "EPIC_100_video_info.csv", "video_id,duration,fps,resolution\n" + info +
          "".join(f"{p}_101,0.1,50,x\n" for p in ("P02", "P03", "P04")))
    write(root / "EPIC_100_verb_classes.csv", "id,key\n0,take\n")
    write(root / "EPIC_100_noun_classes.csv", "id,key\n0,tap\n")
    return root


@pytest.mark.parametrize("info,expected", [
    # 24 h at 50 fps is 4,320,000 frames: 86400.02 s is one frame more
    ("P01_101,86400.02,50,x\n", r"lasts 4320001 frames \(86400\.02 s at 50 fps"
                                r"\), past the limit of 4320000 \(24 hours\)"),
    ("P01_101,1e308,60,x\n", r"lasts inf frames"),
    ("P01_101,10,0,x\n", r"fps must be a positive number, got '0'"),
    ("P01_101,10,-50,x\n", r"fps must be a positive number, got '-50'"),
    ("P01_101,10,nan,x\n", r"fps must be a positive number, got 'nan'"),
    ("P01_101,10,inf,x\n", r"fps must be a positive number, got 'inf'"),
    ("P01_101,nan,50,x\n", r"duration must be a number of seconds >= 0, got 'nan'"),
    ("P01_101,-1,50,x\n", r"duration must be a number of seconds >= 0, got '-1'"),
])
def test_epic_info_csv_values_are_checked_at_their_line(tmp_path, info, expected):
    root = epic_root(tmp_path, info)
    with pytest.raises(DataError, match=re.escape(f"{root / 'EPIC_100_video_info.csv'}:2: ")
                       + "video 'P01_101':? .*" + expected):
        load(EpicKitchens, root=root)


def test_epic_frames_are_bounded_at_24_hours_of_the_label_fps(tmp_path):
    # P01_101's frame numbers count frames at 50 fps (the EPIC-100 extension's rate), whatever
    # the info CSV says of its camera: 24 hours are 4,320,000 of them
    root = epic_root(tmp_path, "P01_101,0.1,1,x\n", stop_frame=4_320_000)
    idx = load(EpicKitchens, root=root)  # the last frame of 24 h: clipped to the 0.1 s video
    assert idx.videos["P01_101"].labels.tolist() == [1] * 5 and idx.videos["P01_101"].fps == 50
    assert idx.repairs == {"frames past the video end (clipped)": 4_320_000 - 5}
    root = epic_root(tmp_path / "b", "P01_101,0.1,1,x\n", stop_frame=4_320_001)
    # a stop_frame past 24 hours is a damaged row, not frames to clip and count
    with pytest.raises(DataError, match=re.escape(f"{root / 'EPIC_100_train.csv'}:2: frame "
                                                  "4320001 is past the limit 4320000")):
        load(EpicKitchens, root=root)


# ------------------------------------------------------------------ MPII Cooking 2

def test_mpii_frames_are_bounded_at_24_hours_of_its_fps(tmp_path):
    csv = write(tmp_path / "annotations.csv",
                "s08,v1,1,2,5,peel\ns09,v2,1,2,5,peel\ns10,v3,1,2,5,peel\ns11,v4,1,86400,5,peel\n")
    assert load(MPIICooking2, root=tmp_path, fps=1.0).videos["v4"].num_frames == 86400
    csv.write_text(csv.read_text().replace("86400", "86401"))
    with pytest.raises(DataError, match=re.escape(f"{csv}:4: frame 86401 is past the limit "
                                                  "86400")):
        load(MPIICooking2, root=tmp_path, fps=1.0)


# ------------------------------------------------------------------ Signing in the Wild

SIGNING_ROWS = "".join(f"yt{k} 0 S\nyt{k} 1 P\n" for k in range(5))


def test_signing_skips_hidden_and_empty_files(tmp_path):
    write(tmp_path / "gt.txt", SIGNING_ROWS)
    write(tmp_path / "._gt.txt", APPLE_DOUBLE)
    write(tmp_path / ".gt_backup.txt", "other 0 S\n")
    empty = write(tmp_path / "more.txt", "")
    idx = load(SigningInTheWild, root=tmp_path)
    assert sorted(idx.videos) == [f"yt{k}" for k in range(5)]
    assert idx.repairs == {HIDDEN_FILES: 2, A.EMPTY_FILES: 1}
    with pytest.raises(DataError, match=re.escape(f"{empty}: empty file")):
        load(SigningInTheWild, root=tmp_path, strict=True)
    empty.unlink()
    write(tmp_path / "gt.txt", "")
    with pytest.raises(DataError, match=r"every annotation file is empty \(1, e\.g\. gt\.txt\)"):
        load(SigningInTheWild, root=tmp_path)


def test_signing_frames_are_bounded_at_24_hours_of_its_fps(tmp_path):
    # 24 h at 5 fps = 432,000 frames: the last is frame 431999 (0-based)
    write(tmp_path / "gt.txt", SIGNING_ROWS + "yt0 431999 n\n")
    assert load(SigningInTheWild, root=tmp_path).videos["yt0"].num_frames == 432000
    gt = write(tmp_path / "gt.txt", SIGNING_ROWS + "yt0 432000 n\n")
    with pytest.raises(DataError, match=re.escape(f"{gt}:11: frame count 432001 is past the "
                                                  "limit 432000")):
        load(SigningInTheWild, root=tmp_path)


# ------------------------------------------------------------------ MS-TCN layout and GTEA

def mstcn_root(root: Path, classes=("bg", "a"), ext: str = ".txt") -> Path:
    write(root / "mapping.txt", "".join(f"{i} {c}\n" for i, c in enumerate(classes)))
    for v in ("S1_x_C1", "S2_x_C1", "S3_x_C1"):
        if ext == ".npy":
            (root / "groundTruth").mkdir(parents=True, exist_ok=True)
            np.save(root / "groundTruth" / f"{v}.npy", np.array([0, 1, 1]))
        else:
            write(root / "groundTruth" / f"{v}.txt", f"{classes[0]}\n{classes[1]}\n")
    write(root / "splits" / "train.split1.bundle", "S1_x_C1.txt\nS2_x_C1.txt\n")
    write(root / "splits" / "test.split1.bundle", "S3_x_C1.txt\n")
    return root


@pytest.mark.parametrize("ext", [".txt", ".npy"])
def test_mstcn_skips_hidden_and_empty_files(tmp_path, ext):
    root = mstcn_root(tmp_path, ext=ext)
    write(root / "groundTruth" / f"._S1_x_C1{ext}", APPLE_DOUBLE)
    write(root / "groundTruth" / ".S9_copy.txt", "bg\n")
    empty = write(root / "groundTruth" / f"S3_x_C1{ext}", b"")
    idx = load(MSTCN, root=root)
    assert sorted(idx.videos) == ["S1_x_C1", "S2_x_C1"]
    assert idx.videos["S1_x_C1"].labels.tolist() == ([0, 1] if ext == ".txt" else [0, 1, 1])
    assert idx.repairs == {HIDDEN_FILES: 2, A.EMPTY_FILES: 1,
                           "split entries without annotations (dropped)": 1}
    with pytest.raises(DataError, match=re.escape(f"{empty}: empty file")):
        load(MSTCN, root=root, strict=True)


def test_gtea_skips_hidden_and_empty_files(tmp_path):
    root = mstcn_root(tmp_path, classes=GTEA_CLASSES)
    write(root / "groundTruth" / "._S2_x_C1.txt", APPLE_DOUBLE)
    empty = write(root / "groundTruth" / "S2_x_C1.txt", "\n\n")
    idx = load(GTEA, root=root)
    assert sorted(idx.videos) == ["S1_x_C1", "S3_x_C1"]
    assert idx.repairs == {HIDDEN_FILES: 1, A.EMPTY_FILES: 1,
                           "split entries without annotations (dropped)": 1}
    with pytest.raises(DataError, match=re.escape(f"{empty}: empty file")):
        load(GTEA, root=root, strict=True)


# ------------------------------------------------------------------ what the user sees

def test_datasets_info_reports_the_counts_and_strict_restores_the_error(tmp_path):
    root = mstcn_root(tmp_path)
    write(root / "groundTruth" / "._S1_x_C1.txt", APPLE_DOUBLE)
    empty = write(root / "groundTruth" / "S3_x_C1.txt", "")

    def info(*extra):
        return subprocess.run([sys.executable, "-m", "actrec", "datasets", "info", "mstcn",
                               "--root", str(root), *extra], capture_output=True, text=True,
                              env={**os.environ, "COLUMNS": "200"}, timeout=120)

    shown = info("--json")
    assert shown.returncode == 0, shown.stderr
    data = json.loads(shown.stdout)
    assert data["videos"] == 2
    assert data["repairs"][HIDDEN_FILES] == 1 and data["repairs"][A.EMPTY_FILES] == 1
    table = info()
    assert HIDDEN_FILES in table.stdout and A.EMPTY_FILES in table.stdout
    refused = info("-o", "strict=true")
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert f"{empty}: empty file" in refused.stderr


def test_a_video_in_both_split_lists_is_refused_naming_both_files(tmp_path):
    """Issue 9, 3(a): a leaky split is refused when the dataset is loaded, naming the lists."""
    from actrec.errors import DataError
    from actrec.plugin_api import Split
    from actrec_plugins.datasets._common import split_from_lists

    train, test = tmp_path / "train.split1.bundle", tmp_path / "test.split1.bundle"
    train.write_text("a.txt\nb.txt\n")
    test.write_text("c.txt\nb.txt\n")
    with pytest.raises(DataError, match=rf"split 1: 1 video\(s\) listed both in {train} and "
                                        rf"in {test} \(e\.g\. 'b'\)"):
        split_from_lists("1", train, test, ["a", "b", "c"], {})
    with pytest.raises(DataError, match=r"split '2' lists 1 video\(s\) both for training"):
        Split("2", ("a", "b"), ("b",))
