"""Learning-rate schedules of a training phase, and the sign-language paper's batch schedule.

- ``none``: the base learning rate throughout.
- ``step``: ``lr * gamma ** (i // step)`` at iteration ``i`` of the phase.
- ``cosine``: from ``lr`` down to ``lr_min`` over the phase (half a cosine).
- ``plateau``: ``lr * gamma`` each time the validation loss has not improved for ``patience``
  validations (never below ``lr_min``).
- ``sign`` (Borg & Camilleri, Sec. 4): reduce the learning rate on plateau; when two decays in a
  row bring no new best validation loss, grow the batch by ``growth`` and go back to the
  learning rate of the best loss so far; when the batch has grown ``max_growths`` times and
  the loss still stops improving, stop early.

``early_stop`` (any schedule, 0: off) stops the run once that many validations in a row have
brought no new best validation loss (Borg & Camilleri, Sec. 5.1: 10 epochs).

``Schedule`` is plain state (``state_dict``/``load_state_dict``) so that a resumed run continues
the schedule where it was.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

__all__ = ["Schedule"]


@dataclass
class Schedule:
    kind: str
    base_lr: float
    phase_iterations: int
    step: int = 0
    gamma: float = 0.1
    patience: int = 3
    lr_min: float = 0.0
    growth: float = 2.0
    max_growths: int = 2
    early_stop: int = 0  # validations without a new best loss that stop the run (0: never)
    # state
    lr: float = float("nan")
    best: float = float("inf")
    best_lr: float = float("nan")
    bad: int = 0  # validations since the last improvement
    fails: int = 0  # decays since the last improvement (sign)
    growths: int = 0
    batch_scale: float = 1.0
    stopped: bool = False
    since_best: int = 0  # validations since the best loss (early_stop)

    def __post_init__(self) -> None:
        if math.isnan(self.lr):
            self.lr = self.base_lr
        if math.isnan(self.best_lr):
            self.best_lr = self.base_lr

    def lr_at(self, iteration: int) -> float:
        """The learning rate of iteration ``iteration`` (0-based, within the phase)."""
        if self.kind == "step":
            step = self.step or max(1, self.phase_iterations // 3)
            return self.base_lr * self.gamma ** (iteration // step)
        if self.kind == "cosine":
            t = min(1.0, iteration / max(1, self.phase_iterations))
            return self.lr_min + (self.base_lr - self.lr_min) * (1 + math.cos(math.pi * t)) / 2
        return self.lr

    def on_validation(self, loss: float) -> str:
        """Feed a validation loss; returns what changed: ``""``, ``"decay"``, ``"grow"`` (the
        batch grew, ``batch_scale``) or ``"stop"``. ``plateau`` and ``sign`` change the rate
        and the batch; ``early_stop`` stops any schedule."""
        if self.stopped:
            return ""
        if math.isinf(self.best) or loss < self.best - 1e-4 * abs(self.best):
            self.best, self.best_lr, self.bad, self.fails = loss, self.lr, 0, 0
            self.since_best = 0
            return ""
        self.since_best += 1
        if self.early_stop and self.since_best >= self.early_stop:
            self.stopped = True
            return "stop"
        if self.kind not in ("plateau", "sign"):
            return ""
        self.bad += 1
        if self.bad < self.patience:
            return ""
        self.bad = 0
        if self.kind == "plateau":
            if self.lr * self.gamma < self.lr_min:
                return ""
            self.lr *= self.gamma
            return "decay"
        if self.fails < 2 and self.lr * self.gamma >= self.lr_min:
            self.lr *= self.gamma
            self.fails += 1
            return "decay"
        if self.growths < self.max_growths:
            self.growths += 1
            self.batch_scale *= self.growth
            self.lr, self.fails = self.best_lr, 0
            return "grow"
        self.stopped = True
        return "stop"

    def state_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items()
                if k in ("lr", "best", "best_lr", "bad", "fails", "growths", "batch_scale",
                         "stopped", "since_best")}

    def load_state_dict(self, state: dict) -> None:
        for key, value in state.items():
            setattr(self, key, value)
