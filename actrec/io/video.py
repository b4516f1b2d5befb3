"""Reading video frames with decord, optionally resampled to a target frame rate.

Resampling convention (used for frames here and for labels in ``actrec.extract``): output
frame ``i`` is source frame ``round(i * source_fps / fps)`` (rounding half up), and output
frames continue while that index is inside the video. Output frame ``i`` has timestamp
``i / fps`` seconds. Without a target fps every source frame is returned, at ``i / source_fps``.

decord's own errors (``DECORDError``, ``RuntimeError``) never escape: a missing, unreadable or
truncated file raises ``DataError`` naming the file and what went wrong.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from actrec.errors import DataError

__all__ = ["VideoReader", "open_video", "resample_indices"]


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


class VideoReader:
    """An open video: its geometry, its (resampled) frame times, and batched frame reads.

    Build one with ``open_video``. ``num_frames`` and ``timestamps`` are after resampling.
    """

    def __init__(self, path: Path, fps: float | None = None, *, num_threads: int = 1) -> None:
        import decord

        self.path = Path(path)
        if not self.path.is_file():
            raise DataError(f"{self.path}: video file not found")
        try:
            self._vr = decord.VideoReader(str(self.path), ctx=decord.cpu(0),
                                          num_threads=num_threads)
            num_source = len(self._vr)
            self.source_fps = float(self._vr.get_avg_fps())
        except _decord_errors() as exc:
            raise DataError(
                f"{self.path}: cannot decode video (truncated or not a video?): {_describe(exc)}"
            ) from None
        if num_source == 0:
            raise DataError(f"{self.path}: video has no frames")
        if not np.isfinite(self.source_fps) or self.source_fps <= 0:
            raise DataError(f"{self.path}: video reports no valid frame rate "
                            f"({self.source_fps}); pass fps explicitly")
        if fps is not None and fps <= 0:
            raise DataError(f"{self.path}: target fps must be positive, got {fps}")
        self.num_source_frames = num_source
        self.fps = float(fps) if fps is not None else self.source_fps
        if fps is None:
            self._source_index = np.arange(num_source, dtype=np.int64)
        else:
            self._source_index = resample_indices(num_source, self.source_fps, self.fps)
        self.num_frames = int(self._source_index.shape[0])
        self.timestamps = np.arange(self.num_frames, dtype=np.float64) / self.fps
        first = self._read_source([0])
        self.size = (int(first.shape[1]), int(first.shape[2]))  # (H, W)

    def __repr__(self) -> str:
        return (f"VideoReader({str(self.path)!r}, frames={self.num_frames}, fps={self.fps:g}, "
                f"size={self.size})")

    def __len__(self) -> int:
        return self.num_frames

    @property
    def source_indices(self) -> np.ndarray:
        """Source frame index of every output frame (int64 ``[T]``)."""
        return self._source_index.copy()

    def _read_source(self, source_idx: Sequence[int]) -> np.ndarray:
        try:
            batch = self._vr.get_batch(list(source_idx)).asnumpy()
        except _decord_errors() as exc:
            lo, hi = min(source_idx), max(source_idx)
            if "DECORDArrayCopyFromTo" in str(exc):
                raise DataError(
                    f"{self.path}: decord cannot convert this video's frames (a decord 0.6 "
                    f"limitation for a few small widths: 8, 12, 16, 24, 48 and 72 pixels); "
                    f"re-encode it at another width"
                ) from None
            raise DataError(
                f"{self.path}: failed to decode frames {lo}..{hi} of {self.num_source_frames} "
                f"(file truncated or corrupt?): {_describe(exc)}"
            ) from None
        if batch.ndim != 4 or batch.shape[0] != len(source_idx) or batch.shape[3] != 3:
            raise DataError(f"{self.path}: decoder returned {tuple(batch.shape)} for "
                            f"{len(source_idx)} frames; expected [B, H, W, 3] (truncated file?)")
        return batch

    def read(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """Output frames ``indices`` (after resampling) as uint8 RGB ``[B, H, W, 3]``."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size == 0:
            return np.zeros((0, *self.size, 3), dtype=np.uint8)
        if idx.min() < 0 or idx.max() >= self.num_frames:
            raise IndexError(f"{self.path}: frame index out of range 0..{self.num_frames - 1}")
        return self._read_source(self._source_index[idx].tolist())

    def iter_batches(self, batch_size: int = 64) -> Iterator[np.ndarray]:
        """All output frames in time order, ``batch_size`` at a time (the last batch may be
        shorter), each uint8 RGB ``[B, H, W, 3]``."""
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        for start in range(0, self.num_frames, batch_size):
            yield self.read(np.arange(start, min(start + batch_size, self.num_frames)))


def open_video(path: str | Path, fps: float | None = None, *, num_threads: int = 1) -> VideoReader:
    """Open ``path`` for reading, resampled to ``fps`` if given (see the module docstring).

    Raises ``DataError`` naming the file if it is missing, not a video, or truncated.
    ``num_threads`` is decord's decoding thread count (0 = decord's choice).
    """
    return VideoReader(Path(path), fps, num_threads=num_threads)
