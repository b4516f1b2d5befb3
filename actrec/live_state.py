"""Per-stream model states stepped in one batch.

``SequenceModel.step`` takes a batch of sequences and a state for that batch (a model-specific
pytree of tensors and plain values). Live recognition keeps one state per stream, so that a
stream can start, stop or be reset on its own, and joins the states of the streams that have a
frame into one batch for each step. Which axis of each leaf is the batch is found once per
model by comparing ``init_state`` for one and for two sequences: a leaf whose shape differs in
exactly one axis is batched along it; a leaf whose shape does not differ (a step counter, a
constant) is shared, and only streams whose shared leaves are equal are stepped together (a
batch-normalised LSTM counts steps in its state: streams started at different times are
stepped in different batches, never with another stream's timestep statistics).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import Any

__all__ = ["StateBatcher"]

_SHARED = None  # the axis of a leaf that has no batch axis


def _flatten(tree: Any) -> tuple[list[Any], Callable[[list[Any]], Any]]:
    """Leaves of a pytree of dicts, lists and tuples (in a fixed order) and the function that
    rebuilds a tree of the same structure from new leaves."""
    if isinstance(tree, dict):
        keys = list(tree)
        parts = [_flatten(tree[k]) for k in keys]
    elif isinstance(tree, (list, tuple)):
        keys = None
        parts = [_flatten(v) for v in tree]
    else:
        return [tree], lambda leaves: leaves[0]
    sizes = [len(p[0]) for p in parts]
    leaves = [leaf for p in parts for leaf in p[0]]

    def rebuild(new: list[Any]) -> Any:
        out, at = [], 0
        for (_, build), n in zip(parts, sizes):
            out.append(build(new[at : at + n]))
            at += n
        if keys is not None:
            return dict(zip(keys, out))
        if hasattr(tree, "_fields"):  # a named tuple
            return type(tree)(*out)
        return tuple(out) if isinstance(tree, tuple) else out

    return leaves, rebuild


def _shape(leaf: Any) -> tuple[int, ...] | None:
    shape = getattr(leaf, "shape", None)
    return tuple(shape) if shape is not None else None


class StateBatcher:
    """Joins per-stream states (each for a batch of one) into one batch state and splits it
    again, for a model whose ``init_state(batch, domain)`` it probes once.

    ``batchable`` is False when some leaf's shape differs in more than one axis between batches
    of one and two (no single batch axis): such a model is stepped one stream at a time."""

    def __init__(self, init_state: Callable[[int, Any], Any], domain: Callable[[int], Any]):
        self._init = init_state
        self._domain = domain
        one, _ = _flatten(init_state(1, domain(1)))
        two, _ = _flatten(init_state(2, domain(2)))
        self.axes: list[int | None] = []
        self.batchable = len(one) == len(two)
        for a, b in zip(one, two):
            sa, sb = _shape(a), _shape(b)
            if sa is None or sa == sb:
                self.axes.append(_SHARED)
                continue
            differ = [i for i, (x, y) in enumerate(zip(sa, sb)) if x != y]
            if len(sa) != len(sb) or len(differ) != 1 or (sa[differ[0]], sb[differ[0]]) != (1, 2):
                self.batchable = False
                self.axes.append(_SHARED)
            else:
                self.axes.append(differ[0])

    def fresh(self) -> Any:
        """The state of one new stream (a batch of one)."""
        return self._init(1, self._domain(1))

    def key(self, state: Any) -> Hashable:
        """What streams stepped in one batch must share: the values of the shared leaves
        (every stream gets its own key when the model cannot be batched)."""
        if not self.batchable:
            return id(state)
        leaves, _ = _flatten(state)
        out = []
        for leaf, axis in zip(leaves, self.axes):
            if axis is not _SHARED:
                continue
            if hasattr(leaf, "detach"):
                out.append((tuple(leaf.shape), leaf.detach().cpu().numpy().tobytes()))
            else:
                out.append(repr(leaf))
        return tuple(out)

    def join(self, states: Sequence[Any]) -> Any:
        """One state for the batch of ``states`` (in order); they must share ``key``."""
        import torch

        if len(states) == 1:
            return states[0]
        flat = [_flatten(s) for s in states]
        rebuild = flat[0][1]
        leaves = []
        for i, axis in enumerate(self.axes):
            column = [f[0][i] for f in flat]
            leaves.append(column[0] if axis is _SHARED else torch.cat(column, dim=axis))
        return rebuild(leaves)

    def split(self, state: Any, count: int) -> list[Any]:
        """The per-stream states of a batch state of ``count`` streams (views, batch of one)."""
        if count == 1:
            return [state]
        leaves, rebuild = _flatten(state)
        out = []
        for b in range(count):
            out.append(rebuild([leaf if axis is _SHARED else leaf.narrow(axis, b, 1).contiguous()
                                for leaf, axis in zip(leaves, self.axes)]))
        return out
