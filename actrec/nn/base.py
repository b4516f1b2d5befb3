"""The module contract every temporal model plugin builds.

All tensors are time-major: ``x`` is ``[T, N, D]``. ``domain`` is an int64 tensor ``[N]`` of
0 (D1) / 1 (D2) per sequence; in training mode its rows are sorted (all D1 rows first), so the
number of D1 rows ``n1`` fully describes it. Single-dataset training passes all zeros.

``mask`` is an optional bool tensor ``[T, N]``, True on real frames. Windows shorter than the
history are padded at the END of their row (``actrec.data.windows``), so a row's real frames
are ``0 .. length - 1``. Padding is not data: a model must give the real frames the same
outputs, statistics (batch-norm means, variances, effective counts, running statistics) and
gradients whatever values the padded frames hold. Outputs at padded frames are finite and
meaningless; the loss must ignore them.
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

    def forward(self, x: Tensor, domain: Tensor, mask: Tensor | None = None) -> Tensor:
        """Per-frame logits ``[T, N, K]`` of ``x [T, N, D]`` for sequences of ``domain [N]``.

        ``mask [T, N]`` (bool, True on real frames, padding only at the end of a row; None:
        every frame is real) keeps padded frames out of every statistic and gradient: the
        logits of real frames, the running statistics and the gradients of a loss over real
        frames do not depend on the padded values.
        """
        raise NotImplementedError

    def init_state(self, batch: int, domain: Tensor) -> State:
        """The state before the first frame, for ``batch`` sequences of domains ``domain`` [N]."""
        raise NotImplementedError(f"{type(self).__name__} is not causal: no online inference")

    def step(self, x_t: Tensor, state: State) -> tuple[Tensor, State]:  # [N, D] -> [N, K]
        """Logits for one frame from that frame and the state; never looks at future frames."""
        raise NotImplementedError(f"{type(self).__name__} is not causal: no online inference")

    def after_optimizer_step(self) -> None:
        """Hook run after every optimiser step (DDBN projects its alphas here)."""

    def optimizer_overrides(self) -> list[tuple[list[nn.Parameter], dict[str, Any]]]:
        """Parameters that train with their own optimiser settings, e.g. ``[(alphas, {"lr":
        1e-4})]`` (``actrec.train.optimizer_groups`` gives each its own group, never decayed);
        none by default."""
        return []


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


def check_mask(mask: Tensor | None, x: Tensor) -> Tensor | None:
    """``mask`` as a bool tensor on x's device after checking it is ``[T, N]`` for ``x [T, N, ...]``
    and pads only at the end of each row (no real frame after a padded one); ``ValueError``
    otherwise. None stays None (every frame real)."""
    if mask is None:
        return None
    t, n = x.shape[0], x.shape[1]
    if tuple(mask.shape) != (t, n):
        raise ValueError(f"mask must be [T={t}, N={n}], got {tuple(mask.shape)}")
    if mask.dtype != torch.bool:
        raise ValueError(f"mask must be bool (True on real frames), got {mask.dtype}")
    mask = mask.to(x.device)
    if t > 1 and bool((mask[1:] & ~mask[:-1]).any()):
        raise ValueError("mask: padding must come at the end of a row (a real frame follows "
                         "a padded one)")
    return mask


def zero_padding(x: Tensor, mask: Tensor | None) -> Tensor:
    """``x [T, N, D]`` with padded frames set to 0, so that no padded value (even inf or NaN)
    reaches any arithmetic; statistics must still exclude them through the mask."""
    if mask is None:
        return x
    return torch.where(mask[..., None], x, x.new_zeros(()))  # [T, N, D]
