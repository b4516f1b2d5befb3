"""``miniroad``: MiniROAD (An et al., "MiniROAD: Minimal RNN Framework for Online Action
Detection", ICCV 2023), the strong minimal online baseline.

Architecture as published: every frame through an embedding (``Linear(D -> embed)``,
``LayerNorm``, ReLU, dropout), one GRU from a zero state, a ReLU on its states and a linear
classifier per frame. The published defaults are ``embed=2048``, ``hidden=1024``, one layer,
dropout 0.2; the recipe that goes with it (loss on the last frame of 128-frame windows taken at
stride 4, AdamW with lr 1e-4 and weight decay 0.05) is the preset ``actrec train --preset
miniroad``. Causal: online stepping carries the GRU state over the whole video.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from actrec.plugin_api import PluginConfig, TemporalModel
from actrec_plugins.models._common import check_fraction, check_positive

if TYPE_CHECKING:  # pragma: no cover
    from actrec.nn.base import SequenceModel


@dataclass(frozen=True)
class MiniROADConfig(PluginConfig):
    hidden: int = 1024  # GRU width
    embed: int = 2048  # embedding width
    layers: int = 1
    dropout: float = 0.2  # the embedding's dropout (training only)
    input_projection: bool = False  # per-domain Linear(D -> embed) in front of the embedding

    def __post_init__(self) -> None:
        check_positive(self, "hidden", "embed", "layers")
        check_fraction(self, "dropout")


class MiniROADModel(TemporalModel):
    """MiniROAD: LayerNorm embedding, GRU, ReLU, per-frame classifier; causal."""

    name = "miniroad"
    Config = MiniROADConfig
    causal = True

    def build(self, input_dim: int, num_classes: int) -> SequenceModel:
        from actrec.nn.models import MiniROADClassifier

        c = self.config
        return MiniROADClassifier(input_dim, num_classes, c.hidden, c.embed, c.layers, c.dropout,
                                  input_projection=c.input_projection)
