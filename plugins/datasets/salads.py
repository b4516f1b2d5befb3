"""50 Salads (Stein & McKenna): 50 videos of 25 people preparing a salad, 30 fps.

Sources (``source``):
- ``mstcn``: ``groundTruth/rgb-XX-Y.txt`` (one mid-level label per frame) with ``mapping.txt``;
- ``annotations``: ``annotations/XX-Y-activityAnnotation.txt`` (``<start_us> <end_us> <label>``,
  CRLF, unsorted, high / mid / low granularities mixed), turned into frames with per-frame
  timestamp files (``timestamps_dir``: ``timestamps-XX-Y.txt`` or ``rgb-XX-Y.txt``, the first
  integer of each line is the frame's time in microseconds; a sequence without one is skipped
  and counted, ``strict=true``: an error) or, without them, ``fps`` and ``start_us`` (the time
  of frame 0, the same for every video). ``start_us`` suits files whose clock starts at their
  video's first frame; the real files' clocks do not (measured against the MS-TCN ground
  truth, frame 0 lies 6 to 868 s into them, differently per video), so a single ``start_us``
  shifts their labels by seconds to minutes: use the timestamp files. Videos timed from
  ``start_us`` are counted. Frame ``i`` belongs to a row when ``start <= t_i < end``; of rows
  covering a frame, the one that starts later wins, and of rows with the same start, the one
  later in the file (both as in the MS-TCN ground truth, where several ingredients placed at
  once are the last one listed).

Label sets (``label_set``):
- ``mid``: the 19 MS-TCN classes of ``mapping.txt`` (17 mid-level + ``action_start`` /
  ``action_end``, no background). From annotations, frames before the first action are
  ``action_start``, after the last ``action_end``, as in the MS-TCN ground truth.
- ``low``: the papers' set: ``background`` + the 51 ``*_prep/_core/_post`` labels of
  ``labels/low_level_actions.txt`` = 52 classes. Needs ``source=annotations``.
- ``eval``: ``background`` + the 9 evaluation classes (``labels/eval_actions.txt``);
  ``add_salt`` / ``add_vinegar`` (``null`` in ``low_to_eval``) and ``action_start/end`` are
  background. Works from either source.

Gaps between actions (``gaps``, annotations only: frames between the first and the last action
that no low-level row covers, 4 % of the frames): ``previous`` continues the action before the
gap, as the MS-TCN ground truth does (with it the annotations reproduce that ground truth; left
unlabelled, 4 % of its frames differ); ``unlabelled`` marks them -1 (ignored by the loss and the
metrics); ``background`` gives them the background class (``low`` / ``eval``). ``auto``
(default): ``previous`` for ``mid``, ``background`` for ``low`` and ``eval`` (the papers'
added background class). Frames of rows ``eval`` maps to ``null`` are background, no gap.

Before the first action and after the last (``ends``; 14 % of the MS-TCN frames): ``label``
(default) gives them the set's class for them, ``action_start`` / ``action_end`` in ``mid``
and ``background`` in ``low`` / ``eval``; ``unlabelled`` marks them -1, which scores a video
as if cut to its first..last action (Lea et al.'s TCN code trims them so). From either source.

Splits (``split_scheme``): ``mstcn`` = the 5 folds of ``splits/*.splitN.bundle``; ``person`` =
4 leave-person-out folds (~75 / 25): the sorted participants cut into 4 contiguous blocks
(7, 6, 6, 6 people for the 25 of the MS-TCN set), block i held out in split i.

Videos, under ``videos`` (default: the data root): ``rgb/rgb-01-1.avi`` as the dataset ships
them, or ``rgb-01-1.avi`` (another video extension, or a frame folder ``rgb-01-1/``) directly
there or in ``videos/``. Videos found nowhere are listed in ``DatasetIndex.missing_videos``.

Damaged input: a time past 24 hours, or a video longer than ``frame_limit(fps)`` frames, is a
``DataError`` naming the file and line; an empty annotation or ground-truth file is skipped and
counted (``strict=true``: an error); hidden files (``.rgb-01-1.txt``, macOS ``._*`` files) are
no videos: skipped and counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from actrec_plugins.datasets._videos import VideoDataset

from actrec.plugin_api import DatasetIndex, PluginConfig


@dataclass(frozen=True)
class SaladsConfig(PluginConfig):
    root: Path | None = None
    source: str = "mstcn"
    label_set: str = "mid"
    split_scheme: str = "mstcn"
    strict_splits: bool = False  # a bundle entry without annotations: error, not drop+count
    timestamps_dir: Path | None = None
    fps: float = 30.0
    start_us: int | None = None
    gaps: str = "auto"  # auto, previous, unlabelled or background (see the module docstring)
    ends: str = "label"  # label or unlabelled: frames before the first / after the last action
    strict: bool = False  # an empty annotation file is an error (else skipped and counted)
    videos: Path | None = None  # the folder of the videos (default: the data root)


GAPS = ("auto", "previous", "unlabelled", "background")
NO_TIMESTAMPS = "annotated sequences without a timestamps file (skipped)"
ENDS = "frames before the first or after the last action (unlabelled)"
FROM_START_US = "videos timed from start_us and fps (no timestamps file; approximate)"


def video_id(sequence: str) -> str:
    """``01-1`` (annotation file name) -> ``rgb-01-1`` (the MS-TCN video id)."""
    return sequence if sequence.startswith("rgb-") else "rgb-" + sequence


def video_candidates(video: str) -> list[str]:
    """Where video ``rgb-01-1`` may be (see the module docstring), most specific first."""
    return [f"rgb/{video}", video, f"videos/{video}"]


def participant_of(video: str) -> str:
    """``rgb-01-2`` -> ``01``."""
    return video.removeprefix("rgb-").split("-")[0]


class Salads(VideoDataset):
    """50 Salads from the MS-TCN ground truth or the original activity annotations."""

    name = "salads"
    Config = SaladsConfig

    def load(self) -> DatasetIndex:
        import numpy as np
        from actrec_plugins.datasets._common import (
            count_test_coverage,
            index_files,
            person_splits,
            split_from_lists,
            visible_files,
        )
        from actrec_plugins.datasets._videos import attach_videos

        from actrec.errors import ConfigError, DataError
        from actrec.io import annotations as A

        cfg = self.config
        for option, value, allowed in (("source", cfg.source, ("mstcn", "annotations")),
                                       ("label_set", cfg.label_set, ("mid", "low", "eval")),
                                       ("split_scheme", cfg.split_scheme, ("mstcn", "person")),
                                       ("gaps", cfg.gaps, GAPS),
                                       ("ends", cfg.ends, ("label", "unlabelled"))):
            if value not in allowed:
                raise ConfigError(f"salads: {option} must be one of {', '.join(allowed)}, "
                                  f"got {value!r}")
        if cfg.label_set == "low" and cfg.source != "annotations":
            raise ConfigError("salads: label_set 'low' needs source 'annotations' (the MS-TCN "
                              "ground truth has mid-level labels only)")
        if cfg.gaps == "background" and cfg.label_set == "mid":
            raise ConfigError("salads: gaps 'background' needs label_set 'low' or 'eval' (the "
                              "mid-level set has no background class); use previous or "
                              "unlabelled")
        root = self.existing_root()
        repairs: dict[str, int] = {}
        mid_classes = A.read_mapping(root / "mapping.txt")
        if cfg.label_set == "mid":
            classes = mid_classes
        elif cfg.label_set == "low":
            classes = ("background", *A.read_name_list(root / "labels" / "low_level_actions.txt"))
        else:
            classes = ("background", *A.read_name_list(root / "labels" / "eval_actions.txt"))
        index = {c: i for i, c in enumerate(classes)}

        if cfg.source == "mstcn":
            files = index_files(visible_files(root / "groundTruth", ["*.txt"], repairs))
            if not files:
                raise DataError(f"{root / 'groundTruth'}: no ground-truth files")
            mid_index = {c: i for i, c in enumerate(mid_classes)}
            lut = self._mid_lookup(root, mid_classes, classes)
            if cfg.ends == "unlabelled":  # the ground truth's action_start / action_end frames
                lut = lut.copy()
                lut[[mid_index["action_start"], mid_index["action_end"]]] = A.UNLABELLED
            labels = {v: lut[mid] for v, mid in A.read_each(
                files, lambda p: A.read_frame_labels(p, mid_index, repairs), repairs,
                strict=cfg.strict).items()}
            if cfg.ends == "unlabelled":
                A.add_repairs(repairs, {ENDS: sum(int(np.count_nonzero(v < 0))
                                                  for v in labels.values())})
        else:
            labels = self._from_annotations(root, classes, index, repairs)

        from actrec.plugin_api import VideoRecord

        videos = {v: VideoRecord(id=v, participant=participant_of(v), labels=lab, fps=cfg.fps)
                  for v, lab in sorted(labels.items())}
        if cfg.split_scheme == "person":
            splits = person_splits({v: r.participant for v, r in videos.items()}, 4)
        else:
            splits = {}
            folds = sorted(int(p.name[len("test.split"):-len(".bundle")])
                           for p in (root / "splits").glob("test.split*.bundle"))
            if not folds:
                raise DataError(f"{root / 'splits'}: no test.splitN.bundle files")
            for n in folds:
                splits[str(n)] = split_from_lists(
                    str(n), root / "splits" / f"train.split{n}.bundle",
                    root / "splits" / f"test.split{n}.bundle", videos, repairs,
                    strict=cfg.strict_splits)
            count_test_coverage(videos, splits, repairs)
        background = None if cfg.label_set == "mid" else 0
        index = DatasetIndex(name=self.name, classes=tuple(classes), videos=videos,
                             splits=splits, fps=cfg.fps, background=background,
                             label_set=cfg.label_set, repairs=repairs)
        return attach_videos(index, self.videos_root(), video_candidates)

    @staticmethod
    def _mid_lookup(root: Path, mid_classes, classes):
        """Index array: mid-level class index -> index in ``classes`` (eval: via the
        low->mid and low->eval tables; ``null`` and ``action_start/end`` -> background)."""
        import numpy as np

        from actrec.io import annotations as A

        if tuple(classes) == tuple(mid_classes):
            return np.arange(len(mid_classes), dtype=np.int64)
        to_mid = A.read_conversion(root / "labels" / "conversions" / "low_to_mid.txt")
        to_eval = A.read_conversion(root / "labels" / "conversions" / "low_to_eval.txt")
        mid_to_eval = {to_mid[low]: to_eval.get(low, "null") for low in to_mid}
        index = {c: i for i, c in enumerate(classes)}
        return np.array([index.get(mid_to_eval.get(m, "null"), 0) for m in mid_classes],
                        dtype=np.int64)

    def _from_annotations(self, root: Path, classes, index, repairs):
        """Per-frame labels from the activity annotation files, in ``classes``."""
        import numpy as np
        from actrec_plugins.datasets._common import visible_files

        from actrec.errors import DataError
        from actrec.io import annotations as A

        cfg = self.config
        folder = root / "annotations"
        paths = visible_files(folder, ["*-activityAnnotation.txt"], repairs)
        if not paths:
            raise DataError(f"{folder}: no *-activityAnnotation.txt files")
        if cfg.timestamps_dir is None and cfg.start_us is None:
            raise DataError(
                f"{folder}: the annotations are in microseconds; pass timestamps_dir (per-frame "
                "timestamp files) or start_us (time of frame 0) with fps to turn them into frames"
            )
        low = A.read_name_list(root / "labels" / "low_level_actions.txt")
        conv = root / "labels" / "conversions"
        if cfg.label_set == "low":
            table = {c: c for c in low}
        elif cfg.label_set == "mid":
            table = A.read_conversion(conv / "low_to_mid.txt")
        else:
            table = {k: (None if v == "null" else v)
                     for k, v in A.read_conversion(conv / "low_to_eval.txt").items()}
        low_set = set(low)
        known = low_set | set(A.read_name_list(root / "labels" / "high_level_actions.txt"))
        files = {video_id(p.name[: -len("-activityAnnotation.txt")]): p for p in paths}
        timed = A.read_each(files, lambda p: A.read_timed_segments(p, repairs), repairs,
                            strict=cfg.strict)
        gaps = cfg.gaps if cfg.gaps != "auto" else (
            "previous" if cfg.label_set == "mid" else "background")
        out = {}
        missing: list[str] = []
        for video, rows in timed.items():
            path = files[video]
            for start, end, label, line in rows:
                if label not in known:
                    raise DataError(f"{path}:{line}: label {label!r} is in no label list")
            stamps = self._timestamps(video, rows, path)
            if stamps is None:  # no timestamps file (50 Salads' sequences 08 and 12)
                missing.append(video)
                continue
            low_rows = [r for r in rows if r[2] in low_set]  # drop the high-level rows
            frames = A.times_to_frames(low_rows, stamps)
            covered = np.zeros(len(stamps), dtype=bool)  # by any low-level row
            for seg in frames:
                covered[seg.start:seg.end] = True
            # frames of a row mapped to no class (eval's null) are background
            fill = A.UNLABELLED if cfg.label_set == "mid" else 0
            labels, fixed = A.segments_to_frames(A.relabel_segments(frames, table), index,
                                                 source=path, num_frames=len(stamps),
                                                 fill=fill, overlap="last",
                                                 max_frames=A.frame_limit(cfg.fps))
            A.add_repairs(repairs, fixed)
            out[video] = _fill_outside_actions(labels, covered, gaps, cfg.ends, index, repairs)
        if missing:
            if cfg.strict or not out:
                raise DataError(f"{cfg.timestamps_dir}: no timestamps-{missing[0][4:]}.txt for "
                                f"video {missing[0]}" + (f" (nor for {len(missing) - 1} other "
                                                         f"sequence(s))" if len(missing) > 1
                                                         else ""))
            A.add_repairs(repairs, {NO_TIMESTAMPS: len(missing)})
        elif cfg.timestamps_dir is None:
            A.add_repairs(repairs, {FROM_START_US: len(out)})
        return out

    def _timestamps(self, video: str, rows, path: Path):
        """Frame times ``[T]`` in microseconds for ``video``: its timestamp file (``None``
        when ``timestamps_dir`` has none for it), or ``start_us + i * 1e6 / fps`` up to the
        last annotated time of ``rows`` (read from ``path``). ``T`` is checked against
        ``frame_limit(fps)`` before anything is allocated: past it, a ``DataError`` names the
        line of the last time."""
        import math

        import numpy as np

        from actrec.errors import ConfigError, DataError
        from actrec.io import annotations as A

        cfg = self.config
        if cfg.timestamps_dir is not None:
            seq = video.removeprefix("rgb-")
            for name in (f"timestamps-{seq}.txt", f"{video}.txt", f"{seq}.txt"):
                path = Path(cfg.timestamps_dir) / name
                if path.is_file():
                    return A.read_timestamps(path)
            return None
        if cfg.start_us < 0:
            raise ConfigError(f"salads: start_us must be >= 0 (the time of frame 0 in "
                              f"microseconds), got {cfg.start_us}")
        if not (math.isfinite(cfg.fps) and cfg.fps > 0):
            raise ConfigError(f"salads: fps must be a positive number, got {cfg.fps}")
        if not rows:
            return np.zeros(0, dtype=np.int64)
        last, line = max((r[1], r[3]) for r in rows)
        count = math.floor((last - cfg.start_us) * cfg.fps / 1e6) + 1
        limit = A.frame_limit(cfg.fps)
        if count > limit:
            raise DataError(f"{path}:{line}: time {last} is frame {count - 1} at {cfg.fps:g} fps "
                            f"from start_us={cfg.start_us}, past the limit of {limit} frames "
                            f"({A.MAX_VIDEO_SECONDS // 3600} hours); is the file damaged?")
        return cfg.start_us + np.round(np.arange(max(count, 0)) * 1e6 / cfg.fps).astype(np.int64)


def _fill_outside_actions(labels, covered, gaps: str, ends: str, index: dict[str, int],
                          repairs: dict[str, int]):
    """``labels`` (``-1`` where no row of the wanted level covers a frame) with the frames no
    low-level row ``covered`` filled: before the first action and after the last by the
    ``ends`` rule (``label``: ``action_start`` / ``action_end`` in the mid-level set,
    background (0) in the others; ``unlabelled``: -1, counted), the gaps between actions by
    the ``gaps`` rule (``previous``, ``unlabelled`` or ``background``), counted."""
    import numpy as np

    from actrec.io import annotations as A

    hit = np.flatnonzero(covered)
    first, last = (hit[0], hit[-1]) if hit.size else (len(labels), -1)
    mid = "action_start" in index
    if ends == "unlabelled":
        labels[:first] = labels[last + 1:] = A.UNLABELLED
        A.add_repairs(repairs, {ENDS: first + max(0, len(labels) - last - 1)})
    else:
        labels[:first] = index["action_start"] if mid else 0
        labels[last + 1:] = index["action_end"] if mid else 0
    gap = ~covered
    gap[:first] = gap[last + 1:] = False
    count = int(np.count_nonzero(gap))
    if gaps == "previous":
        # each gap frame takes the label of the last covered frame before it: [T] -> [T]
        source = np.maximum.accumulate(np.where(gap, 0, np.arange(len(labels))))
        labels = labels[source]
    else:
        labels[gap] = A.UNLABELLED if gaps == "unlabelled" else 0
    what = {"previous": "the action before continued", "unlabelled": "unlabelled",
            "background": "background"}[gaps]
    A.add_repairs(repairs, {f"frames between actions ({what})": count})
    return labels
