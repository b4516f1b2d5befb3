"""MPII Cooking 2 and Signing in the Wild, on files the tests write in the documented formats
(no real annotation file of either is available here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from actrec.errors import DataError
from actrec_plugins.datasets.mpii import MPIICooking2
from actrec_plugins.datasets.signing import SigningInTheWild

HEADER = "subject,file_name,start_frame,end_frame,activity_category_id,activity_category\n"


def mpii(root: Path, body: str, header: bool = True, **options):
    root.mkdir(parents=True, exist_ok=True)
    (root / "annotations.csv").write_text((HEADER if header else "") + body)
    return MPIICooking2(MPIICooking2.Config(root=root, **options)).load()


ROWS = ("s08,s08-d01-cam-002,1,3,12,cut apart\n"
        "s08,s08-d01-cam-002,6,7,5,peel\n"
        "s09,s09-d02-cam-002,2,2,5,peel\n"
        "s10,s10-d01-cam-002,1,1,12,cut apart\n"
        "s11,s11-d03-cam-002,1,1,5,peel\n"
        "s12,s12-d01-cam-002,1,2,12,cut apart\n")


@pytest.mark.parametrize("header", [True, False])
def test_mpii_labels_background_and_splits(tmp_path, header):
    idx = mpii(tmp_path, ROWS, header=header)
    assert idx.classes == ("background", "peel", "cut apart")  # by category id: 5, 12
    assert idx.background == 0 and idx.fps == 30.0
    # 1-based inclusive: 1-3 -> frames 0..2, 6-7 -> 5..6, background between
    assert idx.videos["s08-d01-cam-002"].labels.tolist() == [2, 2, 2, 0, 0, 1, 1]
    assert idx.videos["s09-d02-cam-002"].labels.tolist() == [0, 1]
    assert idx.videos["s08-d01-cam-002"].participant == "s08"
    # 5 subjects in 4 contiguous blocks: (s08, s09), s10, s11, s12
    assert [s.test for s in idx.splits.values()] == [
        ("s08-d01-cam-002", "s09-d02-cam-002"), ("s10-d01-cam-002",), ("s11-d03-cam-002",),
        ("s12-d01-cam-002",)]
    zero = mpii(tmp_path / "z", ROWS.replace(",1,", ",0,"), one_based=False)
    assert zero.videos["s08-d01-cam-002"].labels.tolist() == [2, 2, 2, 2, 0, 0, 1, 1]


def test_mpii_overlap_is_counted(tmp_path):
    # 'cut apart' 3-6 (frames 2..5) overlaps 1-3 at frame 2 and the later 'peel' 6-7 at 5
    idx = mpii(tmp_path, ROWS + "s08,s08-d01-cam-002,3,6,12,cut apart\n")
    assert idx.videos["s08-d01-cam-002"].labels.tolist() == [2, 2, 2, 2, 2, 1, 1]
    assert idx.repairs == {"frames covered by overlapping segments (later start wins)": 2,
                           "videos with unsorted segments (sorted)": 1}


def test_mpii_bad_inputs(tmp_path):
    with pytest.raises(DataError, match=r"annotations\.csv:3: category id 5 is 'stir' here "
                                        r"but 'peel' earlier"):
        mpii(tmp_path / "a", "s1,v,1,2,5,peel\ns1,v,3,4,5,stir\n")
    with pytest.raises(DataError, match=r"annotations\.csv:1: 5 fields; expected 6"):
        mpii(tmp_path / "b", "s1,v,1,2,5\n", header=False)
    with pytest.raises(DataError, match=r"annotations\.csv:2: start_frame/end_frame must be "
                                        r"integer frames"):
        mpii(tmp_path / "c", "s1,v,one,2,5,peel\n")
    with pytest.raises(DataError, match=r"annotations\.csv: empty file"):
        mpii(tmp_path / "d", "", header=False)
    with pytest.raises(DataError, match=r"annotations\.csv:2: frame range 0-2 is invalid"):
        mpii(tmp_path / "e", "s1,v,0,2,5,peel\n")


def signing(root: Path, files: dict[str, str], **options):
    root.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (root / name).write_text(text)
    return SigningInTheWild(SigningInTheWild.Config(root=root, **options)).load()


def test_signing_labels_and_folds(tmp_path):
    rows = "".join(f"yt{k:02d} 0 S\nyt{k:02d} 1 P\nyt{k:02d} 3 ?\nyt{k:02d} 4 n\n"
                   for k in range(7))
    idx = signing(tmp_path, {"gt.txt": rows})
    assert idx.classes == ("signing", "speaking", "other") and idx.background is None
    assert idx.fps == 5.0
    # frame 2 has no row, frame 3 is '?': both unlabelled
    assert idx.videos["yt00"].labels.tolist() == [0, 1, -1, -1, 2]
    assert idx.repairs == {"frames without a row (unlabelled)": 7}
    # 7 videos dealt round-robin into 5 folds
    assert [s.test for s in idx.splits.values()] == [("yt00", "yt05"), ("yt01", "yt06"),
                                                    ("yt02",), ("yt03",), ("yt04",)]
    for s in idx.splits.values():
        assert sorted(s.train + s.test) == sorted(idx.videos)


def test_signing_bad_inputs(tmp_path):
    with pytest.raises(DataError, match=r"duplicate video id 'v1': in .*a\.txt and .*b\.txt"):
        signing(tmp_path / "a", {"a.txt": "v1 0 S\n", "b.txt": "v1 1 S\n"})
    with pytest.raises(DataError, match=r"gt\.txt:2: expected '<youtube_id> <frame> S\|P\|n\|\?'"):
        signing(tmp_path / "b", {"gt.txt": "v1 0 S\nv1 x S\n"})
    with pytest.raises(DataError, match=r"2 video\(s\) cannot make 5 folds"):
        signing(tmp_path / "c", {"gt.txt": "v1 0 S\nv2 0 S\n"})
    with pytest.raises(DataError, match=r"no ground-truth \*\.txt files"):
        signing(tmp_path / "d", {})
