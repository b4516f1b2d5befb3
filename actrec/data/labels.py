"""Label spaces and input arrangements across datasets (joint training on D1 and D2).

Outputs: the concatenated label vector (DDLSTM paper, Fig. 1). D1's ``L1`` classes take output
indices ``0 .. L1-1``, D2's ``L2`` classes ``L1 .. L1+L2-1``; a frame of dataset k with local
label ``y`` has global label ``offset[k] + y``. Prediction for a frame of dataset k is either
the argmax over k's own block (``"block"``) or over the whole vector (``"full"``); in the latter
case a winning class of the other dataset is a wrong answer, reported as ``OFF_BLOCK``.

Inputs: when the datasets' feature dimensions differ, ``"blocks"`` zero-fills them the same way
(D1's features in columns ``0 .. d1-1``, D2's in ``d1 .. d1+d2-1``); equal dimensions are shared
as they are. ``"projection"`` passes each dataset's features through unchanged in columns
``0 .. d_k-1`` (zero-padded to the widest) for a model with a per-domain input projection,
which picks its projection by the domain flag.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from actrec.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from torch import Tensor

__all__ = ["OFF_BLOCK", "PREDICTIONS", "ARRANGEMENTS", "LabelSpace", "InputLayout"]

OFF_BLOCK = -2
"""Local prediction of a frame whose full-vector argmax lies in another dataset's block."""

PREDICTIONS = ("block", "full")
ARRANGEMENTS = ("blocks", "projection")


@dataclass(frozen=True)
class LabelSpace:
    """The concatenated output space of one or two datasets (class names per domain)."""

    classes: tuple[tuple[str, ...], ...]

    def __post_init__(self) -> None:
        if not self.classes or any(len(c) == 0 for c in self.classes):
            raise ConfigError("every dataset needs at least one class")

    @property
    def num_domains(self) -> int:
        return len(self.classes)

    @property
    def offsets(self) -> tuple[int, ...]:
        """First global index of each domain's block: ``(0, L1, L1+L2, ...)[:num_domains]``."""
        return tuple(int(x) for x in np.cumsum([0, *map(len, self.classes)])[:-1])

    @property
    def num_classes(self) -> int:
        """Length K of the concatenated vector, ``L1 + L2``."""
        return sum(len(c) for c in self.classes)

    def block(self, domain: int) -> slice:
        """Output columns of ``domain``'s classes."""
        start = self.offsets[domain]
        return slice(start, start + len(self.classes[domain]))

    def to_global(self, labels: np.ndarray, domain: int) -> np.ndarray:
        """Local labels of ``domain`` -> global indices; ``-1`` (unlabelled) stays ``-1``."""
        labels = np.asarray(labels)
        return np.where(labels >= 0, labels + self.offsets[domain], labels)

    def predict(self, logits: Tensor, domain: int, mode: str = "block") -> Tensor:
        """Local class predictions ``[...]`` (int64) of frames of ``domain`` from ``[..., K]``.

        ``"block"``: argmax over the domain's block. ``"full"``: argmax over all K outputs,
        ``OFF_BLOCK`` where it falls outside the domain's block.
        """
        if mode not in PREDICTIONS:
            raise ConfigError(f"prediction must be one of {', '.join(PREDICTIONS)}, got {mode!r}")
        cols = self.block(domain)
        if mode == "block":
            return logits[..., cols].argmax(dim=-1)
        best = logits.argmax(dim=-1)  # [...] global
        inside = (best >= cols.start) & (best < cols.stop)
        return (best - cols.start).where(inside, best.new_full((), OFF_BLOCK))

    def names(self) -> tuple[str, ...]:
        """All K class names in output order."""
        return tuple(name for block in self.classes for name in block)


@dataclass(frozen=True)
class InputLayout:
    """Where each domain's ``d_k`` feature columns go in the model's ``width`` inputs."""

    dims: tuple[int, ...]
    mode: str = "blocks"

    def __post_init__(self) -> None:
        if self.mode not in ARRANGEMENTS:
            raise ConfigError(
                f"input_arrangement must be one of {', '.join(ARRANGEMENTS)}, got {self.mode!r}"
            )
        if not self.dims or any(int(d) <= 0 for d in self.dims):
            raise ConfigError(f"feature dimensions must be positive, got {self.dims}")

    @property
    def shared(self) -> bool:
        """True when all domains use the same columns (one domain, equal dims, or projection)."""
        return self.mode == "projection" or len(set(self.dims)) == 1

    @property
    def width(self) -> int:
        """Input dimension of the model."""
        return max(self.dims) if self.shared else sum(self.dims)

    def columns(self, domain: int) -> slice:
        """Input columns that hold ``domain``'s features."""
        start = 0 if self.shared else sum(self.dims[:domain])
        return slice(start, start + self.dims[domain])

    def arrange(self, features: np.ndarray, domain: int) -> np.ndarray:
        """``[..., d_k]`` -> ``[..., width]`` float32, zero outside ``columns(domain)``."""
        features = np.asarray(features, dtype=np.float32)
        if features.shape[-1] != self.dims[domain]:
            raise ValueError(
                f"domain {domain} features have {features.shape[-1]} columns, "
                f"expected {self.dims[domain]}"
            )
        if self.width == features.shape[-1]:
            return features
        out = np.zeros((*features.shape[:-1], self.width), dtype=np.float32)
        out[..., self.columns(domain)] = features
        return out

    @classmethod
    def for_dims(cls, dims: Sequence[int], mode: str = "blocks") -> InputLayout:
        return cls(tuple(int(d) for d in dims), mode)
