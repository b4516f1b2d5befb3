"""Audit: every annotated video is in exactly one test set of a k-fold scheme; videos that no
split or several splits test are counted (real 50 Salads and Breakfast files, and written
MS-TCN layouts)."""

from __future__ import annotations

from pathlib import Path

import pytest

from actrec_plugins.datasets._common import TESTED_TWICE, UNTESTED
from actrec_plugins.datasets.breakfast import Breakfast
from actrec_plugins.datasets.mstcn import MSTCN
from actrec_plugins.datasets.salads import Salads

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason="shared/data is absent")


@needs_data
def test_salads_sequences_outside_the_mstcn_folds_are_counted():
    # 54 annotated sequences; the 5 MS-TCN folds test the 50 videos once each: 08-1, 08-2,
    # 12-1 and 12-2 are never evaluated under split_scheme=mstcn
    idx = Salads(Salads.Config(root=DATA / "50salads", source="annotations", start_us=0)).load()
    tested = [v for s in idx.splits.values() for v in s.test]
    assert len(idx.videos) == 54 and len(tested) == len(set(tested)) == 50
    assert sorted(set(idx.videos) - set(tested)) == ["rgb-08-1", "rgb-08-2", "rgb-12-1",
                                                     "rgb-12-2"]
    assert idx.repairs[UNTESTED] == 4 and TESTED_TWICE not in idx.repairs


@needs_data
def test_breakfast_official_and_bundles_test_each_video_once():
    for scheme in ("official", "bundles"):
        idx = Breakfast(Breakfast.Config(root=DATA / "breakfast", split_scheme=scheme)).load()
        assert UNTESTED not in idx.repairs and TESTED_TWICE not in idx.repairs
        tested = [v for s in idx.splits.values() for v in s.test]
        assert sorted(tested) == sorted(idx.videos)


def _layout(root: Path, tests: list[list[str]]) -> Path:
    (root / "groundTruth").mkdir(parents=True)
    (root / "splits").mkdir()
    (root / "mapping.txt").write_text("0 a\n1 background\n")
    videos = sorted({v for t in tests for v in t} | {"P9_x"})
    for v in videos:
        (root / "groundTruth" / f"{v}.txt").write_text("a\nbackground\n")
    for n, test in enumerate(tests, 1):
        (root / "splits" / f"test.split{n}.bundle").write_text("".join(f"{v}.txt\n" for v in test))
        (root / "splits" / f"train.split{n}.bundle").write_text(
            "".join(f"{v}.txt\n" for v in videos if v not in test))
    return root


def test_mstcn_layout_counts_untested_and_twice_tested(tmp_path):
    root = _layout(tmp_path / "a", [["P1_x", "P2_x"], ["P2_x", "P3_x"]])
    idx = MSTCN(MSTCN.Config(root=root)).load()
    # P9_x is annotated but in no test list; P2_x is tested by both splits
    assert idx.repairs == {UNTESTED: 1, TESTED_TWICE: 1}
    # one train/test split tests part of the videos by design: nothing counted
    one = MSTCN(MSTCN.Config(root=_layout(tmp_path / "b", [["P1_x"]]))).load()
    assert one.repairs == {}
