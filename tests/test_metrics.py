"""Golden values for the metrics, every one worked out by hand in the comments."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actrec.metrics import (
    SegmentCounts,
    confusion,
    edit_score,
    f1_at_overlap,
    f1_from_counts,
    frame_accuracy,
    levenshtein,
    per_class_accuracy,
    segment_counts,
    segment_exclusions,
    segments,
)

# Frame 4 is unlabelled. Kept frames 0,1,2,3,5: right, right, wrong (1 for 2), right, wrong.
PRED = np.array([0, 1, 1, 2, 0, 1])
TARGET = np.array([0, 1, 2, 2, -1, 0])


def test_frame_accuracy_ignores_unlabelled():
    assert frame_accuracy(PRED, TARGET) == pytest.approx(3 / 5)
    assert frame_accuracy(PRED, np.zeros(6, dtype=int)) == pytest.approx(2 / 6)
    assert math.isnan(frame_accuracy(PRED, np.full(6, -1)))


def test_confusion_by_hand():
    # true 0: frames 0 (pred 0), 5 (pred 1); true 1: frame 1 (pred 1); true 2: 2 (1), 3 (2).
    expected = np.array([[1, 1, 0], [0, 1, 0], [0, 1, 1]])
    np.testing.assert_array_equal(confusion(PRED, TARGET, 3), expected)
    # An off-block prediction (-2) is in no column.
    off = confusion(np.array([-2, 0]), np.array([0, 0]), 2)
    np.testing.assert_array_equal(off, [[1, 0], [0, 0]])
    with pytest.raises(ValueError):
        confusion(PRED, TARGET, 2)  # label 2 outside 0..1


def test_per_class_accuracy_by_hand():
    acc = per_class_accuracy(PRED, TARGET, 4)
    np.testing.assert_allclose(acc[:3], [0.5, 1.0, 0.5])
    assert math.isnan(acc[3])  # no frame of class 3
    # An off-block prediction still counts against its true class.
    np.testing.assert_allclose(per_class_accuracy(np.array([-2, 0]), np.array([0, 0]), 1), [0.5])


def test_segments_mstcn_end_convention():
    frames = np.array([1, 1, 2, 2, 2, 0, 0, 1])
    seg = segments(frames)
    np.testing.assert_array_equal(seg.labels, [1, 2, 0, 1])
    np.testing.assert_array_equal(seg.starts, [0, 2, 5, 7])
    np.testing.assert_array_equal(seg.ends, [2, 5, 7, 7])  # last ends at T-1 = 7
    seg = segments(frames, background=[0], end="exclusive")
    np.testing.assert_array_equal(seg.labels, [1, 2, 1])
    np.testing.assert_array_equal(seg.ends, [2, 5, 8])
    assert segments(np.zeros(0, dtype=int)).labels.size == 0


def test_levenshtein_by_hand():
    assert levenshtein([1, 2, 1], [1, 1, 2]) == 2
    assert levenshtein([1, 2, 1, 2, 3], [1, 2, 3]) == 2
    assert levenshtein([], [4, 5]) == 2
    assert levenshtein([7, 8, 9], [7, 8, 9]) == 0
    assert levenshtein([1, 2, 3], [3, 2, 1]) == 2


# Target segments [1 2 3]; prediction segments [1 2 1 2 3].
T10 = np.array([1, 1, 1, 1, 2, 2, 2, 2, 3, 3])
P10 = np.array([1, 1, 2, 2, 2, 2, 1, 2, 3, 3])


def test_edit_score_by_hand():
    # lev([1,2,1,2,3], [1,2,3]) = 2 over max length 5: (1 - 2/5) * 100.
    assert edit_score(P10, T10) == pytest.approx(60.0)
    assert edit_score(T10, T10) == pytest.approx(100.0)
    # Background 0 dropped from both: segments [1, 2] each.
    assert edit_score(np.array([0, 1, 1, 1, 0, 0, 2]), np.array([0, 0, 1, 1, 0, 2, 2]), [0]) == 100.0
    assert edit_score(np.zeros(3, int), np.zeros(3, int), [0]) == 100.0


def test_f1_by_hand():
    # True (mstcn ends): (1,0,4) (2,4,8) (3,8,9). Predicted: (1,0,2) IoU 2/4; (2,2,6) IoU 2/6;
    # (1,6,7) no overlap with its label; (2,7,8) IoU 1/4 but true 2 is taken; (3,8,9) IoU 1.
    assert segment_counts(P10, T10, 0.10) == SegmentCounts(3, 2, 0)
    assert f1_at_overlap(P10, T10, 0.10) == pytest.approx(75.0)  # P 3/5, R 1
    assert f1_at_overlap(P10, T10, 0.25) == pytest.approx(75.0)
    # At 0.5 only (1,0,2) and (3,8,9) match: tp 2, fp 3, fn 1 -> P 0.4, R 2/3 -> F1 0.5.
    assert segment_counts(P10, T10, 0.5) == SegmentCounts(2, 3, 1)
    assert f1_at_overlap(P10, T10, 0.5) == pytest.approx(50.0)


def test_f1_end_convention_changes_score():
    target, pred = np.array([1, 1, 2, 2]), np.array([1, 1, 1, 2])
    # mstcn: true (2,2,3), predicted (2,3,3): intersection 0 -> fp; (1,0,3) vs (1,0,2): 2/3 tp.
    assert f1_at_overlap(pred, target, 0.5) == pytest.approx(50.0)
    # exclusive: (2,3,4) vs (2,2,4): 1/2 -> tp as well.
    assert f1_at_overlap(pred, target, 0.5, end="exclusive") == pytest.approx(100.0)


def test_f1_background_and_empty():
    target = np.array([0, 0, 1, 1, 0, 2, 2])
    pred = np.array([0, 1, 1, 1, 0, 0, 2])
    # true (1,2,4) (2,5,6); predicted (1,1,4): IoU 2/3; (2,6,6): intersection 0 -> fp.
    assert segment_counts(pred, target, 0.5, background=[0]) == SegmentCounts(1, 1, 1)
    assert segment_counts(pred, np.zeros(7, int), 0.1, background=[0]) == SegmentCounts(0, 2, 0)
    assert f1_from_counts(SegmentCounts(0, 0, 0)) == 0.0
    # Counts summed over videos, then F1: tp 3, fp 1, fn 2 -> P 3/4, R 3/5 -> 2/3.
    assert f1_from_counts(SegmentCounts(3, 1, 2)) == pytest.approx(200 / 3)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 3), min_size=1, max_size=40), st.lists(st.integers(0, 3), min_size=1, max_size=40))
def test_metric_ranges(a, b):
    n = min(len(a), len(b))
    pred, target = np.array(a[:n]), np.array(b[:n])
    assert 0.0 <= edit_score(pred, target) <= 100.0
    for k in (0.1, 0.25, 0.5):
        assert 0.0 <= f1_at_overlap(pred, target, k) <= 100.0
        assert f1_at_overlap(target, target, k, end="exclusive") == 100.0
    assert frame_accuracy(target, target) == 1.0
    assert confusion(pred, target, 4).sum() == n
    assert levenshtein(pred, target) == levenshtein(target, pred)


# Background 0, actions 1 and 2, T = 10. The prediction has a spurious background frame (3)
# inside action 1 and runs one frame long on action 2.
BG_TARGET = np.array([0, 0, 1, 1, 1, 0, 2, 2, 0, 0])
BG_PRED = np.array([0, 1, 1, 0, 1, 0, 2, 2, 2, 0])


def test_segment_exclusions():
    assert segment_exclusions((0,)) == (-1, 0)  # default: exclude, as MS-TCN
    assert segment_exclusions((3, 0), "exclude") == (-1, 0, 3)
    assert segment_exclusions((0,), "include") == (-1,)
    assert segment_exclusions((), "exclude") == (-1,)
    with pytest.raises(ValueError, match="exclude, include"):
        segment_exclusions((0,), "drop")


def test_background_excluded_golden():
    """Segments [label, start, end) with MS-TCN's ends (last one T - 1 = 9), background gone:
    Y = 1[2,5) 2[6,8);  P = 1[1,3) 1[4,5) 2[6,9).
    Edit: lev([1,1,2], [1,2]) = 1, max length 3 -> (1 - 1/3) * 100 = 66.67.
    IoU: P1 vs Y1 = (3-2)/(5-1) = 1/4; P2 vs Y1 = (5-4)/(5-2) = 1/3; P3 vs Y2 = (8-6)/(9-6) = 2/3.
    F1@0.5: TP = 1 (P3), FP = 2, FN = 1 -> precision 1/3, recall 1/2 -> F1 = 0.4.
    F1@0.1: P1 hits Y1, P2 finds Y1 taken (FP), P3 hits Y2 -> TP 2, FP 1, FN 0
    -> precision 2/3, recall 1 -> F1 = 0.8."""
    skip = segment_exclusions((0,), "exclude")
    assert edit_score(BG_PRED, BG_TARGET, skip) == pytest.approx(200 / 3)
    assert segment_counts(BG_PRED, BG_TARGET, 0.5, skip) == SegmentCounts(1, 2, 1)
    assert f1_at_overlap(BG_PRED, BG_TARGET, 0.5, skip) == pytest.approx(40.0)
    assert segment_counts(BG_PRED, BG_TARGET, 0.1, skip) == SegmentCounts(2, 1, 0)
    assert f1_at_overlap(BG_PRED, BG_TARGET, 0.1, skip) == pytest.approx(80.0)


def test_background_included_golden():
    """The same sequences with background segments kept:
    Y = 0[0,2) 1[2,5) 0[5,6) 2[6,8) 0[8,9)                  (5 segments)
    P = 0[0,1) 1[1,3) 0[3,4) 1[4,5) 0[5,6) 2[6,9) 0[9,9)    (7 segments)
    Edit: lev([0,1,0,1,0,2,0], [0,1,0,2,0]) = 2 (drop one "0, 1"): (1 - 2/7) * 100 = 71.43.
    F1@0.5, each P against the same-label Y of highest IoU:
    0[0,1) vs 0[0,2): 1/2 -> TP;  1[1,3): 1/4 -> FP;  0[3,4): overlaps no 0 segment -> FP;
    1[4,5): 1/3 -> FP;  0[5,6) vs 0[5,6): 1 -> TP;  2[6,9): 2/3 -> TP;  0[9,9): 0 -> FP.
    TP 3, FP 4, FN 5 - 3 = 2: precision 3/7, recall 3/5 -> F1 = (18/35) / (36/35) = 0.5."""
    keep = segment_exclusions((0,), "include")
    assert edit_score(BG_PRED, BG_TARGET, keep) == pytest.approx(500 / 7)
    assert segment_counts(BG_PRED, BG_TARGET, 0.5, keep) == SegmentCounts(3, 4, 2)
    assert f1_at_overlap(BG_PRED, BG_TARGET, 0.5, keep) == pytest.approx(50.0)
