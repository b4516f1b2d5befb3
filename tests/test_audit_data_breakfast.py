"""Audit: Breakfast readers on the real files in shared/data (252 videos of P03-P15)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from actrec.io import annotations as A
from actrec_plugins.datasets.breakfast import Breakfast

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
BF = DATA / "breakfast"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason="shared/data is absent")


def load(**options):
    return Breakfast(Breakfast.Config(**options)).load()


@needs_data
def test_lowest_classes_do_not_depend_on_the_videos_present(tmp_path):
    mapping = A.read_mapping(BF / "mapping.txt")
    expected = ("background", *sorted(set(mapping) - {"SIL"}))
    assert len(expected) == 48
    full = load(root=BF, label_set="lowest")
    # the 252 videos use 44 of the 47 actions; the class list is still all 48
    used = {full.classes[c] for v in full.videos.values() for c in np.unique(v.labels)}
    assert len(used - {"background"}) == 44
    assert full.classes == expected
    # a root with a single video: the same classes, the same indices
    one = tmp_path / "one"
    (one / "segmentation_coarse" / "coffee").mkdir(parents=True)
    shutil.copy(BF / "mapping.txt", one)
    shutil.copy(BF / "segmentation_coarse" / "coffee" / "P03_cam01_P03_coffee.txt",
                one / "segmentation_coarse" / "coffee")
    small = load(root=one, label_set="lowest")
    assert small.classes == expected
    np.testing.assert_array_equal(small.videos["P03_cam01_P03_coffee"].labels,
                                  full.videos["P03_cam01_P03_coffee"].labels)
    # golden, from the file: 1-38 SIL, 39-199 take_cup, 200-... pour_coffee
    lab = small.videos["P03_cam01_P03_coffee"].labels
    assert lab[37] == 0 and lab[38] == expected.index("take_cup") == lab[198]
    assert lab[199] == expected.index("pour_coffee")
    # the MS-TCN ground truth read into the lowest set: the same list
    assert load(root=BF, source="mstcn", label_set="lowest").classes == expected
