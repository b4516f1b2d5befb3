"""Giel & Diaz's transfer-learning baselines: ``rnn`` (vanilla ReLU RNN, causal), ``birnn``
(bidirectional, not causal) and ``average`` (mean feature of the window into a 2-layer MLP, not
causal: every frame of a window gets the same whole-window prediction)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from actrec.plugin_api import PluginConfig, TemporalModel
from actrec_plugins.models._common import check_fraction, check_front, check_positive

if TYPE_CHECKING:  # pragma: no cover
    from actrec.nn.base import SequenceModel


@dataclass(frozen=True)
class RNNConfig(PluginConfig):
    hidden: int = 256
    layers: int = 1
    dropout: float = 0.0  # between stacked layers (training only)
    input_dropout: float = 0.0  # on the input features (training only)
    embed: int = 0  # > 0: Linear + LayerNorm + ReLU + dropout embedding (actrec.nn.embed)
    embed_dropout: float = 0.2

    def __post_init__(self) -> None:
        check_positive(self, "hidden", "layers")
        check_fraction(self, "dropout")
        check_front(self)


@dataclass(frozen=True)
class AverageConfig(PluginConfig):
    hidden: int = 512
    dropout: float = 0.5

    def __post_init__(self) -> None:
        check_positive(self, "hidden")
        check_fraction(self, "dropout")


class RNNModel(TemporalModel):
    """Vanilla ReLU RNN with a per-frame classifier; causal."""

    name = "rnn"
    Config = RNNConfig
    causal = True
    bidirectional = False

    def build(self, input_dim: int, num_classes: int) -> SequenceModel:
        from actrec.nn.models import TorchRNNClassifier

        c = self.config
        return TorchRNNClassifier(
            input_dim, num_classes, c.hidden, c.layers, kind="rnn", dropout=c.dropout,
            bidirectional=self.bidirectional, input_dropout=c.input_dropout, embed=c.embed,
            embed_dropout=c.embed_dropout,
        )


class BiRNNModel(RNNModel):
    """Bidirectional ReLU RNN; per-frame logits from both directions; not causal."""

    name = "birnn"
    causal = False
    bidirectional = True


class AverageModel(TemporalModel):
    """Window-mean features into a 2-layer ReLU MLP with dropout; not causal."""

    name = "average"
    Config = AverageConfig
    causal = False

    def build(self, input_dim: int, num_classes: int) -> SequenceModel:
        from actrec.nn.models import AverageClassifier

        return AverageClassifier(input_dim, num_classes, self.config.hidden, self.config.dropout)
