"""Feature extraction: decode every video of a dataset, run an extractor, fill a feature store.

Label alignment: a dataset's labels are at ``VideoRecord.fps``; the features are at the
extractor's ``fps`` (or the video's own rate). When the two rates differ, labels are resampled
to the feature frames by nearest timestamp with the same rule as frames
(``actrec.io.video.resample_indices``), and the video's attributes record it
(``label_fps``, ``labels_resampled``). Policy for lengths: the number of feature frames must
equal the number of (resampled) labels exactly; otherwise that video fails with a
``DataError`` naming it and both counts, and nothing is stored for it.

A stored video counts as done only while it is intact (its chunk files as written, see
``FeatureStore.damage``) and its source video has the size and mtime recorded at extraction
(unless the store is trusted); otherwise it is extracted again and the report says why.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from actrec.errors import ActrecError, DataError

if TYPE_CHECKING:  # pragma: no cover
    from rich.progress import Progress

    from actrec.plugin_api import DatasetIndex, FeatureExtractor, VideoRecord

__all__ = ["ExtractReport", "extract_features", "resample_labels", "extract_video"]


@dataclass(frozen=True)
class ExtractReport:
    """What one extraction run did: videos written, skipped (already stored) and failed.
    ``redone_damaged`` and ``redone_changed`` name the stored videos that were extracted
    again (they are in ``written`` or ``failed`` too) because their stored copy was damaged
    or their source video changed, each with what was wrong."""

    written: tuple[str, ...]
    skipped: tuple[str, ...]
    failed: tuple[tuple[str, str], ...]  # (video id, error message)
    store: Path
    redone_damaged: tuple[tuple[str, str], ...] = ()  # (video id, what was damaged)
    redone_changed: tuple[tuple[str, str], ...] = ()  # (video id, how its source changed)

    @property
    def ok(self) -> bool:
        return not self.failed

    def to_dict(self) -> dict[str, Any]:
        return {
            "store": str(self.store),
            "written": list(self.written),
            "skipped": list(self.skipped),
            "failed": [{"video": v, "error": e} for v, e in self.failed],
            "redone_damaged": [{"video": v, "damage": d} for v, d in self.redone_damaged],
            "redone_changed": [{"video": v, "change": c} for v, c in self.redone_changed],
        }


def resample_labels(labels: np.ndarray, label_fps: float, fps: float) -> np.ndarray:
    """Labels ``[L]`` at ``label_fps`` resampled to ``fps`` by nearest timestamp: output frame
    ``i`` takes label ``round(i * label_fps / fps)``, exactly as frames are resampled."""
    from actrec.io.video import resample_indices

    labels = np.asarray(labels)
    if abs(label_fps - fps) < 1e-9:
        return labels.copy()
    return labels[resample_indices(labels.shape[0], label_fps, fps)]


def extract_video(
    record: VideoRecord,
    extractor: FeatureExtractor,
    *,
    batch_size: int = 64,
    progress: Progress | None = None,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Features float32 ``[T, D]``, aligned labels int64 ``[T]`` and attributes (``fps`` of
    the features, ``label_fps``, ``labels_resampled``, ...) for one video.

    Raises ``DataError`` naming the video for a missing/undecodable file, an extractor that
    yields the wrong number of rows or width, or a feature/label length mismatch.
    """
    from actrec.io.video import open_video

    if record.path is None:
        raise DataError(f"video {record.id!r}: the dataset gives no video file for it")
    if not record.fps > 0:
        raise DataError(f"video {record.id!r}: the dataset gives {record.fps} fps; expected > 0")
    reader = open_video(record.path, fps=extractor.fps)
    labels = resample_labels(record.labels, record.fps, reader.fps)
    if labels.shape[0] != reader.num_frames:
        raise DataError(
            f"video {record.id!r} ({reader.path}): {reader.num_frames} frames at "
            f"{reader.fps:g} fps but {labels.shape[0]} labels at that rate "
            f"({record.labels.shape[0]} at {record.fps:g} fps); lengths must match"
        )
    task = None
    if progress is not None:
        task = progress.add_task(f"  {record.id}", total=reader.num_frames)

    def batches():
        for batch in reader.iter_batches(batch_size):
            yield batch
            if task is not None:
                progress.advance(task, batch.shape[0])

    try:
        chunks = [np.asarray(f, dtype=np.float32) for f in extractor.extract(batches())]
    finally:
        if task is not None:
            progress.remove_task(task)
    dim = extractor.dim()
    feats = np.concatenate(chunks, axis=0) if chunks else np.zeros((0, dim), np.float32)
    if feats.ndim != 2 or feats.shape[1] != dim:
        raise DataError(f"video {record.id!r}: extractor '{extractor.name}' produced features "
                        f"of shape {feats.shape}, expected [T, {dim}]")
    if feats.shape[0] != labels.shape[0]:
        raise DataError(f"video {record.id!r}: extractor '{extractor.name}' produced "
                        f"{feats.shape[0]} feature rows for {labels.shape[0]} frames")
    attrs = {
        "fps": reader.fps,
        "label_fps": float(record.fps),
        "labels_resampled": abs(record.fps - reader.fps) >= 1e-9,
        "source_fps": reader.source_fps,
        "frame_size": list(reader.size),
        "participant": record.participant,
    }
    return feats, labels.astype(np.int64), attrs


def extract_features(
    index: DatasetIndex,
    extractor: FeatureExtractor,
    store_path: Path,
    *,
    dataset_ref: str,
    split_scheme: str = "default",
    video_ids: Sequence[str] | None = None,
    overwrite: bool = False,
    dtype: str = "float16",
    progress: Progress | None = None,
    batch_size: int = 64,
    source: Mapping[str, Any] | None = None,
    trust_store: bool = False,
) -> ExtractReport:
    """Extract features for ``video_ids`` (default: every video of ``index``) into the store
    at ``store_path`` (created if needed; see ``FeatureStore.open_or_create`` for when an
    existing store is refused, e.g. one filled from another ``source``). The store records
    ``source`` and the dataset's background classes (``index.background_classes``).

    Videos already complete in the store are skipped unless ``overwrite``, unless their
    chunk files are damaged (missing or resized) or, without ``trust_store``, their source
    file's path, size or mtime differ from what was recorded when they were extracted: those
    are extracted again (``redone_damaged``, ``redone_changed``); if that fails, the stale
    copy is removed, so that nothing reads it. A video that fails (missing or undecodable file, length mismatch) is reported in ``failed`` with its
    ``DataError`` message and the others continue. ``progress``, if given, gets one task per
    video (frames) and one overall (videos); ``None`` runs silently.
    """
    from actrec.io.features import FeatureStore
    from actrec.io.integrity import source_change

    lookahead = extractor.checked_lookahead()  # before anything is written
    ids = list(index.videos) if video_ids is None else list(video_ids)
    unknown = [v for v in ids if v not in index.videos]
    if unknown:
        listed = ", ".join(map(repr, unknown[:5])) + (" ..." if len(unknown) > 5 else "")
        raise DataError(f"dataset '{index.name}' has no video(s) {listed}")
    store = FeatureStore.open_or_create(
        store_path,
        dataset=dataset_ref,
        split_scheme=split_scheme,
        classes=index.classes,
        splits={name: {"train": s.train, "test": s.test} for name, s in index.splits.items()},
        extractor=extractor.name,
        extractor_config=extractor.config.to_dict(),
        lookahead=lookahead,
        dtype=dtype,
        background=index.background_classes,
        source=source,
    )
    written: list[str] = []
    skipped: list[str] = []
    failed: list[tuple[str, str]] = []
    damaged: list[tuple[str, str]] = []
    changed: list[tuple[str, str]] = []
    overall = progress.add_task("videos", total=len(ids)) if progress is not None else None
    for vid in ids:
        record = index.videos[vid]
        stale = done = False  # stale: the stored copy must not stay if extracting fails
        if not overwrite and store.has(vid):
            problems = store.damage(vid)
            change = None if trust_store or problems else source_change(
                store.video_attrs(vid).get("source"), record.path)
            if problems:
                damaged.append((vid, "; ".join(problems)))
            elif change:
                changed.append((vid, change))
            else:
                skipped.append(vid)
                done = True
            stale = not done
        if not done:
            try:
                feats, labels, attrs = extract_video(record, extractor, batch_size=batch_size,
                                                     progress=progress)
                fps = attrs.pop("fps")
                store.write_video(vid, feats, labels, fps=fps, source=record.path, extra=attrs)
                written.append(vid)
            except ActrecError as exc:  # this video is bad: report it, go on with the others
                if stale:
                    store.remove(vid)
                    exc = DataError(f"{exc} (its stored copy was damaged or made from another "
                                    f"file, and was removed)")
                failed.append((vid, str(exc)))
            except OSError as exc:  # disk full, permissions: every other video would fail too
                raise DataError(f"feature store {store_path}: cannot write video {vid!r}: "
                                f"{exc.strerror or exc}") from None
        if overall is not None:
            progress.advance(overall)
    return ExtractReport(tuple(written), tuple(skipped), tuple(failed), Path(store_path),
                         tuple(damaged), tuple(changed))
