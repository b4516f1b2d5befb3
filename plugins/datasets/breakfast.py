"""Breakfast (Kuehne et al.): 1712 videos of 52 people making 10 breakfasts, 15 fps.

Annotation sources (``source``), all under the data root:
- ``coarse``: ``segmentation_coarse/<recipe>/<video>.txt``, ``1-30 SIL`` lines (1-based,
  inclusive), the dataset's own files;
- ``xml``: ``segmentation_xml/<recipe>/<video>.xml``, the author's ``<MotionLabel>`` files;
- ``fine``: ``segmentation_fine/<recipe>/<video>.txt``, the fine segmentation, same line format;
- ``mstcn``: ``groundTruth/<video>.txt``, one label per frame (MS-TCN; cut to the feature length).

Label sets: ``mstcn`` = the 48 classes of ``mapping.txt`` (``SIL`` at index 0, silence);
``lowest`` = the papers' lowest-level set: ``background`` at 0, then the action labels of
``classes_file`` (one per line) if given, else (sources ``coarse``, ``xml``, ``mstcn``) the 47
actions of ``mapping.txt`` sorted, else (``fine`` without a ``classes_file``) every label the
files use, sorted; ``SIL`` is folded into the background. With a list, the classes and their
indices do not depend on which videos the root holds.

Background (left out of segment metrics by default): ``background`` in the ``lowest`` set;
none in the ``mstcn`` set, where ``SIL`` segments count like any other, because MS-TCN's
evaluation leaves out only a class named ``background`` and published Breakfast scores are
computed that way.

Splits: ``official`` = the 4 leave-person-out splits P03-P15 / P16-P28 / P29-P41 / P42-P54
held out (they equal the MS-TCN bundles); ``bundles`` = ``splits/{train,test}.splitN.bundle``.
Split entries without an annotation file are dropped and counted.

Videos (``videos``: the folder holding them, default the data root), as the dataset ships them,
``BreakfastII_15fps_qvga_sync/P03/cam01/P03_coffee.avi`` for video id
``P03_cam01_P03_coffee``; also found without the ``BreakfastII_15fps_qvga_sync/`` level
(``videos`` pointing into it) and as ``<video id>.avi`` / ``.mp4`` or a frame folder
``<video id>/`` (converted copies). The stereo camera ships two channels,
``P03/stereo/P03_coffee_ch0.avi`` and ``_ch1.avi``, while the annotations say ``stereo01``:
``stereo01`` is channel ``stereo_channel`` (default 0). The annotations do not say which
channel they were made on (public extraction scripts differ), so the choice is a dataset option,
recorded with every store like the others. Videos found nowhere are listed in
``DatasetIndex.missing_videos``.

Damaged input: a frame range past ``frame_limit(fps)`` (24 hours) is a ``DataError`` naming the
file and line; an empty annotation file is skipped and counted (``strict=true``: an error);
hidden files (``.P03_copy.txt``, macOS ``._*`` files) are no videos: skipped and counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from actrec_plugins.datasets._videos import VideoDataset

from actrec.plugin_api import DatasetIndex, PluginConfig, Split, VideoRecord

SOURCES = ("coarse", "xml", "fine", "mstcn")
BACKGROUND = "SIL"
PERSON_BLOCKS = ((3, 15), (16, 28), (29, 41), (42, 54))
SYNC_FOLDER = "BreakfastII_15fps_qvga_sync"


@dataclass(frozen=True)
class BreakfastConfig(PluginConfig):
    root: Path | None = None
    source: str = "coarse"
    label_set: str = "mstcn"
    classes_file: Path | None = None
    split_scheme: str = "official"
    strict_splits: bool = False  # a bundle entry without annotations: error, not drop+count
    fps: float = 15.0
    strict: bool = False  # an empty annotation file is an error (else skipped and counted)
    videos: Path | None = None  # the folder of the videos (default: the data root)
    stereo_channel: int = 0  # which channel of the stereo camera a 'stereo01' id means


def parse_video_id(video: str) -> tuple[str, str | None, str | None]:
    """``P03_cam01_P03_coffee`` -> participant ``P03``, camera ``cam01``, recipe ``coffee``."""
    parts = video.split("_")
    if len(parts) >= 4:
        return parts[0], parts[1], "_".join(parts[3:])
    return parts[0], None, None


def video_candidates(video: str, stereo_channel: int = 0) -> list[str]:
    """Where the video of id ``video`` may be, most specific first (see the module docstring):
    ``P03_cam01_P03_coffee`` -> ``BreakfastII_15fps_qvga_sync/P03/cam01/P03_coffee``,
    ``P03/cam01/P03_coffee``, ``P03_cam01_P03_coffee``; ``P03_stereo01_P03_coffee`` ->
    ``.../P03/stereo/P03_coffee_ch0`` (channel ``stereo_channel``)."""
    parts = video.split("_")
    found = []
    if len(parts) >= 4:
        person, camera, name = parts[0], parts[1], "_".join(parts[2:])
        if camera.startswith("stereo"):
            camera, name = "stereo", f"{name}_ch{stereo_channel}"
        found += [f"{SYNC_FOLDER}/{person}/{camera}/{name}", f"{person}/{camera}/{name}"]
    return found + [video]


def official_splits(participants: dict[str, str]) -> dict[str, Split]:
    """The 4 official splits: persons P03-P15, P16-P28, P29-P41, P42-P54 held out in turn."""
    splits = {}
    for i, (lo, hi) in enumerate(PERSON_BLOCKS, 1):
        def held(p: str) -> bool:
            return p[1:].isdigit() and lo <= int(p[1:]) <= hi
        test = tuple(sorted(v for v, p in participants.items() if held(p)))
        train = tuple(sorted(v for v, p in participants.items() if not held(p)))
        splits[str(i)] = Split(str(i), train, test)
    return splits


class Breakfast(VideoDataset):
    """The Breakfast dataset from its segmentation files or the MS-TCN ground truth."""

    name = "breakfast"
    Config = BreakfastConfig

    def load(self) -> DatasetIndex:
        import numpy as np
        from actrec_plugins.datasets._common import (
            count_test_coverage,
            index_files,
            split_from_lists,
            visible_files,
        )
        from actrec_plugins.datasets._videos import attach_videos

        from actrec.errors import ConfigError, DataError
        from actrec.io import annotations as A

        cfg = self.config
        if cfg.source not in SOURCES:
            raise ConfigError(f"breakfast: source must be one of {', '.join(SOURCES)}, "
                              f"got {cfg.source!r}")
        if cfg.label_set not in ("mstcn", "lowest"):
            raise ConfigError(f"breakfast: label_set must be 'mstcn' or 'lowest', "
                              f"got {cfg.label_set!r}")
        if cfg.split_scheme not in ("official", "bundles"):
            raise ConfigError(f"breakfast: split_scheme must be 'official' or 'bundles', "
                              f"got {cfg.split_scheme!r}")
        if cfg.stereo_channel not in (0, 1):
            raise ConfigError(f"breakfast: stereo_channel must be 0 or 1 (the _ch0 or _ch1 file "
                              f"of the stereo camera), got {cfg.stereo_channel!r}")
        root = self.existing_root()
        repairs: dict[str, int] = {}

        folder = {"coarse": "segmentation_coarse", "xml": "segmentation_xml",
                  "fine": "segmentation_fine", "mstcn": "groundTruth"}[cfg.source]
        directory = root / folder
        if not directory.is_dir():
            folders = {"segmentation_coarse": "coarse", "segmentation_xml": "xml",
                       "segmentation_fine": "fine", "groundTruth": "mstcn"}
            present = [f"-o source={src} ({name}/)" for name, src in folders.items()
                       if src != cfg.source and (root / name).is_dir()]
            hint = f"; this root has annotations for {', '.join(present)}" if present else ""
            raise DataError(f"{directory}: folder not found (breakfast source "
                            f"{cfg.source!r}){hint}")
        if cfg.source == "mstcn":
            patterns = ["*.txt"]
        else:
            ext = "*.xml" if cfg.source == "xml" else "*.txt"
            patterns = [ext, "*/" + ext]
        files = index_files(visible_files(directory, patterns, repairs))
        if not files:
            raise DataError(f"{directory}: no annotation files")

        # Ranges are bounded by 24 hours at the dataset's fps before any label is allocated.
        limit = A.frame_limit(cfg.fps)
        segments: dict[str, list[A.Segment]] = {}
        names: dict[str, np.ndarray] = {}
        if cfg.source == "mstcn":
            if cfg.label_set == "lowest":  # the class list comes from the names used
                names = A.read_each(files, A.read_frame_label_names, repairs, strict=cfg.strict)
                files = {v: files[v] for v in names}  # empty files skipped, counted
        else:
            def read(path):
                if cfg.source == "xml":
                    return A.read_breakfast_xml(path, repairs, max_frames=limit)
                return A.read_range_segments(path, repairs, max_frames=limit)
            segments = A.read_each(files, read, repairs, strict=cfg.strict)
            files = {v: files[v] for v in segments}

        if cfg.label_set == "mstcn":
            classes = A.read_mapping(root / "mapping.txt")
            index = {c: i for i, c in enumerate(classes)}
        else:
            if cfg.classes_file is not None:
                actions = [c for c in A.read_name_list(cfg.classes_file) if c != BACKGROUND]
            elif cfg.source != "fine" and (root / "mapping.txt").is_file():
                actions = sorted(set(A.read_mapping(root / "mapping.txt")) - {BACKGROUND})
            else:
                used = {s.label for segs in segments.values() for s in segs}
                used |= {str(n) for arr in names.values() for n in np.unique(arr)}
                actions = sorted(used - {BACKGROUND})
            classes = ("background", *actions)
            index = {c: i for i, c in enumerate(classes)}
            index[BACKGROUND] = 0

        if cfg.source == "mstcn":
            per_frame = A.read_each(files, lambda p: A.read_frame_labels(p, index, repairs),
                                    repairs, strict=cfg.strict)
            files = {v: files[v] for v in per_frame}
        videos = {}
        for video in files:
            if cfg.source == "mstcn":
                labels = per_frame[video]
            else:
                labels, fixed = A.segments_to_frames(
                    segments[video], index, source=files[video], fill=0 if cfg.label_set ==
                    "lowest" else A.UNLABELLED, max_frames=limit)
                A.add_repairs(repairs, fixed)
            participant, camera, recipe = parse_video_id(video)
            videos[video] = VideoRecord(id=video, participant=participant, labels=labels,
                                        fps=cfg.fps, camera=camera, recipe=recipe)

        participants = {v: r.participant for v, r in videos.items()}
        if cfg.split_scheme == "official":
            splits = official_splits(participants)
        else:
            splits = {}
            for n in range(1, 5):
                splits[str(n)] = split_from_lists(
                    str(n), root / "splits" / f"train.split{n}.bundle",
                    root / "splits" / f"test.split{n}.bundle", videos, repairs,
                    strict=cfg.strict_splits)
        count_test_coverage(videos, splits, repairs)
        index = DatasetIndex(
            name=self.name, classes=tuple(classes), videos=videos, splits=splits, fps=cfg.fps,
            background=0 if cfg.label_set == "lowest" else None,  # see the module docstring
            label_set=cfg.label_set, repairs=repairs,
        )
        return attach_videos(index, self.videos_root(),
                             lambda v: video_candidates(v, cfg.stereo_channel))

