"""Live recognition of many sources at once: ``run_live``.

Every source (``actrec.live_sources``) is read in its own background thread; each tick takes
the next frame of every running stream (by default, as fast as they decode) or the newest frame
of each (``realtime``: files played at their rate, cameras as they come; frames replaced
before they were taken are counted as dropped), steps all of them in one batch
(``Recognizer.push_many``, one state per stream) and hands each stream's record to the sinks
(``actrec.live_output``): JSON lines, a video with the action drawn on it, a live panel.

Start-up: before any clock starts, the recogniser is warmed up on each stream's first frame
(``Recognizer.warm_up``: first-call costs paid on throwaway state), and only then do paced
files start playing; so a slow first call is not counted as dropped frames (camera frames
replaced meanwhile are counted apart, ``startup_skipped``), while later drops are.

A run trained with ``--delay K`` answers frame t once frame t+K was taken: each record is for
the frame it labels (``frame``, ``time``; the image the sinks get is that frame's) and says
which frame had been taken when it was answered (``seen``); when a stream closes, for whatever
reason, its last K frames are answered as at a video's end (``Recognizer.flush``).

A stream that ends, or fails (a source that cannot be opened, a stream that stops, a frame
that cannot be decoded or extracted), is closed with its own status and message; the others
go on. Records (``to_dict`` ready):

* per frame: ``stream``, ``source``, ``frame`` (index at the run's fps), ``seen`` (index of
  the newest frame taken when it was answered: ``frame`` + the run's delay, the last frame
  for a closing stream's flushed answers), ``time``, ``label``, ``index``, ``score``,
  ``top``, ``latency_ms`` and ``timings_ms`` (``queue``, ``decode``, ``extract``, ``step`` of
  the tick that answered: ``queue``, for sources read at their pace (``realtime``, cameras),
  is the time the frame waited after it arrived, while the loop was busy, so that the sum is
  the time from its arrival to its answer; decode is the time the frame was waited for,
  after the first),
* per event (``actrec.live_events``): ``event`` ``start``/``end``, ``stream``, ``label``,
  ``time``, ``start`` (and ``end``, ``duration``),
* per stream at its close: ``status`` ``ended``/``failed``/``stopped``, ``frames``,
  ``dropped``, ``startup_skipped``, ``error`` (failed only).

Stopping (Ctrl-C, SIGTERM): in the main thread, while their handlers are Python's own,
``run_live`` takes both signals itself and stops between two ticks, so no record is cut in
two (a second Ctrl-C stops at once). Every running stream is closed as ``stopped`` (a delayed
run's owed frames answered, its last action ended, its video finished, its status written),
the sinks are closed, and ``LiveStopped`` (a ``KeyboardInterrupt``; ``signum``: the signal)
is raised with the report so far. A ``KeyboardInterrupt`` or ``SystemExit`` raised mid-tick
(other handlers) closes the streams the same way.
"""

from __future__ import annotations

import collections
import contextlib
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from actrec.errors import ActrecError, ConfigError, DataError

if TYPE_CHECKING:  # pragma: no cover
    from actrec.recognizer import Recognizer

__all__ = ["LiveReport", "LiveStopped", "StreamStatus", "run_live"]

_IDLE_WAIT = 0.002  # seconds a real-time tick waits when no stream has a new frame
_FIRST_WAIT = 5.0  # seconds the warm-up waits for paced streams' first frames, all together


@dataclass
class StreamStatus:
    """How one stream went: frames answered, frames dropped (arrived while the model was busy),
    frames skipped at start-up (a live source's frames replaced before its clock started), its
    end and the per-frame latency (milliseconds, whole pipeline)."""

    stream: int
    source: str
    frames: int = 0
    dropped: int = 0
    startup_skipped: int = 0
    status: str = "running"  # "ended" | "failed" | "stopped" (Ctrl-C, SIGTERM)
    error: str | None = None
    latencies: list[float] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"stream": self.stream, "source": self.source,
                               "status": self.status, "frames": self.frames,
                               "dropped": self.dropped,
                               "startup_skipped": self.startup_skipped}
        if self.latencies:
            lat = np.asarray(self.latencies)
            out["latency_ms"] = {"median": round(float(np.median(lat)), 3),
                                 "p99": round(float(np.percentile(lat, 99)), 3)}
        if self.error is not None:
            out["error"] = self.error
        return out


@dataclass
class LiveReport:
    """Every stream's status, the wall time of the whole session and, of it, the
    milliseconds the start-up warm-up took (``Recognizer.warm_up``) and the seconds from the
    clocks' start (sources open, warm-up done) to the last answer: the time the frames took
    (not opening nor closing the sources), what a rate in frames per second divides by
    (``frames_per_second``)."""

    streams: list[StreamStatus]
    seconds: float
    warmup_ms: float = 0.0
    running_seconds: float = 0.0

    def frames_per_second(self, stream: int) -> float:
        """Frames ``stream`` answered per second of ``running_seconds`` (0 when none ran)."""
        return self.streams[stream].frames / self.running_seconds if self.running_seconds \
            else 0.0

    @property
    def failed(self) -> list[StreamStatus]:
        return [s for s in self.streams if s.status == "failed"]

    def to_dict(self) -> dict[str, Any]:
        return {"seconds": round(self.seconds, 3), "warmup_ms": round(self.warmup_ms, 3),
                "running_seconds": round(self.running_seconds, 3),
                "streams": [s.to_dict() for s in self.streams]}


class LiveStopped(KeyboardInterrupt):
    """``run_live`` was stopped (Ctrl-C, SIGTERM: ``signum``) after closing every stream as
    ``stopped``: ``report`` holds what was done until then (every record was handed to the
    sinks)."""

    def __init__(self, report: LiveReport, signum: int) -> None:
        super().__init__("live recognition stopped")
        self.report = report
        self.signum = signum


@contextlib.contextmanager
def _stop_requests() -> Iterator[list[int]]:
    """While the block runs, SIGINT and SIGTERM (where their handlers are Python's defaults,
    in the main thread) append their number to the list yielded instead of interrupting
    whatever runs; a second SIGINT raises ``KeyboardInterrupt`` at once."""
    import signal

    requested: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield requested
        return

    def request(signum: int, frame: Any) -> None:
        if signum == signal.SIGINT and signal.SIGINT in requested:
            raise KeyboardInterrupt
        requested.append(signum)

    from actrec.signal_handlers import handlers_swapped

    defaults = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: signal.SIG_DFL}
    with handlers_swapped({sig: request for sig, default in defaults.items()
                           if signal.getsignal(sig) is default}):
        yield requested


class _Stop(Exception):
    """A stop request taken between two ticks (``_stop_requests``)."""


class _Stream:
    """One source being read: its frames (prefetched or paced), events and status, and the
    frames pushed but not answered yet (a delayed run's: ``(push, index, image)``, oldest
    first; ``push`` counts the stream's pushes from 0, as ``Prediction.frame`` does)."""

    def __init__(self, index: int, name: str, fps: float, *, realtime: bool,
                 folder_fps: float | None, min_duration: float, video_rate: bool,
                 nominal_fps: float, by_time: bool) -> None:
        from actrec.live_events import EventTracker

        self.index = index
        self.status = StreamStatus(index, name)
        self.tracker = EventTracker(index, fps, min_duration)
        self.source = None
        self.paced = None
        self.taken = 0  # frames taken and pushed
        self.queued_ms: float | None = None  # paced: ms the last frame taken waited for us
        self.pending: collections.deque[tuple[int, int, np.ndarray]] = collections.deque()
        self._iter: Iterator | None = None
        self._head: tuple[int, np.ndarray] | None = None  # a peeked frame (fast mode)
        self._fps = fps
        self._realtime = realtime
        self._folder_fps = folder_fps
        self._video_rate = video_rate  # items are (index, frame, fresh source frames)
        self._nominal = nominal_fps, by_time  # how extraction counted a file's frames

    def open(self) -> None:
        from actrec.extract_video import prefetch
        from actrec.live_sources import PacedFrames, open_source

        self.source = open_source(self.status.source, self._fps, folder_fps=self._folder_fps,
                                  video_rate=self._video_rate, nominal_fps=self._nominal[0],
                                  by_time=self._nominal[1])
        if self._realtime or self.source.live:  # the clock waits for start()
            self.paced = PacedFrames(self.source, pace=self._realtime and not self.source.live,
                                     started=False)
        else:
            self._iter = prefetch(self.source.frames(), 4)

    def first(self, timeout: float) -> np.ndarray | None:
        """The first frame, left to be taken (a paced source: None if none came within
        ``timeout`` seconds). ``StopIteration`` for a source with no frame; the source's
        ``ActrecError`` when it fails."""
        if self.paced is not None:
            item = self.paced.peek(timeout)
            return None if item is None else item[1]
        assert self._iter is not None
        if self._head is None:
            self._head = next(self._iter)
        return self._head[1]

    def start(self) -> None:
        """Start the stream's clock (paced sources; see ``PacedFrames``)."""
        if self.paced is not None:
            self.paced.start()

    def take(self, wait: bool) -> tuple[int, np.ndarray] | None:
        """The next frame (fast mode; blocks) or the newest one (paced; None if none yet).
        ``StopIteration`` at the end; the source's ``ActrecError`` when it fails."""
        if self.paced is not None:
            item = self.paced.take(None if wait else 0.0)
            self.status.dropped = self.paced.dropped
            self.status.startup_skipped = self.paced.skipped
            self.queued_ms = self.paced.waited * 1e3
            return item
        if self._head is not None:
            item, self._head = self._head, None
            return item
        assert self._iter is not None
        return next(self._iter)

    def close(self) -> threading.Thread | None:
        """Stop reading: the counts are taken now, and the reading threads are stopped and
        the source released by a thread of their own (returned, to be joined once every
        stream is done), so that closing one stream never stalls the others: a decoding
        thread can take a tenth of a second to notice (it stalled every other stream's next
        answer that long, and under --realtime dropped their frames)."""
        if self.paced is not None:
            self.status.dropped = self.paced.dropped
            self.status.startup_skipped = self.paced.skipped
        parts = [p for p in (self.paced, self._iter, self.source) if p is not None]
        self.paced = self._iter = self.source = None
        if not parts:
            return None

        def close_all() -> None:
            for part in parts:  # paced frames or the prefetch first, then the source
                part.close()

        closer = threading.Thread(target=close_all, name=f"actrec-live-close-{self.index}",
                                  daemon=True)
        closer.start()
        return closer


def run_live(recognizer: Recognizer, sources: Sequence[str], *, sinks: Sequence[Any] = (),
             realtime: bool = False, min_duration: float = 0.0,
             folder_fps: float | None = None, max_frames: int | None = None,
             threads: int | None = 1) -> LiveReport:
    """Recognise ``sources`` (one stream each; ``recognizer`` must have as many streams) until
    every stream has ended or failed (or taken ``max_frames`` frames, each then answered).
    Each sink gets ``on_frame(stream, frame, record)`` (``frame``: the image of the frame the
    record labels), ``on_event(record)``, ``on_status(record)`` (its end)
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
        with _stop_requests() as requested:
            return _run(recognizer, sources, sinks, realtime, min_duration, folder_fps,
                        max_frames, requested)
    finally:
        torch.set_num_threads(before)


def _run(recognizer, sources, sinks, realtime, min_duration, folder_fps, max_frames,
         requested: list[int]) -> LiveReport:
    if len(sources) != recognizer.streams:
        raise ConfigError(f"{len(sources)} source(s) but the recogniser has "
                          f"{recognizer.streams} stream(s)")
    if max_frames is not None and max_frames < 1:
        raise ConfigError(f"--max-frames: expected an integer >= 1, got {max_frames}")
    started = time.perf_counter()
    streams = [_Stream(i, str(src), recognizer.fps, realtime=realtime, folder_fps=folder_fps,
                       min_duration=min_duration, video_rate=recognizer.video_rate,
                       nominal_fps=recognizer.label_fps, by_time=recognizer.labels_by_time)
               for i, src in enumerate(sources)]
    running: list[_Stream] = []
    recognizer.reset()

    def call(method: str, *args: Any) -> None:
        for sink in sinks:
            fn = getattr(sink, method, None)
            if fn is not None:
                fn(*args)

    def answer(stream: _Stream, prediction: Any, seen: int, decode_ms: float | None,
               queue_ms: float | None = None) -> None:
        """Hand the prediction for the stream's oldest pending frame to the sinks."""
        _, index, image = stream.pending.popleft()
        timings = ({} if queue_ms is None else {"queue": queue_ms}) | \
            ({} if decode_ms is None else {"decode": decode_ms}) | prediction.timings
        record = prediction.to_dict()
        record.update({"frame": index, "seen": seen,
                       "time": round(index / recognizer.fps, 6),
                       "source": stream.status.source,
                       "latency_ms": round(sum(timings.values()), 3),
                       "timings_ms": {k: round(v, 3) for k, v in timings.items()}})
        stream.status.frames += 1
        stream.status.latencies.append(sum(timings.values()))
        last_answer[0] = time.perf_counter()
        call("on_frame", stream.index, image, record)
        for event in stream.tracker.update(prediction.label, index):
            call("on_event", event.to_dict())

    def finish(stream: _Stream, error: BaseException | None = None, *,
               stopped: bool = False) -> None:
        if stream.pending:  # a delayed run's last frames, answered as at a video's end
            seen = stream.pending[-1][1]
            for prediction in recognizer.flush(stream.index):
                # a stop between a push and its record leaves the model a push ahead: only
                # answers for the pushes recorded here are written, each with its own frame
                if stream.pending and stream.pending[0][0] == prediction.frame:
                    answer(stream, prediction, seen, None)
        recognizer.reset(stream.index)
        for event in stream.tracker.close():
            call("on_event", event.to_dict())
        closer = stream.close()
        if closer is not None:
            closers.append(closer)
        if stopped:
            stream.status.status = "stopped"
        elif error is None:
            stream.status.status = "ended"
        else:
            stream.status.status = "failed"
            stream.status.error = _message(error, stream.status.source)
        call("on_status", stream.status.to_dict())
        if stream in running:
            running.remove(stream)

    warmup_ms = 0.0
    stop: BaseException | None = None  # Ctrl-C or SIGTERM's SystemExit
    clock: float | None = None  # when the streams' clocks started
    last_answer: list[float | None] = [None]  # when the last record was handed over
    closers: list[threading.Thread] = []  # streams' sources being closed (_Stream.close)
    try:
        for stream in streams:
            try:
                stream.open()
                running.append(stream)
            except ActrecError as exc:
                finish(stream, exc)
        # Warm up on each stream's first frame before any clock starts (module docstring).
        firsts: list[np.ndarray | None] = [None] * recognizer.streams
        deadline = time.perf_counter() + _FIRST_WAIT  # a silent stream holds no other long
        for stream in running.copy():  # finish() removes from running
            try:
                firsts[stream.index] = stream.first(max(0.0, deadline - time.perf_counter()))
            except StopIteration:
                finish(stream)
            except (ActrecError, OSError, RuntimeError, ValueError) as exc:
                finish(stream, exc)
        warmup_ms = recognizer.warm_up(firsts)
        for stream in running:
            stream.start()
        clock = time.perf_counter()
        while running:
            if requested:  # Ctrl-C or SIGTERM: stop here, between two ticks
                raise _Stop
            frames: list[np.ndarray | None] = [None] * recognizer.streams
            fresh: list[np.ndarray | None] = [None] * recognizer.streams  # video-rate runs
            index: dict[int, int] = {}
            decode_ms: dict[int, float] = {}
            queue_ms: dict[int, float | None] = {}
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
                index[stream.index], frames[stream.index] = item[0], item[1]
                if len(item) > 2:
                    fresh[stream.index] = item[2]
                decode_ms[stream.index] = (time.perf_counter() - t0) * 1e3
                queue_ms[stream.index] = stream.queued_ms
            if not got:
                if running:
                    time.sleep(_IDLE_WAIT)
                continue
            errors: dict[int, ActrecError] = {}
            predictions = recognizer.push_many(frames, errors=errors, fresh=fresh)
            for stream in running.copy():  # finish() removes from running
                s = stream.index
                if s in errors:
                    finish(stream, errors[s])
                    continue
                if s not in index:
                    continue
                stream.taken += 1
                stream.pending.append((stream.taken - 1, index[s], frames[s]))
                prediction = predictions[s]
                if prediction is not None:  # None: a delayed run owes this frame's answer
                    answer(stream, prediction, index[s], decode_ms[s], queue_ms[s])
                if max_frames is not None and stream.taken >= max_frames:
                    finish(stream)
    except _Stop:
        stop = _Stop()
    except (KeyboardInterrupt, SystemExit) as exc:
        stop = exc
        raise
    finally:
        for stream in running.copy():  # finish() removes from running
            finish(stream, None if stop is not None else DataError("stopped"),
                   stopped=stop is not None)
        call("close")
        for closer in closers:  # the sources' reading threads, stopped in the background
            closer.join(timeout=10)
        report = LiveReport([s.status for s in streams], time.perf_counter() - started,
                            warmup_ms, 0.0 if clock is None or last_answer[0] is None
                            else last_answer[0] - clock)
        if isinstance(stop, (KeyboardInterrupt, _Stop)):
            import signal

            raise LiveStopped(report, requested[0] if requested else signal.SIGINT) from None
    return report


def _message(error: BaseException, source: str) -> str:
    """One line naming the source (which ``actrec.live_sources`` errors already do)."""
    text = str(error) or type(error).__name__
    if isinstance(error, ActrecError):
        return text if repr(source) in text or source in text else f"source {source!r}: {text}"
    return f"source {source!r}: {type(error).__name__}: {text}"
