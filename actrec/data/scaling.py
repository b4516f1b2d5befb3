"""Per-dimension standardisation of features, fitted on the training videos only.

Raw features differ wildly in scale (histogram bins, CNN logits, IDT codes); a recurrent
model trains far better on zero-mean, unit-variance inputs. The statistics are part of the
trained run: they are saved in the checkpoint and the same transform is applied at evaluation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, eq=False)
class FeatureScaler:
    """``x -> (x - mean) / std`` per feature dimension."""

    mean: np.ndarray  # [D] float32
    std: np.ndarray  # [D] float32, > 0

    @classmethod
    def fit(cls, features: Sequence[np.ndarray], min_std: float = 1e-3) -> FeatureScaler:
        """Mean and standard deviation over every frame of ``features`` (arrays ``[T_i, D]``),
        two passes in float64; dimensions with std below ``min_std`` are only centred."""
        count = sum(int(np.shape(x)[0]) for x in features)
        if not count:
            raise ValueError("cannot fit a feature scaler on no frames")
        mean = sum(np.asarray(x, np.float64).sum(0) for x in features) / count
        var = sum(((np.asarray(x, np.float64) - mean) ** 2).sum(0) for x in features) / count
        std = np.sqrt(var)
        std = np.where(std < min_std, 1.0, std)
        return cls(mean.astype(np.float32), std.astype(np.float32))

    @classmethod
    def identity(cls, dim: int) -> FeatureScaler:
        return cls(np.zeros(dim, np.float32), np.ones(dim, np.float32))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """``[..., D]`` -> standardised float32 ``[..., D]``."""
        return ((np.asarray(x, dtype=np.float32) - self.mean) / self.std).astype(np.float32)

    def to_state(self) -> dict:
        """Tensors for a checkpoint loadable with ``torch.load(weights_only=True)``."""
        import torch

        return {"mean": torch.from_numpy(self.mean.copy()), "std": torch.from_numpy(self.std.copy())}

    @classmethod
    def from_state(cls, state: dict) -> FeatureScaler:
        return cls(np.asarray(state["mean"], np.float32), np.asarray(state["std"], np.float32))
