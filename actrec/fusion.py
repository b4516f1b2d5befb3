"""Late fusion: several runs (one per stream, say RGB and flow) scored together by averaging
their per-frame class probabilities, as two-stream networks fuse their streams' decisions.

Each run is evaluated as ``actrec eval`` would (``evaluate_run``, with all its checks and its
own results file in its folder): online frame by frame by default, so a run whose features
look ahead (a centred motion stream) or whose model is not causal is refused online, and the
fusion with it. The runs must have scored the same test videos of the same dataset, with the
same classes, split and labels; otherwise nothing is fused (``ConfigError`` naming the runs
and what differs). A run trained to answer late (``--delay K``) is evaluated K frames late, so
the fusion is too: its protocol records the largest member look-ahead (mode ``lookahead-K``)
and ``frames_ahead``, the furthest future frame any member's decision depends on; features
that look ahead (allowed explicitly) add ``-features-ahead-F`` to the mode, as in
``actrec.lookahead.evaluation_mode``. A frame's fused probabilities are the weighted mean of
the runs' (softmax over the dataset's classes, ``evaluate.local_probabilities``), and its
prediction their argmax; the fused scores use the same metrics as an evaluation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from actrec.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from actrec.evaluate import DatasetResult, EvalResult, VideoProbabilities

__all__ = ["FusionResult", "fuse_probabilities", "fuse_runs"]


@dataclass(frozen=True)
class FusionResult:
    """The fused scores per dataset, each run's own evaluation, and the protocol used."""

    runs: tuple[Path, ...]
    online: bool
    weights: tuple[float, ...]
    datasets: dict[str, DatasetResult]
    members: tuple[EvalResult, ...]
    protocol: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"runs": [str(r) for r in self.runs], "online": self.online,
                "weights": list(self.weights),
                "datasets": {k: v.to_dict() for k, v in self.datasets.items()},
                "members": [{"run_dir": str(m.run_dir), "model": m.model,
                             "datasets": {k: {"frame_accuracy": v.frame_accuracy,
                                              "edit": v.edit, "f1": v.f1}
                                          for k, v in m.datasets.items()}}
                            for m in self.members],
                "protocol": self.protocol}


def fuse_probabilities(parts: Sequence[VideoProbabilities],
                       weights: Sequence[float]) -> list[np.ndarray]:
    """Per video, the ``weights``-weighted mean of the runs' probabilities ``[T, K]``."""
    total = float(sum(weights))
    fused = []
    for i in range(len(parts[0].ids)):
        mean = sum(w * p.probabilities[i].astype(np.float64) for w, p in zip(weights, parts))
        fused.append(mean / total)  # [T, K]
    return fused


def fuse_runs(
    run_dirs: Sequence[Path],
    *,
    online: bool = True,
    split: str | None = None,
    weights: Sequence[float] | None = None,
    progress: Any = None,
    allow_noncausal_features: bool = False,
    segment_background: str = "exclude",
    device: str | None = None,
) -> FusionResult:
    """Evaluate each run of ``run_dirs`` (``actrec.evaluate.evaluate_run``) and score the
    weighted mean of their class probabilities (``weights``: one per run, default equal).

    ``ConfigError`` for fewer than two runs, bad weights, or runs that did not score the same
    dataset's test videos (classes, split, video ids, frame counts, labels); ``evaluate_run``'s
    refusals apply to each run (online: non-causal models and features that look ahead)."""
    from actrec.evaluate import evaluate_run, score_dataset

    runs = [Path(r) for r in run_dirs]
    if len(runs) < 2:
        raise ConfigError(f"late fusion needs at least two runs, got {len(runs)}")
    if len({r.resolve() for r in runs}) < len(runs):
        raise ConfigError("late fusion of a run with itself: give distinct runs")
    weights = tuple(float(w) for w in (weights if weights is not None else [1.0] * len(runs)))
    if len(weights) != len(runs) or not all(w >= 0 for w in weights) or not sum(weights) > 0:
        raise ConfigError(f"fusion weights: expected {len(runs)} numbers >= 0, not all 0, "
                          f"got {list(weights)}")
    members = [evaluate_run(r, online=online, split=split, progress=progress,
                            allow_noncausal_features=allow_noncausal_features,
                            segment_background=segment_background, device=device,
                            keep_probabilities=True) for r in runs]
    names = list(members[0].probabilities)
    for run, member in zip(runs[1:], members[1:]):
        if list(member.probabilities) != names:
            raise ConfigError(f"runs {runs[0]} and {run} scored different datasets "
                              f"({', '.join(names)} vs {', '.join(member.probabilities)}); "
                              f"fuse runs of the same dataset")
    datasets = {}
    for name in names:
        parts = [m.probabilities[name] for m in members]
        _check_same_videos(name, runs, parts)
        fused = fuse_probabilities(parts, weights)
        preds = [p.argmax(axis=1).astype(np.int64) for p in fused]
        first = parts[0]
        datasets[name] = score_dataset(name, first.store, first.split, first.ids, preds,
                                       first.targets, first.classes, first.segment_background)
    # The fused decision about frame t waits for the member that answers latest (a run trained
    # with --delay K is evaluated K frames late), and sees what its features see beyond that.
    from actrec.lookahead import evaluation_mode, features_reach

    delays = [m.protocol.get("lookahead") for m in members]
    ahead = [m.protocol.get("frames_ahead") for m in members]
    delay = max(int(d or 0) for d in delays) if online else None
    reach = features_reach([f for m in members for f in m.protocol.get("features") or ()])
    protocol = {
        "mode": evaluation_mode(online, delay or 0, reach),
        "lookahead": delay,
        "frames_ahead": None if not online or any(a is None for a in ahead) else max(ahead),
        "fusion": "weighted mean of per-frame class probabilities (softmax over the dataset's "
                  "classes); prediction = argmax",
        "weights": list(weights),
        "runs": [{"run_dir": str(m.run_dir), "model": m.model,
                  "streams": m.protocol.get("streams"), "features": m.protocol.get("features"),
                  "stores": m.protocol.get("stores")} for m in members],
        "splits": members[0].protocol.get("splits"),
        "segment_background": segment_background,
        "noncausal_features_used": any(m.protocol.get("noncausal_features_used")
                                       for m in members),
    }
    return FusionResult(tuple(runs), online, weights, datasets, tuple(members), protocol)


def _check_same_videos(name: str, runs: Sequence[Path],
                       parts: Sequence[VideoProbabilities]) -> None:
    """``ConfigError`` naming two runs and what differs, unless every run scored the same
    videos of dataset ``name`` with the same classes, split, frame counts and labels."""
    first = parts[0]
    for run, part in zip(runs[1:], parts[1:]):
        where = f"runs {runs[0]} and {run} (dataset {name})"
        if part.dataset != first.dataset:
            raise ConfigError(f"{where}: stores of different datasets ({first.dataset} vs "
                              f"{part.dataset})")
        if part.classes != first.classes:
            raise ConfigError(f"{where}: different classes ({len(first.classes)} vs "
                              f"{len(part.classes)}); fuse runs of the same label set")
        if part.split != first.split:
            raise ConfigError(f"{where}: different splits ('{first.split}' vs '{part.split}')")
        if part.ids != first.ids:
            only = sorted(set(first.ids) ^ set(part.ids))
            detail = f"e.g. '{only[0]}' is in one only" if only else "in another order"
            raise ConfigError(f"{where}: different test videos ({detail})")
        for vid, a, b in zip(first.ids, first.targets, part.targets):
            if a.shape != b.shape:
                raise ConfigError(f"{where}: video '{vid}' has {a.shape[0]} frames in one and "
                                  f"{b.shape[0]} in the other")
            if not np.array_equal(a, b):
                raise ConfigError(f"{where}: video '{vid}' has different labels")
