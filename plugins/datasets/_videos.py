"""Finding each annotated video's file (or frame folder) in the layout its dataset ships.

A dataset plugin lists, per video id, candidate locations under its videos folder (the
``videos`` option, else the data root), most specific first, each without an extension:
``BreakfastII_15fps_qvga_sync/P03/cam01/P03_coffee``. The first candidate that exists as a
video file (any of ``VIDEO_EXTENSIONS``, case-insensitively: EPIC's ``.MP4``) or as a folder
(of image frames, read by ``actrec.io.video``) is the video. Videos found for no candidate
keep ``path=None`` and are reported in ``DatasetIndex.missing_videos`` with where they were
looked for; extraction records them as failed, with that reason.

Each parent folder is listed once (not one ``stat`` per candidate and extension), so resolving
the 1712 Breakfast videos costs a few hundred directory listings.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from actrec.plugin_api import Dataset, DatasetIndex, PluginConfig

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg")

Candidates = Callable[[str], Sequence[str]]


class VideoDataset(Dataset):
    """A dataset plugin whose ``Config`` has ``videos: Path | None`` (where its video files or
    frame folders are; ``None``: the data root). The folder is made absolute once, here, so
    that it names the same files whatever the working directory later is."""

    def __init__(self, config: PluginConfig | None = None) -> None:
        super().__init__(config)
        videos = getattr(self.config, "videos", None)
        if videos is not None and str(videos).strip():
            self.config = dataclasses.replace(  # type: ignore[misc]
                self.config, videos=Path(videos).expanduser().resolve())
        elif videos is not None:
            self.config = dataclasses.replace(self.config, videos=None)  # type: ignore[misc]

    def videos_root(self) -> Path:
        """The folder the videos are looked for under: ``videos`` if set (``DataError`` if it
        is not a folder), else the data root."""
        from actrec.errors import DataError

        videos = getattr(self.config, "videos", None)
        if videos is None:
            return self.existing_root()
        if not Path(videos).is_dir():
            raise DataError(f"videos folder for dataset '{self.name}' not found: {videos} "
                            f"(option videos=DIR)")
        return Path(videos)


class _Listing:
    """Cached listings of folders: ``name.lower() -> (name, is_dir)``."""

    def __init__(self) -> None:
        self._seen: dict[Path, dict[str, tuple[str, bool]]] = {}

    def entries(self, folder: Path) -> dict[str, tuple[str, bool]]:
        if folder not in self._seen:
            found: dict[str, tuple[str, bool]] = {}
            try:
                with os.scandir(folder) as it:
                    for entry in it:
                        if entry.name.startswith("."):
                            continue  # ._P01_01.MP4 (macOS) is no video
                        try:
                            is_dir = entry.is_dir()
                        except OSError:
                            continue
                        found.setdefault(entry.name.lower(), (entry.name, is_dir))
            except OSError:  # missing or unreadable folder: nothing there
                pass
            self._seen[folder] = found
        return self._seen[folder]

    def find(self, root: Path, candidate: str) -> Path | None:
        """The video at ``root / candidate``: a file with a video extension, else a folder."""
        where = root / candidate
        entries = self.entries(where.parent)
        stem = where.name
        for ext in VIDEO_EXTENSIONS:
            hit = entries.get((stem + ext).lower())
            if hit is not None and not hit[1]:
                return where.parent / hit[0]
        folder = entries.get(stem.lower())
        if folder is not None and folder[1]:  # a folder of frames
            return where.parent / folder[0]
        return None


def strip_video_extension(video: str) -> str:
    """``s08-d02-cam-002.avi`` -> ``s08-d02-cam-002`` (ids that carry their file extension)."""
    stem, dot, ext = video.rpartition(".")
    return stem if dot and ("." + ext.lower()) in VIDEO_EXTENSIONS else video


def attach_videos(index: DatasetIndex, root: Path, candidates: Candidates) -> DatasetIndex:
    """``index`` with ``path`` set on every video found under ``root`` (see the module
    docstring) and ``missing_videos`` naming the others with the places looked in. Returns the
    same (mutated) index."""
    listing = _Listing()
    videos = {}
    missing: dict[str, str] = {}
    for vid, record in index.videos.items():
        tried = list(dict.fromkeys(candidates(vid)))
        path = next((p for p in (listing.find(root, c) for c in tried) if p is not None), None)
        if path is None:
            missing[vid] = missing_reason(root, tried)
        videos[vid] = dataclasses.replace(record, path=path)
    index.videos = videos
    index.missing_videos = missing
    return index


def missing_reason(root: Path, tried: Sequence[str]) -> str:
    """What ``extract`` reports for a video found nowhere: the candidates, with extensions."""
    exts = "/".join(VIDEO_EXTENSIONS)
    return (f"no video file found; looked for {', '.join(tried)} (each as a {exts} file or a "
            f"folder of frames) under {root}")
