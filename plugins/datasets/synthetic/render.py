"""Drawing synthetic kitchen frames and writing them as mp4 (OpenCV, 'mp4v').

A frame is the kitchen's textured wall, shaken by camera jitter; during an action, a blob of
the action's colour moving in the action's pattern with a dark tool attached; during
background, a skin-coloured idle hand drifting near the bottom; sometimes a grey occluder;
then Gaussian pixel noise. Colours, centres, amplitudes and phases vary per segment and per
participant, so a single frame is ambiguous between actions that differ only in motion.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .grammar import ACTIONS, KitchenStyle, Segment

__all__ = ["Participant", "wall", "render_frames", "write_mp4"]

_SKIN = np.array([225.0, 180.0, 150.0])


@dataclass(frozen=True)
class Participant:
    """A person's habits: pace (duration scale), motion amplitude, colour cast, hand side."""

    speed: float
    amplitude: float
    cast: tuple[float, float, float]
    side: float  # -1 left-handed, +1 right-handed: shifts where they work

    @classmethod
    def sample(cls, rng: np.random.Generator) -> Participant:
        return cls(speed=float(rng.uniform(0.8, 1.25)),
                   amplitude=float(rng.uniform(0.8, 1.2)),
                   cast=tuple(float(c) for c in rng.normal(0.0, 12.0, 3)),
                   side=float(rng.choice([-1.0, 1.0])))


def wall(style: KitchenStyle, size: int) -> np.ndarray:
    """The kitchen's background texture, float32 ``[2S, 2S, 3]`` (oversized so that camera
    jitter can crop it)."""
    n = 2 * size
    y, x = np.mgrid[0:n, 0:n].astype(np.float32)
    base = np.array(style.wall, dtype=np.float32)
    period = max(4, size // 6)
    if style.texture == "tiles":
        mask = ((x % period) < 1) | ((y % period) < 1)
        shade = np.where(mask, -50.0, 0.0)
    elif style.texture == "stripes":
        shade = 25.0 * np.sin(2 * np.pi * (x + y) / period)
    else:  # dots
        shade = np.where(((x % period) - period / 2) ** 2 + ((y % period) - period / 2) ** 2
                         < (period / 4) ** 2, -45.0, 0.0)
    return np.clip(base[None, None, :] + shade[..., None], 0, 255).astype(np.float32)


def _motion(kind: str, phase: float) -> tuple[float, float, float]:
    """Offset (dx, dy) in [-1, 1] and radius scale of a blob at ``phase`` (radians)."""
    s, c = math.sin(phase), math.cos(phase)
    if kind == "left-right":
        return s, 0.0, 1.0
    if kind == "up-down":
        return 0.0, s, 1.0
    if kind == "circle":
        return c, s, 1.0
    if kind == "diagonal":
        return 0.7 * s, 0.7 * s, 1.0
    return 0.0, 0.0, 1.0 + 0.45 * s  # pulse


def render_frames(segments: list[Segment], actions: tuple[str, ...], style: KitchenStyle,
                  person: Participant, *, size: int, fps: float, noise: float,
                  rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Frames uint8 RGB ``[S, S, 3]`` for ``segments``, one per frame, in time order."""
    import cv2

    texture = wall(style, size)
    scale = size / 64.0
    jitter = np.zeros(2)
    shift = np.array(style.palette_shift, dtype=np.float64) + np.array(person.cast)
    occluder: tuple[int, int, int, int, int] | None = None  # x, y, w, h, frames left
    for seg in segments:
        # Per-segment variation: where and how big the motion is, its phase, colour jitter.
        centre = np.array([size / 2 + person.side * rng.uniform(0, 8) * scale,
                           size / 2 + rng.uniform(-6, 6) * scale])
        amp = person.amplitude * rng.uniform(10, 16) * scale
        phase0 = rng.uniform(0, 2 * math.pi)
        radius = rng.uniform(5, 8) * scale
        if seg.action >= 0:
            act = ACTIONS[actions[seg.action]]
            colour = np.clip(np.array(act.colour) + shift + rng.normal(0, 10, 3), 0, 255)
            omega = 2 * math.pi / (act.period * fps)
        for k in range(seg.length):
            # Camera shake: a damped random walk of amplitude ~ style.jitter pixels.
            jitter = 0.8 * jitter + rng.normal(0, style.jitter * scale * 0.6, 2)
            jx, jy = np.clip(np.round(jitter), -size // 2, size // 2).astype(int)
            x0, y0 = size // 2 + jx, size // 2 + jy
            frame = texture[y0:y0 + size, x0:x0 + size].copy()
            if seg.action >= 0:
                dx, dy, rs = _motion(act.motion, phase0 + omega * k)
                cx, cy = centre + amp * np.array([dx, dy]) + (jx, jy)
                r = max(2, int(round(radius * rs)))
                cv2.circle(frame, (int(round(cx)), int(round(cy))), r, colour.tolist(), -1,
                           cv2.LINE_AA)
                ang = math.radians(act.tool_angle)
                tx, ty = cx + 2.2 * r * math.cos(ang), cy - 2.2 * r * math.sin(ang)
                cv2.line(frame, (int(round(cx)), int(round(cy))), (int(round(tx)), int(round(ty))),
                         (40.0, 40.0, 45.0), max(1, int(round(2 * scale))), cv2.LINE_AA)
            else:
                drift = 3 * scale * math.sin(phase0 + 0.05 * k)
                hx = size / 2 + person.side * 10 * scale + drift + jx
                hy = size * 0.8 + jy
                cv2.circle(frame, (int(round(hx)), int(round(hy))), int(round(radius)),
                           (_SKIN + shift).clip(0, 255).tolist(), -1, cv2.LINE_AA)
            # Occluders come and go: a grey box over part of the scene for a while.
            if occluder is None and rng.random() < 0.01:
                w, h = (int(rng.integers(size // 6, size // 3)) for _ in range(2))
                occluder = (int(rng.integers(0, size - w)), int(rng.integers(0, size - h)), w, h,
                            int(rng.integers(int(fps // 2), int(2 * fps))))
            if occluder is not None:
                ox, oy, w, h, left = occluder
                frame[oy:oy + h, ox:ox + w] = 110.0
                occluder = (ox, oy, w, h, left - 1) if left > 1 else None
            if noise > 0:
                frame += rng.normal(0.0, noise * 255.0, frame.shape).astype(np.float32)
            yield np.clip(frame, 0, 255).astype(np.uint8)


def write_mp4(path: Path, frames: Iterator[np.ndarray], *, fps: float, size: int) -> int:
    """Write RGB frames ``[S, S, 3]`` to ``path`` atomically (a ``.part.mp4`` file renamed into
    place); returns the number of frames written.

    On any failure no ``.part.mp4`` is left behind; a target that cannot be replaced (a folder
    in its place) or a writer OpenCV cannot open is a ``DataError`` naming the path.
    """
    import cv2

    from actrec.errors import DataError

    path = Path(path)
    part = path.with_name(path.stem + ".part.mp4")
    writer = cv2.VideoWriter(str(part), cv2.VideoWriter_fourcc(*"mp4v"), float(fps),
                             (size, size))
    count = 0
    try:
        if not writer.isOpened():
            raise DataError(f"{part}: OpenCV cannot open an mp4v writer there")
        try:
            for frame in frames:
                writer.write(np.ascontiguousarray(frame[:, :, ::-1]))  # RGB -> BGR
                count += 1
        finally:
            writer.release()
        try:
            os.replace(part, path)
        except OSError as exc:
            raise DataError(f"{path}: cannot write the video there ({exc.strerror})") from None
    except BaseException:
        with contextlib.suppress(OSError):  # interrupted or failed: no partial file stays
            part.unlink(missing_ok=True)
        raise
    return count
