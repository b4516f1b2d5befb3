"""Audit of the evaluation numbers against MS-TCN's ``eval.py`` (github.com/yabufarha/ms-tcn).

Two kinds of check:

* golden values worked out by hand (in the comments) for the conventions where a wrong choice
  silently changes published numbers: the IoU threshold is inclusive (>=), a true segment is
  matched at most once and a predicted segment whose best match is taken does not fall back to
  its second best, F1 pools tp/fp/fn over the videos of a split, edit is a mean over videos,
  frame accuracy is pooled over frames (micro) next to the per-video mean (macro);
* an independent re-implementation of MS-TCN's formulas (``_ref_*`` below, written from the
  reference's semantics, loop by loop, sharing no code with ``actrec.metrics``) compared with
  actrec on many seeded random label sequences, for both segment-end conventions: the last
  segment ends at ``T - 1`` in the code released with the paper (``end="mstcn"``) and at ``T``
  since the repository's July 2020 fix, commit 0e418c0 (``end="exclusive"``).

Where the reference has no number (it divides 0 by 0 for an edit score of two empty segment
sequences, and fails on an argmax over no true segment), actrec's documented choice is
checked instead: edit 100, and every predicted segment a false positive.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from actrec.evaluate import score_dataset
from actrec.metrics import (
    SegmentCounts,
    edit_score,
    f1_at_overlap,
    f1_from_counts,
    frame_accuracy,
    levenshtein,
    segment_counts,
    segment_exclusions,
    segments,
)

OVERLAPS = (0.10, 0.25, 0.50)
RELEASED, FIXED = "mstcn", "exclusive"  # last segment ends at T - 1 / at T


# --------------------------------------------------------------------------------------------
# Reference: MS-TCN's formulas, re-implemented independently (plain Python loops).


def _ref_segments(frames, bg, end):
    """MS-TCN's ``get_labels_start_end_time``: runs of equal labels, background runs dropped;
    a run ends where the next starts, the last one at T - 1 (released) or T (fixed)."""
    frames = [int(v) for v in frames]
    labels, starts, ends = [], [], []
    for i, v in enumerate(frames):
        if i == 0 or v != frames[i - 1]:
            if i > 0 and frames[i - 1] not in bg:
                ends.append(i)
            if v not in bg:
                labels.append(v)
                starts.append(i)
    if frames and frames[-1] not in bg:
        ends.append(len(frames) - 1 if end == RELEASED else len(frames))
    return labels, starts, ends


def _ref_levenshtein(p, y):
    d = [[0] * (len(y) + 1) for _ in range(len(p) + 1)]
    for i in range(len(p) + 1):
        d[i][0] = i
    for j in range(len(y) + 1):
        d[0][j] = j
    for i in range(1, len(p) + 1):
        for j in range(1, len(y) + 1):
            d[i][j] = d[i - 1][j - 1] if p[i - 1] == y[j - 1] else \
                1 + min(d[i - 1][j], d[i][j - 1], d[i - 1][j - 1])
    return d[-1][-1]


def _ref_edit(pred, target, bg):
    p = _ref_segments(pred, bg, FIXED)[0]
    y = _ref_segments(target, bg, FIXED)[0]
    longest = max(len(p), len(y))
    return math.nan if longest == 0 else (1 - _ref_levenshtein(p, y) / longest) * 100


def _ref_f_score(pred, target, overlap, bg, end):
    """MS-TCN's ``f_score``: each predicted segment in time order takes the true segment of
    highest IoU (labels must agree, else 0; 0/0 is nan and wins numpy's argmax, then fails
    the >= test); a TP if IoU >= overlap and that true segment is not hit yet."""
    pl, ps, pe = _ref_segments(pred, bg, end)
    yl, ys, ye = _ref_segments(target, bg, end)
    if not yl:  # the reference raises here (argmax of nothing); actrec: all false positives
        return 0, len(pl), 0
    hit = [False] * len(yl)
    tp = fp = 0
    for j in range(len(pl)):
        ious = []
        for x in range(len(yl)):
            inter = min(pe[j], ye[x]) - max(ps[j], ys[x])
            union = max(pe[j], ye[x]) - min(ps[j], ys[x])
            ious.append((inter / union if union else math.nan) * (pl[j] == yl[x]))
        best = next((i for i, v in enumerate(ious) if math.isnan(v)), None)
        if best is None:
            best = max(range(len(ious)), key=lambda i: (ious[i], -i))  # first of the maxima
        if ious[best] >= overlap and not hit[best]:
            tp += 1
            hit[best] = True
        else:
            fp += 1
    return tp, fp, len(yl) - sum(hit)


def _ref_f1(tp, fp, fn):
    """MS-TCN's F1 in percent from (pooled) counts, nan (0/0) turned into 0."""
    precision = tp / (tp + fp) if tp + fp else math.nan
    recall = tp / (tp + fn) if tp + fn else math.nan
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else math.nan
    return 0.0 if math.isnan(f1) else f1 * 100


def _random_pair(rng, classes=4, max_len=40):
    """A target of up to 6 runs and a prediction wrong on a random share of its frames
    (0 to all: from near-perfect to flickering), its last frame often changed alone."""
    t = int(rng.integers(1, max_len))
    runs = np.sort(rng.choice(np.arange(1, t), size=min(t - 1, int(rng.integers(0, 6))),
                              replace=False)) if t > 1 else np.zeros(0, int)
    target = np.repeat(rng.integers(0, classes, len(runs) + 1), np.diff([0, *runs, t]))
    pred = target.copy()
    wrong = rng.random(t) < rng.random()
    pred[wrong] = rng.integers(0, classes, int(wrong.sum()))
    if rng.random() < 0.3:  # a one-frame last run: zero length under the released convention
        pred[-1] = rng.integers(0, classes)
    return pred, target


# --------------------------------------------------------------------------------------------
# Cross-checks on random sequences


@pytest.mark.parametrize("end", [RELEASED, FIXED])
def test_segments_match_reference(end):
    rng = np.random.default_rng(7)
    for _ in range(400):
        pred, _target = _random_pair(rng)
        bg = [0] if rng.random() < 0.5 else []
        got = segments(pred, bg, end)
        want = _ref_segments(pred, bg, end)
        assert (got.labels.tolist(), got.starts.tolist(), got.ends.tolist()) == want, pred


@pytest.mark.parametrize("end", [RELEASED, FIXED])
@pytest.mark.parametrize("cells", [None, 5])  # None: one IoU block; 5: a few rows per block
def test_segment_counts_match_reference(end, cells, monkeypatch):
    import actrec.metrics

    if cells is not None:
        monkeypatch.setattr(actrec.metrics, "_IOU_CELLS", cells)
    rng = np.random.default_rng(11)
    for _ in range(600):
        pred, target = _random_pair(rng)
        bg = [0] if rng.random() < 0.5 else []
        for k in OVERLAPS:
            want = _ref_f_score(pred, target, k, bg, end)
            assert tuple(segment_counts(pred, target, k, bg, end)) == want, (pred, target, k)


def test_edit_score_and_levenshtein_match_reference():
    rng = np.random.default_rng(13)
    for _ in range(600):
        pred, target = _random_pair(rng)
        bg = [0] if rng.random() < 0.5 else []
        want = _ref_edit(pred, target, bg)
        got = edit_score(pred, target, bg)
        assert got == (100.0 if math.isnan(want) else pytest.approx(want)), (pred, target)
        p, y = list(pred[: int(rng.integers(0, 12))]), list(target[: int(rng.integers(0, 12))])
        assert levenshtein(np.array(p, int), np.array(y, int)) == _ref_levenshtein(p, y)
    for n, m in ((200, 30), (30, 200), (150, 150)):  # long, like a flickering online prediction
        p, y = rng.integers(0, 6, n), rng.integers(0, 6, m)
        assert levenshtein(p, y) == _ref_levenshtein(list(p), list(y))


def test_score_dataset_aggregates_like_mstcn_main():
    """MS-TCN's ``main``: Acc pooled over all frames, Edit the mean over videos, F1 from tp/fp/fn
    summed over videos. Ten random splits of 6 videos, no unlabelled frame, background 0
    left out (as GTEA's ``background``); MS-TCN's last segment ends at T - 1."""
    rng = np.random.default_rng(17)
    for _ in range(10):
        pairs = []
        while len(pairs) < 6:
            pred, target = _random_pair(rng, max_len=60)
            if any(v != 0 for v in target):  # the reference has no edit without a true segment
                pairs.append((pred, target))
        preds, targets = [p for p, _ in pairs], [y for _, y in pairs]
        res = score_dataset("d", "s", "1", [f"v{i}" for i in range(6)], preds, targets,
                            ("bg", "a", "b", "c"), (0,))
        correct = sum(int((p == y).sum()) for p, y in pairs)
        total = sum(len(y) for y in targets)
        assert res.frame_accuracy == pytest.approx(correct / total)
        edits = [_ref_edit(p, y, [0]) for p, y in pairs]
        assert res.edit == pytest.approx(sum(edits) / len(edits) / 100)
        for k in OVERLAPS:
            counts = np.sum([_ref_f_score(p, y, k, [0], RELEASED) for p, y in pairs], axis=0)
            assert res.f1[str(round(k * 100))] == pytest.approx(_ref_f1(*counts) / 100)
            assert f1_from_counts(SegmentCounts(*map(int, counts))) == \
                pytest.approx(_ref_f1(*counts))


# --------------------------------------------------------------------------------------------
# Golden values by hand


def test_iou_threshold_is_inclusive():
    """IoU exactly at each threshold is a true positive (>=), as in MS-TCN.
    end exclusive; true segment 1[0,T); predicted 1[0,n) then 2[n,T): IoU n/T.
    T=10, n=1 -> 0.1; T=4, n=1 -> 0.25; T=4, n=2 -> 0.5 (all exact in binary floating point).
    Each: TP 1 (the 1-segment), FP 1 (the 2-segment has no true 2), FN 0."""
    for t, n, k in ((10, 1, 0.10), (4, 1, 0.25), (4, 2, 0.50)):
        target = np.ones(t, int)
        pred = np.array([1] * n + [2] * (t - n))
        assert segment_counts(pred, target, k, end=FIXED) == SegmentCounts(1, 1, 0)
        # just above the IoU: no match
        assert segment_counts(pred, target, k + 1e-9, end=FIXED) == SegmentCounts(0, 2, 1)


def test_a_true_segment_matches_once_and_a_taken_best_does_not_fall_back():
    """Background 0. Y = 1[0,7) 0[7,8) 1[8,10).  P = 1[0,2) 2[2,3) 1[3,10)  (end exclusive).
    P1 vs Y1: 2/7 = 0.286 -> TP at 0.25, Y1 taken.  P2: no true 2 -> FP.
    P3 vs Y1: (7-3)/(10-0) = 0.4, vs Y2: 2/(10-3) = 0.286; best Y1 is taken -> FP, although
    Y2 clears 0.25 (no second choice).  Y2 unmatched -> FN.  TP 1, FP 2, FN 1.
    F1 = 2 * (1/3) * (1/2) / (5/6) = 0.4."""
    target = np.array([1, 1, 1, 1, 1, 1, 1, 0, 1, 1])
    pred = np.array([1, 1, 2, 1, 1, 1, 1, 1, 1, 1])
    assert segment_counts(pred, target, 0.25, [0], FIXED) == SegmentCounts(1, 2, 1)
    assert f1_at_overlap(pred, target, 0.25, [0], FIXED) == pytest.approx(40.0)
    # The released convention (P3 = 1[3,9), Y2 = 1[8,9)): P3 vs Y1 4/9, vs Y2 1/6: same counts.
    assert segment_counts(pred, target, 0.25, [0], RELEASED) == SegmentCounts(1, 2, 1)
    # Two predictions of one true segment: Y = 1[0,6); P = 1[0,3) 2[3,4) 1[4,6) -> IoUs 1/2
    # and 2/6: at 0.1 the first takes it, the second is FP: TP 1, FP 2, FN 0.
    assert segment_counts(np.array([1, 1, 1, 2, 1, 1]), np.ones(6, int), 0.1, end=FIXED) \
        == SegmentCounts(1, 2, 0)


def test_one_frame_last_segment_never_matches_under_the_released_convention():
    """Y = 1[0,3) 2[3,4); P identical. Released ends: 2[3,3) vs 2[3,3): 0/0 (MS-TCN: nan,
    not >= k) -> FP and FN; 1[0,3) vs 1[0,3): IoU 1 -> TP. TP 1, FP 1, FN 1 -> F1 50 for a
    perfect prediction. Fixed ends: TP 2 -> 100."""
    y = np.array([1, 1, 1, 2])
    for k in OVERLAPS:
        assert segment_counts(y, y, k, end=RELEASED) == SegmentCounts(1, 1, 1)
        assert f1_at_overlap(y, y, k, end=RELEASED) == pytest.approx(50.0)
        assert f1_at_overlap(y, y, k, end=FIXED) == pytest.approx(100.0)


def test_empty_segment_sequences():
    """Background 0. All-background target and prediction: no segment on either side; edit
    100 (MS-TCN: 0/0), counts 0 -> F1 0 (MS-TCN: nan_to_num(0/0) = 0). A prediction with
    segments against no true segment: every one FP (MS-TCN fails); edit 0. No predicted
    segment against two true ones: FN 2, edit 0. No frame at all: nothing, edit 100."""
    bg = np.zeros(5, int)
    assert edit_score(bg, bg, [0]) == 100.0
    assert segment_counts(bg, bg, 0.5, [0]) == SegmentCounts(0, 0, 0)
    assert f1_at_overlap(bg, bg, 0.5, [0]) == 0.0
    pred = np.array([0, 1, 1, 0, 2])
    assert segment_counts(pred, bg, 0.1, [0]) == SegmentCounts(0, 2, 0)
    assert edit_score(pred, bg, [0]) == 0.0
    assert segment_counts(bg, pred, 0.1, [0]) == SegmentCounts(0, 0, 2)
    assert edit_score(bg, pred, [0]) == 0.0
    empty = np.zeros(0, int)
    assert segment_counts(empty, empty, 0.1) == SegmentCounts(0, 0, 0)
    assert edit_score(empty, empty) == 100.0
    assert math.isnan(frame_accuracy(empty, empty))


def test_split_scores_pool_f1_and_average_edit_by_hand():
    """Two videos, no background, released ends (last segment to T - 1).
    v1: Y = 1 1 1 1 2 2 2 2, P = Y: segments 1[0,4) 2[4,7) both sides -> TP 2; edit 100;
        8/8 frames right.
    v2: Y = 3 3, P = 1 1: 1[0,1) vs 3[0,1) -> FP 1, FN 1; edit 0; 0/2 frames right.
    Pooled F1: TP 2, FP 1, FN 1 -> P = R = 2/3 -> F1 = 2/3 (the mean of the per-video F1s,
    (1 + 0) / 2 = 1/2, would be another number). Edit: (100 + 0) / 2 -> 0.5.
    Frame accuracy pooled 8/10 = 0.8; mean over videos (1 + 0) / 2 = 0.5."""
    preds = [np.array([1, 1, 1, 1, 2, 2, 2, 2]), np.array([1, 1])]
    targets = [np.array([1, 1, 1, 1, 2, 2, 2, 2]), np.array([3, 3])]
    res = score_dataset("d", "s", "1", ["v1", "v2"], preds, targets, ("a", "b", "c", "d"))
    for k in ("10", "25", "50"):
        assert res.f1[k] == pytest.approx(2 / 3)
    assert res.edit == pytest.approx(0.5)
    assert res.frame_accuracy == pytest.approx(0.8)
    assert res.mean_video_accuracy == pytest.approx(0.5)
    assert res.per_video["v2"] == {"frames": 2, "accuracy": 0.0, "edit": 0.0}


def test_unlabelled_frames_leave_prediction_and_target_segments():
    """Background 0, frames labelled -1 unlabelled (dropped from both sides, as background).
    Y = 1 1 -1 -1 -1 2 2 0, P = 1 1 1 1 1 2 2 0 -> P after dropping: 1 1 . . . 2 2 0.
    Segments: Y 1[0,2) 2[5,7); P 1[0,2) 2[5,7) -> TP 2 at every threshold, edit 100.
    Without the drop P would be 1[0,5) 2[5,7): IoU 2/5 < 0.5 -> F1@50 from TP 1, FP 1, FN 1
    = 0.5. Frame accuracy counts the 5 labelled frames: 5/5."""
    pred, target = np.array([1, 1, 1, 1, 1, 2, 2, 0]), np.array([1, 1, -1, -1, -1, 2, 2, 0])
    res = score_dataset("d", "s", "1", ["v"], [pred], [target], ("bg", "a", "b"), (0,))
    assert res.frames == 5 and res.frame_accuracy == 1.0
    assert res.edit == 1.0 and res.f1 == {"10": 1.0, "25": 1.0, "50": 1.0}
    assert res.segment_background == ("bg",)
    drop = segment_exclusions((0,))
    assert segment_counts(pred, target, 0.5, drop) == SegmentCounts(1, 1, 1)
    assert frame_accuracy(pred, target) == 1.0
    assert frame_accuracy(np.array([1, 2, 3]), np.array([1, -1, 0])) == 0.5


def test_iou_ties_go_to_the_earliest_true_segment():
    """Background 0, end exclusive. Y = 1[0,4) 0[4,5) 1[5,9); P = 0 0 1 1 1 1 1 2 1:
    P1 = 1[2,7): IoU with Y1 (4-2)/(7-0) = 2/7, with Y2 (7-5)/(9-2) = 2/7, a tie -> the
    earliest, Y1 (numpy's argmax, as MS-TCN): TP at 0.25. P2 = 2[7,8): FP.
    P3 = 1[8,9) vs Y2: 1/4 -> TP. TP 2, FP 1, FN 0. Had the tie gone to Y2, P3 would find
    it taken: TP 1, FP 2, FN 1."""
    target = np.array([1, 1, 1, 1, 0, 1, 1, 1, 1])
    pred = np.array([0, 0, 1, 1, 1, 1, 1, 2, 1])
    assert segment_counts(pred, target, 0.25, [0], FIXED) == SegmentCounts(2, 1, 0)


def test_a_prediction_outside_the_datasets_classes_is_a_wrong_segment_not_a_gap():
    """``--prediction full`` answers OFF_BLOCK (-2) where the argmax is another dataset's class:
    a wrong prediction, which must stay in the predicted segments (only -1, unlabelled, is
    dropped). Y = 1 1 1 1; P = 1 1 -2 -2 (released ends): P 1[0,2) vs Y 1[0,3): 2/3 -> TP;
    -2[2,3) -> FP. F1 = 2 * (1/2) * 1 / (3/2) = 2/3 at every threshold; edit: lev([1, -2], [1])
    = 1 of 2 -> 0.5; frame accuracy 2/4."""
    from actrec.data.labels import OFF_BLOCK

    pred, target = np.array([1, 1, OFF_BLOCK, OFF_BLOCK]), np.ones(4, int)
    res = score_dataset("d", "s", "1", ["v"], [pred], [target], ("bg", "a"), (0,))
    assert res.f1 == pytest.approx({"10": 2 / 3, "25": 2 / 3, "50": 2 / 3})
    assert res.edit == pytest.approx(0.5)
    assert res.frame_accuracy == pytest.approx(0.5)


def test_a_video_without_a_labelled_frame_is_left_out_of_the_mean_edit():
    """Unlabelled frames are left out of everything, so a video with none labelled has no edit
    score (nan) and is not in the mean, as it is not in the mean video accuracy.
    v1: Y = 1 1 2 2, P = 1 1 1 1 -> lev([1], [1, 2]) = 1 of 2 -> edit 50; accuracy 1/2.
    v2: all -1. Mean edit over videos with a labelled frame: 0.5 (not (0.5 + 1) / 2 = 0.75)."""
    preds = [np.array([1, 1, 1, 1]), np.array([1, 2, 1, 2])]
    targets = [np.array([1, 1, 2, 2]), np.full(4, -1)]
    res = score_dataset("d", "s", "1", ["v1", "v2"], preds, targets, ("bg", "a", "b"), (0,))
    assert res.mean_video_accuracy == pytest.approx(0.5)
    assert math.isnan(res.per_video["v2"]["edit"])
    assert res.edit == pytest.approx(0.5)


def test_per_class_precision_by_hand_and_against_counting():
    """Frames (pred, target): (0,0) (0,1) (1,1) (1,1) (2,-1) (OFF_BLOCK,0) (0,2).
    Labelled: 6 (the -1 frame is out). Predicted 0 on 3 frames, right once -> 1/3; predicted 1
    twice, right twice -> 1; class 2 never predicted (its -1 frame does not count) -> nan;
    the off-block prediction belongs to no class's column."""
    from actrec.metrics import per_class_precision

    pred = np.array([0, 0, 1, 1, 2, -2, 0])
    target = np.array([0, 1, 1, 1, -1, 0, 2])
    got = per_class_precision(pred, target, 3)
    assert got[0] == pytest.approx(1 / 3) and got[1] == 1.0 and math.isnan(got[2])
    # What eval reports: per class by name, and the mean over the classes predicted
    # ((1/3 + 1) / 2; the never-predicted class is out of the mean, not a 0 in it).
    res = score_dataset("d", "s", "1", ["v"], [pred], [target], ("a", "b", "c"))
    assert res.per_class_precision["a"] == pytest.approx(1 / 3)
    assert math.isnan(res.per_class_precision["c"])
    assert res.mean_class_precision == pytest.approx(2 / 3)
    rng = np.random.default_rng(19)
    for _ in range(50):
        n = int(rng.integers(1, 60))
        pred, target = rng.integers(-2, 5, n), rng.integers(-1, 5, n)
        got = per_class_precision(pred, target, 5)
        for c in range(5):
            hits = [y == c for p, y in zip(pred, target) if p == c and y != -1]
            assert (math.isnan(got[c]) if not hits else got[c] == pytest.approx(np.mean(hits)))


def test_a_dataset_without_labelled_test_frames_has_no_scores_not_zero():
    """No test video (a split whose test list the store does not hold), or only unlabelled
    frames: nothing was scored, so every metric is missing (null in JSON, '-' in tables),
    F1 included; F1's 0/0 must not read as a score of 0."""
    import math

    from actrec.runs import json_safe

    for ids, preds, targets in (([], [], []), (["v"], [np.array([1, 2])], [np.array([-1, -1])])):
        res = score_dataset("d", "s", "1", ids, preds, targets, ("bg", "a", "b"), (0,))
        assert res.frames == 0
        assert all(math.isnan(v) for v in res.f1.values())
        assert math.isnan(res.frame_accuracy) and math.isnan(res.edit)
        assert json_safe(res.to_dict())["f1"] == {"10": None, "25": None, "50": None}
