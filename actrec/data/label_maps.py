"""Label arrangements across datasets (Recurrent Assistance, Perrett & Damen 2017, eqs. 2-4).

Every arrangement is a table per dataset: ``table[y]`` is the model output index of the
dataset's local class ``y`` (one table per label map; only ``multi-random`` has several). With
per-class score inputs (the papers' softmax features, one column per class) the same table
places input column ``y`` at model input column ``table[y]``, so inputs and outputs are
arranged alike.

- ``concat`` (eq. 4): dataset k's ``l_k`` classes take outputs ``offset_k .. offset_k+l_k-1``
  (``offset_k`` = the classes of the datasets before it); ``sum(l_k)`` outputs.
- ``merged`` (eq. 2): the largest dataset (the first among equals) keeps its indices; every
  other dataset's class ``y`` takes output ``y`` too, so index 0 (background, by the papers'
  convention) is shared; ``max(l_k)`` outputs. The link eq. 2 means to enforce is background
  to background: when both datasets record one background class at different indices (GTEA's
  is its last class, 10), the smaller dataset's background takes the larger one's output and
  its class at that index takes the freed one.
- ``random`` (eq. 3): as ``merged``, but each smaller dataset's ``l`` classes go to the first
  ``l`` outputs through a random one-to-one map (seeded; the table is saved with the run).
- ``multi-random``: ``count`` random maps per smaller dataset, used as augmentation (each
  training window draws one); evaluation uses the first map.

All functions here are pure: numpy arrays in, numpy arrays out, random maps from a
``numpy.random.Generator`` passed in.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from actrec.errors import ConfigError

__all__ = ["LABEL_ARRANGEMENTS", "OFF_MAP", "make_tables", "num_outputs", "map_labels",
           "unmap_labels", "map_scores", "predict_local", "remap_rows"]

LABEL_ARRANGEMENTS = ("concat", "merged", "random", "multi-random")

OFF_MAP = -2
"""Local prediction of a frame whose argmax over all outputs is no class of its dataset
(the same value as ``actrec.data.labels.OFF_BLOCK``)."""


def _largest(sizes: Sequence[int]) -> int:
    return max(range(len(sizes)), key=lambda k: (sizes[k], -k))


def make_tables(arrangement: str, sizes: Sequence[int], rng: np.random.Generator | None = None,
                count: int = 1, background: Sequence[int | None] | None = None
                ) -> list[list[np.ndarray]]:
    """Per dataset, its list of tables ``[l_k]`` int64 (local class -> output index).

    ``sizes`` are the datasets' class counts. ``random``/``multi-random`` draw from ``rng``
    (required) one permutation per map of each dataset but the largest, in dataset order;
    ``count`` is the number of maps of ``multi-random`` (>= 2). ``background``: each dataset's
    one background class (None: none, or not one) -- ``merged`` links a smaller dataset's to
    the largest one's (see the module docs). ``ConfigError`` for an unknown arrangement or a
    bad count."""
    sizes = [int(s) for s in sizes]
    if arrangement not in LABEL_ARRANGEMENTS:
        raise ConfigError(f"label arrangement must be one of {', '.join(LABEL_ARRANGEMENTS)}, "
                          f"got {arrangement!r}")
    if not sizes or min(sizes) <= 0:
        raise ConfigError(f"every dataset needs at least one class, got {sizes}")
    if arrangement == "concat":
        offsets = np.cumsum([0, *sizes])[:-1]
        return [[np.arange(n, dtype=np.int64) + int(o)] for n, o in zip(sizes, offsets)]
    maps = 1
    if arrangement == "multi-random":
        if count < 2:
            raise ConfigError(f"multi-random needs at least 2 label maps, got {count}")
        maps = count
    elif count != 1:
        raise ConfigError(f"label maps: {count} given, but only multi-random uses several")
    big = _largest(sizes)
    background = list(background) if background is not None else [None] * len(sizes)
    tables = []
    for k, n in enumerate(sizes):
        if k == big or arrangement == "merged":
            table = np.arange(n, dtype=np.int64)
            if k != big:
                _link_background(table, background[k], background[big])
            tables.append([table])
            continue
        if rng is None:
            raise ConfigError(f"the {arrangement} label arrangement needs a random generator")
        tables.append([rng.permutation(n).astype(np.int64) for _ in range(maps)])
    return tables


def _link_background(table: np.ndarray, mine: int | None, theirs: int | None) -> None:
    """Point ``table``'s background class ``mine`` at output ``theirs`` (the largest dataset's
    background), in place; the class that held ``theirs`` takes ``mine``'s old output."""
    if mine is None or theirs is None or table[mine] == theirs:
        return
    held = np.flatnonzero(table == theirs)
    if held.size:
        table[held[0]] = table[mine]
    table[mine] = theirs


def num_outputs(arrangement: str, sizes: Sequence[int]) -> int:
    """Model outputs of an arrangement: ``sum(sizes)`` for concat, else ``max(sizes)``."""
    return int(sum(sizes)) if arrangement == "concat" else int(max(sizes))


def map_labels(labels: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Local labels -> output indices through ``table``; ``-1`` (unlabelled) stays ``-1``."""
    labels = np.asarray(labels)
    table = np.asarray(table)
    return np.where(labels >= 0, table[np.maximum(labels, 0)], labels)


def unmap_labels(outputs: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Output indices -> local labels (the inverse of ``map_labels``): an index that no class
    of the table maps to becomes ``OFF_MAP``; negative values are kept."""
    outputs = np.asarray(outputs)
    table = np.asarray(table)
    inverse = np.full(int(table.max()) + 1 if table.size else 0, OFF_MAP, dtype=np.int64)
    inverse[table] = np.arange(table.size)
    inside = (outputs >= 0) & (outputs < inverse.size)
    local = inverse[np.clip(outputs, 0, max(inverse.size - 1, 0))] if inverse.size else outputs
    return np.where(inside, local, np.where(outputs < 0, outputs, OFF_MAP))


def map_scores(scores: np.ndarray, table: np.ndarray, width: int) -> np.ndarray:
    """Per-class scores ``[..., l]`` -> ``[..., width]`` float32: column ``y`` goes to column
    ``table[y]``, every other column is zero (eqs. 2-4 applied to an input vector)."""
    scores = np.asarray(scores, dtype=np.float32)
    table = np.asarray(table)
    if scores.shape[-1] != table.size:
        raise ValueError(f"scores have {scores.shape[-1]} columns, the label map {table.size}")
    out = np.zeros((*scores.shape[:-1], int(width)), dtype=np.float32)
    out[..., table] = scores
    return out


def predict_local(logits, table, mode: str = "block"):
    """Local class predictions (int64 tensor ``[...]``) of frames of one dataset from logits
    ``[..., K]`` (a torch tensor). ``"block"``: argmax over the dataset's own outputs
    (``table``), returned as the local class. ``"full"``: argmax over all K outputs; an output
    that is no class of the dataset is ``OFF_MAP``."""
    import torch

    index = torch.as_tensor(np.asarray(table), dtype=torch.long, device=logits.device)
    if mode == "block":
        return logits.index_select(-1, index).argmax(dim=-1)
    if mode != "full":
        raise ConfigError(f"prediction must be 'block' or 'full', got {mode!r}")
    best = logits.argmax(dim=-1)
    inverse = torch.full((logits.shape[-1],), OFF_MAP, dtype=torch.long, device=logits.device)
    inverse[index] = torch.arange(index.numel(), device=logits.device)
    return inverse[best]


def remap_rows(x: np.ndarray, y: np.ndarray, rows: np.ndarray, tables: Sequence[np.ndarray],
               choice: np.ndarray, *, scores: bool) -> None:
    """Switch batch rows ``rows`` of one dataset from its first label map to map
    ``choice[i]`` each, in place: labels ``y [T, N]`` (output indices, -1 kept) and, when the
    inputs are per-class ``scores``, input columns of ``x [T, N, W]``."""
    first = np.asarray(tables[0])
    for row, j in zip(rows, choice):
        if j == 0:
            continue
        table = np.asarray(tables[j])
        local = unmap_labels(y[:, row], first)  # [T] local, -1 kept
        y[:, row] = map_labels(local, table)
        if scores:
            view = x[:, int(row)]  # [T, W], a view: an integer index is basic indexing
            cols = view[:, first].copy()  # [T, l] in local class order
            view[:] = 0.0
            view[:, table] = cols
