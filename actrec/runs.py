"""Run directories and the files in them.

A run directory holds everything one training run produced::

    <root>/<YYYYmmdd-HHMMSS>-<model>/
        config.json      the TrainSpec, where each value came from, versions, the stores' attrs
        metrics.jsonl    one JSON object per logged iteration (appended, flushed)
        checkpoint.pt    the latest checkpoint (plain tensors and primitives: weights_only=True)
        best.pt          the checkpoint with the best validation score (runs that select it)
        eval-<setting>.json  one file per evaluation setting (``eval_filename``): eval-online.json,
                         eval-offline.json, ... (written by ``actrec.evaluate``)

config.json, checkpoint.pt and the results files are written atomically (a temporary file in the same
folder, then ``os.replace``), so an interrupted run never leaves a half-written checkpoint
behind; metrics.jsonl is appended and, on resume, trimmed back to the checkpoint's iteration.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from actrec.errors import DataError

__all__ = [
    "CONFIG",
    "METRICS",
    "CHECKPOINT",
    "BEST",
    "eval_filename",
    "eval_files",
    "archive_results",
    "latest_run",
    "runs_root",
    "new_run_dir",
    "resolve_run",
    "atomic_write_text",
    "atomic_write_json",
    "json_safe",
    "atomic_torch_save",
    "load_checkpoint",
    "read_json",
    "summarize_runs",
]

CONFIG = "config.json"
METRICS = "metrics.jsonl"
CHECKPOINT = "checkpoint.pt"
BEST = "best.pt"  # the checkpoint selected on validation (``select="best-val"``)
EVAL_PREFIX = "eval-"


def runs_root() -> Path:
    """The workspace's runs folder: ``actrec.workspace.home() / "runs"``."""
    from actrec.workspace import home

    return Path(home()) / "runs"


def new_run_dir(root: Path, name: str) -> Path:
    """Create and return a fresh ``root/<UTC timestamp>-<name>`` folder; never reuses one.

    When the folder exists already (two runs in the same second), ``-2``, ``-3``, ... is
    appended; creation is atomic (``mkdir`` without ``exist_ok``), so concurrent callers get
    distinct folders.
    """
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "run"
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for n in range(1, 10_000):
        path = root / (f"{stamp}-{safe}" if n == 1 else f"{stamp}-{safe}-{n}")
        try:
            path.mkdir()
        except FileExistsError:
            continue
        return path
    raise DataError(f"could not create a new run folder under {root}")  # pragma: no cover


def eval_filename(setting: dict[str, Any]) -> str:
    """The results file of one evaluation setting, so no setting overwrites another's.

    ``setting`` has ``mode`` ("online"/"offline"; "lookahead-K" style names work too) and
    optionally ``splits``/``trained_splits``, ``stores``/``trained_stores`` and
    ``segment_background``: ``eval-online.json`` for the run's own splits, stores and the
    default segment background; other splits, other stores (a short hash of their paths) and
    ``segment_background="include"`` add a part each.
    """
    import hashlib

    parts = [str(setting.get("mode", "online"))]
    splits = list(setting.get("splits") or [])
    if splits and splits != list(setting.get("trained_splits") or splits):
        parts.append("split-" + "+".join(splits))
    stores = list(setting.get("stores") or [])
    if stores and stores != list(setting.get("trained_stores") or stores):
        digest = hashlib.sha256("\n".join(stores).encode()).hexdigest()[:8]
        parts.append("stores-" + digest)
    if setting.get("segment_background", "exclude") != "exclude":
        parts.append("bg-" + str(setting["segment_background"]))
    name = "-".join(parts)
    safe = "".join(c if c.isalnum() or c in "-_.+" else "_" for c in name)
    return f"{EVAL_PREFIX}{safe}.json"


def eval_files(run_dir: Path) -> list[Path]:
    """The results files of a run folder, sorted by name."""
    return sorted(Path(run_dir).glob(f"{EVAL_PREFIX}*.json"))


def archive_results(run_dir: Path) -> list[Path]:
    """Move the run's results files into ``run_dir/earlier/``, each named with the training
    iteration it scored (``eval-online-it50.json``): called when training continues, so that
    results of an earlier checkpoint never sit beside a newer one. Returns the new paths."""
    moved = []
    legacy = Path(run_dir) / "eval.json"  # the one results file of runs before settings had theirs
    for path in eval_files(run_dir) + ([legacy] if legacy.is_file() else []):
        try:
            iteration = int(read_json(path).get("protocol", {}).get("iteration", 0))
        except (DataError, AttributeError, TypeError, ValueError):
            iteration = 0
        target = Path(run_dir) / "earlier" / f"{path.stem}-it{iteration}.json"
        target.parent.mkdir(exist_ok=True)
        os.replace(path, target)
        moved.append(target)
        predictions = path.with_name(path.stem + ".predictions.npz")  # actrec.predictions
        if predictions.is_file():
            os.replace(predictions, target.with_name(target.stem + ".predictions.npz"))
    return moved


def latest_run(root: Path | None = None) -> Path:
    """The run under ``root`` (default ``runs_root()``) whose checkpoint was written last;
    ``DataError`` naming the folder when it holds no run with a checkpoint."""
    root = Path(root) if root is not None else runs_root()
    found = [p for p in root.glob(f"*/{CHECKPOINT}") if p.is_file()] if root.is_dir() else []
    if not found:
        raise DataError(f"no trained run under {root} (no */{CHECKPOINT}); train one first, "
                        f"or name the run to evaluate")
    return max(found, key=lambda p: (p.stat().st_mtime_ns, str(p))).parent


def resolve_run(ref: str | os.PathLike[str]) -> Path:
    """The run folder ``ref`` names: an existing folder path, or a run name under
    ``runs_root()``. ``DataError`` naming both places looked at if neither exists."""
    path = Path(ref).expanduser()
    if path.is_dir():
        return path
    under = runs_root() / str(ref)
    if under.is_dir():
        return under
    if path.is_absolute() or under == path:
        raise DataError(f"no run '{ref}': {path} is not a folder")
    raise DataError(f"no run '{ref}': neither {path} nor {under} is a folder")


# Errors that mean "no room to write": disk full, quota exceeded, file size limit.
_NO_SPACE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def _atomic(path: Path, mode: str, then: Callable[[], None] | None = None) -> Iterator[Any]:
    """Write through a temporary file in the same folder, then ``os.replace``: readers see the
    old file or the new one, never half of one. The file gets the permissions of a plain
    ``open`` under the current umask (mkstemp's are 0600). No room to write (disk full, quota,
    size limit) is a ``DataError`` naming the file; the old file is kept. ``then`` is called
    right after the replace, Ctrl-C and SIGTERM held back until both are done (a caller's
    record of what the file holds never lags behind the file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        with _signals_deferred():
            os.replace(tmp, path)
            if then is not None:
                then()
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        no_space = exc
        while no_space is not None and not (isinstance(no_space, OSError)
                                            and no_space.errno in _NO_SPACE):
            no_space = no_space.__cause__ or no_space.__context__  # torch wraps the OSError
        if no_space is not None:
            raise DataError(f"cannot write {path}: no space left ({os.strerror(no_space.errno)}); "
                            f"free some space and run the command again (the previous "
                            f"{path.name}, if any, is unchanged)") from None
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (tmp file + ``os.replace``)."""
    with _atomic(path, "w") as handle:
        handle.write(text)


def json_safe(value: Any) -> Any:
    """``value`` with every NaN or infinite float replaced by None (JSON has no NaN), tuples
    as lists; mappings and sequences are copied, other values kept."""
    import math

    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def atomic_write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented, strict JSON to ``path`` atomically (tmp file +
    ``os.replace``); NaN and infinities are written as null."""
    with _atomic(path, "w") as handle:
        json.dump(json_safe(obj), handle, indent=2, sort_keys=False, allow_nan=False)
        handle.write("\n")


def atomic_torch_save(path: Path, obj: Any, then: Callable[[], None] | None = None) -> None:
    """``torch.save`` ``obj`` to ``path`` atomically. Keep ``obj`` to tensors, dicts, lists
    and primitives so that ``load_checkpoint`` can read it with ``weights_only=True``.
    ``then``: called once the file is in place, before an interrupt can stop the caller
    (``_atomic``)."""
    import torch

    with _atomic(path, "wb", then) as handle:
        torch.save(obj, handle)


@contextmanager
def _signals_deferred() -> Iterator[None]:
    """SIGINT and SIGTERM that arrive in the block are acted on when it ends (their handlers
    then run as they would have), in the main thread; elsewhere (no Python handler runs
    there) the block runs as is. Python runs signal handlers in the main thread only, so
    swapping the handlers defers them whichever thread the signal reached."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    from actrec.signal_handlers import handlers_swapped

    caught: list[int] = []

    def hold(signum: int, _frame: Any) -> None:
        caught.append(signum)

    held = {signum: hold for signum in (signal.SIGINT, signal.SIGTERM)
            if signal.getsignal(signum) not in (signal.SIG_IGN, None)}
    try:
        with handlers_swapped(held):
            yield
    finally:
        for signum in caught:
            signal.raise_signal(signum)


def load_checkpoint(path: Path, map_location: Any = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``.

    Raises ``DataError`` naming the file if it is missing, corrupt, or not a dict.
    """
    import pickle
    import zipfile

    import torch

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no checkpoint file")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except (
        pickle.UnpicklingError,
        zipfile.BadZipFile,
        EOFError,
        RuntimeError,
        ValueError,
        OSError,
    ) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "weights only" in first.lower():
            first = ("it holds Python objects other than tensors and plain values, which are "
                     "not unpickled for safety")
        raise DataError(f"{path}: not a readable actrec checkpoint ({first[:200]})") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected a checkpoint dict, found {type(obj).__name__}")
    return obj


def read_json(path: Path) -> Any:
    """Parse a JSON file; ``DataError`` naming the file (and line) if missing or malformed."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}, line {exc.lineno}: invalid JSON ({exc.msg})") from None


def _store_root(path: Any) -> str | None:
    """The data folder the store at ``path`` was extracted or imported from, as it recorded
    it (``source.options.root``), else None."""
    from actrec.refs import recorded_source

    if not path or "://" in str(path):  # a remote store: not read for a listing
        return None
    root = (recorded_source(Path(str(path))).get("options") or {}).get("root")
    return str(root) if root else None


def summarize_runs(root: Path | None = None) -> list[dict[str, Any]]:
    """One summary per run folder under ``root`` (default ``runs_root()``), oldest first:
    model, datasets (with the streams read from them and, for a transfer run, each one's role:
    ``target`` D1, ``source`` D2), protocol, label arrangement, iterations done, the best
    validation score (and whether it was measured on the test split), and the frame accuracy
    of each dataset in every evaluation written so far, and each store's data folder
    (``roots``). A folder whose files cannot be read is listed with its ``problem`` instead
    of stopping the listing."""
    root = Path(root) if root is not None else runs_root()
    out: list[dict[str, Any]] = []
    if not root.is_dir():
        return out
    roots: dict[str, str | None] = {}  # store path -> its data folder: each store read once

    def store_root(path: Any) -> str | None:
        if str(path) not in roots:
            roots[str(path)] = _store_root(path)
        return roots[str(path)]

    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        config_path = folder / CONFIG
        if not config_path.is_file():
            continue
        row: dict[str, Any] = {"run": folder.name, "path": str(folder)}
        try:
            config = read_json(config_path)
            spec = config.get("spec", {})
            row.update({
                "model": spec.get("model"),
                "data": [s.get("dataset") or Path(str(s.get("path"))).stem
                         for s in config.get("stores", [])],
                # the data folder each store was extracted from (None: not recorded, or
                # the store is gone): tells apart datasets of one name read from two folders
                "roots": [store_root(s.get("path")) for s in config.get("stores", [])],
                # the streams read from every store (None: each store's own)
                "streams": spec.get("streams"),
                "protocol": spec.get("protocol") or ("joint" if spec.get("d2") else "single"),
                "labels": spec.get("labels", "concat"),
                "preset": spec.get("preset"),
                "iterations": None, "best_val": None, "best_iteration": None,
                "selected_on_test": bool(spec.get("select_on_test", False)),
                "evaluations": {},
            })
            # transfer: D1 is fine-tuned (the target), D2 pre-trains (the source), as
            # `actrec eval` names them
            row["roles"] = ["target", "source"][:len(row["data"])] \
                if row["protocol"] == "transfer" else []
            for line in _tail_lines(folder / METRICS):
                if "iteration" in line and "loss" in line:
                    row["iterations"] = line["iteration"]
                score = (line.get("val") or {}).get("score")
                if score is not None and line.get("phase") != "pretrain" and (
                        row["best_val"] is None or score > row["best_val"]):
                    row["best_val"], row["best_iteration"] = score, line["iteration"]
            for path in eval_files(folder):
                result = read_json(path)
                mode = path.stem[len(EVAL_PREFIX):]
                row["evaluations"][mode] = {
                    name: ds.get("frame_accuracy")
                    for name, ds in (result.get("datasets") or {}).items()}
        except (DataError, AttributeError, TypeError, ValueError) as exc:
            row["problem"] = str(exc)
        out.append(row)
    return out


def _tail_lines(path: Path) -> list[dict[str, Any]]:
    """The metrics log's JSON lines (a damaged line is skipped)."""
    if not path.is_file():
        return []
    lines = []
    for text in path.read_text(encoding="utf-8").splitlines():
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            lines.append(value)
    return lines
