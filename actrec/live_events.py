"""Action events from per-frame predictions: ``start`` and ``end`` when the action changes.

A run of frames with one predicted label becomes an action once it has lasted
``min_duration`` seconds (frame ``i`` covers ``[i / fps, (i + 1) / fps)``); a shorter run is
flicker and belongs to the action before it (or, at a stream's start, to the first action that
lasts). When a new action is confirmed, the previous one ends where the new one starts. So with
``min_duration = 0`` the events are exactly the predicted segments: an action starts at its
first frame's time and ends at the time after its last frame. A start is reported when it is
confirmed, ``min_duration`` after it happened at most; the end of the last action when the
stream closes. Times are seconds on the stream's frame clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from actrec.errors import ConfigError

__all__ = ["Event", "EventTracker", "parse_duration"]


@dataclass(frozen=True)
class Event:
    """``kind`` ``"start"`` (``time`` = ``start``) or ``"end"`` (with ``start``, ``end``)."""

    kind: str
    stream: int
    label: str
    start: float
    end: float | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"event": self.kind, "stream": self.stream, "label": self.label,
                               "time": round(self.start if self.end is None else self.end, 6),
                               "start": round(self.start, 6)}
        if self.end is not None:
            out["end"] = round(self.end, 6)
            out["duration"] = round(self.end - self.start, 6)
        return out


def parse_duration(text: str | float, option: str = "--min-duration") -> float:
    """Seconds from ``0.5s``, ``500ms`` or a plain number of seconds; ``ConfigError`` naming
    ``option`` otherwise (negative included)."""
    raw = str(text).strip().lower()
    scale = 1.0
    if raw.endswith("ms"):
        raw, scale = raw[:-2], 1e-3
    elif raw.endswith("s"):
        raw = raw[:-1]
    try:
        value = float(raw) * scale
    except ValueError:
        raise ConfigError(f"{option}: expected a duration such as 0.5s, 500ms or 0.5, got "
                          f"{text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise ConfigError(f"{option}: expected a duration >= 0, got {text!r}")
    return value


class EventTracker:
    """Turns one stream's predicted labels into events (see the module docstring)."""

    def __init__(self, stream: int, fps: float, min_duration: float = 0.0) -> None:
        self.stream = stream
        self.fps = float(fps)
        self.min_duration = float(min_duration)
        self.current: str | None = None
        self._current_start = 0.0
        self._run_label: str | None = None
        self._run_start = 0.0
        self._last_end = 0.0

    def update(self, label: str, frame: int) -> list[Event]:
        """Events caused by frame ``frame`` (index on the stream's clock) being ``label``."""
        t = frame / self.fps
        self._last_end = t + 1.0 / self.fps
        if label != self._run_label:
            self._run_label, self._run_start = label, t
        if label == self.current:
            return []
        # a tolerance of a millionth of a frame for the float sum of frame durations
        if self._last_end - self._run_start + 1e-6 / self.fps < self.min_duration:
            return []
        events = []
        start = self._run_start if self.current is not None else 0.0
        if self.current is not None:
            events.append(Event("end", self.stream, self.current, self._current_start, start))
        self.current, self._current_start = label, start
        events.append(Event("start", self.stream, label, start))
        return events

    def close(self) -> list[Event]:
        """The end of the current action, at the time after the last frame seen."""
        if self.current is None:
            return []
        event = Event("end", self.stream, self.current, self._current_start, self._last_end)
        self.current = None
        return [event]
