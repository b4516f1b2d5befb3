"""Small input/output pieces shared by the sequence models."""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["DomainProjection"]


class DomainProjection(nn.Module):
    """Per-domain input projection: sequences of domain d go through their own ``Linear(D -> P)``.

    For two datasets whose features differ in dimension, the data side places D1's features in
    the first block of the input and D2's in the second (zero elsewhere); each domain's linear
    map then sees only its own block, which is a ``Linear(D_i -> P)`` per dataset.
    """

    def __init__(self, input_dim: int, out_dim: int):
        super().__init__()
        self.proj = nn.ModuleList([nn.Linear(input_dim, out_dim), nn.Linear(input_dim, out_dim)])

    def forward(self, x: Tensor, domain: Tensor) -> Tensor:  # [..., N, D] -> [..., N, P]
        d2 = (domain != 0)[:, None]  # [N, 1], broadcasts over leading time dims
        return torch.where(d2, self.proj[1](x), self.proj[0](x))
