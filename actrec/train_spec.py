"""The training spec: everything that defines a training run, and nothing that does not.

``TrainSpec`` round-trips through JSON (``config.json``, checkpoints) and through config files
and the command line (``from_dict``, strings coerced to the field types).
"""

from __future__ import annotations

import dataclasses
import json
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from actrec.errors import ConfigError
from actrec.plugin_api import coerce

__all__ = ["TrainSpec", "OPTIMIZERS", "RESUMABLE"]

OPTIMIZERS = ("sgd", "adam")
# Spec fields that may change when a run is resumed: they do not change what is learnt.
RESUMABLE = frozenset({"iterations", "eval_every", "checkpoint_every", "log_every", "device"})


@dataclass(frozen=True)
class TrainSpec:
    """Everything that defines a training run. ``to_dict``/``from_dict`` round-trip via JSON.

    ``mix`` is the number of windows per batch from D1 and D2 (one dataset: the batch is
    ``mix[0]`` windows). ``input_arrangement`` is ``"blocks"`` (zero-filled blocks when the
    feature dimensions differ) or ``"projection"`` (features passed through to a model with a
    per-domain input projection: its ``input_projection`` option is switched on).
    ``prediction`` is ``"block"`` (argmax over the frame's own dataset's classes) or ``"full"``.
    ``grad_clip`` is a maximum gradient norm (``None``: no clipping). ``eval_every`` > 0 logs an
    offline evaluation of the test split every that many iterations (monitoring only: the run
    always keeps its last iteration). ``split``/``d2_split`` default to each store's first split.
    ``standardize`` scales every feature dimension to zero mean and unit variance with
    statistics of each dataset's training videos (``actrec.data.scaling``; saved with the run
    and applied at evaluation).
    ``weight_decay`` applies to weight matrices only (parameters with two or more dimensions):
    biases, normalisation gains and shifts and the DDBN alphas are not decayed, as usual for
    normalisation parameters. ``allow_same_store`` lets ``d1`` and ``d2`` be one store (the
    same folder or the same recorded source); otherwise that is an error.
    ``reestimate_batches`` > 0 replaces the normalisation layers' running statistics at the end
    of training by exact averages over that many fresh batches under the final weights
    (Cooijmans et al.; ``actrec.nn.reestimate``), drawn from their own generator seeded from
    ``(seed, iteration)`` so that the training batches do not change. 0 (default) keeps the
    momentum averages, as the DDLSTM paper does.
    """

    model: str
    d1: Path
    model_options: dict[str, Any] = field(default_factory=dict)
    d2: Path | None = None
    split: str | None = None
    d2_split: str | None = None
    history: int = 200
    iterations: int = 50_000
    mix: tuple[int, int] = (64, 64)
    lr: float = 0.01
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 0.0
    grad_clip: float | None = None
    seed: int = 0
    device: str = "cpu"
    eval_every: int = 0
    checkpoint_every: int = 500
    log_every: int = 10
    input_arrangement: str = "blocks"
    prediction: str = "block"
    reestimate_batches: int = 0
    standardize: bool = True
    allow_same_store: bool = False
    # Streams of every store read (actrec.io.features): None its own, several side by side.
    streams: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        # Normalise types given from Python (strings for paths, lists for mix).
        # Absolute paths: config.json says exactly which stores, and a resume from another
        # working directory still matches.
        object.__setattr__(self, "d1", Path(self.d1).expanduser().absolute())
        if self.d2 is not None:
            object.__setattr__(self, "d2", Path(self.d2).expanduser().absolute())
        object.__setattr__(self, "mix", tuple(int(n) for n in self.mix))
        if self.streams is not None:
            names = (self.streams,) if isinstance(self.streams, str) else self.streams
            object.__setattr__(self, "streams", tuple(str(n) for n in names))
        object.__setattr__(self, "model_options", dict(self.model_options))
        for name in ("split", "d2_split"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, str(value))
        problems = []
        if not self.model:
            problems.append("model must be a model plugin name")
        if not 0 <= self.seed < 2**63:
            problems.append(f"seed must be an integer in 0..2**63-1, got {self.seed}")
        if self.history <= 0:
            problems.append(f"history must be > 0, got {self.history}")
        if self.streams is not None and (not self.streams
                                         or len(set(self.streams)) != len(self.streams)):
            problems.append(f"streams must be distinct stream names, got {list(self.streams)}")
        if self.iterations < 0:
            problems.append(f"iterations must be >= 0, got {self.iterations}")
        if len(self.mix) != 2 or self.mix[0] <= 0 or self.mix[1] < 0:
            problems.append(f"mix must be (n1 > 0, n2 >= 0), got {self.mix}")
        elif self.d2 is not None and self.mix[1] == 0:
            problems.append("mix gives no D2 windows (n2 = 0) but d2 is set")
        if not self.lr > 0:
            problems.append(f"lr must be > 0, got {self.lr}")
        if self.optimizer not in OPTIMIZERS:
            problems.append(f"optimizer must be one of {', '.join(OPTIMIZERS)}, "
                            f"got {self.optimizer!r}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            problems.append(f"grad_clip must be > 0 or None, got {self.grad_clip}")
        for name in ("eval_every", "checkpoint_every", "log_every", "reestimate_batches"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.input_arrangement not in ("blocks", "projection"):
            problems.append(f"input_arrangement must be 'blocks' or 'projection', "
                            f"got {self.input_arrangement!r}")
        if self.prediction not in ("block", "full"):
            problems.append(f"prediction must be 'block' or 'full', got {self.prediction!r}")
        if problems:
            raise ConfigError("invalid training spec: " + "; ".join(problems))

    @property
    def joint(self) -> bool:
        return self.d2 is not None

    @property
    def batch_mix(self) -> tuple[int, ...]:
        """Windows per domain actually drawn: ``(n1,)`` or ``(n1, n2)``."""
        return self.mix if self.joint else self.mix[:1]

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible values: paths as strings, ``mix`` as a list."""
        out = dataclasses.asdict(self)
        out["d1"] = str(self.d1)
        out["d2"] = None if self.d2 is None else str(self.d2)
        out["mix"] = list(self.mix)
        out["streams"] = None if self.streams is None else list(self.streams)
        out["model_options"] = json.loads(json.dumps(self.model_options, default=str))
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, where: str = "training spec") -> TrainSpec:
        """Build from a mapping (JSON, a config file, strings from the command line).

        ``ConfigError`` naming ``where`` and the field for unknown fields or bad values.
        """
        hints = typing.get_type_hints(cls)
        fields = {f.name for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {}
        for key, raw in data.items():
            name = key.replace("-", "_")
            if name not in fields:
                raise ConfigError(f"{where}: unknown field '{key}'; expected one of: "
                                  f"{', '.join(sorted(fields))}")
            if name == "model_options":
                if not isinstance(raw, Mapping):
                    raise ConfigError(f"{where}: field 'model_options' must be a mapping")
                values[name] = dict(raw)
                continue
            try:
                values[name] = coerce(raw, hints[name])
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"{where}: field '{key}': {exc}") from None
        for required in ("model", "d1"):
            if required not in values:
                raise ConfigError(f"{where}: missing field '{required}'")
        return cls(**values)
