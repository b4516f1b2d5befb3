"""EPIC-Kitchens: the real EPIC-55 training CSV in shared/data, and EPIC-100 columns written
by the test."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from actrec.errors import DataError
from actrec_plugins.datasets.epic import EpicKitchens

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
EPIC = DATA / "epic55"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason="shared/data is absent")
OVERLAP = "frames covered by overlapping segments (later start wins)"
PAST_END = "frames past the video end (clipped)"


def load(**options):
    return EpicKitchens(EpicKitchens.Config(**options)).load()


@needs_data
def test_epic55_verbs_against_an_independent_count():
    idx = load(root=EPIC, labels="verb")
    info = {r["video"]: (float(r["duration"]), float(r["fps"]))
            for r in csv.DictReader(open(EPIC / "EPIC_video_info.csv"))}
    rows = list(csv.DictReader(open(EPIC / "EPIC_train_action_labels.csv")))
    assert len(rows) == 28472 and len(idx.videos) == 272
    assert len(idx.classes) == 126 and idx.classes[0] == "background"
    assert idx.classes[1:4] == ("take", "put", "open")
    by_video: dict[str, list] = {}
    for r in rows:
        by_video.setdefault(r["video_id"], []).append(r)
    overlap = past = 0
    for video, rec in idx.videos.items():
        # the frame numbers count frames extracted at 60 fps, whatever the camera's rate
        n = int(round(info[video][0] * 60.0))
        assert rec.num_frames == n and rec.fps == 60.0
        cover = np.zeros(n, dtype=np.int64)  # the slow, obvious count
        for r in by_video[video]:
            s, e = int(r["start_frame"]) - 1, int(r["stop_frame"])
            cover[s:e] += 1
            past += max(0, e - max(s, n))
        overlap += int(np.count_nonzero(cover > 1))
    assert idx.repairs == {OVERLAP: overlap}
    assert (overlap, past) == (562976, 0)
    # golden, P01_01 rows 0-1: 'open' frames 8-202 (1-based), 'turn-on' 262-370
    lab = idx.videos["P01_01"].labels
    opn, turn_on = idx.classes.index("open"), idx.classes.index("turn-on")
    assert lab[6] == 0 and lab[7] == opn and lab[201] == opn and lab[202] == 0
    assert lab[261] == turn_on and lab[369] == turn_on
    assert idx.fps == 60.0
    people = {v.participant for v in idx.videos.values()}
    for s in idx.splits.values():
        assert {idx.videos[v].participant for v in s.test}.isdisjoint(
            {idx.videos[v].participant for v in s.train})
        assert len(s.train) + len(s.test) == 272
    assert len(people) == 28


@needs_data
def test_epic55_nouns_and_actions():
    nouns = load(root=EPIC, labels="noun")
    assert len(nouns.classes) == 353 and nouns.classes[1:3] == ("Nothing", "pan")
    lab = nouns.videos["P01_01"].labels
    assert nouns.classes[lab[7]] == "cupboard"  # noun_class 8: door is in "cupboard"
    actions = load(root=EPIC, labels="action")
    assert actions.classes[actions.videos["P01_01"].labels[7]] == "open:cupboard"
    assert actions.classes == ("background", *sorted(actions.classes[1:]))


def write_epic100(root: Path, rows: list[str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "EPIC_100_train.csv").write_text(
        "narration_id,participant_id,video_id,narration_timestamp,start_timestamp,"
        "stop_timestamp,start_frame,stop_frame,narration,verb,verb_class,noun,noun_class,"
        "all_nouns,all_noun_classes\n" + "".join(r + "\n" for r in rows))
    (root / "EPIC_100_video_info.csv").write_text(
        "video_id,duration,fps,resolution\nP01_101,0.2,50,1920x1080\nP02_101,0.1,50,x\n"
        "P03_101,0.1,50,x\nP04_101,0.1,50,x\n")
    (root / "EPIC_100_verb_classes.csv").write_text(
        'id,key,instances,category\n0,take,"[\'take\']",retrieve\n1,put,"[\'put\']",leave\n')
    (root / "EPIC_100_noun_classes.csv").write_text(
        'id,key,instances,category\n0,tap,"[\'tap\']",appliances\n1,cup,"[\'cup\']",x\n')
    return root


def row(uid, person, video, start, stop, verb, noun):
    return (f"{uid},{person},{video},00:00:00.00,00:00:00.00,00:00:00.00,{start},{stop},"
            f"x,v,{verb},n,{noun},['n'],[{noun}]")


def test_epic100_columns_and_overlap_policy(tmp_path):
    root = write_epic100(tmp_path, [
        row("P01_101_0", "P01", "P01_101", 2, 6, 0, 1),   # take cup, frames 1..5 (0-based)
        row("P01_101_1", "P01", "P01_101", 5, 8, 1, 0),   # put tap, 4..7: later start wins
        row("P02_101_0", "P02", "P02_101", 1, 2, 0, 0),
        row("P03_101_0", "P03", "P03_101", 1, 2, 1, 1),
        row("P04_101_0", "P04", "P04_101", 4, 7, 1, 1),   # 3..6 in a 5-frame video
    ])
    idx = load(root=root, labels="verb")
    assert idx.classes == ("background", "take", "put")
    assert idx.videos["P01_101"].labels.tolist() == [0, 1, 1, 1, 2, 2, 2, 2, 0, 0]
    assert idx.videos["P04_101"].labels.tolist() == [0, 0, 0, 2, 2]
    assert idx.repairs == {OVERLAP: 2, PAST_END: 2}
    act = load(root=root, labels="action")
    assert act.classes == ("background", "put:cup", "put:tap", "take:cup", "take:tap")
    assert [act.classes[i] for i in act.videos["P01_101"].labels[:6]] == [
        "background", "take:cup", "take:cup", "take:cup", "put:tap", "put:tap"]
    assert [s.test for s in idx.splits.values()] == [("P01_101",), ("P02_101",), ("P03_101",),
                                                    ("P04_101",)]


def test_epic100_official_split_uses_the_validation_csv(tmp_path):
    root = write_epic100(tmp_path, [row("a", "P01", "P01_101", 2, 6, 0, 1),
                                    row("b", "P02", "P02_101", 1, 2, 0, 0)])
    (root / "EPIC_100_validation.csv").write_text(
        (root / "EPIC_100_train.csv").read_text().splitlines()[0] + "\n"
        + row("c", "P03", "P03_101", 1, 3, 1, 0) + "\n" + row("d", "P04", "P04_101", 1, 1, 9, 0)
        + "\n")
    with pytest.raises(DataError, match=r"EPIC_100_validation\.csv:3: verb_class '9'"):
        load(root=root, split_scheme="official")
    (root / "EPIC_100_validation.csv").write_text(
        (root / "EPIC_100_train.csv").read_text().splitlines()[0] + "\n"
        + row("c", "P03", "P03_101", 1, 3, 1, 0) + "\n")
    idx = load(root=root, split_scheme="official")
    assert idx.split(1).train == ("P01_101", "P02_101") and idx.split(1).test == ("P03_101",)
    assert idx.videos["P03_101"].labels.tolist() == [2, 2, 2, 0, 0]
    assert list(idx.splits) == ["1"]


def test_epic_bad_inputs(tmp_path):
    root = write_epic100(tmp_path / "a", [row("x", "P01", "P01_101", 2, 6, 7, 0)])
    with pytest.raises(DataError, match=r"EPIC_100_train\.csv:2: verb_class '7' is not a class"):
        load(root=root)
    root = write_epic100(tmp_path / "b", [row("x", "P01", "P09_101", 2, 6, 0, 0)])
    with pytest.raises(DataError, match=r"video_info\.csv: no entry for video 'P09_101' "
                                        r"\(used on line 2"):
        load(root=root)
    root = write_epic100(tmp_path / "c", [row("x", "P01", "P01_101", 6, 2, 0, 0)])
    with pytest.raises(DataError, match=r"EPIC_100_train\.csv:2: frame range 6-2 is invalid"):
        load(root=root)
    root = write_epic100(tmp_path / "d", [])
    (root / "EPIC_100_train.csv").write_text("participant_id,video_id\nP01,P01_101\n")
    with pytest.raises(DataError, match=r"EPIC_100_train\.csv:1: missing column\(s\) "
                                        r"start_frame"):
        load(root=root)
