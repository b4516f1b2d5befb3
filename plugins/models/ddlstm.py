"""``ddlstm`` (Perrett & Damen 2019) and ``bnlstm`` (Cooijmans et al.): batch-normalised LSTMs.

The DDLSTM normalises the input and recurrent products with dual-domain batch norm (one
``alpha`` pair per layer, projected into ``[n_i/N, 1]`` after every optimiser step); the BNLSTM
uses plain per-timestep batch norm, one set of statistics for a mixed batch. ``max_len`` is the
number of timesteps with their own running statistics; None (the default) means the run's
``--history``, which the trainer fills in before ``build`` (a ``max_len`` below the history is a
``ConfigError``). The model records how many leading timesteps training reached and uses the
last of them for every later timestep. Regularisation options: ``input_dropout`` on the
features, ``dropout`` between stacked layers, and ``embed=E``: a per-frame Linear + LayerNorm +
ReLU + dropout embedding in front (``actrec.nn.embed``; LayerNorm needs no batch statistics).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from actrec.errors import ConfigError
from actrec.plugin_api import PluginConfig, TemporalModel
from actrec_plugins.models._common import check_eps, check_fraction, check_front, check_positive

if TYPE_CHECKING:  # pragma: no cover
    from actrec.nn.base import SequenceModel

NORM_AFFINE = ("learned", "fixed")  # as actrec.nn.models.NORM_AFFINE (no torch import here)


@dataclass(frozen=True)
class BNLSTMConfig(PluginConfig):
    hidden: int = 128
    layers: int = 3
    max_len: int | None = None  # None: the run's --history (filled in by the trainer)
    momentum: float = 0.1
    eps: float = 1e-5
    input_projection: bool = False  # per-domain Linear(D -> hidden) in front
    dropout: float = 0.0  # between stacked layers (training only)
    input_dropout: float = 0.0  # on the input features (training only)
    embed: int = 0  # > 0: Linear + LayerNorm + ReLU + dropout embedding (actrec.nn.embed)
    embed_dropout: float = 0.2
    # The batch norms' gamma (0.1) and beta (0): "learned" from there (Cooijmans et al.,
    # ddbn.md) or "fixed" at those values (the DDLSTM paper, Sec. 3: "fixed ... in practice").
    norm_affine: str = "learned"

    def __post_init__(self) -> None:
        check_positive(self, "hidden", "layers")
        check_fraction(self, "dropout")
        check_front(self)
        if self.norm_affine not in NORM_AFFINE:
            raise ConfigError(f"model option 'norm_affine' must be one of "
                              f"{', '.join(NORM_AFFINE)}, got {self.norm_affine!r}")
        if self.max_len is not None:
            check_positive(self, "max_len")
        check_fraction(self, "momentum", upper_inclusive=True)
        check_eps(self)


@dataclass(frozen=True)
class DDLSTMConfig(BNLSTMConfig):
    alpha_init: float = 0.75
    # None: the alphas train with the weights (the paper); 0: frozen at alpha_init; else their
    # own optimiser group with this learning rate (actrec.nn.alpha, docs/alpha-dynamics.md).
    alpha_lr: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= self.alpha_init <= 1.0:
            raise ConfigError(
                f"model option 'alpha_init' must lie in [0, 1], got {self.alpha_init}"
            )
        if self.alpha_lr is not None and not (math.isfinite(self.alpha_lr)
                                              and self.alpha_lr >= 0):
            raise ConfigError(
                f"model option 'alpha_lr' must be a learning rate >= 0 (0 freezes the alphas at "
                f"alpha_init; leave it unset to train them with the weights), got {self.alpha_lr}"
            )


class BNLSTMModel(TemporalModel):
    """Batch-normalised LSTM (default 3 x 128); causal."""

    name = "bnlstm"
    Config = BNLSTMConfig
    causal = True
    dual = False

    def build(self, input_dim: int, num_classes: int) -> SequenceModel:
        from actrec.nn.models import NormLSTMClassifier

        c = self.config
        if c.max_len is None:
            raise ConfigError(
                f"model '{self.name}': option 'max_len' is not set; give max_len (the number of "
                "timesteps with their own statistics, at least the training history) or let "
                "the trainer set it to --history"
            )
        return NormLSTMClassifier(
            input_dim, num_classes, c.hidden, c.layers, c.max_len, dual=self.dual,
            momentum=c.momentum, eps=c.eps, alpha_init=getattr(c, "alpha_init", 0.75),
            input_projection=c.input_projection, dropout=c.dropout,
            input_dropout=c.input_dropout, embed=c.embed, embed_dropout=c.embed_dropout,
            alpha_lr=getattr(c, "alpha_lr", None), norm_affine=c.norm_affine,
        )


class DDLSTMModel(BNLSTMModel):
    """Dual-domain LSTM (default 3 x 128, alpha 0.75); causal."""

    name = "ddlstm"
    Config = DDLSTMConfig
    dual = True
