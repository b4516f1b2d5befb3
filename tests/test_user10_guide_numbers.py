"""Numbers docs/guide.md states, computed as the guide says they are: the F1 of predictions
equal to labels that end with a one-frame segment, and the participants --val-fraction holds
out."""

from __future__ import annotations

from pathlib import Path

import numpy as np

GUIDE = (Path(__file__).resolve().parents[1] / "docs" / "guide.md").read_text()


def _flat(text: str) -> str:
    return " ".join(text.split())


def test_a_one_frame_last_segment_is_never_matched_even_by_equal_predictions():
    from actrec.metrics import edit_score, f1_from_counts, segment_counts

    assert "a video's last segment of one frame has length 0 and is never matched" \
        in _flat(GUIDE)
    # background 0; class 1 for 30 frames, background, and class 1 again on the last frame
    labels = np.array([1] * 30 + [0] * 60 + [1])
    counts = segment_counts(labels, labels, 0.1, background=(0,))
    # two true segments, two equal predicted ones; the last has length 0 under the MS-TCN end
    assert counts == (1, 1, 1)
    assert f1_from_counts(counts) == 50.0
    assert edit_score(labels, labels, background=(0,)) == 100.0
    # without the one-frame ending, equal predictions score 100
    assert f1_from_counts(segment_counts(labels[:-1], labels[:-1], 0.5, background=(0,))) == 100.0
    # all background on both sides: no segment to find, none predicted (MS-TCN: F1 0, edit 100)
    assert "F1 is 0 beside edit 100, as MS-TCN's evaluation reports it" in _flat(GUIDE)
    idle = np.zeros(40, dtype=np.int64)
    assert segment_counts(idle, idle, 0.1, background=(0,)) == (0, 0, 0)
    assert f1_from_counts(segment_counts(idle, idle, 0.1, background=(0,))) == 0.0
    assert edit_score(idle, idle, background=(0,)) == 100.0


def test_val_fraction_rounds_the_participant_count_up_never_holding_out_all():
    from actrec.data.validation import carve_validation

    assert "the count rounded up (at least one, never all: 0.34 of 3 participants holds out 2)" \
        in _flat(GUIDE)
    videos = [f"{p}_{k:02d}" for p in ("alice", "bob", "carol") for k in (1, 2)]
    participants = {v: v.split("_")[0] for v in videos}
    for fraction, held in ((0.34, 2), (0.1, 1), (0.33, 1), (0.9, 2)):
        carve = carve_validation(videos, participants, fraction, 0)
        assert len(carve.val_participants) == held, (fraction, carve)
        # whole participants: both videos of each held-out person, none of the others
        assert sorted(carve.val) == sorted(v for v in videos
                                          if participants[v] in carve.val_participants)
