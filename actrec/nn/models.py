"""The sequence models the built-in model plugins build (``actrec.nn.base.SequenceModel``s).

Every model maps ``x [T, N, D]``, ``domain [N]`` and an optional ``mask [T, N]`` (True on real
frames, padding at the end of rows) to per-frame logits ``[T, N, K]``. Padded frames are set to
zero on entry and kept out of every statistic (per-timestep batch norms, the GRU model's batch
norm, the Average model's mean); the BiRNN reads each row only up to its length. Causal models
also run frame by frame: ``init_state`` then ``step`` in eval mode gives the logits of
``forward`` (running statistics per sequence domain; the state carries the timestep counter
that picks the per-timestep statistics slot).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from actrec.nn.alpha import alpha_overrides, freeze_alphas
from actrec.nn.base import SequenceModel, check_mask, zero_padding
from actrec.ops.domains import check_domain_flags
from actrec.nn.embed import InputEmbedding
from actrec.nn.gru import DropoutGRU
from actrec.nn.heads import DomainProjection
from actrec.nn.lstm import NormLSTM

__all__ = [
    "NORM_AFFINE",
    "NormLSTMClassifier",
    "TorchRNNClassifier",
    "AverageClassifier",
    "GRUClassifier",
    "MiniROADClassifier",
]


NORM_AFFINE = ("learned", "fixed")  # the batch norms' gamma/beta in NormLSTMClassifier


def _eval_only(model: nn.Module) -> None:
    if model.training:
        name = type(model).__name__
        raise RuntimeError(f"{name}.step() runs in eval mode: call model.eval() first")


class _Projected(SequenceModel):
    """The optional input side of a temporal network, per frame and in this order: dropout on
    the features, a per-domain projection to ``out_dim``, and MiniROAD's embedding
    (``actrec.nn.embed``). Pieces not asked for are not built (no parameters, no randomness)."""

    def _init_projection(self, input_dim: int, out_dim: int, enabled: bool, *, embed: int = 0,
                         input_dropout: float = 0.0, embed_dropout: float = 0.0) -> int:
        """Build the pieces; returns the width the temporal network receives."""
        self.input_dropout = nn.Dropout(input_dropout) if input_dropout > 0 else None
        self.input_projection = DomainProjection(input_dim, out_dim) if enabled else None
        d = out_dim if enabled else input_dim
        self.embedding = InputEmbedding(d, embed, embed_dropout) if embed > 0 else None
        return embed if embed > 0 else d

    def _project(self, x: Tensor, domain: Tensor) -> Tensor:  # [..., N, D] -> [..., N, D']
        if self.input_dropout is not None:
            x = self.input_dropout(x)
        if self.input_projection is not None:
            x = self.input_projection(x, domain)
        if self.embedding is not None:
            x = self.embedding(x)
        return x


class NormLSTMClassifier(_Projected):
    """DDLSTM (``dual=True``) or BNLSTM stack with a per-frame linear classifier.

    ``norm_affine``: the batch norms' scale and offset (gamma, beta) start at 0.1 and 0 and
    are ``"learned"`` (Cooijmans et al.; ``ddbn.md``), or stay ``"fixed"`` there: the DDLSTM
    paper (Sec. 3) writes that they are fixed at 0 and 0.1 in practice."""

    def __init__(
        self,
        input_dim: int,
        num_classes: int,
        hidden: int = 128,
        layers: int = 3,
        max_len: int = 200,
        *,
        dual: bool = True,
        momentum: float = 0.1,
        eps: float = 1e-5,
        alpha_init: float = 0.75,
        input_projection: bool = False,
        dropout: float = 0.0,
        input_dropout: float = 0.0,
        embed: int = 0,
        embed_dropout: float = 0.0,
        alpha_lr: float | None = None,
        norm_affine: str = "learned",
    ):
        super().__init__()
        if norm_affine not in NORM_AFFINE:
            raise ValueError(f"norm_affine must be one of {NORM_AFFINE}, got {norm_affine!r}")
        d = self._init_projection(input_dim, hidden, input_projection, embed=embed,
                                  input_dropout=input_dropout, embed_dropout=embed_dropout)
        self.rnn = NormLSTM(
            d, hidden, layers, max_len, dual=dual, momentum=momentum, eps=eps,
            alpha_init=alpha_init, dropout=dropout,
        )
        self.head = nn.Linear(hidden, num_classes)
        # None: alphas train with the weights; 0: frozen; else their own lr (actrec.nn.alpha).
        self.alpha_lr = alpha_lr
        if dual and alpha_lr == 0:
            freeze_alphas(self.rnn)
        self.norm_affine = norm_affine
        if norm_affine == "fixed":  # gamma 0.1, beta 0 for good: no gradient, no optimiser
            for layer in self.rnn.layers:
                for bn in layer.norms():
                    bn.weight.requires_grad_(False)
                    bn.bias.requires_grad_(False)

    def forward(self, x: Tensor, domain: Tensor, mask: Tensor | None = None) -> Tensor:
        mask = check_mask(mask, x)
        x = self._project(zero_padding(x, mask), domain)  # [T, N, D']
        return self.head(self.rnn(x, domain, mask))  # [T, N, K]

    def init_state(self, batch: int, domain: Tensor) -> dict[str, Any]:
        like = self.head.weight
        domain = check_domain_flags(domain, batch)  # once, not at every step
        return {"t": 0, "domain": domain, "layers": self.rnn.init_state(batch, like)}

    def step(self, x_t: Tensor, state: dict[str, Any]) -> tuple[Tensor, dict[str, Any]]:
        _eval_only(self)
        t, domain = state["t"], state["domain"]
        h, layers = self.rnn.step(self._project(x_t, domain), state["layers"], t, domain)
        return self.head(h), {"t": t + 1, "domain": domain, "layers": layers}  # [N, K]

    def after_optimizer_step(self) -> None:
        self.rnn.project_alphas()

    def optimizer_overrides(self) -> list[tuple[list[nn.Parameter], dict[str, Any]]]:
        return alpha_overrides(self.rnn, self.alpha_lr)


class TorchRNNClassifier(_Projected):
    """``torch.nn.LSTM`` / ``torch.nn.RNN`` (cuDNN / oneDNN paths) with a per-frame classifier.

    ``bidirectional=True`` makes it the non-causal BiRNN; its logits are a linear map of both
    directions' states, i.e. the sum of a forward and a backward per-frame output.
    ``peepholes=True`` (LSTM only) makes it the peephole LSTM of Greff et al.
    (``actrec.nn.peephole``), the Recurrent Assistance paper's "vanilla" LSTM.
    """

    def __init__(
        self,
        input_dim: int,
        num_classes: int,
        hidden: int,
        layers: int = 1,
        *,
        kind: str = "lstm",
        dropout: float = 0.0,
        bidirectional: bool = False,
        input_projection: bool = False,
        input_dropout: float = 0.0,
        embed: int = 0,
        embed_dropout: float = 0.0,
        peepholes: bool = False,
    ):
        super().__init__()
        d = self._init_projection(input_dim, hidden, input_projection, embed=embed,
                                  input_dropout=input_dropout, embed_dropout=embed_dropout)
        rnn_dropout = dropout if layers > 1 else 0.0  # torch warns about dropout with one layer
        if peepholes and (kind != "lstm" or bidirectional):
            raise ValueError("peephole connections exist for the causal LSTM only")
        if peepholes:
            from actrec.nn.peephole import PeepholeLSTM

            self.rnn = PeepholeLSTM(d, hidden, layers, dropout=rnn_dropout)
        elif kind == "lstm":
            self.rnn = nn.LSTM(d, hidden, layers, dropout=rnn_dropout, bidirectional=bidirectional)
        elif kind == "rnn":
            self.rnn = nn.RNN(
                d, hidden, layers, nonlinearity="relu", dropout=rnn_dropout,
                bidirectional=bidirectional,
            )
        else:
            raise ValueError(f"unknown recurrent kind {kind!r}; expected 'lstm' or 'rnn'")
        self.causal = not bidirectional
        self.head = nn.Linear(hidden * (2 if bidirectional else 1), num_classes)

    def forward(self, x: Tensor, domain: Tensor, mask: Tensor | None = None) -> Tensor:
        mask = check_mask(mask, x)
        x = self._project(zero_padding(x, mask), domain)  # [T, N, D']
        if mask is None or self.causal:  # padding is at the end: causal states never see it
            out, _ = self.rnn(x)  # [T, N, H * directions]
        else:  # the backward direction must start at each row's last real frame
            lengths = mask.sum(0).clamp_min(1).cpu()  # [N]
            packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
            out, _ = pad_packed_sequence(self.rnn(packed)[0], total_length=x.shape[0])
        return self.head(out)  # [T, N, K]

    def _refuse(self) -> None:
        raise NotImplementedError(
            f"the bidirectional {self.rnn.mode} model is not causal (it reads future frames): "
            "no online inference"
        )

    def init_state(self, batch: int, domain: Tensor):
        if not self.causal:
            self._refuse()
        z = self.head.weight.new_zeros(self.rnn.num_layers, batch, self.rnn.hidden_size)
        lstm = self.rnn.mode == "LSTM"  # torch.nn.LSTM or the peephole LSTM: (h, c)
        return {"domain": domain, "h": (z, z.clone()) if lstm else z}

    def step(self, x_t: Tensor, state):
        if not self.causal:
            self._refuse()
        _eval_only(self)
        x_t = self._project(x_t, state["domain"])
        out, h = self.rnn(x_t[None], state["h"])  # [1, N, H]
        return self.head(out[0]), {"domain": state["domain"], "h": h}


class AverageClassifier(SequenceModel):
    """Giel & Diaz's 'Average' baseline, frame by frame: the mean of the features of the last
    ``window`` frames (the frame itself and the ``window - 1`` before it; fewer at a sequence's
    start) goes through a 2-layer ReLU MLP with dropout. Giel & Diaz classify a clip of 10
    frames from their mean; here every frame is classified from the clip that ends at it, so
    the model is causal and runs online (``step`` keeps the last ``window - 1`` frames).

    ``window = 0``: the mean of the whole sequence for every frame (not causal; what runs
    recorded before the window existed were trained with: over a whole test video it gives
    every frame one prediction)."""

    def __init__(self, input_dim: int, num_classes: int, hidden: int = 512, dropout: float = 0.5,
                 window: int = 10):
        super().__init__()
        if window < 0:
            raise ValueError(f"window must be >= 0 (0: the whole sequence), got {window}")
        self.window = window
        self.causal = window > 0
        self.mlp = nn.Sequential(
            nn.Linear(input_dim, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: Tensor, domain: Tensor, mask: Tensor | None = None) -> Tensor:
        """Frame t of row n gets the logits of the mean of row n's real frames
        ``max(0, t - window + 1) .. t`` (``window`` 0: of all its real frames)."""
        mask = check_mask(mask, x)
        x = zero_padding(x, mask)
        real = (torch.ones(x.shape[:2], dtype=x.dtype, device=x.device) if mask is None
                else mask.to(x.dtype))  # [T, N]
        if self.window == 0:
            mean = x.sum(0) / real.sum(0).clamp_min(1)[:, None]  # [N, D]
            return self.mlp(mean)[None].expand(x.shape[0], -1, -1)  # [T, N, K]
        total, count = x.clone(), real.clone()  # [T, N, D], [T, N]
        for k in range(1, min(self.window, x.shape[0])):  # add frame t - k to frame t
            total[k:] += x[:-k]
            count[k:] += real[:-k]
        return self.mlp(total / count.clamp_min(1)[..., None])  # [T, N, K]

    def _refuse(self) -> None:
        raise NotImplementedError(
            "the Average model with window=0 averages whole sequences (it is not causal): no "
            "online inference")

    def init_state(self, batch: int, domain: Tensor):
        if not self.causal:
            self._refuse()
        w = self.mlp[0].weight
        return {"frames": w.new_zeros(self.window - 1, batch, w.shape[1]), "t": 0}

    def step(self, x_t: Tensor, state):
        if not self.causal:
            self._refuse()
        _eval_only(self)
        frames = state["frames"]  # [window - 1, N, D]: the previous frames, newest first
        t = state["t"]
        total = x_t + frames.sum(0)  # frames before the sequence's start are zeros
        mean = total / min(t + 1, self.window)
        frames = torch.cat([x_t[None], frames[:-1]]) if self.window > 1 else frames
        return self.mlp(mean), {"frames": frames, "t": t + 1}


class GRUClassifier(_Projected):
    """Borg & Camilleri: stacked Keras-2 GRU (``actrec.nn.gru``), then per frame batch norm, a
    ReLU layer, dropout and the classifier. The batch norm normalises every frame's features
    over all real frames of the batch (its statistics and running statistics never see
    padding); at evaluation it uses its running statistics (so it is causal). Its epsilon
    (1e-3) and momentum (0.01: Keras' 0.99 for the old value) are Keras' defaults, which the
    authors' model used. ``gru_dropout`` is the GRU layers' input dropout (the paper's "GRU
    dropout", 0.3 in the ``gru`` plugin), ``recurrent_dropout`` the dropout of their state."""

    def __init__(
        self,
        input_dim: int,
        num_classes: int,
        hidden: int = 256,
        layers: int = 2,
        recurrent_dropout: float = 0.0,
        fc: int = 64,
        dropout: float = 0.4,
        *,
        gru_dropout: float = 0.0,
        recurrent_activation: str = "hard_sigmoid",
        input_dropout: float = 0.0,
        embed: int = 0,
        embed_dropout: float = 0.0,
    ):
        super().__init__()
        d = self._init_projection(input_dim, hidden, False, embed=embed,
                                  input_dropout=input_dropout, embed_dropout=embed_dropout)
        self.rnn = DropoutGRU(d, hidden, layers, recurrent_dropout, dropout=gru_dropout,
                              recurrent_activation=recurrent_activation)
        self.norm = nn.BatchNorm1d(hidden, eps=1e-3, momentum=0.01)
        self.classifier = nn.Sequential(
            nn.Linear(hidden, fc), nn.ReLU(), nn.Dropout(dropout), nn.Linear(fc, num_classes)
        )

    def _head(self, h: Tensor) -> Tensor:  # [M, H] -> [M, K]
        return self.classifier(self.norm(h))

    def forward(self, x: Tensor, domain: Tensor, mask: Tensor | None = None) -> Tensor:
        mask = check_mask(mask, x)
        h = self.rnn(self._project(zero_padding(x, mask), domain))  # [T, N, H]
        t, n, _ = h.shape
        flat = h.reshape(t * n, -1)  # [T*N, H]
        if mask is None:
            return self._head(flat).reshape(t, n, -1)
        real = mask.reshape(t * n)  # [T*N]
        logits = self._head(flat[real])  # [M, K]: the batch norm sees the M real frames only
        out = logits.new_zeros(t * n, logits.shape[1]).index_put((real,), logits)  # [T*N, K]
        return out.reshape(t, n, -1)  # [T, N, K], padded frames 0

    def init_state(self, batch: int, domain: Tensor):
        return {"h": self.rnn.init_state(batch, self.norm.weight)}

    def step(self, x_t: Tensor, state):
        _eval_only(self)
        h, hs = self.rnn.step(self._project(x_t, None), state["h"])
        return self._head(h), {"h": hs}


class MiniROADClassifier(_Projected):
    """MiniROAD (An et al., ICCV 2023) as published: every frame through ``Linear(D -> E)``,
    ``LayerNorm``, ReLU and dropout, then a GRU (``torch.nn.GRU``, zero initial state), a ReLU
    on its states and a linear classifier per frame. Causal: ``step`` carries the GRU state."""

    def __init__(
        self,
        input_dim: int,
        num_classes: int,
        hidden: int = 1024,
        embed: int = 2048,
        layers: int = 1,
        dropout: float = 0.2,
        *,
        input_projection: bool = False,
    ):
        super().__init__()
        d = self._init_projection(input_dim, embed, input_projection, embed=embed,
                                  embed_dropout=dropout)
        self.rnn = nn.GRU(d, hidden, layers)
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, x: Tensor, domain: Tensor, mask: Tensor | None = None) -> Tensor:
        mask = check_mask(mask, x)
        x = self._project(zero_padding(x, mask), domain)  # [T, N, E]
        out, _ = self.rnn(x)  # [T, N, H]; padding is at the end: real frames never see it
        return self.head(torch.relu(out))  # [T, N, K]

    def init_state(self, batch: int, domain: Tensor):
        h = self.head.weight.new_zeros(self.rnn.num_layers, batch, self.rnn.hidden_size)
        return {"domain": domain, "h": h}

    def step(self, x_t: Tensor, state):
        _eval_only(self)
        x_t = self._project(x_t, state["domain"])  # [N, E]
        out, h = self.rnn(x_t[None], state["h"])  # [1, N, H]
        return self.head(torch.relu(out[0])), {"domain": state["domain"], "h": h}
