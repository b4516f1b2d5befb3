"""The module contract every temporal model plugin builds.

All tensors are time-major: ``x`` is ``[T, N, D]``. ``domain`` is an int64 tensor ``[N]`` of
0 (D1) / 1 (D2) per sequence; in training mode its rows are sorted (all D1 rows first), so the
number of D1 rows ``n1`` fully describes it. Single-dataset training passes all zeros.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

State = Any  # a model-specific pytree of tensors


class SequenceModel(nn.Module):
    """A per-frame classifier over a sequence.

    Causal models (``causal = True``) must implement ``init_state`` and ``step`` such that
    stepping a sequence frame by frame in eval mode gives the same logits as ``forward``.
    """

    causal: bool = True

    def forward(self, x: Tensor, domain: Tensor) -> Tensor:  # [T, N, D], [N] -> [T, N, K]
        raise NotImplementedError

    def init_state(self, batch: int, domain: Tensor) -> State:
        """The state before the first frame, for ``batch`` sequences of domains ``domain`` [N]."""
        raise NotImplementedError(f"{type(self).__name__} is not causal: no online inference")

    def step(self, x_t: Tensor, state: State) -> tuple[Tensor, State]:  # [N, D] -> [N, K]
        """Logits for one frame from that frame and the state; never looks at future frames."""
        raise NotImplementedError(f"{type(self).__name__} is not causal: no online inference")

    def after_optimizer_step(self) -> None:
        """Hook run after every optimiser step (DDBN projects its alphas here)."""


def split_point(domain: Tensor) -> int:
    """n1, the number of D1 rows of a training batch whose rows are sorted by domain.

    Raises ``ValueError`` if the rows are not sorted (D1 rows must come first).
    """
    n1 = int((domain == 0).sum())
    if n1 and n1 < domain.numel() and bool((domain[:n1] != 0).any()):
        raise ValueError("training batches must hold all D1 rows (domain 0) before D2 rows")
    return n1


def single_domain(batch: int, device: torch.device | None = None) -> Tensor:
    """A domain vector [batch] of zeros: one dataset."""
    return torch.zeros(batch, dtype=torch.long, device=device)
