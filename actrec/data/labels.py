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

Other label arrangements (merged, random, multi-random: Recurrent Assistance eqs. 2-3) are
tables from local classes to outputs (``actrec.data.label_maps``); a ``LabelSpace`` holds them,
and an ``InputLayout`` in mode ``"scores"`` places per-class score inputs by the same tables.
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
ARRANGEMENTS = ("blocks", "projection", "scores")


@dataclass(frozen=True)
class LabelSpace:
    """The output space of one or more datasets (class names per domain) under a label
    arrangement (``actrec.data.label_maps``; default: the concatenated vector).

    ``tables[k][j][y]`` is the output index of domain k's local class ``y`` under its label
    map j (map 0 is the one evaluation uses). Without ``tables``, ``concat`` and ``merged``
    build theirs; the random arrangements need them given (``LabelSpace.build``)."""

    classes: tuple[tuple[str, ...], ...]
    arrangement: str = "concat"
    tables: tuple[tuple[tuple[int, ...], ...], ...] | None = None

    def __post_init__(self) -> None:
        from actrec.data import label_maps

        if not self.classes or any(len(c) == 0 for c in self.classes):
            raise ConfigError("every dataset needs at least one class")
        sizes = [len(c) for c in self.classes]
        if self.tables is None:
            if self.arrangement in ("random", "multi-random"):
                raise ConfigError(f"the {self.arrangement} label arrangement needs its tables "
                                  f"(LabelSpace.build with a random generator)")
            tables = label_maps.make_tables(self.arrangement, sizes)
        else:
            if self.arrangement not in label_maps.LABEL_ARRANGEMENTS:
                raise ConfigError(f"unknown label arrangement {self.arrangement!r}")
            tables = [[np.asarray(t, dtype=np.int64) for t in maps] for maps in self.tables]
        width = label_maps.num_outputs(self.arrangement, sizes)
        if len(tables) != len(sizes):
            raise ConfigError(f"label maps for {len(tables)} dataset(s), expected {len(sizes)}")
        for k, maps in enumerate(tables):
            for t in maps:
                if (t.shape != (sizes[k],) or len(set(t.tolist())) != sizes[k]
                        or t.min() < 0 or t.max() >= width):
                    raise ConfigError(f"label map of dataset {k + 1} is not a one-to-one map of "
                                      f"its {sizes[k]} classes into {width} outputs")
        object.__setattr__(self, "tables", tuple(tuple(tuple(int(v) for v in t) for t in maps)
                                                 for maps in tables))

    @classmethod
    def build(cls, classes, arrangement: str = "concat", rng: np.random.Generator | None = None,
              count: int = 1, background: Sequence[int | None] | None = None) -> LabelSpace:
        """The label space of ``arrangement``, random maps drawn from ``rng``; ``background``:
        each dataset's background class, or None (``label_maps.make_tables``)."""
        from actrec.data import label_maps

        classes = tuple(tuple(c) for c in classes)
        tables = label_maps.make_tables(arrangement, [len(c) for c in classes], rng, count,
                                        background)
        return cls(classes, arrangement, tuple(tuple(tuple(int(v) for v in t) for t in maps)
                                               for maps in tables))

    def to_state(self) -> dict:
        """JSON-compatible record (saved with a run; ``from_state`` rebuilds it)."""
        return {"classes": [list(c) for c in self.classes], "arrangement": self.arrangement,
                "tables": [[list(t) for t in maps] for maps in self.tables]}

    @classmethod
    def from_state(cls, state) -> LabelSpace:
        return cls(tuple(tuple(c) for c in state["classes"]), str(state["arrangement"]),
                   tuple(tuple(tuple(int(v) for v in t) for t in maps)
                         for maps in state["tables"]))

    @property
    def num_domains(self) -> int:
        return len(self.classes)

    @property
    def offsets(self) -> tuple[int, ...]:
        """First global index of each domain's block: ``(0, L1, L1+L2, ...)[:num_domains]``
        (the concatenated arrangement's blocks)."""
        return tuple(int(x) for x in np.cumsum([0, *map(len, self.classes)])[:-1])

    @property
    def num_classes(self) -> int:
        """Number K of model outputs: ``L1 + L2`` concatenated, ``max(L1, L2)`` otherwise."""
        from actrec.data.label_maps import num_outputs

        return num_outputs(self.arrangement, [len(c) for c in self.classes])

    def num_maps(self, domain: int) -> int:
        """How many label maps ``domain`` has (several only with multi-random)."""
        return len(self.tables[domain])

    def table(self, domain: int, index: int = 0) -> np.ndarray:
        """Output index of each of ``domain``'s local classes under its map ``index``."""
        return np.asarray(self.tables[domain][index], dtype=np.int64)

    def block(self, domain: int) -> slice:
        """Output columns of ``domain``'s classes (concatenated arrangement only)."""
        if self.arrangement != "concat":
            raise ConfigError(f"the {self.arrangement} label arrangement has no blocks")
        start = self.offsets[domain]
        return slice(start, start + len(self.classes[domain]))

    def to_global(self, labels: np.ndarray, domain: int, index: int = 0) -> np.ndarray:
        """Local labels of ``domain`` -> output indices (under map ``index``); ``-1``
        (unlabelled) stays ``-1``."""
        from actrec.data.label_maps import map_labels

        return map_labels(labels, self.table(domain, index))

    def to_local(self, outputs: np.ndarray, domain: int, index: int = 0) -> np.ndarray:
        """Output indices -> ``domain``'s local labels; an output of no class of it is
        ``OFF_BLOCK``, ``-1`` stays ``-1``."""
        from actrec.data.label_maps import unmap_labels

        return unmap_labels(outputs, self.table(domain, index))

    def predict(self, logits: Tensor, domain: int, mode: str = "block") -> Tensor:
        """Local class predictions ``[...]`` (int64) of frames of ``domain`` from ``[..., K]``.

        ``"block"``: argmax over the domain's outputs (its block, or its map 0). ``"full"``:
        argmax over all K outputs, ``OFF_BLOCK`` where it is no class of the domain.
        """
        if mode not in PREDICTIONS:
            raise ConfigError(f"prediction must be one of {', '.join(PREDICTIONS)}, got {mode!r}")
        if self.arrangement != "concat":
            from actrec.data.label_maps import predict_local

            return predict_local(logits, self.table(domain), mode)
        cols = self.block(domain)
        if mode == "block":
            return logits[..., cols].argmax(dim=-1)
        best = logits.argmax(dim=-1)  # [...] global
        inside = (best >= cols.start) & (best < cols.stop)
        return (best - cols.start).where(inside, best.new_full((), OFF_BLOCK))

    def names(self) -> tuple[str, ...]:
        """All K output names in output order (under map 0; outputs shared by several
        datasets' classes are named ``a/b``)."""
        names: list[list[str]] = [[] for _ in range(self.num_classes)]
        for k, block in enumerate(self.classes):
            for y, out in enumerate(self.tables[k][0]):
                names[out].append(block[y])
        return tuple("/".join(n) for n in names)


@dataclass(frozen=True)
class InputLayout:
    """Where each domain's ``d_k`` feature columns go in the model's ``width`` inputs.

    Mode ``"scores"`` is for per-class score inputs (one column per class, ``d_k`` = the
    domain's class count): column ``y`` goes to input ``tables[k][y]``, the output index of
    class ``y`` under the run's label arrangement (its map 0; ``tables`` from
    ``LabelSpace.tables``), so inputs are arranged exactly as outputs are."""

    dims: tuple[int, ...]
    mode: str = "blocks"
    tables: tuple[tuple[int, ...], ...] | None = None  # mode "scores": map 0 of each domain

    def __post_init__(self) -> None:
        if self.mode not in ARRANGEMENTS:
            raise ConfigError(
                f"input_arrangement must be one of {', '.join(ARRANGEMENTS)}, got {self.mode!r}"
            )
        if not self.dims or any(int(d) <= 0 for d in self.dims):
            raise ConfigError(f"feature dimensions must be positive, got {self.dims}")
        if self.mode == "scores":
            if self.tables is None or len(self.tables) != len(self.dims) or any(
                    len(t) != d for t, d in zip(self.tables, self.dims)):
                raise ConfigError("score inputs need one label map per domain, one entry per "
                                  "feature column (the feature dimension must equal the "
                                  "number of classes)")
            object.__setattr__(self, "tables", tuple(tuple(int(v) for v in t)
                                                     for t in self.tables))
        elif self.tables is not None:
            raise ConfigError(f"input mode {self.mode!r} takes no label maps")

    @property
    def shared(self) -> bool:
        """True when all domains use the same columns (one domain, equal dims, or projection)."""
        if self.mode == "scores":
            return False
        return self.mode == "projection" or len(set(self.dims)) == 1

    @property
    def width(self) -> int:
        """Input dimension of the model."""
        if self.mode == "scores":
            return 1 + max(max(t) for t in self.tables)
        return max(self.dims) if self.shared else sum(self.dims)

    def columns(self, domain: int) -> slice | np.ndarray:
        """Input columns that hold ``domain``'s features (an index array in mode scores)."""
        if self.mode == "scores":
            return np.asarray(self.tables[domain], dtype=np.int64)
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
        if self.mode != "scores" and self.width == features.shape[-1]:
            return features
        out = np.zeros((*features.shape[:-1], self.width), dtype=np.float32)
        out[..., self.columns(domain)] = features
        return out

    @classmethod
    def for_dims(cls, dims: Sequence[int], mode: str = "blocks") -> InputLayout:
        return cls(tuple(int(d) for d in dims), mode)
