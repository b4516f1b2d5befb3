"""Training a temporal model on one feature store, or jointly on two (D1 + D2).

``train_model(spec, run_dir)`` loads the training videos of the split into memory once (see
``actrec.data.windows``), then repeats: sample ``n1`` windows of ``history`` frames from D1 and
``n2`` from D2 (D1 rows first, domain vector ``[0]*n1 + [1]*n2``), map their labels into the
concatenated label vector (``actrec.data.labels``), and minimise the mean per-frame
cross-entropy over every labelled frame of the batch (padding and unlabelled frames carry label
-1 and are ignored). After each optimiser step it calls ``model.after_optimizer_step()`` (DDBN
projects its alphas there).

Randomness: window sampling draws from a ``numpy.random.Generator`` seeded from ``spec.seed``;
torch's own randomness (initial weights, dropout) runs inside ``torch.random.fork_rng`` seeded
from ``spec.seed``, so the caller's global RNG is left as it was. Both generators' states are in
every checkpoint, so a resumed run continues exactly as an uninterrupted one would.

The run directory layout is in ``actrec.runs``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from actrec.errors import ActrecError, ConfigError, DataError
from actrec.plugin_api import coerce

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from actrec.data.labels import InputLayout, LabelSpace
    from actrec.io.features import FeatureStore
    from actrec.nn.base import SequenceModel

__all__ = ["TrainSpec", "TrainResult", "train_model", "build_model", "open_store", "choose_split"]

CHECKPOINT_FORMAT = "actrec-checkpoint"
CHECKPOINT_VERSION = 1
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

    def __post_init__(self) -> None:
        # Normalise types given from Python (strings for paths, lists for mix).
        # Absolute paths: config.json says exactly which stores, and a resume from another
        # working directory still matches.
        object.__setattr__(self, "d1", Path(self.d1).expanduser().absolute())
        if self.d2 is not None:
            object.__setattr__(self, "d2", Path(self.d2).expanduser().absolute())
        object.__setattr__(self, "mix", tuple(int(n) for n in self.mix))
        object.__setattr__(self, "model_options", dict(self.model_options))
        for name in ("split", "d2_split"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, str(value))
        problems = []
        if not self.model:
            problems.append("model must be a model plugin name")
        if self.history <= 0:
            problems.append(f"history must be > 0, got {self.history}")
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


@dataclass(frozen=True)
class TrainResult:
    """What a call to ``train_model`` did."""

    run_dir: Path
    iterations: int  # iterations done in total (including before a resume)
    resumed_from: int  # 0 for a fresh run
    final_loss: float  # mean loss of the last logged interval (nan when nothing ran)
    elapsed_s: float  # training time in total
    checkpoint: Path

    def to_dict(self) -> dict[str, Any]:
        return {"run_dir": str(self.run_dir), "iterations": self.iterations,
                "resumed_from": self.resumed_from, "final_loss": self.final_loss,
                "elapsed_s": round(self.elapsed_s, 3), "checkpoint": str(self.checkpoint)}


# --------------------------------------------------------------------------------------------
# Pieces shared with evaluation


def open_store(path: Path) -> FeatureStore:
    """Open a feature store (``DataError`` naming the path if it is not one)."""
    from actrec.io.features import FeatureStore

    return FeatureStore.open(path)


def choose_split(store: FeatureStore, name: str | None) -> tuple[str, dict[str, list[str]]]:
    """The split called ``name`` of ``store`` (default: its first); ``ConfigError`` if unknown."""
    splits = store.splits
    if not splits:
        raise DataError(f"feature store {store.path} records no splits")
    if name is None:
        name = next(iter(splits))
    if name not in splits:
        raise ConfigError(f"feature store {store.path} has no split '{name}'; expected one of: "
                          f"{', '.join(splits)}")
    return name, splits[name]


def _model_class(name: str) -> type:
    from actrec.registry import plugin_class

    return plugin_class("models", name)


def build_model(
    name: str,
    options: Mapping[str, Any],
    layout: InputLayout,
    labels: LabelSpace,
) -> tuple[Any, SequenceModel]:
    """The model plugin ``name`` configured by ``options`` and its module for ``layout`` inputs
    and ``labels`` outputs. For ``layout.mode == "projection"`` the plugin must offer an
    ``input_projection`` option (``ConfigError`` otherwise); it is set to the domains' feature
    dimensions. Draws initial weights from torch's global RNG (seed it, or fork it, first)."""
    cls = _model_class(name)
    opts = dict(options)
    if layout.mode == "projection":
        names = {f.name for f in dataclasses.fields(cls.Config)}
        if "input_projection" not in names:
            raise ConfigError(
                f"model '{name}' has no per-domain input projection (option input_projection); "
                f"use input_arrangement 'blocks'"
            )
        opts["input_projection"] = _projection_value(cls.Config, layout)
    config = cls.Config.from_options(opts, owner=f"model '{name}'")
    plugin = cls(config)
    model = plugin.build(layout.width, labels.num_classes)
    return plugin, model


def _projection_value(config_cls: type, layout: InputLayout) -> Any:
    """What to pass as ``input_projection``: the domains' dims for a tuple option, else on."""
    hint = typing.get_type_hints(config_cls).get("input_projection")
    if typing.get_origin(hint) is tuple or hint is tuple:
        return tuple(layout.dims)
    return True


def _alphas(model: torch.nn.Module) -> dict[str, list[float]]:
    """DDBN alpha parameters by name (empty for models without them)."""
    return {name: [round(float(v), 6) for v in p.detach().reshape(-1).cpu()]
            for name, p in model.named_parameters() if "alpha" in name}


def _device(spec: TrainSpec) -> torch.device:
    import torch

    try:
        device = torch.device(spec.device)
    except RuntimeError:
        raise ConfigError(f"unknown device {spec.device!r}; expected 'cpu' or 'cuda'") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {spec.device!r} requested but torch sees no CUDA device")
    return device


# --------------------------------------------------------------------------------------------
# Training


def train_model(
    spec: TrainSpec,
    run_dir: Path,
    *,
    sources: Mapping[str, str] | None = None,
    progress: Any = None,
) -> TrainResult:
    """Train (or resume training) ``spec`` in ``run_dir``; see the module docs.

    An existing ``run_dir/checkpoint.pt`` is resumed: its spec must equal ``spec`` except for
    ``iterations``/``eval_every``/``checkpoint_every``/``log_every``/``device`` (``ConfigError``
    naming the differing fields otherwise), and training continues from its iteration up to
    ``spec.iterations``. ``sources`` (field -> "default" / "config file" / "env" /
    "command line") is recorded in ``config.json`` as given. ``progress`` is a
    ``rich.progress.Progress`` to show iterations and loss on.
    """
    import numpy as np
    import torch

    from actrec import runs
    from actrec.data.labels import InputLayout, LabelSpace
    from actrec.data.scaling import FeatureScaler
    from actrec.data.windows import VideoBank

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    device = _device(spec)
    ckpt_path = run_dir / runs.CHECKPOINT
    checkpoint = runs.load_checkpoint(ckpt_path) if ckpt_path.exists() else None
    if checkpoint is not None:
        _check_resume(checkpoint, spec, ckpt_path)

    # Data: the training videos of each store, in memory.
    paths = [spec.d1] + ([spec.d2] if spec.d2 is not None else [])
    stores = [open_store(p) for p in paths]
    split_names = [spec.split, spec.d2_split][: len(stores)]
    banks, chosen = [], []
    for role, store, wanted in zip(("D1", "D2"), stores, split_names):
        name, split = choose_split(store, wanted)
        chosen.append(name)
        banks.append(VideoBank.from_store(store, split["train"], progress=progress,
                                          name=f"{role} {store.path} split '{name}'"))
    scalers = [FeatureScaler.fit(b.features) if spec.standardize else FeatureScaler.identity(b.dim)
               for b in banks]
    banks = [b.transformed(s) for b, s in zip(banks, scalers)]
    labels = LabelSpace(tuple(tuple(s.classes) for s in stores))
    for role, bank, store in zip(("D1", "D2"), banks, stores):
        bad = [vid for vid, y in zip(bank.ids, bank.labels)
               if y.size and (y.max() >= len(store.classes) or y.min() < -1)]
        if bad:
            raise DataError(f"feature store {store.path}: video '{bad[0]}' has labels outside "
                            f"-1..{len(store.classes) - 1}")
    layout = InputLayout(tuple(b.dim for b in banks), spec.input_arrangement)

    cuda = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(spec.seed)
        plugin, model = build_model(spec.model, spec.model_options, layout, labels)
        model.to(device)
        params = [p for p in model.parameters() if p.requires_grad]
        if spec.optimizer == "sgd":
            optimizer = torch.optim.SGD(params, lr=spec.lr, momentum=spec.momentum,
                                        weight_decay=spec.weight_decay)
        else:
            optimizer = torch.optim.Adam(params, lr=spec.lr, weight_decay=spec.weight_decay)
        rng = np.random.default_rng(spec.seed)
        start, elapsed_before = 0, 0.0
        if checkpoint is not None:
            _restore(checkpoint, model, optimizer, rng, ckpt_path, device)
            start = int(checkpoint["iteration"])
            elapsed_before = float(checkpoint.get("elapsed_s", 0.0))
        # Lines logged after the last checkpoint (or before a first one) are redone: drop them.
        _truncate_metrics(run_dir / runs.METRICS, start)
        if checkpoint is None or start < spec.iterations:
            _write_config(run_dir, spec, sources, stores, chosen, banks, labels, layout,
                          plugin, model, resumed_at=start if checkpoint is not None else None)

        state = _Loop(spec, run_dir, model, optimizer, rng, device, banks, labels, layout,
                      plugin, stores, chosen, elapsed_before, scalers)
        final_loss = state.run(start, progress)
        if checkpoint is None and spec.iterations == 0:  # an untrained model is still a run
            state.save(0, final_loss)
        if start >= spec.iterations and checkpoint is not None:  # nothing left to do
            final_loss = float(checkpoint.get("loss", float("nan")))
    return TrainResult(run_dir, max(start, spec.iterations), start, final_loss,
                       state.elapsed(), ckpt_path)


class _Loop:
    """The optimisation loop and its bookkeeping (logging, checkpoints, periodic eval)."""

    def __init__(self, spec, run_dir, model, optimizer, rng, device, banks, labels, layout,
                 plugin, stores, splits, elapsed_before, scalers):
        self.spec, self.run_dir, self.model, self.optimizer = spec, run_dir, model, optimizer
        self.scalers = scalers
        self.rng, self.device, self.banks = rng, device, banks
        self.labels, self.layout, self.plugin = labels, layout, plugin
        self.stores, self.splits = stores, splits
        self.elapsed_before = elapsed_before
        self.t0 = time.perf_counter()

    def elapsed(self) -> float:
        return self.elapsed_before + time.perf_counter() - self.t0

    def run(self, start: int, progress: Any) -> float:
        """Iterations ``start .. spec.iterations - 1``; the mean loss of the last logged ones."""
        import torch
        import torch.nn.functional as F

        from actrec import runs
        from actrec.data.windows import two_domain_batch

        spec, model = self.spec, self.model
        task = None
        if progress is not None:
            task = progress.add_task(f"train {spec.model}", total=spec.iterations,
                                     completed=min(start, spec.iterations))
        losses: list[float] = []
        correct = counted = 0
        last_loss = float("nan")
        metrics = open(self.run_dir / runs.METRICS, "a", encoding="utf-8")
        try:
            for it in range(start, spec.iterations):
                batch = two_domain_batch(self.banks, spec.batch_mix, spec.history, self.rng,
                                   self.labels, self.layout).to(self.device)
                model.train()
                logits = model(batch.x, batch.domain)  # [T, N, K]
                flat = logits.reshape(-1, logits.shape[-1])  # [T*N, K]
                target = batch.y.reshape(-1)  # [T*N]
                labelled = target >= 0
                if bool(labelled.any()):
                    loss = F.cross_entropy(flat, target, ignore_index=-1)
                else:  # a batch of unlabelled frames only: nothing to learn, keep the graph
                    loss = flat.sum() * 0.0
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if spec.grad_clip is not None:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), spec.grad_clip)
                self.optimizer.step()
                model.after_optimizer_step()

                value = float(loss.detach())
                if not math.isfinite(value):
                    raise ActrecError(f"training diverged at iteration {it + 1} (loss {value}); "
                                      f"lower the learning rate or set grad_clip")
                losses.append(value)
                with torch.no_grad():
                    hit = (flat.argmax(-1) == target) & labelled
                    correct += int(hit.sum())
                    counted += int(labelled.sum())
                done = it + 1
                last = done == spec.iterations
                if (spec.log_every and done % spec.log_every == 0) or last:
                    last_loss = sum(losses) / len(losses)
                    line = {"iteration": done, "loss": last_loss,
                            "train_frame_accuracy": correct / counted if counted else None,
                            "lr": self.optimizer.param_groups[0]["lr"],
                            "elapsed_s": round(self.elapsed(), 3)}
                    alphas = _alphas(model)
                    if alphas:
                        line["alphas"] = alphas
                    _log(metrics, line)
                    losses, correct, counted = [], 0, 0
                    if task is not None:
                        progress.update(task, description=f"train {spec.model} "
                                        f"loss {last_loss:.3f}")
                if last and spec.reestimate_batches:
                    self.reestimate(done)
                if (spec.checkpoint_every and done % spec.checkpoint_every == 0) or last:
                    self.save(done, last_loss)
                if spec.eval_every and done % spec.eval_every == 0:
                    _log(metrics, {"iteration": done, "eval": self.evaluate()})
                if task is not None:
                    progress.advance(task)
        finally:
            metrics.close()
            if task is not None:
                progress.remove_task(task)
        return last_loss

    def reestimate(self, iteration: int) -> None:
        """Exact population statistics over ``spec.reestimate_batches`` fresh batches."""
        import numpy as np

        from actrec.data.windows import two_domain_batch
        from actrec.nn.reestimate import reestimate_statistics

        spec = self.spec
        rng = np.random.default_rng([spec.seed, iteration])

        def batches():
            for _ in range(spec.reestimate_batches):
                b = two_domain_batch(self.banks, spec.batch_mix, spec.history, rng,
                                     self.labels, self.layout).to(self.device)
                yield b.x, b.domain

        reestimate_statistics(self.model, batches())

    def evaluate(self) -> dict[str, float]:
        """Offline frame accuracy of each dataset's test split with the current weights."""
        from actrec.evaluate import evaluate_model

        results = evaluate_model(
            self.model, self.stores, self.splits, self.labels, self.layout,
            online=False, prediction=self.spec.prediction, device=self.device,
            scalers=self.scalers,
        )
        self.model.train()
        return {name: r.frame_accuracy for name, r in results.items()}

    def save(self, iteration: int, loss: float) -> None:
        import torch

        from actrec import runs

        spec = self.spec
        checkpoint = {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "iteration": iteration,
            "loss": loss,
            "elapsed_s": self.elapsed(),
            "spec": spec.to_dict(),
            "model_name": spec.model,
            "model_config": self.plugin.config.to_dict(),
            "causal": bool(getattr(self.plugin, "causal", True)) and bool(self.model.causal),
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "classes": [list(c) for c in self.labels.classes],
            "input_dims": list(self.layout.dims),
            "input_arrangement": self.layout.mode,
            "input_scalers": [s.to_state() for s in self.scalers],
            "stores": [str(s.path) for s in self.stores],
            "splits": list(self.splits),
            "rng": {"numpy": self.rng.bit_generator.state, "torch": torch.get_rng_state()},
        }
        if self.device.type == "cuda":
            checkpoint["rng"]["torch_cuda"] = torch.cuda.get_rng_state(self.device)
        runs.atomic_torch_save(self.run_dir / runs.CHECKPOINT, checkpoint)


def _log(handle: Any, line: dict[str, Any]) -> None:
    handle.write(json.dumps(line) + "\n")
    handle.flush()


def _truncate_metrics(path: Path, iteration: int) -> None:
    """Drop lines logged after ``iteration`` (an interrupted run logs past its last
    checkpoint; the resumed run logs those iterations again)."""
    from actrec import runs

    if not path.exists():
        return
    kept, dropped = [], 0
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            done = int(json.loads(line).get("iteration", 0))
        except (ValueError, AttributeError, TypeError):
            done = iteration + 1  # a line cut short by the interruption
        if done <= iteration:
            kept.append(line)
        else:
            dropped += 1
    if dropped:
        runs.atomic_write_text(path, "".join(k + "\n" for k in kept))


def _check_resume(checkpoint: dict[str, Any], spec: TrainSpec, path: Path) -> None:
    if checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise DataError(f"{path}: not an actrec training checkpoint")
    saved = checkpoint.get("spec", {})
    mine = spec.to_dict()
    differ = sorted(k for k in set(saved) | set(mine)
                    if k not in RESUMABLE and saved.get(k) != mine.get(k))
    if differ:
        details = ", ".join(f"{k}: {saved.get(k)!r} -> {mine.get(k)!r}" for k in differ)
        raise ConfigError(f"{path} belongs to a run with a different spec ({details}); "
                          f"use a new run directory, or the same settings to resume")


def _restore(checkpoint, model, optimizer, rng, path: Path, device) -> None:
    import torch

    try:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        rng.bit_generator.state = checkpoint["rng"]["numpy"]
        torch.set_rng_state(checkpoint["rng"]["torch"])
        if device.type == "cuda" and "torch_cuda" in checkpoint["rng"]:
            torch.cuda.set_rng_state(checkpoint["rng"]["torch_cuda"], device)
    except (KeyError, RuntimeError, ValueError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{path}: cannot resume from this checkpoint ({first})") from None


def _write_config(run_dir, spec, sources, stores, splits, banks, labels, layout, plugin, model,
                  *, resumed_at: int | None) -> None:
    from actrec import runs
    from actrec.system_info import versions

    path = run_dir / runs.CONFIG
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    if resumed_at is not None and path.exists():
        config = runs.read_json(path)
        config.setdefault("resumed", []).append({
            "at_iteration": resumed_at, "time": now, "spec": spec.to_dict(),
            "sources": dict(sources or {}), "versions": versions()})
        runs.atomic_write_json(path, config)
        return
    store_info = []
    for role, store, split, bank in zip(("d1", "d2"), stores, splits, banks):
        attrs = store.attrs
        store_info.append({
            "role": role, "path": str(store.path), "split": split,
            "dataset": attrs.get("dataset"), "split_scheme": attrs.get("split_scheme"),
            "extractor": attrs.get("extractor"), "extractor_config": attrs.get("extractor_config"),
            "lookahead": attrs.get("lookahead"), "causal": attrs.get("causal"),
            "dtype": attrs.get("dtype"), "dim": bank.dim, "classes": len(store.classes),
            "train_videos": len(bank), "train_frames": bank.num_frames,
        })
    config = {
        "created": now,
        "spec": spec.to_dict(),
        "sources": dict(sources or {}),
        "versions": versions(),
        "stores": store_info,
        "model": {"name": spec.model, "config": plugin.config.to_dict(),
                  "causal": bool(getattr(plugin, "causal", True)) and bool(model.causal),
                  "parameters": sum(p.numel() for p in model.parameters())},
        "labels": {"offsets": list(labels.offsets), "num_classes": labels.num_classes},
        "inputs": {"arrangement": layout.mode, "dims": list(layout.dims),
                   "width": layout.width, "shared_columns": layout.shared},
        "protocol": {"loss": "mean per-frame cross-entropy over the concatenated label vector, "
                             "label -1 ignored",
                     "windows": "uniform video, uniform start; short videos zero-padded at "
                                "the end with label -1",
                     "prediction": spec.prediction},
    }
    if resumed_at:
        config["resumed"] = [{"at_iteration": resumed_at, "time": now}]
    runs.atomic_write_json(path, config)
