"""Feature extraction: decode every video of a dataset, run an extractor, fill a feature store.

The host owns decoding, batching, resuming, progress and writing; an extractor only maps frames
to features (``actrec.plugin_api.FeatureExtractor``). One video's work (frame rate, length
policy, background decoding) is ``actrec.extract_video``; running it in ``--workers N``
processes is ``actrec.extract_workers``. This module plans the run (which videos, which
shard, which are already done) and reports it.

A stored video counts as done only while it is intact (its chunk files as written, see
``FeatureStore.damage``) and its source video has the size and mtime recorded at extraction
(unless the store is trusted); otherwise it is extracted again and the report says why.
Videos are written atomically, so a run killed at any point leaves only whole videos, and
running it again gives the store an uninterrupted run would have written.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from actrec.errors import ConfigError, DataError
from actrec.extract_video import (
    CUT_LABELS,
    CUT_VIDEO,
    LENGTH_POLICIES,
    HostOptions,
    VideoTask,
    extract_video,
    rate_lookahead,
    reads_video_rate,
    resample_labels,
)
from actrec.io.remote import StoreURL, store_location

if TYPE_CHECKING:  # pragma: no cover
    from rich.progress import Progress

    from actrec.plugin_api import DatasetIndex, FeatureExtractor

__all__ = [
    "ExtractInterrupted",
    "ExtractReport",
    "ExtractStopped",
    "HostOptions",
    "extract_features",
    "extract_video",
    "in_shard",
    "parse_shard",
    "resample_labels",
]


@dataclass(frozen=True)
class ExtractReport:
    """What one extraction run did: videos written, skipped (already stored) and failed.
    ``redone_damaged`` and ``redone_changed`` name the stored videos that were extracted
    again (they are in ``written`` or ``failed`` too) because their stored copy was damaged
    or their source video or its labels changed, each with what was wrong. ``relabelled``
    names the stored videos whose labels alone changed (the same file, extractor and rows):
    their labels were rewritten and their features kept, not extracted again. ``busy`` names the
    videos another live process (another ``actrec extract`` on this store) still held when the
    run ended without waiting for it (``wait_busy=False``). ``cut``
    lists the written videos whose video and labels disagreed in length, with the frames the
    length policy cut from each; ``frames`` counts the frames written, ``seconds`` the run's
    wall time. ``stopped`` says why the run stopped before the end (the store could not be
    written: a full disk, permissions; a signal), ``not_done`` the videos it then left undone
    (``in_progress``: those of them being extracted when it stopped); ``interrupted`` names
    the signal (``SIGINT``, ``SIGTERM``) when a signal stopped it."""

    written: tuple[str, ...]
    skipped: tuple[str, ...]
    failed: tuple[tuple[str, str], ...]  # (video id, error message)
    store: Path | StoreURL
    redone_damaged: tuple[tuple[str, str], ...] = ()  # (video id, what was damaged)
    redone_changed: tuple[tuple[str, str], ...] = ()  # (video id, what changed: file, labels)
    relabelled: tuple[tuple[str, str], ...] = ()  # (video id, why): labels rewritten only
    busy: tuple[str, ...] = ()  # left to another process that was extracting them
    cut: tuple[tuple[str, int, int], ...] = ()  # (video id, video frames cut, label frames cut)
    frames: int = 0
    seconds: float = 0.0
    workers: int = 1
    shard: tuple[int, int] | None = None
    length_policy: str = "truncate"
    stopped: str = ""  # why the run stopped early ("" when it ran to the end)
    not_done: tuple[str, ...] = ()  # videos left undone because it stopped
    interrupted: str = ""  # the signal that stopped the run ("" when none did)
    in_progress: tuple[str, ...] = ()  # of not_done, those being extracted when it stopped

    @property
    def ok(self) -> bool:
        return not self.failed and not self.stopped

    @property
    def frames_cut(self) -> dict[str, int]:
        """Frames cut by the length policy, in total, by what was cut (as the importer counts
        its repairs)."""
        totals = {CUT_VIDEO: sum(v for _, v, _ in self.cut),
                  CUT_LABELS: sum(lab for _, _, lab in self.cut)}
        return {k: v for k, v in totals.items() if v}

    def to_dict(self) -> dict[str, Any]:
        return {
            "store": str(self.store),
            "written": list(self.written),
            "skipped": list(self.skipped),
            "failed": [{"video": v, "error": e} for v, e in self.failed],
            "redone_damaged": [{"video": v, "damage": d} for v, d in self.redone_damaged],
            "redone_changed": [{"video": v, "change": c} for v, c in self.redone_changed],
            "relabelled": [{"video": v, "change": c} for v, c in self.relabelled],
            "busy": list(self.busy),
            "length_policy": self.length_policy,
            "frames_cut": self.frames_cut,
            "cut": [{"video": v, "video_frames": a, "label_frames": b} for v, a, b in self.cut],
            "frames": self.frames,
            "seconds": self.seconds,
            "frames_per_second": self.frames / self.seconds if self.seconds > 0 else None,
            "workers": self.workers,
            "shard": f"{self.shard[0]}/{self.shard[1]}" if self.shard else None,
            "stopped": self.stopped or None,
            "not_done": list(self.not_done),
            "interrupted": self.interrupted or None,
            "in_progress": list(self.in_progress),
        }


class ExtractStopped(DataError):
    """The run stopped before the end because the store could not be written (a full disk,
    permissions, a lost connection); ``report`` is what it did until then: the videos written
    are intact and kept, the one being written when it stopped is among ``failed``, the rest
    are ``not_done``. No claim of this run is left."""

    def __init__(self, report: ExtractReport) -> None:
        kept = len(report.written) + len(report.skipped)
        super().__init__(f"{report.stopped}; the run stopped with {len(report.not_done)} "
                         f"video(s) not done ({kept} done are kept): fix that, then run the "
                         f"command again to do the rest")
        self.report = report


class ExtractInterrupted(BaseException):
    """The run was stopped by a signal: Ctrl-C (``SIGINT``) or ``SIGTERM`` (a batch scheduler,
    ``kill``). ``report`` is what it did until then, as for ``ExtractStopped``: the videos
    written are whole and kept, the ones being extracted are among ``not_done`` (their
    unfinished writes removed), no claim of this run is left. ``signal`` names the signal,
    ``exit_code`` is the conventional status (130, 143).

    Raised as ``KeyboardInterrupt`` for SIGINT and as ``SystemExit(143)`` for SIGTERM (see
    ``interrupted``), so a caller that does not catch it ends as it would have without it."""

    def __init__(self, report: ExtractReport, exit_code: int) -> None:
        super().__init__(exit_code)  # SystemExit's ``code``
        self.report = report
        self.signal = report.interrupted
        self.exit_code = exit_code

    def __str__(self) -> str:
        report = self.report
        kept = len(report.written) + len(report.skipped)
        return (f"{report.stopped[:1].upper()}{report.stopped[1:]}: {len(report.not_done)} "
                f"video(s) not done ({kept} done are kept); run the command again to do the "
                f"rest")


class _CtrlC(ExtractInterrupted, KeyboardInterrupt):
    pass


class _Terminated(ExtractInterrupted, SystemExit):
    pass


_SIGNALS = {"SIGINT": "SIGINT (Ctrl-C)", "SIGTERM": "SIGTERM"}


def parse_shard(text: str | tuple[int, int] | None) -> tuple[int, int] | None:
    """``"i/n"`` (1 <= i <= n) as ``(i, n)``; ``ConfigError`` naming ``--shard`` otherwise."""
    if text is None or isinstance(text, tuple):
        if text is not None and not (isinstance(text[0], int) and isinstance(text[1], int)
                                     and 1 <= text[0] <= text[1]):
            raise ConfigError(f"--shard: expected (i, n) with 1 <= i <= n, got {text!r}")
        return text
    i, sep, n = str(text).partition("/")
    if not (sep and i.strip().isdigit() and n.strip().isdigit()
            and 1 <= int(i) <= int(n)):
        raise ConfigError(f"--shard: expected I/N with 1 <= I <= N (shard I of N, e.g. 2/4), "
                          f"got {text!r}")
    return int(i), int(n)


def in_shard(video_id: str, shard: tuple[int, int] | None) -> bool:
    """Whether ``video_id`` belongs to shard ``(i, n)``: by a hash of the id alone, so that
    every machine agrees whatever list of videos (split, order) it was given."""
    if shard is None:
        return True
    i, n = shard
    digest = hashlib.sha1(video_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % n == i - 1


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
    workers: int = 1,
    shard: str | tuple[int, int] | None = None,
    device: str = "cpu",
    length_policy: str = "truncate",
    max_length_gap: float = 5.0,
    stream: str | None = None,
    wait_busy: bool = True,
    max_length_share: float = 0.2,
) -> ExtractReport:
    """Extract features for ``video_ids`` (default: every video of ``index``) into the store
    at ``store_path`` (created if needed; see ``FeatureStore.open_or_create`` for when an
    existing store is refused, e.g. one filled from another ``source``). The store records
    ``source`` and the dataset's background classes (``index.background_classes``).
    ``stream`` names the stream of the store these features are (see ``actrec.io.features``;
    ``None``: the store's own).

    Videos already complete in the store are skipped unless ``overwrite``, unless their
    chunk files are damaged (missing or resized) or, without ``trust_store``, their source
    file's path, size or mtime, or the dataset's labels for them (a corrected annotation
    file), differ from what was recorded when they were extracted: those are extracted again
    (``redone_damaged``, ``redone_changed``); if that fails, the stale copy is removed, so
    that nothing reads it. A video that fails (no file, an undecodable or
    truncated file, lengths the ``length_policy`` refuses, see ``actrec.extract_video``) is
    reported in ``failed`` with its message and the others continue.

    ``workers`` > 1 runs that many processes, each taking its share of the CPU cores as
    threads; ``shard=(i, n)`` (or ``"i/n"``) keeps only the videos of shard ``i`` of ``n``
    (``in_shard``); ``device`` is given to the extractor (``cpu``, ``cuda``, ``cuda:N``,
    ``auto``). ``progress``, if given, gets a task for the videos, one for the frames (its
    description shows frames per second) and one per video being extracted; ``None`` runs
    silently.

    ``store_path`` may be a URL (``s3://bucket/store.zarr``, see ``actrec.io.remote``). Any
    number of runs, on any machines, may fill one store: each video is claimed first
    (``actrec.extract_claims``), so it is extracted once; a video another live process holds
    is waited for (``wait_busy``; else reported in ``busy``), a claim whose holder is gone is
    taken over. The run records itself, and each failure, in the store for
    ``actrec.extract_status``.

    ``ExtractStopped`` (a ``DataError``, with the report so far) when the store cannot be
    written while the run goes on (a full disk, permissions): every other video would fail
    too, so the run stops, releases its claims and keeps the videos already written.
    ``ExtractInterrupted`` (a ``KeyboardInterrupt`` for Ctrl-C, a ``SystemExit(143)`` for
    SIGTERM in the main thread) with the report so far when a signal stops the run: the same
    clean-up, and the videos written until then are in ``report.written``.
    """
    from actrec.extract_claims import lease_seconds
    from actrec.extract_workers import Terminated, check_device, sigterm_as_exit

    store_path = store_location(store_path)
    lease = lease_seconds()  # a bad ACTREC_CLAIM_LEASE is refused before any work

    lookahead = extractor.checked_lookahead()  # before anything is written
    video_rate = reads_video_rate(extractor)
    if video_rate:
        if extractor.fps is not None:
            raise ConfigError(f"extractor '{extractor.name}': windows at the video's own rate "
                              f"keep a row per label frame; a frame rate ({extractor.fps:g} fps) "
                              f"cannot be set as well")
        lookahead = dataset_lookahead(index, lookahead)  # in label frames, what the store says
    if length_policy not in LENGTH_POLICIES:
        raise ConfigError(f"--length-policy: expected one of {', '.join(LENGTH_POLICIES)}, got "
                          f"{length_policy!r}")
    if not max_length_gap >= 0:
        raise ConfigError(f"--max-length-gap: expected seconds >= 0, got {max_length_gap!r}")
    if not 0 <= max_length_share <= 1:
        raise ConfigError(f"--max-length-share: expected a fraction in [0, 1], got "
                          f"{max_length_share!r}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"--workers: expected an integer >= 1, got {workers!r}")
    if batch_size < 1:
        raise ConfigError(f"--batch-size: expected an integer >= 1, got {batch_size!r}")
    shard = parse_shard(shard)
    devices = check_device(device, workers)
    ids = list(index.videos) if video_ids is None else list(dict.fromkeys(video_ids))
    unknown = [v for v in ids if v not in index.videos]
    if unknown:
        listed = ", ".join(map(repr, unknown[:5])) + (" ..." if len(unknown) > 5 else "")
        raise DataError(f"dataset '{index.name}' has no video(s) {listed}")
    ids = [v for v in ids if in_shard(v, shard)]
    started = time.perf_counter()
    since = time.time()  # what the store's videos record as their write time (written_at)
    plan = _Plan()
    signal_name = ""
    with sigterm_as_exit():  # SIGTERM stops the run as Ctrl-C does, with its report
        try:
            _run(plan, index, extractor, store_path, ids, source, lookahead, progress,
                 store_args={"dataset": dataset_ref, "split_scheme": split_scheme,
                             "dtype": dtype, "stream": stream},
                 overwrite=overwrite, trust_store=trust_store, workers=workers, shard=shard,
                 devices=devices, lease=lease, wait_busy=wait_busy,
                 options=HostOptions(batch_size=batch_size, length_policy=length_policy,
                                     max_length_gap=float(max_length_gap),
                                     max_length_share=float(max_length_share),
                                     max_lookahead=lookahead if video_rate else None))
        except KeyboardInterrupt:
            signal_name = "SIGINT"
        except Terminated:
            signal_name = "SIGTERM"
    if signal_name:
        plan.stopped = f"interrupted by {_SIGNALS[signal_name]}"
    if plan.stopped:
        _written_unheard(plan, store_path, since)
    outcomes = [plan.results[t.id] for t in plan.tasks if t.id in plan.results]
    with contextlib.suppress(OSError):
        if plan.run is not None:  # None: stopped at its start
            plan.run.finish(written=sum(o.ok and not o.skipped for o in outcomes),
                            skipped=len(plan.skipped) + sum(o.skipped for o in outcomes),
                            failed=sum(not o.ok and not o.busy for o in outcomes),
                            busy=sum(o.busy for o in outcomes), stopped=plan.stopped)
    done = set(plan.skipped) | set(plan.results) | {v for v, _ in plan.relabelled}
    report = ExtractReport(
        written=tuple(o.id for o in outcomes if o.ok and not o.skipped),
        skipped=tuple(plan.skipped) + tuple(o.id for o in outcomes if o.skipped),
        busy=tuple(o.id for o in outcomes if o.busy),
        failed=tuple((o.id, o.error) for o in outcomes if not o.ok and not o.busy),
        store=store_path,
        redone_damaged=tuple(plan.damaged),
        redone_changed=tuple(plan.changed),
        relabelled=tuple(plan.relabelled),
        cut=tuple((o.id, o.video_frames_cut, o.label_frames_cut) for o in outcomes
                  if o.ok and (o.video_frames_cut or o.label_frames_cut)),
        frames=sum(o.frames for o in outcomes if o.ok),
        seconds=time.perf_counter() - started,
        workers=workers,
        shard=shard,
        length_policy=length_policy,
        stopped=plan.stopped,
        not_done=tuple(v for v in ids if v not in done) if plan.stopped else (),
        interrupted=signal_name,
        in_progress=tuple(v for v in ids if v in plan.started and v not in done)
        if plan.stopped else (),
    )
    if signal_name:
        raise _interrupted_error(report) from None
    if plan.stopped:
        raise ExtractStopped(report)
    return report


@dataclass
class _Plan:
    """What a run planned and did so far (filled by ``_run`` as it goes, so that a run
    stopped at any point can still report it)."""

    skipped: list[str] = field(default_factory=list)
    damaged: list[tuple[str, str]] = field(default_factory=list)
    changed: list[tuple[str, str]] = field(default_factory=list)
    relabelled: list[tuple[str, str]] = field(default_factory=list)
    tasks: list[VideoTask] = field(default_factory=list)
    results: dict[str, Any] = field(default_factory=dict)  # video id -> Outcome
    started: set[str] = field(default_factory=set)  # videos the extractor started on
    run: Any = None  # its RunRecord in the store
    stopped: str = ""


def _run(plan: _Plan, index, extractor, store_path, ids: list[str], source, lookahead: int,
         progress, *, store_args: dict[str, Any], overwrite: bool, trust_store: bool,
         workers: int, shard, devices: list[str], lease: float, wait_busy: bool,
         options: HostOptions) -> None:
    """``extract_features``' work, recorded in ``plan``: open the store, plan the videos, run
    them; a store that cannot be written sets ``plan.stopped``."""
    from actrec.extract_status import clear_failure, record_failure, start_run
    from actrec.extract_workers import WorkerSpec, run_tasks, thread_share
    from actrec.io.features import FeatureStore
    from actrec.io.integrity import source_change

    config = recorded_config(store_path, extractor, store_args.get("stream"))
    if source is not None and source.get("extractor_config") == extractor.config.to_dict():
        source = {**source, "extractor_config": config}

    def open_store():
        try:
            return FeatureStore.open_or_create(
                store_path,
                classes=index.classes,
                splits={name: {"train": s.train, "test": s.test}
                        for name, s in index.splits.items()},
                extractor=extractor.name,
                extractor_config=config,
                lookahead=lookahead,
                background=index.background_classes,
                source=source,
                **store_args,
            )
        except OSError as exc:
            raise store_write_error(store_path, "create or open it", exc) from None

    # A new store (a folder or a URL) is made once the extractor is set up (run_tasks'
    # on_ready): an extractor that cannot start (its setup or dim() fails) leaves no empty
    # store behind. It is made where it is asked for (open_or_create), so its path is known
    # now; an existing one is opened (and checked) before any extractor is loaded.
    store = None if ids and _made_once_ready(store_path) else open_store()
    where = store_path if store is None else store.path
    missing = getattr(index, "missing_videos", None) or {}
    for vid in ids:
        record = index.videos[vid]
        stale = False
        if not overwrite and store is not None and store.has(vid):
            problems = store.damage(vid)
            attrs = store.video_attrs(vid)
            change = None if trust_store or problems else (
                source_change(attrs.get("source"), record.path)
                or _pairing_change(attrs, float(record.fps), bool(record.labels_by_time)))
            relabel = None if trust_store or problems or change else \
                _labels_change(attrs, record.labels, store, vid)
            if relabel is not None:  # the labels alone: rewritten where the rows stay
                why, labels = relabel
                if labels is not None and _rewrite_labels(store, vid, attrs, record.labels,
                                                          labels):
                    plan.relabelled.append((vid, why + "; its labels were rewritten, its "
                                                      "features kept"))
                    continue
                change = why
            if problems:
                plan.damaged.append((vid, "; ".join(problems)))
            elif change:
                plan.changed.append((vid, change))
            else:
                plan.skipped.append(vid)
                continue
            stale = True
        plan.tasks.append(VideoTask(vid, record.path, record.labels, float(record.fps),
                                    record.participant, stale, overwrite, missing.get(vid),
                                    labels_by_time=bool(record.labels_by_time),
                                    labels_cover_prefix=bool(record.labels_cover_prefix)))
    tasks, results = plan.tasks, plan.results

    view = _ProgressView(progress, len(ids), len(plan.skipped), tasks, extractor)

    def record_run() -> None:
        try:
            plan.run = start_run(where, ids, shard, workers, extractor.name)
        except OSError as exc:  # a store that cannot take a small file takes no video either
            plan.stopped = str(store_write_error(where, "record this run", exc))

    def ready() -> None:  # the extractor is set up: make the store, record the run
        nonlocal store
        if store is not None:
            return
        try:
            store = open_store()
        except DataError as exc:  # raised as it was before the extractor was set up
            raise _NotMade(exc) from None
        record_run()
        if plan.stopped:
            raise DataError(plan.stopped)

    if store is not None:
        record_run()

    def emit(event) -> None:
        from actrec.extract_workers import Finished, Started

        if isinstance(event, Started):
            plan.started.add(event.video)
        elif isinstance(event, Finished):
            outcome = results[event.outcome.id] = event.outcome
            with contextlib.suppress(OSError):  # only --status's loss (a full disk)
                if not outcome.ok and not outcome.busy:
                    record_failure(where, outcome.id, outcome.error, shard)
                elif outcome.ok:
                    clear_failure(where, outcome.id)
        view.update(event)

    processes = max(1, min(workers, len(tasks)))  # no more processes than videos to do
    spec = WorkerSpec(type(extractor), extractor.config, where, options,
                      threads=thread_share(processes))
    saved_shard = os.environ.get(_SHARD_VAR)
    if shard:  # recorded in each claim (workers inherit the environment)
        os.environ[_SHARD_VAR] = f"{shard[0]}/{shard[1]}"
    try:
        # in this process, the caller's extractor itself does the work
        if not plan.stopped:
            run_tasks(tasks, spec, devices[:processes], emit, extractor=extractor,
                      on_ready=ready)
        busy = [t for t in tasks if t.id in results and results[t.id].busy]
        while busy and wait_busy and not plan.stopped:  # held by others: wait until released
            free = _wait_for_claims(where, busy, lease, view)  # or stale, then retry
            run_tasks(free, spec, devices[:max(1, min(processes, len(free)))], emit,
                      extractor=extractor)
            busy = [t for t in busy if results[t.id].busy]
    except ExtractStopped:
        raise
    except _NotMade as exc:
        raise exc.error from None
    except DataError as exc:  # the store cannot be written: the report so far, then stop
        plan.stopped = str(exc)
    finally:
        view.close()
        if saved_shard is None:
            os.environ.pop(_SHARD_VAR, None)
        else:
            os.environ[_SHARD_VAR] = saved_shard
        from actrec.extract_claims import release_claims

        if store is not None:
            release_claims(where)


def _made_once_ready(store_path: Path | StoreURL) -> bool:
    """Whether nothing is at ``store_path`` yet, so that its store can be made once the
    extractor is set up. ``False`` at a URL whose bucket does not exist: the store is then
    tried at once and the bucket refused before an extractor is loaded for nothing."""
    if store_path.exists():  # DataError when a URL cannot be reached: said before setup too
        return False
    if isinstance(store_path, StoreURL):
        from actrec.io.remote_store import missing_bucket

        return missing_bucket(store_path) is None
    return True


class _NotMade(Exception):
    """The store could not be made once the extractor was ready: ``error`` is raised as
    ``extract_features`` raised it when it made the store first."""

    def __init__(self, error: DataError) -> None:
        super().__init__(str(error))
        self.error = error


def recorded_config(store_path, extractor: FeatureExtractor,
                    stream: str | None = None) -> dict[str, Any]:
    """``extractor``'s config as the store at ``store_path`` records it: its options, less
    those an existing store made by this extractor does not record and that are at their
    default (options added to the extractor since: the store's features were computed as
    the default computes them), so that the store still opens; any other difference is
    refused by the store as before. A new store records every option."""
    from actrec.io.features import FeatureStore

    config = extractor.config.to_dict()
    try:
        store = FeatureStore.open(store_path)
        if stream is not None and stream != store.stream_name:
            store = store.stream(stream)
        attrs = store.attrs
    except Exception:  # noqa: BLE001 - none yet, or unreadable (a remote store): the store
        return config  # says why when it is opened for the run
    recorded = attrs.get("extractor_config")
    if attrs.get("extractor") != extractor.name or not isinstance(recorded, dict):
        return config
    try:
        defaults = type(extractor.config)().to_dict()
    except Exception:  # noqa: BLE001 - a plugin's Config without defaults: record it all
        return config
    return {k: v for k, v in config.items()
            if k in recorded or k not in defaults or v != defaults[k]}


def dataset_lookahead(index: DatasetIndex, lookahead: int) -> int:
    """The look-ahead in label frames of an extractor fed each video at its own rate with a
    look-ahead of ``lookahead`` video frames (``actrec.extract_video.rate_lookahead``): the
    largest over every video of ``index`` (all of them, not one run's share, so that every run
    and shard records the same), read at the rate the host reads it (a file's own, or its label
    rate where it is a rounding of that; a frame folder's is its label rate). Only the file
    headers are read; a file without a readable rate is left out (its extraction fails, or is
    refused if its rate makes its features look further)."""
    from actrec.io.video import same_rate

    if lookahead <= 0:
        return 0
    rates: set[tuple[float, float]] = set()
    for record in index.videos.values():
        label_fps = float(record.fps)
        if record.path is None or not label_fps > 0:
            continue
        path = Path(record.path)
        source = label_fps if path.is_dir() else _container_fps(path)
        if source is None:
            continue
        if not record.labels_by_time and same_rate(source, label_fps):
            source = label_fps  # one frame per label (actrec.io.video.open_video)
        rates.add((source, label_fps))
    return max((rate_lookahead(lookahead, s, lab) for s, lab in rates), default=lookahead)


def _container_fps(path: Path) -> float | None:
    """The frame rate a video file's header states (``None`` when none is readable)."""
    from actrec.io.video import header_value

    return header_value(path, "FPS")


_LABELS_CHANGED = "its labels changed since it was extracted (the dataset's annotations differ)"


def _labels_change(attrs: dict[str, Any], labels, store, video_id: str
                   ) -> tuple[str, Any] | None:
    """Whether the dataset's ``labels`` of stored video ``video_id`` differ from those it was
    extracted with (a corrected annotation file): ``None`` when they do not, else ``(what
    changed, in words, the labels of its stored rows under the new labels or None when its
    rows would change too: see ``_labels_at_rows``)``. Compared by the digest the store
    recorded of the dataset's labels, or for a store written before it recorded one, by the
    stored label array (its recorded digest, or the array itself) against the new labels at
    its rows; a store that recorded neither a digest nor enough to place the rows is taken as
    unchanged, as before."""
    from actrec.extract_video import labels_digest
    from actrec.io.integrity import array_digest, recorded_digest

    recorded = attrs.get("labels_digest")
    if recorded is not None and recorded == labels_digest(labels):
        return None
    at_rows = _labels_at_rows(attrs, labels)
    if recorded is None:  # written before the digest: its label array says
        if at_rows is None:
            return None
        stored = recorded_digest(attrs, "labels")
        if stored is not None:
            if stored == array_digest(at_rows, "int64"):
                return None
        elif np.array_equal(store.read(video_id)[1], at_rows):
            return None
    return _LABELS_CHANGED, at_rows


def _labels_at_rows(attrs: dict[str, Any], labels) -> Any:
    """The labels the rows of a video stored with ``attrs`` take under the dataset's
    ``labels`` (int64 ``[T]``: resampled to its rate and cut as the length policy cut them),
    or ``None`` when they would change its rows (labels of another length: the length policy
    judges them anew on the video, so it is extracted again) or ``attrs`` lack what places
    them (its rate, the labels' rate, the frames cut)."""
    fps, label_fps = attrs.get("fps"), attrs.get("label_fps")
    cut, rows = attrs.get("frames_cut"), attrs.get("num_frames")
    if fps is None or label_fps is None or rows is None or not isinstance(cut, dict):
        return None
    at_rate = resample_labels(np.asarray(labels), float(label_fps), float(fps))
    if at_rate.shape[0] != int(rows) + int(cut.get("labels") or 0):
        return None
    return at_rate[:int(rows)].astype(np.int64)


# attributes write_video sets itself; the others a stored video keeps when relabelled
_WRITTEN = ("id", "fps", "num_frames", "dim", "extractor", "extractor_config", "causal",
            "source", "written_at", "integrity", "complete")


def _rewrite_labels(store, video_id: str, attrs: dict[str, Any], labels, at_rows) -> bool:
    """Write stored video ``video_id`` again with its features as stored and labels
    ``at_rows`` (the dataset's ``labels`` at its rows), recording their digest; under the
    video's claim, atomically as any write. ``False`` (nothing written) when another process
    holds the claim, took it over, the store refuses or cannot be written: the video is then
    extracted as any changed one."""
    from actrec.extract_claims import ClaimLost, claim
    from actrec.extract_video import labels_digest

    source = (attrs.get("source") or {}).get("path")
    try:
        with claim(store.path, video_id) as mine:
            if not mine or store.damage(video_id):
                return False
            features, _ = store.read(video_id)  # checked against its chunk digests
            extra = {k: v for k, v in attrs.items() if k not in _WRITTEN}
            extra["labels_digest"] = labels_digest(labels)
            store.write_video(video_id, features, at_rows, fps=float(attrs["fps"]),
                              source=Path(source) if source else None, extra=extra)
    except (ClaimLost, DataError, OSError):  # (a store that cannot be written stops the
        return False  # extraction that follows, with its report)
    return True


def _pairing_change(attrs: dict[str, Any], label_fps: float, by_time: bool) -> str | None:
    """How the pairing of a stored video's frames with its labels differs from the one the
    dataset now asks for, in words (``None``: the same, or not recorded): the labels' frame
    rate, or, for a file whose rate is a rounding of it (59.94 for 60), frames taken one per
    label versus by timestamps (``labels_by_time``). Either shifts frames against labels that
    are themselves unchanged, so ``_labels_change`` does not see it."""
    from actrec.io.video import same_rate

    recorded = attrs.get("label_fps")
    if recorded is not None and abs(float(recorded) - label_fps) > 1e-9:
        return (f"its labels' frame rate changed since it was extracted ({float(recorded):g} "
                f"-> {label_fps:g} fps)")
    container, source = attrs.get("container_fps"), attrs.get("source_fps")
    if container is None or source is None or abs(float(container) - label_fps) < 1e-9 or \
            not same_rate(float(container), label_fps):
        return None  # both pairings read the same frames
    # one frame per label reads the file at the label rate (source_fps), by time at its own
    was_by_time = abs(float(source) - float(container)) < 1e-9
    if was_by_time == by_time:
        return None
    how = {True: "by timestamps", False: "one frame per label"}
    return (f"its frames were paired with its labels {how[was_by_time]} at "
            f"{float(container):g} fps; the dataset now pairs them {how[by_time]}")


def _written_unheard(plan: _Plan, store_path, since: float) -> None:
    """Count as written the videos this run started whose outcome it never heard of but that
    the store holds whole, written since ``since`` (by this run, which held their claims): a
    stop can cut off that last word (a worker's message still in its pipe, an interrupt
    between the write and its report). The others stay not done."""
    from actrec.extract_workers import written_since

    for vid in sorted(v for v in plan.started if v not in plan.results):
        outcome = written_since(store_path, vid, since)
        if outcome is not None:
            plan.results[vid] = outcome


def _interrupted_error(report: ExtractReport) -> ExtractInterrupted:
    """The ``ExtractInterrupted`` for a report of a run ``report.interrupted`` stopped."""
    if report.interrupted == "SIGINT":
        return _CtrlC(report, 130)
    return _Terminated(report, 143)



def store_write_error(store_path, what: str, exc: OSError) -> DataError:
    """The error for an ``OSError`` writing a store's own files: names the store, what failed
    and why (``No space left on device`` for a full disk)."""
    where = f" ({exc.filename})" if exc.filename and exc.strerror else ""
    return DataError(f"feature store {store_path}: cannot {what}: {exc.strerror or exc}{where}")


_SHARD_VAR = "ACTREC_CLAIM_SHARD"


def _wait_for_claims(store_path, tasks: Sequence[VideoTask], lease: float,
                     view: _ProgressView) -> list[VideoTask]:
    """The first of ``tasks`` whose claims are free or stale, after waiting for them (polling
    the store; the progress shows what it waits for)."""
    from actrec.extract_claims import claim_info

    poll = min(1.0, max(0.05, lease / 8))
    while True:
        ready = []
        holders = []
        for task in tasks:
            info = claim_info(store_path, task.id, lease=lease)
            if info is None or info.stale:
                ready.append(task)
            else:
                holders.append(f"{info.host}:{info.pid}")
        if ready:
            view.waiting(None)
            return ready
        view.waiting(f"waiting for {len(tasks)} video(s) other processes are extracting "
                     f"({', '.join(sorted(set(holders))[:3])})")
        time.sleep(poll)


class _ProgressView:
    """The run on a rich ``Progress``: videos (done of all, skipped ones counted at once),
    frames (with frames per second and the time left) and one bar per video in flight."""

    def __init__(self, progress, total: int, skipped: int, tasks: Sequence[VideoTask],
                 extractor: FeatureExtractor) -> None:
        self.progress = progress
        self.videos = self.frames = None
        self.per_video: dict[int, Any] = {}
        self.started = time.perf_counter()
        self.done_frames = 0
        if progress is None:
            return
        self.videos = progress.add_task("videos", total=total, completed=skipped)
        # Until each video is opened, its frames are estimated from its labels.
        self.estimate = {t.id: _estimated_frames(t, extractor) for t in tasks}
        self.frames = progress.add_task("frames", total=sum(self.estimate.values()))

    def update(self, event) -> None:
        from actrec.extract_workers import Finished, Frames, Started

        if self.progress is None:
            return
        p = self.progress
        if isinstance(event, Started):
            if self.done_frames == 0:  # the rate counts from the first video opened
                self.started = time.perf_counter()
            old = self.per_video.pop(event.worker, None)
            if old is not None:
                p.remove_task(old)
            self.per_video[event.worker] = p.add_task(f"  {event.video}", total=event.frames)
            guess = self.estimate.pop(event.video, event.frames)
            p.update(self.frames, total=_total(p, self.frames) + event.frames - guess)
        elif isinstance(event, Frames):
            self.done_frames += event.count
            bar = self.per_video.get(event.worker)
            if bar is not None:
                p.advance(bar, event.count)
            rate = self.done_frames / max(1e-9, time.perf_counter() - self.started)
            p.update(self.frames, advance=event.count, description=f"frames {rate:,.0f}/s")
        elif isinstance(event, Finished):
            bar = self.per_video.pop(event.worker, None)
            if bar is not None:
                p.remove_task(bar)
            if event.outcome.busy:  # tried again once its holder lets go
                return
            guess = self.estimate.pop(event.outcome.id, None)  # failed before it was opened
            if guess:
                p.update(self.frames, total=_total(p, self.frames) - guess)
            p.advance(self.videos)

    def waiting(self, text: str | None) -> None:
        """Show (or with ``None`` clear) what the run is waiting for on the videos bar."""
        if self.progress is not None and self.videos is not None:
            self.progress.update(self.videos, description=text or "videos")

    def close(self) -> None:
        if self.progress is None:
            return
        for bar in self.per_video.values():
            self.progress.remove_task(bar)
        self.per_video.clear()


def _estimated_frames(task: VideoTask, extractor: FeatureExtractor) -> int:
    fps = extractor.fps or task.label_fps  # (at the video's rate: corrected once it is opened)
    return round(task.labels.shape[0] * fps / task.label_fps) if task.label_fps > 0 else 0


def _total(progress, task_id) -> float:
    return next(t.total for t in progress.tasks if t.id == task_id) or 0
