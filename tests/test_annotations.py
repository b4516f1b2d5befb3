"""Golden tests of the label-file readers in actrec.io.annotations, and one bad file per
malformed-input case (each message must name the file and the line)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from actrec.errors import DataError
from actrec.io import annotations as A

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def write(path: Path, text: str, newline: str = "\n") -> Path:
    path.write_bytes(text.replace("\n", newline).encode())
    return path


# ------------------------------------------------------------------ segments -> frames

def test_range_segments_are_one_based_inclusive(tmp_path):
    f = write(tmp_path / "v.txt", "1-3 SIL  \n4-5 take_cup\n6-6 SIL\n")
    segs = A.read_range_segments(f)
    assert [(s.start, s.end, s.label, s.line) for s in segs] == [
        (0, 3, "SIL", 1), (3, 5, "take_cup", 2), (5, 6, "SIL", 3)]
    labels, repairs = A.segments_to_frames(segs, {"SIL": 0, "take_cup": 7}, source=f)
    assert labels.tolist() == [0, 0, 0, 7, 7, 0]
    assert labels.dtype == np.int64 and repairs == {}


def test_empty_range_is_dropped_and_counted(tmp_path):
    # the real Breakfast files have '477-476 SIL' and '1-0 SIL'
    f = write(tmp_path / "v.txt", "1-0 SIL\n1-2 a\n3-2 SIL\n")
    repairs: dict[str, int] = {}
    segs = A.read_range_segments(f, repairs)
    assert [(s.start, s.end) for s in segs] == [(0, 2)]
    assert repairs == {"empty segments (dropped)": 2}


def test_reversed_range_names_file_and_line(tmp_path):
    f = write(tmp_path / "v.txt", "1-5 a\n9-3 b\n")
    with pytest.raises(DataError, match=r"v\.txt:2: frame range 9-3"):
        A.read_range_segments(f)


def test_malformed_range_line(tmp_path):
    f = write(tmp_path / "v.txt", "1-5 a\n6 to 9 b\n")
    with pytest.raises(DataError, match=r"v\.txt:2: expected '<first>-<last> <label>'"):
        A.read_range_segments(f)


def test_gaps_get_fill_and_unsorted_are_sorted(tmp_path):
    segs = [A.Segment(5, 7, "b", 1), A.Segment(1, 3, "a", 2)]
    labels, repairs = A.segments_to_frames(segs, {"a": 1, "b": 2}, source="x", fill=0)
    assert labels.tolist() == [0, 1, 1, 0, 0, 2, 2]
    assert repairs == {"videos with unsorted segments (sorted)": 1}
    labels, _ = A.segments_to_frames(segs, {"a": 1, "b": 2}, source="x")
    assert labels.tolist() == [-1, 1, 1, -1, -1, 2, 2]


def test_overlap_error_names_both_lines():
    segs = [A.Segment(0, 5, "a", 3), A.Segment(4, 8, "b", 7)]
    with pytest.raises(DataError, match=r"f\.txt:7: segment 'b' overlaps the segment on line 3"):
        A.segments_to_frames(segs, {"a": 0, "b": 1}, source="f.txt")


def test_overlap_later_start_wins_and_counts_frames():
    # a covers 0..5, b 2..3 (starts later: wins 2,3), c 4..8 (wins 4..8): frames 2,3,4 doubly
    segs = [A.Segment(0, 6, "a", 1), A.Segment(2, 4, "b", 2), A.Segment(4, 9, "c", 3)]
    labels, repairs = A.segments_to_frames(segs, {"a": 0, "b": 1, "c": 2}, source="f",
                                           overlap="last")
    assert labels.tolist() == [0, 0, 1, 1, 2, 2, 2, 2, 2]
    assert repairs == {"frames covered by overlapping segments (later start wins)": 4}


def test_segments_past_end_are_clipped_and_counted():
    segs = [A.Segment(0, 4, "a", 1), A.Segment(4, 10, "b", 2), A.Segment(12, 15, "a", 3)]
    labels, repairs = A.segments_to_frames(segs, {"a": 0, "b": 1}, source="f", num_frames=6)
    assert labels.tolist() == [0, 0, 0, 0, 1, 1]
    assert repairs == {"frames past the video end (clipped)": 4 + 3}


def test_unknown_label_names_file_and_line():
    with pytest.raises(DataError, match=r"g\.txt:4: label 'stir' is not in the class list"):
        A.segments_to_frames([A.Segment(0, 2, "stir", 4)], {"a": 0}, source="g.txt")


# ------------------------------------------------------------------ text files

def test_crlf_is_accepted_and_counted(tmp_path):
    f = write(tmp_path / "m.txt", "0 SIL\n1 pour\n", newline="\r\n")
    repairs: dict[str, int] = {}
    assert A.read_text_lines(f, repairs) == ["0 SIL", "1 pour"]
    assert repairs == {"files with CRLF line endings": 1}
    assert A.read_mapping(f) == ("SIL", "pour")


@pytest.mark.parametrize("content", ["", "\n\n  \n"])
def test_empty_file_is_an_error(tmp_path, content):
    f = write(tmp_path / "empty.txt", content)
    with pytest.raises(DataError, match=r"empty\.txt: empty file"):
        A.read_text_lines(f)


def test_missing_file_is_an_error(tmp_path):
    with pytest.raises(DataError, match=r"nope\.txt: file not found"):
        A.read_mapping(tmp_path / "nope.txt")


def test_non_utf8_names_line(tmp_path):
    f = tmp_path / "bin.txt"
    f.write_bytes(b"0 a\n1 b\n2 \xff\xfe\n")
    with pytest.raises(DataError, match=r"bin\.txt:3: not UTF-8"):
        A.read_text_lines(f)


def test_mapping_errors(tmp_path):
    with pytest.raises(DataError, match=r"m\.txt:2: class id 2 out of order; expected 1"):
        A.read_mapping(write(tmp_path / "m.txt", "0 a\n2 b\n"))
    with pytest.raises(DataError, match=r"m\.txt:2: duplicate class name 'a'"):
        A.read_mapping(write(tmp_path / "m.txt", "0 a\n1 a\n"))
    with pytest.raises(DataError, match=r"m\.txt:1: expected '<id> <class name>'"):
        A.read_mapping(write(tmp_path / "m.txt", "a 0\n"))


def test_mapping_class_name_with_spaces_says_names_have_none(tmp_path):
    with pytest.raises(DataError, match=r"m\.txt:2: expected '<id> <class name>' with a class "
                       r"name without spaces \(e\.g\. pour_milk\), got '1 pour milk'"):
        A.read_mapping(write(tmp_path / "m.txt", "0 SIL\n1 pour milk\n"))


def test_bundle_drops_extension_and_counts_duplicates(tmp_path):
    f = write(tmp_path / "test.split1.bundle", "a.txt\nb.txt\na.txt\nc\n")
    repairs: dict[str, int] = {}
    assert A.read_bundle(f, repairs) == ("a", "b", "c")
    assert repairs == {"duplicate split entries dropped": 1}


# ------------------------------------------------------------------ per-frame files

def test_frame_labels_golden(tmp_path):
    f = write(tmp_path / "v.txt", "SIL\nSIL\npour\npour\npour\nSIL\n")
    labels = A.read_frame_labels(f, {"SIL": 0, "pour": 3})
    assert labels.tolist() == [0, 0, 3, 3, 3, 0]
    starts, values = A.runs(labels)
    assert starts.tolist() == [0, 2, 5] and values.tolist() == [0, 3, 0]


def test_frame_labels_unknown_label_names_line(tmp_path):
    f = write(tmp_path / "v.txt", "SIL\nSIL\nstir\n")
    with pytest.raises(DataError, match=r"v\.txt:3: label 'stir' is not in the mapping"):
        A.read_frame_labels(f, {"SIL": 0})


def test_frame_labels_two_per_line_names_line(tmp_path):
    f = write(tmp_path / "v.txt", "SIL\nSIL pour\nSIL\n")
    with pytest.raises(DataError, match=r"v\.txt:2: expected one label per line"):
        A.read_frame_labels(f, {"SIL": 0, "pour": 1})


def test_frame_labels_blank_line_inside_names_line(tmp_path):
    """A blank line among the labels would shift every later label one frame earlier; trailing
    blank lines are only the end of the file."""
    f = write(tmp_path / "v.txt", "SIL\npour\n\npour\nSIL\n")
    with pytest.raises(DataError, match=r"v\.txt:3: blank line among the frame labels"):
        A.read_frame_labels(f, {"SIL": 0, "pour": 1})
    with pytest.raises(DataError, match=r"w\.txt:1: blank line among the frame labels"):
        A.read_frame_label_names(write(tmp_path / "w.txt", " \nSIL\n"))
    crlf = write(tmp_path / "c.txt", "SIL\r\n\r\npour\r\n")
    with pytest.raises(DataError, match=r"c\.txt:2: blank line"):
        A.read_frame_labels(crlf, {"SIL": 0, "pour": 1})
    fine = write(tmp_path / "t.txt", "SIL\npour\n\n  \n")
    assert A.read_frame_labels(fine, {"SIL": 0, "pour": 1}).tolist() == [0, 1]
    for text in ("", "\n \n"):  # no label at all: an empty file, not a blank line at frame 0
        with pytest.raises(DataError, match=r"e\.txt: empty file; expected annotation lines"):
            A.read_frame_labels(write(tmp_path / "e.txt", text), {"SIL": 0})


def test_npy_labels(tmp_path):
    np.save(tmp_path / "v.npy", np.array([0, 0, 2, -1, 1], dtype=np.int32))
    assert A.read_npy_labels(tmp_path / "v.npy", 3).tolist() == [0, 0, 2, -1, 1]
    with pytest.raises(DataError, match=r"v\.npy: frame 2 has class index 2; expected -1\.\.1"):
        A.read_npy_labels(tmp_path / "v.npy", 2)
    np.save(tmp_path / "f.npy", np.zeros((3, 4), dtype=np.float32))
    with pytest.raises(DataError, match=r"f\.npy: expected a 1-D integer array"):
        A.read_npy_labels(tmp_path / "f.npy", 3)


def test_fit_length_truncates_or_pads_and_counts():
    labels = np.array([1, 1, 2, 2, 2])
    out, rep = A.fit_length(labels, 3)
    assert out.tolist() == [1, 1, 2]
    assert rep == {"label frames beyond the feature length (truncated)": 2}
    out, rep = A.fit_length(labels, 7)
    assert out.tolist() == [1, 1, 2, 2, 2, -1, -1]
    assert rep == {"feature frames without labels (unlabelled)": 2}
    assert A.fit_length(labels, 5)[1] == {}
    with pytest.raises(DataError, match=r"gt\.txt: 5 labelled frames but the features have 3"):
        A.fit_length(labels, 3, policy="error", source="gt.txt")


# ------------------------------------------------------------------ XML, timed rows

def test_breakfast_xml(tmp_path):
    f = write(tmp_path / "v.xml", '<MotionLabeling author="x">\n<Limb name="whole_body">\n'
              '<MotionLabel name="SIL" startPoint="1" endPoint="3"/>\n'
              '<MotionLabel name="take_cup" startPoint="4" endPoint="9"/>\n'
              '<MotionLabel name="SIL" startPoint="10" endPoint="9"/>\n</Limb>\n'
              '</MotionLabeling>\n')
    repairs: dict[str, int] = {}
    segs = A.read_breakfast_xml(f, repairs)
    assert [(s.start, s.end, s.label, s.line) for s in segs] == [
        (0, 3, "SIL", 3), (3, 9, "take_cup", 4)]
    assert repairs == {"empty segments (dropped)": 1}


def test_breakfast_xml_errors(tmp_path):
    f = write(tmp_path / "v.xml", "<MotionLabeling>\n<MotionLabel name='a' startPoint='1'\n")
    with pytest.raises(DataError, match=r"v\.xml:\d+: malformed XML"):
        A.read_breakfast_xml(f)
    f = write(tmp_path / "w.xml", "<MotionLabeling>\n<MotionLabel name='a' startPoint='1' "
              "endPoint='x'/>\n</MotionLabeling>\n")
    with pytest.raises(DataError, match=r"w\.xml:2: MotionLabel .* expected attributes"):
        A.read_breakfast_xml(f)


def test_timed_rows_to_frames_with_timestamps(tmp_path):
    rows = A.read_timed_segments(write(tmp_path / "a.txt", "300 500 b\n100 300 a\n",
                                       newline="\r\n"))
    assert rows == [(300, 500, "b", 1), (100, 300, "a", 2)]
    stamps = A.read_timestamps(write(tmp_path / "t.txt",
                                     "50 f0.png\n150 f1.png\n250 f2\n350\n450\n550\n"))
    assert stamps.tolist() == [50, 150, 250, 350, 450, 550]
    segs = A.times_to_frames(rows, stamps)  # frame i belongs to [start, end) by its time
    assert [(s.start, s.end, s.label) for s in segs] == [(3, 5, "b"), (1, 3, "a")]


def test_timestamps_going_back_is_an_error(tmp_path):
    with pytest.raises(DataError, match=r"t\.txt: timestamps go back in time at frame 3"):
        A.read_timestamps(write(tmp_path / "t.txt", "10\n20\n15\n"))


def test_timed_row_errors(tmp_path):
    with pytest.raises(DataError, match=r"a\.txt:2: end 5 precedes start 9"):
        A.read_timed_segments(write(tmp_path / "a.txt", "1 2 x\n9 5 y\n"))
    with pytest.raises(DataError, match=r"a\.txt:1: expected '<start> <end> <label>'"):
        A.read_timed_segments(write(tmp_path / "a.txt", "1.5 2 x\n"))


# ------------------------------------------------------------------ CSV, signing rows

def test_csv_segments(tmp_path):
    f = write(tmp_path / "s.csv", "subject,file_name,start_frame,end_frame,id,cat\n"
              "s1, v1, 1, 3, 5, cut\n\ns1,v1,4,4,6,peel\n")
    rows = A.read_csv_rows(f, ("subject", "start_frame"))
    assert [ln for ln, _ in rows] == [2, 4]
    segs = A.csv_segments(rows, path=f, start="start_frame", end="end_frame", label="cat",
                          one_based=True)
    assert [(s.start, s.end, s.label, s.line) for s in segs] == [(0, 3, "cut", 2),
                                                               (3, 4, "peel", 4)]


def test_csv_errors(tmp_path):
    f = write(tmp_path / "s.csv", "a,b\n1,2\n")
    with pytest.raises(DataError, match=r"s\.csv:1: missing column\(s\) start_frame"):
        A.read_csv_rows(f, ("a", "start_frame"))
    f = write(tmp_path / "t.csv", "a,b,c\n1,2,3\n4,5\n")
    with pytest.raises(DataError, match=r"t\.csv:3: 2 fields; the header has 3"):
        A.read_csv_rows(f, ("a",))
    f = write(tmp_path / "u.csv", "s,e,l\n1,2,a\nx,3,b\n")
    with pytest.raises(DataError, match=r"u\.csv:3: s/e must be integer frames"):
        A.csv_segments(A.read_csv_rows(f, ()), path=f, start="s", end="e", label="l")


def test_signing_rows(tmp_path):
    f = write(tmp_path / "gt.txt", "vidB 2 S\nvidA 0 n\nvidA 1 ?\nvidA 3 P\nvidB 0 S\n")
    rows = A.read_signing_rows(f)
    assert sorted(rows) == ["vidA", "vidB"]
    assert rows["vidA"][0].tolist() == [0, 1, 3] and rows["vidA"][1].tolist() == [2, -1, 1]
    assert rows["vidB"][0].tolist() == [0, 2] and rows["vidB"][1].tolist() == [0, 0]
    with pytest.raises(DataError, match=r"gt\.txt:2: expected '<youtube_id> <frame> S\|P\|n\|\?'"):
        A.read_signing_rows(write(tmp_path / "gt.txt", "v 0 S\nv 1 X\n"))
    with pytest.raises(DataError, match=r"gt\.txt:3: video 'v' frame 0 already labelled on line 1"):
        A.read_signing_rows(write(tmp_path / "gt.txt", "v 0 S\nv 1 S\nv 0 P\n"))


# ------------------------------------------------------------------ real files

needs_data = pytest.mark.skipif(not DATA.is_dir(), reason="shared/data is absent")


@needs_data
def test_real_breakfast_xml_equals_coarse_txt():
    """The author's XML and the coarse .txt describe the same segments for all 252 videos."""
    coarse = sorted((DATA / "breakfast" / "segmentation_coarse").glob("*/*.txt"))
    assert len(coarse) == 252
    for txt in coarse:
        xml = DATA / "breakfast" / "segmentation_xml" / txt.parent.name / (txt.stem + ".xml")
        a = [(s.start, s.end, s.label) for s in A.read_range_segments(txt)]
        b = [(s.start, s.end, s.label) for s in A.read_breakfast_xml(xml)]
        assert a == b, txt.name


@needs_data
def test_real_salads_mapping_and_ground_truth():
    classes = A.read_mapping(DATA / "50salads" / "mapping.txt")
    assert len(classes) == 19 and classes[17:] == ("action_start", "action_end")
    labels = A.read_frame_labels(DATA / "50salads" / "groundTruth" / "rgb-01-1.txt",
                                 {c: i for i, c in enumerate(classes)})
    assert labels.shape == (11679,)
    # golden: the first frames are action_start (604 of them), the last action_end (1336)
    assert np.count_nonzero(labels == 17) == 604 and np.count_nonzero(labels == 18) == 1336
    assert labels[0] == 17 and labels[604] == classes.index("cut_tomato")
