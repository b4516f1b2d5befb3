"""What ``actrec datasets info NAME`` shows: a summary of a loaded ``DatasetIndex``.

Pure data, no rendering (the CLI renders it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from actrec.plugin_api import DatasetIndex

__all__ = ["DatasetSummary", "SplitSize", "summarize"]


@dataclass(frozen=True)
class SplitSize:
    """Videos and frames on each side of one split."""

    name: str
    train_videos: int
    test_videos: int
    train_frames: int
    test_frames: int


@dataclass(frozen=True)
class DatasetSummary:
    """Counts describing a dataset as loaded.

    ``frames_per_class`` follows ``classes`` (zeros included); ``unlabelled_frames`` counts
    frames labelled ``-1``; ``repairs`` is what the loading policies dropped or repaired;
    ``video_files`` counts the videos whose file (or frame folder) was found, and
    ``missing_videos`` names the others with where they were looked for.
    """

    name: str
    label_set: str
    fps: float
    videos: int
    frames: int
    classes: tuple[str, ...]
    background: str | None
    frames_per_class: tuple[int, ...]
    unlabelled_frames: int
    participants: int
    splits: tuple[SplitSize, ...]
    repairs: dict[str, int] = field(default_factory=dict)
    video_files: int = 0  # annotated videos whose file or frame folder was found
    missing_videos: dict[str, str] = field(default_factory=dict)  # id -> where looked

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible form (what ``datasets info --json`` prints): ``classes`` is the
        count, the names are the keys of ``frames_per_class``; split sizes are video counts
        (``train`` / ``test``) and frame counts."""
        return {
            "name": self.name,
            "label_set": self.label_set,
            "fps": self.fps,
            "videos": self.videos,
            "frames": self.frames,
            "classes": self.num_classes,
            "background": self.background,
            "frames_per_class": dict(zip(self.classes, self.frames_per_class)),
            "unlabelled_frames": self.unlabelled_frames,
            "participants": self.participants,
            "splits": {
                s.name: {"train": s.train_videos, "test": s.test_videos,
                         "train_frames": s.train_frames, "test_frames": s.test_frames}
                for s in self.splits
            },
            "repairs": dict(self.repairs),
            "video_files": self.video_files,
            "missing_videos": dict(self.missing_videos),
        }


def summarize(index: DatasetIndex) -> DatasetSummary:
    """Count videos, frames, frames per class and split sizes of ``index``."""
    counts = np.zeros(len(index.classes), dtype=np.int64)
    unlabelled = 0
    frames = {}
    for video in index.videos.values():
        labels = np.asarray(video.labels)
        frames[video.id] = int(labels.shape[0])
        known = labels[labels >= 0]
        unlabelled += int(labels.shape[0] - known.shape[0])
        counts += np.bincount(known, minlength=len(index.classes))[: len(index.classes)]
    splits = tuple(
        SplitSize(
            name=name,
            train_videos=len(split.train),
            test_videos=len(split.test),
            train_frames=sum(frames.get(v, 0) for v in split.train),
            test_frames=sum(frames.get(v, 0) for v in split.test),
        )
        for name, split in index.splits.items()
    )
    # Names of the background classes (segment metrics leave them out), comma-separated.
    background = ", ".join(index.classes[c] for c in index.background_classes) or None
    return DatasetSummary(
        name=index.name,
        label_set=index.label_set,
        fps=float(index.fps),
        videos=len(index.videos),
        frames=sum(frames.values()),
        classes=tuple(index.classes),
        background=background,
        frames_per_class=tuple(int(c) for c in counts),
        unlabelled_frames=unlabelled,
        participants=len({v.participant for v in index.videos.values()}),
        splits=splits,
        repairs=dict(sorted(index.repairs.items())),
        video_files=sum(1 for v in index.videos.values() if v.path is not None),
        missing_videos=dict(sorted(index.missing_videos.items())),
    )
