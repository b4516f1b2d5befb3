"""GTEA (Fathi et al.): 28 egocentric videos of 4 subjects making 7 foods, 15 fps, MS-TCN
layout (see ``mstcn``). The 11 classes are in the MS-TCN order, background last (index 10);
a ``mapping.txt``, if present, must agree. Splits: the 4 leave-one-subject-out splits from
``splits/Split_N/{train,test}.txt`` when present, else the MS-TCN ``*.splitN.bundle`` files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from actrec.plugin_api import Dataset, DatasetIndex, PluginConfig

CLASSES = ("take", "open", "pour", "close", "shake", "scoop", "stir", "put", "fold", "spread",
           "background")


@dataclass(frozen=True)
class GTEAConfig(PluginConfig):
    root: Path | None = None
    fps: float = 15.0
    length_policy: str = "truncate"
    strict_splits: bool = False  # a split entry without annotations: error, not drop+count
    strict: bool = False  # an empty annotation file is an error (else skipped and counted)


class GTEA(Dataset):
    """GTEA in the MS-TCN layout."""

    name = "gtea"
    Config = GTEAConfig

    def load(self) -> DatasetIndex:
        from actrec_plugins.datasets.mstcn import load_mstcn

        cfg = self.config
        root = self.existing_root()
        folders = sorted((root / "splits").glob("Split_*"), key=lambda p: p.name)
        lists = {p.name.removeprefix("Split_"): (p / "train.txt", p / "test.txt")
                 for p in folders} or None
        return load_mstcn(root, name=self.name, fps=cfg.fps, classes=CLASSES,
                          background="background", length_policy=cfg.length_policy,
                          split_files=lists, strict_splits=cfg.strict_splits,
                          strict=cfg.strict)
