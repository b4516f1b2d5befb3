"""Benchmark: the fused DDBN op against the pure-PyTorch reference, in the same run.

Forward (no grad) and forward+backward (gradients of h, alpha, gamma, beta) at a few shapes
``T,N,C,n1``; prints medians and reference/fused ratios, and the allocator settings in force.
``--pad F`` pads the last ``F`` of the timesteps of every other row (a padding mask, as short
windows give). Usage: ``python -m actrec.bench ddbn [--shape T,N,C,N1 ...] [--rounds N]
[--device cpu|cuda] [--pad F] [--threads K] [--tuned-malloc] [--json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from actrec.bench.common import TUNED_MALLOC_ENV, allocator_settings, interleaved

DEFAULT_SHAPES = ["200,128,512,64", "1,128,512,64", "50,64,256,32", "200,300,65,150"]


def _shape(text: str) -> tuple[int, int, int, int]:
    try:
        t, n, c, n1 = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected T,N,C,N1 (four integers), got {text!r}")
    if min(t, n, c) < 1 or not 0 <= n1 <= n:
        raise argparse.ArgumentTypeError(f"need T,N,C >= 1 and 0 <= N1 <= N, got {text!r}")
    return t, n, c, n1


def padding_mask(t: int, n: int, fraction: float, device: str):
    """mask [T, N]: every other row loses its last ``fraction`` of timesteps (None for 0)."""
    import torch

    if fraction <= 0:
        return None
    mask = torch.ones(t, n, dtype=torch.bool, device=device)
    mask[t - int(round(fraction * t)):, 1::2] = False
    return mask


def run_case(shape, *, device: str, dtype, rounds: int, warmup: int, pad: float = 0.0) -> dict:
    """Median seconds of the four candidates at one shape, and the two ratios."""
    import torch

    from actrec.ops.ddbn import ddbn
    from actrec.ops.ddbn_reference import ddbn_reference

    t, n, c, n1 = shape
    g = torch.Generator().manual_seed(0)
    h = torch.randn(t, n, c, generator=g).to(device, dtype)
    alpha = torch.tensor([0.75, 0.75], device=device)
    gamma = torch.full((c,), 0.1, device=device)
    beta = torch.zeros(c, device=device)
    gy = torch.randn(t, n, c, generator=g).to(device, dtype)
    leaves = [x.clone().requires_grad_() for x in (h, alpha, gamma, beta)]
    mask = padding_mask(t, n, pad, device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def forward(fn):
        def run():
            with torch.no_grad():
                fn(h, alpha, n1, gamma, beta, mask=mask)
            sync()
        return run

    def train(fn):
        def run():
            for x in leaves:
                x.grad = None
            y, _, _ = fn(leaves[0], leaves[1], n1, leaves[2], leaves[3], mask=mask)
            y.backward(gy)
            sync()
        return run

    timings = interleaved({"fused fwd": forward(ddbn), "reference fwd": forward(ddbn_reference),
                           "fused fwd+bwd": train(ddbn),
                           "reference fwd+bwd": train(ddbn_reference)},
                          warmup=warmup, rounds=rounds)
    med = {k: v.median for k, v in timings.items()}
    return {
        "shape": {"T": t, "N": n, "C": c, "n1": n1},
        "pad": pad,
        "timings": {k: v.to_dict() for k, v in timings.items()},
        "speedup_fwd": med["reference fwd"] / med["fused fwd"],
        "speedup_fwd_bwd": med["reference fwd+bwd"] / med["fused fwd+bwd"],
    }


def _render(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"DDBN: fused op vs reference ({report['device']}, {report['dtype']}, "
                        f"{report['threads']} threads, padding {report['pad']:.0%}; medians of "
                        f"{report['rounds']} rounds)")
    for col in ("T,N,C,n1", "fused fwd ms", "ref fwd ms", "fwd x", "fused f+b ms", "ref f+b ms",
                "f+b x"):
        table.add_column(col, justify="right", no_wrap=True)
    for case in report["cases"]:
        s, tm = case["shape"], case["timings"]
        ms = {k: v["median_s"] * 1e3 for k, v in tm.items()}
        table.add_row(f"{s['T']},{s['N']},{s['C']},{s['n1']}", f"{ms['fused fwd']:.2f}",
                      f"{ms['reference fwd']:.2f}", f"{case['speedup_fwd']:.1f}x",
                      f"{ms['fused fwd+bwd']:.2f}", f"{ms['reference fwd+bwd']:.2f}",
                      f"{case['speedup_fwd_bwd']:.1f}x")
    console = Console()
    console.width = max(console.width, 110)  # a pipe reports 80 columns: keep the table whole
    console.print(table)
    alloc = report["allocator"]
    console.print("allocator settings: " + (", ".join(f"{k}={v}" for k, v in alloc.items())
                                             if alloc else "glibc defaults (untuned)"))
    console.print(f"extension: {report['extension']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m actrec.bench ddbn",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=_shape, action="append",
                        help="T,N,C,N1 (repeatable); default: " + " ".join(DEFAULT_SHAPES))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--dtype", choices=["float32", "float64", "bfloat16", "float16"],
                        default="float32")
    parser.add_argument("--pad", type=float, default=0.0,
                        help="padded fraction of the timesteps of every other row (0..1)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--tuned-malloc", action="store_true",
                        help="re-run with the glibc settings of actrec.bench.common")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    if not 0.0 <= args.pad <= 1.0:
        parser.error(f"--pad must be between 0 and 1, got {args.pad}")

    if args.tuned_malloc and any(os.environ.get(k) != v for k, v in TUNED_MALLOC_ENV.items()):
        # glibc reads these at start-up: re-execute this benchmark with them set.
        rest = [a for a in (sys.argv[1:] if argv is None else argv)]
        env = {**os.environ, **TUNED_MALLOC_ENV}
        os.execve(sys.executable, [sys.executable, "-m", "actrec.bench.ddbn", *rest], env)

    import torch

    from actrec.ops import _ext
    from actrec.ops.ddbn import extension_ops

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device", file=sys.stderr)
        return 2
    if extension_ops() is None:
        print(f"the extension is not available: {_ext.status(build=False).reason}",
              file=sys.stderr)
        return 2
    st = _ext.status(build=False)
    shapes = args.shape or [_shape(s) for s in DEFAULT_SHAPES]
    dtype = getattr(torch, args.dtype)
    report = {
        "device": args.device,
        "dtype": args.dtype,
        "threads": torch.get_num_threads(),
        "rounds": args.rounds,
        "allocator": allocator_settings(),
        "extension": f"{st.backend}: {st.reason}",
        "pad": args.pad,
        "cases": [run_case(s, device=args.device, dtype=dtype, rounds=args.rounds,
                           warmup=args.warmup, pad=args.pad) for s in shapes],
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _render(report)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
