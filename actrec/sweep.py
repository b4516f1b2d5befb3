"""Scores over every split of a dataset: the runs of one sweep, their mean and spread.

A split sweep is a set of run folders in one runs folder whose training specs are equal except
for the split they trained on (``split``, ``d2_split``, and fields that do not change what is
trained: device, logging and checkpoint intervals). They are keyed by the split of their first
dataset (D1). The papers report each metric as the mean over the splits with its standard
deviation; here the standard deviation is the *sample* one (``ddof=1``), and a sweep that lacks
some split of the store says which, rather than averaging silently over fewer.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from actrec.errors import ConfigError, DataError

__all__ = [
    "IGNORED_FIELDS",
    "METRICS",
    "evaluate_splits",
    "gather_split_runs",
    "group_split_runs",
    "split_order",
    "summarize_splits",
]

# Spec fields that may differ between the runs of one sweep: the split itself, and fields that
# change neither the data nor the weights (where it ran and on how many threads, how often it
# logged or saved; the checkpoint interval counts when the run validates at its checkpoints:
# no val_every).
IGNORED_FIELDS = frozenset({"split", "d2_split", "device", "threads", "log_every",
                            "checkpoint_every", "eval_every"})

# (key in the summary, how to read it from one dataset's result dict)
METRICS: tuple[tuple[str, Any], ...] = (
    ("frame_accuracy", lambda ds: ds.get("frame_accuracy")),
    ("mean_video_accuracy", lambda ds: ds.get("mean_video_accuracy")),
    ("edit", lambda ds: ds.get("edit")),
    ("f1@10", lambda ds: (ds.get("f1") or {}).get("10")),
    ("f1@25", lambda ds: (ds.get("f1") or {}).get("25")),
    ("f1@50", lambda ds: (ds.get("f1") or {}).get("50")),
)


def split_order(name: str) -> tuple:
    """Sort key of split names in natural order: split 2 before split 10."""
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p)
                 for p in re.split(r"(\d+)", str(name)) if p)


def _config(run_dir: Path) -> dict[str, Any]:
    from actrec import runs

    path = Path(run_dir) / runs.CONFIG
    config = runs.read_json(path)
    if not isinstance(config, dict) or not isinstance(config.get("spec"), dict) \
            or not config.get("stores"):
        raise DataError(f"{path}: not an actrec run config (no 'spec' or 'stores')")
    return config


def _spec(config: Mapping[str, Any]) -> dict[str, Any]:
    """The spec the run's checkpoint was last trained under (a resume may have changed
    resumable fields)."""
    resumed = [r for r in config.get("resumed") or [] if isinstance(r, dict) and "spec" in r]
    return dict(resumed[-1]["spec"] if resumed else config["spec"])


def _d1_split(config: Mapping[str, Any], run_dir: Path) -> str:
    split = config["stores"][0].get("split")
    if split is None:
        raise DataError(f"{Path(run_dir) / 'config.json'}: records no split for D1")
    return str(split)


def _validates_at_checkpoints(spec: Mapping[str, Any]) -> bool:
    """Whether the run validates (and so selects, decays or stops) at its checkpoints."""
    return not spec.get("val_every") and bool(spec.get("val_fraction") or
                                              spec.get("select_on_test"))


def _differing(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    ignored = IGNORED_FIELDS
    if _validates_at_checkpoints(a) or _validates_at_checkpoints(b):
        ignored = ignored - {"checkpoint_every"}  # it times the validations then
    return sorted(k for k in set(a) | set(b) if k not in ignored and a.get(k) != b.get(k))


def group_split_runs(run_dirs: Iterable[Path]) -> dict[str, Path]:
    """The given run folders keyed by the split of D1, in natural split order.

    ``ConfigError`` when two runs differ in anything but the split (naming both runs and the
    fields) or when two runs trained on the same split (naming both).
    """
    runs: dict[str, Path] = {}
    first: tuple[Path, dict[str, Any]] | None = None
    for run_dir in run_dirs:
        run_dir = Path(run_dir)
        config = _config(run_dir)
        spec = _spec(config)
        if first is None:
            first = (run_dir, spec)
        else:
            fields = _differing(first[1], spec)
            if fields:
                raise ConfigError(
                    f"runs {first[0]} and {run_dir} differ in {', '.join(fields)}, not only in "
                    f"the split: a split sweep averages runs that differ only in their split")
        split = _d1_split(config, run_dir)
        if split in runs:
            raise ConfigError(f"runs {runs[split]} and {run_dir} both trained on split "
                              f"'{split}': keep one of them in the runs folder, or move one out")
        runs[split] = run_dir
    return {k: runs[k] for k in sorted(runs, key=split_order)}


def gather_split_runs(run_dir: Path) -> tuple[dict[str, Path], list[str]]:
    """The sweep ``run_dir`` belongs to: every run folder beside it (same runs folder) with a
    checkpoint whose spec equals ``run_dir``'s except for the split fields, keyed by D1's
    split (``group_split_runs``), and the splits D1's store records that no such run covers,
    in natural order. ``DataError`` when ``run_dir`` is not a trained run or its D1 store
    cannot be opened; ``ConfigError`` for two runs of one split."""
    from actrec import runs
    from actrec.io.features import FeatureStore

    run_dir = Path(run_dir)
    if not (run_dir / runs.CHECKPOINT).is_file():
        raise DataError(f"{run_dir}: no {runs.CHECKPOINT}; train the run first")
    config = _config(run_dir)
    spec = _spec(config)
    members = [run_dir]
    for folder in sorted(p for p in run_dir.parent.iterdir() if p.is_dir() and p != run_dir):
        if not (folder / runs.CONFIG).is_file() or not (folder / runs.CHECKPOINT).is_file():
            continue
        try:
            other = _spec(_config(folder))
        except DataError:
            continue  # a damaged neighbour is not part of this sweep
        if not _differing(spec, other):
            members.append(folder)
    grouped = group_split_runs(members)
    store = FeatureStore.open(config["stores"][0]["path"])
    missing = sorted(set(store.splits) - set(grouped), key=split_order)
    return grouped, missing


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def summarize_splits(results: Mapping[str, Mapping[str, Any]],
                     missing: Iterable[str] = ()) -> dict[str, Any]:
    """Per dataset and metric of ``results`` (split -> an ``EvalResult.to_dict()``): the value
    of every split, their mean and sample standard deviation (``ddof=1``; None for a single
    split), and ``n``. A metric that some split lacks (None or NaN) has mean and std None
    rather than an average over fewer splits. ``lookahead_without_delay`` lists the splits
    whose look-ahead result comes from a run trained without ``--delay``. ``missing`` (splits of the store no run
    covers) is passed through and makes ``complete`` False. ``roles``: a transfer sweep's
    ``{dataset: "target" | "source"}`` from the runs' protocols (empty otherwise)."""
    splits = sorted(results, key=split_order)
    datasets: dict[str, Any] = {}
    for split in splits:
        for name, ds in (results[split].get("datasets") or {}).items():
            entry = datasets.setdefault(name, {"splits": {}, "metrics": {}})
            entry["splits"][split] = ds.get("split")
            for key, read in METRICS:
                entry["metrics"].setdefault(key, {"per_split": {}})["per_split"][split] = read(ds)
    for entry in datasets.values():
        for stats in entry["metrics"].values():
            values = [stats["per_split"].get(s) for s in splits]
            n = len(values)
            if n == 0 or not all(_finite(v) for v in values):
                stats.update(mean=None, std=None, n=sum(_finite(v) for v in values))
                continue
            mean = sum(values) / n
            std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else None
            stats.update(mean=mean, std=std, n=n)
    modes = {str((r.get("protocol") or {}).get("mode")) for r in results.values()}
    # Look-ahead scores of runs not trained to answer late (actrec.lookahead) must say so.
    untrained = [s for s in splits if (results[s].get("protocol") or {}).get("lookahead")
                 and not (results[s].get("protocol") or {}).get("trained_delay")]
    missing = sorted(missing, key=split_order)
    # A transfer sweep: which dataset the runs are for (each result's protocol.roles,
    # {name: "target" | "source"}; the same for every split of one sweep).
    roles: dict[str, str] = {}
    for s in splits:
        for name, role in ((results[s].get("protocol") or {}).get("roles") or {}).items():
            roles.setdefault(str(name), str(role))
    return {"splits": splits, "missing": missing, "complete": not missing, "roles": roles,
            "mode": modes.pop() if len(modes) == 1 else sorted(modes),
            "lookahead_without_delay": untrained,
            "std": "sample standard deviation over the splits (ddof=1)",
            "runs": {s: str(results[s].get("run_dir")) for s in splits},
            "datasets": datasets}


def evaluate_splits(run_dir: Path, *, progress: Any = None,
                    **evaluate_options: Any) -> dict[str, Any]:
    """Evaluate every run of ``run_dir``'s sweep (``gather_split_runs``) in one setting
    (``evaluate_options`` go to ``actrec.evaluate.evaluate_run``, which writes each run's own
    results file) and summarize them (``summarize_splits``)."""
    from actrec.evaluate import evaluate_run

    if evaluate_options.get("split") is not None:
        raise ConfigError("a split sweep evaluates each run on its own split; give no split")
    evaluate_options.pop("split", None)
    grouped, missing = gather_split_runs(run_dir)
    results = {split: evaluate_run(path, progress=progress, **evaluate_options).to_dict()
               for split, path in grouped.items()}
    return summarize_splits(results, missing)
