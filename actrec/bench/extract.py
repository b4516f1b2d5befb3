"""Benchmark: feature extraction throughput on the synthetic kitchen's videos, in one run.

Every case runs once per round, the rounds interleaved (decode only, each extractor, the worker
cases, then again), so that a machine shared with other jobs slows them alike; each ratio is
taken within a round and the median over ``--rounds`` is shown. Rows:

* decode only: every frame read by the extraction host's decoder path (``open_video`` and
  the background reader), no extractor; the baseline of every ratio below;
* each built-in extractor end to end (decode, extract, write a fresh store) in one process,
  with its ratio to decode only (weight-free extractors should stay >= 0.8: decoding is the
  bottleneck); ``cnn`` runs a ResNet-18 state dict with random weights written for the run
  (``--cnn-size`` pixels, on ``--cnn-videos`` videos); extractors that cannot start with
  their default options are listed as skipped with the reason;
* each of ``--workers-extractor`` (colorgrad: decode-bound, flow: compute-bound) with 1 and
  2 worker processes on the same cores (an equal core budget: every core of this process's
  affinity; target 2 workers > 1.3x one), and one worker confined to half of them, so that
  ``2 workers / 1 worker on half`` says how the work scales with cores; on every video
  ``--worker-repeat`` times, so that starting processes (about a second each) does not decide
  the result. Worker rows also give the start-up (processes spawned, extractor set up, first
  batch decoded);
* decoders: the same decode-only loop run standalone (``actrec/bench/decode_probe.py``) by
  this interpreter and by each ``--python`` given, e.g. a virtual environment with decord2.

Each row also gives the CPU time per frame (all threads and worker processes) and how many
cores were busy on average. Rows run in this process split that CPU time in two lanes: the
main thread (the extractor, and the host's bookkeeping) and every other thread (the reader
thread decoding ahead, opening the next video and claiming it, zarr's I/O threads writing the
store, OpenCV's pool). Wall-clock rates on a machine shared with other jobs say little, CPU
times much more. ``idle bound`` is what they allow on idle cores (``_estimates``): a run takes
at least its main thread's CPU time, and at least its total CPU time shared by every core; so
an extractor's ratio to decode only is at most decode only's time on idle cores (decord
decodes while the reader thread copies the frames out: the slower of the two, or their total
over the cores, or decode only's measured time if less: decord may decode on several threads)
over the larger of the two, and 2 workers (each with half the frames) gain at most that over
one. ``extractor alone`` is the extractor's CPU time per frame on frames decoded
beforehand.

Usage: ``python -m actrec.bench extract [--participants 3 --videos 2 --frames 400
--size 128] [--rounds 3] [--extractors colorgrad,flow] [--python PATH ...] [--json]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Sample:
    """One timed run of a case: frames, wall seconds, CPU seconds of this process and its
    finished children, and the seconds before the first batch reached an extractor."""

    frames: int
    seconds: float
    cpu: float
    startup: float = 0.0
    main_cpu: float = 0.0  # CPU seconds of this process's main thread

    @property
    def fps(self) -> float:
        return self.frames / self.seconds

    @property
    def busy(self) -> float:
        """Cores busy on average."""
        return self.cpu / self.seconds

    @property
    def steady_fps(self) -> float:
        """Frames per second after the start-up."""
        return self.frames / max(1e-9, self.seconds - self.startup)


def _cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)  # worker processes once joined
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _timed(fn: Callable[[], tuple[int, float]]) -> Sample:
    """Run ``fn`` (returning frames and its start-up seconds) and time it."""
    cpu0, main0, t0 = _cpu_seconds(), time.thread_time(), time.perf_counter()
    frames, startup = fn()
    return Sample(frames, time.perf_counter() - t0, _cpu_seconds() - cpu0, startup,
                  time.thread_time() - main0)


def _kitchen(root: Path, args) -> tuple[Any, Any]:
    from actrec_plugins.datasets.synthetic import SyntheticKitchen

    dataset = SyntheticKitchen(SyntheticKitchen.Config(
        root=root, kitchen="a", participants=args.participants,
        videos_per_participant=args.videos, frames_mean=args.frames, size=args.size, seed=3,
        folds=min(3, args.participants)))
    return dataset, dataset.load()


_READER_CPU: list[float] = []  # CPU seconds of decode only's reader thread, per run


def _decode_only(index, batch: int) -> tuple[int, float]:
    """Frames of the host's decoding path alone: the next video opened by a thread of its own
    while this one decodes (as the host's opener thread does), and the reader thread. The
    reader thread's own CPU time goes to ``_READER_CPU``: decord decodes on a thread of its
    own and the reader thread copies the frames out, two stages that run side by side."""
    import queue
    import threading

    from actrec.extract_video import prefetch
    from actrec.io.video import keep_freed_batches, open_video

    keep_freed_batches()  # as the extraction host does
    opened: queue.Queue = queue.Queue(maxsize=1)  # one video opened ahead

    def open_all() -> None:
        try:
            for record in index.videos.values():
                opened.put(open_video(record.path, fps=record.fps, folder_fps=record.fps))
        except Exception as exc:  # noqa: BLE001 - raised in the timing thread below
            opened.put(exc)
        opened.put(None)

    threading.Thread(target=open_all, name="bench-open", daemon=True).start()
    frames = 0
    cpu = 0.0
    while (reader := opened.get()) is not None:
        if isinstance(reader, Exception):
            raise reader

        def batches(reader=reader):
            nonlocal cpu
            start = time.thread_time()
            for s in range(0, reader.num_frames, batch):
                yield reader.read(range(s, min(reader.num_frames, s + batch)))
            cpu += time.thread_time() - start

        for b in prefetch(batches()):
            frames += b.shape[0]
    _READER_CPU.append(cpu)
    return frames, 0.0


def _compute_only(index, extractor, batch: int) -> float:
    """CPU seconds per frame of ``extractor`` alone, on frames decoded beforehand (one video
    at a time, untimed): what it adds to decoding, whatever else runs on the machine."""
    from actrec.io.video import open_video

    cpu = 0.0
    frames = 0
    for record in index.videos.values():
        reader = open_video(record.path, fps=record.fps, folder_fps=record.fps)
        decoded = list(reader.iter_batches(batch))
        start = time.process_time()
        for out in extractor.extract(iter(decoded)):
            frames += len(out)
        cpu += time.process_time() - start
    return cpu / frames


def _estimates(decode: float, main: float, other: float, cores: int) -> tuple[float, float]:
    """Upper bounds on idle cores, from decode only's seconds per frame there and CPU
    seconds per frame of one worker's main thread and other threads: its ratio to decode only
    (a run lasts at least its main thread's time and its total time spread over every core),
    and what 2 workers gain over it (each runs half the frames on its own main thread;
    together still at least the total over the cores)."""
    total = main + other
    one = max(main, total / cores)
    two = max(main / 2, total / cores)
    return decode / one, one / two


def _decode_time(main: float, reader: float, decoder: float, cores: int,
                 measured: float | None = None) -> float:
    """Decode only's seconds per frame on idle cores, from the CPU seconds per frame of its
    stages: its slowest thread, or all of them spread over the cores; or ``measured`` (its
    seconds per frame in this run) where that is less: decord may decode on several threads
    and the next video opens on a thread of its own, which the model (decord's CPU as one
    thread) does not know."""
    modelled = max(main, reader, decoder, (main + reader + decoder) / cores)
    return modelled if measured is None else min(modelled, measured)


def _repeated(index, times: int):
    """``index`` with every video listed ``times`` times (ids ``ID~k``, the same file)."""
    import dataclasses

    if times == 1:
        return index
    videos = {f"{vid}~{k}": dataclasses.replace(rec, id=f"{vid}~{k}")
              for k in range(times) for vid, rec in index.videos.items()}
    return dataclasses.replace(index, videos=videos)


def _first_batch_clock():
    """A silent rich ``Progress`` that notes when the first frames reach an extractor (the
    host advances its ``frames`` task then), so that start-up can be told from throughput."""
    from rich.console import Console
    from rich.progress import Progress

    class Clock(Progress):
        first: float | None = None

        def update(self, task_id, *args, advance=None, **kwargs):
            if advance and self.first is None:
                self.first = time.perf_counter()
            return super().update(task_id, *args, advance=advance, **kwargs)

        def advance(self, task_id, advance=1.0):
            if advance and self.first is None:
                self.first = time.perf_counter()
            return super().advance(task_id, advance)

    return Clock(console=Console(quiet=True), disable=True)


def _end_to_end(index, extractor, workdir: Path, batch: int, workers: int = 1
                ) -> tuple[int, float]:
    from actrec.extract import extract_features

    store = workdir / f"bench-{time.monotonic_ns()}.zarr"
    # Deleting the store is not extraction: it is left to ``_remove_stores``, called after
    # the timing (thousands of small files: deleting them took 4 % of a run's time).
    _STORES.append(store)
    clock = _first_batch_clock()
    start = time.perf_counter()
    report = extract_features(index, extractor, store, dataset_ref="bench", workers=workers,
                              batch_size=batch, progress=clock)
    if report.failed:
        raise RuntimeError(f"extraction failed: {report.failed[0]}")
    # The first batch's frames count as start-up: the clock stops when they arrive.
    return report.frames, (clock.first or start) - start


_STORES: list[Path] = []  # stores written by ``_end_to_end``, not yet removed


def _remove_stores() -> None:
    """Remove the stores ``_end_to_end`` wrote (outside the timed runs)."""
    while _STORES:
        shutil.rmtree(_STORES.pop(), ignore_errors=True)


@contextlib.contextmanager
def _cores(count: int) -> Iterator[None]:
    """This process (and the workers it starts) confined to ``count`` of its cores."""
    if not hasattr(os, "sched_getaffinity"):  # pragma: no cover - not Linux
        yield
        return
    mine = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, mine[:count])
    try:
        yield
    finally:
        os.sched_setaffinity(0, mine)


def _null_extractor():
    """An extractor that computes nothing (one zero per frame): end to end, it times what the
    host adds to decoding (opening and checking files, labels, writing the store)."""
    import numpy as np

    from actrec.plugin_api import FeatureExtractor

    class Nothing(FeatureExtractor):
        name = "nothing"
        lookahead = 0

        def dim(self) -> int:
            return 1

        def extract(self, batches):
            for batch in batches:
                yield np.zeros((len(batch), 1), np.float32)

    return Nothing()


def _resnet18(folder: Path) -> Path:
    """A ResNet-18 state dict with random weights (speed does not depend on them)."""
    import torch

    from actrec.bench.backbones import LAYOUTS
    from actrec.nn.resnet import ResNet

    stages, block = LAYOUTS[18]
    path = folder / "resnet18.pth"
    torch.save(ResNet(stages, block=block).eval().state_dict(), path)
    return path


def _extractors(names: list[str] | None, workdir: Path, cnn_size: int) -> dict[str, Any]:
    """name -> an extractor with default options, or the reason it cannot start (str).
    ``cnn`` gets a ResNet-18 state dict written here, at ``cnn_size`` pixels."""
    from actrec import registry
    from actrec.errors import ActrecError

    if names is None:
        names = sorted(r.name for r in registry.discover().records
                       if r.kind == "extractors" and r.builtin)
    out: dict[str, Any] = {}
    for name in names:
        options: dict[str, str] = {}
        if name == "cnn":
            options = {"model": str(_resnet18(workdir)), "arch": "resnet",
                       "resize": str(cnn_size), "crop": str(cnn_size)}
            name = f"cnn (ResNet-18 state dict, {cnn_size} px)"
        try:
            if ":" in name:  # module:Class, for extractors not (yet) installed as entry points
                import importlib

                module, _, attr = name.partition(":")
                cls = getattr(importlib.import_module(module), attr)
                out[cls.name] = cls()
            else:
                out[name] = registry.create("extractors", name.split(" ")[0], options)
        except (ActrecError, ImportError, AttributeError) as exc:
            out[name] = str(exc).splitlines()[0]
    return out


def _probe(python: str, videos: list[str], rounds: int, batch: int) -> dict[str, Any]:
    script = Path(__file__).with_name("decode_probe.py")
    res = subprocess.run([python, str(script), "--rounds", str(rounds), "--batch", str(batch),
                          *videos], capture_output=True, text=True, check=False)
    if res.returncode != 0:
        return {"error": (res.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(res.stdout.strip().splitlines()[-1])


def _row(samples: list[Sample], baseline: list[Sample], note: str = "",
         startup: bool = False, lanes: bool = True) -> dict[str, Any]:
    """Medians over rounds; the ratio is taken within each round, then its median.
    ``lanes``: the run was in this process (its main thread's CPU time is one lane)."""
    med = statistics.median
    row: dict[str, Any] = {
        "fps": med(s.fps for s in samples),
        "ratio": med(s.fps / b.fps for s, b in zip(samples, baseline)),
        "cpu_ms_per_frame": med(1e3 * s.cpu / s.frames for s in samples),
        "cores_busy": med(s.busy for s in samples),
        "note": note,
    }
    if lanes:
        row["main_cpu_ms_per_frame"] = med(1e3 * s.main_cpu / s.frames for s in samples)
        row["other_cpu_ms_per_frame"] = med(1e3 * (s.cpu - s.main_cpu) / s.frames
                                            for s in samples)
    if startup:
        row["startup_s"] = med(s.startup for s in samples)
        row["steady_fps"] = med(s.steady_fps for s in samples)
    return row


def main(argv: list[str]) -> int:
    from actrec.extract_workers import cpu_cores

    parser = argparse.ArgumentParser(prog="python -m actrec.bench extract")
    parser.add_argument("--participants", type=int, default=3)
    parser.add_argument("--videos", type=int, default=2, help="videos per participant")
    parser.add_argument("--frames", type=int, default=400, help="mean frames per video")
    parser.add_argument("--size", type=int, default=128, help="frame side in pixels")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--extractors", default=None,
                        help="comma-separated names (or module:Class); default: the built-ins")
    parser.add_argument("--workers-extractor", default="colorgrad,flow",
                        help="comma-separated extractors timed with 1 and 2 workers ('' to "
                             "skip): a decode-bound and a compute-bound one by default")
    parser.add_argument("--worker-repeat", type=int, default=4,
                        help="the worker cases extract every video this many times (under "
                             "other ids), so that starting the processes does not dominate")
    parser.add_argument("--python", action="append", default=[],
                        help="another interpreter whose decord to compare (repeatable)")
    parser.add_argument("--root", type=Path, default=None, help="keep the videos here")
    parser.add_argument("--cnn-size", type=int, default=112,
                        help="input side of the cnn extractor's ResNet-18")
    parser.add_argument("--cnn-videos", type=int, default=1,
                        help="videos the (slow on CPU) cnn extractor is timed on")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.participants < 2:  # the synthetic kitchen's splits need 2 participants at least
        parser.error(f"--participants must be at least 2, got {args.participants}")
    if args.rounds < 1 or args.worker_repeat < 1:
        parser.error("--rounds and --worker-repeat must be >= 1")

    cores = cpu_cores()
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    tmp = Path(tempfile.mkdtemp(prefix="actrec-bench-extract-"))
    rows: dict[str, dict[str, Any]] = {}
    try:
        _, index = _kitchen(args.root or tmp / "data", args)
        frames = sum(r.num_frames for r in index.videos.values())
        names = args.extractors.split(",") if args.extractors else None
        extractors = _extractors(names, tmp, args.cnn_size)
        for name, ext in extractors.items():
            if isinstance(ext, str):
                rows[f"{name}: skipped"] = {"fps": None, "ratio": None, "note": ext}

        # name -> (run, note); run once per round, in this order, every round.
        cases: dict[str, tuple[Callable[[], tuple[int, float]], str]] = {
            "decode only (baseline)": (lambda: _decode_only(index, args.batch), ""),
            "no extractor end to end": (
                lambda: _end_to_end(index, _null_extractor(), tmp, args.batch),
                "what the host adds: files checked, labels, store written")}
        for name, ext in extractors.items():
            if isinstance(ext, str):
                continue
            subset, note = index, ""
            if name.startswith("cnn") and args.cnn_videos < len(index.videos):
                import dataclasses

                kept = dict(list(index.videos.items())[:args.cnn_videos])
                subset = dataclasses.replace(index, videos=kept)
                note = f"on {len(kept)} of the videos"
            cases[f"{name} end to end"] = (
                lambda subset=subset, ext=ext: _end_to_end(subset, ext, tmp, args.batch), note)
        # name -> (half, one, two): the rows of each extractor timed with workers
        groups: dict[str, list[str]] = {}
        repeated = _repeated(index, args.worker_repeat)
        wframes = frames * args.worker_repeat
        from actrec import registry

        for wname in filter(None, args.workers_extractor.split(",")):
            def make(wname=wname):
                return registry.create("extractors", wname, {})

            make()  # fails here, before any timing, if it cannot start
            half = max(1, cores // 2)
            names = groups[wname] = []
            if cores >= 2:
                def confined(make=make, half=half):
                    with _cores(half):
                        return _end_to_end(repeated, make(), tmp, args.batch, 1)

                names.append(f"{wname}, 1 worker on {half} of the {cores} cores")
                cases[names[-1]] = (confined, f"{wframes} frames")
            for workers in (1, 2):
                names.append(f"{wname}, {workers} worker{'s' * (workers > 1)} on {cores} cores")
                cases[names[-1]] = (
                    lambda make=make, workers=workers: _end_to_end(repeated, make(), tmp,
                                                                   args.batch, workers),
                    f"{wframes} frames")
        worker_rows = [n for names in groups.values() for n in names]

        for run, _ in cases.values():  # warm-up: file cache, codecs, imports, worker spawn
            run()
            _remove_stores()
        samples: dict[str, list[Sample]] = {name: [] for name in cases}
        for _ in range(args.rounds):
            for name, (run, _) in cases.items():
                samples[name].append(_timed(run))
                _remove_stores()
        baseline = samples["decode only (baseline)"]
        for name, (_, note) in cases.items():
            rows[name] = _row(samples[name], baseline, note, startup=name in worker_rows,
                              lanes=" 2 workers " not in name)
        # CPU-based estimates for idle cores (what a loaded machine's wall clock cannot show).
        base = rows["decode only (baseline)"]
        reader_cpu = statistics.median(_READER_CPU[-args.rounds:]) / frames
        decoder_cpu = max(0.0, base["other_cpu_ms_per_frame"] / 1e3 - reader_cpu)
        decode_cpu = _decode_time(base["main_cpu_ms_per_frame"] / 1e3, reader_cpu, decoder_cpu,
                                  cores, measured=1.0 / statistics.median(b.fps for b in baseline))
        base["note"] = (f"CPU ms/frame: decord's decoding {1e3 * decoder_cpu:.3f}, the reader "
                        f"thread {1e3 * reader_cpu:.3f}; on idle cores about "
                        f"{1e3 * decode_cpu:.3f} ms/frame")

        def lanes(row) -> tuple[float, float]:
            return row["main_cpu_ms_per_frame"] / 1e3, row["other_cpu_ms_per_frame"] / 1e3

        for name, ext in extractors.items():
            if isinstance(ext, str):
                continue
            row = rows[f"{name} end to end"]
            row["idle_bound"] = _estimates(decode_cpu, *lanes(row), cores)[0]
            if not name.startswith("cnn"):
                row["compute_cpu_ms_per_frame"] = 1e3 * _compute_only(index, ext, args.batch)
        for names in groups.values():
            one, two = names[-2], names[-1]
            main, other = lanes(rows[one])
            rows[two]["idle_bound"] = bound = _estimates(decode_cpu, main, other, cores)[1]
            gain = statistics.median(b.fps / a.fps for a, b in zip(samples[one], samples[two]))
            steady = statistics.median(b.steady_fps / a.steady_fps
                                       for a, b in zip(samples[one], samples[two]))
            rows[two]["note"] = (
                f"{gain:.2f}x one worker ({steady:.2f}x after start-up); at most {bound:.2f}x "
                f"on idle cores: one worker takes {1e3 * main:.3f} (main thread) + "
                f"{1e3 * other:.3f} (other threads) CPU ms/frame, so at least "
                f"{1e3 * max(main, (main + other) / cores):.3f} ms/frame on {cores} cores, "
                f"and 2 workers at least {1e3 * max(main / 2, (main + other) / cores):.3f}")
            if len(names) == 3:
                scale = statistics.median(b.fps / a.fps for a, b in
                                          zip(samples[names[0]], samples[two]))
                rows[names[0]]["note"] = (f"2 workers on {cores} cores: {scale:.2f}x this "
                                          f"(scaling with cores)")
        videos = [str(r.path) for r in index.videos.values()]
        for python in [sys.executable, *args.python]:
            probe = _probe(python, videos, args.rounds, args.batch)
            label = f"decord {probe.get('decord', '?')} standalone ({python})"
            if "error" in probe:
                rows[label] = {"fps": None, "ratio": None, "note": probe["error"]}
            else:
                rows[label] = {"fps": probe["fps_median"],
                               "ratio": probe["fps_median"] / rows["decode only (baseline)"]["fps"],
                               "note": "not interleaved"}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    load_after = os.getloadavg() if hasattr(os, "getloadavg") else None
    meta = {"videos": len(index.videos), "frames": frames, "size": args.size, "cores": cores,
            "rounds": args.rounds, "batch": args.batch,
            "load_average_before": load, "load_average_after": load_after}
    if args.json:
        print(json.dumps({"benchmark": "extract", **meta, "results": rows}, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    def loads(values) -> str:
        return "?" if values is None else " ".join(f"{v:.1f}" for v in values)

    table = Table(title=f"extraction: {meta['videos']} videos, {frames} frames of "
                  f"{args.size}x{args.size}, {cores} cores, median of {args.rounds} "
                  f"interleaved rounds; load average {loads(load)} -> {loads(load_after)}")
    for col in ("case", "frames/s", "x decode only", "CPU ms/frame", "cores busy",
                "lanes: main + other ms/frame", "start-up s", "extractor alone CPU ms/frame",
                "idle bound", "note"):
        table.add_column(col, justify="left" if col in ("case", "note") else "right")

    def fmt(value, spec: str) -> str:
        return "-" if value is None else format(value, spec)

    for name, row in rows.items():
        lanes = "-" if row.get("main_cpu_ms_per_frame") is None else \
            f"{row['main_cpu_ms_per_frame']:.3f} + {row['other_cpu_ms_per_frame']:.3f}"
        table.add_row(name, fmt(row["fps"], ",.0f"), fmt(row["ratio"], ".2f"),
                      fmt(row.get("cpu_ms_per_frame"), ".3f"), fmt(row.get("cores_busy"), ".2f"),
                      lanes,
                      fmt(row.get("startup_s"), ".2f"),
                      fmt(row.get("compute_cpu_ms_per_frame"), ".3f"),
                      fmt(row.get("idle_bound"), ".2f"), row.get("note", ""))
    console = Console()
    if not console.is_terminal:  # a log file: wide enough for the notes
        console = Console(width=160)
    console.print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
