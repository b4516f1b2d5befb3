"""GTEA (Fathi et al.): 28 egocentric videos of 4 subjects making 7 foods, 15 fps, MS-TCN
layout (see ``mstcn``). The 11 classes are in the MS-TCN order, background last (index 10);
a ``mapping.txt``, if present, must agree. Splits: the 4 leave-one-subject-out splits from
``splits/Split_N/{train,test}.txt`` when present, else the MS-TCN ``*.splitN.bundle`` files.

Videos, under ``videos`` (default: the data root): ``S1_Cheese_C1.mp4`` (or another video
extension) or a folder of PNG frames ``S1_Cheese_C1/`` (read at ``fps``), directly there or
in ``videos/``, ``png/`` or ``gtea_png/png/`` (the frame release). Videos found nowhere are
listed in ``DatasetIndex.missing_videos``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from actrec_plugins.datasets._videos import VideoDataset

from actrec.plugin_api import DatasetIndex, PluginConfig

CLASSES = ("take", "open", "pour", "close", "shake", "scoop", "stir", "put", "fold", "spread",
           "background")


@dataclass(frozen=True)
class GTEAConfig(PluginConfig):
    root: Path | None = None
    fps: float = 15.0
    length_policy: str = "truncate"
    strict_splits: bool = False  # a split entry without annotations: error, not drop+count
    strict: bool = False  # an empty annotation file is an error (else skipped and counted)
    videos: Path | None = None  # the folder of the videos (default: the data root)


def video_candidates(video: str) -> list[str]:
    """Where GTEA video ``video`` may be (see the module docstring), most specific first."""
    return [video, f"videos/{video}", f"png/{video}", f"gtea_png/png/{video}"]


class GTEA(VideoDataset):
    """GTEA in the MS-TCN layout."""

    name = "gtea"
    Config = GTEAConfig

    def load(self) -> DatasetIndex:
        from actrec_plugins.datasets._videos import attach_videos
        from actrec_plugins.datasets.mstcn import load_mstcn

        cfg = self.config
        root = self.existing_root()
        folders = sorted((root / "splits").glob("Split_*"), key=lambda p: p.name)
        lists = {p.name.removeprefix("Split_"): (p / "train.txt", p / "test.txt")
                 for p in folders} or None
        index = load_mstcn(root, name=self.name, fps=cfg.fps, classes=CLASSES,
                           background="background", length_policy=cfg.length_policy,
                           split_files=lists, strict_splits=cfg.strict_splits,
                           strict=cfg.strict)
        return attach_videos(index, self.videos_root(), video_candidates)
