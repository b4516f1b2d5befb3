"""Decode-only throughput of whatever ``decord`` this interpreter has, standalone.

Imports nothing from actrec (only decord and numpy), so that the extract benchmark can run it
with another interpreter, e.g. a virtual environment with ``decord2``, which installs the same
``decord`` module and cannot sit beside decord 0.6. Reads every frame of each video in batches,
as ``actrec.io.video`` does, and prints one JSON line.

    python actrec/bench/decode_probe.py --rounds 3 --batch 64 VIDEO...
"""

from __future__ import annotations

import argparse
import json
import statistics
import time


def decode_all(paths: list[str], batch: int, threads: int) -> int:
    import decord

    frames = 0
    for path in paths:
        vr = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=threads)
        n = len(vr)
        for start in range(0, n, batch):
            frames += vr.get_batch(list(range(start, min(n, start + batch)))).asnumpy().shape[0]
    return frames


def main(argv: list[str] | None = None) -> int:
    import decord

    parser = argparse.ArgumentParser()
    parser.add_argument("videos", nargs="+")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    decode_all(args.videos, args.batch, args.threads)  # warm-up: file cache, codec set-up
    rates = []
    frames = 0
    for _ in range(args.rounds):
        t0 = time.perf_counter()
        frames = decode_all(args.videos, args.batch, args.threads)
        rates.append(frames / (time.perf_counter() - t0))
    print(json.dumps({"decord": getattr(decord, "__version__", "?"), "frames": frames,
                      "fps_median": statistics.median(rates), "fps_max": max(rates)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
