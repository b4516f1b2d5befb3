"""Benchmark: feature extraction throughput on the synthetic kitchen's videos, in one run.

Rows (frames per second, median of ``--rounds``):

* decode only: every frame read by the extraction host's decoder path (``open_video`` and
  the background reader), no extractor; the baseline of every ratio below;
* each built-in extractor end to end (decode, extract, write a fresh store), with its ratio
  to decode only (weight-free extractors should stay >= 0.8: decoding is the bottleneck);
  ``cnn`` runs a ResNet-18 state dict with random weights written for the run
  (``--cnn-size`` pixels, on ``--cnn-videos`` videos); extractors that cannot start with
  their default options are listed as skipped with the reason;
* ``colorgrad`` with 1 and 2 worker processes (target: 2 workers > 1.3x one);
* decoders: the same decode-only loop run standalone (``actrec/bench/decode_probe.py``) by
  this interpreter and by each ``--python`` given, e.g. a virtual environment with decord2.

Usage: ``python -m actrec.bench extract [--participants 3 --videos 2 --frames 400
--size 128] [--rounds 3] [--extractors colorgrad,flow] [--python PATH ...] [--json]``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def _kitchen(root: Path, args) -> tuple[Any, Any]:
    from actrec_plugins.datasets.synthetic import SyntheticKitchen

    dataset = SyntheticKitchen(SyntheticKitchen.Config(
        root=root, kitchen="a", participants=args.participants,
        videos_per_participant=args.videos, frames_mean=args.frames, size=args.size, seed=3,
        folds=min(3, args.participants)))
    return dataset, dataset.load()


def _decode_only(index, batch: int) -> float:
    """Frames per second of the host's decoding path alone (reader thread included)."""
    from actrec.extract_video import prefetch
    from actrec.io.video import open_video

    frames = 0
    t0 = time.perf_counter()
    for record in index.videos.values():
        reader = open_video(record.path, fps=record.fps, folder_fps=record.fps)

        def batches(reader=reader):
            for s in range(0, reader.num_frames, batch):
                yield reader.read(range(s, min(reader.num_frames, s + batch)))

        for b in prefetch(batches()):
            frames += b.shape[0]
    return frames / (time.perf_counter() - t0)


def _end_to_end(index, extractor, workdir: Path, batch: int, workers: int = 1) -> float:
    from actrec.extract import extract_features

    store = workdir / f"bench-{time.monotonic_ns()}.zarr"
    try:
        report = extract_features(index, extractor, store, dataset_ref="bench", workers=workers,
                                  batch_size=batch)
        if report.failed:
            raise RuntimeError(f"extraction failed: {report.failed[0]}")
        return report.frames / report.seconds
    finally:
        shutil.rmtree(store, ignore_errors=True)


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


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m actrec.bench extract")
    parser.add_argument("--participants", type=int, default=3)
    parser.add_argument("--videos", type=int, default=2, help="videos per participant")
    parser.add_argument("--frames", type=int, default=400, help="mean frames per video")
    parser.add_argument("--size", type=int, default=128, help="frame side in pixels")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--extractors", default=None,
                        help="comma-separated names (or module:Class); default: the built-ins")
    parser.add_argument("--python", action="append", default=[],
                        help="another interpreter whose decord to compare (repeatable)")
    parser.add_argument("--root", type=Path, default=None, help="keep the videos here")
    parser.add_argument("--cnn-size", type=int, default=112,
                        help="input side of the cnn extractor's ResNet-18")
    parser.add_argument("--cnn-videos", type=int, default=1,
                        help="videos the (slow on CPU) cnn extractor is timed on")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="actrec-bench-extract-"))
    try:
        _, index = _kitchen(args.root or tmp / "data", args)
        frames = sum(r.num_frames for r in index.videos.values())
        rows: dict[str, dict[str, Any]] = {}
        decode = statistics.median(_decode_only(index, args.batch) for _ in range(args.rounds))
        rows["decode only (baseline)"] = {"fps": decode, "ratio": 1.0}
        names = args.extractors.split(",") if args.extractors else None
        for name, ext in _extractors(names, tmp, args.cnn_size).items():
            if isinstance(ext, str):
                rows[f"{name}: skipped"] = {"fps": None, "ratio": None, "note": ext}
                continue
            subset, note = index, ""
            if name.startswith("cnn") and args.cnn_videos < len(index.videos):
                import dataclasses

                kept = dict(list(index.videos.items())[:args.cnn_videos])
                subset = dataclasses.replace(index, videos=kept)
                note = f"on {len(kept)} of the videos"
            fps = statistics.median(_end_to_end(subset, ext, tmp, args.batch)
                                    for _ in range(args.rounds))
            rows[f"{name} end to end"] = {"fps": fps, "ratio": fps / decode, "note": note}
        from actrec_plugins.extractors.colorgrad import ColorGradient

        one = statistics.median(_end_to_end(index, ColorGradient(), tmp, args.batch, 1)
                                for _ in range(args.rounds))
        two = statistics.median(_end_to_end(index, ColorGradient(), tmp, args.batch, 2)
                                for _ in range(args.rounds))
        rows["colorgrad, 1 worker"] = {"fps": one, "ratio": one / decode}
        rows["colorgrad, 2 workers"] = {"fps": two, "ratio": two / decode,
                                        "note": f"{two / one:.2f}x one worker"}
        videos = [str(r.path) for r in index.videos.values()]
        for python in [sys.executable, *args.python]:
            probe = _probe(python, videos, args.rounds, args.batch)
            label = f"decord {probe.get('decord', '?')} standalone ({python})"
            if "error" in probe:
                rows[label] = {"fps": None, "ratio": None, "note": probe["error"]}
            else:
                rows[label] = {"fps": probe["fps_median"], "ratio": probe["fps_median"] / decode}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    from actrec.extract_workers import cpu_cores

    meta = {"videos": len(index.videos), "frames": frames, "size": args.size,
            "cores": cpu_cores(), "rounds": args.rounds}
    if args.json:
        print(json.dumps({"benchmark": "extract", **meta, "results": rows}, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"extraction: {meta['videos']} videos, {frames} frames of "
                  f"{args.size}x{args.size}, {meta['cores']} cores (median of {args.rounds})")
    for col in ("case", "frames/s", "x decode only", "note"):
        table.add_column(col, justify="left" if col in ("case", "note") else "right")
    for name, row in rows.items():
        table.add_row(name, "-" if row["fps"] is None else f"{row['fps']:,.0f}",
                      "-" if row["ratio"] is None else f"{row['ratio']:.2f}",
                      row.get("note", ""))
    Console().print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
