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

__all__ = ["TrainSpec", "OPTIMIZERS", "RESUMABLE", "PROTOCOLS", "LABEL_ARRANGEMENTS"]

OPTIMIZERS = ("sgd", "adam", "adamw")


def _store_path(value):
    """A feature store's location: a path made absolute, or a store URL kept as one
    (``actrec.io.remote.store_location``; ``file://`` URLs are paths)."""
    from actrec.io.remote import StoreURL, store_location

    where = store_location(value)
    return where if isinstance(where, StoreURL) else where.absolute()
PROTOCOLS = ("single", "joint", "transfer")
LABEL_ARRANGEMENTS = ("concat", "merged", "random", "multi-random")
HEADS = ("auto", "keep", "reinit")
SELECTIONS = ("auto", "best-val", "last")
LR_SCHEDULES = ("none", "step", "cosine", "plateau", "sign")
# Spec fields that may change when a run is resumed: they do not change what is learnt.
RESUMABLE = frozenset({"iterations", "epochs", "eval_every", "checkpoint_every", "log_every",
                       "device", "threads"})


@dataclass(frozen=True)
class TrainSpec:
    """Everything that defines a training run. ``to_dict``/``from_dict`` round-trip via JSON.

    ``mix`` is the number of windows per batch from D1, D2, ... (one dataset: the batch is
    ``mix[0]`` windows; transfer: fine-tuning batches hold ``mix[0]`` windows of D1,
    pre-training batches ``mix[1]`` of D2, or ``mix[0]`` when there is no second count).
    ``protocol``, the label arrangement (``labels``), validation and selection, schedules and
    the boundary pre-stage are described in docs/guide.md and ``actrec.protocols``.
    ``input_arrangement`` is ``"blocks"`` (zero-filled blocks when the feature dimensions
    differ) or ``"projection"`` (features passed through to a model with a per-domain input
    projection: its ``input_projection`` option is switched on).
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
    ``(seed, iteration)`` so that the training batches do not change (or where the ``sign``
    schedule stops the run); the run must select its last checkpoint (``select`` "last").
    0 (default) keeps the momentum averages, as the DDLSTM paper does.
    ``loss_frames`` (``all`` / ``last`` / ``after:K``) chooses the frames of each window the loss
    covers (``actrec.losses``); ``windows`` (``random`` / ``uniform`` / ``stride:S``) how windows
    are drawn and ``epochs``, when set, the iterations: enough batches of D1 windows for that
    many epochs (``actrec.data.sampling``). ``optimizer`` ``adamw`` decouples ``weight_decay``
    from the gradient step. ``delay`` K > 0 trains the model to answer K frames late (the
    output of step s is scored on frame s-K's label): evaluated with a look-ahead of K
    (``actrec.lookahead``).
    ``threads`` > 0 gives torch that many intra-op threads while the run trains (restored
    after); under torchrun it is the machine's number, shared by the processes on it (each
    gets ``threads // LOCAL_WORLD_SIZE``, at least 1). 0 (default) leaves torch's own
    (``OMP_NUM_THREADS``, else one per core; torchrun gives each process 1). It may change on
    a resume: it decides how fast, not what is learnt.
    """

    model: str
    d1: Path
    model_options: dict[str, Any] = field(default_factory=dict)
    d2: Path | None = None
    split: str | None = None
    d2_split: str | None = None
    history: int = 200
    iterations: int = 50_000
    mix: tuple[int, ...] = (64, 64)
    lr: float = 0.01
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 0.0
    grad_clip: float | None = None
    seed: int = 0
    device: str = "cpu"
    threads: int = 0  # torch's threads while training (0: torch's own); see the class docs
    eval_every: int = 0
    checkpoint_every: int = 500
    log_every: int = 10
    input_arrangement: str = "blocks"
    prediction: str = "block"
    reestimate_batches: int = 0
    standardize: bool = True
    allow_same_store: bool = False
    # Which frames the loss covers, how windows are chosen, epochs (actrec.losses, .data.sampling).
    loss_frames: str = "all"  # all | last | after:K
    windows: str = "random"  # random | uniform | stride:S
    epochs: int | None = None  # when set, iterations = what these epochs of D1 windows take
    # Answer K frames late: step s is scored on frame s-K's label (actrec.lookahead).
    delay: int = 0
    # Protocols, label arrangements, validation, schedules (actrec.protocols, .schedules).
    protocol: str | None = None  # single | joint | transfer; None: joint with d2, else single
    extra_data: tuple[str, ...] = ()  # D3, D4, ... for joint training of more datasets
    pretrain_iters: int = 0  # transfer: iterations on D2 before fine-tuning on D1
    finetune_iters: int = 0  # transfer: iterations on D1 (0: ``iterations``)
    init_from: str | None = None  # transfer: a run whose selected weights start fine-tuning
    head: str = "auto"  # auto | keep | reinit: the output layer when fine-tuning starts
    labels: str = "concat"  # concat | merged | random | multi-random
    label_maps: int = 1  # multi-random: maps per smaller dataset
    score_inputs: str = "auto"  # auto | yes | no: inputs are per-class scores (arranged too)
    val_fraction: float = 0.0  # participants of the training videos held out for validation
    val_every: int = 0  # validate every N iterations (0: at every checkpoint)
    select: str = "auto"  # auto | best-val | last
    select_on_test: bool = False  # select on the test split (recorded; tables show it)
    lr_schedule: str = "none"  # none | step | cosine | plateau | sign
    lr_step: int = 0  # step: iterations between decays (0: a third of the phase)
    lr_gamma: float = 0.1  # step/plateau/sign: factor of each decay
    lr_patience: int = 3  # plateau/sign: validations without improvement before a decay
    lr_min: float = 0.0  # cosine floor; plateau/sign: the lowest lr before giving up on it
    batch_growth: float = 2.0  # sign: factor the batch grows by when lr decays stop helping
    max_batch_growths: int = 2  # sign: how often the batch may grow before stopping early
    early_stop: int = 0  # stop after this many validations without a better loss (0: never)
    boundary: bool = False  # the boundary pre-stage of DDLSTM Sec. 5.1
    boundary_iters: int = 0  # pre-stage iterations (0: a quarter of ``iterations``)
    boundary_sigma: float = 5.0  # width (frames) of the Gaussians of its KL loss
    preset: str | None = None  # the preset the values came from (recorded; see actrec.presets)
    # Streams of every store read (actrec.io.features): None its own, several side by side.
    streams: tuple[str, ...] | None = None
    # Several processes (torchrun, actrec.distributed): batch statistics of the global batch
    # (True) or of each process's rows (False: a different model). One process: no effect.
    sync_bn: bool = True

    def __post_init__(self) -> None:
        # Normalise types given from Python (strings for paths, lists for mix).
        # Absolute paths: config.json says exactly which stores, and a resume from another
        # working directory still matches.
        object.__setattr__(self, "d1", _store_path(self.d1))
        if self.d2 is not None:
            object.__setattr__(self, "d2", _store_path(self.d2))
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
        problems += self._check_protocol()
        if not self.lr > 0:
            problems.append(f"lr must be > 0, got {self.lr}")
        if self.optimizer not in OPTIMIZERS:
            problems.append(f"optimizer must be one of {', '.join(OPTIMIZERS)}, "
                            f"got {self.optimizer!r}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            problems.append(f"grad_clip must be > 0 or None, got {self.grad_clip}")
        for name in ("eval_every", "checkpoint_every", "log_every", "reestimate_batches",
                     "threads"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.input_arrangement not in ("blocks", "projection"):
            problems.append(f"input_arrangement must be 'blocks' or 'projection', "
                            f"got {self.input_arrangement!r}")
        if self.prediction not in ("block", "full"):
            problems.append(f"prediction must be 'block' or 'full', got {self.prediction!r}")
        problems += self._check_recipe()
        if problems:
            raise ConfigError("invalid training spec: " + "; ".join(problems))

    def _check_recipe(self) -> list[str]:
        """Normalise and check loss_frames, windows and epochs."""
        from actrec.data.sampling import parse_windows
        from actrec.losses import parse_loss_frames

        problems = []
        try:
            rule = parse_loss_frames(self.loss_frames, history=self.history)
            object.__setattr__(self, "loss_frames", str(rule))
        except ConfigError as exc:
            problems.append(str(exc))
        try:
            object.__setattr__(self, "windows", str(parse_windows(self.windows)))
        except ConfigError as exc:
            problems.append(str(exc))
        if self.epochs is not None and self.epochs < 1:
            problems.append(f"epochs must be >= 1 (or None: iterations count), got {self.epochs}")
        elif self.epochs is not None and self.finetune_iters:
            # epochs set the fine-tuning iterations; finetune_iters would silently win
            problems.append(f"give epochs ({self.epochs}) or finetune_iters "
                            f"({self.finetune_iters}), not both: both count fine-tuning")
        if not isinstance(self.delay, int) or not 0 <= self.delay < max(self.history, 1):
            problems.append(f"delay must be a number of frames >= 0 and below the history "
                            f"({self.history}), got {self.delay!r}")
        return problems

    def _check_protocol(self) -> list[str]:
        """Normalise and check the protocol, label, validation and schedule fields."""
        extra = tuple(str(Path(p).expanduser().absolute()) for p in self.extra_data)
        object.__setattr__(self, "extra_data", extra)
        if self.init_from is not None:
            object.__setattr__(self, "init_from", str(Path(self.init_from).expanduser().absolute()))
        protocol = self.protocol or ("joint" if self.d2 is not None else "single")
        object.__setattr__(self, "protocol", protocol)
        if self.label_maps == 0:  # the paper's three maps for multi-random, else one
            object.__setattr__(self, "label_maps", 3 if self.labels == "multi-random" else 1)
        problems = []
        n = len(self.datasets)
        if protocol not in PROTOCOLS:
            return [f"protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}"]
        if extra and self.d2 is None:
            problems.append("extra datasets (D3, ...) need d2 as well")
        if protocol == "single" and n > 1:
            problems.append("protocol 'single' trains on d1 alone, but d2 is set; use protocol "
                            "'joint' or 'transfer', or drop d2")
        if protocol == "joint" and n < 2:
            problems.append("protocol 'joint' needs a second dataset (d2)")
        if protocol == "transfer":
            if extra:
                problems.append("protocol 'transfer' pre-trains on one source (d2): extra "
                                "datasets are for joint training")
            if self.init_from is None and (self.d2 is None or self.pretrain_iters <= 0):
                problems.append("protocol 'transfer' needs a source: d2 with pretrain_iters > 0, "
                                "or init_from a trained run")
            if self.init_from is not None and self.pretrain_iters > 0:
                problems.append("init_from replaces pre-training: give pretrain_iters 0 with it")
        elif self.pretrain_iters or self.finetune_iters or self.init_from is not None:
            problems.append("pretrain_iters, finetune_iters and init_from belong to protocol "
                            "'transfer'")
        counts = len(self.mix)
        if any(m < 0 for m in self.mix) or not self.mix or self.mix[0] <= 0:
            problems.append(f"mix must give n1 > 0 windows of D1 and no negative count, "
                            f"got {self.mix}")
        elif protocol == "joint":
            if counts != n:
                problems.append(f"mix gives {counts} window count(s) for {n} datasets; give one "
                                f"per dataset (e.g. {':'.join(['32'] * n)})")
            elif any(m == 0 for m in self.mix):
                k = self.mix.index(0) + 1
                problems.append(f"mix gives no D{k} windows (n{k} = 0) but D{k} is set")
        elif counts > 2:
            problems.append(f"mix gives {counts} window counts for protocol {protocol!r}")
        if self.labels not in LABEL_ARRANGEMENTS:
            problems.append(f"labels must be one of {', '.join(LABEL_ARRANGEMENTS)}, "
                            f"got {self.labels!r}")
        elif self.labels != "concat" and n < 2:
            problems.append(f"the {self.labels} label arrangement maps one dataset's labels onto "
                            f"another's: it needs two datasets")
        if self.labels == "multi-random" and self.label_maps < 2:
            problems.append(f"multi-random needs label_maps >= 2, got {self.label_maps}")
        elif self.labels != "multi-random" and self.label_maps != 1:
            problems.append("label_maps > 1 belongs to the multi-random label arrangement")
        for name, allowed in (("head", HEADS), ("score_inputs", ("auto", "yes", "no")),
                              ("select", SELECTIONS), ("lr_schedule", LR_SCHEDULES)):
            if getattr(self, name) not in allowed:
                problems.append(f"{name} must be one of {', '.join(allowed)}, "
                                f"got {getattr(self, name)!r}")
        if self.score_inputs == "yes" and self.input_arrangement == "projection":
            problems.append("score inputs are arranged by the label maps, not projected: use "
                            "input_arrangement 'blocks' with them")
        if not 0.0 <= self.val_fraction < 1.0:
            problems.append(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        validates = self.val_fraction > 0 or self.select_on_test
        if self.val_fraction > 0 and self.select_on_test:
            problems.append("select_on_test scores the test split, so the videos val_fraction "
                            "holds out of training would never be used: give one of them")
        if self.select == "best-val" and not validates:
            problems.append("select 'best-val' needs a validation set: give val_fraction > 0 "
                            "(or select_on_test, recorded)")
        selects_best = self.select == "best-val" or (self.select == "auto" and validates)
        if self.reestimate_batches and selects_best:
            problems.append("reestimate_batches re-estimates the statistics of the last "
                            "iteration, but the run selects its best validated checkpoint, "
                            "which would keep its momentum averages: give select 'last' with it "
                            "(or no re-estimation)")
        if self.lr_schedule == "sign" and protocol == "transfer":
            problems.append("lr_schedule 'sign' stops a run early: use it with protocol "
                            "'single' or 'joint'")
        if self.lr_schedule in ("plateau", "sign") and not validates:
            problems.append(f"lr_schedule {self.lr_schedule!r} watches the validation loss: "
                            f"give val_fraction > 0")
        if self.early_stop < 0:
            problems.append(f"early_stop must be >= 0 validations, got {self.early_stop}")
        elif self.early_stop and not validates:
            problems.append("early_stop watches the validation loss: give val_fraction > 0")
        elif self.early_stop and protocol == "transfer":
            problems.append("early_stop stops a run early: use it with protocol 'single' or "
                            "'joint' (a stop in pre-training would skip the fine-tuning)")
        for name in ("pretrain_iters", "finetune_iters", "val_every", "lr_step",
                     "boundary_iters"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.lr_patience < 1:
            problems.append(f"lr_patience must be >= 1, got {self.lr_patience}")
        if not 0 < self.lr_gamma < 1:
            problems.append(f"lr_gamma must be in (0, 1), got {self.lr_gamma}")
        if self.lr > 0 and (self.lr_min < 0 or self.lr_min >= self.lr):  # else lr's own error
            problems.append(f"lr_min must be in [0, lr), got {self.lr_min}")
        if not self.batch_growth > 1 or self.max_batch_growths < 0:
            problems.append("batch_growth must be > 1 and max_batch_growths >= 0")
        if not self.boundary_sigma > 0:
            problems.append(f"boundary_sigma must be > 0, got {self.boundary_sigma}")
        if self.boundary and self.input_arrangement == "projection":
            problems.append("the boundary pre-stage reads the arranged features: use "
                            "input_arrangement 'blocks' with it")
        return problems

    @property
    def datasets(self) -> list[Path]:
        """The feature stores in domain order: D1, D2, D3, ..."""
        return [self.d1] + ([self.d2] if self.d2 is not None else []) + [
            _store_path(p) for p in self.extra_data]

    @property
    def joint(self) -> bool:
        return self.protocol == "joint"

    @property
    def validates(self) -> bool:
        """Whether the run scores a selection set (validation, or the test split explicitly)."""
        return self.val_fraction > 0 or self.select_on_test

    @property
    def selection(self) -> str:
        """``best-val`` or ``last``: ``auto`` picks best-val when the run validates."""
        if self.select == "auto":
            return "best-val" if self.validates else "last"
        return self.select

    @property
    def phase_iterations(self) -> tuple[int, ...]:
        """Iterations of each phase: ``(iterations,)``, or transfer's ``(pre-train,
        fine-tune)`` (fine-tune ``finetune_iters``, else ``iterations``)."""
        if self.protocol != "transfer":
            return (self.iterations,)
        return (self.pretrain_iters, self.finetune_iters or self.iterations)

    @property
    def total_iterations(self) -> int:
        return sum(self.phase_iterations)

    @property
    def batch_mix(self) -> tuple[int, ...]:
        """Windows per domain actually drawn: ``(n1,)``, ``(n1, n2, ...)`` when joint."""
        return self.mix if self.joint else self.mix[:1]

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible values: paths as strings, ``mix`` as a list."""
        out = dataclasses.asdict(self)
        out["d1"] = str(self.d1)
        out["d2"] = None if self.d2 is None else str(self.d2)
        out["mix"] = list(self.mix)
        out["extra_data"] = list(self.extra_data)
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
