"""actrec.datasets_info.summarize on a hand-built index (golden counts)."""

from __future__ import annotations

import json

import numpy as np

from actrec.datasets_info import summarize
from actrec.plugin_api import DatasetIndex, Split, VideoRecord


def test_summary_golden():
    videos = {
        "a": VideoRecord("a", "p1", np.array([0, 0, 1, -1, 2]), 15.0),
        "b": VideoRecord("b", "p2", np.array([2, 2, 2]), 15.0),
        "c": VideoRecord("c", "p1", np.array([-1, 1]), 15.0),
    }
    index = DatasetIndex(name="toy", classes=("bg", "x", "y", "unused"), videos=videos,
                         splits={"1": Split("1", ("a", "c"), ("b",)),
                                 "2": Split("2", ("b",), ("a", "c"))},
                         fps=15.0, background=0, label_set="small",
                         repairs={"z repair": 3, "a repair": 1})
    s = summarize(index)
    assert (s.videos, s.frames, s.num_classes, s.participants) == (3, 10, 4, 2)
    assert s.frames_per_class == (2, 2, 4, 0) and s.unlabelled_frames == 2
    assert s.background == "bg"
    assert [(x.name, x.train_videos, x.test_videos, x.train_frames, x.test_frames)
            for x in s.splits] == [("1", 2, 1, 7, 3), ("2", 1, 2, 3, 7)]
    d = s.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert d["frames_per_class"] == {"bg": 2, "x": 2, "y": 4, "unused": 0}
    assert list(d["repairs"]) == ["a repair", "z repair"] and d["label_set"] == "small"
    assert d["splits"]["2"] == {"train": 1, "test": 2, "train_frames": 3, "test_frames": 7}
    assert (d["videos"], d["frames"], d["classes"]) == (3, 10, 4)
