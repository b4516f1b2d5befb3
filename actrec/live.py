"""Live recognition of many sources at once: ``run_live``.

Every source (``actrec.live_sources``) is read in its own background thread; each tick takes
the next frame of every running stream (by default, as fast as they decode) or the newest frame
of each (``realtime``: files played at their rate, cameras as they come; frames replaced
before they were taken are counted as dropped), steps all of them in one batch
(``Recognizer.push_many``, one state per stream) and hands each stream's record to the sinks
(``actrec.live_output``): JSON lines, a video with the action drawn on it, a live panel.

A stream that ends, or fails (a source that cannot be opened, a stream that stops, a frame
that cannot be decoded or extracted), is closed with its own status and message; the others
go on. Records (``to_dict`` ready):

* per frame: ``stream``, ``source``, ``frame`` (index at the run's fps), ``time``, ``label``,
  ``index``, ``score``, ``top``, ``latency_ms`` and ``timings_ms`` (``decode``, ``extract``,
  ``step``; decode is the time the frame was waited for, after the first),
* per event (``actrec.live_events``): ``event`` ``start``/``end``, ``stream``, ``label``,
  ``time``, ``start`` (and ``end``, ``duration``),
* per stream at its close: ``status`` ``ended``/``failed``, ``frames``, ``dropped``,
  ``error`` (failed only).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from actrec.errors import ActrecError, ConfigError, DataError

if TYPE_CHECKING:  # pragma: no cover
    from actrec.recognizer import Recognizer

__all__ = ["LiveReport", "StreamStatus", "run_live"]

_IDLE_WAIT = 0.002  # seconds a real-time tick waits when no stream has a new frame


@dataclass
class StreamStatus:
    """How one stream went: frames answered, frames dropped, its end and the per-frame
    latency (milliseconds, whole pipeline)."""

    stream: int
    source: str
    frames: int = 0
    dropped: int = 0
    status: str = "running"  # "ended" | "failed"
    error: str | None = None
    latencies: list[float] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"stream": self.stream, "source": self.source,
                               "status": self.status, "frames": self.frames,
                               "dropped": self.dropped}
        if self.latencies:
            lat = np.asarray(self.latencies)
            out["latency_ms"] = {"median": round(float(np.median(lat)), 3),
                                 "p99": round(float(np.percentile(lat, 99)), 3)}
        if self.error is not None:
            out["error"] = self.error
        return out


@dataclass
class LiveReport:
    """Every stream's status, and the wall time of the whole session."""

    streams: list[StreamStatus]
    seconds: float

    @property
    def failed(self) -> list[StreamStatus]:
        return [s for s in self.streams if s.status == "failed"]

    def to_dict(self) -> dict[str, Any]:
        return {"seconds": round(self.seconds, 3), "streams": [s.to_dict() for s in self.streams]}


class _Stream:
    """One source being read: its frames (prefetched or paced), events and status."""

    def __init__(self, index: int, name: str, fps: float, *, realtime: bool,
                 folder_fps: float | None, min_duration: float) -> None:
        from actrec.live_events import EventTracker

        self.index = index
        self.status = StreamStatus(index, name)
        self.tracker = EventTracker(index, fps, min_duration)
        self.source = None
        self.paced = None
        self._iter: Iterator | None = None
        self._fps = fps
        self._realtime = realtime
        self._folder_fps = folder_fps

    def open(self) -> None:
        from actrec.extract_video import prefetch
        from actrec.live_sources import PacedFrames, open_source

        self.source = open_source(self.status.source, self._fps, folder_fps=self._folder_fps)
        if self._realtime or self.source.live:
            self.paced = PacedFrames(self.source, pace=self._realtime and not self.source.live)
        else:
            self._iter = prefetch(self.source.frames(), 4)

    def take(self, wait: bool) -> tuple[int, np.ndarray] | None:
        """The next frame (fast mode; blocks) or the newest one (paced; None if none yet).
        ``StopIteration`` at the end; the source's ``ActrecError`` when it fails."""
        if self.paced is not None:
            item = self.paced.take(None if wait else 0.0)
            self.status.dropped = self.paced.dropped
            return item
        assert self._iter is not None
        return next(self._iter)

    def close(self) -> None:
        if self.paced is not None:
            self.paced.close()
            self.status.dropped = self.paced.dropped
        if self._iter is not None:
            self._iter.close()  # stops the prefetch thread
        if self.source is not None:
            self.source.close()


def run_live(recognizer: Recognizer, sources: Sequence[str], *, sinks: Sequence[Any] = (),
             realtime: bool = False, min_duration: float = 0.0,
             folder_fps: float | None = None, max_frames: int | None = None,
             threads: int | None = 1) -> LiveReport:
    """Recognise ``sources`` (one stream each; ``recognizer`` must have as many streams) until
    every stream has ended or failed (or answered ``max_frames`` frames). Each sink gets
    ``on_frame(stream, frame, record)``, ``on_event(record)``, ``on_status(record)`` (its end)
    and ``close()``, each where it has that method. See the module docstring for the records.
    Never raises for one stream's failure: it is in the report (and the status records).
    ``threads``: torch's intra-op threads while the session runs (restored after; None: as
    they are). One by default: a step of a few streams gains nothing from more, and they
    would spin against the decoding threads (4 streams stepped 6x slower with 2 on 2 cores)."""
    import torch

    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(max(1, int(threads)))
    try:
        return _run(recognizer, sources, sinks, realtime, min_duration, folder_fps, max_frames)
    finally:
        torch.set_num_threads(before)


def _run(recognizer, sources, sinks, realtime, min_duration, folder_fps, max_frames
         ) -> LiveReport:
    if len(sources) != recognizer.streams:
        raise ConfigError(f"{len(sources)} source(s) but the recogniser has "
                          f"{recognizer.streams} stream(s)")
    if max_frames is not None and max_frames < 1:
        raise ConfigError(f"--max-frames: expected an integer >= 1, got {max_frames}")
    started = time.perf_counter()
    streams = [_Stream(i, str(src), recognizer.fps, realtime=realtime, folder_fps=folder_fps,
                       min_duration=min_duration) for i, src in enumerate(sources)]
    running: list[_Stream] = []
    recognizer.reset()

    def call(method: str, *args: Any) -> None:
        for sink in sinks:
            fn = getattr(sink, method, None)
            if fn is not None:
                fn(*args)

    def finish(stream: _Stream, error: BaseException | None = None) -> None:
        for event in stream.tracker.close():
            call("on_event", event.to_dict())
        stream.close()
        if error is None:
            stream.status.status = "ended"
        else:
            stream.status.status = "failed"
            stream.status.error = _message(error, stream.status.source)
        call("on_status", stream.status.to_dict())
        if stream in running:
            running.remove(stream)

    try:
        for stream in streams:
            try:
                stream.open()
                running.append(stream)
            except ActrecError as exc:
                finish(stream, exc)
        while running:
            frames: list[np.ndarray | None] = [None] * recognizer.streams
            index: dict[int, int] = {}
            decode_ms: dict[int, float] = {}
            got = False
            for stream in running.copy():  # finish() removes from running
                t0 = time.perf_counter()
                try:
                    item = stream.take(wait=False)
                except StopIteration:
                    finish(stream)
                    continue
                except (ActrecError, OSError, RuntimeError, ValueError) as exc:
                    finish(stream, exc)
                    continue
                if item is None:
                    continue
                got = True
                index[stream.index], frames[stream.index] = item
                decode_ms[stream.index] = (time.perf_counter() - t0) * 1e3
            if not got:
                if running:
                    time.sleep(_IDLE_WAIT)
                continue
            errors: dict[int, ActrecError] = {}
            predictions = recognizer.push_many(frames, errors=errors)
            for stream in running.copy():  # finish() removes from running
                s = stream.index
                if s in errors:
                    finish(stream, errors[s])
                    continue
                prediction = predictions[s]
                if prediction is None:
                    continue
                timings = {"decode": decode_ms[s], **prediction.timings}
                record = prediction.to_dict()
                record.update({"frame": index[s], "time": round(index[s] / recognizer.fps, 6),
                               "source": stream.status.source,
                               "latency_ms": round(sum(timings.values()), 3),
                               "timings_ms": {k: round(v, 3) for k, v in timings.items()}})
                stream.status.frames += 1
                stream.status.latencies.append(sum(timings.values()))
                call("on_frame", s, frames[s], record)
                for event in stream.tracker.update(prediction.label, index[s]):
                    call("on_event", event.to_dict())
                if max_frames is not None and stream.status.frames >= max_frames:
                    finish(stream)
    finally:
        for stream in running.copy():  # finish() removes from running
            finish(stream, DataError("stopped"))
        call("close")
    return LiveReport([s.status for s in streams], time.perf_counter() - started)


def _message(error: BaseException, source: str) -> str:
    """One line naming the source (which ``actrec.live_sources`` errors already do)."""
    text = str(error) or type(error).__name__
    if isinstance(error, ActrecError):
        return text if repr(source) in text or source in text else f"source {source!r}: {text}"
    return f"source {source!r}: {type(error).__name__}: {text}"
