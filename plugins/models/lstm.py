"""``lstm``: a plain LSTM (``torch.nn.LSTM``: the cuDNN / oneDNN kernels) with a per-frame
classifier. Options for regularisation: ``input_dropout`` on the features, ``dropout`` between
stacked layers, and ``embed=E``: MiniROAD's frame embedding (Linear to E, LayerNorm, ReLU,
dropout ``embed_dropout``) in front of the LSTM (``actrec.nn.embed``).

``peepholes=true``: Greff et al.'s "vanilla" LSTM with peephole connections from the cell state
to the gates (``actrec.nn.peephole``), the LSTM the Recurrent Assistance paper (Perrett & Damen,
ICCVW 2017, Sec. 4) says it uses; the ``recassist`` preset sets it. Off by default: the DDLSTM
paper's LSTM (its eqs. 1-3) has none."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from actrec.plugin_api import PluginConfig, TemporalModel
from actrec_plugins.models._common import check_fraction, check_front, check_positive

if TYPE_CHECKING:  # pragma: no cover
    from actrec.nn.base import SequenceModel


@dataclass(frozen=True)
class LSTMConfig(PluginConfig):
    hidden: int = 128
    layers: int = 1
    dropout: float = 0.0  # between stacked layers (training only)
    input_projection: bool = False  # per-domain Linear(D -> hidden) in front
    input_dropout: float = 0.0  # on the input features (training only)
    embed: int = 0  # > 0: Linear + LayerNorm + ReLU + dropout embedding of that width
    embed_dropout: float = 0.2  # the embedding's dropout (MiniROAD's 0.2)
    peepholes: bool = False  # Greff et al.'s peephole connections (Recurrent Assistance)

    def __post_init__(self) -> None:
        check_positive(self, "hidden", "layers")
        check_fraction(self, "dropout")
        check_front(self)


class LSTMModel(TemporalModel):
    """Unnormalised LSTM baseline; causal."""

    name = "lstm"
    Config = LSTMConfig
    causal = True

    def build(self, input_dim: int, num_classes: int) -> SequenceModel:
        from actrec.nn.models import TorchRNNClassifier

        c = self.config
        return TorchRNNClassifier(
            input_dim, num_classes, c.hidden, c.layers, kind="lstm", dropout=c.dropout,
            input_projection=c.input_projection, input_dropout=c.input_dropout, embed=c.embed,
            embed_dropout=c.embed_dropout, peepholes=c.peepholes,
        )
