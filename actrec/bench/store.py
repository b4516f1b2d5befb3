"""``python -m actrec.bench store [--json] [--frames T] [--dim D] [--dtype float16]``

What the sha256 check of a whole-video read (``FeatureStore.read``: the values read must hash
to what the video's commit recorded) costs, and where. One video of ``T x D`` features is
written to a store in a temp folder, then read over and over, the candidates interleaved so
that machine noise hits them alike:

* ``unchecked``: its two arrays read with zarr and converted (float32 features, int64
  labels), no digest: the baseline, what a whole read cost before it was checked;
* ``hashed after``: the same, then the digests computed the way the check first did (a copy of
  the features' bytes, then sha256 of them, after the read);
* ``store.read``: the read as it is now (the features hashed in a thread while the labels are
  read and the features converted; no copy of their bytes), beside ``store.read_window`` of
  all frames but the last (the same chunks and bookkeeping, no hash: a window is not hashed);

and, to say where the time goes, sha256 of the features' bytes alone, the float32 conversion
alone, and zarr's decoding of the features alone. Ratios are against ``unchecked`` of the same
run. The hashing overlaps the conversion only where a second core is free: compare
``cores free`` (CPUs less the load average) between runs.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any

from actrec.bench.common import positive_int, run_and_report


def _parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m actrec.bench store",
                                description="Cost of the sha256 check of whole-video reads.")
    p.add_argument("--json", action="store_true", help="one JSON object instead of a table")
    p.add_argument("--frames", type=positive_int, default=3000,
                   help="frames of the video (3000)")
    p.add_argument("--dim", type=positive_int, default=2048, help="feature length (2048)")
    p.add_argument("--dtype", choices=("float16", "float32"), default="float16")
    p.add_argument("--rounds", type=positive_int, default=15,
                   help="timed reads per candidate (15)")
    return p.parse_args(argv)


def run(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np
    import zarr

    from actrec.bench.common import interleaved
    from actrec.io.features import FeatureStore
    from actrec.io.integrity import array_digest

    with tempfile.TemporaryDirectory(prefix="actrec-bench-store-") as tmp:
        store = FeatureStore.open_or_create(
            Path(tmp) / "s.zarr", dataset="bench", split_scheme="default", classes=["a", "b"],
            splits={}, extractor="bench", extractor_config={}, lookahead=0, dtype=args.dtype)
        rng = np.random.default_rng(0)
        store.write_video("v", rng.normal(size=(args.frames, args.dim)).astype(np.float32),
                          rng.integers(0, 2, args.frames), fps=15.0, source=None)
        store = FeatureStore.open(store.path)
        arrays = store.video_dir("v")
        stored = zarr.open_array(store=str(arrays / "features"), mode="r")[...]

        def unchecked():
            feats = zarr.open_array(store=str(arrays / "features"), mode="r")[...]
            labels = zarr.open_array(store=str(arrays / "labels"), mode="r")[...]
            return np.asarray(feats, dtype=np.float32), np.asarray(labels, dtype=np.int64), \
                feats, labels

        def hashed_after():  # the check as first written: bytes copied, then hashed
            out, labels64, feats, labels = unchecked()
            for values in (feats, labels):
                hashlib.sha256(np.ascontiguousarray(values).tobytes()).hexdigest()
            return out, labels64

        candidates = {
            "unchecked": unchecked,
            "hashed after": hashed_after,
            "store.read": lambda: store.read("v"),
            # the same bookkeeping (attributes, chunk sizes) and chunks, no digest: a window
            "store.read_window, last frame left out (no hash)":
                lambda: store.read_window("v", 0, args.frames - 1),
            "sha256 of the features alone": lambda: array_digest(stored, args.dtype),
            "float32 conversion alone": lambda: np.asarray(stored, dtype=np.float32),
            "zarr decode of the features alone":
                lambda: zarr.open_array(store=str(arrays / "features"), mode="r")[...],
        }
        load = os.getloadavg()[0]
        timings = interleaved(candidates, warmup=2, rounds=args.rounds)
    base = timings["unchecked"].median
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "video": {"frames": args.frames, "dim": args.dim, "dtype": args.dtype,
                  "feature_mb": round(args.frames * args.dim * np.dtype(args.dtype).itemsize
                                      / 1e6, 1)},
        "cpus": cpus, "load_average": round(load, 2),
        "cores_free": round(max(0.0, (cpus or 1) - load), 2),
        "results": {name: {**t.to_dict(), "ratio_to_unchecked": t.median / base}
                    for name, t in timings.items()},
    }


def _render(res: dict[str, Any]):
    from rich.table import Table

    v = res["video"]
    table = Table(title=f"whole-video read of {v['frames']} x {v['dim']} {v['dtype']} "
                        f"({v['feature_mb']} MB of features); {res['cpus']} CPUs, load "
                        f"{res['load_average']}, ~{res['cores_free']} free")
    table.add_column("candidate")
    table.add_column("median ms", justify="right")
    table.add_column("min ms", justify="right")
    table.add_column("x unchecked", justify="right")
    for name, r in res["results"].items():
        table.add_row(name, f"{r['median_s'] * 1e3:.1f}", f"{r['min_s'] * 1e3:.1f}",
                      f"{r['ratio_to_unchecked']:.2f}")
    return table


def main(argv: list[str] | None = None) -> int:
    return run_and_report(run, _parse(list(argv or [])), _render)


if __name__ == "__main__":
    import sys

    raise SystemExit(main(sys.argv[1:]))
