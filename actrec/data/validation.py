"""A validation subset carved from a split's training videos, by participant.

Videos of one participant are alike (same person, often the same kitchen and recipe order), so
a validation set that shares participants with the training set scores too high and selects
checkpoints that memorised them. ``carve_validation`` holds out whole participants: a seeded
random choice of ``ceil(fraction * participants)`` of them (at least one, and never all), whose
videos become the validation set. Videos without a recorded participant count as a participant
each (recorded as such in ``Carve.grouping``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from actrec.errors import ConfigError

__all__ = ["Carve", "carve_validation"]


@dataclass(frozen=True)
class Carve:
    """Training videos kept, validation videos held out, and the participants held out."""

    train: tuple[str, ...]
    val: tuple[str, ...]
    val_participants: tuple[str, ...]
    grouping: str  # "participant", or "video" when no video records a participant

    def to_dict(self) -> dict:
        return {"train_videos": len(self.train), "val_videos": list(self.val),
                "val_participants": list(self.val_participants), "grouping": self.grouping}


def carve_validation(videos: Sequence[str], participants: Mapping[str, str | None],
                     fraction: float, seed: int | Sequence[int], *, where: str = "") -> Carve:
    """Split ``videos`` (in their order) into training and validation videos by participant.

    ``participants`` maps a video to its participant (None or missing: its own group).
    ``fraction`` 0 holds out nothing. The choice depends only on ``seed``, the sorted
    participant names and ``fraction``. ``ConfigError`` (naming ``where``) when there are
    fewer than two participants to split."""
    videos = list(videos)
    if not 0.0 <= fraction < 1.0:
        raise ConfigError(f"validation fraction must be in [0, 1), got {fraction}")
    if fraction == 0.0:
        return Carve(tuple(videos), (), (), "participant")
    group = {v: (str(participants[v]) if participants.get(v) not in (None, "") else f"video:{v}")
             for v in videos}
    grouping = "participant" if any(not g.startswith("video:") for g in group.values()) \
        else "video"
    names = sorted(set(group.values()))
    if len(names) < 2:
        raise ConfigError(f"{where}: the training videos have {len(names)} participant(s); a "
                          f"validation set by participant needs at least two (use "
                          f"--val-fraction 0)")
    count = min(len(names) - 1, max(1, math.ceil(fraction * len(names))))
    rng = np.random.default_rng(seed)
    held = sorted(names[i] for i in rng.choice(len(names), size=count, replace=False))
    out = set(held)
    return Carve(tuple(v for v in videos if group[v] not in out),
                 tuple(v for v in videos if group[v] in out), tuple(held), grouping)
