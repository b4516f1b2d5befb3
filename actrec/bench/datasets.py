"""Benchmark: time to load the real Breakfast and 50 Salads annotations in shared/data.

Each loader is compared with a baseline measured in the same run: reading the raw bytes of
exactly the files it parses (so the ratio is the cost of parsing and building labels on top of
I/O). Usage: ``python -m actrec.bench.datasets [--data DIR] [--rounds N] [--json]``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from actrec.bench.common import interleaved


def default_data_dir() -> Path:
    """``shared/data`` beside the repository (``<repo>/../shared/data``)."""
    return Path(__file__).resolve().parents[3] / "shared" / "data"


def _read_bytes(paths: list[Path]) -> Callable[[], int]:
    def run() -> int:
        return sum(len(p.read_bytes()) for p in paths)
    return run


def cases(data: Path) -> dict[str, tuple[Callable[[], object], list[Path]]]:
    """``case -> (load function, the files it reads)``."""
    from actrec_plugins.datasets.breakfast import Breakfast
    from actrec_plugins.datasets.salads import Salads

    bf, sal = data / "breakfast", data / "50salads"

    def load(cls, **options):
        return lambda: cls(cls.Config(**options)).load()

    bundles = sorted((bf / "splits").glob("*.bundle"))
    return {
        "breakfast coarse .txt": (load(Breakfast, root=bf, source="coarse"),
                                  sorted(bf.glob("segmentation_coarse/*/*.txt"))
                                  + [bf / "mapping.txt"]),
        "breakfast .xml": (load(Breakfast, root=bf, source="xml"),
                           sorted(bf.glob("segmentation_xml/*/*.xml")) + [bf / "mapping.txt"]),
        "breakfast MS-TCN + bundles": (
            load(Breakfast, root=bf, source="mstcn", split_scheme="bundles"),
            sorted(bf.glob("groundTruth/*.txt")) + [bf / "mapping.txt"] + bundles),
        "50 Salads MS-TCN (577,595 frames)": (
            load(Salads, root=sal), sorted(sal.glob("groundTruth/*.txt"))
            + [sal / "mapping.txt"] + sorted((sal / "splits").glob("*.bundle"))),
        "50 Salads annotations (low)": (
            load(Salads, root=sal, source="annotations", label_set="low", start_us=0,
                 split_scheme="person"),
            sorted(sal.glob("annotations/*.txt")) + sorted(sal.glob("labels/**/*.txt"))
            + [sal / "mapping.txt"]),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m actrec.bench.datasets",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=default_data_dir())
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    if not args.data.is_dir():
        print(f"data folder not found: {args.data}", file=sys.stderr)
        return 2
    results = {}
    for case, (fn, paths) in cases(args.data).items():
        timings = interleaved({"load": fn, "read bytes": _read_bytes(paths)},
                              warmup=1, rounds=args.rounds)
        load, base = timings["load"].median, timings["read bytes"].median
        results[case] = {"files": len(paths), "load_s": load, "read_bytes_s": base,
                         "ratio": load / base if base > 0 else float("inf")}
    if args.json:
        print(json.dumps({"data": str(args.data), "rounds": args.rounds, "cases": results},
                         indent=2))
        return 0
    print(f"{'case':36} {'files':>6} {'load ms':>9} {'bytes ms':>9} {'ratio':>7}")
    for case, r in results.items():
        print(f"{case:36} {r['files']:6d} {r['load_s'] * 1e3:9.1f} "
              f"{r['read_bytes_s'] * 1e3:9.2f} {r['ratio']:7.1f}x")
    total = sum(r["load_s"] for r in results.values())
    print(f"all cases: {total * 1e3:.0f} ms (median per case, summed)")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
