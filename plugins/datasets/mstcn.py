"""Any dataset in the MS-TCN layout:

```
ROOT/mapping.txt                         <id> <class name>, ids 0..C-1
ROOT/groundTruth/<video>.txt | .npy      one label name per line, or an integer array [T]
ROOT/splits/{train,test}.splitN.bundle   video files, one per line
ROOT/features/<video>.npy                optional, D x T
```

Annotations alone suffice; when features exist, the labels are fitted to the feature length
(``length_policy``: ``truncate`` cuts to the shorter and marks feature frames without labels
unlabelled, counting both; ``error`` refuses); a disagreement of more than
``max_length_share`` (0.2) of the longer length is refused under either policy (features at
another frame rate than the labels). ``participant`` of a video is the part of its id
before the first ``_`` (``P03_cam01_P03_tea`` -> ``P03``, ``S1_Coffee_C1`` -> ``S1``) or ``-``
(``rgb-01-1`` -> ``01`` after dropping an ``rgb-`` prefix).

Videos (for extraction): ``<video>.mp4`` (or another video extension), or a frame folder
``<video>/``, directly in the ``videos`` folder (default: the data root) or in its
``videos/`` subfolder; ids of the three MS-TCN datasets are also found where those datasets
ship their videos (Breakfast ``BreakfastII_15fps_qvga_sync/P03/cam01/P03_coffee.avi``, 50
Salads ``rgb/rgb-01-1.avi``, GTEA frames ``png/S1_Cheese_C1/``). Videos found nowhere are
listed in ``DatasetIndex.missing_videos``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from actrec_plugins.datasets._videos import VideoDataset

from actrec.plugin_api import DatasetIndex, PluginConfig


@dataclass(frozen=True)
class MSTCNConfig(PluginConfig):
    root: Path | None = None
    fps: float = 15.0
    # The background class's name (left out of segment metrics by default); "auto": the class
    # named "background" if there is one, as MS-TCN's evaluation does; none: no background.
    background: str | None = "auto"
    length_policy: str = "truncate"
    # labels and features differing by more than this share of the longer: refused under any
    # policy (features at another frame rate than the labels); see actrec.io.annotations
    max_length_share: float = 0.2
    strict_splits: bool = False  # a bundle entry without annotations: error, not drop+count
    strict: bool = False  # an empty annotation file is an error (else skipped and counted)
    videos: Path | None = None  # the folder of the videos (default: the data root)


def flat_candidates(video: str) -> list[str]:
    """``<video>`` and ``videos/<video>`` (file with any video extension, or frame folder)."""
    return [video, f"videos/{video}"]


def video_candidates(video: str) -> list[str]:
    """``flat_candidates``, then the shipped place of a Breakfast, 50 Salads or GTEA id."""
    import re

    from actrec_plugins.datasets import breakfast

    found = flat_candidates(video)
    if re.fullmatch(r"P\d+_(cam|webcam|stereo)\d+_P\d+_\w+", video):
        found += breakfast.video_candidates(video)
    elif video.startswith("rgb-"):
        found.append(f"rgb/{video}")
    elif re.fullmatch(r"S\d+_\w+_C\d+", video):
        found += [f"png/{video}", f"gtea_png/png/{video}"]
    return list(dict.fromkeys(found))


def participant_of(video: str) -> str:
    """The participant part of an MS-TCN video id (see the module docstring)."""
    video = video.removeprefix("rgb-")
    for sep in ("_", "-"):
        if sep in video:
            return video.split(sep)[0]
    return video


def load_mstcn(
    root: Path,
    *,
    name: str,
    fps: float,
    classes: Sequence[str] | None = None,
    background: str | None = None,
    length_policy: str = "truncate",
    max_length_share: float = 0.2,  # actrec.io.annotations.MAX_LENGTH_SHARE
    split_files: dict[str, tuple[Path, Path]] | None = None,
    strict_splits: bool = False,
    strict: bool = False,
    label_set: str = "default",
) -> DatasetIndex:
    """Read an MS-TCN layout folder into a ``DatasetIndex``.

    ``classes`` overrides ``mapping.txt`` (which, if present, must then agree with it);
    ``background`` names the background class, ``"auto"`` meaning the class named
    ``background`` if there is one (MS-TCN's evaluation convention); ``split_files``
    (``name -> (train list, test list)``) overrides the bundles. Split entries without
    annotations are dropped and counted, or with ``strict_splits`` refused. An empty
    ground-truth file (blank text, a 0-byte ``.npy``) is skipped and counted, or with ``strict``
    refused; hidden files (``._X.txt``) are skipped and counted.
    """
    import numpy as np
    from actrec_plugins.datasets._common import (
        count_test_coverage,
        index_files,
        split_from_lists,
        visible_files,
    )

    from actrec.errors import ConfigError, DataError
    from actrec.io import annotations as A
    from actrec.plugin_api import VideoRecord

    if length_policy not in ("truncate", "error"):
        raise ConfigError(f"{name}: length_policy must be 'truncate' or 'error', "
                          f"got {length_policy!r}")
    repairs: dict[str, int] = {}
    mapping = root / "mapping.txt"
    if classes is None:
        classes = A.read_mapping(mapping)
    elif mapping.is_file():
        found = A.read_mapping(mapping)
        if tuple(found) != tuple(classes):
            raise DataError(f"{mapping}: classes {', '.join(found)}; expected the {name} "
                            f"order {', '.join(classes)}")
    index = {c: i for i, c in enumerate(classes)}
    bg = None
    if background == "auto":
        background = "background" if "background" in index else None
    if background is not None:
        if background not in index:
            raise ConfigError(f"{name}: background class {background!r} is not in {mapping}")
        bg = index[background]

    gt = root / "groundTruth"
    if not gt.is_dir():
        raise DataError(f"{gt}: folder not found (MS-TCN layout expects groundTruth/)")
    files = index_files(visible_files(gt, ["*.txt", "*.npy"], repairs))
    if not files:
        raise DataError(f"{gt}: no ground-truth files (*.txt or *.npy)")

    def read(path: Path) -> np.ndarray:
        if path.suffix == ".npy":
            if path.stat().st_size == 0:  # as empty as a blank text file: skipped by read_each
                raise A.EmptyFileError(f"{path}: empty file; expected an .npy label array")
            return A.read_npy_labels(path, len(classes))
        return A.read_frame_labels(path, index, repairs)

    features = root / "features"
    videos = {}
    for video, labels in A.read_each(files, read, repairs, strict=strict).items():
        feat = features / f"{video}.npy"
        if feat.is_file():
            length = _feature_length(feat)
            labels, fixed = A.fit_length(labels, length, policy=length_policy,
                                         source=files[video], max_share=max_length_share)
            A.add_repairs(repairs, fixed)
        videos[video] = VideoRecord(id=video, participant=participant_of(video),
                                    labels=np.ascontiguousarray(labels), fps=fps)

    if split_files is None:
        split_files = {}
        folder = root / "splits"
        for test in sorted(folder.glob("test.split*.bundle")):
            n = test.name[len("test.split"):-len(".bundle")]
            train = folder / f"train.split{n}.bundle"
            if not train.is_file():
                raise DataError(f"{train}: missing (its test list {test.name} exists)")
            split_files[n] = (train, test)
    splits = {n: split_from_lists(n, *split_files[n], videos, repairs, strict=strict_splits)
              for n in sorted(split_files, key=lambda k: (len(k), k))}
    count_test_coverage(videos, splits, repairs)
    return DatasetIndex(name=name, classes=tuple(classes), videos=videos, splits=splits,
                        fps=fps, background=bg, label_set=label_set, repairs=repairs)


def _feature_length(path: Path) -> int:
    """T of a ``D x T`` feature file, read from its header only."""
    import numpy as np

    from actrec.errors import DataError

    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise DataError(f"{path}: not a readable .npy array ({exc})") from None
    if array.ndim != 2:
        raise DataError(f"{path}: expected features D x T, got shape {array.shape}")
    return int(array.shape[1])


class MSTCN(VideoDataset):
    """A dataset in the MS-TCN layout (``groundTruth/``, ``splits/``, ``mapping.txt``)."""

    name = "mstcn"
    Config = MSTCNConfig

    def load(self) -> DatasetIndex:
        from actrec_plugins.datasets._videos import attach_videos

        cfg = self.config
        root = self.existing_root()
        index = load_mstcn(root, name=self.name, fps=cfg.fps, background=cfg.background,
                           length_policy=cfg.length_policy,
                           max_length_share=cfg.max_length_share, strict_splits=cfg.strict_splits,
                           strict=cfg.strict)
        return attach_videos(index, self.videos_root(), video_candidates)
