"""Hostile annotation values (issue 9, item 4): a frame range or time far past any real video
is a DataError naming the file and line, raised before anything is allocated from it; an empty
annotation file is skipped and counted by ``read_each`` (``strict`` keeps the error).

The end-to-end cases run the unchanged dataset plugins in a subprocess whose address space is
capped at 2 GiB: code that allocates from the hostile value fails there with MemoryError (the
original bugs: 745 GiB for Breakfast, an OOM kill at 23 GB for 50 Salads) instead of hurting
the machine running the tests.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from actrec.errors import DataError
from actrec.io import annotations as A

HOSTILE_RANGE = "1-99999999999 SIL"  # Breakfast: one typo, 745 GiB of labels
HOSTILE_TIMED = "100 99999999999999 cut_tomato_core"  # 50 Salads: 3.3e9 frames at 30 fps


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# ------------------------------------------------------------------ the documented bounds

def test_limits_are_24_hours():
    assert A.MAX_VIDEO_SECONDS == 86_400
    assert A.MAX_FRAMES == A.frame_limit(A.MAX_FPS) == A.frame_limit() == 86_400 * 60
    assert A.frame_limit(15) == 1_296_000  # Breakfast
    assert A.frame_limit(29.97) == 2_589_408  # ceil(86400 * 29.97)
    assert A.frame_limit(float("nan")) == A.frame_limit(0) == A.MAX_FRAMES
    assert A.MAX_TIME_US == 86_400_000_000


# ------------------------------------------------------------------ range files (Breakfast)

def test_hostile_range_names_file_and_line(tmp_path):
    f = write(tmp_path / "P03_cam01_P03_coffee.txt", f"1-30 SIL\n{HOSTILE_RANGE}\n")
    with pytest.raises(DataError, match=r"P03_cam01_P03_coffee\.txt:2: frame 99999999999 "
                                        r"is past .*5184000"):
        A.read_range_segments(f)


def test_range_bound_is_inclusive_and_follows_max_frames(tmp_path):
    f = write(tmp_path / "v.txt", "1-10 a\n")
    assert [(s.start, s.end) for s in A.read_range_segments(f, max_frames=10)] == [(0, 10)]
    with pytest.raises(DataError,
                       match=r"v\.txt:1: frame 10 is past the limit 9 \(videos of up to 24 hours"):
        A.read_range_segments(f, max_frames=9)
    # an empty range past the bound is as damaged as a full one: no silent drop
    g = write(tmp_path / "w.txt", "1-5 a\n100-99 SIL\n")
    with pytest.raises(DataError, match=r"w\.txt:2: frame 100"):
        A.read_range_segments(g, max_frames=50)


def test_hostile_xml_point_names_line(tmp_path):
    f = write(tmp_path / "v.xml", '<?xml version="1.0"?>\n<Seg>\n'
              '  <MotionLabel name="SIL" startPoint="1" endPoint="30"/>\n'
              '  <MotionLabel name="pour_milk" startPoint="31" endPoint="99999999999"/>\n'
              '</Seg>\n')
    with pytest.raises(DataError, match=r"v\.xml:4: MotionLabel 'pour_milk': frame 99999999999"):
        A.read_breakfast_xml(f)


# ------------------------------------------------------------------ timed files (50 Salads)

def test_hostile_time_names_file_and_line(tmp_path):
    f = write(tmp_path / "01-1-activityAnnotation.txt",
              f"53704269 268768513 cut_and_mix_ingredients\n{HOSTILE_TIMED}\n")
    with pytest.raises(DataError, match=r"01-1-activityAnnotation\.txt:2: time 99999999999999 "
                                        r"is past .*86400000000"):
        A.read_timed_segments(f)
    # the longest real 50 Salads time (1644398279 us, 27 min) is far inside the bound
    ok = write(tmp_path / "ok.txt", "19164687 1644398279 salad\n")
    assert A.read_timed_segments(ok) == [(19164687, 1644398279, "salad", 1)]
    with pytest.raises(DataError, match=r"ok\.txt:1: time 1644398279"):
        A.read_timed_segments(ok, max_time=1_000_000_000)


# ------------------------------------------------------------------ the other formats

def test_segments_to_frames_checks_before_allocating():
    huge = [A.Segment(0, 30, "a", 1), A.Segment(30, 99_999_999_999, "a", 7)]
    with pytest.raises(DataError, match=r"f\.txt:7: segment end \(frame\) 99999999999"):
        A.segments_to_frames(huge, {"a": 0}, source="f.txt")
    # even with a known length (clipping would not allocate) the typo is reported, not counted
    with pytest.raises(DataError, match=r"f\.txt:7"):
        A.segments_to_frames(huge, {"a": 0}, source="f.txt", num_frames=40)
    with pytest.raises(DataError, match=r"info\.csv: video length \(frames\) 10000000000"):
        A.segments_to_frames([], {"a": 0}, source="info.csv", num_frames=10**10)
    labels, repairs = A.segments_to_frames(huge[:1], {"a": 0}, source="f", max_frames=30)
    assert labels.shape == (30,) and repairs == {}


def test_superscript_digits_are_no_numbers(tmp_path):
    # "²".isdigit() is True but int("²") fails: a ValueError traceback before
    f = write(tmp_path / "t.txt", "1 \u00b2 x\n")
    with pytest.raises(DataError, match=r"t\.txt:1: expected .<start> <end> <label>."):
        A.read_timed_segments(f)
    g = write(tmp_path / "m.txt", "0 a\n\u00b9 b\n")
    with pytest.raises(DataError, match=r"m\.txt:2: expected .<id> <class name>."):
        A.read_mapping(g)
    s = write(tmp_path / "s.txt", "vid \u00b3 S\n")
    with pytest.raises(DataError, match=r"s\.txt:1: expected"):
        A.read_signing_rows(s)
    ts = write(tmp_path / "ts.txt", "0\n\u00b2 f.png\n")
    with pytest.raises(DataError, match=r"ts\.txt:2: expected a frame timestamp"):
        A.read_timestamps(ts)


def test_numbers_with_thousands_of_digits(tmp_path):
    # int() refuses more than 4300 digits with a ValueError (a traceback before)
    digits = "9" * 5000
    for name, text, call in [("r.txt", f"1-{digits} SIL\n", A.read_range_segments),
                             ("t.txt", f"1 {digits} x\n", A.read_timed_segments),
                             ("ts.txt", f"{digits}\n", A.read_timestamps),
                             ("s.txt", f"vid {digits} S\n", A.read_signing_rows),
                             ("m.txt", f"{digits} a\n", A.read_mapping)]:
        with pytest.raises(DataError, match=rf"{name}:1: number 9{{20}}\.\.\. \(5000 digits\)"):
            call(write(tmp_path / name, text))
    ok = write(tmp_path / "ok.txt", "000000000000000000000001-000000000000000000000002 a\n")
    assert [(s.start, s.end) for s in A.read_range_segments(ok)] == [(0, 2)]


def test_hostile_csv_and_signing_rows(tmp_path):
    rows = [(2, {"s": "1", "e": "20", "l": "a"}), (3, {"s": "21", "e": "99999999999", "l": "a"})]
    with pytest.raises(DataError, match=r"x\.csv:3: frame 99999999999"):
        A.csv_segments(rows, path=Path("x.csv"), start="s", end="e", label="l", one_based=True)
    segs = A.csv_segments(rows[:1], path=Path("x.csv"), start="s", end="e", label="l",
                          one_based=True, max_frames=20)
    assert [(s.start, s.end) for s in segs] == [(0, 20)]
    f = write(tmp_path / "gt.txt", "vid 0 S\nvid 1 P\nvid 99999999999 n\n")
    with pytest.raises(DataError, match=r"gt\.txt:3: frame count 100000000000"):
        A.read_signing_rows(f)
    frames, codes = A.read_signing_rows(f, max_frames=10**12)["vid"]
    assert frames.tolist() == [0, 1, 99_999_999_999] and codes.tolist() == [0, 1, 2]


# ------------------------------------------------------------------ empty files

def test_empty_file_is_its_own_error(tmp_path):
    f = write(tmp_path / "P04_cam01_P04_tea.txt", "\n  \n")
    with pytest.raises(A.EmptyFileError, match=r"P04_cam01_P04_tea\.txt: empty file"):
        A.read_range_segments(f)
    assert issubclass(A.EmptyFileError, DataError)  # callers that catch DataError still do


def test_read_each_skips_and_counts_empty_files(tmp_path):
    files = {"a": write(tmp_path / "a.txt", "1-3 SIL\n"),
             "b": write(tmp_path / "b.txt", ""),
             "c": write(tmp_path / "c.txt", "1-2 SIL\n3-4 x\n")}
    repairs: A.Repairs = {"files with CRLF line endings": 1}
    out = A.read_each(files, lambda p: A.read_range_segments(p, repairs), repairs)
    assert list(out) == ["a", "c"]
    assert [(s.start, s.end, s.label) for s in out["c"]] == [(0, 2, "SIL"), (2, 4, "x")]
    assert repairs == {"files with CRLF line endings": 1, A.EMPTY_FILES: 1}
    with pytest.raises(A.EmptyFileError, match=r"b\.txt: empty file"):
        A.read_each(files, A.read_range_segments, {}, strict=True)
    # other errors are never skipped
    files["d"] = write(tmp_path / "d.txt", HOSTILE_RANGE + "\n")
    with pytest.raises(DataError, match=r"d\.txt:1"):
        A.read_each(files, A.read_range_segments, {})


def test_read_each_refuses_when_every_file_is_empty(tmp_path):
    files = {v: write(tmp_path / f"{v}.txt", "") for v in ("a", "b")}
    with pytest.raises(DataError, match=r"every annotation file is empty \(2, e\.g\. a\.txt\)"):
        A.read_each(files, A.read_range_segments, {})


# ------------------------------------------------------------------ the plugins, unchanged

# Loads a dataset in a process capped at 2 GiB of address space; prints the DataError message
# and exits 3 on a clean error, 0 on success; a MemoryError ends it with a traceback (exit 1).
LOADER = textwrap.dedent("""
    import resource, sys
    resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
    from actrec.errors import DataError
    kind, root = sys.argv[1], sys.argv[2]
    if kind == "breakfast":
        from actrec_plugins.datasets.breakfast import Breakfast as P
        options = dict(root=root, source="coarse")
    else:
        from actrec_plugins.datasets.salads import Salads as P
        options = dict(root=root, source="annotations", label_set="low", start_us=0,
                       split_scheme="person")
    try:
        P(P.Config(**options)).load()
    except DataError as exc:
        print("DataError:", exc)
        sys.exit(3)
""")


def load_capped(kind: str, root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", LOADER, kind, str(root)], capture_output=True,
                          text=True, timeout=120)


def test_breakfast_plugin_reports_the_hostile_line(tmp_path):
    root = tmp_path / "breakfast"
    write(root / "mapping.txt", "0 SIL\n1 take_cup\n")
    write(root / "segmentation_coarse" / "coffee" / "P03_cam01_P03_coffee.txt",
          "1-30 SIL\n31-40 take_cup\n")
    bad = write(root / "segmentation_coarse" / "coffee" / "P04_cam01_P04_coffee.txt",
                f"1-30 SIL\n{HOSTILE_RANGE}\n")
    proc = load_capped("breakfast", root)
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert f"DataError: {bad}:2: frame 99999999999 is past" in proc.stdout


def test_salads_plugin_reports_the_hostile_line(tmp_path):
    root = tmp_path / "salads"
    write(root / "mapping.txt", "0 cut_tomato\n1 action_start\n2 action_end\n")
    write(root / "labels" / "low_level_actions.txt", "cut_tomato_prep\ncut_tomato_core\n")
    write(root / "labels" / "high_level_actions.txt", "cut_and_mix_ingredients\n")
    bad = write(root / "annotations" / "01-1-activityAnnotation.txt",
                f"0 50 cut_tomato_prep\n{HOSTILE_TIMED}\n")
    proc = load_capped("salads", root)
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert f"DataError: {bad}:2: time 99999999999999 is past" in proc.stdout


def test_realistic_files_still_load_in_the_capped_process(tmp_path):
    # the cap itself is no obstacle: a sane file loads (exit 0) under the same 2 GiB
    root = tmp_path / "breakfast"
    write(root / "mapping.txt", "0 SIL\n1 take_cup\n")
    for p in ("P03", "P16", "P29", "P42"):
        write(root / "segmentation_coarse" / "coffee" / f"{p}_cam01_{p}_coffee.txt",
              "1-30 SIL\n31-1296000 take_cup\n")  # 24 h at Breakfast's 15 fps
    proc = load_capped("breakfast", root)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]


def test_labels_at_the_bound_are_exact():
    labels, _ = A.segments_to_frames([A.Segment(0, 2, "a", 1), A.Segment(2, 5, "b", 2)],
                                     {"a": 3, "b": 4}, source="f", max_frames=5)
    np.testing.assert_array_equal(labels, [3, 3, 4, 4, 4])


# ------------------------------------------------------------------ .npy headers

def npy_with_header(path: Path, shape: tuple[int, ...], data: bytes) -> Path:
    import io

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": "<i8", "fortran_order": False, "shape": shape})
    path.write_bytes(buf.getvalue() + data)
    return path


def test_hostile_npy_header_is_refused_before_loading(tmp_path):
    # five real labels under a header that promises 10^11 of them (745 GiB in np.load)
    f = npy_with_header(tmp_path / "v.npy", (99_999_999_999,), np.arange(5).tobytes())
    with pytest.raises(DataError, match=r"v\.npy: the \.npy header promises shape "
                                        r"\(99999999999,\) of int64 \(799999999992 bytes\) "
                                        r"but the file holds 40 bytes"):
        A.read_npy_labels(f, 5)
    ok = npy_with_header(tmp_path / "ok.npy", (5,), np.arange(5).tobytes())
    assert A.read_npy_labels(ok, 5).tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(DataError, match=r"bad\.npy: not a readable \.npy array"):
        A.read_npy(write(tmp_path / "bad.npy", "1 2 3\n"))
