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

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

__all__ = ["ColorGradient"]


class ColorGradient(FeatureExtractor):
    """Colour histograms, gradient-orientation histograms and frame-difference energy per cell
    (see the module docstring for the exact layout)."""

    name = "colorgrad"
    lookahead = 0  # declared by every extractor (no default): uses the previous frame only

    @dataclass(frozen=True)
    class Config(PluginConfig):
        grid: int = 2
        bins: int = 8
        fps: float | None = None  # resample the video to this rate first; None: its own
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

        prev = None  # grey level of the last frame seen, [S, S] float32
        for batch in batches:
            frames = self._resize(np.asarray(batch))  # [B, S, S, 3] uint8
            if frames.shape[0] == 0:
                continue
            # Channel sum in uint16 is exact, and much faster than a float mean.
            grey = (frames[..., 0].astype(np.uint16) + frames[..., 1] + frames[..., 2]) \
                .astype(np.float32) / 3.0  # [B, S, S]
            before = np.concatenate([grey[:1] if prev is None else prev[None], grey[:-1]])
            prev = grey[-1]
            yield self._features(frames, grey, np.abs(grey - before))

    # ------------------------------------------------------------------ internals

    def _resize(self, frames: np.ndarray) -> np.ndarray:
        import numpy as np

        s = self.config.resize
        if frames.ndim != 4 or frames.shape[3] != 3:
            raise ValueError(f"colorgrad expects frames [B, H, W, 3], got {frames.shape}")
        if frames.shape[1:3] == (s, s):
            return frames.astype(np.uint8, copy=False)
        import cv2

        return np.stack([cv2.resize(f, (s, s), interpolation=cv2.INTER_AREA) for f in frames])

    def _cells(self) -> np.ndarray:
        """Cell index of every pixel, int64 ``[S, S]`` (row-major cells)."""
        import numpy as np

        s, g = self.config.resize, self.config.grid
        band = np.arange(s) * g // s  # which row/column band each pixel falls in
        return band[:, None] * g + band[None, :]

    def _value_bin(self) -> np.ndarray:
        """Colour bin of each byte value, int32 ``[256]``."""
        import numpy as np

        return (np.arange(256) * self.config.bins // 256).astype(np.int32)

    def _colour_base(self, b: int) -> np.ndarray:
        """Key offset of (frame, cell, channel) for every pixel value, int32 ``[B, S, S, 3]``;
        cached per batch size since it only depends on the layout."""
        import numpy as np

        cache = self.__dict__.setdefault("_colour_cache", {})
        if b not in cache:
            cells, bins = self.config.grid ** 2, self.config.bins
            frame_ix = np.arange(b)[:, None, None, None]
            if len(cache) >= 4:  # full batches plus a few tail sizes
                cache.pop(next(iter(cache)))
            cache[b] = (((frame_ix * cells + self._cells()[None, :, :, None]) * 3
                         + np.arange(3)) * bins).astype(np.int64 if b * cells * 3 * bins
                                                        >= 2**31 else np.int32)
        return cache[b]

    def _features(self, frames: np.ndarray, grey: np.ndarray, diff: np.ndarray) -> np.ndarray:
        import numpy as np

        b, s = frames.shape[0], self.config.resize
        g, bins = self.config.grid, self.config.bins
        cells = g * g
        cell = self._cells()  # [S, S]
        per_cell = np.bincount(cell.ravel(), minlength=cells).astype(np.float64)  # [C]
        frame_ix = np.arange(b)[:, None, None]

        # Colour: one bincount over (frame, cell, channel, bin) keys.
        value_bin = self._value_bin()[frames]  # [B, S, S, 3]
        key = self._colour_base(b) + value_bin
        colour = np.bincount(key.ravel(), minlength=b * cells * 3 * bins)
        colour = colour.reshape(b, cells, 3 * bins) / per_cell[None, :, None]

        # Gradient orientation, unsigned, magnitude-weighted.
        gx = np.zeros_like(grey)
        gy = np.zeros_like(grey)
        gx[:, 1:-1, 1:-1] = (grey[:, 1:-1, 2:] - grey[:, 1:-1, :-2]) / 2
        gy[:, 1:-1, 1:-1] = (grey[:, 2:, 1:-1] - grey[:, :-2, 1:-1]) / 2
        mag = np.hypot(gx, gy)
        theta = np.mod(np.arctan2(gy, gx), np.pi)  # [0, pi)
        obin = np.minimum((theta * bins / np.pi).astype(np.int64), bins - 1)
        okey = (frame_ix * cells + cell[None]) * bins + obin
        orient = np.bincount(okey.ravel(), weights=mag.ravel().astype(np.float64),
                             minlength=b * cells * bins)
        orient = orient.reshape(b, cells, bins) / (per_cell[None, :, None] * 255.0)

        # Motion energy per cell and its centre over the frame.
        mkey = frame_ix * cells + cell[None]
        motion = np.bincount(mkey.ravel(), weights=diff.ravel().astype(np.float64),
                             minlength=b * cells).reshape(b, cells) / (per_cell * 255.0)
        total = diff.sum(axis=(1, 2), dtype=np.float64)  # [B]
        coord = (np.arange(s) + 0.5) / s - 0.5
        safe = np.where(total > 0, total, 1.0)
        cx = (diff.sum(axis=1, dtype=np.float64) @ coord) / safe  # [B]
        cy = (diff.sum(axis=2, dtype=np.float64) @ coord) / safe

        per = np.concatenate([colour, orient, motion[..., None]], axis=2)  # [B, C, 4*bins+1]
        out = np.concatenate([per.reshape(b, -1), np.stack([cx, cy], axis=1)], axis=1)
        return out.astype(np.float32)  # [B, dim]
