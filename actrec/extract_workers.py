"""Running video tasks in this process or in ``N`` worker processes on one store.

The parent hands each worker its next video when it asks, over the worker's own pipe
(``actrec.worker_links``: a worker that dies mid-message cannot silence the others), so each
video goes to exactly one worker and the parent knows which one it holds; workers send back
events (a video started, frames decoded, a video finished) that the parent
turns into progress and a report. Each worker gets ``cores // N`` threads for torch, OpenCV
and the BLAS libraries (oversubscribed torch processes slow down by an order of magnitude),
builds its own extractor from the class and config (``type(ext)(ext.config)``) and calls its
``setup`` once. Workers are started with ``spawn`` (zarr's I/O thread and torch's thread pools
do not survive ``fork``) and die with their parent (Linux ``PR_SET_PDEATHSIG``), so killing
the command stops them too; a worker that dies fails only the video it held. A worker the
parent stops (another worker found the store unwritable, Ctrl-C) unwinds on SIGTERM, so it
releases its claims and removes its unfinished write itself. Any exception an extractor
raises is its video's failure; an unexpected one elsewhere fails the video it stopped.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from actrec.errors import ActrecError, ConfigError
from actrec.extract_video import HostOptions, Outcome, VideoTask, process_tasks

__all__ = [
    "Event",
    "Finished",
    "Frames",
    "Started",
    "Terminated",
    "WorkerSpec",
    "apply_thread_limit",
    "check_device",
    "cpu_cores",
    "run_tasks",
    "sigterm_as_exit",
    "thread_share",
]

_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
_STOP_SECONDS = 10.0  # a stopped worker's time to unwind before it is killed


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a worker needs besides its tasks (picklable)."""

    extractor_cls: type
    extractor_config: Any
    store_path: Path
    options: HostOptions
    device: str = "cpu"
    threads: int = 1  # per worker


@dataclass(frozen=True)
class Started:
    worker: int
    video: str
    frames: int  # frames that will be decoded


@dataclass(frozen=True)
class Frames:
    worker: int
    count: int


@dataclass(frozen=True)
class Finished:
    worker: int
    outcome: Outcome


Event = Started | Frames | Finished


def cpu_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def thread_share(workers: int) -> int:
    """Threads per worker when ``workers`` processes share this machine's cores (>= 1)."""
    return max(1, cpu_cores() // max(1, workers))


@contextlib.contextmanager
def child_thread_env(threads: int):
    """The BLAS/OpenMP thread variables set to ``threads`` while processes are started (a child
    reads them at start-up, before torch or a BLAS makes its thread pool), then restored."""
    saved = {k: os.environ.get(k) for k in _THREAD_VARS}
    os.environ.update({k: str(threads) for k in _THREAD_VARS})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def apply_thread_limit(threads: int) -> None:
    """Give this process ``threads`` threads in OpenCV, and in torch once it is imported."""
    import sys

    try:
        import cv2

        cv2.setNumThreads(threads)
    except ImportError:  # pragma: no cover - a core dependency
        pass
    torch = sys.modules.get("torch")
    if torch is not None and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def check_device(device: str, workers: int = 1) -> list[str]:
    """The device of each worker for ``--device device``: ``cpu``; ``cuda`` (workers spread
    over the visible GPUs); ``cuda:N``; ``auto`` (``cuda`` where available, else ``cpu``).
    ``ConfigError`` naming the option when CUDA is asked for and not available."""
    if device == "cpu":
        return ["cpu"] * workers
    if device != "auto" and not (device == "cuda" or device.startswith("cuda:")):
        raise ConfigError(f"--device: expected cpu, cuda, cuda:N or auto, got {device!r}")
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if device == "auto":
        device = "cuda" if count else "cpu"
        if device == "cpu":
            return ["cpu"] * workers
    if not count:
        raise ConfigError(f"--device {device}: no CUDA device is available here (torch "
                          f"{torch.__version__}, CUDA build: {torch.version.cuda or 'none'}); "
                          f"use --device cpu")
    if device == "cuda":
        return [f"cuda:{w % count}" for w in range(workers)]
    index = device.partition(":")[2]
    if not index.isdigit() or int(index) >= count:
        raise ConfigError(f"--device {device}: expected cuda:0..cuda:{count - 1} "
                          f"({count} CUDA device(s) here)")
    return [device] * workers


def _start_extractor(spec: WorkerSpec, worker: int, workers: int, device: str, extractor=None):
    from actrec.plugin_api import ExtractRuntime

    apply_thread_limit(spec.threads)
    if extractor is None:
        extractor = spec.extractor_cls(spec.extractor_config)
    extractor.setup(ExtractRuntime(device=device, threads=spec.threads, worker=worker,
                                   workers=workers))
    apply_thread_limit(spec.threads)  # setup may have imported torch
    checked_dim(extractor)
    return extractor


def checked_dim(extractor) -> int:
    """``extractor.dim()`` after its ``setup`` (a length may come with the model it loads),
    checked once before any video: an integer >= 1, else ``ConfigError`` naming the extractor
    (and where its ``dim`` raised), instead of the same failure for every video."""
    import numpy as np

    name = getattr(extractor, "name", type(extractor).__name__)
    try:
        dim = extractor.dim()
    except Exception as exc:  # noqa: BLE001 - a plugin's code: any class it may raise
        raise ConfigError(f"extractor '{name}': dim() failed: {_describe(exc)}") from None
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
        raise ConfigError(f"extractor '{name}': dim() returned {dim!r}; expected the feature "
                         f"length, an integer >= 1")
    return int(dim)


def _setup_failed(extractor_cls: type, exc: BaseException) -> ConfigError:
    if isinstance(exc, ConfigError):
        return exc
    name = getattr(extractor_cls, "name", extractor_cls.__name__)
    return ConfigError(f"extractor '{name}' failed to set up: {type(exc).__name__}: {exc}")


def run_tasks(tasks: Sequence[VideoTask], spec: WorkerSpec, devices: Sequence[str],
              emit: Callable[[Event], None], *, extractor=None,
              on_ready: Callable[[], None] | None = None) -> None:
    """Extract ``tasks`` into the store, in this process when ``len(devices) == 1`` (with
    ``extractor`` if given, else one built from ``spec``), else in one worker process per
    device entry, calling ``emit`` (in this process) with every event.

    ``on_ready`` is called once, in this process, when an extractor is set up (``setup``, and
    ``dim()`` checked, ``checked_dim``) and before any video is started or the store opened:
    a store made there is made only for an extractor that can run.

    ``ConfigError`` if the extractor cannot be set up; ``DataError`` if the store cannot be
    written (both stop the run; videos already written stay; the video being written then is
    emitted as failed with that error first). ``extractor`` is used only when the work runs
    in this process."""
    if not tasks:
        return
    with sigterm_as_exit():
        if len(devices) == 1:
            _run_here(tasks, spec, devices[0], emit, extractor, on_ready)
        else:
            _run_processes(tasks, spec, list(devices), emit, on_ready)


class Terminated(SystemExit):
    """SIGTERM arrived while a run was going on (``sigterm_as_exit``): exit status 143."""


@contextlib.contextmanager
def sigterm_as_exit():
    """While the block runs, SIGTERM (a batch scheduler ending the job, ``kill``) raises
    ``Terminated`` (``SystemExit(143)``) in this (main) thread instead of ending the process at
    once, so the run stops as on Ctrl-C: the claims it holds are released (else another
    machine waits a lease for them), the workers are stopped and the run can say what it did.
    Nothing changes off the main thread or where a SIGTERM handler is already installed (an
    outer block's, the caller's own)."""
    import signal
    import threading

    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL):
        yield
        return

    def stop(signum, frame):
        raise Terminated(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _run_here(tasks, spec, device, emit, extractor=None, on_ready=None) -> None:
    """The tasks in this process. An unexpected exception (a bug in the extractor outside its
    ``extract`` loop, or in actrec) fails the video it stopped, as in a worker process, and
    the others go on."""
    from actrec.io.features import FeatureStore

    try:
        extractor = _start_extractor(spec, 0, 1, device, extractor)
    except Exception as exc:  # noqa: BLE001 - third-party set-up code: one message
        raise _setup_failed(spec.extractor_cls, exc) from None
    if on_ready is not None:
        on_ready()
    store = FeatureStore.open(spec.store_path)
    pending = list(tasks)
    while pending:
        taken: list[str] = []
        done: set[str] = set()

        def source(run=pending, taken=taken):  # consumed by the decoding thread
            for task in run:
                taken.append(task.id)
                yield task

        def finished(outcome: Outcome, done=done) -> None:
            done.add(outcome.id)
            emit(Finished(0, outcome))

        try:
            process_tasks(source(), extractor, store, spec.options, on_done=finished,
                          on_start=lambda video, n: emit(Started(0, video, n)),
                          on_frames=lambda n: emit(Frames(0, n)))
            return
        except ActrecError as exc:  # the store cannot be written: fails the video it stopped
            stopped = next((v for v in taken if v not in done), None)
            if stopped is not None:
                emit(Finished(0, Outcome(stopped, False, error=str(exc))))
            raise
        except Exception as exc:  # reported as the video's failure
            stopped = next((v for v in taken if v not in done), None)
            if stopped is None:
                raise
            task = next(t for t in pending if t.id == stopped)
            emit(Finished(0, failed_outcome(task, spec.store_path, _stopped_by(
                stopped, spec, _describe(exc)))))
            pending = [t for t in pending if t.id not in done and t.id != stopped]


# What the normal failure path (``extract_video``) adds when it removes a stale stored copy.
_STALE_REMOVED = " (its stored copy was damaged or made from another file, and was removed)"


def failed_outcome(task: VideoTask, store_path, error: str) -> Outcome:
    """``task`` failed with ``error`` outside the video's own error handling (an unexpected
    exception, a worker that died): as on the normal failure path, a stale stored copy
    (damaged, or made from another file: ``task.stale``) is removed while holding the video's
    claim, so that nothing reads it as current and the next run retries the video. A video
    another process holds by now is left to it (``busy``). If the copy cannot be removed, the
    error says so (the next run still finds it stale and redoes it)."""
    from actrec.extract_claims import ClaimLost, claim
    from actrec.io.features import FeatureStore

    if not task.stale:
        return Outcome(task.id, False, error=error)
    try:
        with claim(store_path, task.id) as mine:
            if not mine:
                return Outcome(task.id, False, busy=True)
            FeatureStore.open(store_path).remove(task.id)
    except ClaimLost:  # taken over meanwhile: the taker redoes it
        return Outcome(task.id, False, busy=True)
    except Exception as exc:  # noqa: BLE001 - the store's own error: said, not raised
        return Outcome(task.id, False, error=(
            f"{error} (its stale stored copy could not be removed: {type(exc).__name__}: "
            f"{exc})"))
    return Outcome(task.id, False, error=error + _STALE_REMOVED)


def written_since(store_path, video: str, since: float) -> Outcome | None:
    """The written outcome of ``video`` if the store holds it whole, written at or after
    ``since`` (a run's start: by that run, which held its claim), else ``None`` (absent,
    an older copy, damaged, or the store unreadable now). What a run reports for a video
    whose own report never came (a stop, a worker that died between its write and its
    message)."""
    from actrec.io.features import FeatureStore

    try:
        store = FeatureStore.open(store_path)
        if not store.has(video):
            return None
        attrs = store.video_attrs(video)
        if float(attrs.get("written_at") or 0.0) < since or store.damage(video):
            return None
    except (OSError, ActrecError):
        return None
    cut = attrs.get("frames_cut") or {}
    return Outcome(video, True, frames=int(attrs.get("num_frames") or 0),
                   video_frames_cut=int(cut.get("video") or 0),
                   label_frames_cut=int(cut.get("labels") or 0))


def _describe(exc: BaseException) -> str:
    """``Type: message (at file:line in function)``, the innermost frame of its traceback."""
    import traceback

    frames = traceback.extract_tb(exc.__traceback__)
    where = (f" (at {Path(frames[-1].filename).name}:{frames[-1].lineno} in "
             f"{frames[-1].name})") if frames else ""
    return f"{type(exc).__name__}: {exc}{where}"


def _stopped_by(video: str, spec: WorkerSpec, error: str) -> str:
    name = getattr(spec.extractor_cls, "name", spec.extractor_cls.__name__)
    return (f"video {video!r}: extraction stopped on an unexpected error (extractor "
            f"'{name}'): {error}")


# ------------------------------------------------------------------ worker processes


def _exit_on_term(signum, frame) -> None:
    """A worker's SIGTERM handler: unwind (``SystemExit``), except in the middle of making or
    removing a process lock (numcodecs makes one at a worker's first store write):
    multiprocessing registers such a lock with its resource tracker before it sets the hook
    that unregisters it, so an exit between the two leaves it registered ("There appear to be
    1 leaked semaphore objects" at the end). There the stop is sent again a moment later."""
    if _in_lock_bookkeeping(frame):
        import signal
        import threading

        again = threading.Timer(0.05, signal.raise_signal, (signum,))
        again.daemon = True
        again.start()
        return
    raise SystemExit(128 + signum)


def _in_lock_bookkeeping(frame) -> bool:
    """Whether ``frame`` (or a caller of it) is making or removing a multiprocessing lock."""
    from multiprocessing.synchronize import SemLock

    codes = {SemLock.__init__.__code__, SemLock._cleanup.__code__}
    while frame is not None:
        if frame.f_code in codes:
            return True
        frame = frame.f_back
    return False


def _worker_main(spec: WorkerSpec, worker: int, workers: int, device: str, parent: int,
                 conn) -> None:
    """A worker process: ask the parent for tasks over ``conn`` (its own pipe, see
    ``actrec.worker_links``) until it answers ``None``, and report on it."""
    import signal

    from actrec.worker_links import WorkerEnd, die_with_parent

    die_with_parent()
    if os.getppid() != parent:  # the parent died before the request took effect
        return
    # Ctrl-C reaches the whole process group: the parent stops the workers, they stay quiet.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Stopped by the parent (SIGTERM): unwind, so that the claims this worker holds are
    # released and its multiprocessing locks (numcodecs' blosc mutex) are unregistered; a
    # worker killed outright leaves them to the parent and a "leaked semaphore" warning
    # (and so does one stopped while it makes such a lock: _exit_on_term waits for it).
    signal.signal(signal.SIGTERM, _exit_on_term)
    try:
        _work(spec, worker, workers, device, WorkerEnd(conn))
    finally:  # its work is over: a stop now must not cut into the exit's own clean-up
        signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _work(spec: WorkerSpec, worker: int, workers: int, device: str, link) -> None:
    from actrec.io.features import FeatureStore

    def next_task():  # the parent answers with a task, or None when none is left
        link.send(("next", None))
        return link.recv()

    try:
        extractor = _start_extractor(spec, worker, workers, device)
    except Exception as exc:  # noqa: BLE001 - third-party set-up code: one message
        link.send(("config-error", str(_setup_failed(spec.extractor_cls, exc))))
        return
    link.send(("ready", None))
    # The parent hands out tasks once a worker is ready (and makes the store then).
    first = next_task()
    if first is None:
        link.send(("exit", None))
        return
    try:
        store = FeatureStore.open(spec.store_path)
    except ActrecError as exc:
        link.send(("data-error", str(exc)))
        return

    def taken(task=first):  # asked for by the opener thread once the previous video is done
        while task is not None:
            yield task
            task = next_task()

    def event(item: Event) -> None:
        link.send(("event", item))

    try:
        # One video at a time: a worker that dies then fails only the video it was extracting
        # (the others' work fills the gaps between its videos).
        process_tasks(
            taken(), extractor, store, spec.options, ahead=1,
            on_done=lambda outcome: event(Finished(worker, outcome)),
            on_start=lambda video, n: event(Started(worker, video, n)),
            on_frames=lambda n: event(Frames(worker, n)))
    except ActrecError as exc:  # the store cannot be written: stop everything
        link.send(("data-error", str(exc)))
        return
    except Exception as exc:  # noqa: BLE001 - a bug: fails the video held (a new worker goes on)
        link.send(("crash", _describe(exc)))
        return
    link.send(("exit", None))


def _run_processes(tasks, spec, devices, emit, on_ready=None) -> None:
    import collections
    import multiprocessing

    from actrec.errors import DataError
    from actrec.worker_links import ENDED, WorkerLinks

    ctx = multiprocessing.get_context("spawn")
    workers = len(devices)
    links = WorkerLinks(ctx)
    pending = collections.deque(tasks)
    queued = False  # on_ready called: tasks may be handed out

    since = time.time()  # a copy written from now on was written by this run's workers
    procs: dict[int, Any] = {}
    # worker -> the video handed to it and not finished (it asks for the next one only
    # once its previous one is reported)
    holding: dict[int, str] = {}
    by_id = {t.id: t for t in tasks}
    gone: set[int] = set()

    def start(worker: int) -> None:
        theirs = links.pipe(worker)
        with child_thread_env(spec.threads):
            proc = ctx.Process(target=_worker_main, name=f"actrec-extract-{worker}",
                               args=(spec, worker, workers, devices[worker % workers],
                                     os.getpid(), theirs), daemon=True)
            try:
                proc.start()
            except (pickle.PicklingError, AttributeError, TypeError) as exc:
                raise ConfigError(
                    f"extractor class {spec.extractor_cls.__qualname__} cannot be sent to worker "
                    f"processes ({exc}); define it at the top level of an importable module, or "
                    f"use --workers 1") from None
            finally:
                theirs.close()  # the worker's copy only: its pipe ends when it does
        procs[worker] = proc

    def hand_out(worker: int) -> None:
        task = pending.popleft() if pending else None
        if task is None:
            links.send(worker, None)
        elif links.send(worker, task):
            holding[worker] = task.id  # a worker dead before it reads it fails it too
        else:  # it died after asking: no process has the video, the next one takes it
            pending.appendleft(task)

    finished = 0

    def replace(worker: int, why: str | None, error: str = "") -> None:
        """Fail the video the ended ``worker`` held (``why``, or the unexpected ``error``) and
        start another worker while videos are left."""
        nonlocal finished
        vid = holding.pop(worker, None)
        if vid is not None:
            finished += 1
            # A worker that died between its write and its message left the video whole:
            # written, not failed (failing it would remove a stale video's fresh copy).
            outcome = written_since(spec.store_path, vid, since) or failed_outcome(
                by_id[vid], spec.store_path,
                f"video {vid!r}: {why}" if why else _stopped_by(vid, spec, error))
            if worker in gone:  # it died holding the video's claim
                _release_dead_claims(spec.store_path, {vid})
            emit(Finished(worker, outcome))
        if finished < len(tasks) and len(procs) < workers + len(tasks):
            start(max(procs) + 1)

    def ended(worker: int) -> None:
        """``worker``'s pipe ended: its process exits; if it did not say it would, it died."""
        proc = procs[worker]
        proc.join(timeout=_STOP_SECONDS)
        if proc.is_alive():  # its pipe broke while it runs on: it can report nothing more
            proc.kill()
            proc.join()
        if worker not in gone:
            gone.add(worker)  # died without saying so (killed, out of memory)
            replace(worker, (f"the worker process extracting it died (exit code "
                             f"{proc.exitcode}; out of memory?)"))

    try:
        for w in range(workers):
            start(w)
        while finished < len(tasks):
            received = links.receive(timeout=0.5)
            for worker, message in received:
                if message is ENDED:
                    ended(worker)
                    continue
                kind, payload = message
                if kind == "config-error":
                    gone.add(worker)
                    raise ConfigError(payload)
                if kind == "ready":
                    if not queued and on_ready is not None:
                        on_ready()
                    queued = True
                    continue
                if kind == "next":
                    hand_out(worker)
                    continue
                if kind == "data-error":  # fails the video that worker held, stops the run
                    gone.add(worker)
                    vid = holding.pop(worker, None)
                    if vid is not None:
                        finished += 1
                        emit(Finished(worker, Outcome(vid, False, error=payload)))
                    raise DataError(payload)
                if kind == "exit":
                    gone.add(worker)
                    continue
                if kind == "crash":
                    gone.add(worker)
                    replace(worker, None, payload)
                    continue
                if isinstance(payload, Finished):
                    holding.pop(worker, None)
                    finished += 1
                emit(payload)
            if (not received and finished < len(tasks)
                    and all(w in gone for w in procs)):
                raise DataError(f"every extraction worker process ended with "
                                f"{len(tasks) - finished} video(s) left to do")
    finally:
        def no_more_tasks() -> None:  # a worker waiting for one (or about to ask) reads
            for w in procs:  # this answer and ends
                if w not in gone:
                    links.send(w, None)

        # an error or an interrupt: stop the others too
        again = _stop_workers(procs, [proc for w, proc in procs.items() if proc.is_alive()
                                      and finished < len(tasks) and w not in gone],
                              first=no_more_tasks)
        if finished < len(tasks):  # stopped early: what the workers finished before they
            finished += _drain_finished(links, holding, emit)  # stopped counts as done
        _release_dead_claims(spec.store_path, {vid for w, vid in holding.items()
                                               if not procs[w].is_alive()})
        if finished < len(tasks):  # stopped mid-write: their temp folders go now
            _clean_dead_writes(spec.store_path)
        links.close()
        if again is not None:  # interrupted again while stopping: said once all is clean
            raise again


def _stop_workers(procs: dict[int, Any], stop: Sequence[Any],
                  first: Callable[[], None] | None = None) -> BaseException | None:
    """Stop the worker processes: ``first()`` (if given), SIGTERM to those in ``stop`` (they
    unwind: claims released, unfinished writes removed), up to ``_STOP_SECONDS`` for every
    worker to end, then SIGKILL for those still there, so that none outlives this call. An
    interrupt meanwhile (a second Ctrl-C, SIGTERM) kills them at once; it is returned, for the
    caller to raise once the rest is cleaned up."""
    import time

    again: BaseException | None = None
    deadline = time.monotonic() + _STOP_SECONDS
    try:
        if first is not None:
            first()
        for proc in stop:
            proc.terminate()
        for proc in procs.values():
            proc.join(timeout=max(0.0, deadline - time.monotonic()))
    except (KeyboardInterrupt, SystemExit) as exc:  # asked again: no more waiting
        again = exc
    for proc in procs.values():
        if proc.is_alive():  # stuck in a long call (or asked again): no longer waited for
            proc.kill()
    for proc in procs.values():
        while True:
            try:
                proc.join(timeout=30)  # killed: only the kernel's clean-up left
                break
            except (KeyboardInterrupt, SystemExit) as exc:
                again = again or exc
    return again


def _drain_finished(links, holding: dict[int, str], emit: Callable[[Event], None]) -> int:
    """Emit the ``Started`` and ``Finished`` events the stopped workers sent that the parent
    had not read (a video written just before the stop is done, and reported so; one started
    is reported in progress, not "not started"); the number of ``Finished`` emitted. Called
    once the workers have ended, so everything they sent is in their pipes (a message cut
    short by a killed worker ends what is read of it)."""
    from actrec.worker_links import ENDED

    count = 0
    for worker, message in links.drain():
        if message is ENDED or message[0] != "event":
            continue
        payload = message[1]
        if isinstance(payload, Finished):
            holding.pop(worker, None)
            count += 1
            emit(payload)
        elif isinstance(payload, Started):
            emit(payload)
    return count


def _clean_dead_writes(store_path) -> None:
    """Remove the temp folders the stopped workers left in a local store (as the next
    writer's open would); failures are ignored (the next open tries again)."""
    from actrec.io.features import FeatureStore
    from actrec.io.leftovers import sweep_store
    from actrec.io.remote import StoreURL

    if isinstance(store_path, StoreURL):  # their generations: removed by the writers' unwinding
        return
    with contextlib.suppress(Exception):
        sweep_store(FeatureStore.open(store_path))


def _release_dead_claims(store_path, videos) -> None:
    """Delete the claims that stopped workers held on ``videos`` (terminated on an error or an
    interrupt, they could not): taken over as a dead process's, then released. Claims another
    live process holds are left alone; failures are ignored (a claim left is only stale)."""
    from actrec.extract_claims import try_claim

    for video in sorted(videos):
        with contextlib.suppress(Exception):
            held = try_claim(store_path, video)
            if held is not None:
                held.release()
