"""One video's extraction: decode at the label rate in a background thread, apply the length
policy, run the extractor, write the result. ``process_tasks`` runs a sequence of videos so,
an opener thread claiming and opening the next video, a reader thread decoding it and a
writer thread writing the one before while the current one is extracted.

Frame rate: frames are decoded at the extractor's ``fps`` if its config sets one, else at the
dataset's label rate (``VideoRecord.fps``), so that by default every label has its frame.
A file whose own rate is within 2.5 % of the label rate (29.97 for 30) is read one frame per
label (``open_video``'s ``nominal_fps``), never resampled; ``container_fps`` records its rate.
A dataset whose labels count time at exactly their rate (``VideoRecord.labels_by_time``:
EPIC-Kitchens' 60 fps frame numbers on 59.94 fps files) has such a file resampled instead.
When the two rates differ, labels are resampled to the feature frames by nearest timestamp
with the same rule as frames (``actrec.io.video.resample_indices``); the video's attributes
record it (``label_fps``, ``labels_resampled``).

Length policy (the importer's vocabulary): real videos and annotations disagree by a few
frames. ``truncate`` (default) cuts both to the shorter and counts what was cut (the video's
``frames_cut`` attribute and the run's report); ``error`` refuses any disagreement. A
disagreement longer than ``max_length_gap`` seconds is an error under either policy (the wrong
video for these labels, or a truncated file), and so is one of more than ``max_length_share``
of the longer length (and more than ``FEW_FRAMES`` frames): labels at another frame rate than
the one they are read at (a 30 fps clip's labels read at a dataset's 15 fps) differ by half,
which on a clip of a few seconds stays under the gap in seconds and would be cut and
misaligned without a word. A dataset that labels only each video's start
(``VideoRecord.labels_cover_prefix``) has a longer video cut to its labels without these
checks (the rest is not decoded). An extractor with a lookahead of ``k`` frames is
fed up to ``k`` frames past the cut where the video has them, so the last kept features see
the same future as they would in a longer video.

Windows at the video's own rate: an extractor that declares ``video_rate`` (the motion
extractors' ``-x window_rate=video``) is fed every frame of the file at the file's own rate, so
that a window of 5 frames spans 5 of the video's frames (0.2 s at 25 fps) as in Borg &
Camilleri, not 5 label frames; the host keeps one row per label frame, the row of the source
frame that label frame is read from (the frame the default decoding would give it), so the store
holds the same rows and labels either way. Its ``lookahead`` counts video frames; the store
records it in label frames (``label_lookahead``: the most label frames a label frame waits for
a later one whose source frame is ``lookahead`` frames further on: a centred window of 2 frames
at 30 fps under 15 fps labels looks 1 label frame ahead, rounded up), and each video records
its own (``lookahead``) with ``window_fps``, the rate its windows ran at.

A file that cannot be opened, that yields fewer frames than its header says, or whose
extractor output has the wrong shape fails with a ``DataError`` naming the video; nothing is
stored for it.

Claims: a process extracts a video only while it holds the video's claim in the store
(``actrec.extract_claims.claim``: a lease, taken over when its holder is gone), so any number
of processes, commands and machines on one store extract each video once.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from actrec.errors import ActrecError, DataError
from actrec.extract_claims import ClaimLost, claim
from actrec.io.annotations import MAX_LENGTH_SHARE, length_share_over

if TYPE_CHECKING:  # pragma: no cover
    from actrec.io.features import FeatureStore
    from actrec.plugin_api import FeatureExtractor

__all__ = [
    "LENGTH_POLICIES",
    "HostOptions",
    "Outcome",
    "VideoFeatures",
    "VideoTask",
    "extract_video",
    "label_lookahead",
    "prefetch",
    "process_task",
    "process_tasks",
    "rate_lookahead",
    "reads_video_rate",
    "resample_labels",
]

LENGTH_POLICIES = ("truncate", "error")
CUT_VIDEO = "video frames beyond the labels (cut)"
CUT_LABELS = "label frames beyond the video (cut)"


@dataclass(frozen=True)
class HostOptions:
    """How the host decodes and fits lengths (the same in every worker)."""

    batch_size: int = 64
    length_policy: str = "truncate"
    max_length_gap: float = 5.0  # seconds; a larger disagreement is an error under any policy
    max_length_share: float = MAX_LENGTH_SHARE  # of the longer; likewise (module docstring)
    decode_threads: int = 1  # decord's threads per video (the reader runs beside the extractor)
    prefetch: int = 2  # decoded batches kept ready ahead of the extractor
    # label frames the store records as its look-ahead, for an extractor at the video's rate:
    # a video whose rate makes its features look further is refused (None: not checked)
    max_lookahead: int | None = None


@dataclass(frozen=True)
class VideoTask:
    """What a worker needs to extract one video (picklable: sent to worker processes)."""

    id: str
    path: Path | None
    labels: np.ndarray  # int64 [L] at label_fps
    label_fps: float
    participant: str = ""
    stale: bool = False  # a stored copy exists that must not stay if this extraction fails
    overwrite: bool = False  # replace a stored copy even if it is fine
    missing_reason: str | None = None  # why the dataset has no file for it
    labels_by_time: bool = False  # VideoRecord.labels_by_time: resample a near-rate file
    labels_cover_prefix: bool = False  # VideoRecord.labels_cover_prefix: cut a longer video


@dataclass(frozen=True)
class VideoFeatures:
    """One video's features ``[T, D]`` float32, labels ``[T]`` int64, attributes to store, and
    the frames the length policy cut from the video and from the labels."""

    features: np.ndarray
    labels: np.ndarray
    attrs: dict[str, Any]
    video_frames_cut: int = 0
    label_frames_cut: int = 0


@dataclass(frozen=True)
class Outcome:
    """What happened to one video: written (``ok``, with its frame counts), failed (``error``),
    found written by another process meanwhile (``ok`` and ``skipped``) or left to another
    process that is extracting it (``busy``)."""

    id: str
    ok: bool
    error: str = ""
    frames: int = 0
    video_frames_cut: int = 0
    label_frames_cut: int = 0
    skipped: bool = False
    busy: bool = False


def resample_labels(labels: np.ndarray, label_fps: float, fps: float) -> np.ndarray:
    """Labels ``[L]`` at ``label_fps`` resampled to ``fps`` by nearest timestamp: output frame
    ``i`` takes label ``round(i * label_fps / fps)``, exactly as frames are resampled."""
    from actrec.io.video import resample_indices

    labels = np.asarray(labels)
    if abs(label_fps - fps) < 1e-9:
        return labels.copy()
    return labels[resample_indices(labels.shape[0], label_fps, fps)]


def labels_digest(labels: np.ndarray) -> str:
    """sha256 of a video's per-frame labels as its dataset gives them (int64, at the label
    rate, before any resampling or cut): what a store records of them, so that a corrected
    annotation file is noticed."""
    from actrec.io.integrity import array_digest

    return array_digest(labels, "int64")


def reads_video_rate(extractor: FeatureExtractor) -> bool:
    """Whether ``extractor`` is fed the video at its own rate, its rows kept at the label
    frames (it declares ``video_rate = True``; see the module docstring)."""
    return getattr(extractor, "video_rate", False) is True


def label_lookahead(source_index: np.ndarray, lookahead: int) -> int:
    """The look-ahead in label frames of features computed on a video's own frames with a
    look-ahead of ``lookahead`` of them and kept at the label frames read from source frames
    ``source_index`` (int ``[L]``, non-decreasing): the most label frames any label frame waits
    until a later one's source frame is ``lookahead`` frames past its own. Label frames whose
    future lies past the last label frame are flushed, as at any video's end, and do not count.
    Equal rates give ``lookahead``; 0 for a causal extractor."""
    src = np.asarray(source_index, dtype=np.int64)
    if lookahead <= 0 or src.size == 0:
        return 0
    reach = np.searchsorted(src, src + lookahead, side="left")
    inside = reach < src.size
    if not inside.any():
        return 0
    return int((reach - np.arange(src.size))[inside].max())


def rate_lookahead(lookahead: int, source_fps: float, label_fps: float) -> int:
    """``label_lookahead`` for any video read at ``source_fps`` under labels at ``label_fps``
    (over enough label frames for every phase of the two rates that matters)."""
    from actrec.io.video import resample_indices

    if lookahead <= 0:
        return 0
    frames = 20_000  # label frames: far more than a period of any two rates actrec meets
    needed = int(np.ceil(frames * source_fps / label_fps)) + lookahead + 1
    return label_lookahead(resample_indices(needed, source_fps, label_fps)[:frames], lookahead)


def prefetch(source: Iterator[np.ndarray], depth: int = 2) -> Iterator[np.ndarray]:
    """The items of ``source``, produced by a background thread up to ``depth`` ahead, so
    that decoding (which releases the GIL) overlaps the consumer's computation. An exception
    in ``source`` is raised here, at the point where its item would have come. Closing this
    generator early stops the thread at once (it waits only for an item being produced then)
    and closes ``source`` (a decoder lets go of its file)."""
    if depth <= 0:
        yield from source
        return
    items: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def put(item) -> bool:
        # Blocks while the queue is full: a close sets ``stop`` and then empties the queue,
        # so this returns at once and the stop is seen here (no polling).
        if stop.is_set():
            return False
        items.put(item)
        return not stop.is_set()

    def produce() -> None:
        try:
            for item in source:
                if not put((item, None)):
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
            put((done, exc))
            return
        finally:
            close = getattr(source, "close", None)
            if close is not None:
                with contextlib.suppress(Exception):  # the source's own clean-up: best effort
                    close()
        put((done, None))

    thread = threading.Thread(target=produce, name="actrec-decode", daemon=True)
    thread.start()
    try:
        while True:
            item, exc = items.get()
            if item is done:
                if exc is not None:
                    raise exc
                return
            yield item
    finally:
        stop.set()
        with contextlib.suppress(queue.Empty):  # room for the producer's pending put
            while True:
                items.get_nowait()
        thread.join()


# Containers whose header stores the frame count (AVI's frame total, MP4/MOV's sample table);
# for others (MKV, WebM, MPEG) OpenCV estimates it from the duration, which proves nothing.
_COUNTED_CONTAINERS = (".avi", ".mp4", ".m4v", ".mov")


def _header_frames(path: Path) -> int | None:
    """The frame count a video file's container header states (``None`` for a folder of
    frames or a container that stores none). decord counts the frames it can index, which for
    a truncated file is fewer than the header says: that difference is how truncation shows."""
    if not path.is_file() or path.suffix.lower() not in _COUNTED_CONTAINERS:
        return None
    from actrec.io.video import header_value

    count = header_value(path, "FRAME_COUNT")
    return int(count) if count is not None else None


@dataclass(frozen=True)
class _OpenedVideo:
    """A video opened and checked, ready to decode: what the length policy keeps (``keep``
    frames) and feeds to the extractor (``feed`` frames: ``keep`` plus its lookahead)."""

    task: VideoTask
    reader: Any
    labels: np.ndarray  # at the reader's rate, before the cut
    keep: int
    feed: int
    where: str
    # at the video's own rate (``reads_video_rate``): the source frame of each kept row, and
    # the features' look-ahead in label frames; None: frames and rows are the label frames
    rows: np.ndarray | None = None
    lookahead: int = 0


def _open(task: VideoTask, extractor: FeatureExtractor, options: HostOptions) -> _OpenedVideo:
    """Open ``task``'s video at the extractor's rate and apply the length policy (see the
    module docstring); ``DataError`` naming the video when that fails."""
    from actrec.io.video import open_video

    if task.path is None:
        why = task.missing_reason or "the dataset gives no video file for it"
        raise DataError(f"video {task.id!r}: {why}")
    if not task.label_fps > 0:
        raise DataError(f"video {task.id!r}: the dataset gives {task.label_fps} fps; expected > 0")
    fps = extractor.fps if extractor.fps is not None else task.label_fps
    # Labels that count the file's own frames take a near-rate file one frame per label;
    # labels that count time (VideoRecord.labels_by_time) have it resampled by timestamps.
    nominal = None if task.labels_by_time else task.label_fps
    reader = open_video(task.path, fps=fps, num_threads=options.decode_threads,
                        folder_fps=task.label_fps, nominal_fps=nominal)
    labels = resample_labels(task.labels, task.label_fps, reader.fps)
    n_video, n_labels = reader.num_frames, int(labels.shape[0])
    where = f"video {task.id!r} ({reader.path})"
    header = _header_frames(Path(task.path))
    if header is not None and header - reader.num_source_frames > max(1, header // 100):
        raise DataError(f"{where}: the decoder finds {reader.num_source_frames} frames but the "
                        f"file's header says {header} (truncated file?)")
    if n_video != n_labels and not (task.labels_cover_prefix and n_video > n_labels):
        gap = abs(n_video - n_labels) / reader.fps
        lengths = (f"{n_video} frames ({n_video / reader.fps:.1f} s) at {reader.fps:g} fps but "
                   f"{n_labels} labels at that rate")
        if task.label_fps != reader.fps:
            lengths += f" ({task.labels.shape[0]} at {task.label_fps:g} fps)"
        rate = _file_rate_advice(task, reader, options)
        if gap > options.max_length_gap:
            raise DataError(f"{where}: {lengths}: they differ by {gap:.1f} s, more than the "
                            f"{options.max_length_gap:g} s any length policy accepts (the wrong "
                            f"video for these labels, or a truncated file?){rate}")
        share = length_share_over(n_video, n_labels, options.max_length_share)
        if share is not None:
            raise DataError(f"{where}: {lengths}: they differ by {100 * share:.0f} % of the "
                            f"longer, more than the {100 * options.max_length_share:g} % any "
                            f"length policy accepts (labels at another frame rate than the "
                            f"video's? They are read at {task.label_fps:g} fps, the dataset's "
                            f"rate; --max-length-share raises the limit){rate}")
        if options.length_policy == "error":
            raise DataError(f"{where}: {lengths}; lengths must match (--length-policy error; "
                            f"'truncate' cuts both to the shorter)")
    keep = min(n_video, n_labels)
    ahead = extractor.checked_lookahead()
    if not reads_video_rate(extractor):
        feed = min(n_video, keep + ahead)  # the future the last kept frames would have seen
        return _OpenedVideo(task, reader, labels, keep, feed, where)
    # Every source frame up to the last kept label frame's, and its look-ahead after it.
    rows = reader.source_indices[:keep]
    lookahead = label_lookahead(reader.source_indices, ahead)
    if options.max_lookahead is not None and lookahead > options.max_lookahead:
        raise DataError(f"{where}: read at its own {reader.source_fps:g} fps, a look-ahead of "
                        f"{ahead} of its frames is {lookahead} label frame(s) at "
                        f"{task.label_fps:g} fps, more than the {options.max_lookahead} the "
                        f"feature store records (from the rates of the dataset's videos when "
                        f"it was made); extract it into another store")
    feed = min(reader.num_source_frames, int(rows[-1]) + 1 + ahead) if keep else 0
    return _OpenedVideo(task, reader, labels, keep, feed, where, rows, lookahead)


def _file_rate_advice(task: VideoTask, reader: Any, options: HostOptions) -> str:
    """``"; the file is 10 fps (54 frames for 54 labels): labels of every frame need
    -o fps=10"``: when the labels, read at the file's own rate instead of the dataset's, would
    pass the length checks, the rate the file's header states is the one the user needs (the
    dataset's ``fps`` option). ``""`` when the file has that rate already, is a frame folder
    (no rate of its own), or its frames do not fit the labels at any rate of its own."""
    from actrec.io.video import same_rate

    own, frames = float(getattr(reader, "container_fps", 0.0)), reader.num_source_frames
    labels = int(task.labels.shape[0])
    if (task.path is None or Path(task.path).is_dir() or not own > 0
            or same_rate(own, task.label_fps) or frames == 0):
        return ""
    fits = (abs(frames - labels) / own <= options.max_length_gap
            and length_share_over(frames, labels, options.max_length_share) is None)
    if not fits:
        return ""
    return (f"; the file is {own:g} fps ({frames} frames for {labels} labels): labels of every "
            f"frame need -o fps={own:g}")


def _decode(video: _OpenedVideo, batch_size: int) -> Iterator[np.ndarray]:
    """The ``feed`` frames of an opened video, ``batch_size`` at a time."""
    reader, feed = video.reader, video.feed
    read = reader.read if video.rows is None else reader.read_source
    for start in range(0, feed, batch_size):
        stop = min(start + batch_size, feed)
        batch = read(np.arange(start, stop))
        if batch.shape[0] != stop - start:  # the reader checks this too: never pass short
            raise DataError(f"{video.where}: decoded {batch.shape[0]} frames for "
                            f"{start}..{stop - 1}; the header says {reader.num_source_frames} "
                            f"(truncated file?)")
        yield batch


def _features(video: _OpenedVideo, extractor: FeatureExtractor,
              batches: Iterator[np.ndarray]) -> VideoFeatures:
    """Run ``extractor`` over an opened video's decoded ``batches``; its features, cut labels
    and attributes. ``DataError`` naming the video when the extractor fails or its output has
    the wrong shape or length (an error decoding a batch is raised as it comes)."""
    where, feed, keep, reader = video.where, video.feed, video.keep, video.reader
    pick = video.rows  # at the video's rate: the source frame of each kept row
    dim = extractor.dim()
    chunks: list[np.ndarray] = []
    rows = 0
    try:
        for out in extractor.extract(batches):
            out = np.asarray(out, dtype=np.float32)
            if out.ndim != 2 or out.shape[1] != dim:
                raise DataError(f"{where}: extractor '{extractor.name}' yielded a batch of shape "
                                f"{out.shape}, expected [B, {dim}]")
            if pick is None:
                chunks.append(out)
            else:  # only the label frames' rows are kept (a frame may be two label frames')
                lo, hi = np.searchsorted(pick, [rows, rows + out.shape[0]], side="left")
                chunks.append(out[pick[lo:hi] - rows])
            rows += out.shape[0]
    except ActrecError:
        raise
    except Exception as exc:  # noqa: BLE001 - a plugin's code: any class it may raise
        # an extractor's failure on this video's frames is this video's failure
        raise DataError(f"{where}: extractor '{extractor.name}' failed: "
                        f"{type(exc).__name__}: {exc}") from None
    if rows != feed:
        raise DataError(f"{where}: extractor '{extractor.name}' produced {rows} feature rows for "
                        f"{feed} frames")
    feats = np.concatenate(chunks, axis=0)[:keep] if chunks else np.zeros((0, dim), np.float32)
    task, n_video, n_labels = video.task, reader.num_frames, int(video.labels.shape[0])
    attrs = {
        "fps": reader.fps,
        "label_fps": float(task.label_fps),
        "labels_resampled": abs(task.label_fps - reader.fps) >= 1e-9,
        "source_fps": reader.source_fps,
        "container_fps": getattr(reader, "container_fps", reader.source_fps),
        "frame_size": list(reader.size),
        "participant": task.participant,
        "frames_cut": {"video": n_video - keep, "labels": n_labels - keep},
        # the dataset's labels as given (before resampling and the cut): a later run redoes
        # the video when they change (a corrected annotation file), see labels_digest
        "labels_digest": labels_digest(task.labels),
    }
    if pick is not None:  # the windows ran at the video's rate (module docstring)
        attrs.update(window_rate="video", window_fps=reader.source_fps,
                     lookahead=video.lookahead)
    return VideoFeatures(feats, video.labels[:keep].astype(np.int64), attrs,
                         video_frames_cut=n_video - keep, label_frames_cut=n_labels - keep)


def extract_video(
    task: VideoTask,
    extractor: FeatureExtractor,
    options: HostOptions = HostOptions(),
    *,
    on_start: Callable[[int], None] | None = None,
    on_frames: Callable[[int], None] | None = None,
) -> VideoFeatures:
    """Features, aligned labels and attributes for one video (see the module docstring for
    the frame rate and the length policy). ``on_start(frames)`` is called once the number of
    frames to decode is known, ``on_frames(n)`` after each decoded batch reaches the extractor.

    Raises ``DataError`` naming the video for a missing or undecodable file, a file yielding
    fewer frames than its header, lengths the policy refuses, or extractor output of the wrong
    shape.
    """
    video = _open(task, extractor, options)
    if on_start is not None:
        on_start(video.feed)

    def counted() -> Iterator[np.ndarray]:
        for batch in prefetch(_decode(video, options.batch_size), options.prefetch):
            yield batch
            if on_frames is not None:
                on_frames(int(batch.shape[0]))

    return _features(video, extractor, counted())


def process_task(
    task: VideoTask,
    extractor: FeatureExtractor,
    store: FeatureStore,
    options: HostOptions,
    *,
    on_start: Callable[[int], None] | None = None,
    on_frames: Callable[[int], None] | None = None,
) -> Outcome:
    """Extract ``task`` and write it to ``store``, holding its claim (``claim``): a video
    another process is extracting is left to it (``busy``), one another process wrote since the
    run was planned is ``skipped``. A ``DataError`` (and any actrec error) is this video's
    failure: returned as a failed ``Outcome``; a stale stored copy is removed then, so that
    nothing reads it. ``OSError`` while writing (disk full, permissions) is raised as a
    ``DataError`` naming the store: every other video would fail too."""
    outcomes: list[Outcome] = []
    process_tasks([task], extractor, store, options, on_done=outcomes.append,
                  on_start=None if on_start is None else lambda _, n: on_start(n),
                  on_frames=on_frames)
    return outcomes[0]


@dataclass
class _Job:
    """One claimed video on its way from the reader thread to the extractor: the open claim
    (closed by whoever holds the job last), the opened video or why it could not be opened."""

    task: VideoTask
    hold: contextlib.ExitStack
    video: _OpenedVideo | None = None
    error: BaseException | None = None
    cancel: threading.Event = field(default_factory=threading.Event)  # stop decoding it
    ended: bool = False  # its end marker was taken from the queue


def process_tasks(
    tasks: Iterable[VideoTask],
    extractor: FeatureExtractor,
    store: FeatureStore,
    options: HostOptions,
    *,
    on_done: Callable[[Outcome], None],
    on_start: Callable[[str, int], None] | None = None,
    on_frames: Callable[[int], None] | None = None,
    ahead: int = 2,
) -> None:
    """``process_task`` for every task of ``tasks`` in order, pipelined: an opener thread
    claims and opens the videos one after the other, a reader thread decodes them, running
    ahead into the next video while this thread extracts and writes the current one, so that
    the decoder is never idle at a video's end (its last batches, the store write, the next
    file's claim, opening and checks: those run beside the decoding of the video before).
    With ``ahead`` > 1 a writer thread writes each finished video while this thread goes on
    with the next one (a stop waits for a write under way, which is then reported too).

    ``tasks`` is consumed by the opener thread, which holds the claims of at most ``ahead``
    videos at once, the one being extracted included (``ahead=1``: the next task is taken
    when the previous one is done; decoding still overlaps extraction within each video).
    ``on_done(outcome)`` is called here for each task in order, after its claim is released;
    ``on_start(video_id, frames)`` when the extractor starts on a video, ``on_frames(n)`` after
    each batch reaches it. An error that is not a video's own (the store cannot be written,
    an unexpected exception) stops the threads, releases every claim and is raised here.
    Tunes this process's allocator for decoded batches (``actrec.io.video.keep_freed_batches``)."""
    from actrec.io.video import keep_freed_batches

    keep_freed_batches()
    ahead_slots = threading.Semaphore(max(1, ahead))  # videos claimed and not yet done
    room = threading.Semaphore(max(0, options.prefetch))  # batches queued beyond the first
    items: queue.SimpleQueue = queue.SimpleQueue()  # reader -> this thread
    opened: queue.SimpleQueue = queue.SimpleQueue()  # opener -> reader, in task order
    stop = threading.Event()

    def wait(slots: threading.Semaphore) -> bool:
        while not stop.is_set():
            if slots.acquire(timeout=0.1):
                return True
        return False

    def open_all() -> None:  # the opener thread
        try:
            for task in _taken(tasks, lambda: wait(ahead_slots)):
                hold = contextlib.ExitStack()
                try:
                    try:
                        mine = hold.enter_context(claim(store.path, task.id))
                        stored = mine and not (task.stale or task.overwrite) and store.has(task.id)
                    except OSError as exc:  # the store's folder: every other video fails too
                        raise _store_error(store, f"claim video {task.id!r}", exc) from None
                    if not mine:
                        hold.close()
                        opened.put(("done", Outcome(task.id, False, busy=True)))
                        continue
                    if stored:
                        hold.close()
                        opened.put(("done", Outcome(task.id, True, skipped=True)))
                        continue
                    job = _Job(task, hold)
                    try:
                        job.video = _open(task, extractor, options)
                    except Exception as exc:  # noqa: BLE001 - judged by the main thread
                        job.error = exc
                except BaseException:
                    hold.close()
                    raise
                opened.put(("video", job))  # the job, and its claim, are the reader's now
                if stop.is_set():
                    break
        except BaseException as exc:  # noqa: BLE001 - the run's error: raised in the main thread
            opened.put(("stop", exc))
            return
        opened.put(("stop", None))

    def read() -> None:  # the reader thread
        while True:
            try:
                kind, payload = opened.get(timeout=0.1)
            except queue.Empty:
                if stop.is_set():
                    return
                continue
            if kind != "video":  # a video that needs no decoding, or the end of the tasks
                items.put((kind, payload))
                if kind == "stop":
                    return
                continue
            job = payload
            items.put(("video", job))  # the job, and its claim, are the main thread's now
            if job.video is not None:
                try:
                    for batch in _decode(job.video, options.batch_size):
                        items.put(("batch", batch))
                        # One room taken per batch put, cancelled or not: the main
                        # thread gives one back per batch it takes.
                        if not wait(room) or job.cancel.is_set():
                            break
                except BaseException as exc:  # noqa: BLE001 - raised where the batch was due
                    items.put(("error", exc))
            items.put(("end", None))
            if stop.is_set():
                return

    opener = threading.Thread(target=open_all, name="actrec-open", daemon=True)
    reader = threading.Thread(target=read, name="actrec-decode", daemon=True)
    # With videos claimed ahead, a finished video is written by a writer thread while this
    # one goes on with the next (the write no longer holds the extractor up); its outcome,
    # and every call about the videos after it, wait for the write, so callers hear of the
    # videos in order. ahead=1 (a worker process: one video at a time) writes here.
    writer = None
    if ahead > 1:
        from concurrent.futures import ThreadPoolExecutor

        writer = ThreadPoolExecutor(1, thread_name_prefix="actrec-write")
    writing: list[_Job] = []  # jobs the writer holds, in order
    futures: list = []  # their writes: (future, set once its done-callback has run)
    # The calls made here, in order, while a write is pending: (call, args), or for a video
    # handed to the writer [job, outcome] (outcome None until its write ends)
    calls: list = []

    def in_order(call: Callable | None) -> Callable | None:
        if call is None:
            return None

        def ordered(*args) -> None:
            if calls:
                calls.append((call, args))
            else:
                call(*args)
        return ordered

    told, started, counted = in_order(on_done), in_order(on_start), in_order(on_frames)

    def done(outcome: Outcome) -> None:
        told(outcome)  # before the opener takes another task (a worker's parent hears of
        ahead_slots.release()  # this video's end first: there, nothing waits for a write)

    def write(job: _Job, result: VideoFeatures, fps: float) -> None:
        writing.append(job)
        calls.append([job, None])
        future = writer.submit(_store_result, job.task, store, result, fps)
        callback_done = threading.Event()
        futures.append((future, callback_done))

        def ended(future) -> None:  # on the writer thread: the video is done with
            try:
                job.hold.close()  # releases the claim, so the opener may take the next video
            except BaseException as exc:  # noqa: BLE001 - raised here, as it was written
                job.error = exc  # (an error in this callback would vanish, and the run,
            finally:  # waiting for this message, would hang)
                ahead_slots.release()
                items.put(("written", (job, future)))
                callback_done.set()

        future.add_done_callback(ended)

    def written(job: _Job, future) -> None:  # the writer's result, here
        writing.remove(job)
        outcome = future.result()  # (or the run-stopping error)
        if job.error is not None:  # its claim could not be released
            raise job.error
        next(entry for entry in calls if isinstance(entry, list) and entry[0] is job)[1] = \
            outcome
        while calls:  # what can be told now, in order
            head = calls[0]
            if isinstance(head, list):
                if head[1] is None:
                    return
                on_done(head[1])
            else:
                head[0](*head[1])
            calls.pop(0)

    opener.start()
    reader.start()
    end: Any = _running  # the reader's stop (None, or the run's error) once it came
    try:
        while end is _running or writing:
            kind, payload = items.get()
            if kind == "written":
                written(*payload)
                continue
            if kind == "stop":
                end = payload
                continue
            if kind == "video":
                job = payload
                try:
                    payload = _run_job(job, extractor, store,
                                       _batches_of(job, items, room, counted, written),
                                       started, write if writer is not None else None)
                except _RunStopped as stopped:  # a write's error, met while extracting
                    raise stopped.error from None
                finally:
                    try:
                        job.cancel.set()
                        while not job.ended:  # what is left of this video's batches
                            kind, left = items.get()
                            job.ended = kind == "end"
                            if kind == "batch":
                                room.release()
                            elif kind == "written":
                                written(*left)
                    finally:
                        if job not in writing:
                            job.hold.close()  # releases the claim (the writer's, after it)
                if payload is None:  # being written: its outcome comes with the write
                    continue
            done(payload)
        if end is not None:
            raise end
    finally:
        stop.set()
        opener.join()
        reader.join()
        if writer is not None:  # a write under way ends (whole, or not at all), those not
            writer.shutdown(wait=False, cancel_futures=True)  # begun are dropped
            # Waited for on the futures, not by joining the thread (shutdown's wait): an
            # interrupt (a second Ctrl-C) in Thread.join marks a thread still running as
            # stopped on Python 3.11 (bpo-45274's handling), so the interpreter would not
            # wait for it at exit and would cut the write off, its claim never released.
            # Interrupted here, the write still ends at exit and releases its claim.
            from concurrent.futures import wait as wait_for

            wait_for([f for f, _ in futures if not f.cancelled()])  # (a cancelled one is
            # never done for wait: it would wait forever)
            for _, callback_done in futures:  # and for their claims' release (wait returns
                callback_done.wait()  # before a future's callbacks run; a cancelled one's
                # ran in shutdown)
            # Every write and its claim's release are over: the idle thread is joined, so
            # none outlives this call (an interrupt here cuts off nothing).
            writer.shutdown(wait=True)
        for left in (items, opened):  # jobs handed over that never ran
            while not left.empty():
                kind, payload = left.get()
                if kind == "video":
                    payload.hold.close()
                elif kind == "written" and not payload[1].cancelled() and \
                        payload[1].exception() is None and payload[0].error is None:
                    written(*payload)  # stopped, but the store has it: said, in order


_running = object()


class _RunStopped(BaseException):
    """A write's run-stopping error met while the next video was being extracted: carried
    through the extractor (which turns ``Exception`` into that video's failure) to the
    host's loop, which raises ``error``."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


def _taken(tasks: Iterable[VideoTask], ready: Callable[[], bool]) -> Iterator[VideoTask]:
    """The tasks of ``tasks``, each asked for only once ``ready()`` (``False``: stop)."""
    source = iter(tasks)
    while ready():
        task = next(source, None)
        if task is None:
            return
        yield task


def _batches_of(job: _Job, items: queue.SimpleQueue, room: threading.Semaphore,
                on_frames: Callable[[int], None] | None,
                on_written: Callable[..., None]) -> Iterator[np.ndarray]:
    """The decoded batches of ``job``'s video as the reader queues them; a decoding error is
    raised where its batch was due. An earlier video's write that ends meanwhile is handed
    to ``on_written`` (its error raised as ``_RunStopped``)."""
    while True:
        kind, payload = items.get()
        if kind == "end":
            job.ended = True
            return
        if kind == "error":
            raise payload
        if kind == "written":
            try:
                on_written(*payload)
            except Exception as exc:  # noqa: BLE001 - not this video's: the run's
                raise _RunStopped(exc) from None
            continue
        room.release()
        yield payload
        if on_frames is not None:
            on_frames(int(payload.shape[0]))


def _run_job(job: _Job, extractor, store, batches: Iterator[np.ndarray],
             on_start, write=None) -> Outcome | None:
    """Extract ``job``'s video and write it: its outcome, or ``None`` when it was handed to
    ``write(job, result, fps)`` (its outcome comes from the writer)."""
    task = job.task
    try:
        if job.error is not None:
            raise job.error
        if on_start is not None:
            on_start(task.id, job.video.feed)
        result = _features(job.video, extractor, batches)
        fps = result.attrs.pop("fps")
    except ActrecError as exc:
        message = str(exc)
        if task.stale:
            try:
                store.remove(task.id)
            except ClaimLost:  # taken over meanwhile: the taker redoes it
                return Outcome(task.id, False, busy=True)
            message += (" (its stored copy was damaged or made from another file, and was "
                        "removed)")
        return Outcome(task.id, False, error=message)
    if write is not None:
        write(job, result, fps)
        return None
    return _store_result(task, store, result, fps)


def _store_result(task: VideoTask, store, result: VideoFeatures, fps: float) -> Outcome:
    """Write one video's features: its outcome (written, taken over by another process, or
    refused by the store); an ``OSError`` of the store is raised as the run-stopping
    ``DataError`` (``_store_error``)."""
    try:
        store.write_video(task.id, result.features, result.labels, fps=fps, source=task.path,
                          extra=result.attrs)
    except ClaimLost:  # another process took the video over (this one was silent): its to do
        return Outcome(task.id, False, busy=True)
    except ActrecError as exc:
        return Outcome(task.id, False, error=str(exc))
    except OSError as exc:
        raise _store_error(store, f"write video {task.id!r}", exc) from None
    return Outcome(task.id, True, frames=int(result.features.shape[0]),
                   video_frames_cut=result.video_frames_cut,
                   label_frames_cut=result.label_frames_cut)


def _store_error(store, what: str, exc: OSError) -> DataError:
    """The run-stopping error for an ``OSError`` of the store's own files (disk full,
    permissions, a file where a folder should be): names the store, what failed and why."""
    where = f" ({exc.filename})" if exc.filename and exc.strerror else ""
    return DataError(f"feature store {store.path}: cannot {what}: {exc.strerror or exc}{where}")
