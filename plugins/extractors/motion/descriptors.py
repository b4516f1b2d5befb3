"""Weight-free motion descriptors: a grid of orientation and magnitude histograms per frame.

Each frame is turned grey and resized, its shorter side to ``resize`` and the longer in
proportion (so that directions are those of the video); a motion map over a window of
``window`` frames (see ``fields``: causal, or centred with ``centred=true``) is cut into a
``grid`` x ``grid`` array of cells (row-major), and each cell gives, in this order:

* ``bins`` orientation bins: the sum of the per-pixel weight of the pixels whose direction falls
  in the bin, divided by the cell's pixel count (so a still cell is all zeros and the values
  are comparable across grid sizes). Bin ``k`` is centred on ``k * 360 / bins`` degrees
  (``k * 180 / bins`` for unsigned directions), so motion along an axis never straddles a
  bin edge. Directions are counter-clockwise from the image's x axis with y pointing UP:
  0 degrees is rightwards, 90 upwards.
* ``mag_bins`` magnitude bins: the fraction of the cell's pixels in each magnitude bin.

So ``dim = grid**2 * (bins + mag_bins)``. What direction, weight and magnitude are:

* ``flow``: Farneback optical flow, averaged over the window's ``window - 1`` flow fields
  (one field for the default ``window = 2``). Direction: the flow's (signed). Weight and
  magnitude: its length in pixels of the resized frame per frame. Magnitude bins: below 0.25,
  then doubling (0.25-0.5, 0.5-1, ...), the last open-ended.
* ``mhi``: the motion history image (Davis & Bradski) of the window: a pixel whose grey level
  changed by more than ``threshold`` between two consecutive frames of the window holds the
  recency of its latest change, ``(j + 1) / (window - 1)`` for the ``j``-th difference (oldest
  ``j = 0``; the newest is 1), else 0. Direction: the gradient of the MHI, which points from
  older to newer motion, i.e. the way things moved (signed); it is used only where the pixel and
  its four neighbours all moved, since the MHI's outline is an edge against still pixels, not a
  motion. Weight: the gradient's length. Magnitude bins: the recency levels, ``mag_bins`` equal
  parts of (0, 1]; still pixels are counted in none.
* ``framediff``: multi-frame differencing: the mean absolute grey difference of the window's
  ``window - 1`` consecutive frame pairs, / 255. Direction: the gradient of that map, unsigned
  (a difference image does not say which way an edge moved). Weight: the gradient's length.
  Magnitude bins: below 1/64, then doubling.

Gradients are central differences, zero on the one-pixel border. The extractor keeps the last
frame and the last ``window - 2`` fields between batches, so its output does not depend on how
the frames are batched; ``lookahead`` is 0, or ``window // 2`` when ``centred``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from actrec.errors import ConfigError
from actrec.plugin_api import FeatureExtractor, PluginConfig

from .fields import (
    difference_mean,
    difference_total,
    history_levels,
    recency,
    sliding_windows,
    window_slices,
)

__all__ = ["FlowDescriptor", "FrameDiffDescriptor", "MHIDescriptor", "MotionDescriptor"]


@dataclass(frozen=True)
class _Options(PluginConfig):
    grid: int = 4
    bins: int = 8
    mag_bins: int = 4
    resize: int = 64
    window: int = 5
    centred: bool = False  # centre the window on the frame: looks window // 2 frames ahead
    fps: float | None = None  # resample the video to this rate first; None: its own


class MotionDescriptor(FeatureExtractor):
    """Orientation and magnitude histograms of a motion map on a grid of cells (see the module
    docstring); subclasses say which motion map."""

    kind: ClassVar[str]  # the fields the motion map is built from: "flow" or "diff"
    signed: ClassVar[bool]  # directions over 360 degrees (True) or 180 (False)
    Config: ClassVar[type[PluginConfig]] = _Options
    chunk = 16  # frames computed together (speed only: features do not depend on it)
    dense = 0.5  # directions of every pixel once this share moves (speed only, as chunk)

    def __init__(self, config: PluginConfig | None = None) -> None:
        super().__init__(config)
        cfg = self.config
        where = f"extractor '{self.name}'"
        for key, low in (("grid", 1), ("bins", 1), ("mag_bins", 1), ("window", 2)):
            if getattr(cfg, key) < low:
                raise ConfigError(f"option '{key}' for {where} must be >= {low}, "
                                  f"got {getattr(cfg, key)}")
        if cfg.resize < max(8, 2 * cfg.grid):
            raise ConfigError(f"option 'resize' for {where} must be at least "
                              f"{max(8, 2 * cfg.grid)} (8 pixels, and 2 per grid cell), "
                              f"got {cfg.resize}")
        if cfg.fps is not None and not cfg.fps > 0:
            raise ConfigError(f"option 'fps' for {where} must be positive, got {cfg.fps}")

    @property
    def lookahead(self) -> int:  # type: ignore[override]
        return self.config.window // 2 if self.config.centred else 0

    def dim(self) -> int:
        cfg = self.config
        return cfg.grid * cfg.grid * (cfg.bins + cfg.mag_bins)

    def extract(self, batches: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """Features float32 ``[B', dim]`` per input batch ``[B, H, W, 3]`` uint8 RGB; one row
        per frame in total (a centred extractor's rows lag ``lookahead`` frames behind)."""
        cfg = self.config
        yield from sliding_windows(batches, kind=self.kind, window=cfg.window, size=cfg.resize,
                                   centred=cfg.centred, compute=self._describe,
                                   chunk=self.chunk)

    # ------------------------------------------------------------------ per method

    def motion(self, fields: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Per window: the direction as a vector (x right, y UP) ``[B, H, W]`` twice, the
        weight ``[B, H, W]`` and the magnitude bin ``[B, H, W]`` (int, -1: in no bin), from
        ``fields`` (see ``sliding_windows``)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ shared

    def _describe(self, fields: np.ndarray) -> np.ndarray:
        cfg = self.config
        dx, dy, weight, mag_bin = self.motion(fields)
        b = weight.shape[0]
        cells, bins, mbins = cfg.grid ** 2, cfg.bins, cfg.mag_bins
        per_cell, base = self._layout(*weight.shape)  # [C], [B, H, W] frame * cells + cell

        # Directions only where there is weight when most pixels are still (as in most real
        # video), else everywhere: a pixel without weight adds an exact 0.0 to its bin, so
        # both ways give the same sums.
        dx, dy, weight, keys = dx.ravel(), dy.ravel(), weight.ravel(), base.ravel()
        if np.count_nonzero(weight) < self.dense * weight.size:
            moving = np.flatnonzero(weight)
            dx, dy, weight, keys = dx[moving], dy[moving], weight[moving], keys[moving]
        theta = np.arctan2(dy, dx)
        span = 2 * np.pi if self.signed else np.pi
        # np.mod(theta, span) without its slow general path: arctan2 lies in [-pi, pi], so a
        # negative angle gains one span; an angle that lands on span itself is bin 0 either
        # way after the final modulo.
        theta += (theta < 0) * theta.dtype.type(span)
        obin = np.floor(theta / (span / bins) + 0.5).astype(np.int64) % bins
        orient = np.bincount(keys * bins + obin, weights=weight.astype(np.float64),
                             minlength=b * cells * bins)
        orient = orient.reshape(b, cells, bins) / per_cell[None, :, None]

        # Magnitude bins shifted by one, so that the pixels in no bin (-1) count in a slot of
        # their own, dropped: one pass, no mask.
        key = base * (mbins + 1)
        key += mag_bin
        key += 1
        mags = np.bincount(key.ravel(), minlength=b * cells * (mbins + 1))
        mags = mags.reshape(b, cells, mbins + 1)[:, :, 1:] / per_cell[None, :, None]
        return np.concatenate([orient, mags], axis=2).reshape(b, -1).astype(np.float32)

    def _layout(self, b: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
        """Pixels per cell (float64 ``[C]``) and ``frame * cells + cell`` of every pixel
        (int64 ``[B, H, W]``, row-major cells), kept for the last few batch shapes."""
        cache = self.__dict__.setdefault("_layout_cache", {})
        if (b, h, w) not in cache:
            g = self.config.grid
            rows, cols = np.arange(h) * g // h, np.arange(w) * g // w
            cell = rows[:, None] * g + cols[None, :]  # [h, w]
            per_cell = np.bincount(cell.ravel(), minlength=g * g).astype(np.float64)
            if len(cache) >= 4:
                cache.pop(next(iter(cache)))
            cache[(b, h, w)] = (per_cell, np.arange(b)[:, None, None] * (g * g) + cell[None])
        return cache[(b, h, w)]


def _gradient(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Central differences of ``[B, H, W]`` (x right, y down), zero on the border."""
    gx = np.zeros_like(image)
    gy = np.zeros_like(image)
    gx[:, 1:-1, 1:-1] = (image[:, 1:-1, 2:] - image[:, 1:-1, :-2]) / 2
    gy[:, 1:-1, 1:-1] = (image[:, 2:, 1:-1] - image[:, :-2, 1:-1]) / 2
    return gx, gy


def _hypot(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``np.hypot`` of float32 arrays, as the C library's ``hypotf`` computes it: in double
    (where the squares of floats are exact, so the sum is rounded once), rounded to float32;
    several times faster than calling ``hypotf`` per element."""
    import cv2

    shape = x.shape
    flat = (-1, shape[-1]) if x.ndim > 1 else (1, -1)
    out = cv2.magnitude(x.reshape(flat).astype(np.float64), y.reshape(flat).astype(np.float64))
    return out.astype(np.float32).reshape(shape)


def _doubling_bins(values: np.ndarray, first_edge: float, bins: int) -> np.ndarray:
    """Bin 0 below ``first_edge``, then one bin per doubling; the last bin is open-ended."""
    with np.errstate(divide="ignore"):
        k = np.floor(np.log2(np.maximum(values, 1e-30) / first_edge)) + 1
    return np.clip(np.where(values < first_edge, 0, k), 0, bins - 1).astype(np.int64)


class FlowDescriptor(MotionDescriptor):
    """Histograms of Farneback optical flow (see the module docstring)."""

    name = "flow"
    kind = "flow"
    signed = True

    @dataclass(frozen=True)
    class Config(_Options):
        window: int = 2  # one flow field: frame t-1 -> t (centred: t -> t+1)

    def motion(self, fields):
        w1 = self.config.window - 1
        flow = sum(f for _, f in window_slices(fields, self.config.window)) / w1  # [B,S,S,2]
        u, v = flow[..., 0], flow[..., 1]
        mag = np.hypot(u, v)
        return u, -v, mag, _doubling_bins(mag, 0.25, self.config.mag_bins)


class MHIDescriptor(MotionDescriptor):
    """Histograms of the motion history image's gradient and recency (module docstring)."""

    name = "mhi"
    kind = "diff"
    signed = True

    @dataclass(frozen=True)
    class Config(_Options):
        threshold: float = 16.0  # grey levels (0..255) a pixel must change by to count

    def motion(self, fields):
        cfg = self.config
        newest = recency(fields, cfg.window, cfg.threshold)  # [B, H, W]: 0..window - 1
        levels = history_levels(cfg.window)
        mhi = levels[newest]
        gx, gy = _gradient(mhi)
        moved = newest > 0
        inside = np.zeros_like(moved)  # the pixel and its four neighbours all moved
        inside[:, 1:-1, 1:-1] = (moved[:, 1:-1, 1:-1] & moved[:, :-2, 1:-1] & moved[:, 2:, 1:-1]
                                 & moved[:, 1:-1, :-2] & moved[:, 1:-1, 2:])
        weight = np.where(inside, _hypot(gx, gy), 0)
        # The magnitude bin of each level, computed as it would be on the MHI's pixels; the
        # pixels that did not move are in no bin.
        level = np.minimum(np.ceil(levels * cfg.mag_bins - 1e-6).astype(np.int64) - 1,
                           cfg.mag_bins - 1)
        level[0] = -1
        return gx, -gy, weight, level[newest]


class FrameDiffDescriptor(MotionDescriptor):
    """Histograms of multi-frame differencing (module docstring)."""

    name = "framediff"
    kind = "diff"
    signed = False

    def motion(self, fields):
        window = self.config.window
        total = difference_total(fields, window)  # whole grey levels
        diff = difference_mean(total, window)
        gx, gy = _gradient(diff)
        # The mean difference takes one value per whole total: its magnitude bin is a table
        # look-up, the table computed from those values as it would be per pixel.
        table = self.__dict__.get("_bin_table")
        if table is None or table[0] != window:
            levels = difference_mean(np.arange((window - 1) * 255 + 1, dtype=np.float32), window)
            table = self.__dict__["_bin_table"] = (
                window, _doubling_bins(levels, 1 / 64, self.config.mag_bins))
        return gx, -gy, _hypot(gx, gy), table[1][total.astype(np.intp)]
