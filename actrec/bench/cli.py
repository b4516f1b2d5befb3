"""Start-up time of the command line, against bare interpreter start-up in the same run."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

from actrec.bench.common import interleaved

CASES = {
    "python -c pass (baseline)": [sys.executable, "-c", "pass"],
    "actrec --help": [sys.executable, "-m", "actrec", "--help"],
    "actrec plugins": [sys.executable, "-m", "actrec", "plugins", "--json"],
    "python -c 'import torch' (reference)": [sys.executable, "-c", "import torch"],
}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m actrec.bench cli")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args(argv)

    def runner(cmd):
        return lambda: subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                      check=True)

    timings = interleaved({k: runner(v) for k, v in CASES.items()}, warmup=1, rounds=args.rounds)
    base = timings["python -c pass (baseline)"].median
    rows = {k: {**t.to_dict(), "ratio_to_baseline": t.median / base} for k, t in timings.items()}
    if args.json:
        print(json.dumps({"benchmark": "cli", "results": rows}, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title="CLI start-up (median of interleaved runs)")
    for col in ("command", "median ms", "min ms", "x python start-up"):
        table.add_column(col, justify="left" if col == "command" else "right")
    for name, row in rows.items():
        table.add_row(name, f"{1e3 * row['median_s']:.0f}", f"{1e3 * row['min_s']:.0f}",
                      f"{row['ratio_to_baseline']:.1f}x")
    Console().print(table)
    return 0
