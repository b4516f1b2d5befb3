"""The input side of the recurrent models: input dropout, per-domain projection, embedding.

``InputEmbedding`` is MiniROAD's (An et al., ICCV 2023) frame embedding: ``Linear(D -> E)``,
``LayerNorm(E)``, ReLU, dropout. LayerNorm normalises each frame by itself, so, unlike batch
norm, it needs no statistics over the batch or time: training windows, padding and online
stepping all see the same function of the frame.

The recurrent models (``actrec.nn.models``) apply, in this order: dropout on the raw
features (``input_dropout``), the per-domain projection (``input_projection``) and this
embedding (``embed`` > 0), each only when asked for: a model built without them keeps its
parameters (names, shapes, initial values) as before.
"""

from __future__ import annotations

from torch import nn

__all__ = ["InputEmbedding"]


class InputEmbedding(nn.Sequential):
    """``Linear(D -> E)``, ``LayerNorm(E)``, ReLU, ``Dropout(p)`` applied to every frame."""

    def __init__(self, input_dim: int, dim: int, dropout: float = 0.0):
        super().__init__(nn.Linear(input_dim, dim), nn.LayerNorm(dim), nn.ReLU(),
                         nn.Dropout(dropout))
