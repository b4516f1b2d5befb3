"""The units of work of a reproduced table, each a plain dict a worker process can run.

Three kinds, each a library call and a folder that says when it is finished:

- ``head``: the per-split frame classifier of one dataset and its per-frame outputs as a
  feature store (``actrec.frame_head.extract_head_features``, which reuses a saved head and
  skips stored videos itself; a head whose backbone features changed is trained again and its
  store rebuilt, the old store and head moved aside to ``<store>.stale-<time>``);
- ``frame-classifier``: the frame classifier alone, scored on the split's test videos (argmax of
  the stored class scores; ``actrec.evaluate.score_dataset``); ``<dir>/frame-classifier.json``;
- ``train``: a training run (``actrec.pipeline.train_from_refs``) evaluated online
  (``actrec.evaluate.evaluate_run``); ``<dir>`` is a normal run folder. It is finished when its
  online results file belongs to its checkpoint, the checkpoint's spec is the one asked for and
  the stores are as trained; then it is skipped. A partly trained run resumes (the trainer's own
  resume). A run the trainer would refuse to resume (other settings, changed input stores, an
  unreadable checkpoint) is moved aside to ``<dir>.stale-<time>`` (kept, never trained over)
  and the unit is trained afresh; the result says so (``moved``, ``moved_because``).

``run_unit`` returns ``{"key", "status": done|skipped|failed, "scores": [...], "error"}``;
``scores`` holds the table's metric for each dataset of the unit in domain order.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from actrec.errors import ActrecError, DataError

__all__ = ["FRAME_RESULT", "finished_scores", "resume_problem", "run_unit"]

FRAME_RESULT = "frame-classifier.json"
EVAL_RESULT = "eval-online.json"


def _metric(metric: str, dataset: dict[str, Any]) -> float | None:
    from actrec.sweep import METRICS

    value = dict(METRICS)[metric](dataset)
    # NaN: the dataset had no labelled test frame (its test split lists no video the store
    # holds); None says "no score", never a NaN that tables print as "nan".
    return None if value is None or math.isnan(float(value)) else float(value)


def run_unit(unit: dict[str, Any], progress: Any = None) -> dict[str, Any]:
    """Run ``unit`` (or find it finished); a user error or a bug fails this unit only, with
    its message. ``KeyboardInterrupt`` propagates."""
    start = time.perf_counter()
    out: dict[str, Any] = {"key": unit["key"], "status": "done", "scores": [], "error": None}
    try:
        if unit["kind"] == "head":
            out.update(_run_head(unit, progress))
        elif unit["kind"] == "frame-classifier":
            out.update(_run_frame_classifier(unit))
        else:
            out.update(_run_train(unit, progress))
    except ActrecError as exc:
        out.update(status="failed", error=str(exc))
    except Exception as exc:  # noqa: BLE001 - a bug fails one cell; the grid goes on
        out.update(status="failed", error=f"{type(exc).__name__}: {exc}")
    out["elapsed_s"] = round(time.perf_counter() - start, 3)
    torch = sys.modules.get("torch")
    out["threads"] = torch.get_num_threads() if torch is not None else None
    return out


def _run_head(unit: dict[str, Any], progress: Any) -> dict[str, Any]:
    """Make (or finish) the split's input store. When the saved head no longer fits the
    backbone (its training videos' features changed), the head is trained again and the
    store rebuilt; the old store and head are moved aside, not overwritten."""
    from actrec.frame_head import HeadConfig, extract_head_features, head_file

    config = HeadConfig.from_options(unit["head_config"], owner="reproduce head")
    out = Path(unit["out"])
    out.parent.mkdir(parents=True, exist_ok=True)

    def extract() -> dict[str, Any]:
        report = extract_head_features(unit["backbone"], unit["split"], output=unit["output"],
                                       config=config, out=out, progress=progress)
        return {} if report.trained or report.written else {"status": "skipped"}

    try:
        return extract()
    except DataError as exc:
        # frame_head refuses to write another head's outputs into an existing store
        if not str(exc).startswith(f"{out} holds the outputs of another head"):
            raise
        problem = str(exc).split(";")[0]
    moved = _move_aside(out)
    if head_file(out).exists():
        head_file(out).rename(head_file(moved))
    return {**extract(), "moved": str(moved), "moved_because": problem}


def _run_frame_classifier(unit: dict[str, Any]) -> dict[str, Any]:
    """Argmax of the stored per-class scores on the split's test videos (what the papers call
    the CNN alone), written to ``<dir>/frame-classifier.json`` with the store's identity and
    the test videos' digests, so a changed store is scored again."""
    import numpy as np

    from actrec import runs
    from actrec.components import choose_split, store_fingerprint
    from actrec.evaluate import score_dataset
    from actrec.io.features import FeatureStore

    folder = Path(unit["dir"])
    store = FeatureStore.open(unit["store"])
    fingerprint = store_fingerprint(store, unit["split"])
    path = folder / FRAME_RESULT
    if path.is_file():
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
            if saved.get("fingerprint") == json.loads(json.dumps(fingerprint, default=str)):
                return {"status": "skipped",
                        "scores": [_metric(unit["metric"], saved["result"])]}
        except (OSError, ValueError, KeyError, TypeError):
            pass  # damaged: scored again
    classes = list(store.classes)
    if store.dim != len(classes):
        raise DataError(f"feature store {store.path}: {store.dim}-d features for {len(classes)} "
                        f"classes are not class scores, so they have no frame classifier to "
                        f"score; reproduce with --inputs head")
    split, lists = choose_split(store, unit["split"])
    ids = [v for v in lists["test"]]
    missing = [v for v in ids if not store.has(v)]
    if missing:
        raise DataError(f"feature store {store.path}: test video {missing[0]!r} of split "
                        f"'{split}' is not stored")
    preds, targets = [], []
    for vid in ids:
        x, y = store.read(vid)
        preds.append(np.asarray(x).argmax(axis=1).astype(np.int64))  # [T]
        targets.append(np.asarray(y, dtype=np.int64))
    result = score_dataset(str(store.attrs.get("dataset")), str(store.path), split, ids, preds,
                           targets, classes, store.background).to_dict()
    folder.mkdir(parents=True, exist_ok=True)
    runs.atomic_write_json(path, {"store": str(store.path), "split": split,
                                  "fingerprint": fingerprint, "result": result})
    return {"scores": [_metric(unit["metric"], result)]}


def _spec(unit: dict[str, Any]):
    from actrec.train_spec import TrainSpec

    return TrainSpec(model=unit["model"], model_options=dict(unit["model_options"]),
                     d1=unit["d1"], d2=unit["d2"], **unit["spec"])


def finished_scores(unit: dict[str, Any]) -> list[float | None] | None:
    """The scores of a finished training unit (see the module docs), else None."""
    from actrec import runs
    from actrec.checkpoints import check_resume
    from actrec.components import open_store, store_changes, store_fingerprint

    folder = Path(unit["dir"])
    ckpt_path = folder / runs.CHECKPOINT
    # Online on features that look ahead (allowed) is filed under its own name (evaluate.py)
    found = [folder / EVAL_RESULT] + (sorted(folder.glob("eval-online-features-ahead-*.json"))
                                      if unit.get("allow_noncausal_features") else [])
    results = next((f for f in found if f.is_file()), None)
    if results is None or not ckpt_path.is_file():
        return None
    try:
        saved = runs.read_json(results)
        checkpoint = runs.load_checkpoint(ckpt_path)
        spec = _spec(unit)
        check_resume(checkpoint, spec, ckpt_path)
    except ActrecError:
        return None  # the trainer says what is wrong when it runs
    iteration = int(checkpoint.get("iteration", -1))
    stopped = int((checkpoint.get("monitor") or {}).get("stopped_at", 0))
    protocol = saved.get("protocol") or {} if isinstance(saved, dict) else {}
    if iteration != (stopped or spec.total_iterations) or protocol.get("iteration") != iteration:
        return None
    recorded = checkpoint.get("store_fingerprints") or []
    splits = checkpoint.get("splits") or []
    for fp, path, split in zip(recorded, checkpoint.get("stores") or [], splits):
        try:
            now = store_fingerprint(open_store(path, spec.streams), split)
        except ActrecError:
            return None
        if store_changes(fp, now):
            return None
    datasets = list((saved.get("datasets") or {}).values())
    return [_metric(unit["metric"], ds) for ds in datasets]


def resume_problem(unit: dict[str, Any]) -> str | None:
    """Why the checkpoint in ``unit``'s folder cannot be resumed as ``unit`` (other spec,
    changed input stores, unreadable), in words; None when there is none or it can be."""
    from actrec import runs
    from actrec.checkpoints import check_resume
    from actrec.components import open_store, store_changes, store_fingerprint

    ckpt_path = Path(unit["dir"]) / runs.CHECKPOINT
    if not ckpt_path.is_file():
        return None
    try:
        checkpoint = runs.load_checkpoint(ckpt_path)
        spec = _spec(unit)
        check_resume(checkpoint, spec, ckpt_path)
    except ActrecError as exc:
        return str(exc)
    recorded = checkpoint.get("store_fingerprints") or []
    for fp, path, split in zip(recorded, checkpoint.get("stores") or [],
                               checkpoint.get("splits") or []):
        try:
            now = store_fingerprint(open_store(path, spec.streams), split)
        except ActrecError as exc:
            return str(exc)
        changes = store_changes(fp, now)
        if changes:
            return f"feature store {path} changed since it was trained: {'; '.join(changes)}"
    return None


def _move_aside(folder: Path) -> Path:
    """Rename ``folder`` to a free ``<folder>.stale-<UTC time>[-N]`` and return the new path."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    for n in range(1000):
        target = folder.with_name(f"{folder.name}.stale-{stamp}" + (f"-{n}" if n else ""))
        if not target.exists():
            folder.rename(target)
            return target
    raise DataError(f"cannot move the stale run {folder} aside: too many stale copies")


def _run_train(unit: dict[str, Any], progress: Any) -> dict[str, Any]:
    from actrec.evaluate import evaluate_run
    from actrec.pipeline import train_from_refs

    done = finished_scores(unit)
    if done is not None:
        return {"status": "skipped", "scores": done}
    moved = {}
    problem = resume_problem(unit)
    if problem is not None:
        moved = {"moved": str(_move_aside(Path(unit["dir"]))), "moved_because": problem}
    train_from_refs(unit["model"], d1=unit["d1"], d2=unit["d2"],
                    model_options=dict(unit["model_options"]), run_dir=Path(unit["dir"]),
                    progress=progress, **unit["spec"])
    result = evaluate_run(Path(unit["dir"]), online=True, progress=progress,
                          allow_noncausal_features=unit.get("allow_noncausal_features",
                                                            False)).to_dict()
    return {"scores": [_metric(unit["metric"], ds) for ds in result["datasets"].values()],
            **moved}
