"""Shared benchmark helpers: repeated timing, medians and the allocator settings in force."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# glibc settings that stop the allocator from returning memory to the OS between iterations;
# on this VM fresh pages are expensive to fault in (see the DDLSTM performance study).
TUNED_MALLOC_ENV = {
    "MALLOC_TRIM_THRESHOLD_": "68719476736",
    "MALLOC_MMAP_THRESHOLD_": "33554432",
    "MALLOC_TOP_PAD_": "1073741824",
}


def allocator_settings() -> dict[str, str]:
    """The malloc environment variables this process runs with (both sides of a ratio share it)."""
    keys = list(TUNED_MALLOC_ENV) + ["THP_MEM_ALLOC_ENABLE", "LD_PRELOAD"]
    return {k: os.environ[k] for k in keys if k in os.environ}


@dataclass(frozen=True)
class Timing:
    """Seconds per call over ``samples`` timed calls."""

    samples: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def minimum(self) -> float:
        return min(self.samples)

    def to_dict(self) -> dict[str, float]:
        return {"median_s": self.median, "min_s": self.minimum, "n": len(self.samples)}


def measure(fn: Callable[[], object], *, warmup: int = 2, repeat: int = 5) -> Timing:
    """Call ``fn`` ``warmup`` times untimed, then ``repeat`` times timed."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return Timing(tuple(samples))


def interleaved(fns: dict[str, Callable[[], object]], *, warmup: int = 2, rounds: int = 5
                ) -> dict[str, Timing]:
    """Time several candidates round-robin, so that machine noise hits them alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - t0)
    return {k: Timing(tuple(v)) for k, v in samples.items()}


def positive_int(text: str) -> int:
    """An argparse ``type``: an integer >= 1 (a size, a count of rounds), else argparse's
    usage error naming the option."""
    import argparse

    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def run_and_report(run: Callable[[Any], dict], args: Any,
                   render: Callable[[dict], object]) -> int:
    """``run(args)``, its wall time added as ``seconds``, printed by ``report`` (JSON for
    ``args.json``); returns the exit status, 0."""
    t0 = time.perf_counter()
    res = run(args)
    res["seconds"] = round(time.perf_counter() - t0, 1)
    return report(res, render, args.json)


def report(result: dict, render: Callable[[dict], object], as_json: bool) -> int:
    """Print a benchmark's ``result``: one JSON object (``as_json``) or the rich renderable
    ``render(result)`` makes; returns the exit status, 0."""
    if as_json:
        import json

        print(json.dumps(result, indent=2))
    else:
        from rich.console import Console

        Console().print(render(result))
    return 0
