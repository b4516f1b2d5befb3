"""Per-frame predictions of an evaluation, kept beside its results file.

``eval-<setting>.json`` gets a sibling ``eval-<setting>.predictions.npz`` (compressed): for
every dataset and test video the predicted and the true class of each frame (local class
indices; -1 = unlabelled target), and a JSON header naming the datasets, their classes and
video ids. The results file records the archive's name and sha256, so a figure drawn from it
(``actrec plot RUN timeline``, ``confusion``) can refuse predictions that belong to another
evaluation (``load_predictions`` checks the digest).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from actrec.errors import DataError

__all__ = ["DatasetPredictions", "load_predictions", "predictions_path", "save_predictions"]

FORMAT = "actrec-predictions"
VERSION = 1


@dataclass(frozen=True)
class DatasetPredictions:
    """One dataset's test videos: per video the predicted and true class of every frame."""

    name: str
    classes: tuple[str, ...]
    ids: tuple[str, ...]
    predictions: tuple[np.ndarray, ...]  # int64 [T_i], local class indices
    targets: tuple[np.ndarray, ...]  # int64 [T_i], -1 where unlabelled

    def video(self, vid: str) -> tuple[np.ndarray, np.ndarray]:
        """(predictions, targets) of video ``vid``; ``KeyError`` naming the known ids."""
        try:
            i = self.ids.index(vid)
        except ValueError:
            shown = ", ".join(self.ids[:8]) + (" ..." if len(self.ids) > 8 else "")
            raise KeyError(f"no test video {vid!r} in {self.name} (videos: {shown})") from None
        return self.predictions[i], self.targets[i]


def predictions_path(results_path: Path) -> Path:
    """``eval-online.json`` -> ``eval-online.predictions.npz`` in the same folder."""
    results_path = Path(results_path)
    return results_path.with_name(results_path.stem + ".predictions.npz")


def save_predictions(results_path: Path,
                     datasets: Mapping[str, tuple[Sequence[str], Sequence[np.ndarray],
                                                  Sequence[np.ndarray], Sequence[str]]],
                     ) -> dict[str, str]:
    """Write the predictions archive of the results file ``results_path`` atomically;
    ``datasets``: name -> (ids, predictions, targets, classes). Returns ``{"file", "sha256"}``
    for the results file to record."""
    header: dict[str, Any] = {"format": FORMAT, "version": VERSION, "datasets": []}
    arrays: dict[str, np.ndarray] = {}
    for k, (name, (ids, preds, targets, classes)) in enumerate(datasets.items()):
        header["datasets"].append({"name": name, "classes": list(classes), "ids": list(ids)})
        width = np.int16 if len(classes) < 2**15 else np.int32
        for i, (p, y) in enumerate(zip(preds, targets)):
            arrays[f"p{k}_{i}"] = np.asarray(p).astype(width)
            arrays[f"y{k}_{i}"] = np.asarray(y).astype(width)
    arrays["header"] = np.frombuffer(json.dumps(header).encode("utf-8"), dtype=np.uint8)
    path = predictions_path(results_path)
    umask = os.umask(0)
    os.umask(umask)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~umask)  # as the results file beside it (mkstemp's are 0600)
        with os.fdopen(fd, "wb") as handle:
            np.savez_compressed(handle, **arrays)
        digest = hashlib.sha256(Path(tmp).read_bytes()).hexdigest()
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return {"file": path.name, "sha256": digest}


def load_predictions(results_path: Path, record: Mapping[str, Any] | None = None,
                     ) -> dict[str, DatasetPredictions]:
    """The predictions of the results file ``results_path``, keyed by dataset name.
    ``record`` is what the results file says about them (its ``protocol.predictions``); the
    archive must have that sha256. ``DataError`` naming the file when it is missing, damaged
    or another evaluation's."""
    path = predictions_path(results_path)
    if not path.is_file():
        raise DataError(f"{path}: no per-frame predictions beside {Path(results_path).name}; "
                        f"evaluate the run again (actrec eval) to write them")
    data = path.read_bytes()
    if record is not None and record.get("sha256") != hashlib.sha256(data).hexdigest():
        raise DataError(f"{path} does not belong to {Path(results_path).name} (its sha256 "
                        f"differs from the one recorded there): evaluate the run again")
    try:
        import io

        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            header = json.loads(archive["header"].tobytes().decode("utf-8"))
            if header.get("format") != FORMAT:
                raise ValueError("not an actrec predictions archive")
            out: dict[str, DatasetPredictions] = {}
            for k, ds in enumerate(header["datasets"]):
                ids = tuple(str(v) for v in ds["ids"])
                preds = tuple(archive[f"p{k}_{i}"].astype(np.int64) for i in range(len(ids)))
                targets = tuple(archive[f"y{k}_{i}"].astype(np.int64) for i in range(len(ids)))
                out[str(ds["name"])] = DatasetPredictions(
                    str(ds["name"]), tuple(str(c) for c in ds["classes"]), ids, preds, targets)
    except (KeyError, ValueError, OSError, UnicodeDecodeError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: damaged predictions archive ({exc})") from None
    return out
