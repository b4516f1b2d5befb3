"""TensorBoard beside the JSON lines log (``actrec train --tensorboard``; the ``tensorboard``
extra).

``metrics.jsonl`` stays the record; TensorBoard gets the same numbers. ``TensorBoardMirror``
follows the log as training appends to it and writes every number of every line as a scalar
into ``<run>/tensorboard/``, at the line's ``iteration`` (``step`` for the boundary pre-stage's
lines): a key path joined by ``/`` under the line's phase, e.g. ``train/loss``,
``train/train_frame_accuracy``, ``train/lr``, ``train/alphas/rnn.layers.0.alpha/1`` (alpha2 of
layer 0), ``train/val/D1/frame_accuracy``, ``train/val/score``, ``eval/<dataset>`` (lines
without a phase). Strings, booleans and nulls are not scalars and are left out.

A mirror always starts from the first line of the log: a resumed run (whose log was trimmed
back to its checkpoint) writes a new event file that begins with a purge of every earlier
step, so TensorBoard shows exactly what ``metrics.jsonl`` holds, nothing twice.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from actrec.errors import ConfigError

__all__ = ["TB_FOLDER", "TensorBoardMirror", "require_tensorboard", "scalars_of"]

TB_FOLDER = "tensorboard"
_SKIP = frozenset({"iteration", "step", "phase"})


def require_tensorboard() -> None:
    """``ConfigError`` naming the extra when TensorBoard's writer cannot be imported."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError:
        raise ConfigError("--tensorboard needs the tensorboard package: pip install "
                          "'actrec[tensorboard]' (metrics.jsonl is written either way)") from None


def scalars_of(line: dict[str, Any]) -> Iterator[tuple[str, float]]:
    """``(tag, value)`` for every number of a metrics line (see the module docs)."""
    prefix = str(line.get("phase") or "")

    def walk(path: str, value: Any) -> Iterator[tuple[str, float]]:
        if isinstance(value, bool) or value is None or isinstance(value, str):
            return
        if isinstance(value, (int, float)):
            yield path, float(value)
        elif isinstance(value, dict):
            for key, item in value.items():
                yield from walk(f"{path}/{key}" if path else str(key), item)
        elif isinstance(value, list):
            for i, item in enumerate(value):
                yield from walk(f"{path}/{i}", item)

    for key, value in line.items():
        if key in _SKIP:
            continue
        yield from walk(f"{prefix}/{key}" if prefix else str(key), value)


class TensorBoardMirror:
    """Copies the lines of ``run_dir/metrics.jsonl`` into TensorBoard event files in
    ``run_dir/tensorboard`` (``sync`` after lines were appended; ``close`` at the end)."""

    def __init__(self, run_dir: Path):
        require_tensorboard()
        from torch.utils.tensorboard import SummaryWriter

        from actrec import runs

        self.path = Path(run_dir) / runs.METRICS
        folder = Path(run_dir) / TB_FOLDER
        earlier = folder.is_dir() and any(folder.glob("events.out.tfevents.*"))
        # Earlier event files: hide all their steps; this file rewrites the whole log.
        self.writer = SummaryWriter(str(folder), purge_step=0 if earlier else None)
        self.offset = 0
        self.sync()

    def sync(self) -> int:
        """Write the log's complete lines appended since the last call; returns how many."""
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return 0
        if size <= self.offset:
            return 0
        with open(self.path, "rb") as handle:
            handle.seek(self.offset)
            data = handle.read(size - self.offset)
        end = data.rfind(b"\n") + 1  # a line still being written waits for the next sync
        count = 0
        for raw in data[:end].splitlines():
            try:
                line = json.loads(raw)
            except json.JSONDecodeError:
                continue
            if not isinstance(line, dict):
                continue
            step = line.get("step") if line.get("phase") == "boundary" else line.get("iteration")
            if not isinstance(step, int):
                continue
            for tag, value in scalars_of(line):
                self.writer.add_scalar(tag, value, global_step=step)
            count += 1
        self.offset += end
        if count:
            self.writer.flush()
        return count

    def close(self) -> None:
        """Write what is left and close the event file."""
        self.sync()
        self.writer.close()
