"""``python -m actrec.bench ddlstm [--json] [--quick] [--default-malloc]``

Train step (forward + backward) of the fused whole-sequence DDLSTM and BNLSTM layer ops against
``torch.nn.LSTM`` of the same shape, timed round-robin in the same process (the ratio is the
number to read: these machines are noisy). Also: the fixed overhead per sequence at tiny sizes,
the saved activation memory per layer and sequence, the per-step Python-loop layers of
``actrec.nn`` for comparison, the allocator settings in force, the CPU model and its vector
extensions, the per-step recurrent GEMMs timed inside the op (its phase timers, or the
profiler where the op calls the BLAS per step) beside the same GEMMs alone, where one train
step's time goes (the op's phase timers), and the evaluation-mode whole-sequence forward (frames/s: fused op, per-step Python
loop, nn.LSTM).

By default the process re-executes itself once with ``TUNED_MALLOC_ENV`` (glibc no-trim) unless
those variables are already set; ``--default-malloc`` keeps the allocator as it is. Both sides of
every ratio always share one allocator.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

from actrec.bench.common import (
    TUNED_MALLOC_ENV,
    allocator_settings,
    interleaved,
    report,
)

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


def cpu_description() -> dict[str, Any]:
    """The CPU model, its SIMD extensions (from /proc/cpuinfo where there is one) and the
    vector ISA torch's kernels dispatch to: what a ratio from another machine depends on."""
    import platform

    import torch

    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and model in ("", platform.machine(), platform.processor()):
                    model = value.strip()
                elif key.strip() == "flags" and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    simd = sorted(f for f in flags if f.startswith(("avx", "amx", "fma", "sse4")))
    return {"model": model, "logical_cpus": os.cpu_count(), "vector_extensions": simd,
            "torch_cpu_capability": torch.backends.cpu.get_cpu_capability()}


def _mm_avg_us(prof, shapes: list[list[int]], min_calls: int = 1) -> float | None:
    """Mean self time (us) of the ``aten::mm`` calls whose first two inputs have ``shapes``,
    or None when there are fewer than ``min_calls`` of them."""
    for e in prof.key_averages(group_by_input_shape=True):
        if (e.key == "aten::mm" and [list(s) for s in e.input_shapes[:2]] == shapes
                and e.count >= min_calls):
            return e.self_cpu_time_total / e.count
    return None


def step_phases(x, grad, layers: list[list], n1: int, rounds: int) -> dict[str, Any] | None:
    """Where one fused train step's time goes, from the op's phase timers
    (``actrec.ops.ddlstm_layer.timed_phases``): medians over rounds, in ms per train step
    (forward and backward of every layer, running statistics updated), per-thread times as
    the mean over the region's threads (they run at the same time); ``gemm_us_per_step_*``:
    one step's recurrent GEMM inside the op, per thread. None when the extension has no
    phase timers."""
    import statistics
    import time

    from actrec.errors import ConfigError
    from actrec.ops.ddlstm_layer import timed_phases

    step = _fused_step(x, grad, layers, n1, True)
    step()
    rows: list[dict[str, float]] = []
    for _ in range(rounds):
        try:
            t0 = time.perf_counter()
            with timed_phases() as ph:
                step()
            wall = (time.perf_counter() - t0) * 1e3
        except ConfigError:
            return None
        th = max(1.0, ph["threads"])
        ms = {k: v / 1e3 for k, v in ph.items() if not k.endswith(("_steps", "threads"))}
        rows.append({
            "step": wall,
            "fwd_x_proj": ms["x_proj"], "fwd_x_stats": ms["x_stats"],
            "fwd_gemm": ms["fwd_gemm"] / th + ms["fwd_gemm_outside"],
            "fwd_kernels": ms["fwd_kernels"] / th,
            "fwd_wait": ms["fwd_region"] - ms["fwd_busy"],
            "fwd_other": (ms["fwd_total"] - ms["x_proj"] - ms["x_stats"] - ms["fwd_region"]
                          - ms["fwd_gemm_outside"]),
            "bwd_gemm": ms["bwd_gemm"] / th + ms["bwd_gemm_outside"],
            "bwd_kernels": ms["bwd_kernels"] / th,
            "bwd_wait": ms["bwd_region"] - ms["bwd_busy"],
            "bwd_weight_grads": ms["weight_grads"],
            "bwd_other": (ms["bwd_total"] - ms["bwd_region"] - ms["weight_grads"]
                          - ms["bwd_gemm_outside"]),
            "outside_ops": wall - ms["fwd_total"] - ms["bwd_total"],
            "gemm_us_per_step_fwd": (ph["fwd_gemm"] / th + ph["fwd_gemm_outside"])
            / max(1.0, ph["fwd_steps"]),
            "gemm_us_per_step_bwd": (ph["bwd_gemm"] / th + ph["bwd_gemm_outside"])
            / max(1.0, ph["bwd_steps"]),
            "threads": ph["threads"],
        })
    return {k: statistics.median(r[k] for r in rows) for k in rows[0]}


# What the torch profiler's C++ side (kineto) prints on stderr at every start and stop,
# whatever KINETO_LOG_LEVEL says: "USDT:... profiler_start", "STAGE:... Completed Stage".
_PROFILER_CHATTER = ("USDT:", "STAGE:")


@contextlib.contextmanager
def quiet_profiler_logs() -> Iterator[None]:
    """Run the block with file descriptor 2 captured, then write back to stderr every line of
    it except the profiler's own start/stop chatter (``_PROFILER_CHATTER``): other output,
    errors included, still reaches the user, after the block."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            kept = [line for line in captured.read().splitlines(keepends=True)
                    if not line.startswith(tuple(c.encode() for c in _PROFILER_CHATTER))]
            if kept:
                sys.stderr.buffer.write(b"".join(kept))
                sys.stderr.flush()


def gemm_inside_vs_alone(x, grad, layers: list[list], n1: int, rounds: int,
                         phases: dict[str, Any] | None = None) -> dict[str, Any]:
    """The per-step recurrent GEMMs of one fused train step (forward ``h W_hh^T``
    [N, H] x [H, 4H]; backward ``dgh W_hh`` [N, 4H] x [4H, H]) inside the op, and the same
    products on the same shapes alone, in the same profiler, interleaved (medians over rounds,
    microseconds per call). Inside the op: from ``phases`` (:func:`step_phases`) when given:
    the per-thread time of one step's GEMM, which each thread computes for its own columns
    at the same time as the others (so it compares with the whole product alone on the same
    threads); else from the profiler where the op calls the BLAS once per step, and n/a where
    the GEMM runs inside the step region. ``op_step_*``: the whole op per step (GEMM + fused
    step kernel + the op's all-T passes spread over T)."""
    import statistics

    import torch
    from torch.profiler import ProfilerActivity, profile

    n, hid = x.shape[1], layers[0][1].shape[1]
    step = _fused_step(x, grad, layers, n1, True)
    w = layers[0][1].detach()  # [4H, H]
    a, d = torch.randn(n, hid), torch.randn(n, 4 * hid)
    o1, o2 = torch.empty(n, 4 * hid), torch.empty(n, hid)
    fwd_shape, bwd_shape = [[n, hid], [hid, 4 * hid]], [[n, 4 * hid], [4 * hid, hid]]
    got: dict[str, list[float]] = {"inside_fwd": [], "inside_bwd": [], "alone_fwd": [],
                                   "alone_bwd": [], "op_step_fwd": [], "op_step_bwd": []}
    step()
    for _ in range(rounds):
        with quiet_profiler_logs(), \
                profile(activities=[ProfilerActivity.CPU], record_shapes=True) as p:
            step()
        for k, sh in (("inside_fwd", fwd_shape), ("inside_bwd", bwd_shape)):
            v = _mm_avg_us(p, sh, min_calls=max(2, x.shape[0] // 2))
            if v is not None:  # the op calls the BLAS per step (no in-region GEMM here)
                got[k].append(v)
        for e in p.key_averages():  # whole op per step: GEMM + fused step kernel
            if e.key in ("actrec::ddlstm_layer_forward", "actrec::ddlstm_layer_backward"):
                key = "op_step_fwd" if e.key.endswith("forward") else "op_step_bwd"
                got[key].append(e.cpu_time_total / x.shape[0])
        with quiet_profiler_logs(), \
                profile(activities=[ProfilerActivity.CPU], record_shapes=True) as p:
            for _ in range(x.shape[0]):
                torch.mm(a, w.t(), out=o1)
                torch.mm(d, w, out=o2)
        got["alone_fwd"].append(_mm_avg_us(p, fwd_shape) or float("nan"))
        got["alone_bwd"].append(_mm_avg_us(p, bwd_shape) or float("nan"))
    med = {k: statistics.median(v) if v else None for k, v in got.items()}
    if phases is not None:
        for k in ("fwd", "bwd"):
            if med[f"inside_{k}"] is None:
                med[f"inside_{k}"] = phases[f"gemm_us_per_step_{k}"]
    flops = 2 * n * hid * 4 * hid
    out: dict[str, Any] = {"us": med, "gflops_alone_fwd": flops / med["alone_fwd"] / 1e3}
    for k in ("fwd", "bwd"):
        inside, alone, whole = med[f"inside_{k}"], med[f"alone_{k}"], med[f"op_step_{k}"]
        out[f"ratio_{k}"] = None if inside is None else inside / alone
        out[f"op_step_over_gemm_{k}"] = None if whole is None else whole / alone
    return out


def eval_throughput(t_len: int, n: int, d: int, h: int, layers: int, rounds: int) -> dict[str, Any]:
    """Evaluation-mode whole-sequence forward (no_grad, running statistics) in frames/s:
    the fused op, the per-step Python loop of ``actrec.nn`` and torch.nn.LSTM, interleaved."""
    import torch

    from actrec.nn.lstm import DDLSTM

    gen = torch.Generator().manual_seed(1)
    x = torch.randn(t_len, n, d, generator=gen)
    dom = torch.cat([torch.zeros(n // 2, dtype=torch.long), torch.ones(n - n // 2, dtype=torch.long)])
    model = DDLSTM(d, h, num_layers=layers, max_len=t_len).eval()
    lstm = torch.nn.LSTM(d, h, num_layers=layers).eval()

    def run(fused: bool) -> Callable[[], None]:
        def f() -> None:
            for layer in model.layers:
                layer.fused = fused
            with torch.no_grad():
                model(x, dom)
        return f

    def run_lstm() -> None:
        with torch.no_grad():
            lstm(x)

    fns = {"DDLSTM fused eval": run(True), "DDLSTM python loop": run(False), "nn.LSTM": run_lstm}
    timings = interleaved(fns, warmup=1, rounds=rounds)
    fps = {k: t_len * n / v.median for k, v in timings.items()}
    return {"T": t_len, "N": n, "D": d, "H": h, "layers": layers, "frames_per_s": fps,
            "fused_over_python_loop": fps["DDLSTM fused eval"] / fps["DDLSTM python loop"]}


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
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(t_len, 128, 64, generator=gen)
    grad = torch.randn(t_len, 128, 128, generator=gen)
    one_layer = [_layer_params(64, 128, gen)]
    phases = step_phases(x, grad, one_layer, 64, r)
    gemm = gemm_inside_vs_alone(x, grad, one_layer, 64, r, phases)
    ev = [eval_throughput(500 if quick else 2000, 1, 64, 128, 3, max(2, r - 2)),  # per video
          eval_throughput(t_len, 128, 64, 128, 3, max(2, r - 2))]  # a batch of windows
    return {"benchmark": "ddlstm", "quick": quick, "threads": torch.get_num_threads(),
            "cpu": cpu_description(), "allocator": allocator_settings() or "default glibc",
            "configs": results, "gemm_inside_vs_alone": gemm, "step_phases": phases,
            "eval_forward": ev,
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
    g = res["gemm_inside_vs_alone"]
    us = g["us"]

    def fmt(v):
        return "n/a" if v is None else f"{v:.1f}"

    gemm = Table(title="Per-step recurrent GEMMs of the fused layer (1 layer, D=64): inside the op "
                 "(per thread: each computes its columns at once) vs alone (us per call, medians)")
    for col in ("GEMM", "inside op", "whole op per step", "GEMM alone", "inside / alone",
                "op step / GEMM alone"):
        gemm.add_column(col, justify="left" if col == "GEMM" else "right")
    for k, label in (("fwd", "forward h W_hh^T [N,H]x[H,4H]"), ("bwd", "backward dG W_hh [N,4H]x[4H,H]")):
        ratio, whole = g[f"ratio_{k}"], g[f"op_step_over_gemm_{k}"]
        gemm.add_row(label, "n/a (in step region)" if us[f"inside_{k}"] is None else fmt(us[f"inside_{k}"]),
                     fmt(us[f"op_step_{k}"]), fmt(us[f"alone_{k}"]),
                     "n/a" if ratio is None else f"{ratio:.2f}x",
                     "n/a" if whole is None else f"{whole:.2f}x")
    evs = res["eval_forward"]
    evt = Table(title="Evaluation-mode whole-sequence forward (no_grad, running statistics), "
                "frames/s")
    for col in ("configuration", "candidate", "frames/s", "x python loop"):
        evt.add_column(col, justify="left" if col in ("configuration", "candidate") else "right")
    for ev in evs:
        loop = ev["frames_per_s"]["DDLSTM python loop"]
        shape = f"{ev['layers']} layers x {ev['H']}, T={ev['T']} N={ev['N']} D={ev['D']}"
        for i, (k, v) in enumerate(ev["frames_per_s"].items()):
            evt.add_row(shape if i == 0 else "", k, f"{v:,.0f}", f"{v / loop:.1f}x")
        evt.add_section()
    cpu = res["cpu"]
    t = res["targets"]
    notes = Text(f"CPU: {cpu['model']} ({cpu['logical_cpus']} logical CPUs; torch kernels: "
                 f"{cpu['torch_cpu_capability']}; {' '.join(cpu['vector_extensions'])})\n"
                 f"allocator: {alloc_text}\ntargets: <= {t['ratio']}x nn.LSTM (stretch "
                 f"{t['stretch_ratio']}x), fixed overhead <= {t['fixed_overhead_ms']} ms (tiny "
                 f"config), saved <= {t['saved_MiB_per_layer']} MiB per layer")
    parts = [table, gemm]
    ph = res.get("step_phases")
    if ph is not None:
        pt = Table(title=f"Where one fused train step's time goes (1 layer, D=64; op phase timers, "
                   f"ms per step, medians; per-thread parts: mean of {ph['threads']:.0f} threads)")
        for col in ("part", "ms", "share"):
            pt.add_column(col, justify="left" if col == "part" else "right")
        labels = (("fwd_x_proj", "forward: x W_ih^T (per chunk of steps)"),
                  ("fwd_x_stats", "forward: its DDBN statistics"),
                  ("fwd_gemm", "forward: step GEMMs h W_hh^T (per thread)"),
                  ("fwd_kernels", "forward: step kernels (per thread)"),
                  ("fwd_wait", "forward: fork/join, waiting"),
                  ("fwd_other", "forward: rest of the op"),
                  ("bwd_gemm", "backward: step GEMMs dG W_hh (per thread)"),
                  ("bwd_kernels", "backward: step kernels (per thread)"),
                  ("bwd_wait", "backward: fork/join, waiting"),
                  ("bwd_weight_grads", "backward: weight-gradient GEMMs (per chunk of steps)"),
                  ("bwd_other", "backward: rest of the op"),
                  ("outside_ops", "outside the ops (Python, autograd, running statistics)"))
        for key, label in labels:
            pt.add_row(label, f"{ph[key]:.1f}", f"{ph[key] / ph['step']:.0%}")
        pt.add_section()
        pt.add_row("train step (wall)", f"{ph['step']:.1f}", "100%")
        parts.append(pt)
    return Group(*parts, evt, notes)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parse(argv)
    _maybe_reexec(args, argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    res = run(quick=args.quick, rounds=args.rounds, python_loop=not args.no_python_loop)
    return report(res, _render, args.json)


if __name__ == "__main__":
    sys.exit(main())
