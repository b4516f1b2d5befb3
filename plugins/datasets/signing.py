"""Signing in the Wild (Borg & Camilleri): YouTube videos labelled per frame at 5 fps.

Ground truth rows ``<youtube_id> <frame> S|P|n|?`` (``S`` signing, ``P`` speaking, ``n``
other, ``?`` unlabelled: ignored by the loss and the metrics), read from ``annotations``
(a file under the root, or every ``*.txt`` file under it when unset). Frames are 0-based; a
video lasts until its last row, and frames without a row are unlabelled (counted). Classes:
``signing``, ``speaking``, ``other`` (no background class: ``other`` is scored like the rest).
Splits: 5 folds by video, as in the paper (all of a video's frames in one fold): the sorted
video ids dealt round-robin, video ``i`` in the test set of fold ``i mod 5 + 1``. The
participant of a video is unknown; its YouTube id stands in.

Videos, under ``videos`` (default: the data root): ``<youtube_id>.mp4`` (another video
extension, or a frame folder ``<youtube_id>/``), directly there or in ``videos/``. Videos found
nowhere are listed in ``DatasetIndex.missing_videos``. The dataset labels the first 6.6
minutes of each video (2,000 frames at 5 Hz): its records set
``VideoRecord.labels_cover_prefix``, so ``actrec extract`` cuts a whole YouTube video to its
labelled start (the rest is neither decoded nor stored; the cut frames are counted).

Damaged input: a frame past 24 hours at ``fps`` is a ``DataError`` naming the line; an empty
file is skipped and counted (``strict=true``: an error); hidden files (``._gt.txt``) are
skipped and counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from actrec_plugins.datasets._videos import VideoDataset

from actrec.plugin_api import DatasetIndex, PluginConfig

CLASSES = ("signing", "speaking", "other")


@dataclass(frozen=True)
class SigningConfig(PluginConfig):
    root: Path | None = None
    annotations: str | None = None
    fps: float = 5.0
    folds: int = 5
    strict: bool = False  # an empty annotation file is an error (else skipped and counted)
    videos: Path | None = None  # the folder of the videos (default: the data root)


class SigningInTheWild(VideoDataset):
    """Signing in the Wild from its per-frame ground-truth rows."""

    name = "signing"
    Config = SigningConfig

    def load(self) -> DatasetIndex:
        import numpy as np
        from actrec_plugins.datasets._common import visible_files
        from actrec_plugins.datasets._videos import attach_videos
        from actrec_plugins.datasets.mstcn import flat_candidates

        from actrec.errors import DataError
        from actrec.io import annotations as A
        from actrec.plugin_api import Split, VideoRecord

        cfg = self.config
        root = self.existing_root()
        repairs: dict[str, int] = {}
        paths = ([root / cfg.annotations] if cfg.annotations
                 else visible_files(root, ["*.txt"], repairs))
        if not paths:
            raise DataError(f"{root}: no ground-truth *.txt files")
        limit = A.frame_limit(cfg.fps)  # frames bounded before the labels are allocated
        per_file = A.read_each({str(p): p for p in paths},  # empty files left out, counted
                               lambda p: A.read_signing_rows(p, repairs, max_frames=limit),
                               repairs, strict=cfg.strict)
        rows: dict[str, tuple] = {}
        origin: dict[str, Path] = {}
        for name, per_video in per_file.items():
            path = Path(name)
            for video, value in per_video.items():
                if video in rows:
                    raise DataError(f"duplicate video id {video!r}: in {origin[video]} and {path}")
                rows[video], origin[video] = value, path
        videos = {}
        for video in sorted(rows):
            frames, codes = rows[video]
            labels = np.full(int(frames[-1]) + 1, A.UNLABELLED, dtype=np.int64)
            labels[frames] = codes
            A.add_repairs(repairs, {"frames without a row (unlabelled)":
                                    labels.size - frames.size})
            videos[video] = VideoRecord(id=video, participant=video, labels=labels, fps=cfg.fps,
                                        labels_cover_prefix=True)
        ids = sorted(videos)
        if len(ids) < cfg.folds:
            raise DataError(f"{len(ids)} video(s) cannot make {cfg.folds} folds")
        splits = {}
        for k in range(cfg.folds):
            test = tuple(ids[k::cfg.folds])
            train = tuple(v for v in ids if v not in set(test))
            splits[str(k + 1)] = Split(str(k + 1), train, test)
        index = DatasetIndex(name=self.name, classes=CLASSES, videos=videos, splits=splits,
                             fps=cfg.fps, background=None, label_set="default", repairs=repairs)
        return attach_videos(index, self.videos_root(), flat_candidates)
