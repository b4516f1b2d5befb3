"""Giel & Diaz's transfer-learning baselines: ``rnn`` (vanilla ReLU RNN, causal), ``birnn``
(bidirectional, not causal) and ``average`` (the mean feature of a clip into a 2-layer ReLU MLP
with dropout; their clips are 10 frames: here every frame is classified from the clip of the
``window`` = 10 frames that ends at it, so it is causal; ``window=0`` averages the whole
sequence, not causal, as runs recorded before the option did)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from actrec.errors import ConfigError
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
    window: int = 10  # frames averaged, ending at the classified frame (0: the whole sequence)

    # What a run recorded before an option existed was trained with (actrec.components).
    RECORDED_BEFORE: ClassVar[dict[str, Any]] = {"window": 0}

    def __post_init__(self) -> None:
        check_positive(self, "hidden")
        check_fraction(self, "dropout")
        if self.window < 0:
            raise ConfigError(f"model option 'window' must be a number of frames >= 1, or 0 "
                              f"(the whole sequence), got {self.window}")


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
    """The mean of the last ``window`` frames into a 2-layer ReLU MLP with dropout; causal
    (``window=0``: whole-sequence means, not causal)."""

    name = "average"
    Config = AverageConfig
    causal = True

    def build(self, input_dim: int, num_classes: int) -> SequenceModel:
        from actrec.nn.models import AverageClassifier

        c = self.config
        return AverageClassifier(input_dim, num_classes, c.hidden, c.dropout, window=c.window)
