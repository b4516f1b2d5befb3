"""The built-in ``colorgrad`` extractor: weight-free, causal per-frame features.

Each frame is resized to ``resize`` x ``resize`` and cut into a ``grid`` x ``grid`` array of
cells (row-major). Per cell, in this order:

* colour: a ``bins``-bin histogram of each of R, G, B (fractions of the cell's pixels;
  value ``v`` falls in bin ``v * bins // 256``)                      -> 3 * bins
* gradient orientation: unsigned orientation of the grey-level central-difference gradient,
  ``bins`` bins over [0, pi), weighted by magnitude, divided by (cell pixels * 255) -> bins
* motion: mean absolute difference of the grey level against the PREVIOUS frame / 255
  (0 for a video's first frame)                                       -> 1

then, for the whole frame, the centre of the motion energy (x, y in [-0.5, 0.5], 0 when
nothing moved)                                                       -> 2.

So ``dim = grid**2 * (4 * bins + 1) + 2``. Grey is ``(R + G + B) / 3``; gradients are zero on
the one-pixel border. Only the previous frame is kept between batches: the extractor is
causal (``lookahead = 0``) and its output does not depend on how frames are batched.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from actrec.errors import ConfigError
from actrec.plugin_api import FeatureExtractor, PluginConfig

from .scratch import Scratch

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

__all__ = ["ColorGradient"]


class ColorGradient(FeatureExtractor):
    """Colour histograms, gradient-orientation histograms and frame-difference energy per cell
    (see the module docstring for the exact layout)."""

    name = "colorgrad"
    lookahead = 0  # declared by every extractor (no default): uses the previous frame only
    chunk = 16  # frames computed together (speed only: features do not depend on it)

    @dataclass(frozen=True)
    class Config(PluginConfig):
        grid: int = 2
        bins: int = 8
        fps: float | None = None  # resample the video to this rate first; None: the labels'
        resize: int = 64

    def __init__(self, config: PluginConfig | None = None) -> None:
        super().__init__(config)
        cfg = self.config
        where = "extractor 'colorgrad'"
        if cfg.grid < 1 or cfg.bins < 1 or cfg.bins > 256:
            raise ConfigError(f"options 'grid' and 'bins' for {where} must be >= 1 "
                              f"(bins <= 256), got grid={cfg.grid}, bins={cfg.bins}")
        if cfg.resize < 2 * cfg.grid:
            raise ConfigError(f"option 'resize' for {where} must be at least 2 x grid "
                              f"({2 * cfg.grid}), got {cfg.resize}")
        if cfg.fps is not None and cfg.fps <= 0:
            raise ConfigError(f"option 'fps' for {where} must be positive, got {cfg.fps}")

    def dim(self) -> int:
        g, b = self.config.grid, self.config.bins
        return g * g * (4 * b + 1) + 2

    def extract(self, batches: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """Features float32 ``[B, dim]`` per input batch ``[B, H, W, 3]`` uint8 RGB."""
        import numpy as np

        s = self.config.resize
        work = self._work()
        prev = None  # grey level of the last frame seen, [S, S] float32
        for batch in batches:
            frames = self._resize(np.asarray(batch))  # [B, S, S, 3] uint8
            if frames.shape[0] == 0:
                continue
            rows = []
            # A few frames at a time: the temporaries stay in the CPU caches (and are reused
            # by the allocator instead of being page-faulted in afresh), about twice as fast.
            for start in range(0, frames.shape[0], self.chunk):
                part = frames[start:start + self.chunk]
                b = part.shape[0]
                # Channel sum in uint16 is exact, and much faster than a float mean.
                total = work.get("total", (b, s, s), np.uint16)
                np.add(part[..., 0], part[..., 1], out=total, dtype=np.uint16)
                total += part[..., 2]
                grey = work.get("grey", (b, s, s), np.float32)
                np.divide(total, np.float32(3.0), out=grey)
                diff = work.get("diff", (b, s, s), np.float32)  # against the frame before
                np.subtract(grey[0], grey[0] if prev is None else prev, out=diff[0])
                np.subtract(grey[1:], grey[:-1], out=diff[1:])
                np.abs(diff, out=diff)
                prev = grey[-1].copy()  # the work arrays are overwritten by the next part
                rows.append(self._features(part, grey, diff))
            yield rows[0] if len(rows) == 1 else np.concatenate(rows)

    # ------------------------------------------------------------------ internals

    def _work(self) -> Scratch:
        """This extractor's work arrays (see ``scratch``), made on first use."""
        work = self.__dict__.get("_scratch")
        if work is None:
            work = self.__dict__["_scratch"] = Scratch()
        return work

    def _resize(self, frames: np.ndarray) -> np.ndarray:
        import numpy as np

        s = self.config.resize
        if frames.ndim != 4 or frames.shape[3] != 3:
            raise ValueError(f"colorgrad expects frames [B, H, W, 3], got {frames.shape}")
        if frames.shape[1:3] == (s, s):
            return frames.astype(np.uint8, copy=False)
        import cv2

        b, h, w = frames.shape[:3]
        if h % s == 0 and w % s == 0 and b * h < 2**15:
            # Whole multiples: area interpolation averages h/s x w/s blocks, which never
            # straddle two frames stacked one above the other: one call for the batch, each
            # frame's pixels exactly as resized alone.
            tall = np.ascontiguousarray(frames, dtype=np.uint8).reshape(b * h, w, 3)
            out = self._work().get("resized", (b * s, s, 3), np.uint8)
            return cv2.resize(tall, (s, b * s), dst=out, interpolation=cv2.INTER_AREA) \
                .reshape(b, s, s, 3)
        return np.stack([cv2.resize(f, (s, s), interpolation=cv2.INTER_AREA) for f in frames])

    def _cells(self) -> np.ndarray:
        """Cell index of every pixel, int64 ``[S, S]`` (row-major cells)."""
        import numpy as np

        s, g = self.config.resize, self.config.grid
        band = np.arange(s) * g // s  # which row/column band each pixel falls in
        return band[:, None] * g + band[None, :]

    def _layout(self) -> dict:
        """Tables that depend only on the options, built once: pixels per cell, the colour
        look-up table and the cell offsets of the colour keys, the cell of every pixel."""
        import numpy as np

        cached = self.__dict__.get("_layout_cache")
        if cached is not None:
            return cached
        g, bins = self.config.grid, self.config.bins
        cell = self._cells()
        value_bin = np.arange(256) * bins // 256
        keys = g * g * 3 * bins  # (cell, channel, bin) combinations
        band = np.arange(self.config.resize) * g // self.config.resize
        layout = {
            "cell": cell.astype(np.intp),
            # [S, g + 1]: which column band each pixel column is in, then a column of ones
            "bands_and_all": np.concatenate([np.eye(g)[band], np.ones((len(band), 1))], axis=1),
            "per_cell": np.bincount(cell.ravel(), minlength=g * g).astype(np.float64),
            # One byte per pixel and channel, (cell * 3 + channel) * bins + bin, when the
            # combinations fit in a byte: then one OpenCV table look-up and one byte
            # histogram per frame count every cell's colours (exact integer counts).
            "byte_keys": keys <= 256,
            "lut": np.stack([value_bin + c * bins for c in range(3)], axis=1)
            .astype(np.uint8 if keys <= 256 else np.intp)[None],  # [1, 256, 3]
            # [S, S * 3] for byte keys (an add whose inner loop runs along whole rows), else
            # [S, S, 1]
            "cell_offset": np.repeat(cell * 3 * bins, 3, axis=1).astype(np.uint8)
            if keys <= 256 else (cell * 3 * bins).astype(np.intp)[:, :, None],
            # With 2**k bins a byte value's bin is its top k bits: a shift, then one add of
            # (cell * 3 + channel) * bins gives the byte key (no table look-up).
            "shift": 8 - (bins.bit_length() - 1) if bins & (bins - 1) == 0 else None,
            "key_offset": (((cell * 3)[:, :, None] + np.arange(3)) * bins)
            .reshape(cell.shape[0], -1).astype(np.uint8) if keys <= 256 else None,
        }
        self.__dict__["_layout_cache"] = layout
        return layout

    def _orientation_keys(self, b: int, slots: int) -> np.ndarray:
        """``(frame * cells + cell) * slots`` of every pixel inside the one-pixel border, intp
        ``[B, S - 2, S - 2]``: the first orientation slot of its (frame, cell); cached per
        batch size (full batches plus a few tail sizes)."""
        import numpy as np

        cache = self.__dict__.setdefault("_key_cache", {})
        if (b, slots) not in cache:
            if len(cache) >= 4:
                cache.pop(next(iter(cache)))
            cells = self.config.grid ** 2
            inner = self._layout()["cell"][1:-1, 1:-1]
            cache[(b, slots)] = (np.arange(b, dtype=np.intp)[:, None, None] * cells
                                 + inner[None]) * slots
        return cache[(b, slots)]

    def _colour_counts(self, frames: np.ndarray) -> np.ndarray:
        """Pixel counts per (frame, cell, channel, value bin), float64 ``[B, C, 3 * bins]``."""
        import numpy as np

        layout = self._layout()
        b, s = frames.shape[:2]
        cells, bins = self.config.grid ** 2, self.config.bins
        keys = cells * 3 * bins
        if layout["byte_keys"]:
            import cv2

            frames = np.ascontiguousarray(frames)
            work = self._work()
            if layout["shift"] is not None:
                key = work.get("key", (b, s, s * 3), np.uint8)
                np.right_shift(frames.reshape(b, s, s * 3), layout["shift"], out=key)
                key += layout["key_offset"]  # < 256 by construction: no overflow
            else:
                lut = layout["lut"]  # per channel: channel * bins + bin of the byte value
                key = cv2.LUT(frames.reshape(b * s, s, 3), lut).reshape(b, s, s * 3)
                key += layout["cell_offset"]
            # calcHist's uniform bins of width 1 over [0, n) count each key exactly: the keys
            # of many frames at once, each frame's offset by frame * keys in 16 bits.
            group = 2**16 // keys
            offsets = (np.arange(group, dtype=np.uint16) * keys)[:, None, None]
            counts = []
            for start in range(0, b, group):
                part = key[start:start + group]
                n = part.shape[0] * keys
                wide = work.get("wide", part.shape, np.uint16)
                np.add(part, offsets[:part.shape[0]], out=wide, dtype=np.uint16)
                counts.append(cv2.calcHist([wide.reshape(-1, s * 3)], [0], None, [n], [0, n]))
            counts = counts[0] if len(counts) == 1 else np.concatenate(counts)
            return counts.astype(np.float64).reshape(b, cells, 3 * bins)
        key = layout["lut"][0][frames, np.arange(3)] + layout["cell_offset"]
        key += (np.arange(b, dtype=np.intp) * keys)[:, None, None, None]
        return np.bincount(key.ravel(), minlength=b * keys).astype(np.float64) \
            .reshape(b, cells, 3 * bins)

    def _features(self, frames: np.ndarray, grey: np.ndarray, diff: np.ndarray) -> np.ndarray:
        """Feature rows of a batch. Everything is computed in float32 and summed in float64;
        the sums are exact (the weights are float32 values between 1/6 and 255*sqrt(2), with
        at most 24 significant bits, and a cell holds fewer than 2**19 of them), so the order
        of summation cannot change a feature."""
        import numpy as np

        b, s = frames.shape[0], self.config.resize
        g, bins = self.config.grid, self.config.bins
        cells = g * g
        layout = self._layout()
        per_cell = layout["per_cell"]  # [C]
        # An angle that rounds up to the last bin's upper edge counts in a slot of its own,
        # added to the last bin after the histogram (instead of a minimum per pixel), where
        # the sums are exact (see above: cells below 2**19 pixels); the same sums.
        fold = per_cell.max() < 2**19
        slots = bins + 1 if fold else bins
        orient_base = self._orientation_keys(b, slots)  # [B, S - 2, S - 2]

        colour = self._colour_counts(frames) / per_cell[None, :, None]

        # Gradient orientation, unsigned, magnitude-weighted. Only inside the one-pixel
        # border: the border's zero gradient adds nothing to any bin. Computed into work
        # arrays (``scratch``), each step as its own operation on the whole part.
        work = self._work()
        shape, flat = (b, s - 2, s - 2), (b * (s - 2), s - 2)
        gx = work.get("gx", shape, np.float32)
        gy = work.get("gy", shape, np.float32)
        np.subtract(grey[:, 1:-1, 2:], grey[:, 1:-1, :-2], out=gx)
        np.subtract(grey[:, 2:, 1:-1], grey[:, :-2, 1:-1], out=gy)
        gx *= np.float32(0.5)  # exact: halving a float32
        gy *= np.float32(0.5)
        # hypot of float32 values, as libm's hypotf computes it: in double (the squares of
        # floats are exact there, so with or without fused multiply-adds the sum is rounded
        # once), square root, then rounded to float32.
        import cv2

        x, y = work.get("x", flat, np.float64), work.get("y", flat, np.float64)
        np.copyto(x, gx.reshape(flat))
        np.copyto(y, gy.reshape(flat))
        mag = cv2.magnitude(x, y, work.get("mag", flat, np.float64))
        rounded = work.get("mag32", flat, np.float32)
        np.copyto(rounded, mag)  # to float32, then back: the weights as float64
        np.copyto(mag, rounded)
        # Orientation in [0, pi): arctan2 is in (-pi, pi]; numpy's mod by pi in float32,
        # without its slow general path: a negative angle gains pi, pi itself becomes 0.
        pi = np.float32(np.pi)
        theta = np.arctan2(gy, gx, out=work.get("theta", shape, np.float32))
        mask = np.less(theta, 0, out=work.get("mask", shape, np.bool_))
        # (adding mask * pi: a masked add is several times slower)
        theta += np.multiply(mask, pi, out=work.get("gain", shape, np.float32))
        # pi itself becomes 0: times 0, the others times 1 (exact; putmask is slower)
        np.multiply(theta, np.not_equal(theta, pi, out=mask), out=theta)
        theta *= np.float32(bins)
        theta /= pi
        obin = work.get("obin", shape, np.intp)
        np.copyto(obin, theta, casting="unsafe")  # truncation, as astype
        if not fold:
            np.minimum(obin, bins - 1, out=obin)
        obin += orient_base
        orient = np.bincount(obin.ravel(), weights=mag.ravel(), minlength=b * cells * slots)
        orient = orient.reshape(b, cells, slots)
        if fold:
            orient[:, :, bins - 1] += orient[:, :, bins]
        orient = orient[:, :, :bins] / (per_cell[None, :, None] * 255.0)

        # Motion energy per cell and its centre over the frame. Summed in float64, once
        # converted; the sums are exact, so their order does not matter: per pixel row, the
        # sums over each column band and over the whole row by one matrix product, then per
        # cell the row bands' sums of those (0/1 products and exact sums: the same values).
        bands_and_all = layout["bands_and_all"]  # [S, g + 1]
        wide = work.get("diff64", diff.shape, np.float64)
        np.copyto(wide, diff)
        per_row = np.matmul(wide, bands_and_all)  # [B, S, g + 1]
        rows = per_row[:, :, g]  # [B, S]
        motion = np.matmul(bands_and_all[:, :g].T, per_row[:, :, :g]).reshape(b, cells) \
            / (per_cell * 255.0)
        columns = np.matmul(bands_and_all[:, g], wide)  # [B, S]
        total = columns.sum(axis=1)  # [B]
        coord = (np.arange(s) + 0.5) / s - 0.5
        safe = np.where(total > 0, total, 1.0)
        cx = (columns @ coord) / safe  # [B]
        cy = (rows @ coord) / safe

        out = np.empty((b, cells * (4 * bins + 1) + 2), dtype=np.float32)
        per = out[:, :-2].reshape(b, cells, 4 * bins + 1)
        per[:, :, :3 * bins] = colour
        per[:, :, 3 * bins:4 * bins] = orient
        per[:, :, 4 * bins] = motion
        out[:, -2] = cx
        out[:, -1] = cy
        return out  # [B, dim]
