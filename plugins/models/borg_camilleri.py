"""``gru`` (Borg & Camilleri, ICASSP 2019): their released Keras model, per frame. Two stacked
Keras-2 GRU layers of 256 units (hard-sigmoid gates, one bias per gate, Glorot/orthogonal
initialisation; ``actrec.nn.gru``) with dropout 0.3 on each layer's input (the paper's "GRU
dropout"; the released code's ``GRU(dropout=0.3)``), then batch norm (Keras' epsilon 1e-3 and
momentum), a 64-unit ReLU layer, dropout 0.4 and the classifier; causal. On 4096 VGG-16 fc1
codes and 3 classes it has the paper's 3,754,243 trainable parameters (Table 3).

Their model classifies a 20-frame segment from the last GRU state; actrec's gives every frame
the prediction of its state (for the last frame of a segment, the same thing).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from actrec.errors import ConfigError
from actrec.plugin_api import PluginConfig, TemporalModel
from actrec_plugins.models._common import check_fraction, check_front, check_positive

if TYPE_CHECKING:  # pragma: no cover
    from actrec.nn.base import SequenceModel

RECURRENT_ACTIVATIONS = ("hard_sigmoid", "sigmoid")  # as actrec.nn.gru (no torch import here)


@dataclass(frozen=True)
class GRUConfig(PluginConfig):
    hidden: int = 256
    layers: int = 2
    gru_dropout: float = 0.3  # on each GRU layer's input, per gate, fixed over time (Keras)
    recurrent_dropout: float = 0.0  # on each GRU layer's state (Keras' recurrent_dropout)
    recurrent_activation: str = "hard_sigmoid"  # the GRU gates' (Keras 2's default)
    fc: int = 64
    dropout: float = 0.4
    input_dropout: float = 0.0  # on the input features (training only)
    embed: int = 0  # > 0: Linear + LayerNorm + ReLU + dropout embedding (actrec.nn.embed)
    embed_dropout: float = 0.2

    def __post_init__(self) -> None:
        check_positive(self, "hidden", "layers", "fc")
        check_fraction(self, "gru_dropout", "recurrent_dropout", "dropout")
        check_front(self)
        if self.recurrent_activation not in RECURRENT_ACTIVATIONS:
            raise ConfigError(f"model option 'recurrent_activation' must be one of "
                              f"{', '.join(RECURRENT_ACTIVATIONS)}, got "
                              f"{self.recurrent_activation!r}")


class GRUModel(TemporalModel):
    """Borg & Camilleri's stacked Keras GRU with a BN / ReLU / dropout classifier; causal."""

    name = "gru"
    Config = GRUConfig
    causal = True

    def build(self, input_dim: int, num_classes: int) -> SequenceModel:
        from actrec.nn.models import GRUClassifier

        c = self.config
        return GRUClassifier(
            input_dim, num_classes, c.hidden, c.layers, c.recurrent_dropout, c.fc, c.dropout,
            gru_dropout=c.gru_dropout, recurrent_activation=c.recurrent_activation,
            input_dropout=c.input_dropout, embed=c.embed, embed_dropout=c.embed_dropout,
        )
