"""Where live frames come from: a video file, a folder of frames, a camera or a stream URL.

``open_source(text, fps)`` reads what ``text`` names, resampled to ``fps`` (the rate a run's
features were made at, ``Recognizer.fps``) with the rule ``actrec extract`` uses (output frame
``i`` is source frame ``round(i * source_fps / fps)``, ``actrec.io.video.resample_indices``),
a source whose rate is within 2.5 % of ``nominal_fps`` (default ``fps``; the dataset's label
rate, ``Recognizer.label_fps``, where the run's extractor reads at a rate of its own) taken at
that rate (29.97 as 30), unless ``by_time`` (labels that count time, as EPIC-Kitchens':
``Recognizer.labels_by_time``):

* an existing file: decoded with decord exactly as ``actrec extract`` decodes it
  (``actrec.io.video.open_video``, with that nominal rate), so its features equal the
  stored ones;
* an existing folder: its image frames in number order, at ``folder_fps`` (default the
  nominal rate);
* digits (``0``): that camera, through OpenCV's ``VideoCapture``;
* anything with ``://`` (``rtsp://``, ``http://``, ``file://``): a stream, through OpenCV's
  ``VideoCapture`` (FFmpeg).

A source yields ``(index, frame)`` pairs: the output frame index (at ``fps``) and the frame,
uint8 RGB ``[H, W, 3]``. Opened with ``video_rate`` (a run whose extractor runs its windows
over the video's own frames, ``actrec.extract_video.reads_video_rate``), it yields
``(index, frame, fresh)``: ``fresh`` uint8 ``[n, H, W, 3]`` holds the source frames read since
the previous output frame, ending with this one's (``n = 0``: this output frame repeats the
previous one's source frame), so that the extractor is fed every source frame, at the source's
own rate, and its row of frame ``index`` is the row of that frame's source frame, as
``actrec extract`` keeps it. Failures are ``DataError`` naming the source: one that cannot be
opened, a file that cannot be decoded, a stream that stops reporting frames.

Pacing (``PacedFrames``): by default a file is read as fast as it is consumed; ``realtime``
plays it at ``fps`` from a background thread, and a frame the consumer has not taken when the
next one is due is dropped and counted, never skipped silently. A camera is always real time.
The clock can be held until the consumer is ready (``started=False``, then ``start()``): a
file waits on its first frame, and camera frames replaced before then are counted apart, as
start-up (``skipped``), not as drops.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from actrec.errors import ConfigError, DataError

__all__ = ["FrameSource", "PacedFrames", "open_source", "source_kind"]

_CHUNK = 16  # frames decoded per read of a file


def source_kind(text: str) -> str:
    """``"file"``, ``"folder"``, ``"camera"`` or ``"url"`` for a SOURCE argument;
    ``DataError`` naming it when it is none of them."""
    text = str(text)
    if "://" in text:
        return "url"
    if re.fullmatch(r"\d+", text) and not Path(text).exists():
        return "camera"
    path = Path(text).expanduser()
    if path.is_dir():
        return "folder"
    if path.is_file():
        return "file"
    raise DataError(f"source {text!r}: no such file or folder, and not a camera index (0, 1, "
                    f"...) or a stream URL (rtsp://, http://, ...)")


@dataclass
class FrameSource:
    """An opened source: ``name`` (as given), ``kind``, output ``fps``, ``live`` (frames come
    at their own pace whatever the consumer does: a camera), ``num_frames`` (None when
    unknown) and ``frames()``, the iterator of ``(index, frame)`` (``(index, frame, fresh)``
    opened with ``video_rate``; see the module docstring)."""

    name: str
    kind: str
    fps: float
    live: bool
    num_frames: int | None
    _frames: Any
    _close: Any = None

    def frames(self) -> Iterator[tuple[int, np.ndarray]]:
        return self._frames

    def close(self) -> None:
        if self._close is not None:
            self._close()
            self._close = None


def open_source(text: str, fps: float, *, folder_fps: float | None = None,
                video_rate: bool = False, nominal_fps: float | None = None,
                by_time: bool = False) -> FrameSource:
    """Open the source ``text`` (see the module docstring) resampled to ``fps``, a near-rate
    source taken at ``nominal_fps`` (default ``fps``) unless ``by_time``; a folder's frames
    at ``folder_fps`` (default ``nominal_fps``). With ``video_rate``, each output frame comes
    with the source frames read since the one before (``(index, frame, fresh)``)."""
    if not (math.isfinite(fps) and fps > 0):
        raise ConfigError(f"source {text!r}: frame rate must be positive, got {fps}")
    nominal = None if by_time else (nominal_fps or fps)
    folder_fps = folder_fps or nominal_fps or fps
    kind = source_kind(text)
    if kind in ("file", "folder"):
        if video_rate:
            return _open_reader_video_rate(text, kind, fps, folder_fps, nominal)
        return _open_reader(text, kind, fps, folder_fps, nominal)
    return _open_capture(text, kind, fps, video_rate, nominal)


def _open_video(text: str, fps: float | None, folder_fps: float,
                nominal: float | None) -> Any:
    from actrec.io.video import open_video

    try:
        return open_video(Path(text).expanduser(), fps=fps, folder_fps=folder_fps,
                          nominal_fps=nominal)
    except DataError as exc:
        raise DataError(f"source {text!r}: {exc}") from None


def _open_reader_video_rate(text: str, kind: str, fps: float, folder_fps: float,
                            nominal: float | None) -> FrameSource:
    """A file or folder read frame by frame at its own rate, bundled per output frame at
    ``fps`` (the output frames ``actrec extract`` reads: ``open_video``'s ``source_indices``)."""
    paired = _open_video(text, fps, folder_fps, nominal)  # the source frame each output takes
    own = _open_video(text, None, folder_fps, nominal)  # every source frame, in order
    wanted = paired.source_indices  # int64 [T], non-decreasing

    def frames() -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        last, image = -1, None  # the source frame (and image) of the previous output frame
        for i, src in enumerate(wanted.tolist()):
            if src > last:
                fresh = _read(own, range(last + 1, src + 1), text)
                image = fresh[-1]
            else:  # this output frame repeats the previous one's source frame
                fresh = np.zeros((0, *own.size, 3), np.uint8)
            yield i, image, fresh
            last = src

    return FrameSource(text, kind, paired.fps, False, paired.num_frames, frames())


def _read(reader: Any, indices: range, text: str) -> np.ndarray:
    try:
        batch = reader.read(np.arange(indices.start, indices.stop))
    except DataError as exc:
        raise DataError(f"source {text!r}: {exc}") from None
    if batch.shape[0] != len(indices):
        raise DataError(f"source {text!r}: decoded {batch.shape[0]} frames for "
                        f"{indices.start}..{indices.stop - 1} (truncated file?)")
    return batch


def _open_reader(text: str, kind: str, fps: float, folder_fps: float,
                 nominal: float | None) -> FrameSource:
    reader = _open_video(text, fps, folder_fps, nominal)

    def frames() -> Iterator[tuple[int, np.ndarray]]:
        for start in range(0, reader.num_frames, _CHUNK):
            stop = min(start + _CHUNK, reader.num_frames)
            try:
                batch = reader.read(np.arange(start, stop))
            except DataError:
                # answer the frames before the bad one, then fail with the bad one's message
                for i in range(start, stop):
                    try:
                        frame = reader.read([i])[0]
                    except DataError as exc:
                        raise DataError(f"source {text!r}: {exc}") from None
                    yield i, frame
                continue  # every frame of the chunk decoded on its own
            if batch.shape[0] != stop - start:
                raise DataError(f"source {text!r}: decoded {batch.shape[0]} frames for "
                                f"{start}..{stop - 1} (truncated file?)")
            for i, frame in enumerate(batch):
                yield start + i, frame

    return FrameSource(text, kind, reader.fps, False, reader.num_frames, frames())


def _open_capture(text: str, kind: str, fps: float, video_rate: bool = False,
                  nominal: float | None = None) -> FrameSource:
    import cv2

    target: Any = int(text) if kind == "camera" else text
    capture = cv2.VideoCapture(target)
    if not capture.isOpened():
        capture.release()
        what = "camera" if kind == "camera" else "stream"
        raise DataError(f"source {text!r}: cannot open this {what} (OpenCV's VideoCapture "
                        f"failed; is the {'device connected' if kind == 'camera' else 'URL right and the server up'}?)")
    source_fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
    if not (math.isfinite(source_fps) and 0 < source_fps < 1000):
        source_fps = fps  # a rate the source does not report: its frames are taken as they come
    from actrec.io.video import same_rate

    if nominal is not None and same_rate(source_fps, nominal):
        source_fps = nominal  # 29.97 read as 30, as actrec extract reads files
    ratio = source_fps / fps
    count = capture.get(cv2.CAP_PROP_FRAME_COUNT) if kind == "url" else 0
    announced = int(count) if count and math.isfinite(count) and count > 0 else None

    def frames() -> Iterator[tuple[int, np.ndarray]]:
        wanted, k = 0, 0  # next output frame; index of the next source frame
        fresh: list[np.ndarray] = []  # video_rate: source frames not yet handed over
        try:
            while True:
                ok, image = capture.read()
                if not ok or image is None:
                    if k == 0:
                        raise DataError(f"source {text!r}: opened, but no frame could be read")
                    if announced is not None and announced - k > max(1, announced // 100):
                        raise DataError(f"source {text!r}: the stream stopped after {k} of the "
                                        f"{announced} frames it announced")
                    return  # the stream ended
                if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
                    raise DataError(f"source {text!r}: frame {k} is {image.dtype} "
                                    f"{tuple(image.shape)}, expected an 8-bit colour image")
                rgb = np.ascontiguousarray(image[:, :, ::-1]) if video_rate else None
                if video_rate:
                    fresh.append(rgb)
                while math.floor(wanted * ratio + 0.5) == k:  # the rule of resample_indices
                    if rgb is None:
                        rgb = np.ascontiguousarray(image[:, :, ::-1])
                    if video_rate:  # the source frames since the last output frame
                        yield wanted, rgb, np.stack(fresh) if fresh else \
                            np.zeros((0, *rgb.shape), np.uint8)
                        fresh.clear()
                    else:
                        yield wanted, rgb
                    wanted += 1
                k += 1
        finally:
            capture.release()

    return FrameSource(text, kind, fps, kind == "camera", None, frames(), capture.release)


class PacedFrames:
    """The frames of a source handed over at its own pace by a background thread, keeping only
    the newest one: a frame not taken before the next arrives is counted in ``dropped``.
    ``take(timeout)`` returns the source's item, ``(index, frame)`` (``(index, frame,
    fresh)``: a dropped item's fresh source frames are dropped with it), ``None`` when none
    arrived in time, and raises ``StopIteration`` at the end (or the source's ``DataError``).

    ``started=False`` holds the clock until ``start()``: a paced file hands over its first
    frame and waits there (frame i is then due ``i / fps`` after ``start()``); a live source
    keeps only its newest frame meanwhile, and frames replaced before ``start()`` are counted
    in ``skipped`` (start-up), not in ``dropped``. ``peek`` shows the frame waiting without
    taking it."""

    def __init__(self, source: FrameSource, *, pace: bool, started: bool = True) -> None:
        self.source = source
        self.dropped = 0
        self.skipped = 0
        self._pace = pace
        self._slot: tuple[Any, ...] | None = None  # a source's item: (index, frame[, fresh])
        self._arrived = 0.0  # when the item in the slot arrived (perf_counter)
        self.waited = 0.0  # seconds the last item taken sat in the slot
        self._done = False
        self._error: BaseException | None = None
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._go = threading.Event()
        if started:
            self._go.set()
        self._thread = threading.Thread(target=self._run, name=f"actrec-live-{source.name}",
                                        daemon=True)
        self._thread.start()

    def _run(self) -> None:
        clock: float | None = None  # when frame 0 is due, once the clock runs
        try:
            for item in self.source.frames():
                index = item[0]
                if self._stop.is_set():
                    return
                if self._pace and self._go.is_set():  # a file at its rate: i due at i / fps
                    if clock is None:
                        clock = time.perf_counter() - index / self.source.fps
                    delay = clock + index / self.source.fps - time.perf_counter()
                    if delay > 0 and self._stop.wait(delay):
                        return
                with self._cond:
                    if self._slot is not None:
                        if self._go.is_set():
                            self.dropped += 1
                        else:
                            self.skipped += 1
                    self._slot = item
                    self._arrived = time.perf_counter()
                    self._cond.notify_all()
                if self._pace and clock is None:  # the first frame waits for the clock
                    while not self._go.wait(0.05):
                        if self._stop.is_set():
                            return
                    clock = time.perf_counter() - index / self.source.fps
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            self._error = exc
        finally:
            with self._cond:
                self._done = True
                self._cond.notify_all()

    def start(self) -> None:
        """Start the clock (see the class docstring); nothing if it runs. A frame waiting
        in the slot counts as arriving now (``waited``)."""
        with self._cond:
            if not self._go.is_set():
                self._arrived = time.perf_counter()
            self._go.set()

    def peek(self, timeout: float | None = None) -> tuple[int, np.ndarray] | None:
        """The frame ``take`` would return, left in place (may still be replaced by a newer
        one); ``None`` if none came within ``timeout`` seconds (``None``: wait); at the end
        ``StopIteration`` (or the source's error), as ``take``."""
        with self._cond:
            if self._slot is None and not self._done:
                self._cond.wait_for(lambda: self._slot is not None or self._done, timeout)
            if self._slot is not None:
                return self._slot
            if self._done:
                if self._error is not None:
                    raise self._error
                raise StopIteration
            return None

    def take(self, timeout: float | None = None) -> tuple[Any, ...] | None:
        """The newest item (see the class docstring); ``waited`` is then the seconds it sat
        in the slot between its arrival (or the clock's start) and now."""
        with self._cond:
            if self._slot is None and not self._done:
                self._cond.wait(timeout)
            if self._slot is not None:
                item, self._slot = self._slot, None
                self.waited = max(0.0, time.perf_counter() - self._arrived)
                return item
            if self._done:
                if self._error is not None:
                    raise self._error
                raise StopIteration
            return None

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.source.close()
