"""Look-ahead evaluation: a causal model run with a fixed delay of K frames.

A live system that may answer K frames late classifies frame t once it has seen frames
0 .. t+K. With a causal model that is online stepping with a delay: the model is stepped through
the video frame by frame, with its state carried, and the output of step ``t + K`` (whose state
has seen exactly frames 0 .. t+K) is the prediction for frame t. Nothing else changes: the same
weights, the same ``SequenceModel.step``, never a bidirectional or windowed pass. ``K = 0`` is
online evaluation.

The end of a video: the stream stops after frame T-1, so the last K frames would never be
answered. The stream is flushed as a delayed feature extractor flushes its last rows (the
extraction contract): K more steps are fed with the last frame repeated, and frame t >= T-K
gets the output of flush step ``t + K``. A model that truly predicts with a delay of K (trained
to output frame s-K's class at step s) is then right on every frame, the last ones included.

Which K: ``resolve_lookahead`` reads an integer, or ``half-history`` (the run's training
history // 2): the DDLSTM paper's look-ahead, "half the training history into the future".

A model answers late only if it was trained to: ``actrec train --delay K`` scores the output
of step s against frame s-K's label (``delay_targets``; nothing for the first K steps of a
window), so that the output of step t+K is about frame t. A run trained with a delay is
evaluated with that look-ahead (the default for it; another K is refused). Look-ahead on a
run trained without delay is allowed and recorded, but its step t+K still answers for frame
t+K: the DDLSTM paper's look-ahead is ``train --delay H/2`` then ``eval --lookahead
half-history`` (or simply ``eval``, which uses the run's delay).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from actrec.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["HALF_HISTORY", "delay_targets", "delayed_inputs", "evaluation_mode",
           "features_reach", "resolve_lookahead", "step_with_delay", "store_lookahead"]

HALF_HISTORY = "half-history"


def store_lookahead(attrs: dict[str, Any]) -> tuple[int, bool, str]:
    """A feature store's recorded look-ahead in frames (-1: unknown), whether its features are
    causal (no look-ahead and not marked otherwise), and the look-ahead in words for messages."""
    lookahead = int(attrs.get("lookahead") or 0)
    causal = lookahead == 0 and attrs.get("causal") is not False
    return lookahead, causal, "an unknown number of" if lookahead < 0 else str(lookahead)


def features_reach(features: list[dict[str, Any]]) -> int | None:
    """How far past its own frame the furthest of ``features`` (each ``{"lookahead": int,
    "causal": bool}``, as an evaluation's protocol records them) looks: 0 when all are causal,
    ``None`` when one's reach is unknown (a lookahead of -1, or marked non-causal without
    one)."""
    reach = 0
    for f in features:
        ahead = int(f.get("lookahead") or 0)
        if ahead < 0 or (ahead == 0 and f.get("causal") is False):
            return None
        reach = max(reach, ahead)
    return reach


def evaluation_mode(online: bool, delay: int, features_ahead: int | None = 0) -> str:
    """The name of an evaluation setting: ``offline``, ``online`` or ``lookahead-K`` (a delay
    of K frames), with ``-features-ahead-F`` (or ``-features-ahead-unknown``) appended when
    the features themselves look F frames ahead (allowed explicitly online): such a result
    is never named, filed or shown as online."""
    if not online:
        return "offline"
    mode = f"lookahead-{delay}" if delay else "online"
    if features_ahead == 0:
        return mode
    return f"{mode}-features-ahead-{'unknown' if features_ahead is None else features_ahead}"


def resolve_lookahead(value: int | str | None, history: int | None) -> tuple[int, str]:
    """``(K, rule)`` for a ``--lookahead`` value: an integer >= 0 (rule ``"K frames"``) or
    ``"half-history"`` (``history // 2``, the DDLSTM paper's setting; rule says so). ``None``
    is 0. ``ConfigError`` naming the option for anything else, or for ``half-history`` of a
    run without a recorded history."""
    if value is None:
        return 0, "0 frames (online)"
    text = str(value).strip().lower()
    if text == HALF_HISTORY:
        if not history or int(history) < 1:
            raise ConfigError("--lookahead half-history needs the run's training history, "
                              "which its checkpoint does not record; give K in frames")
        k = int(history) // 2
        return k, f"half the training history ({int(history)} // 2 = {k} frames)"
    if not text.isdigit():
        raise ConfigError(f"--lookahead: expected a number of frames >= 0 or "
                          f"'{HALF_HISTORY}', got {value!r}")
    k = int(text)
    return k, f"{k} frames" + (" (online)" if k == 0 else "")


def delayed_inputs(x: torch.Tensor, lengths: list[int], lookahead: int) -> torch.Tensor:
    """``x [T, B, W]`` (video b real on its first ``lengths[b]`` rows) extended to
    ``[T + K, B, W]``: video b's last real frame repeated on rows ``lengths[b] .. + K - 1``
    (the flush), zeros after that."""
    import torch

    if lookahead == 0:
        return x
    out = torch.cat([x, x.new_zeros((lookahead, *x.shape[1:]))])  # [T + K, B, W]
    for b, n in enumerate(lengths):
        if n > 0:
            out[n : n + lookahead, b] = x[n - 1, b]
    return out


def step_with_delay(model: Any, x: torch.Tensor, lengths: list[int], dom: torch.Tensor,
                    lookahead: int, readout: Callable[[torch.Tensor], tuple[Any, Any]]
                    ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``x [T, B, W]`` (video b real on its first ``lengths[b]`` rows, of domains ``dom [B]``)
    stepped frame by frame with the state carried, frame t answered by the logits of step
    ``t + lookahead`` (see the module docs for the flush at each video's end).
    ``readout(logits [B, K])`` -> (predictions [B], probabilities [B, K_k] or None); returns
    them stacked over frames: ``[T, B]`` and ``[T, B, K_k]`` (None when readout gives None).
    ``lookahead = 0`` is the online pass."""
    import torch

    if lookahead < 0:
        raise ConfigError(f"lookahead must be >= 0 frames, got {lookahead}")
    steps = delayed_inputs(x, lengths, lookahead)  # [T + K, B, W]
    state = model.init_state(x.shape[1], dom)
    preds, probs = [], []
    for s in range(steps.shape[0]):
        logits, state = model.step(steps[s], state)  # [B, K]: the answer for frame s - K
        if s < lookahead:
            continue
        pred, prob = readout(logits)
        preds.append(pred)
        if prob is not None:
            probs.append(prob)
    return torch.stack(preds), (torch.stack(probs) if probs else None)


def delay_targets(y: Any, delay: int, mask: Any = None) -> Any:
    """Labels ``[T, N]`` (torch or numpy; -1 = none) moved ``delay`` frames later: the target of
    step s is frame ``s - delay``'s label, and the first ``delay`` steps have none (-1). What a
    model trained to answer ``delay`` frames late (``actrec train --delay K``) is scored on.
    ``mask [T, N]`` (True on real frames, None: all real): steps on padding get no target
    (-1) either, so a window's last labels, moved onto its padding, are never scored against
    outputs computed from padding."""
    if delay <= 0:
        return y if mask is None else _unmasked(y, mask)
    if isinstance(y, np.ndarray):
        out = np.full_like(y, -1)
        out[delay:] = y[: max(0, y.shape[0] - delay)]
    else:
        out = y.new_full(y.shape, -1)
        out[delay:] = y[: max(0, y.shape[0] - delay)]
    return out if mask is None else _unmasked(out, mask)


def _unmasked(y: Any, mask: Any) -> Any:
    """``y`` with -1 wherever ``mask`` is False (a copy; ``y`` is left alone)."""
    import torch

    if isinstance(y, np.ndarray):
        return np.where(np.asarray(mask, dtype=bool), y, -1)
    return y.masked_fill(~torch.as_tensor(mask, dtype=torch.bool, device=y.device), -1)
