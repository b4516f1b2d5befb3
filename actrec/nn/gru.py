"""A stacked GRU with recurrent (variational) dropout, as Keras' ``recurrent_dropout``.

Same math and gate order (r, z, n) as ``torch.nn.GRU``::

    r = sigmoid(x W_ir + b_ir + h' W_hr + b_hr)      z likewise
    n = tanh(x W_in + b_in + r * (h' W_hn + b_hn))
    h_t = (1 - z) * n + z * h_{t-1}

where ``h' = h_{t-1} * mask`` in training: one Bernoulli mask per sequence and layer, drawn once
and reused at every timestep (Gal & Ghahramani), scaled by ``1 / (1 - p)``. The mask only enters
the recurrent product; the carried state ``z * h_{t-1}`` is not dropped. At evaluation
``h' = h_{t-1}``, the same math without dropout.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["DropoutGRU"]


class DropoutGRU(nn.Module):
    """Stacked GRU over ``[T, N, D]`` with recurrent dropout ``p`` on every layer's h."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int = 256,
        num_layers: int = 2,
        recurrent_dropout: float = 0.3,
    ):
        super().__init__()
        if not 0.0 <= recurrent_dropout < 1.0:
            raise ValueError(f"recurrent_dropout must be in [0, 1), got {recurrent_dropout}")
        self.hidden_size, self.num_layers, self.p = hidden_size, num_layers, recurrent_dropout
        # Parameter names as torch.nn.GRU's, so weights can be copied across for checks.
        for k in range(num_layers):
            d = input_size if k == 0 else hidden_size
            h3 = 3 * hidden_size
            self.register_parameter(f"weight_ih_l{k}", nn.Parameter(torch.empty(h3, d)))
            self.register_parameter(f"weight_hh_l{k}", nn.Parameter(torch.empty(h3, hidden_size)))
            self.register_parameter(f"bias_ih_l{k}", nn.Parameter(torch.empty(h3)))
            self.register_parameter(f"bias_hh_l{k}", nn.Parameter(torch.empty(h3)))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Uniform(-1/sqrt(H), 1/sqrt(H)), as torch.nn.GRU."""
        bound = self.hidden_size**-0.5
        for w in self.parameters():
            nn.init.uniform_(w, -bound, bound)

    def _weights(self, k: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
        return tuple(getattr(self, f"{n}_l{k}") for n in names)

    def _cell(self, gx: Tensor, h: Tensor, mask: Tensor | None, k: int) -> Tensor:
        _, w_hh, _, b_hh = self._weights(k)
        hd = h if mask is None else h * mask
        gh = F.linear(hd, w_hh, b_hh)  # [N, 3H]
        xr, xz, xn = gx.chunk(3, -1)
        hr, hz, hn = gh.chunk(3, -1)
        r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
        n = torch.tanh(xn + r * hn)
        return (1 - z) * n + z * h

    def _mask(self, like: Tensor) -> Tensor | None:  # like: [N, H]
        if not self.training or self.p == 0.0:
            return None
        return torch.bernoulli(torch.full_like(like, 1 - self.p)) / (1 - self.p)

    def forward(self, x: Tensor) -> Tensor:  # [T, N, D] -> [T, N, H]
        for k in range(self.num_layers):
            w_ih, _, b_ih, _ = self._weights(k)
            gx = F.linear(x, w_ih, b_ih)  # [T, N, 3H] for all timesteps at once
            h = x.new_zeros(x.shape[1], self.hidden_size)
            mask = self._mask(h)
            out = []
            for t in range(x.shape[0]):
                h = self._cell(gx[t], h, mask, k)
                out.append(h)
            x = torch.stack(out)  # [T, N, H]
        return x

    def init_state(self, batch: int, like: Tensor) -> list[Tensor]:
        return [like.new_zeros(batch, self.hidden_size) for _ in range(self.num_layers)]

    def step(self, x_t: Tensor, hs: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        """One timestep (eval: no dropout): ``x_t [N, D]`` -> ``(h_top [N, H], new states)``."""
        new = []
        for k, h in enumerate(hs):
            w_ih, _, b_ih, _ = self._weights(k)
            x_t = self._cell(F.linear(x_t, w_ih, b_ih), h, None, k)
            new.append(x_t)
        return x_t, new
