"""MPII Cooking 2 (Rohrbach et al.): 275 videos of 30 people in one kitchen, 30 fps.

Frame rate: the papers give 30 fps; the MPII Cooking cameras record 29.4. The frame numbers
count the video file's frames, and ``actrec extract`` reads a file within 2.5 % of the label
rate one frame per label, so the labels stay on their frames at the default ``fps=30``; only
times in seconds derived from it are 2 % short (``fps=29.4`` makes them exact).

Reads the segment CSV ``subject, file_name, start_frame, end_frame, activity_category_id,
activity_category`` (with or without that header line; frames inclusive and, by default,
1-based: ``one_based=false`` for 0-based files). Classes: ``background`` at index 0 for frames
no segment covers, then the activity categories by id (87 in MPII Cooking 2, 88 with
background). A video lasts until its last segment ends (the video files are not read).
Overlapping segments: the later start wins (of two with the same start, the one later in
the file), counted. A frame past 24 hours at ``fps`` is a
``DataError`` naming the line. Splits: the papers' 4 leave-person-out
splits (sorted subjects cut into 4 contiguous blocks, block i held out in split i).

Videos, under ``videos`` (default: the data root): ``s08-d02-cam-002.avi`` for ``file_name``
``s08-d02-cam-002`` (a ``file_name`` with its extension works too; another video extension or a
frame folder as well), directly there or in ``videos/``. Videos found nowhere are listed in
``DatasetIndex.missing_videos``.

No MPII Cooking 2 annotation file could be obtained for this project: the reader is tested on
files written by the tests in exactly the documented format.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from actrec_plugins.datasets._videos import VideoDataset

from actrec.plugin_api import DatasetIndex, PluginConfig

COLUMNS = ("subject", "file_name", "start_frame", "end_frame", "activity_category_id",
           "activity_category")


@dataclass(frozen=True)
class MPIIConfig(PluginConfig):
    root: Path | None = None
    annotations: str = "annotations.csv"  # file name under root (or an absolute path)
    one_based: bool = True
    fps: float = 30.0
    videos: Path | None = None  # the folder of the videos (default: the data root)


def video_candidates(video: str) -> list[str]:
    """Where video ``s08-d02-cam-002`` (or ``s08-d02-cam-002.avi``) may be, most specific first."""
    from actrec_plugins.datasets._videos import strip_video_extension

    stem = strip_video_extension(video)
    return [stem, f"videos/{stem}"]


class MPIICooking2(VideoDataset):
    """MPII Cooking 2 from its segment CSV."""

    name = "mpii"
    Config = MPIIConfig

    def load(self) -> DatasetIndex:
        from actrec_plugins.datasets._common import person_splits
        from actrec_plugins.datasets._videos import attach_videos

        from actrec.errors import DataError
        from actrec.io import annotations as A
        from actrec.plugin_api import VideoRecord

        cfg = self.config
        root = self.existing_root()
        path = root / cfg.annotations
        repairs: dict[str, int] = {}
        rows = _rows(path, repairs)
        if not rows:
            raise DataError(f"{path}: no segments")
        categories: dict[int, str] = {}
        for line, row in rows:
            try:
                ident = int(row["activity_category_id"])
            except ValueError:
                raise DataError(f"{path}:{line}: activity_category_id "
                                f"{row['activity_category_id']!r} is not an integer") from None
            name = row["activity_category"]
            if categories.setdefault(ident, name) != name:
                raise DataError(f"{path}:{line}: category id {ident} is {name!r} here but "
                                f"{categories[ident]!r} earlier")
        classes = ("background", *(categories[k] for k in sorted(categories)))
        if len(set(classes)) != len(classes):
            raise DataError(f"{path}: a category name is used by two ids")
        index = {c: i for i, c in enumerate(classes)}

        by_video: dict[str, list] = {}
        subject: dict[str, str] = {}
        for line, row in rows:
            video = row["file_name"]
            by_video.setdefault(video, []).append((line, row))
            if subject.setdefault(video, row["subject"]) != row["subject"]:
                raise DataError(f"{path}:{line}: video {video!r} has subject {row['subject']!r} "
                                f"here but {subject[video]!r} earlier")
        videos = {}
        for video in sorted(by_video):
            # a video lasts until its last segment: bound the frames before allocating labels
            segments = A.csv_segments(by_video[video], path=path, start="start_frame",
                                      end="end_frame", label="activity_category",
                                      inclusive=True, one_based=cfg.one_based,
                                      max_frames=A.frame_limit(cfg.fps))
            labels, fixed = A.segments_to_frames(segments, index, source=path, fill=0,
                                                 overlap="last",
                                                 max_frames=A.frame_limit(cfg.fps))
            A.add_repairs(repairs, fixed)
            videos[video] = VideoRecord(id=video, participant=subject[video], labels=labels,
                                        fps=cfg.fps)
        index = DatasetIndex(name=self.name, classes=classes, videos=videos,
                             splits=person_splits(subject, 4), fps=cfg.fps, background=0,
                             label_set="default", repairs=repairs)
        return attach_videos(index, self.videos_root(), video_candidates)


def _rows(path: Path, repairs: dict[str, int]) -> list[tuple[int, dict[str, str]]]:
    """The CSV rows as dicts over ``COLUMNS``, whether or not the file has a header line."""
    import csv

    from actrec.errors import DataError
    from actrec.io import annotations as A

    lines = A.read_text_lines(path, repairs)
    first = next(csv.reader(lines[:1], skipinitialspace=True))
    if first and first[0].strip() == "subject":
        return A.read_csv_rows(path, COLUMNS)
    out = []
    reader = csv.reader(lines, skipinitialspace=True)
    for row in reader:
        if not any(c.strip() for c in row):
            continue
        if len(row) != len(COLUMNS):
            raise DataError(f"{path}:{reader.line_num}: {len(row)} fields; expected "
                            f"{len(COLUMNS)} ({', '.join(COLUMNS)})")
        out.append((reader.line_num, {k: v.strip() for k, v in zip(COLUMNS, row)}))
    return out
