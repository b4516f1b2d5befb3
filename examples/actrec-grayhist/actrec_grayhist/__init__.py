"""A complete third-party actrec plugin: per-frame grey-level histograms.

Install with ``pip install -e examples/actrec-grayhist``; then ``actrec plugins`` lists it
and ``actrec extract synthetic --extractor grayhist -x bins=32`` uses it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from actrec.errors import ConfigError
from actrec.plugin_api import FeatureExtractor, PluginConfig


class GrayHistogram(FeatureExtractor):
    """Normalised histogram of grey levels of each frame; uses no other frame (causal)."""

    name = "grayhist"
    lookahead = 0  # required, no default: how many future frames each feature needs (none)

    @dataclass(frozen=True)
    class Config(PluginConfig):
        bins: int = 16
        fps: float | None = None  # resample videos to this rate; None keeps theirs

        def __post_init__(self) -> None:  # reject bad values when the options are read
            if self.bins < 1:
                raise ConfigError(f"extractor 'grayhist': bins must be >= 1, got {self.bins}")

    def dim(self) -> int:
        return self.config.bins

    def extract(self, batches: Iterable) -> Iterator:
        import numpy as np  # heavy imports inside methods keep `actrec plugins` fast

        edges = np.linspace(0, 256, self.config.bins + 1)
        for frames in batches:  # [B, H, W, 3] uint8
            gray = frames.astype(np.float32).mean(axis=3)  # [B, H, W]
            hist = np.stack([np.histogram(g, bins=edges)[0] for g in gray])  # [B, bins]
            yield (hist / gray[0].size).astype(np.float32)
