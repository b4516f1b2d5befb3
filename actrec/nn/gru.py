"""The stacked GRU of Borg & Camilleri (ICASSP 2019): Keras 2's ``GRU`` layer, as they used it.

Their released model (``create_neural_net_model.py``, Keras 2) is ``GRU(256,
recurrent_activation='hard_sigmoid', dropout=0.3)`` twice. Keras 2's cell, gate order (z, r, h),
one bias per gate (``reset_after=False``: the reset gate acts on the state *before* the
recurrent product)::

    z  = a(x_z W_z + b_z + h_z U_z)          r likewise
    hh = tanh(x_h W_h + b_h + (r * h_h) U_h)
    h_t = z * h_{t-1} + (1 - z) * hh

with ``a`` the recurrent activation: ``hard_sigmoid(v) = clip(0.2 v + 0.5, 0, 1)`` (Keras 2's
default and theirs) or the logistic sigmoid. This is what their Table 3 counts: 3 (D H + H H + H)
weights per layer (3,754,243 trainable parameters for the 2 x 256 model on 4096 codes; torch's
cell, with two biases per gate, would have 1,536 more).

Dropout as Keras' (Gal & Ghahramani's variational dropout): ``dropout`` multiplies the layer's
input x by a Bernoulli mask, ``recurrent_dropout`` the state h_{t-1} entering the recurrent
products; one mask per sequence, layer and gate (``x_z``, ``x_r``, ``x_h`` are x times three
masks; Keras 2's default ``implementation=1``), drawn once and reused at every timestep, scaled
by ``1 / (1 - p)``. The carried state ``z * h_{t-1}`` is never dropped. At evaluation nothing is
dropped. The paper's "GRU dropout" 0.3 is ``dropout`` (the released code); ``recurrent_dropout``
is Keras' other option, 0 there.

Initialisation as Keras 2: input weights Glorot-uniform over the whole ``[3H, D]`` matrix,
recurrent weights orthogonal over ``[3H, H]``, biases 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["RECURRENT_ACTIVATIONS", "DropoutGRU", "hard_sigmoid"]

RECURRENT_ACTIVATIONS = ("hard_sigmoid", "sigmoid")


def hard_sigmoid(v: Tensor) -> Tensor:
    """Keras 2's ``hard_sigmoid``: ``clip(0.2 v + 0.5, 0, 1)``."""
    return (0.2 * v + 0.5).clamp(0.0, 1.0)


class DropoutGRU(nn.Module):
    """Stacked Keras-2 GRU over ``[T, N, D]``; ``dropout`` on every layer's input and
    ``recurrent_dropout`` on its state, per gate and constant over time (training only).

    Parameters per layer k: ``weight_ih_l{k}`` [3H, D], ``weight_hh_l{k}`` [3H, H] and
    ``bias_l{k}`` [3H], rows in Keras' gate order (z, r, h).
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int = 256,
        num_layers: int = 2,
        recurrent_dropout: float = 0.0,
        *,
        dropout: float = 0.0,
        recurrent_activation: str = "hard_sigmoid",
    ):
        super().__init__()
        for name, p in (("dropout", dropout), ("recurrent_dropout", recurrent_dropout)):
            if not 0.0 <= p < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {p}")
        if recurrent_activation not in RECURRENT_ACTIVATIONS:
            raise ValueError(f"recurrent_activation must be one of {RECURRENT_ACTIVATIONS}, "
                             f"got {recurrent_activation!r}")
        self.hidden_size, self.num_layers = hidden_size, num_layers
        self.p_input, self.p = dropout, recurrent_dropout
        self.recurrent_activation = recurrent_activation
        self._gate = hard_sigmoid if recurrent_activation == "hard_sigmoid" else torch.sigmoid
        h3 = 3 * hidden_size
        for k in range(num_layers):
            d = input_size if k == 0 else hidden_size
            self.register_parameter(f"weight_ih_l{k}", nn.Parameter(torch.empty(h3, d)))
            self.register_parameter(f"weight_hh_l{k}", nn.Parameter(torch.empty(h3, hidden_size)))
            self.register_parameter(f"bias_l{k}", nn.Parameter(torch.empty(h3)))
        self.reset_parameters()

    def extra_repr(self) -> str:
        return (f"hidden_size={self.hidden_size}, num_layers={self.num_layers}, "
                f"dropout={self.p_input}, recurrent_dropout={self.p}, "
                f"recurrent_activation={self.recurrent_activation}")

    def reset_parameters(self) -> None:
        """Keras 2's defaults: Glorot-uniform input weights, orthogonal recurrent weights,
        zero biases."""
        with torch.no_grad():
            for k in range(self.num_layers):
                w_ih, w_hh, b = self._weights(k)
                nn.init.xavier_uniform_(w_ih)
                nn.init.orthogonal_(w_hh)
                b.zero_()

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        if prefix + "bias_ih_l0" in state_dict:  # saved by the earlier torch-style cell
            raise RuntimeError(
                "these weights are of the torch-style GRU cell that actrec's 'gru' model used "
                "before it became Borg & Camilleri's Keras GRU (two biases per gate, sigmoid "
                "gates); they cannot be loaded into the new cell: train the run again")
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _weights(self, k: int) -> tuple[Tensor, Tensor, Tensor]:
        return (getattr(self, f"weight_ih_l{k}"), getattr(self, f"weight_hh_l{k}"),
                getattr(self, f"bias_l{k}"))

    def _masks(self, p: float, like: Tensor) -> Tensor | None:  # like [N, C] -> [3, N, C]
        """Three Bernoulli masks (one per gate) scaled by 1/(1-p), or None (eval or p = 0)."""
        if not self.training or p == 0.0:
            return None
        keep = torch.full((3, *like.shape), 1 - p, dtype=like.dtype, device=like.device)
        return torch.bernoulli(keep) / (1 - p)

    def _input_gates(self, x: Tensor, k: int, mask: Tensor | None) -> Tensor:
        """``x W^T + b`` for the three gates, ``x`` [..., N, D] (masked per gate) -> [..., N, 3H]."""
        w_ih, _, b = self._weights(k)
        if mask is None:
            return F.linear(x, w_ih, b)
        return torch.cat([F.linear(x * m, w, bb) for m, w, bb in
                          zip(mask, w_ih.chunk(3, 0), b.chunk(3, 0))], -1)

    def _cell(self, gx: Tensor, h: Tensor, mask: Tensor | None, k: int) -> Tensor:
        """One step from the input part ``gx`` [N, 3H] and the state ``h`` [N, H]."""
        u_z, u_r, u_h = self._weights(k)[1].chunk(3, 0)  # [H, H] each
        hz, hr, hh = (h, h, h) if mask is None else (h * mask[0], h * mask[1], h * mask[2])
        xz, xr, xh = gx.chunk(3, -1)
        z = self._gate(xz + F.linear(hz, u_z))
        r = self._gate(xr + F.linear(hr, u_r))
        cand = torch.tanh(xh + F.linear(r * hh, u_h))
        return z * h + (1 - z) * cand

    def forward(self, x: Tensor) -> Tensor:  # [T, N, D] -> [T, N, H]
        for k in range(self.num_layers):
            in_mask = self._masks(self.p_input, x[0])  # [3, N, D] or None
            gx = self._input_gates(x, k, in_mask)  # [T, N, 3H] for all timesteps at once
            h = x.new_zeros(x.shape[1], self.hidden_size)
            rec_mask = self._masks(self.p, h)
            out = []
            for t in range(x.shape[0]):
                h = self._cell(gx[t], h, rec_mask, k)
                out.append(h)
            x = torch.stack(out)  # [T, N, H]
        return x

    def init_state(self, batch: int, like: Tensor) -> list[Tensor]:
        return [like.new_zeros(batch, self.hidden_size) for _ in range(self.num_layers)]

    def step(self, x_t: Tensor, hs: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        """One timestep (eval: no dropout): ``x_t [N, D]`` -> ``(h_top [N, H], new states)``."""
        new = []
        for k, h in enumerate(hs):
            x_t = self._cell(self._input_gates(x_t, k, None), h, None, k)
            new.append(x_t)
        return x_t, new
