"""Where live records go (sinks of ``actrec.live.run_live``): JSON lines, videos with the
predicted action drawn on them, and a rich live panel.

JSON lines: one complete line per record, written with a single call and flushed, so a reader
(or a crash) never sees half a line and what was written stays valid. Videos: one file per
stream (``OUT.mp4`` for one stream, ``OUT-<stream>.mp4`` for several), written with OpenCV at
the run's frame rate and finished when the stream closes, whatever made it close.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import IO, Any

import numpy as np

from actrec.errors import ConfigError

__all__ = ["DisplaySink", "JsonLinesSink", "VideoSink", "video_paths"]


class JsonLinesSink:
    """Writes every frame, event and status record as one JSON line to ``out`` (frames only
    with ``frames=True``, events with ``events=True``)."""

    def __init__(self, out: IO[str], *, frames: bool = True, events: bool = True,
                 close: bool = False) -> None:
        self._out = out
        self._frames = frames
        self._events = events
        self._close = close

    def _write(self, record: dict[str, Any]) -> None:
        from actrec.runs import json_safe

        self._out.write(json.dumps(json_safe(record), allow_nan=False) + "\n")
        self._out.flush()

    def on_frame(self, stream: int, frame: np.ndarray, record: dict[str, Any]) -> None:
        if self._frames:
            self._write(record)

    def on_event(self, record: dict[str, Any]) -> None:
        if self._events:
            self._write(record)

    def on_status(self, record: dict[str, Any]) -> None:
        self._write(record)

    def close(self) -> None:
        if self._close:
            self._out.close()


def video_paths(out: Path, streams: int) -> list[Path]:
    """``out`` for one stream; ``<stem>-<i><suffix>`` beside it for each of several."""
    out = Path(out)
    if streams == 1:
        return [out]
    return [out.with_name(f"{out.stem}-{i}{out.suffix}") for i in range(streams)]


class VideoSink:
    """Writes each stream's frames with its predicted action and probability drawn on them
    (``cv2.putText``) to ``video_paths(out, streams)``, at ``fps``; refuses paths that exist
    (``ConfigError``), so no earlier video is overwritten, and folders that do not. Frames
    narrower than ``MIN_WIDTH`` are enlarged by a whole factor (nearest pixel) so that the
    label stays readable on small videos. A frame never answered (dropped under
    ``--realtime``) is filled with the last one written, so that frame ``i`` of the video is
    at ``i / fps`` as the records' ``time`` says."""

    MIN_WIDTH = 320

    def __init__(self, out: Path, streams: int, fps: float) -> None:
        self.paths = video_paths(out, streams)
        existing = [p for p in self.paths if p.exists()]
        if existing:
            raise ConfigError(f"--write-video: {existing[0]} exists; give a new file name")
        if self.paths[0].suffix.lower() not in (".mp4", ".avi", ".mov", ".mkv"):
            raise ConfigError(f"--write-video: expected a .mp4, .avi, .mov or .mkv file, got "
                              f"{self.paths[0].name}")
        if not self.paths[0].parent.is_dir():
            raise ConfigError(f"--write-video: folder {self.paths[0].parent} does not exist")
        self.fps = fps
        self._writers: dict[int, Any] = {}
        self._last: dict[int, tuple[int, np.ndarray]] = {}  # stream -> (frame, image written)

    def on_frame(self, stream: int, frame: np.ndarray, record: dict[str, Any]) -> None:
        import cv2

        factor = -(-self.MIN_WIDTH // frame.shape[1])  # ceil; 1 for frames wide enough
        if factor > 1:
            frame = cv2.resize(frame, (frame.shape[1] * factor, frame.shape[0] * factor),
                               interpolation=cv2.INTER_NEAREST)
        writer = self._writers.get(stream)
        if writer is None:
            h, w = frame.shape[:2]
            path = self.paths[stream]
            fourcc = "MJPG" if path.suffix.lower() == ".avi" else "mp4v"
            writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), self.fps, (w, h))
            if not writer.isOpened():
                raise ConfigError(f"--write-video: OpenCV cannot write {path}")
            self._writers[stream] = writer
        image = np.ascontiguousarray(frame[:, :, ::-1])  # RGB -> BGR
        score = record.get("score")
        text = record["label"] + (f" {score:.2f}" if score is not None else "")
        scale = max(0.3, image.shape[1] / 640)
        org = (4, max(12, int(20 * scale)))
        cv2.putText(image, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0),
                    max(1, int(3 * scale)), cv2.LINE_AA)
        cv2.putText(image, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255),
                    max(1, int(scale)), cv2.LINE_AA)
        index = int(record.get("frame", 0))
        last = self._last.get(stream)
        if last is not None and last[1].shape == image.shape:
            for _ in range(last[0] + 1, index):  # dropped frames: the last one again
                writer.write(last[1])
        writer.write(image)
        self._last[stream] = (index, image)

    def on_status(self, record: dict[str, Any]) -> None:
        writer = self._writers.pop(int(record["stream"]), None)
        self._last.pop(int(record["stream"]), None)
        if writer is not None:
            writer.release()

    def close(self) -> None:
        for writer in self._writers.values():
            writer.release()
        self._writers.clear()


class DisplaySink:
    """A rich live panel on stderr: per stream its action, confidence, latency, frames/s,
    frames and drops, refreshed a few times a second."""

    def __init__(self, sources: list[str], title: str = "actrec live") -> None:
        from rich.live import Live

        from actrec.cli.common import stderr_console

        self._rows: dict[int, dict[str, Any]] = {
            i: {"source": s, "label": "-", "score": None, "latency": None, "frames": 0,
                "dropped": 0, "status": "starting", "t0": None} for i, s in enumerate(sources)}
        self._title = title
        self._live = Live(self._table(), console=stderr_console(), refresh_per_second=4,
                          transient=False)
        self._live.start()
        self._last = 0.0

    def _table(self):
        from rich.table import Table

        table = Table(title=self._title)
        for col in ("stream", "source", "action", "conf.", "latency ms", "fps", "frames",
                    "dropped", "status"):
            table.add_column(col, justify="right" if col not in ("source", "action",
                                                                 "status") else "left")
        now = time.perf_counter()
        for i, row in self._rows.items():
            rate = (row["frames"] / (now - row["t0"])) if row["t0"] and now > row["t0"] else None
            table.add_row(str(i), row["source"], row["label"],
                          "-" if row["score"] is None else f"{row['score']:.2f}",
                          "-" if row["latency"] is None else f"{row['latency']:.1f}",
                          "-" if rate is None else f"{rate:.1f}", str(row["frames"]),
                          str(row["dropped"]), row["status"])
        return table

    def on_frame(self, stream: int, frame: np.ndarray, record: dict[str, Any]) -> None:
        row = self._rows[stream]
        if row["t0"] is None:
            row["t0"] = time.perf_counter()
        row.update(label=record["label"], score=record.get("score"),
                   latency=record.get("latency_ms"), frames=row["frames"] + 1, status="running")
        now = time.perf_counter()
        if now - self._last > 0.2:
            self._last = now
            self._live.update(self._table())

    def on_status(self, record: dict[str, Any]) -> None:
        row = self._rows[int(record["stream"])]
        row.update(status=record["status"], dropped=record.get("dropped", 0))
        self._live.update(self._table())

    def close(self) -> None:
        self._live.update(self._table())
        self._live.stop()
