"""The "vanilla" LSTM of Greff et al. ("LSTM: A Search Space Odyssey"), with peephole
connections: the LSTM of Perrett & Damen's Recurrent Assistance (ICCVW 2017, Sec. 4).

Per layer and timestep, gate order i, f, g, o as ``torch.nn.LSTM`` (same parameter names and
shapes, plus three peephole vectors ``peep_{i,f,o}_l{k}`` [H])::

    i   = sigmoid(W_i x + b_i + U_i h_{t-1} + p_i * c_{t-1})
    f   = sigmoid(W_f x + b_f + U_f h_{t-1} + p_f * c_{t-1})
    c_t = f * c_{t-1} + i * tanh(W_g x + b_g + U_g h_{t-1})
    o   = sigmoid(W_o x + b_o + U_o h_{t-1} + p_o * c_t)      (the NEW cell state)
    h_t = o * tanh(c_t)

With the peepholes at zero it is exactly ``torch.nn.LSTM``. Initialisation as torch's: every
parameter uniform in ``[-1/sqrt(H), 1/sqrt(H)]``, peepholes included.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["PeepholeLSTM"]


class PeepholeLSTM(nn.Module):
    """Stacked peephole LSTM over ``[T, N, D]`` with ``torch.nn.LSTM``'s call convention:
    ``forward(x, (h0, c0)) -> (out [T, N, H], (h_n, c_n))``, states ``[layers, N, H]``.
    ``dropout`` acts on every layer's output that feeds the next layer (training only)."""

    mode = "LSTM"
    bidirectional = False

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 dropout: float = 0.0):
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.dropout = dropout
        h4 = 4 * hidden_size
        for k in range(num_layers):
            d = input_size if k == 0 else hidden_size
            self.register_parameter(f"weight_ih_l{k}", nn.Parameter(torch.empty(h4, d)))
            self.register_parameter(f"weight_hh_l{k}", nn.Parameter(torch.empty(h4, hidden_size)))
            self.register_parameter(f"bias_ih_l{k}", nn.Parameter(torch.empty(h4)))
            self.register_parameter(f"bias_hh_l{k}", nn.Parameter(torch.empty(h4)))
            for gate in "ifo":
                self.register_parameter(f"peep_{gate}_l{k}",
                                        nn.Parameter(torch.empty(hidden_size)))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Uniform(-1/sqrt(H), 1/sqrt(H)), as torch.nn.LSTM (peepholes too)."""
        bound = self.hidden_size ** -0.5
        for w in self.parameters():
            nn.init.uniform_(w, -bound, bound)

    def _layer(self, k: int) -> tuple[Tensor, ...]:
        """Layer k's input and recurrent weights, summed bias, and peepholes i, f, o."""
        w = {n: getattr(self, f"{n}_l{k}") for n in
             ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "peep_i", "peep_f", "peep_o")}
        return (w["weight_ih"], w["weight_hh"], w["bias_ih"] + w["bias_hh"],
                w["peep_i"], w["peep_f"], w["peep_o"])

    def forward(self, x: Tensor, hx: tuple[Tensor, Tensor] | None = None
                ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        n = x.shape[1]
        if hx is None:
            z = x.new_zeros(self.num_layers, n, self.hidden_size)
            hx = (z, z)
        hs, cs = [], []
        for k in range(self.num_layers):
            if k and self.dropout:
                x = F.dropout(x, self.dropout, self.training)
            w_ih, w_hh, b, p_i, p_f, p_o = self._layer(k)
            gx = F.linear(x, w_ih, b)  # [T, N, 4H] for all timesteps at once
            h, c = hx[0][k], hx[1][k]
            out = []
            for t in range(x.shape[0]):
                gi, gf, gg, go = (gx[t] + F.linear(h, w_hh)).chunk(4, -1)
                i = torch.sigmoid(gi + p_i * c)
                f = torch.sigmoid(gf + p_f * c)
                c = f * c + i * torch.tanh(gg)
                o = torch.sigmoid(go + p_o * c)
                h = o * torch.tanh(c)
                out.append(h)
            x = torch.stack(out)  # [T, N, H]
            hs.append(h)
            cs.append(c)
        return x, (torch.stack(hs), torch.stack(cs))
