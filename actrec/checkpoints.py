"""Checkpoints and the metrics log of a run: what makes a killed run resume exactly.

A checkpoint holds the model, the optimiser, both random generators, the spec and everything
evaluation needs to rebuild the model (plugin config, classes, input layout, scalers, stores).
A resumed run must have the same spec but for ``RESUMABLE`` fields; lines the metrics log got
after the last checkpoint are dropped, because the resumed run logs those iterations again.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from actrec.errors import ConfigError, DataError
from actrec.train_spec import RESUMABLE, TrainSpec

__all__ = ["CHECKPOINT_FORMAT", "CHECKPOINT_VERSION", "log_line", "truncate_metrics",
           "check_resume", "check_schedule_span", "restore"]

CHECKPOINT_FORMAT = "actrec-checkpoint"
CHECKPOINT_VERSION = 1


def log_line(handle: Any, line: dict[str, Any]) -> None:
    """Append ``line`` as one JSON line to the open metrics log and flush it."""
    from actrec.runs import json_safe

    handle.write(json.dumps(json_safe(line), allow_nan=False) + "\n")
    handle.flush()


def truncate_metrics(path: Path, iteration: int) -> None:
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


def check_resume(checkpoint: dict[str, Any], spec: TrainSpec, path: Path) -> None:
    """``DataError`` unless ``checkpoint`` is an actrec checkpoint; ``ConfigError`` naming the
    differing fields unless its spec equals ``spec`` but for ``RESUMABLE`` fields."""
    if checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise DataError(f"{path}: not an actrec training checkpoint")
    # Fields added to TrainSpec after the checkpoint was written take their defaults.
    defaults = {f.name: f.default for f in dataclasses.fields(TrainSpec)
                if f.default is not dataclasses.MISSING}
    saved = {**defaults, **checkpoint.get("spec", {})}
    try:  # derived fields (protocol, label_maps) as this version derives them
        saved = TrainSpec.from_dict(saved).to_dict()
    except ConfigError:
        pass  # compared as recorded: the differing fields are named below
    mine = spec.to_dict()
    differ = sorted(k for k in set(saved) | set(mine)
                    if k not in RESUMABLE and saved.get(k) != mine.get(k))
    if differ:
        details = ", ".join(f"{k}: {saved.get(k)!r} -> {mine.get(k)!r}" for k in differ)
        raise ConfigError(f"{path} belongs to a run with a different spec ({details}); "
                          f"use a new run directory, or the same settings to resume")


def check_schedule_span(checkpoint: dict[str, Any], spec: TrainSpec, path: Path) -> None:
    """``ConfigError`` when a resumed run's phases have other lengths than its checkpoint's
    (``--iterations`` / ``--epochs`` changed) under a learning-rate schedule laid over the
    phase's length (``cosine``; ``step`` without ``--lr-step``): the rate would jump at the
    resume to a curve that neither the old nor the new length trains with."""
    spans = spec.lr_schedule == "cosine" or (spec.lr_schedule == "step" and not spec.lr_step)
    saved = checkpoint.get("spec") or {}
    if not spans or "iterations" not in saved:
        return
    try:
        before = TrainSpec.from_dict(saved).phase_iterations
    except ConfigError:
        return
    if before != spec.phase_iterations:
        raise ConfigError(
            f"{path}: the run's phases last {list(before)} iterations and would last "
            f"{list(spec.phase_iterations)} now, but --lr-schedule {spec.lr_schedule} spreads "
            f"the learning rate over the phase's length, so it would jump at the resume; "
            f"resume with the iterations (or epochs) it started with, or train a new run "
            f"(--protocol transfer --init-from {path.parent} starts one from its weights)")


def restore(checkpoint, model, optimizer, rng, path: Path, device) -> None:
    """Load weights, optimiser state and both generators' states from ``checkpoint``;
    ``DataError`` naming ``path`` when they do not fit."""
    import torch

    try:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        rng.bit_generator.state = checkpoint["rng"]["numpy"]
        torch.set_rng_state(checkpoint["rng"]["torch"])
        if device.type == "cuda" and "torch_cuda" in checkpoint["rng"]:
            torch.cuda.set_rng_state(checkpoint["rng"]["torch_cuda"], device)
    except (KeyError, RuntimeError, ValueError, TypeError) as exc:
        lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
        what = " ".join(lines[:4]) if lines else type(exc).__name__  # torch's reason is line 2+
        raise DataError(f"{path}: cannot resume from this checkpoint ({what})") from None
