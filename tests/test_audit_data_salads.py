"""Audit: the 50 Salads activity annotations against the MS-TCN ground truth of the same
videos (real files in shared/data). The annotations are timed in microseconds on a clock whose
frame times are in per-video timestamp files we do not have; the test fits each video's clock
to the ground truth (two boundaries: the first action's start and the last action's end) and
writes those timestamp files, so the comparison checks everything between: the rows' times to
frames, overlapping rows, the gaps between actions, action_start/action_end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from actrec.errors import ConfigError
from actrec_plugins.datasets.salads import NO_TIMESTAMPS, Salads

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SAL = DATA / "50salads"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason="shared/data is absent")


def load(**options):
    return Salads(Salads.Config(**options)).load()


def _fitted_timestamps(folder: Path, mid) -> None:
    """``timestamps-XX-Y.txt`` for each MS-TCN video: frame ``i`` at ``t0 + i / rate`` with
    ``t0`` and ``rate`` such that the first annotated action starts where the ground truth's
    first action starts, and the last one ends where its last action ends."""
    low = set((SAL / "labels" / "low_level_actions.txt").read_text().split())
    edge = {mid.classes.index("action_start"), mid.classes.index("action_end")}
    folder.mkdir()
    for video, rec in mid.videos.items():
        seq = video.removeprefix("rgb-")
        rows = [line.split() for line in
                (SAL / "annotations" / f"{seq}-activityAnnotation.txt").read_text().splitlines()]
        times = [(int(a), int(b)) for a, b, label in rows if label in low]
        t0, t1 = min(a for a, _ in times), max(b for _, b in times)
        acting = np.flatnonzero(~np.isin(rec.labels, list(edge)))
        f0, f1 = acting[0], acting[-1] + 1
        per_frame = (t1 - t0) / (f1 - f0)
        stamps = np.round(t0 + (np.arange(rec.num_frames) - f0) * per_frame).astype(np.int64)
        (folder / f"timestamps-{seq}.txt").write_text(
            "".join(f"{t} rgb-{seq}-{i}.png\n" for i, t in enumerate(stamps)))


@needs_data
@pytest.mark.slow
def test_annotations_reproduce_the_mstcn_ground_truth(tmp_path):
    mid = load(root=SAL)
    _fitted_timestamps(tmp_path / "ts", mid)
    ann = load(root=SAL, source="annotations", timestamps_dir=tmp_path / "ts")
    # 54 annotated sequences, 50 videos: 08 and 12 have no timestamps (no video): skipped
    assert sorted(ann.videos) == sorted(mid.videos)
    assert ann.repairs[NO_TIMESTAMPS] == 4
    same = total = 0
    for video, rec in mid.videos.items():
        got = ann.videos[video].labels
        assert got.shape == rec.labels.shape
        same += int(np.count_nonzero(got == rec.labels))
        total += rec.num_frames
    # measured: 574,237 of 577,595 frames (99.42 %); the rest lie within 30 frames of a
    # boundary (the two-point clock fit). Gaps left unlabelled, 95.66 % agreed.
    assert total == 577595 and same == 574237
    gaps = ann.repairs["frames between actions (the action before continued)"]
    unlabelled = load(root=SAL, source="annotations", timestamps_dir=tmp_path / "ts",
                      gaps="unlabelled")
    assert unlabelled.repairs["frames between actions (unlabelled)"] == gaps == 23454
    assert sum(int(np.count_nonzero(v.labels < 0)) for v in unlabelled.videos.values()) == gaps


@needs_data
def test_gap_golden_by_hand_in_01_1():
    """01-1: place_tomato_into_bowl_core ends at 118,080,188 us, the next low-level row
    (cut_tomato_prep) starts at 118,546,922 us. At 30 fps from start_us=0 frame i is at
    round(i * 1e6 / 30) us: frames 3543..3556 are in no row (3542 is at 118,066,667 us, 3543
    at 118,100,000, 3556 at 118,533,333, 3557 at 118,566,667)."""
    opts = dict(root=SAL, source="annotations", start_us=0, split_scheme="person")

    def names(idx, frames):
        lab = idx.videos["rgb-01-1"].labels
        return [idx.classes[c] if c >= 0 else -1 for c in lab[frames]]

    mid = load(**opts)
    assert names(mid, [3542, 3543, 3556, 3557]) == ["place_tomato_into_bowl"] * 3 + [
        "cut_tomato"]
    assert names(load(**opts, gaps="unlabelled"), [3542, 3543, 3556, 3557]) == [
        "place_tomato_into_bowl", -1, -1, "cut_tomato"]
    low = load(**opts, label_set="low")
    assert names(low, [3542, 3543, 3556, 3557]) == [
        "place_tomato_into_bowl_core", "background", "background", "cut_tomato_prep"]
    ev = load(**opts, label_set="eval")
    assert names(ev, [3542, 3543, 3556, 3557]) == ["place", "background", "background", "cut"]
    assert names(load(**opts, label_set="eval", gaps="previous"), [3543, 3556]) == ["place"] * 2
    with pytest.raises(ConfigError, match="gaps 'background' needs label_set 'low' or 'eval'"):
        load(**opts, gaps="background")
    # every annotated sequence was timed from start_us: counted, it is an approximation
    assert mid.repairs["videos timed from start_us and fps (no timestamps file; "
                       "approximate)"] == 54


@needs_data
def test_missing_timestamps_skip_or_refuse(tmp_path):
    (tmp_path / "ts").mkdir()
    (tmp_path / "ts" / "timestamps-01-1.txt").write_text(
        "".join(f"{53_000_000 + i * 33_333} x\n" for i in range(30_000)))
    idx = load(root=SAL, source="annotations", timestamps_dir=tmp_path / "ts")
    assert list(idx.videos) == ["rgb-01-1"] and idx.repairs[NO_TIMESTAMPS] == 53
    with pytest.raises(Exception, match=r"no timestamps-01-2\.txt for video rgb-01-2 \(nor "
                                        r"for 52 other sequence\(s\)\)"):
        load(root=SAL, source="annotations", timestamps_dir=tmp_path / "ts", strict=True)


@needs_data
def test_ends_unlabelled_scores_a_video_from_its_first_to_its_last_action():
    words = [w for p in sorted((SAL / "groundTruth").glob("*.txt")) for w in p.read_text().split()]
    edges = words.count("action_start") + words.count("action_end")
    assert (words.count("action_start"), words.count("action_end")) == (30001, 51344)
    for label_set in ("eval", "mid"):
        kept = load(root=SAL, label_set=label_set)
        cut = load(root=SAL, label_set=label_set, ends="unlabelled")
        assert cut.repairs == {"frames before the first or after the last action "
                               "(unlabelled)": edges}
        edge_ids = [kept.classes.index(c) for c in ("action_start", "action_end")
                    if c in kept.classes]
        for video, rec in kept.videos.items():
            got = cut.videos[video].labels
            if label_set == "mid":  # exactly the action_start / action_end frames
                np.testing.assert_array_equal(got < 0, np.isin(rec.labels, edge_ids))
            np.testing.assert_array_equal(got[got >= 0], rec.labels[got >= 0])
        assert sum(int(np.count_nonzero(v.labels < 0)) for v in cut.videos.values()) == edges
    # from the annotations (01-1 at 30 fps from 0 us): cut_tomato_prep starts at 53,704,269 us,
    # frame 1612 (1611 is at 53,700,000 us): frames 0..1611 come before the first action
    low = load(root=SAL, source="annotations", label_set="low", start_us=0,
               split_scheme="person", ends="unlabelled")
    lab = low.videos["rgb-01-1"].labels
    assert (lab[:1612] == -1).all() and lab[1612] == low.classes.index("cut_tomato_prep")
