"""Frame- and segment-level metrics: small pure functions over integer label arrays.

Frame metrics ignore frames whose *target* is ``ignore`` (-1: unlabelled). Segment metrics
follow MS-TCN's evaluation (Farha & Gall, CVPR 2019): a video is turned into segments (runs of
equal labels, background labels dropped); the edit score is the normalised Levenshtein distance
between the two segment label sequences, and F1@k matches predicted to true segments by IoU.

Background: MS-TCN's evaluation leaves out the segments of its class named ``background``
(``bg_class=["background"]`` in its ``eval.py``); a feature store records the dataset's
background classes (``FeatureStore.background``). The segment functions take the labels to
leave out (``background``); ``segment_exclusions`` builds that set from the store's
background and the ``exclude`` / ``include`` choice, always with the unlabelled label -1.

Segment-end convention (it changes scores, so it is an explicit option): MS-TCN's code ends
every segment at the first frame of the next one, except the video's last segment, which the
code released with the paper ends at ``T - 1`` instead of ``T`` (one frame short, so a
one-frame last segment never matches). ``end="mstcn"`` reproduces that, so that numbers compare
with published ones; ``end="exclusive"`` ends the last segment at ``T``, as MS-TCN's
repository has since its fix of July 2020 (commit 0e418c0).

Where MS-TCN's code has no number, these functions return one: an edit score of two empty
segment sequences (all background) is 100 (the reference divides 0 by 0), and predicted
segments against no true segment are all false positives (the reference fails).
``tests/test_metrics_audit.py`` checks every function against an independent
re-implementation of the reference.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import NamedTuple

import numpy as np

__all__ = [
    "frame_accuracy",
    "per_class_accuracy",
    "per_class_precision",
    "confusion",
    "Segments",
    "segments",
    "levenshtein",
    "edit_score",
    "SegmentCounts",
    "segment_counts",
    "f1_from_counts",
    "f1_at_overlap",
    "SEGMENT_BACKGROUND_MODES",
    "segment_exclusions",
]

SEGMENT_BACKGROUND_MODES = ("exclude", "include")
_IOU_CELLS = 1 << 22  # IoU values held at once by segment_counts (32 MiB of float64)


def _pair(pred: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred = np.asarray(pred).reshape(-1)
    target = np.asarray(target).reshape(-1)
    if pred.shape != target.shape:
        raise ValueError(f"pred has {pred.size} frames but target has {target.size}")
    return pred, target


def frame_accuracy(pred: np.ndarray, target: np.ndarray, ignore: int = -1) -> float:
    """Fraction of frames with ``pred == target`` among frames whose target is not ``ignore``.

    Returns ``nan`` when no frame is labelled.
    """
    pred, target = _pair(pred, target)
    keep = target != ignore
    n = int(keep.sum())
    if n == 0:
        return float("nan")
    return float((pred[keep] == target[keep]).sum()) / n


def confusion(
    pred: np.ndarray, target: np.ndarray, num_classes: int, ignore: int = -1
) -> np.ndarray:
    """Counts ``[num_classes, num_classes]`` int64: row = true class, column = predicted class.

    Frames whose target is ``ignore`` are skipped. A prediction outside ``0..num_classes-1``
    (for example a class of the other dataset's block, see ``actrec.data.labels``) falls in no
    column, so a row may sum to less than that class's frame count.
    """
    pred, target = _pair(pred, target)
    keep = target != ignore
    pred, target = pred[keep].astype(np.int64), target[keep].astype(np.int64)
    if target.size and (target.min() < 0 or target.max() >= num_classes):
        raise ValueError(f"target labels must lie in 0..{num_classes - 1} or be {ignore}")
    out = np.zeros((num_classes, num_classes), dtype=np.int64)
    inside = (pred >= 0) & (pred < num_classes)
    np.add.at(out, (target[inside], pred[inside]), 1)
    return out


def per_class_accuracy(
    pred: np.ndarray, target: np.ndarray, num_classes: int, ignore: int = -1
) -> np.ndarray:
    """Recall per true class ``[num_classes]`` float64; ``nan`` for a class with no frame."""
    pred, target = _pair(pred, target)
    keep = target != ignore
    pred, target = pred[keep], target[keep].astype(np.int64)
    if target.size and (target.min() < 0 or target.max() >= num_classes):
        raise ValueError(f"target labels must lie in 0..{num_classes - 1} or be {ignore}")
    totals = np.bincount(target, minlength=num_classes)
    correct = np.bincount(target[pred == target], minlength=num_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, correct / np.maximum(totals, 1), np.nan)


def per_class_precision(
    pred: np.ndarray, target: np.ndarray, num_classes: int, ignore: int = -1
) -> np.ndarray:
    """Precision per predicted class ``[num_classes]`` float64: of the labelled frames (target
    not ``ignore``) predicted as class c, the share whose target is c; ``nan`` for a class
    never predicted. A prediction outside ``0..num_classes-1`` is no class's (see
    ``confusion``). Pooled over the frames given: concatenate videos for a split's value."""
    counts = confusion(pred, target, num_classes, ignore)
    predicted = counts.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(predicted > 0, np.diag(counts) / np.maximum(predicted, 1), np.nan)


def segment_exclusions(
    background: Collection[int], mode: str = "exclude", unlabelled: int = -1
) -> tuple[int, ...]:
    """The labels whose segments the segment metrics leave out: ``unlabelled`` always, and the
    dataset's ``background`` classes when ``mode`` is ``"exclude"`` (the default, as MS-TCN's
    evaluation) but not when it is ``"include"``. Sorted, without repeats."""
    if mode not in SEGMENT_BACKGROUND_MODES:
        raise ValueError(f"segment background mode must be one of "
                         f"{', '.join(SEGMENT_BACKGROUND_MODES)}, got {mode!r}")
    out = {int(unlabelled)}
    if mode == "exclude":
        out.update(int(c) for c in background)
    return tuple(sorted(out))


class Segments(NamedTuple):
    """Segments of a label sequence: label, first frame, end frame (see the module doc)."""

    labels: np.ndarray  # [S]
    starts: np.ndarray  # [S]
    ends: np.ndarray  # [S]


def segments(
    frames: np.ndarray, background: Collection[int] = (), end: str = "mstcn"
) -> Segments:
    """Runs of equal labels in ``frames`` [T], without the runs of ``background`` labels.

    ``end="mstcn"``: the video's last run ends at ``T - 1``; ``"exclusive"``: at ``T``.
    """
    if end not in ("mstcn", "exclusive"):
        raise ValueError(f"end must be 'mstcn' or 'exclusive', got {end!r}")
    frames = np.asarray(frames).reshape(-1)
    t = frames.size
    if t == 0:
        empty = np.zeros(0, dtype=np.int64)
        return Segments(empty, empty, empty)
    change = np.flatnonzero(frames[1:] != frames[:-1]) + 1
    starts = np.concatenate([[0], change]).astype(np.int64)
    ends = np.concatenate([change, [t - 1 if end == "mstcn" else t]]).astype(np.int64)
    labels = frames[starts].astype(np.int64)
    keep = ~np.isin(labels, np.asarray(list(background), dtype=np.int64))
    return Segments(labels[keep], starts[keep], ends[keep])


def levenshtein(a: np.ndarray, b: np.ndarray) -> int:
    """Edit distance (insertions, deletions, substitutions, all cost 1) between sequences."""
    a, b = np.asarray(a).reshape(-1), np.asarray(b).reshape(-1)
    if a.size < b.size:  # symmetric: one numpy row per element of the shorter sequence
        a, b = b, a
    if b.size == 0:
        return int(a.size)
    col = np.arange(a.size + 1)
    prev = col.copy()  # distances from b[:0] to a[:j]
    cur = np.empty_like(prev)
    for i, y in enumerate(b, start=1):
        # Without insertions along a: min(delete, substitute/keep). The insertion chain
        # cur[j] = min(cur[j], cur[j-1] + 1) is a running minimum of cur[k] - k, plus j.
        cur[0] = i
        np.minimum(prev[1:] + 1, prev[:-1] + (a != y), out=cur[1:])
        prev = np.minimum.accumulate(cur - col) + col
    return int(prev[-1])


def edit_score(
    pred: np.ndarray, target: np.ndarray, background: Collection[int] = ()
) -> float:
    """MS-TCN's segmental edit score in percent: ``(1 - lev(P, Y) / max(|P|, |Y|)) * 100``.

    ``P``, ``Y`` are the segment label sequences (background removed). 100 when both are empty.
    """
    pred, target = _pair(pred, target)
    p = segments(pred, background).labels
    y = segments(target, background).labels
    longest = max(p.size, y.size)
    if longest == 0:
        return 100.0
    return (1.0 - levenshtein(p, y) / longest) * 100.0


class SegmentCounts(NamedTuple):
    tp: int
    fp: int
    fn: int


def segment_counts(
    pred: np.ndarray,
    target: np.ndarray,
    overlap: float,
    background: Collection[int] = (),
    end: str = "mstcn",
) -> SegmentCounts:
    """True/false positive and false negative segments at IoU threshold ``overlap`` (0..1).

    Each predicted segment, in time order, is matched to the true segment of the same label
    with the highest IoU (ties: the earliest); it is a true positive when that IoU is at least
    ``overlap`` and the true segment is not matched yet, else a false positive. Unmatched true
    segments are false negatives. (MS-TCN's ``f_score``.)
    """
    pred, target = _pair(pred, target)
    p = segments(pred, background, end)
    y = segments(target, background, end)
    n_pred, n_true = int(p.labels.size), int(y.labels.size)
    if n_pred == 0 or n_true == 0:
        return SegmentCounts(0, n_pred, n_true)
    best = np.empty(n_pred, dtype=np.int64)  # [S_pred] the true segment of highest IoU
    best_iou = np.empty(n_pred, dtype=np.float64)
    rows = max(1, _IOU_CELLS // n_true)  # IoU matrix in blocks of rows: bounded memory
    for first in range(0, n_pred, rows):
        part = slice(first, first + rows)
        s, e = p.starts[part, None], p.ends[part, None]  # [R, 1]
        inter = np.minimum(e, y.ends) - np.maximum(s, y.starts)  # [R, S_true]
        union = np.maximum(e, y.ends) - np.minimum(s, y.starts)
        # Other labels score 0, and so does a zero-length pair (0 / 0), which the mstcn end
        # convention makes of a one-frame final segment (MS-TCN: nan, never a match).
        with np.errstate(invalid="ignore", divide="ignore"):
            iou = np.where(union > 0, inter / np.maximum(union, 1), 0.0) \
                * (y.labels == p.labels[part, None])
        top = iou.argmax(axis=1)  # the first of equal maxima, as numpy's argmax in MS-TCN
        best[part] = top
        best_iou[part] = iou[np.arange(top.size), top]
    # In time order a qualifying prediction is a TP unless its true segment is taken, and
    # only TPs take: so the TPs are the distinct true segments that qualifying ones pick.
    tp = int(np.unique(best[best_iou >= overlap]).size)
    return SegmentCounts(tp, n_pred - tp, n_true - tp)


def f1_from_counts(counts: SegmentCounts) -> float:
    """F1 in percent from (possibly summed over videos) counts; 0 when nothing matched."""
    tp, fp, fn = counts
    if tp == 0:
        return 0.0
    precision = tp / (tp + fp)
    recall = tp / (tp + fn)
    return 2.0 * precision * recall / (precision + recall) * 100.0


def f1_at_overlap(
    pred: np.ndarray,
    target: np.ndarray,
    overlap: float,
    background: Collection[int] = (),
    end: str = "mstcn",
) -> float:
    """F1@overlap in percent for one video. Over a dataset, MS-TCN sums the counts of all
    videos first (``segment_counts``, then ``f1_from_counts``)."""
    return f1_from_counts(segment_counts(pred, target, overlap, background, end))
