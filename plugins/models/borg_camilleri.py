"""``gru`` (Borg & Camilleri): stacked GRU (2 x 256) with recurrent dropout 0.3, then batch
norm, a 64-unit ReLU layer, dropout 0.4 and a per-frame classifier; causal."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from actrec.plugin_api import PluginConfig, TemporalModel
from actrec_plugins.models._common import check_fraction, check_front, check_positive

if TYPE_CHECKING:  # pragma: no cover
    from actrec.nn.base import SequenceModel


@dataclass(frozen=True)
class GRUConfig(PluginConfig):
    hidden: int = 256
    layers: int = 2
    recurrent_dropout: float = 0.3
    fc: int = 64
    dropout: float = 0.4
    input_dropout: float = 0.0  # on the input features (training only)
    embed: int = 0  # > 0: Linear + LayerNorm + ReLU + dropout embedding (actrec.nn.embed)
    embed_dropout: float = 0.2

    def __post_init__(self) -> None:
        check_positive(self, "hidden", "layers", "fc")
        check_fraction(self, "recurrent_dropout", "dropout")
        check_front(self)


class GRUModel(TemporalModel):
    """Stacked GRU with recurrent dropout and a BN / ReLU / dropout classifier; causal."""

    name = "gru"
    Config = GRUConfig
    causal = True

    def build(self, input_dim: int, num_classes: int) -> SequenceModel:
        from actrec.nn.models import GRUClassifier

        c = self.config
        return GRUClassifier(
            input_dim, num_classes, c.hidden, c.layers, c.recurrent_dropout, c.fc, c.dropout,
            input_dropout=c.input_dropout, embed=c.embed, embed_dropout=c.embed_dropout,
        )
