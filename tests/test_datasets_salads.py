"""The 50 Salads plugin on the real files in shared/data and on written timestamp files."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from actrec.datasets_info import summarize
from actrec.errors import ConfigError, DataError
from actrec.io import annotations as A
from actrec_plugins.datasets.salads import Salads

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SAL = DATA / "50salads"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason="shared/data is absent")


def load(**options):
    return Salads(Salads.Config(**options)).load()


@pytest.fixture(scope="module")
def mid():
    return load(root=SAL)


@needs_data
def test_summary_of_the_mstcn_set(mid):
    s = summarize(mid)
    assert (s.videos, s.frames, s.num_classes) == (50, 577595, 19)
    # independent count: lines of the ground-truth files
    lines = sum(len(p.read_text().split()) for p in (SAL / "groundTruth").glob("*.txt"))
    assert s.frames == lines and sum(s.frames_per_class) == lines
    assert s.frames_per_class[mid.classes.index("action_start")] == sum(
        p.read_text().split().count("action_start") for p in (SAL / "groundTruth").glob("*.txt"))
    assert s.participants == 25 and s.unlabelled_frames == 0 and s.repairs == {}
    assert s.background is None and mid.fps == 30.0


@needs_data
def test_mstcn_folds(mid):
    assert list(mid.splits) == ["1", "2", "3", "4", "5"]
    tested = [v for s in mid.splits.values() for v in s.test]
    assert sorted(tested) == sorted(mid.videos)  # each video tested exactly once
    for s in mid.splits.values():
        assert (len(s.train), len(s.test)) == (40, 10) and not set(s.train) & set(s.test)


@needs_data
def test_person_folds_leave_people_out(mid):
    idx = load(root=SAL, split_scheme="person")
    people = sorted({v.participant for v in idx.videos.values()})
    assert len(people) == 25
    held = []
    for s in idx.splits.values():
        test_people = {idx.videos[v].participant for v in s.test}
        assert not test_people & {idx.videos[v].participant for v in s.train}
        assert len(s.train) + len(s.test) == 50
        held.append(sorted(test_people))
    # contiguous blocks of 7, 6, 6, 6 of the sorted participants
    assert held == [people[0:7], people[7:13], people[13:19], people[19:25]]
    assert [len(s.test) for s in idx.splits.values()] == [14, 12, 12, 12]


@needs_data
def test_eval_label_set_from_mstcn(mid):
    ev = load(root=SAL, label_set="eval")
    assert ev.classes == ("background", "add_dressing", "add_oil", "add_pepper", "cut",
                          "mix_dressing", "mix_ingredients", "peel_cucumber", "place",
                          "serve_salad_onto_plate")
    names = np.array(mid.classes)[mid.videos["rgb-01-1"].labels]
    got = np.array(ev.classes)[ev.videos["rgb-01-1"].labels]
    expected = np.array([("cut" if n.startswith("cut_") else "place" if n.startswith("place_")
                          else "background" if n in ("add_salt", "add_vinegar", "action_start",
                                                     "action_end") else n) for n in names])
    np.testing.assert_array_equal(got, expected)


@needs_data
def test_annotations_in_mid_level_follow_the_mstcn_segment_order(mid):
    """Low-level rows converted to mid level, sorted by start and merged, give the MS-TCN
    sequence of actions (action_start/end aside) in 44 of the 50 videos."""
    to_mid = A.read_conversion(SAL / "labels" / "conversions" / "low_to_mid.txt")
    differ = []
    for video, rec in mid.videos.items():
        path = SAL / "annotations" / f"{video[4:]}-activityAnnotation.txt"
        rows = sorted((r for r in A.read_timed_segments(path) if r[2] in to_mid),
                      key=lambda r: (r[0], r[1]))
        names = [to_mid[r[2]] for r in rows]
        ours = [n for i, n in enumerate(names) if i == 0 or n != names[i - 1]]
        _, values = A.runs(rec.labels)
        theirs = [mid.classes[v] for v in values if mid.classes[v] not in
                  ("action_start", "action_end")]
        if ours != theirs:
            differ.append(video)
    assert differ == ["rgb-09-1", "rgb-16-2", "rgb-18-1", "rgb-18-2", "rgb-21-1", "rgb-21-2"]


@needs_data
def test_annotations_low_level_with_a_start_time():
    idx = load(root=SAL, source="annotations", label_set="low", start_us=0,
               split_scheme="person")
    assert len(idx.classes) == 52 and idx.classes[0] == "background" and idx.background == 0
    assert len(idx.videos) == 54  # 08 and 12 are not in the MS-TCN set
    assert idx.repairs["files with CRLF line endings"] == 54
    assert idx.repairs["videos with unsorted segments (sorted)"] == 34
    v = idx.videos["rgb-01-1"]
    # golden: 'cut_tomato_prep' runs 53704269..76774251 us -> frames 1612..2303 at 30 fps
    prep = idx.classes.index("cut_tomato_prep")
    assert v.labels[1611] == 0 and v.labels[1612] == prep and v.labels[2303] == prep
    assert v.labels[2304] == idx.classes.index("cut_tomato_core")


def _mini_root(tmp_path: Path, annotation: str) -> Path:
    root = tmp_path / "salads"
    shutil.copytree(SAL / "labels", root / "labels")
    shutil.copytree(SAL / "splits", root / "splits")
    shutil.copy(SAL / "mapping.txt", root)
    (root / "annotations").mkdir()
    (root / "annotations" / "01-1-activityAnnotation.txt").write_bytes(
        annotation.replace("\n", "\r\n").encode())
    return root


@needs_data
def test_annotations_with_a_timestamps_file(tmp_path):
    root = _mini_root(tmp_path, "1000 9000 cut_and_mix_ingredients\n"
                      "3000 5000 cut_tomato_core\n1000 3000 cut_tomato_prep\n"
                      "6000 8000 place_tomato_into_bowl_core\n")
    stamps = tmp_path / "ts"
    stamps.mkdir()
    # ten frames 1000 us apart from 0
    (stamps / "timestamps-01-1.txt").write_text("".join(f"{i * 1000} f{i}.png\n"
                                                        for i in range(10)))
    mid = load(root=root, source="annotations", timestamps_dir=stamps)
    c = {n: i for i, n in enumerate(mid.classes)}
    # frame 5 (5000 us) is in no row: the action before it goes on (the MS-TCN ground truth)
    assert mid.videos["rgb-01-1"].labels.tolist() == [
        c["action_start"], c["cut_tomato"], c["cut_tomato"], c["cut_tomato"], c["cut_tomato"],
        c["cut_tomato"], c["place_tomato_into_bowl"], c["place_tomato_into_bowl"],
        c["action_end"], c["action_end"]]
    assert mid.repairs["frames between actions (the action before continued)"] == 1
    mid = load(root=root, source="annotations", timestamps_dir=stamps, gaps="unlabelled")
    assert mid.videos["rgb-01-1"].labels.tolist()[4:7] == [
        c["cut_tomato"], -1, c["place_tomato_into_bowl"]]
    assert mid.repairs["frames between actions (unlabelled)"] == 1
    low = load(root=root, source="annotations", label_set="low", timestamps_dir=stamps)
    c = {n: i for i, n in enumerate(low.classes)}
    assert low.videos["rgb-01-1"].labels.tolist() == [
        0, c["cut_tomato_prep"], c["cut_tomato_prep"], c["cut_tomato_core"],
        c["cut_tomato_core"], 0, c["place_tomato_into_bowl_core"],
        c["place_tomato_into_bowl_core"], 0, 0]


@needs_data
def test_annotations_need_timestamps_or_a_start(tmp_path):
    root = _mini_root(tmp_path, "1000 3000 cut_tomato_prep\n")
    with pytest.raises(DataError, match="pass timestamps_dir .* or start_us"):
        load(root=root, source="annotations")
    with pytest.raises(DataError, match=r"no timestamps-01-1\.txt for video rgb-01-1"):
        load(root=root, source="annotations", timestamps_dir=tmp_path)


@needs_data
def test_unknown_annotation_label_names_file_and_line(tmp_path):
    root = _mini_root(tmp_path, "1000 3000 cut_tomato_prep\n3000 4000 juggle_prep\n")
    path = root / "annotations" / "01-1-activityAnnotation.txt"
    with pytest.raises(DataError, match=re.escape(f"{path}:2: label 'juggle_prep'")):
        load(root=root, source="annotations", start_us=0)


def test_low_needs_annotations(tmp_path):
    with pytest.raises(ConfigError, match="label_set 'low' needs source 'annotations'"):
        load(root=tmp_path, label_set="low")
