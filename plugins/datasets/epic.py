"""EPIC-Kitchens-55 and -100: egocentric kitchen videos with narrated action segments.

Files under the root (``version="auto"`` picks 100 when ``EPIC_100_train.csv`` exists):
- 55: ``EPIC_train_action_labels.csv``, ``EPIC_video_info.csv`` (``video,resolution,duration,
  fps``), ``EPIC_verb_classes.csv`` / ``EPIC_noun_classes.csv`` (``verb_id,class_key,...``);
- 100: ``EPIC_100_train.csv``, ``EPIC_100_video_info.csv`` (``video_id,duration,fps,...``),
  ``EPIC_100_verb_classes.csv`` / ``EPIC_100_noun_classes.csv`` (``id,key,...``).
Only the named columns are used, so either release's column order works.

Labels (``labels``): ``verb``, ``noun`` or ``action`` (each distinct verb-noun pair of the file,
named ``verb:noun``, sorted); ``background`` is added at index 0 for frames no segment covers.
Frames: ``start_frame``/``stop_frame`` are 1-based and inclusive, and they count the frames of
the released RGB frames, not of the video file: those were extracted at a fixed rate whatever
the camera recorded (``ffmpeg -r 60``, EPIC-55 README, "Video Information"). So the labels of
a video are at ``frames_fps(video)``: 60 fps for the EPIC-55 videos (``P01_01``, in either
release; recorded at 59.94, and a few at 29.97, 48 or 90), 50 fps for the EPIC-100 extension
videos (``P01_101``, recorded at 50). A video lasts ``round(duration * frames_fps)`` frames;
the info CSV's ``fps`` is the camera's rate: checked, but it does not set the label rate.
The records set ``labels_by_time``: ``actrec extract`` resamples a camera file to the label
rate by timestamps (a 59.94 fps file gains a repeated frame every 1000, as ``-r 60`` did),
never one frame per label (0.1 % drift, 3.7 s at the end of P01_18).
``DatasetIndex.fps`` is the most common label rate.

Overlap policy: EPIC segments overlap. The segment that starts later wins the frames it
shares with earlier ones (of two with the same start, the one later in the CSV); the number
of frames covered by more than one segment is reported under ``frames covered by overlapping
segments (later start wins)``. Segments running past a video's end are clipped (counted).

Damaged input: an fps that is not positive, a duration that is not a number >= 0 or one past
24 hours in the info CSV, and a frame past 24 hours in the labels CSV, are ``DataError``s
naming the file and line.

Videos, under ``videos`` (default: the data root), in the releases' layouts, first found wins:
``P01/videos/P01_01.MP4`` (EPIC-100), ``videos/train/P01/P01_01.MP4`` or ``videos/test/...``
(EPIC-55), ``P01_01.MP4`` or ``videos/P01_01.MP4``, or a folder of frames
``P01/rgb_frames/P01_01/``, ``rgb_frames/P01/P01_01/`` or (EPIC-55)
``frames_rgb_flow/rgb/{train,test}/P01/P01_01/`` holding ``frame_0000000001.jpg`` ..., read at
the label rate (the rate they were extracted at). Videos found nowhere are listed in
``DatasetIndex.missing_videos``.

Splits: ``split_scheme="person"`` (default) gives 4 leave-person-out splits over the training
annotations (sorted participants in 4 contiguous blocks); ``"official"`` (EPIC-100 only) is one
split ``"1"``: the videos of ``EPIC_100_train.csv`` against those of
``EPIC_100_validation.csv`` (the public test set has no labels).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from actrec_plugins.datasets._videos import VideoDataset

from actrec.plugin_api import DatasetIndex, PluginConfig

FILES = {
    "55": ("EPIC_train_action_labels.csv", "EPIC_video_info.csv", "EPIC_verb_classes.csv",
           "EPIC_noun_classes.csv"),
    "100": ("EPIC_100_train.csv", "EPIC_100_video_info.csv", "EPIC_100_verb_classes.csv",
            "EPIC_100_noun_classes.csv"),
}
LABEL_COLUMNS = ("participant_id", "video_id", "start_frame", "stop_frame", "verb", "verb_class",
                 "noun", "noun_class")
# The rates the released RGB frames were extracted at, which the annotations' frame numbers count.
FRAMES_FPS_55 = 60.0  # EPIC-55 videos (P01_01), whatever their camera's rate
FRAMES_FPS_EXTENSION = 50.0  # EPIC-100's new videos (P01_101)


def frames_fps(video: str) -> float:
    """The rate the annotation frame numbers of ``video`` count at (see the module docstring):
    50 for an EPIC-100 extension video (``PXX_1YY``, a three-digit number), else 60."""
    _, _, number = video.partition("_")
    return FRAMES_FPS_EXTENSION if len(number) == 3 and number.isdecimal() else FRAMES_FPS_55


@dataclass(frozen=True)
class EpicConfig(PluginConfig):
    root: Path | None = None
    version: str = "auto"
    labels: str = "verb"
    annotations: Path | None = None  # overrides the release's training CSV
    split_scheme: str = "person"
    videos: Path | None = None  # the folder of the videos (default: the data root)


def video_candidates(video: str) -> list[str]:
    """Where EPIC video ``P01_01`` may be (see the module docstring), most specific first."""
    person = video.split("_")[0]
    return [f"{person}/videos/{video}", f"videos/train/{person}/{video}",
            f"videos/test/{person}/{video}", video, f"videos/{video}",
            f"{person}/rgb_frames/{video}", f"rgb_frames/{person}/{video}",
            f"frames_rgb_flow/rgb/train/{person}/{video}",
            f"frames_rgb_flow/rgb/test/{person}/{video}"]


class EpicKitchens(VideoDataset):
    """EPIC-Kitchens-55/100 segment CSVs as per-frame labels."""

    name = "epic"
    Config = EpicConfig

    def load(self) -> DatasetIndex:
        from collections import Counter

        from actrec_plugins.datasets._common import person_splits
        from actrec_plugins.datasets._videos import attach_videos

        from actrec.errors import ConfigError, DataError
        from actrec.io import annotations as A
        from actrec.plugin_api import Split, VideoRecord

        cfg = self.config
        if cfg.labels not in ("verb", "noun", "action"):
            raise ConfigError(f"epic: labels must be verb, noun or action, got {cfg.labels!r}")
        if cfg.version not in ("auto", "55", "100"):
            raise ConfigError(f"epic: version must be auto, 55 or 100, got {cfg.version!r}")
        if cfg.split_scheme not in ("person", "official"):
            raise ConfigError(f"epic: split_scheme must be 'person' or 'official', "
                              f"got {cfg.split_scheme!r}")
        root = self.existing_root()
        version = cfg.version
        if version == "auto":
            version = "100" if (root / FILES["100"][0]).is_file() else "55"
        labels_csv, info_csv, verb_csv, noun_csv = (root / f for f in FILES[version])
        if cfg.annotations is not None:
            labels_csv = Path(cfg.annotations)
        repairs: dict[str, int] = {}

        rows = A.read_csv_rows(labels_csv, LABEL_COLUMNS, repairs)
        if not rows:
            raise DataError(f"{labels_csv}: no segments")
        held_out: set[str] = set()
        if cfg.split_scheme == "official":
            if version != "100":
                raise ConfigError("epic: split_scheme 'official' needs EPIC-100 (its "
                                  "validation set); use 'person' for EPIC-55")
            val_csv = root / "EPIC_100_validation.csv"
            val_rows = A.read_csv_rows(val_csv, LABEL_COLUMNS, repairs)
            held_out = {r["video_id"] for _, r in val_rows}
            both = held_out & {r["video_id"] for _, r in rows}
            if both:
                raise DataError(f"{val_csv}: video {sorted(both)[0]!r} is also in {labels_csv}")
            rows = rows + [(ln, {**r, "_file": str(val_csv)}) for ln, r in val_rows]
        classes, key_of = self._classes(cfg.labels, rows, verb_csv, noun_csv, labels_csv)
        index = {c: i for i, c in enumerate(classes)}

        lengths = _video_lengths(info_csv, repairs)

        by_video: dict[str, list] = {}
        participant: dict[str, str] = {}
        for line, row in rows:
            by_video.setdefault(row["video_id"], []).append((line, row))
            participant[row["video_id"]] = row["participant_id"]
        videos = {}
        for video in sorted(by_video):
            if video not in lengths:
                raise DataError(f"{info_csv}: no entry for video {video!r} (used on line "
                                f"{by_video[video][0][0]} of {labels_csv})")
            source = Path(by_video[video][0][1].get("_file", labels_csv))
            num_frames, fps = lengths[video]
            # a typo'd stop_frame past 24 hours is an error at its line, not clipped
            segments = A.csv_segments(
                [(ln, {**r, "_label": key_of(r, ln)}) for ln, r in by_video[video]],
                path=source, start="start_frame", end="stop_frame", label="_label",
                inclusive=True, one_based=True, max_frames=A.frame_limit(fps))
            labels, fixed = A.segments_to_frames(segments, index, source=source,
                                                 num_frames=num_frames, fill=0, overlap="last",
                                                 max_frames=A.frame_limit(fps))
            A.add_repairs(repairs, fixed)
            # the frame numbers count time at `fps` (frames extracted with ffmpeg -r), not the
            # camera file's frames: a 59.94 fps file is resampled to them by timestamps
            videos[video] = VideoRecord(id=video, participant=participant[video],
                                        labels=labels, fps=fps, labels_by_time=True)
        fps = Counter(v.fps for v in videos.values()).most_common(1)[0][0]
        if cfg.split_scheme == "official":
            splits = {"1": Split("1", tuple(sorted(set(videos) - held_out)),
                                 tuple(sorted(held_out)))}
        else:
            splits = person_splits(participant, 4)
        index = DatasetIndex(name=self.name, classes=classes, videos=videos, splits=splits,
                             fps=fps, background=0, label_set=cfg.labels, repairs=repairs)
        return attach_videos(index, self.videos_root(), video_candidates)

    @staticmethod
    def _classes(kind, rows, verb_csv, noun_csv, labels_csv):
        """``(classes, key_of)``: class names with background first, and a function giving a
        row's class name (``DataError`` naming the line for an unknown class id)."""
        from actrec.errors import DataError

        verbs = _class_keys(verb_csv) if kind in ("verb", "action") else {}
        nouns = _class_keys(noun_csv) if kind in ("noun", "action") else {}

        def name(table, row, column, line, csv_path):
            try:
                return table[int(row[column])]
            except (KeyError, ValueError):
                raise DataError(f"{row.get('_file', labels_csv)}:{line}: {column} "
                                f"{row[column]!r} is not a class "
                                f"of {csv_path}") from None

        if kind == "verb":
            return ("background", *verbs.values()), lambda r, ln: name(verbs, r, "verb_class",
                                                                        ln, verb_csv)
        if kind == "noun":
            return ("background", *nouns.values()), lambda r, ln: name(nouns, r, "noun_class",
                                                                        ln, noun_csv)

        def action(r, ln):
            return name(verbs, r, "verb_class", ln, verb_csv) + ":" + name(
                nouns, r, "noun_class", ln, noun_csv)

        pairs = sorted({action(r, ln) for ln, r in rows})
        return ("background", *pairs), action


def _video_lengths(info_csv: Path, repairs: dict[str, int]) -> dict[str, tuple[int, float]]:
    """``video -> (frames, fps)`` from the video info CSV: the label rate ``frames_fps(video)``
    and ``round(duration * that rate)`` frames (the CSV's own ``fps`` is the camera's rate:
    checked, not used; see the module docstring).

    ``DataError`` naming the line for a missing video id, an fps that is not a positive finite
    number, a duration that is not a finite number >= 0, or a length past ``frame_limit(fps)``
    (24 hours at the label rate; the labels are allocated from it)."""
    import math

    from actrec.errors import DataError
    from actrec.io import annotations as A

    lengths: dict[str, tuple[int, float]] = {}
    for line, row in A.read_csv_rows(info_csv, ("duration", "fps"), repairs):
        where = f"{info_csv}:{line}"
        video = row.get("video_id") or row.get("video")
        if not video:
            raise DataError(f"{where}: no video / video_id column value")
        try:
            fps, duration = float(row["fps"]), float(row["duration"])
        except ValueError:
            raise DataError(f"{where}: duration and fps must be numbers") from None
        if not (math.isfinite(fps) and fps > 0):
            raise DataError(f"{where}: video {video!r}: fps must be a positive number, "
                            f"got {row['fps']!r}")
        if not (math.isfinite(duration) and duration >= 0):
            raise DataError(f"{where}: video {video!r}: duration must be a number of seconds "
                            f">= 0, got {row['duration']!r}")
        rate = frames_fps(video)
        length, limit = duration * rate, A.frame_limit(rate)  # a float: 1e308 * 60 is inf
        if not math.isfinite(length) or round(length) > limit:
            raise DataError(f"{where}: video {video!r} lasts {length:.0f} frames "
                            f"({row['duration']} s at {rate:g} fps), past the limit of {limit} "
                            f"({A.MAX_VIDEO_SECONDS // 3600} hours); is the file damaged?")
        lengths[video] = (round(length), rate)
    return lengths


def _class_keys(path: Path) -> dict[int, str]:
    """``id -> key`` from an EPIC class CSV (first column the id, second the key), ids 0..K-1."""
    from actrec.errors import DataError
    from actrec.io import annotations as A

    rows = A.read_csv_rows(path, ())
    keys: dict[int, str] = {}
    for line, row in rows:
        values = list(row.values())
        try:
            ident = int(values[0])
        except ValueError:
            raise DataError(f"{path}:{line}: class id {values[0]!r} is not an integer") from None
        if ident != len(keys):
            raise DataError(f"{path}:{line}: class id {ident} out of order; expected {len(keys)}")
        keys[ident] = values[1]
    return keys
