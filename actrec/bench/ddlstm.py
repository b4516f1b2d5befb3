"""``python -m actrec.bench ddlstm [--json] [--quick] [--default-malloc]``

Train step (forward + backward) of the fused whole-sequence DDLSTM and BNLSTM layer ops against
``torch.nn.LSTM`` of the same shape, timed round-robin in the same process (the ratio is the
number to read: these machines are noisy). Also: the fixed overhead per sequence at tiny sizes,
the saved activation memory per layer and sequence, the per-step Python-loop layers of
``actrec.nn`` for comparison, and the allocator settings in force.

By default the process re-executes itself once with ``TUNED_MALLOC_ENV`` (glibc no-trim) unless
those variables are already set; ``--default-malloc`` keeps the allocator as it is. Both sides of
every ratio always share one allocator.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from typing import Any

from actrec.bench.common import TUNED_MALLOC_ENV, allocator_settings, interleaved

_REEXEC_FLAG = "ACTREC_BENCH_REEXECED"


def _parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m actrec.bench ddlstm",
        description="Fused DDLSTM / BNLSTM layer train step vs torch.nn.LSTM, timed interleaved.")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument("--quick", action="store_true", help="T=50, fewer rounds, 1-layer D=64 only")
    p.add_argument("--default-malloc", action="store_true",
                   help="do not re-execute with the tuned glibc malloc settings")
    p.add_argument("--rounds", type=int, default=None, help="timed rounds per candidate")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: as is)")
    p.add_argument("--no-python-loop", action="store_true",
                   help="skip the (slow) per-step Python-loop layers of actrec.nn")
    return p.parse_args(argv)


def _maybe_reexec(args: argparse.Namespace, argv: list[str]) -> None:
    """Re-run this benchmark in a fresh process with the tuned allocator env (once)."""
    if args.default_malloc or os.environ.get(_REEXEC_FLAG):
        return
    if all(os.environ.get(k) == v for k, v in TUNED_MALLOC_ENV.items()):
        return
    env = dict(os.environ, **TUNED_MALLOC_ENV, **{_REEXEC_FLAG: "1"})
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable, "-m", "actrec.bench.ddlstm", *argv], env)


# --------------------------------------------------------------------------------------------
# Candidates


def _layer_params(d: int, h: int, gen) -> list:
    import torch

    def r(*shape, scale=0.1, shift=0.0):
        return (torch.randn(*shape, generator=gen) * scale + shift).requires_grad_()

    return [r(4 * h, d), r(4 * h, h), r(4 * h), r(4 * h, shift=0.1), r(4 * h),
            r(4 * h, shift=0.1), r(4 * h), r(h, shift=0.1), r(h),
            torch.tensor([0.75, 0.75], requires_grad=True)]


def _fused_step(x, grad, layers: list[list], n1: int, dual: bool) -> Callable[[], None]:
    """One train step through a stack of fused layers, running statistics updated as a module
    would (momentum 0.1, unbiased variance), gradients dropped afterwards."""
    import torch

    from actrec.ops.ddlstm_layer import ddlstm_layer

    t_len = x.shape[0]
    running = [[torch.zeros(2, t_len, p[0].shape[0]) for _ in range(4)]
               + [torch.zeros(t_len, p[7].shape[0]) for _ in range(2)] for p in layers]

    def step() -> None:
        h = x
        for p, rs in zip(layers, running):
            res = ddlstm_layer(h, *p, n1=n1, eps=1e-5, dual_domain=dual)
            st = res.stats
            with torch.no_grad():
                rs[0].lerp_(st.mean_x, 0.1)
                rs[1].lerp_(st.unbiased_var_x(), 0.1)
                rs[2].lerp_(st.mean_h, 0.1)
                rs[3].lerp_(st.unbiased_var_h(), 0.1)
                rs[4].lerp_(st.mean_c, 0.1)
                rs[5].lerp_(st.unbiased_var_c(), 0.1)
            h = res.out
        h.backward(grad)
        for p in layers:
            for t in p:
                t.grad = None

    return step


def _lstm_step(x, grad, lstm) -> Callable[[], None]:
    def step() -> None:
        out, _ = lstm(x)
        out.backward(grad)
        for p in lstm.parameters():
            p.grad = None

    return step


def _module_step(x, grad, model, domain) -> Callable[[], None]:
    def step() -> None:
        model(x, domain).backward(grad)
        for p in model.parameters():
            p.grad = None

    return step


def _python_loop_model(d: int, h: int, layers: int, t_len: int, dual: bool):
    """E1's per-step layers (actrec.nn) with the fused path switched off, or None."""
    try:
        from actrec.nn.lstm import BNLSTM, DDLSTM
    except ImportError:
        return None
    model = (DDLSTM if dual else BNLSTM)(d, h, num_layers=layers, max_len=t_len)
    for layer in model.layers:
        layer.fused = False
    return model.train()


def _saved_bytes(fn: Callable[[], Any]) -> int:
    """Bytes of the distinct storages autograd saves for backward while ``fn`` builds its graph
    (the graph is dropped afterwards)."""
    import torch

    seen: dict[tuple[int, int], int] = {}

    def pack(t):
        s = t.untyped_storage()
        seen[(s.data_ptr(), s.nbytes())] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    del out
    return sum(seen.values())


# --------------------------------------------------------------------------------------------
# Runs


def _config(name: str, t_len: int, n: int, d: int, h: int, layers: int, rounds: int,
            python_loop: bool) -> dict[str, Any]:
    import torch

    from actrec.ops.ddlstm_layer import ddlstm_layer

    gen = torch.Generator().manual_seed(0)
    n1 = n // 2
    x = torch.randn(t_len, n, d, generator=gen)
    grad = torch.randn(t_len, n, h, generator=gen)
    dd = [_layer_params(d if k == 0 else h, h, gen) for k in range(layers)]
    bn = [_layer_params(d if k == 0 else h, h, gen) for k in range(layers)]
    lstm = torch.nn.LSTM(d, h, num_layers=layers)
    fns = {
        "nn.LSTM": _lstm_step(x, grad, lstm),
        "DDLSTM fused": _fused_step(x, grad, dd, n1, True),
        "BNLSTM fused": _fused_step(x, grad, bn, n1, False),
    }
    if python_loop:
        domain = torch.cat([torch.zeros(n1, dtype=torch.long), torch.ones(n - n1, dtype=torch.long)])
        for dual, label in ((True, "DDLSTM python loop"), (False, "BNLSTM python loop")):
            model = _python_loop_model(d, h, layers, t_len, dual)
            if model is not None:
                fns[label] = _module_step(x, grad, model, domain)
    warmup = 1 if rounds <= 3 else 2
    timings = interleaved(fns, warmup=warmup, rounds=rounds)
    base = timings["nn.LSTM"].median
    rows = {k: {**v.to_dict(), "ms": v.median * 1e3, "ratio": v.median / base} for k, v in timings.items()}

    def fused_graph():
        return ddlstm_layer(x, *dd[0], n1=n1, eps=1e-5).out

    def lstm_graph():
        return torch.nn.LSTM(d, h)(x)[0]

    memory = {"DDLSTM fused": _saved_bytes(fused_graph) / 2**20,
              "nn.LSTM": _saved_bytes(lstm_graph) / 2**20}
    return {"name": name, "T": t_len, "N": n, "n1": n1, "D": d, "H": h, "layers": layers,
            "train_step": rows, "saved_MiB_per_layer": memory}


def run(quick: bool = False, rounds: int | None = None, python_loop: bool = True) -> dict[str, Any]:
    """All configurations; returns a JSON-able dict."""
    import torch

    from actrec.ops.ddlstm_layer import fused_layer_available

    if not fused_layer_available(torch.zeros(1, 1, 1)):
        raise SystemExit("the fused DDLSTM layer op is not available (extension not built or "
                         "ACTREC_DISABLE_EXT set): nothing to benchmark")
    t_len = 50 if quick else 200
    r = rounds or (3 if quick else 5)
    configs = [("1 layer, D=64", t_len, 128, 64, 128, 1, r, python_loop)]
    if not quick:
        configs += [("3 layers, D=64", t_len, 128, 64, 128, 3, r, False),
                    ("1 layer, D=2048", t_len, 128, 2048, 128, 1, max(3, r - 2), False)]
    configs.append(("tiny N=H=D=8 (fixed overhead)", t_len, 8, 8, 8, 1, r, False))
    results = [_config(*c) for c in configs]
    return {"benchmark": "ddlstm", "quick": quick, "threads": torch.get_num_threads(),
            "allocator": allocator_settings() or "default glibc", "configs": results,
            "targets": {"ratio": 1.5, "stretch_ratio": 1.25, "fixed_overhead_ms": 5.0,
                        "saved_MiB_per_layer": 150.0}}


def _render(res: dict[str, Any]):
    """One rich table: every configuration's candidates, times, ratios and saved memory."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    alloc = res["allocator"]
    alloc_text = (", ".join(f"{k}={v}" for k, v in alloc.items()) if isinstance(alloc, dict)
                  else alloc)
    table = Table(title=f"DDLSTM layer train step vs torch.nn.LSTM ({res['threads']} threads, "
                  f"medians of interleaved rounds)")
    for col in ("configuration", "candidate", "median ms", "min ms", "x nn.LSTM",
                "saved MiB/layer"):
        table.add_column(col, justify="left" if col in ("configuration", "candidate") else "right")
    for c in res["configs"]:
        shape = (f"{c['name']}\nT={c['T']} N={c['N']} ({c['n1']}+{c['N'] - c['n1']}) "
                 f"D={c['D']} H={c['H']}")
        mem = c["saved_MiB_per_layer"]
        for i, (k, v) in enumerate(c["train_step"].items()):
            saved = mem.get(k, mem.get("DDLSTM fused") if "fused" in k else None)
            table.add_row(shape if i == 0 else "", k, f"{v['ms']:.1f}", f"{v['min_s'] * 1e3:.1f}",
                          f"{v['ratio']:.2f}x", "" if saved is None else f"{saved:.1f}")
        table.add_section()
    t = res["targets"]
    notes = Text(f"allocator: {alloc_text}\ntargets: <= {t['ratio']}x nn.LSTM (stretch "
                 f"{t['stretch_ratio']}x), fixed overhead <= {t['fixed_overhead_ms']} ms (tiny "
                 f"config), saved <= {t['saved_MiB_per_layer']} MiB per layer")
    return Group(table, notes)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parse(argv)
    _maybe_reexec(args, argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    res = run(quick=args.quick, rounds=args.rounds, python_loop=not args.no_python_loop)
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        from rich.console import Console

        Console().print(_render(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
