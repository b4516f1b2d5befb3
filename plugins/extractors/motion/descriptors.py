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

from ..scratch import Scratch
from .fields import (
    check_window_rate,
    difference_mean,
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
    fps: float | None = None  # read the video at this rate; None: the dataset's label rate
    # the frames a window counts: the label frames, or the video's own (a row kept per label
    # frame; see actrec.extract_video)
    window_rate: str = "labels"


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
        check_window_rate(cfg, where)

    @property
    def lookahead(self) -> int:  # type: ignore[override]
        return self.config.window // 2 if self.config.centred else 0

    @property
    def video_rate(self) -> bool:
        """Whether the windows run over the video's own frames (``window_rate=video``)."""
        return self.config.window_rate == "video"

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
        ``fields`` (see ``sliding_windows``). They may be the extractor's work arrays
        (``scratch``), overwritten by its next call: copy what is kept."""
        raise NotImplementedError

    # ------------------------------------------------------------------ shared

    def _histogram_inputs(self, fields: np.ndarray
                          ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``motion``'s four maps, or with the last replaced by the pixels already counted
        per (window, cell, magnitude bin), float ``[B, cells, mag_bins]``."""
        return self.motion(fields)

    def _describe(self, fields: np.ndarray) -> np.ndarray:
        cfg = self.config
        dx, dy, weight, mag_bin = self._histogram_inputs(fields)
        b = weight.shape[0]
        cells, bins, mbins = cfg.grid ** 2, cfg.bins, cfg.mag_bins
        per_cell = self._layout(*weight.shape)[0]  # [C]
        work = self._work()
        # Where every sum of weights is exact (``_most_pixels``), an angle that lands on the
        # full turn counts in a slot of its own, added to bin 0 afterwards, instead of being
        # moved there pixel by pixel: the same sums.
        fold = per_cell.max() <= self._most_pixels()
        slots = bins + 1 if fold else bins
        keys = self._scaled_base(*weight.shape, slots, 0)  # (frame * cells + cell) * slots

        # Directions only where there is weight when most pixels are still (as in most real
        # video), else everywhere: a pixel without weight adds an exact 0.0 to its bin, so
        # both ways give the same sums.
        dx, dy, weight, keys = dx.ravel(), dy.ravel(), weight.ravel(), keys.ravel()
        # (counted on the weights' bits: several times faster than on floats, and the same
        # count but for -0.0, which a length never is; it only decides the speed anyway)
        bits = weight.view(np.dtype(f"u{weight.itemsize}"))
        if np.count_nonzero(bits) < self.dense * weight.size:
            moving = np.flatnonzero(weight)
            dx, dy, weight, keys = dx[moving], dy[moving], weight[moving], keys[moving]
        n = weight.size
        obin = _direction_bins(dx, dy, self.signed, bins, work, wrap=not fold)
        okey = np.add(keys, obin, out=work.get("okey", (n,), np.int64))
        weights = work.get("weights", (n,), np.float64)
        np.copyto(weights, weight)
        orient = np.bincount(okey, weights=weights, minlength=b * cells * slots)
        orient = orient.reshape(b, cells, slots)
        if fold:
            orient[:, :, 0] += orient[:, :, bins]
        orient = orient[:, :, :bins] / per_cell[None, :, None]

        if mag_bin.shape == (b, cells, mbins):  # counted already
            mags = mag_bin / per_cell[None, :, None]
        else:
            # Magnitude bins shifted by one, so that the pixels in no bin (-1) count in a slot
            # of their own, dropped: one pass, no mask.
            key = np.add(self._scaled_base(*mag_bin.shape, mbins + 1, 1),
                         mag_bin, out=work.get("mkey", mag_bin.shape, np.int64))
            mags = np.bincount(key.ravel(), minlength=b * cells * (mbins + 1))
            mags = mags.reshape(b, cells, mbins + 1)[:, :, 1:] / per_cell[None, :, None]
        return np.concatenate([orient, mags], axis=2).reshape(b, -1).astype(np.float32)

    def _most_pixels(self) -> float:
        """The most pixels a cell may hold for every sum of this method's weights to be exact
        in float64 (then their order does not matter); 0: not known to be exact (flow:
        any float32 length)."""
        return 0.0

    def _scaled_base(self, b: int, h: int, w: int, scale: int, add: int) -> np.ndarray:
        """``(frame * cells + cell) * scale + add`` of every pixel (int64 ``[B, H, W]``, see
        ``_layout``), kept for the last few shapes."""
        cache = self.__dict__.setdefault("_scaled_cache", {})
        key = (b, h, w, scale, add)
        if key not in cache:
            if len(cache) >= 8:
                cache.pop(next(iter(cache)))
            cache[key] = self._layout(b, h, w)[1].astype(np.int64) * scale + add
        return cache[key]

    def _key_base16(self, b: int, h: int, w: int, scale: int,
                    inner: bool = False) -> np.ndarray:
        """``_scaled_base(b, h, w, scale, 0)`` (``inner``: inside the border) as contiguous
        uint16, kept for the last few shapes."""
        cache = self.__dict__.setdefault("_key16_cache", {})
        key = (b, h, w, scale, inner)
        if key not in cache:
            if len(cache) >= 4:
                cache.pop(next(iter(cache)))
            base = self._scaled_base(b, h, w, scale, 0)
            cache[key] = np.ascontiguousarray(base[:, 1:-1, 1:-1] if inner else base,
                                              dtype=np.uint16)
        return cache[key]

    def _work(self) -> Scratch:
        """This extractor's work arrays (see ``scratch``), made on first use."""
        work = self.__dict__.get("_scratch")
        if work is None:
            work = self.__dict__["_scratch"] = Scratch()
        return work

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


def _direction_bins(dx: np.ndarray, dy: np.ndarray, signed: bool, bins: int,
                    work: Scratch, wrap: bool = True) -> np.ndarray:
    """The orientation bin (int64, ``[N]``, work array ``obin``) of each direction vector
    ``(dx[i], dy[i])`` (1-D arrays of one float dtype): bin ``k`` is centred on
    ``k * span / bins``, ``span`` 360 degrees when ``signed``, else 180. ``wrap=False``
    leaves the angles that round to a full turn at ``bins`` (the caller adds them to 0)."""
    n = dx.shape[0]
    theta = np.arctan2(dy, dx, out=work.get("theta", (n,), dy.dtype))
    span = 2 * np.pi if signed else np.pi
    # np.mod(theta, span) without its slow general path: arctan2 lies in [-pi, pi], so a
    # negative angle gains one span (a masked add is several times slower).
    negative = np.less(theta, 0, out=work.get("negative", (n,), np.bool_))
    theta += np.multiply(negative, theta.dtype.type(span),
                         out=work.get("gain", (n,), theta.dtype))
    # Bin k is centred on k * span / bins: floor(theta / width + 0.5), in [0, bins] since
    # theta is in [0, span]; modulo bins, an angle that lands on span itself is bin 0.
    np.divide(theta, span / bins, out=theta)
    theta += 0.5
    obin = work.get("obin", (n,), np.int64)
    np.copyto(obin, theta, casting="unsafe")  # truncation: floor, as theta + 0.5 > 0
    if wrap:
        np.putmask(obin, np.equal(obin, bins, out=negative), 0)
    return obin


def _gradient(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Central differences of ``[B, H, W]`` (x right, y down), zero on the border."""
    gx = np.zeros_like(image)
    gy = np.zeros_like(image)
    gx[:, 1:-1, 1:-1] = (image[:, 1:-1, 2:] - image[:, 1:-1, :-2]) / 2
    gy[:, 1:-1, 1:-1] = (image[:, 2:, 1:-1] - image[:, :-2, 1:-1]) / 2
    return gx, gy


def _gradient_into(image: np.ndarray, work: Scratch) -> tuple[np.ndarray, np.ndarray]:
    """``_gradient(image)`` computed into work arrays ``gx`` and ``gy``: each difference over
    whole rows or columns (contiguous runs), then the border set to zero (the work arrays
    hold the last call's values), then halved (exactly, as divided by 2)."""
    gx = work.get("gx", image.shape, image.dtype)
    gy = work.get("gy", image.shape, image.dtype)
    np.subtract(image[:, :, 2:], image[:, :, :-2], out=gx[:, :, 1:-1])
    np.subtract(image[:, 2:], image[:, :-2], out=gy[:, 1:-1])
    for g in (gx, gy):
        g[:, 0] = 0
        g[:, -1] = 0
        g[:, :, 0] = 0
        g[:, :, -1] = 0
        g *= image.dtype.type(0.5)
    return gx, gy


def _hypot_into(x: np.ndarray, y: np.ndarray, work: Scratch) -> np.ndarray:
    """``_hypot(x, y)`` computed in work arrays (the result is work array ``hypot``)."""
    import cv2

    flat = (-1, x.shape[-1])
    x64 = work.get("x64", x.shape, np.float64)
    y64 = work.get("y64", x.shape, np.float64)
    np.copyto(x64, x)
    np.copyto(y64, y)
    length = cv2.magnitude(x64.reshape(flat), y64.reshape(flat),
                           work.get("length", x64.reshape(flat).shape, np.float64))
    out = work.get("hypot", x.shape, np.float32)
    np.copyto(out, length.reshape(x.shape))
    return out


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
        work = self._work()
        newest = recency(fields, cfg.window, cfg.threshold)  # [B, H, W]: 0..window - 1
        levels = history_levels(cfg.window)
        # (take's mode "clip": the indices are valid, and "raise" would buffer the output)
        mhi = levels.take(newest, out=work.get("mhi", newest.shape, levels.dtype), mode="clip")
        gx, gy = _gradient_into(mhi, work)
        moved = np.greater(newest, 0, out=work.get("moved", newest.shape, np.bool_))
        inside = work.get("inside", newest.shape, np.bool_)  # the pixel and its four
        inside[...] = False  # neighbours all moved
        core = inside[:, 1:-1, 1:-1]
        np.logical_and(moved[:, 1:-1, 1:-1], moved[:, :-2, 1:-1], out=core)
        core &= moved[:, 2:, 1:-1]
        core &= moved[:, 1:-1, :-2]
        core &= moved[:, 1:-1, 2:]
        weight = _hypot_into(gx, gy, work)
        weight *= inside  # a finite length times 1 or 0: np.where(inside, length, 0)
        return (gx, np.negative(gy, out=work.get("up", gy.shape, gy.dtype)), weight,
                self._level_bins().take(newest, out=work.get("mag_bin", newest.shape, np.int64),
                                        mode="clip"))

    def _level_bins(self) -> np.ndarray:
        """The magnitude bin of each recency (int64 ``[window]``), computed as it would be on
        the MHI's pixels; -1 (no bin) for the pixels that did not move."""
        cfg = self.config
        levels = history_levels(cfg.window)
        level = np.minimum(np.ceil(levels * cfg.mag_bins - 1e-6).astype(np.int64) - 1,
                           cfg.mag_bins - 1)
        level[0] = -1
        return level

    # ------------------------------------------------------------------ by table look-up
    #
    # The MHI holds one of ``window`` levels per pixel, so its central differences, and with
    # them each pixel's direction, weight and bins, are one of a few combinations of the
    # recencies around it: computed once (by the very operations ``motion`` and ``_describe``
    # apply per pixel), then counted per cell. The weighted sums are exact either way (see
    # ``_tables``), so the features are the same bit for bit.

    def _describe(self, fields: np.ndarray) -> np.ndarray:
        tables = self._tables()
        b, h, w = fields.shape[0] - (self.config.window - 2), *fields.shape[1:]
        per_cell = self._layout(b, h, w)[0]
        if tables is None or per_cell.max() > tables[3]:
            return super()._describe(fields)
        orient_of, level_of, pairs, _ = tables
        cfg = self.config
        work = self._work()
        newest = recency(fields, cfg.window, cfg.threshold)  # [B, H, W]: 0..window - 1
        cells, bins, mbins = cfg.grid ** 2, cfg.bins, cfg.mag_bins
        levels = cfg.window
        off = levels - 1
        # Per inner pixel: 1 + (x index * span + y index) where it and its four neighbours
        # moved, else 0 (no weight); index = newer side - older side + off, in 0..2 * off.
        # uint8/uint16 arithmetic wraps, but the result is in range, so it is exact.
        inner = (b, h - 2, w - 2)
        dtype = np.uint8 if pairs <= 256 else np.uint16
        key = work.get("pair", inner, dtype)
        np.add(newest[:, 1:-1, 2:], dtype(off), out=key, dtype=dtype)
        key -= newest[:, 1:-1, :-2]
        key *= dtype(2 * off + 1)
        key += newest[:, 2:, 1:-1]
        key -= newest[:, :-2, 1:-1]
        key += dtype(off + 1)
        moved = work.get("least", inner, np.uint8)  # the least recency of the five pixels
        np.minimum(newest[:, 1:-1, 1:-1], newest[:, :-2, 1:-1], out=moved)
        np.minimum(moved, newest[:, 2:, 1:-1], out=moved)
        np.minimum(moved, newest[:, 1:-1, :-2], out=moved)
        np.minimum(moved, newest[:, 1:-1, 2:], out=moved)
        np.minimum(moved, 1, out=moved)
        key *= moved
        counts = self._count(key, pairs, True, "okey")
        orient = (counts.reshape(b * cells, pairs) @ orient_of).reshape(b, cells, bins)
        orient /= per_cell[None, :, None]
        counts = self._count(newest, levels, False, "mkey")
        mags = (counts.reshape(b * cells, levels) @ level_of).reshape(b, cells, mbins)
        mags /= per_cell[None, :, None]
        return np.concatenate([orient, mags], axis=2).reshape(b, -1).astype(np.float32)

    def _count(self, key: np.ndarray, scale: int, inner: bool, name: str) -> np.ndarray:
        """How often each ``(frame * cells + cell) * scale + key`` occurs over the pixels
        (``inner``: inside the one-pixel border) of ``key`` ``[B, H, W]`` (a small integer per
        pixel), counts ``[B * cells * scale]``: with 16-bit keys and OpenCV's histogram where
        they fit (exact counts, as float32), else ``bincount``; sums made in work arrays."""
        b, h, w = key.shape[0], key.shape[1] + 2 * inner, key.shape[2] + 2 * inner
        size = b * self.config.grid ** 2 * scale
        work = self._work()
        if size <= 2**16:
            import cv2

            base = self._key_base16(b, h, w, scale, inner)
            keys = np.add(base, key, out=work.get(name + "16", base.shape, np.uint16),
                          dtype=np.uint16)
            return cv2.calcHist([keys.reshape(-1, keys.shape[2])], [0], None, [size],
                                [0, size]).ravel()
        base = self._scaled_base(b, h, w, scale, 0)
        if inner:
            base = base[:, 1:-1, 1:-1]
        keys = np.add(base, key, out=work.get(name, base.shape, np.intp))
        return np.bincount(keys.ravel(), minlength=size)

    def _tables(self) -> tuple[np.ndarray, np.ndarray, int, float] | None:
        """``(orient_of, level_of, pairs, most)``: the weight each key adds to each
        orientation bin (float64 ``[pairs, bins]``; key 0: none, key ``1 + x * span + y``:
        the pixel's MHI differences to the right and downwards are those of recencies
        ``x - off`` and ``y - off`` apart), the magnitude bin of each recency as a 0/1 matrix
        (float64 ``[window, mag_bins]``), and the most pixels a cell may have for every sum of
        weights to be exact in float64 (each weight is a float32, a multiple of the smallest
        one's last bit: a sum below 2**53 such bits is exact in any order, so counting per key
        and multiplying gives the per-pixel sums bit for bit). ``None`` where a difference of
        two MHI levels depends on more than their recencies' difference (levels that are not
        multiples of a power of two, as thirds): the per-pixel path is used then, as for
        cells larger than ``most``."""
        cfg = self.config
        key = (cfg.window, cfg.bins, cfg.mag_bins)
        cached = self.__dict__.get("_table_cache")
        if cached is not None and cached[0] == key:
            return cached[1]
        levels = history_levels(cfg.window)
        off = cfg.window - 1
        # gx as _gradient_into computes it: the float32 difference of two levels, halved
        half = (levels[:, None] - levels[None, :]) * np.float32(0.5)  # [newer, older]
        step = np.arange(cfg.window)[:, None] - np.arange(cfg.window)[None, :]
        value = np.zeros(2 * off + 1, np.float32)
        value[step.ravel() + off] = half.ravel()
        tables = None
        if np.array_equal(value[step + off].view(np.uint32), half.view(np.uint32)):
            span = 2 * off + 1
            gx = np.repeat(value, span)  # key - 1 = x * span + y
            gy = np.tile(value, span)
            scratch = Scratch()
            weight = _hypot_into(gx, gy, scratch).astype(np.float64)
            obin = _direction_bins(gx, np.negative(gy), self.signed, cfg.bins, scratch)
            orient_of = np.zeros((1 + gx.size, cfg.bins))
            orient_of[1 + np.arange(gx.size), obin] = weight
            level_of = np.zeros((cfg.window, cfg.mag_bins))
            bins = self._level_bins()
            level_of[np.flatnonzero(bins >= 0), bins[bins >= 0]] = 1.0
            smallest = weight[weight > 0].min()
            granule = 2.0 ** (np.frexp(smallest)[1] - 24)  # its float32 last bit
            most = float(np.floor(2.0 ** 53 * granule / weight.max()))
            tables = (orient_of, level_of, 1 + gx.size, most)
        self.__dict__["_table_cache"] = (key, tables)
        return tables


class FrameDiffDescriptor(MotionDescriptor):
    """Histograms of multi-frame differencing (module docstring)."""

    name = "framediff"
    kind = "diff"
    signed = False

    def _most_pixels(self) -> float:
        """The mean difference takes one of a few float32 values (one per whole total): a
        nonzero gradient is at least half the smallest gap between two of them, so every
        weight is a float32 at least that large, a multiple of its last bit, and below 1:
        sums of fewer than 2**53 such bits are exact."""
        window = self.config.window
        cached = self.__dict__.get("_most_cache")
        if cached is None or cached[0] != window:
            means = np.unique(difference_mean(np.arange((window - 1) * 255 + 1,
                                                        dtype=np.float32), window))
            least = np.diff(means).min() * np.float32(0.5)  # float32: as the gradient
            granule = 2.0 ** (np.frexp(least)[1] - 24)  # the last bit of the least weight
            cached = self.__dict__["_most_cache"] = (window, float(2.0 ** 53 * granule))
        return cached[1]

    def motion(self, fields):
        gx, up, weight, total = self._maps(fields)
        index = self._work().get("index", total.shape, np.intp)
        np.copyto(index, total, casting="unsafe")
        table = self._bin_table()
        return (gx, up, weight,
                table.take(index, out=self._work().get("mag_bin", total.shape, table.dtype),
                           mode="clip"))

    def _histogram_inputs(self, fields):
        """``motion``'s maps, with the magnitude bins counted per cell straight from the
        windows' total differences where the bins allow it (see ``_byte_bins``)."""
        gx, up, weight, total = self._maps(fields)
        counts = self._level_counts(total)
        if counts is None:
            index = self._work().get("index", total.shape, np.intp)
            np.copyto(index, total, casting="unsafe")
            table = self._bin_table()
            return gx, up, weight, table.take(
                index, out=self._work().get("mag_bin", total.shape, table.dtype), mode="clip")
        return gx, up, weight, counts

    def _maps(self, fields):
        """The gradient (x, and y upwards), its length and the windows' total differences
        (float32 whole grey levels), in work arrays."""
        window = self.config.window
        work = self._work()
        b = fields.shape[0] - (window - 2)
        shape = (b, *fields.shape[1:])
        # difference_total and difference_mean, in work arrays: whole grey levels, exact
        total = work.get("total", shape, np.float32)
        np.copyto(total, fields[:b])
        for j in range(1, window - 1):
            total += fields[j:j + b]
        diff = np.divide(total, np.float32((window - 1) * 255.0),
                         out=work.get("mean", shape, np.float32))
        gx, gy = _gradient_into(diff, work)
        return (gx, np.negative(gy, out=work.get("up", shape, np.float32)),
                _hypot_into(gx, gy, work), total)

    def _bin_table(self) -> np.ndarray:
        """The magnitude bin of each whole total (int64): the mean difference takes one
        value per total, binned as it would be per pixel."""
        window = self.config.window
        table = self.__dict__.get("_bin_table_cache")
        if table is None or table[0] != window:
            levels = difference_mean(np.arange((window - 1) * 255 + 1, dtype=np.float32), window)
            table = self.__dict__["_bin_table_cache"] = (
                window, _doubling_bins(levels, 1 / 64, self.config.mag_bins))
        return table[1]

    def _byte_bins(self) -> np.ndarray | None:
        """``1 +`` the magnitude bin of each total 0..255 (uint8 ``[256]``), when every total
        from 255 on is in the bin of 255 (then a total saturated to a byte has its bin);
        else ``None``."""
        table = self._bin_table()
        if np.any(table[255:] != table[255]):
            return None
        return (table[:256] + 1).astype(np.uint8)

    def _level_counts(self, total: np.ndarray) -> np.ndarray | None:
        """Pixels per (window, cell, magnitude bin), float ``[B, cells, mag_bins]``, from the
        totals by byte operations (saturate to a byte, table look-up, 16-bit keys, OpenCV's
        histogram: exact counts); ``None`` where the bins or the key range do not allow it."""
        import cv2

        byte_bins = self._byte_bins()
        b, h, w = total.shape
        cells, slots = self.config.grid ** 2, self.config.mag_bins + 1
        n = b * cells * slots
        if byte_bins is None or n > 2**16 or w == 0:
            return None
        work = self._work()
        flat = (b * h, w)
        byte = cv2.convertScaleAbs(total.reshape(flat), dst=work.get("byte", flat, np.uint8))
        level = cv2.LUT(byte, byte_bins, dst=work.get("level", flat, np.uint8))
        key = np.add(self._key_base16(b, h, w, slots), level.reshape(b, h, w),
                     out=work.get("key16", (b, h, w), np.uint16), dtype=np.uint16)
        counts = cv2.calcHist([key.reshape(flat)], [0], None, [n], [0, n])
        return counts.reshape(b, cells, slots)[:, :, 1:]
