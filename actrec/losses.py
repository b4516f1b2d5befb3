"""Which frames of a training window the loss covers, and the loss over them.

A window's recurrent state starts cold at its first frame, while online inference carries the
state over the whole video: the early frames of a window are scored on context the model cannot
have yet. Three rules (``--loss-frames``):

- ``all``: every labelled frame of the window (the DDLSTM paper);
- ``last``: the last frame of each window that is real (not padding) and labelled, so the loss
  sees only frames with the window's whole context (MiniROAD, An et al., ICCV 2023); a short
  window padded at its end counts its last real frame;
- ``after:K``: every labelled frame at window position ``K`` or later (0-based), i.e. after a
  burn-in of ``K`` frames of context; ``after:0`` is ``all``. A window that starts at its
  video's first frame (``start`` 0) has no burn-in: its cold state is exactly online
  inference's, so its early frames are already scored on all the context there is (without
  this, no video's first ``K`` frames would ever be trained on).

Padding (mask False) and unlabelled frames (label -1) never enter the loss. The loss is the mean
cross-entropy over the selected frames of the whole batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from actrec.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from torch import Tensor

__all__ = ["LossFrames", "frame_loss", "loss_frame_mask", "parse_loss_frames"]


@dataclass(frozen=True)
class LossFrames:
    """A parsed ``--loss-frames`` rule: ``kind`` is "all", "last" or "after" (with ``burn_in``)."""

    kind: str
    burn_in: int = 0

    def __str__(self) -> str:
        return f"after:{self.burn_in}" if self.kind == "after" else self.kind

    def describe(self) -> str:
        """One line for the run's recorded protocol."""
        if self.kind == "all":
            return "every labelled frame of each window"
        if self.kind == "last":
            return "the last real, labelled frame of each window only"
        return f"every labelled frame at window position {self.burn_in} or later (burn-in)"


def parse_loss_frames(value: str, *, history: int | None = None) -> LossFrames:
    """``"all"`` / ``"last"`` / ``"after:K"`` as a ``LossFrames``; ``ConfigError`` naming the
    option otherwise, or when ``K`` is negative or leaves no frame of a ``history``-frame window."""
    text = str(value).strip().lower()
    if text in ("all", "last"):
        return LossFrames(text)
    kind, sep, k = text.partition(":")
    if kind == "after" and sep:
        try:
            burn_in = int(k)
        except ValueError:
            burn_in = -1
        if burn_in < 0:
            raise ConfigError(f"loss_frames: expected after:K with an integer K >= 0, got {value!r}")
        if history is not None and burn_in >= history:
            raise ConfigError(f"loss_frames {value!r}: the burn-in K={burn_in} leaves no frame of "
                              f"a {history}-frame window (history); use K < {history}")
        return LossFrames("after", burn_in)
    raise ConfigError(f"loss_frames: expected 'all', 'last' or 'after:K', got {value!r}")


def loss_frame_mask(target: Tensor, mask: Tensor | None, rule: LossFrames | str,
                    start: Tensor | None = None) -> Tensor:
    """Bool ``[T, N]``: the frames of ``target [T, N]`` (labels, -1 unlabelled) that ``rule``
    puts in the loss. ``mask [T, N]`` is True on real frames (None: all real). ``start [N]``:
    each window's first frame in its video; ``after:K`` spares windows starting at frame 0
    (None: every window is burned in)."""
    import torch

    if isinstance(rule, str):
        rule = parse_loss_frames(rule)
    keep = target >= 0  # [T, N]
    if mask is not None:
        keep = keep & mask
    if rule.kind == "after":
        if start is None:
            keep[: rule.burn_in] = False
        else:  # windows at a video's start have all the context online inference has
            cold = torch.as_tensor(start, device=keep.device) != 0  # [N]
            keep[: rule.burn_in] &= ~cold[None]
    elif rule.kind == "last":
        t = target.shape[0]
        pos = torch.arange(t, device=target.device)[:, None].expand_as(keep)  # [T, N]
        last = torch.where(keep, pos, pos.new_full((), -1)).amax(0)  # [N], -1: none
        keep = (pos == last[None]) & keep
    return keep


def frame_loss(logits: Tensor, target: Tensor, mask: Tensor | None,
               rule: LossFrames | str, start: Tensor | None = None) -> Tensor:
    """Mean cross-entropy of ``logits [T, N, K]`` against ``target [T, N]`` over the frames
    ``loss_frame_mask`` selects (``start``: see there). With no such frame it is a zero that still depends on
    ``logits`` (a graph to run backward on, all gradients zero)."""
    import torch.nn.functional as F

    keep = loss_frame_mask(target, mask, rule, start)  # [T, N]
    if not bool(keep.any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits[keep], target[keep])  # mean over the kept frames
