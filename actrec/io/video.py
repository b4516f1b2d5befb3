"""Reading video frames, optionally resampled to a target frame rate: video files with decord,
folders of image frames with OpenCV, behind one reader interface (``open_video``).

Resampling convention (used for frames here and for labels in ``actrec.extract``): output
frame ``i`` is source frame ``round(i * source_fps / fps)`` (rounding half up), and output
frames continue while that index is inside the video. Output frame ``i`` has timestamp
``i / fps`` seconds. Without a target fps every source frame is returned, at ``i / source_fps``.

decord's own errors (``DECORDError``, ``RuntimeError``) never escape: a missing, unreadable or
truncated file raises ``DataError`` naming the file and what went wrong. The few frame widths
whose batch copy decord refuses are read with OpenCV instead (identical frames, see
``_OpenCVFrames``). decord or decord2 (a maintained fork installing the same module) both work.

Frame folders (``FRAME_EXTENSIONS`` files, as datasets ship them: ``frame_0000000001.jpg``,
``0001.png``) are read in the order of the number in their names (the last run of digits:
``10.png`` after ``9.png``, which a lexical sort gets wrong), at a frame rate the caller gives
(``folder_fps``: a folder records none). The numbers must start at 0 or 1 and go up by 1: a
missing (also at the start) or duplicated frame would shift every later frame against its label,
and every k-th frame would play k times too fast, so each is a ``DataError`` naming the files, as
are an empty folder, an unreadable image and images of different sizes.
Hidden files (``._0001.jpg`` from macOS) and other files (``Thumbs.db``) are no frames.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from actrec.errors import DataError

__all__ = [
    "FRAME_EXTENSIONS",
    "RATE_TOLERANCE",
    "FrameFolderReader",
    "VideoReader",
    "frame_files",
    "header_value",
    "keep_freed_batches",
    "open_video",
    "resample_indices",
    "same_rate",
]

FRAME_EXTENSIONS = (".jpg", ".jpeg", ".png")


def resample_indices(num_source: int, source_fps: float, fps: float) -> np.ndarray:
    """Source indices (int64 ``[T']``) of the frames kept when resampling to ``fps``.

    Index ``i`` maps to ``floor(i * source_fps / fps + 0.5)``; the result stops at the last
    ``i`` whose source index is ``< num_source``. Equal rates give ``arange(num_source)``.
    """
    if num_source <= 0:
        return np.zeros(0, dtype=np.int64)
    if source_fps <= 0 or fps <= 0:
        raise ValueError(f"frame rates must be positive, got {source_fps} and {fps}")
    ratio = source_fps / fps
    # i is kept iff i * ratio + 0.5 < num_source; one spare candidate absorbs float error.
    count = int(np.ceil((num_source - 0.5) / ratio)) + 1
    idx = np.floor(np.arange(count, dtype=np.float64) * ratio + 0.5).astype(np.int64)
    return idx[idx < num_source]


def _describe(exc: BaseException) -> str:
    """decord's message without its C++ source location and trailing noise."""
    text = str(exc).strip().splitlines()
    text = [t for t in text if t.strip() and not t.lstrip().startswith("Stack trace")]
    msg = text[0] if text else type(exc).__name__
    if "] " in msg and msg.startswith("["):  # "[12:00:00] /src/...cc:83: ERROR ..."
        msg = msg.split("] ", 1)[1]
    if ": " in msg and ".cc:" in msg.split(": ", 1)[0]:
        msg = msg.split(": ", 1)[1]
    return msg


def _decord_errors() -> tuple[type[BaseException], ...]:
    import decord

    return (decord.DECORDError, RuntimeError, ValueError, IndexError)


class _Reader:
    """What every reader shares: resampling bookkeeping and batched reads of output frames.

    A subclass sets ``path`` and calls ``_timing`` with its source frame count and rate, then
    implements ``_read_source`` (source frame indices -> uint8 RGB ``[B, H, W, 3]``).
    """

    path: Path
    size: tuple[int, int]

    def _timing(self, num_source: int, source_fps: float, fps: float | None,
                nominal_fps: float | None = None) -> None:
        if fps is not None and not (np.isfinite(fps) and fps > 0):
            raise DataError(f"{self.path}: target fps must be positive, got {fps}")
        self.num_source_frames = num_source
        self.container_fps = float(source_fps)  # as the file states it
        if nominal_fps is not None and same_rate(source_fps, nominal_fps):
            source_fps = nominal_fps  # frame i of the file is frame i of the labels
        self.source_fps = float(source_fps)
        self.fps = float(fps) if fps is not None else self.source_fps
        if fps is None:
            self._source_index = np.arange(num_source, dtype=np.int64)
        else:
            self._source_index = resample_indices(num_source, self.source_fps, self.fps)
        self.num_frames = int(self._source_index.shape[0])
        self.timestamps = np.arange(self.num_frames, dtype=np.float64) / self.fps

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({str(self.path)!r}, frames={self.num_frames}, "
                f"fps={self.fps:g}, size={self.size})")

    def __len__(self) -> int:
        return self.num_frames

    @property
    def source_indices(self) -> np.ndarray:
        """Source frame index of every output frame (int64 ``[T]``)."""
        return self._source_index.copy()

    def _read_source(self, source_idx: Sequence[int]) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    def read(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """Output frames ``indices`` (after resampling) as uint8 RGB ``[B, H, W, 3]``."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size == 0:
            return np.zeros((0, *self.size, 3), dtype=np.uint8)
        if idx.min() < 0 or idx.max() >= self.num_frames:
            raise IndexError(f"{self.path}: frame index out of range 0..{self.num_frames - 1}")
        return self._read_source(self._source_index[idx].tolist())

    def read_source(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """Source frames ``indices`` (the file's own frames, before resampling) as uint8 RGB
        ``[B, H, W, 3]``: what an extractor that windows over the video's own rate is fed."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size == 0:
            return np.zeros((0, *self.size, 3), dtype=np.uint8)
        if idx.min() < 0 or idx.max() >= self.num_source_frames:
            raise IndexError(f"{self.path}: source frame index out of range "
                             f"0..{self.num_source_frames - 1}")
        return self._read_source(idx.tolist())

    def iter_batches(self, batch_size: int = 64) -> Iterator[np.ndarray]:
        """All output frames in time order, ``batch_size`` at a time (the last batch may be
        shorter), each uint8 RGB ``[B, H, W, 3]``."""
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        for start in range(0, self.num_frames, batch_size):
            yield self.read(np.arange(start, min(start + batch_size, self.num_frames)))


_MALLOC_ENV = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")
_allocator_kept = False


def keep_freed_batches() -> bool:
    """Have glibc's allocator keep the memory of freed frame batches for the next ones (once
    per process; ``True`` when set now or before). decord returns every batch in new memory
    (a few MB: 64 frames of 128 x 128 are 3 MB), which glibc maps from the OS and unmaps when
    freed, so every batch was page-faulted in afresh: about a tenth of decoding's CPU time.
    Blocks up to 32 MB now come from the heap, and up to 256 MB of free memory stays there.
    Left alone where the user set glibc's ``MALLOC_*`` variables or ``glibc.malloc.*``
    tunables (``GLIBC_TUNABLES``), with ``ACTREC_KEEP_FREED_BATCHES=0``, and without glibc.
    It changes the whole process's allocator, so only the extraction host (``actrec extract``
    and its workers) calls it, not the readers themselves."""
    global _allocator_kept
    if _allocator_kept:
        return True
    if any(k in os.environ for k in _MALLOC_ENV) or \
            "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", "") or \
            os.environ.get("ACTREC_KEEP_FREED_BATCHES", "1") == "0":
        return False
    try:
        import ctypes

        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's malloc.h
    _allocator_kept = bool(mallopt(m_mmap_threshold, 32 << 20)) and \
        bool(mallopt(m_trim_threshold, 256 << 20))
    return _allocator_kept


class VideoReader(_Reader):
    """An open video file: its geometry, its (resampled) frame times, and batched frame reads.

    Build one with ``open_video``. ``num_frames`` and ``timestamps`` are after resampling.
    """

    def __init__(self, path: Path, fps: float | None = None, *, num_threads: int = 1,
                 nominal_fps: float | None = None) -> None:
        import decord

        self.path = Path(path)
        if not self.path.is_file():
            raise DataError(f"{self.path}: video file not found")
        if self.path.stat().st_size == 0:  # (decord's own message names a demuxer error)
            raise DataError(f"{self.path}: empty file (0 bytes); expected a video")
        try:
            self._vr = decord.VideoReader(str(self.path), ctx=decord.cpu(0),
                                          num_threads=num_threads)
            num_source = len(self._vr)
            source_fps = float(self._vr.get_avg_fps())
        except _decord_errors() as exc:
            raise DataError(
                f"{self.path}: cannot decode video (truncated or not a video?): {_describe(exc)}"
            ) from None
        if num_source == 0:
            raise DataError(f"{self.path}: video has no frames")
        if not np.isfinite(source_fps) or source_fps <= 0:
            raise DataError(f"{self.path}: video reports no valid frame rate "
                            f"({source_fps}); pass fps explicitly")
        self._timing(num_source, source_fps, fps, nominal_fps)
        self._fallback: _OpenCVFrames | None = None
        self._first: np.ndarray | None = None
        first = self._read_source([0])
        self.size = (int(first.shape[1]), int(first.shape[2]))  # (H, W)
        # decord now stands at frame 1: a first read from frame 0 goes on from there with this
        # frame instead of seeking back and decoding again (about 8% of a video's decoding)
        self._first = first if self._fallback is None else None

    def _read_source(self, source_idx: Sequence[int]) -> np.ndarray:
        if self._fallback is not None:
            return self._fallback.read(source_idx, self.num_source_frames)
        first, self._first = self._first, None  # only before decord has moved on
        if first is not None and source_idx and source_idx[0] == 0:
            repeat = next((i for i, s in enumerate(source_idx) if s != 0), len(source_idx))
            head = np.repeat(first, repeat, axis=0)
            if repeat == len(source_idx):
                return head
            return np.concatenate([head, self._read_source(source_idx[repeat:])])
        try:
            batch = _as_numpy(self._vr.get_batch(list(source_idx)))
        except _decord_errors() as exc:
            lo, hi = min(source_idx), max(source_idx)
            if "DECORDArrayCopyFromTo" in str(exc):
                # decord cannot copy frames of a few widths into its batch array: read this
                # file with OpenCV instead (the same FFmpeg decoding, bit-identical frames)
                self._fallback = _OpenCVFrames(self.path)
                return self._fallback.read(source_idx, self.num_source_frames)
            raise DataError(
                f"{self.path}: failed to decode frames {lo}..{hi} of {self.num_source_frames} "
                f"(file truncated or corrupt?): {_describe(exc)}"
            ) from None
        if batch.ndim != 4 or batch.shape[0] != len(source_idx) or batch.shape[3] != 3:
            raise DataError(f"{self.path}: decoder returned {tuple(batch.shape)} for "
                            f"{len(source_idx)} frames; expected [B, H, W, 3] (truncated file?)")
        return batch


class _DecordFrames:
    """A decord CPU array's memory as a numpy array (``__array_interface__``), kept alive by
    the numpy array that views it."""

    __slots__ = ("__array_interface__", "_array")

    def __init__(self, array, data: int) -> None:
        self._array = array
        self.__array_interface__ = {"shape": tuple(array.shape), "typestr": "|u1",
                                    "data": (data, False), "version": 3}


def _as_numpy(array) -> np.ndarray:
    """A decord array of frames as a writable uint8 numpy array. A compact CPU array (what
    ``get_batch`` returns: a new one per call) is viewed in place, without ``asnumpy``'s copy
    into freshly allocated memory (about a tenth of decoding's CPU time); anything else is
    copied."""
    handle = getattr(array, "handle", None)
    try:
        info = handle.contents
        compact = (info.ctx.device_type == 1 and not info.strides and info.data
                   and str(array.dtype) == "uint8")
    except (AttributeError, ValueError, TypeError):
        compact = False
    if not compact:
        return array.asnumpy()
    return np.asarray(_DecordFrames(array, info.data + info.byte_offset))


class _OpenCVFrames:
    """Frames of a video file read in order with OpenCV, for the frame widths whose batch copy
    decord refuses (decord 0.6: 8-24, 48 and 72 pixels; decord2: 8-32, 48, 96 and 144). Both
    decode with FFmpeg and convert with swscale: the frames equal decord's bit for bit where
    decord works. Reads that go back in time reopen the file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._capture = None
        self._next = 0  # index of the frame the capture returns next
        self._last: np.ndarray | None = None  # frame _next - 1 (repeated by upsampling)

    def read(self, source_idx: Sequence[int], total: int) -> np.ndarray:
        import cv2

        frames = []
        for i in source_idx:
            if self._last is not None and i == self._next - 1:
                frames.append(self._last)
                continue
            if self._capture is None or i < self._next:
                if self._capture is not None:
                    self._capture.release()
                self._capture = cv2.VideoCapture(str(self.path))
                self._next, self._last = 0, None
            while self._next < i and self._capture.grab():
                self._next += 1
            ok, frame = self._capture.read() if self._next == i else (False, None)
            if not ok:
                raise DataError(f"{self.path}: failed to decode frame {i} of {total} (file "
                                f"truncated or corrupt?)")
            self._next += 1
            self._last = np.ascontiguousarray(frame[:, :, ::-1])  # BGR -> RGB
            frames.append(self._last)
        return np.stack(frames)


def _frame_number(name: str) -> int | None:
    """The last run of digits in a file name's stem (``frame_0000000012.jpg`` -> 12)."""
    digits = re.findall(r"\d+", name.rsplit(".", 1)[0])
    return int(digits[-1]) if digits else None


def frame_files(folder: Path) -> list[Path]:
    """The image frames of ``folder`` (``FRAME_EXTENSIONS``, any case; hidden files left out)
    in frame order: sorted by the number in the name (see the module docstring).

    ``DataError`` naming the folder for no frames, a frame without a number, two files with
    the same number, or numbers that do not start at 0 or 1 and go up by 1 (a missing frame).
    """
    import os

    folder = Path(folder)
    try:
        names = [e.name for e in os.scandir(folder)
                 if not e.name.startswith(".") and e.name.lower().endswith(FRAME_EXTENSIONS)]
    except OSError as exc:
        raise DataError(f"{folder}: cannot list the frame folder ({exc.strerror or exc})") \
            from None
    if not names:
        raise DataError(f"{folder}: frame folder holds no frames (expected image files "
                        f"{', '.join('*' + e for e in FRAME_EXTENSIONS)})")
    numbered: dict[int, str] = {}
    for name in names:
        number = _frame_number(name)
        if number is None:
            raise DataError(f"{folder / name}: a frame file name needs a frame number (as in "
                            f"frame_0000000001.jpg or 0001.png)")
        if number in numbered:
            first, second = sorted((numbered[number], name))
            raise DataError(f"{folder}: {first} and {second} are both frame {number}")
        numbered[number] = name
    order = sorted(numbered)
    if order[0] not in (0, 1):
        raise DataError(
            f"{folder}: the first frame is {numbered[order[0]]} (frame {order[0]}); frames are "
            f"numbered from 0 or 1, and frames lost at the start would shift every frame "
            f"against its label")
    if len(order) > 1:
        steps = np.diff(order)
        bad = np.flatnonzero(steps != 1)
        if bad.size:
            i = int(bad[0])
            if steps[0] != 1 and np.all(steps == steps[0]):
                raise DataError(
                    f"{folder}: frame numbers go up by {steps[0]} ({numbered[order[0]]}, "
                    f"{numbered[order[1]]}, ...); a frame folder holds one frame of the video "
                    f"per file, read at the dataset's frame rate (every {steps[0]}th frame "
                    f"would play {steps[0]} times too fast against the labels)")
            raise DataError(
                f"{folder}: frame numbers go up by 1 until {numbered[order[i]]}, then "
                f"jump to {numbered[order[i + 1]]} (a missing or extra frame would shift every "
                f"later frame against its label)")
    return [folder / numbered[n] for n in order]


class FrameFolderReader(_Reader):
    """An open folder of image frames (see ``frame_files`` for the order), at ``folder_fps``,
    with the same interface as ``VideoReader``. Images are read as they are asked for."""

    def __init__(self, path: Path, fps: float | None = None, *, folder_fps: float | None,
                 num_threads: int = 1) -> None:
        self.path = Path(path)
        if folder_fps is None:
            raise DataError(f"{self.path}: a frame folder has no frame rate of its own; give "
                            f"its rate (the dataset's fps)")
        if not (np.isfinite(folder_fps) and folder_fps > 0):
            raise DataError(f"{self.path}: frame rate of the frame folder must be positive, "
                            f"got {folder_fps}")
        self._files = frame_files(self.path)
        self._threads = max(1, int(num_threads) if num_threads else min(8, os.cpu_count() or 1))
        self._pool = None
        self._timing(len(self._files), folder_fps, fps)
        first = self._image(0)
        self.size = (int(first.shape[0]), int(first.shape[1]))  # (H, W)

    def _image(self, i: int) -> np.ndarray:
        import cv2

        path = self._files[i]
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)  # BGR; None when unreadable
        if image is None:
            raise DataError(f"{path}: cannot read this image (damaged, empty or not a "
                            f"{path.suffix.lstrip('.').upper() or 'image'} file?)")
        size = (int(image.shape[0]), int(image.shape[1]))
        if i and size != self.size:
            raise DataError(f"{path}: frame is {size[0]}x{size[1]} (HxW) but "
                            f"{self._files[0].name} is {self.size[0]}x{self.size[1]}; every frame "
                            f"of a folder must have the same size")
        return image[:, :, ::-1]  # BGR -> RGB

    def _read_source(self, source_idx: Sequence[int]) -> np.ndarray:
        idx = list(source_idx)
        if self._threads > 1 and len(idx) > 1:  # OpenCV decodes without the GIL
            if self._pool is None:
                from concurrent.futures import ThreadPoolExecutor

                self._pool = ThreadPoolExecutor(self._threads)
            images = list(self._pool.map(self._image, idx))
        else:
            images = [self._image(i) for i in idx]
        return np.ascontiguousarray(np.stack(images))

    def __del__(self) -> None:
        if getattr(self, "_pool", None) is not None:
            self._pool.shutdown(wait=False)


def open_video(path: str | Path, fps: float | None = None, *, num_threads: int = 1,
               folder_fps: float | None = None,
               nominal_fps: float | None = None) -> VideoReader | FrameFolderReader:
    """Open ``path`` for reading, resampled to ``fps`` if given (see the module docstring):
    a video file, or a folder of image frames at ``folder_fps`` frames per second (required
    for a folder, ignored for a file, which carries its own rate).

    Raises ``DataError`` naming the file if it is missing, not a video, or truncated, and the
    folder or frame for a frame folder that is empty, numbered with gaps, or holds an
    unreadable image or images of different sizes. ``num_threads`` is decord's decoding thread
    count, or the image-reading threads of a folder (0 = the library's choice).

    ``nominal_fps`` is the rate at which the caller counts the file's frames (a dataset's label
    rate: labels are frame numbers of the video). A container rate within
    ``RATE_TOLERANCE`` of it is that nominal rate as the file rounds it (29.97 for 30, 25.02
    for 25): source frames are then taken at ``nominal_fps``, one to one with the labels, and
    ``container_fps`` keeps the file's own value. Resampling by the container's rate instead
    would drift (at 29.97 vs 30: 18 frames per 10 minutes) without any length check noticing.
    """
    path = Path(path)
    if path.is_dir():
        return FrameFolderReader(path, fps, folder_fps=folder_fps, num_threads=num_threads)
    return VideoReader(path, fps, num_threads=num_threads, nominal_fps=nominal_fps)


RATE_TOLERANCE = 0.025
"""Relative difference under which a container's frame rate is a rounding of a nominal one."""


def same_rate(container_fps: float, nominal_fps: float) -> bool:
    """True when ``container_fps`` is within ``RATE_TOLERANCE`` of ``nominal_fps``."""
    return abs(container_fps - nominal_fps) <= RATE_TOLERANCE * nominal_fps


def header_value(path: Path, name: str) -> float | None:
    """The value a video file's container header states for OpenCV's ``CAP_PROP_<name>``
    (``"FPS"``, ``"FRAME_COUNT"``), without decoding a frame; ``None`` when the file does not
    open or states none (0 or less)."""
    import cv2

    capture = cv2.VideoCapture(str(path))
    try:
        value = capture.get(getattr(cv2, f"CAP_PROP_{name}")) if capture.isOpened() else 0.0
    finally:
        capture.release()
    return float(value) if value and value > 0 else None
