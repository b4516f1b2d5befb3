"""Label-file formats as small pure functions.

Every reader returns plain values (segments, per-frame label arrays, id lists) and, where a
loading policy repaired something, a ``Repairs`` mapping ``description -> count``; the dataset
plugins add these up into ``DatasetIndex.repairs``. Malformed input raises ``DataError`` naming
the file and, where there is one, the 1-based line.

Conventions: a ``Segment`` is 0-based and half-open (``start`` inclusive, ``end`` exclusive),
whatever the file says; per-frame labels are int64 with ``-1`` for unlabelled frames.

Hostile values: every frame number and time a reader accepts is bounded *before* anything is
allocated from it, by ``max_frames`` (default ``MAX_FRAMES``: 24 hours at 60 fps) or ``max_time``
(default ``MAX_TIME_US``: 24 hours in microseconds); a reader that knows the video's frame rate
passes ``frame_limit(fps)``. A value past the bound is a ``DataError`` naming the file and line.
An empty annotation file raises ``EmptyFileError``; ``read_each`` skips and counts such files
(``strict=True`` keeps the error).
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np

from actrec.errors import DataError

__all__ = [
    "Repairs",
    "UNLABELLED",
    "MAX_VIDEO_SECONDS",
    "MAX_FPS",
    "MAX_FRAMES",
    "MAX_TIME_US",
    "EMPTY_FILES",
    "EmptyFileError",
    "Segment",
    "add_repairs",
    "frame_limit",
    "read_each",
    "read_text",
    "read_text_lines",
    "read_mapping",
    "read_name_list",
    "read_conversion",
    "read_bundle",
    "read_bundle_entries",
    "read_range_segments",
    "read_breakfast_xml",
    "read_frame_labels",
    "read_frame_label_names",
    "read_npy_labels",
    "read_timed_segments",
    "read_timestamps",
    "times_to_frames",
    "segments_to_frames",
    "relabel_segments",
    "read_csv_rows",
    "csv_segments",
    "read_signing_rows",
    "fit_length",
    "runs",
]

Repairs = dict[str, int]

UNLABELLED = -1

# The longest video any reader accepts. A range or time past it is a typing error in the file
# (``1-99999999999 SIL``), and turning it into per-frame labels would exhaust memory.
MAX_VIDEO_SECONDS = 24 * 60 * 60
# The highest frame rate of a supported dataset (EPIC-Kitchens, 60 fps): the bound on frame
# numbers when a reader does not pass its own fps.
MAX_FPS = 60.0
MAX_FRAMES = 5_184_000  # = frame_limit(MAX_FPS): 24 h at 60 fps, 41 MB of int64 labels
MAX_TIME_US = MAX_VIDEO_SECONDS * 1_000_000  # 24 h in microseconds (50 Salads' time unit)

EMPTY_FILES = "empty annotation files (skipped)"


class EmptyFileError(DataError):
    """A text file with nothing but white space (``read_text``); ``read_each`` skips these."""


def frame_limit(fps: float | None = None) -> int:
    """The most frames a video may have: ``MAX_VIDEO_SECONDS`` at ``fps`` (``MAX_FPS`` when
    ``fps`` is None or not a positive finite number)."""
    if fps is None or not math.isfinite(fps) or fps <= 0:
        fps = MAX_FPS
    return math.ceil(MAX_VIDEO_SECONDS * fps)


def _int(text: str, where: str) -> int:
    """A decimal integer of a file; more than 18 digits (past every bound, and past Python's
    4300-digit limit for ``int``) is a ``DataError`` at ``where``."""
    if len(text.lstrip("0")) > 18:
        raise DataError(f"{where}: number {text[:20]}... ({len(text)} digits) is too large")
    return int(text)


def _check_bound(value: int, limit: int, where: str, what: str) -> None:
    """``DataError`` at ``where`` when ``value`` (a frame or time of the file) exceeds ``limit``."""
    if value > limit:
        raise DataError(
            f"{where}: {what} {value} is past the limit {limit} (videos of up to "
            f"{MAX_VIDEO_SECONDS // 3600} hours are accepted); is the file damaged?"
        )


@dataclass(frozen=True)
class Segment:
    """A labelled frame range ``[start, end)`` (0-based), with the file line it came from."""

    start: int
    end: int
    label: str
    line: int = 0


def add_repairs(total: Repairs, more: Mapping[str, int]) -> Repairs:
    """Add ``more`` into ``total`` (in place, zero counts skipped) and return ``total``."""
    for key, count in more.items():
        if count:
            total[key] = total.get(key, 0) + int(count)
    return total


# --------------------------------------------------------------------------------------------
# Text files

_T = TypeVar("_T")


def read_each(files: Mapping[str, Path], read: Callable[[Path], _T],
              repairs: Repairs | None = None, *, strict: bool = False) -> dict[str, _T]:
    """``{video: read(path)}`` for every ``files`` entry, in its order, leaving out the videos
    whose file is empty (``read`` raised ``EmptyFileError``): counted under ``EMPTY_FILES`` in
    ``repairs``. With ``strict`` an empty file raises. ``DataError`` if every file is empty.
    """
    out: dict[str, _T] = {}
    skipped: list[Path] = []
    for video, path in files.items():
        try:
            out[video] = read(path)
        except EmptyFileError:
            if strict:
                raise
            skipped.append(Path(path))
    if skipped and not out:
        raise DataError(f"{skipped[0].parent}: every annotation file is empty "
                        f"({len(skipped)}, e.g. {skipped[0].name})")
    if repairs is not None:
        add_repairs(repairs, {EMPTY_FILES: len(skipped)})
    return out


def read_text(path: Path, repairs: Repairs | None = None) -> str:
    """A text file's contents with line endings normalised to ``\\n``.

    Counts a file with CRLF (or CR) endings under ``"files with CRLF line endings"`` in
    ``repairs``. Raises ``DataError`` for a missing, unreadable or non-UTF-8 file, and its
    subclass ``EmptyFileError`` for a blank one.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: not UTF-8 text") from None
    if "\r" in text:
        if repairs is not None:
            add_repairs(repairs, {"files with CRLF line endings": 1})
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not text.strip():
        raise EmptyFileError(f"{path}: empty file; expected annotation lines")
    return text


def read_text_lines(path: Path, repairs: Repairs | None = None) -> list[str]:
    """The lines of a text file (see ``read_text``), trailing blank lines dropped."""
    lines = read_text(path, repairs).split("\n")
    while not lines[-1].strip():
        lines.pop()
    return lines


def read_mapping(path: Path) -> tuple[str, ...]:
    """Class names from an MS-TCN ``mapping.txt`` (``<id> <name>`` lines, ids 0..C-1 in order).

    Raises ``DataError`` naming the line for a malformed line, an id out of order or a
    duplicate name.
    """
    names: list[str] = []
    for number, line in enumerate(read_text_lines(path), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) > 2 and parts[0].isdecimal():  # frame label lines hold one word each
            raise DataError(f"{path}:{number}: expected '<id> <class name>' with a class name "
                            f"without spaces (e.g. {'_'.join(parts[1:])}), got {line!r}")
        if len(parts) != 2 or not parts[0].isdecimal():
            raise DataError(f"{path}:{number}: expected '<id> <class name>', got {line!r}")
        if _int(parts[0], f"{path}:{number}") != len(names):
            raise DataError(
                f"{path}:{number}: class id {parts[0]} out of order; expected {len(names)}"
            )
        if parts[1] in names:
            raise DataError(f"{path}:{number}: duplicate class name {parts[1]!r}")
        names.append(parts[1])
    return tuple(names)


def read_name_list(path: Path) -> tuple[str, ...]:
    """One name per line (blank lines skipped); ``DataError`` on a duplicate, naming the line."""
    names: list[str] = []
    for number, line in enumerate(read_text_lines(path), 1):
        name = line.strip()
        if not name:
            continue
        if name in names:
            raise DataError(f"{path}:{number}: duplicate name {name!r}")
        names.append(name)
    return tuple(names)


def read_conversion(path: Path) -> dict[str, str]:
    """A label conversion file, ``<from> <to>`` per line (50 Salads ``low_to_mid.txt``)."""
    table: dict[str, str] = {}
    for number, line in enumerate(read_text_lines(path), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2:
            raise DataError(f"{path}:{number}: expected '<label> <converted label>', got {line!r}")
        if parts[0] in table:
            raise DataError(f"{path}:{number}: label {parts[0]!r} converted twice")
        table[parts[0]] = parts[1]
    return table


def read_bundle(path: Path, repairs: Repairs | None = None) -> tuple[str, ...]:
    """Video ids from a split list (MS-TCN ``*.bundle`` or a plain list), extensions dropped."""
    return tuple(v for v, _line in read_bundle_entries(path, repairs))


def read_bundle_entries(path: Path, repairs: Repairs | None = None) -> list[tuple[str, int]]:
    """``(video id, line)`` per entry of a split list, ``.txt`` / ``.npy`` extensions dropped.

    Duplicate entries are dropped and counted under ``"duplicate split entries dropped"``.
    """
    entries: list[tuple[str, int]] = []
    seen: set[str] = set()
    duplicates = 0
    for number, line in enumerate(read_text_lines(path, repairs), 1):
        name = line.strip()
        if not name:
            continue
        for ext in (".txt", ".npy"):
            if name.endswith(ext):
                name = name[: -len(ext)]
        if name in seen:
            duplicates += 1
            continue
        seen.add(name)
        entries.append((name, number))
    if repairs is not None:
        add_repairs(repairs, {"duplicate split entries dropped": duplicates})
    return entries


# --------------------------------------------------------------------------------------------
# Segment files

_RANGE = re.compile(r"^\s*(\d+)\s*-\s*(\d+)\s+(\S+)\s*$")


def read_range_segments(path: Path, repairs: Repairs | None = None, *,
                        max_frames: int = MAX_FRAMES) -> list[Segment]:
    """Segments from ``1-30 SIL`` lines (Breakfast coarse and fine files: 1-based, inclusive).

    Returns them 0-based half-open, in file order. ``DataError`` names the line of a malformed
    entry, of one whose end precedes its start, or of one past frame ``max_frames`` (pass
    ``frame_limit(fps)`` or the video's frame count where known).
    """
    segments = []
    for number, line in enumerate(read_text_lines(path, repairs), 1):
        if not line.strip():
            continue
        match = _RANGE.match(line)
        if match is None:
            raise DataError(f"{path}:{number}: expected '<first>-<last> <label>', got {line!r}")
        first, last = _int(match[1], f"{path}:{number}"), _int(match[2], f"{path}:{number}")
        if _empty_range(first, last, f"{path}:{number}", repairs, max_frames):
            continue
        segments.append(Segment(first - 1, last, match[3], number))  # 1-based incl. -> [s, e)
    return segments


def _empty_range(first: int, last: int, where: str, repairs: Repairs | None,
                 max_frames: int) -> bool:
    """Check a 1-based inclusive range: ``True`` for an empty one (``last == first - 1``, as
    in ``477-476``: dropped and counted), ``DataError`` for a reversed or non-1-based one or
    one that ends past frame ``max_frames``."""
    if first < 1 or last < first - 1:
        raise DataError(f"{where}: frame range {first}-{last} is reversed or not 1-based")
    _check_bound(max(first, last), max_frames, where, "frame")
    if last == first - 1:
        if repairs is not None:
            add_repairs(repairs, {"empty segments (dropped)": 1})
        return True
    return False


def read_breakfast_xml(path: Path, repairs: Repairs | None = None, *,
                       max_frames: int = MAX_FRAMES) -> list[Segment]:
    """Segments from the Breakfast author's XML (``<MotionLabel name= startPoint= endPoint=>``,
    1-based inclusive points), 0-based half-open, in file order; points past ``max_frames``
    are a ``DataError`` naming the line (as in ``read_range_segments``)."""
    import xml.etree.ElementTree as ET

    text = "\n".join(read_text_lines(path, repairs))
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        line, _col = exc.position
        raise DataError(f"{path}:{line}: malformed XML ({exc.msg})") from None
    # ElementTree keeps no line numbers: the k-th element is the k-th '<MotionLabel' in the text.
    lines = [text.count("\n", 0, m.start()) + 1 for m in re.finditer(r"<MotionLabel\b", text)]
    segments = []
    for k, element in enumerate(root.iter("MotionLabel")):
        line = lines[k] if k < len(lines) else 0
        try:
            name = element.attrib["name"]
            first = int(element.attrib["startPoint"])
            last = int(element.attrib["endPoint"])
        except (KeyError, ValueError):
            raise DataError(
                f"{path}:{line}: MotionLabel {dict(element.attrib)!r}: expected attributes name, "
                "startPoint and endPoint (integers)"
            ) from None
        if _empty_range(first, last, f"{path}:{line}: MotionLabel {name!r}", repairs,
                        max_frames):
            continue
        segments.append(Segment(first - 1, last, name, line))
    if not segments:
        raise DataError(f"{path}: no <MotionLabel> elements; expected the segmentation")
    return segments


def read_timed_segments(path: Path, repairs: Repairs | None = None, *,
                        max_time: int = MAX_TIME_US) -> list[tuple[int, int, str, int]]:
    """``<start> <end> <label>`` lines with integer times (50 Salads: microseconds).

    Returns ``(start, end, label, line)`` tuples in file order (the files are unsorted).
    ``DataError`` names the line of a malformed row, a reversed one, or one ending after
    ``max_time`` (default 24 hours in microseconds; pass the bound in the file's own unit).
    """
    rows = []
    for number, line in enumerate(read_text_lines(path, repairs), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 3 or not parts[0].isdecimal() or not parts[1].isdecimal():
            raise DataError(f"{path}:{number}: expected '<start> <end> <label>', got {line!r}")
        start, end = _int(parts[0], f"{path}:{number}"), _int(parts[1], f"{path}:{number}")
        if end < start:
            raise DataError(f"{path}:{number}: end {end} precedes start {start}")
        _check_bound(end, max_time, f"{path}:{number}", "time")
        rows.append((start, end, parts[2], number))
    return rows


def read_timestamps(path: Path) -> np.ndarray:
    """Per-frame timestamps ``[T]`` int64, one frame per line: the first integer token of
    each line (so ``<time>`` and ``<time> <frame file>`` lines both work).

    Raises ``DataError`` naming the line of one without an integer or out of time order.
    """
    values = []
    for number, line in enumerate(read_text_lines(path), 1):
        token = next((t for t in line.split() if t.isdecimal()), None)
        if token is None:
            if not line.strip():
                continue
            raise DataError(f"{path}:{number}: expected a frame timestamp, got {line!r}")
        values.append(_int(token, f"{path}:{number}"))
    stamps = np.asarray(values, dtype=np.int64)
    backwards = np.flatnonzero(np.diff(stamps) < 0)
    if backwards.size:
        raise DataError(f"{path}: timestamps go back in time at frame {backwards[0] + 2}")
    return stamps


def times_to_frames(rows: Iterable[tuple[int, int, str, int]], timestamps: np.ndarray
                    ) -> list[Segment]:
    """Turn timed rows into frame segments: frame ``i`` (time ``timestamps[i]``) belongs to a
    row when ``start <= timestamps[i] < end``."""
    rows = list(rows)
    if not rows:
        return []
    starts = np.searchsorted(timestamps, [r[0] for r in rows], side="left")
    ends = np.searchsorted(timestamps, [r[1] for r in rows], side="left")
    return [Segment(int(s), int(e), r[2], r[3]) for s, e, r in zip(starts, ends, rows)]


# --------------------------------------------------------------------------------------------
# Segments -> per-frame labels


def relabel_segments(segments: Iterable[Segment], table: Mapping[str, str | None]
                     ) -> list[Segment]:
    """Segments with labels converted through ``table``; labels absent from it or mapped to
    ``None`` are dropped (used to keep one granularity of a mixed file)."""
    out = []
    for seg in segments:
        new = table.get(seg.label)
        if new is not None:
            out.append(Segment(seg.start, seg.end, new, seg.line))
    return out


def segments_to_frames(
    segments: Sequence[Segment],
    class_index: Mapping[str, int],
    *,
    source: Path | str,
    num_frames: int | None = None,
    fill: int = UNLABELLED,
    overlap: str = "error",
    max_frames: int = MAX_FRAMES,
) -> tuple[np.ndarray, Repairs]:
    """Per-frame labels ``[T]`` int64 from segments.

    ``T`` is ``num_frames`` if given, else the end of the last segment. Nothing is allocated
    before both are checked against ``max_frames``: a segment ending past it raises
    ``DataError`` naming its line, ``num_frames`` past it names ``source``.
    Frames no segment covers get ``fill``. Policies, each counted in the returned repairs:
    - unsorted segments are sorted by start (counted as files);
    - segments past ``num_frames`` are clipped (frames counted);
    - overlapping segments: ``overlap="error"`` raises ``DataError`` naming both lines;
      ``overlap="last"`` lets the segment that starts later win (frames counted).
    A label missing from ``class_index`` raises ``DataError`` naming file and line.
    """
    if overlap not in ("error", "last"):
        raise ValueError(f"overlap policy must be 'error' or 'last', got {overlap!r}")
    repairs: Repairs = {}
    if num_frames is not None:
        _check_bound(int(num_frames), max_frames, str(source), "video length (frames)")
    for seg in segments:
        _check_bound(seg.end, max_frames, f"{source}:{seg.line}", "segment end (frame)")
        if seg.label not in class_index:
            raise DataError(
                f"{source}:{seg.line}: label {seg.label!r} is not in the class list "
                f"({len(class_index)} classes)"
            )
    order = sorted(range(len(segments)), key=lambda i: (segments[i].start, i))
    if order != list(range(len(segments))):
        repairs["videos with unsorted segments (sorted)"] = 1
    ordered = [segments[i] for i in order]
    end = max((s.end for s in ordered), default=0)
    length = end if num_frames is None else int(num_frames)
    if end > length:
        past = sum(max(0, s.end - max(s.start, length)) for s in ordered)
        repairs["frames past the video end (clipped)"] = past
    labels = np.full(length, fill, dtype=np.int64)
    # How many segments cover each frame, by a difference array: [T + 1] -> [T].
    cover = np.zeros(length + 1, dtype=np.int64)
    for seg in ordered:
        s, e = min(seg.start, length), min(seg.end, length)
        cover[s] += 1
        cover[e] -= 1
        labels[s:e] = class_index[seg.label]  # later starts overwrite earlier ones
    overlapped = int(np.count_nonzero(np.cumsum(cover[:-1]) > 1))
    if overlapped:
        if overlap == "error":
            prev = ordered[0]
            for seg in ordered[1:]:
                if seg.start < prev.end:
                    raise DataError(
                        f"{source}:{seg.line}: segment {seg.label!r} overlaps the segment on "
                        f"line {prev.line} ({prev.label!r})"
                    )
                prev = seg if seg.end > prev.end else prev
        repairs["frames covered by overlapping segments (later start wins)"] = overlapped
    return labels, repairs


# --------------------------------------------------------------------------------------------
# Per-frame files


def runs(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Run-length encoding: ``(starts [R], run values [R])`` of a 1-D array."""
    values = np.asarray(values)
    if values.size == 0:
        return np.zeros(0, dtype=np.int64), values[:0]
    starts = np.concatenate([[0], np.flatnonzero(values[1:] != values[:-1]) + 1])
    return starts, values[starts]


def read_frame_label_names(path: Path, repairs: Repairs | None = None) -> np.ndarray:
    """The label names of an MS-TCN ``groundTruth/*.txt`` file (one per line) as ``[T]`` str."""
    return np.array(_frame_tokens(path, read_text(path, repairs)))


def read_frame_labels(path: Path, class_index: Mapping[str, int],
                      repairs: Repairs | None = None) -> np.ndarray:
    """Per-frame class indices ``[T]`` int64 of an MS-TCN ground-truth text file (one label
    name per line; trailing blank lines ignored, a blank line inside is a ``DataError``).

    The look-ups run in C (``map`` over ``dict.__getitem__``), so a 10^5-line file costs
    milliseconds. A label missing from ``class_index`` raises ``DataError`` naming the line.
    """
    text = read_text(path, repairs)
    tokens = _frame_tokens(path, text)
    try:
        return np.fromiter(map(class_index.__getitem__, tokens), dtype=np.int64,
                           count=len(tokens))
    except KeyError as exc:
        missing = exc.args[0]
        line = next(i for i, ln in enumerate(text.split("\n"), 1) if ln.strip() == missing)
        raise DataError(f"{path}:{line}: label {missing!r} is not in the mapping "
                        f"({len(class_index)} classes)") from None


def _frame_tokens(path: Path, text: str) -> list[str]:
    """The labels of a one-label-per-line text (line i is frame i - 1); ``DataError`` naming
    a line with several labels or a blank line before the last label (skipping it would move
    every later label one frame earlier). Trailing blank lines are allowed."""
    if " " in text or "\t" in text:  # rare: only then look at each line
        for number, line in enumerate(text.split("\n"), 1):
            if len(line.split()) > 1:
                raise DataError(f"{path}:{number}: expected one label per line, got {line!r}")
    tokens = text.split()
    if len(tokens) != text.rstrip().count("\n") + 1:  # a line without a label: find it
        number = next(i for i, line in enumerate(text.split("\n"), 1) if not line.strip())
        raise DataError(f"{path}:{number}: blank line among the frame labels (it would be "
                        f"frame {number - 1}); expected one label per line")
    return tokens


def read_npy(path: Path) -> np.ndarray:
    """The array in an ``.npy`` file (no pickles); ``DataError`` naming the file if unreadable.

    The header is checked before anything is allocated: a shape whose data the file does not
    hold (a damaged or hostile header promising 10^11 elements) is a ``DataError``, not a
    MemoryError.
    """
    try:
        with open(path, "rb") as f:
            _check_npy_header(path, f)
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (ValueError, OSError) as exc:
        raise DataError(f"{path}: not a readable .npy array ({exc})") from None


def _check_npy_header(path: Path, f) -> None:
    """``DataError`` unless the ``.npy`` header of the open file ``f`` describes a plain array
    whose data fit in the bytes after the header."""
    fmt = np.lib.format
    version = fmt.read_magic(f)  # ValueError for a file that is no .npy
    if version == (1, 0):
        shape, _fortran, dtype = fmt.read_array_header_1_0(f)
    elif version == (2, 0):
        shape, _fortran, dtype = fmt.read_array_header_2_0(f)
    else:
        raise DataError(f"{path}: .npy format version {version} is not supported (1.0 or 2.0)")
    if dtype.hasobject:
        raise DataError(f"{path}: the .npy array holds Python objects (pickles are not loaded)")
    need = math.prod(shape) * dtype.itemsize
    have = Path(path).stat().st_size - f.tell()
    if need > have:
        raise DataError(f"{path}: the .npy header promises shape {tuple(shape)} of {dtype} "
                        f"({need} bytes) but the file holds {have} bytes; damaged?")


def read_npy_labels(path: Path, num_classes: int) -> np.ndarray:
    """Per-frame class indices ``[T]`` int64 from an ``.npy`` integer array (``-1`` allowed
    for unlabelled frames); ``DataError`` for another shape, dtype or an index out of range."""
    path = Path(path)
    array = np.squeeze(read_npy(path))
    if array.ndim != 1 or not np.issubdtype(array.dtype, np.integer):
        raise DataError(
            f"{path}: expected a 1-D integer array of class indices, got shape "
            f"{array.shape} dtype {array.dtype}"
        )
    bad = np.flatnonzero((array < -1) | (array >= num_classes))
    if bad.size:
        raise DataError(f"{path}: frame {bad[0]} has class index {array[bad[0]]}; "
                        f"expected -1..{num_classes - 1}")
    if array.size == 0:
        raise DataError(f"{path}: empty label array")
    return array.astype(np.int64)


# A labels/features disagreement of more than this share of the longer (and more than
# FEW_FRAMES frames) is refused under any length policy, as at extraction
# (actrec.extract_video): features at another frame rate than the labels would be cut and
# misaligned without a word.
MAX_LENGTH_SHARE = 0.2
FEW_FRAMES = 5  # a disagreement of this many frames is never refused for its share alone


def length_share_over(a: int, b: int, max_share: float = MAX_LENGTH_SHARE) -> float | None:
    """The share of the longer of lengths ``a`` and ``b`` by which they differ, when it is
    more than ``max_share`` and more than ``FEW_FRAMES`` frames; ``None`` otherwise."""
    share = abs(a - b) / max(a, b, 1)
    return share if share > max_share and abs(a - b) > FEW_FRAMES else None


def fit_length(labels: np.ndarray, length: int, *, policy: str = "truncate",
               source: Path | str = "", max_share: float = MAX_LENGTH_SHARE
               ) -> tuple[np.ndarray, Repairs]:
    """Make ``labels`` exactly ``length`` frames long (the feature length).

    ``policy="truncate"`` cuts to the shorter of the two; frames beyond the labels (when the
    features are longer) are marked unlabelled. Both counted. ``policy="error"`` raises. A
    disagreement of more than ``max_share`` of the longer length (and more than
    ``FEW_FRAMES`` frames) raises ``DataError`` under either policy.
    """
    if policy not in ("truncate", "error"):
        raise ValueError(f"length policy must be 'truncate' or 'error', got {policy!r}")
    n = int(labels.shape[0])
    if n == length:
        return labels, {}
    share = length_share_over(n, length, max_share)
    if share is not None:
        raise DataError(f"{source}: {n} labelled frames but the features have {length}: they "
                        f"differ by {100 * share:.0f} % of the longer, more than the "
                        f"{100 * max_share:g} % any length policy accepts (features at another "
                        f"frame rate than the labels?); --max-length-share (max_length_share) "
                        f"raises the limit")
    if policy == "error":
        raise DataError(f"{source}: {n} labelled frames but the features have {length}")
    if n > length:
        return labels[:length], {"label frames beyond the feature length (truncated)": n - length}
    padded = np.full(length, UNLABELLED, dtype=np.int64)
    padded[:n] = labels
    return padded, {"feature frames without labels (unlabelled)": length - n}


# --------------------------------------------------------------------------------------------
# CSV segments (MPII Cooking 2, EPIC-Kitchens)


def read_csv_rows(path: Path, required: Sequence[str], repairs: Repairs | None = None
                  ) -> list[tuple[int, dict[str, str]]]:
    """Rows of a CSV file with a header, as ``(line, {column: value})``; header names are
    stripped. ``DataError`` if a required column is missing or a row is short."""
    lines = read_text_lines(path, repairs)
    reader = csv.reader(lines, skipinitialspace=True)
    header = [h.strip() for h in next(reader)]
    missing = [c for c in required if c not in header]
    if missing:
        raise DataError(
            f"{path}:1: missing column(s) {', '.join(missing)}; header is {', '.join(header)}"
        )
    rows = []
    for row in reader:
        line = reader.line_num
        if not row or not any(cell.strip() for cell in row):
            continue
        if len(row) < len(header):
            raise DataError(f"{path}:{line}: {len(row)} fields; the header has {len(header)}")
        rows.append((line, {h: cell.strip() for h, cell in zip(header, row)}))
    return rows


def csv_segments(rows: Iterable[tuple[int, Mapping[str, str]]], *, path: Path,
                 start: str, end: str, label: str, inclusive: bool = True,
                 one_based: bool = False, max_frames: int = MAX_FRAMES) -> list[Segment]:
    """Segments from CSV rows: frame columns ``start``/``end`` (``inclusive`` end, 0- or
    1-based) and the label column; ``DataError`` names the line of a non-integer frame, a
    reversed range or one ending past frame ``max_frames``."""
    out = []
    for line, row in rows:
        try:
            s, e = int(row[start]), int(row[end])
        except ValueError:
            raise DataError(
                f"{path}:{line}: {start}/{end} must be integer frames, got "
                f"{row[start]!r}/{row[end]!r}"
            ) from None
        if one_based:
            s, e = s - 1, e - 1
        if s < 0 or e < s:
            raise DataError(f"{path}:{line}: frame range {row[start]}-{row[end]} is invalid")
        _check_bound(e + 1 if inclusive else e, max_frames, f"{path}:{line}", "frame")
        out.append(Segment(s, e + 1 if inclusive else e, row[label], line))
    return out


# --------------------------------------------------------------------------------------------
# Signing in the Wild

SIGNING_CODES = {"S": 0, "P": 1, "n": 2, "?": UNLABELLED}


def read_signing_rows(path: Path, repairs: Repairs | None = None, *,
                      max_frames: int = MAX_FRAMES) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Rows ``<youtube_id> <frame> S|P|n|?`` grouped by video: ``id -> (frames, labels)``.

    Labels: ``S`` signing 0, ``P`` speaking 1, ``n`` other 2, ``?`` unlabelled -1. Frames are
    as written (0-based), each below ``max_frames``; duplicate (video, frame) rows are an error
    naming both lines.
    """
    per_video: dict[str, tuple[list[int], list[int], list[int]]] = {}
    for number, line in enumerate(read_text_lines(path, repairs), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 3 or not parts[1].isdecimal() or parts[2] not in SIGNING_CODES:
            raise DataError(
                f"{path}:{number}: expected '<youtube_id> <frame> S|P|n|?', got {line!r}"
            )
        # a frame f makes the reader allocate f + 1 labels
        frame = _int(parts[1], f"{path}:{number}")
        _check_bound(frame + 1, max_frames, f"{path}:{number}", "frame count")
        frames, labels, lines = per_video.setdefault(parts[0], ([], [], []))
        frames.append(frame)
        labels.append(SIGNING_CODES[parts[2]])
        lines.append(number)
    out = {}
    for video, (frames, labels, lines) in per_video.items():
        f = np.asarray(frames, dtype=np.int64)
        order = np.argsort(f, kind="stable")
        dup = np.flatnonzero(np.diff(f[order]) == 0)
        if dup.size:
            a, b = lines[order[dup[0]]], lines[order[dup[0] + 1]]
            raise DataError(
                f"{path}:{b}: video {video!r} frame {f[order[dup[0]]]} already labelled on line {a}"
            )
        out[video] = (f[order], np.asarray(labels, dtype=np.int64)[order])
    return out
