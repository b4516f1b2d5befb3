"""``python -m actrec.bench live [--json] [--quick] [--demo DIR]``

Live recognition (``actrec live``) of synthetic-kitchen mp4s with the ``lstm`` and ``ddlstm``
runs of the demo (``actrec demo``'s ``lstm-joint`` and ``ddlstm-joint`` under ``--demo``,
default the workspace's demo folder; where they are missing, runs of the same shape are
trained here for a few iterations: speed does not depend on the weights). Prints, per run:

* the per-frame latency of the whole pipeline for one stream (decode + extract + step; median
  and p99) and its split by stage, and frames/s for one stream (as fast as possible);
* the number of streams processed in real time at 15 fps: the largest N (doubling, then
  bisecting) whose N streams, stepped in one batch per tick by ``actrec.live.run_live``, each
  get >= 15 frames/s;

and the 3-layer (x 128) DDLSTM step alone, one stream, one thread, in frames/s, with
``torch.nn.LSTM`` of the same shape stepped in the same run as the baseline (the ratio is the
number to read on a noisy machine).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from actrec.bench.common import run_and_report

REALTIME_FPS = 15.0


def _parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m actrec.bench live",
                                description="Live recognition latency, throughput and streams "
                                "in real time; the DDLSTM step alone vs torch.nn.LSTM.")
    p.add_argument("--json", action="store_true", help="one JSON object instead of tables")
    p.add_argument("--quick", action="store_true", help="fewer frames and steps (a smoke run)")
    p.add_argument("--demo", type=Path, default=None,
                   help="demo folder whose runs/lstm-joint and runs/ddlstm-joint to use "
                   "(default: the workspace's)")
    p.add_argument("--frames", type=int, default=None, help="frames per stream (default 300)")
    p.add_argument("--max-streams", type=int, default=32)
    return p.parse_args(argv)


def _runs(demo: Path | None, tmp: Path, progress: Any) -> tuple[dict[str, Path], list[str]]:
    """The demo's lstm and ddlstm runs, or runs of the demo's shape trained briefly here;
    and kitchen-a videos (64 x 64 at 15 fps, as the demo's)."""
    from actrec.demo import DemoPlan
    from actrec.io.features import FeatureStore
    from actrec.workspace import home

    demo = demo or home() / "demo"
    wanted = {"lstm": demo / "runs" / "lstm-joint", "ddlstm": demo / "runs" / "ddlstm-joint"}
    if all((p / "checkpoint.pt").is_file() for p in wanted.values()):
        store = FeatureStore.open(demo / "features" / "a.zarr")
        return wanted, [store.video_attrs(v)["source"]["path"] for v in store.videos()]
    from actrec.pipeline import extract_dataset, train_from_refs

    kitchen = {"participants": "3", "videos_per_participant": "1", "frames_mean": "300",
               "root": str(tmp / "data")}
    stores = []
    for k in "ab":
        out = tmp / f"{k}.zarr"
        extract_dataset(f"synthetic:kitchen={k}", dataset_options=kitchen, out=out,
                        progress=progress)
        stores.append(str(out))
    options = {name: opts for name, model, _, opts in DemoPlan().runs if name.endswith("joint")}
    runs = {}
    for model in ("lstm", "ddlstm"):
        runs[model] = train_from_refs(model, d1=stores[0], d2=stores[1],
                                      model_options=options[f"{model}-joint"],
                                      run_dir=tmp / model, history=64, iterations=5,
                                      mix=(4, 4), optimizer="adam", progress=progress).run_dir
    store = FeatureStore.open(stores[0])
    return runs, [store.video_attrs(v)["source"]["path"] for v in store.videos()]


def _one_stream(run: Path, video: str, frames: int) -> dict[str, Any]:
    """Latency per stage and frames/s of one stream through ``run_live`` (fast mode)."""
    from actrec.live import run_live
    from actrec.recognizer import Recognizer

    class Keep:
        def __init__(self) -> None:
            self.timings: list[dict[str, float]] = []

        def on_frame(self, stream, frame, record) -> None:
            self.timings.append(record["timings_ms"])

    rec = Recognizer.from_run(run)
    keep = Keep()
    report = run_live(rec, [video], sinks=[keep], max_frames=frames)
    status = report.streams[0]
    if status.status != "ended":
        raise RuntimeError(status.error)
    rows = keep.timings[1:]  # the first frame waited on no decoding (run_live peeked it)
    stages = {}
    for stage in ("decode", "extract", "step"):
        values = [r[stage] for r in rows]
        stages[stage] = _stats(values)
    total = [sum(r.values()) for r in rows]
    # from the clock's start: opening the source and the warm-up are not frames' time
    return {"frames": status.frames, "fps": report.frames_per_second(0),
            "latency_ms": _stats(total), "stages_ms": stages,
            "decode_cost_ms": _decode_cost(video, rec.fps, frames)}


def _decode_cost(video: str, fps: float, frames: int) -> float:
    """Milliseconds per frame to decode ``video`` alone: the decode stage above is the time a
    frame was waited for, which the background decoding thread mostly hides."""
    from actrec.live_sources import open_source

    t0 = time.perf_counter()
    n = 0
    for n, _ in enumerate(open_source(video, fps).frames(), start=1):
        if n >= frames:
            break
    return round((time.perf_counter() - t0) * 1e3 / max(n, 1), 3)


def _stats(values: list[float]) -> dict[str, float]:
    import numpy as np

    return {"median": round(statistics.median(values), 3),
            "p99": round(float(np.percentile(values, 99)), 3)}


def _streams_in_real_time(run: Path, video: str, frames: int, most: int) -> dict[str, Any]:
    """The largest N whose N streams (stepped in one batch per tick) each keep 15 frames/s."""
    from actrec.live import run_live
    from actrec.recognizer import Recognizer

    tried: dict[int, float] = {}

    def rate(n: int) -> float:
        if n not in tried:
            rec = Recognizer.from_run(run, streams=n)
            report = run_live(rec, [video] * n, max_frames=frames)
            done = min(s.frames for s in report.streams)
            tried[n] = done / report.running_seconds  # per stream, opening not counted
        return tried[n]

    n = 1
    while n <= most and rate(n) >= REALTIME_FPS:
        n *= 2
    lo, hi = (n // 2, min(n, most + 1)) if n > 1 else (0, 1)
    while hi - lo > 1:  # lo keeps up, hi does not (or is past the limit)
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if rate(mid) >= REALTIME_FPS else (lo, mid)
    return {"streams": lo, "capped": lo >= most,  # capped: more might keep up
            "per_stream_fps": {str(k): round(v, 1) for k, v in sorted(tried.items())}}


def _step_alone(steps: int) -> dict[str, Any]:
    """3-layer x 128 DDLSTM step vs torch.nn.LSTM of the same shape: one stream, one thread,
    eval mode, timed round-robin."""
    import torch

    from actrec import registry
    from actrec.bench.common import interleaved

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        width, classes = 134, 13
        models = {"ddlstm": registry.create("models", "ddlstm", {"max_len": "64"}),
                  "lstm": registry.create("models", "lstm", {"layers": "3"})}
        built = {k: m.build(width, classes).eval() for k, m in models.items()}
        x = torch.randn(steps, 1, width)
        dom = torch.zeros(1, dtype=torch.long)

        def stepper(model):
            def run() -> None:
                with torch.no_grad():
                    state = model.init_state(1, dom)
                    for t in range(steps):
                        _, state = model.step(x[t], state)
            return run

        timing = interleaved({k: stepper(m) for k, m in built.items()}, warmup=1, rounds=3)
    finally:
        torch.set_num_threads(threads)
    fps = {k: steps / t.median for k, t in timing.items()}
    return {"steps": steps, "frames_per_s": {k: round(v, 1) for k, v in fps.items()},
            "ddlstm_vs_lstm": round(fps["ddlstm"] / fps["lstm"], 3)}


def run(args: argparse.Namespace) -> dict[str, Any]:
    from actrec.cli.common import make_progress

    frames = args.frames or (60 if args.quick else 300)
    tmp = Path(tempfile.mkdtemp(prefix="actrec-bench-live-"))
    with make_progress() as progress:
        runs, videos = _runs(args.demo, tmp, progress)
    video = max(videos, key=lambda v: Path(v).stat().st_size)
    out: dict[str, Any] = {"cores": os.cpu_count(), "load": os.getloadavg()
                           if hasattr(os, "getloadavg") else None, "frames": frames,
                           "video": video, "runs": {}}
    for name, run_dir in runs.items():
        out["runs"][name] = {"run": str(run_dir), **_one_stream(run_dir, video, frames),
                             "realtime": _streams_in_real_time(run_dir, video,
                                                               min(frames, 90),
                                                               4 if args.quick
                                                               else args.max_streams)}
    out["step_alone"] = _step_alone(200 if args.quick else 2000)
    return out


def _render(res: dict[str, Any]):
    from rich.console import Group
    from rich.table import Table

    table = Table(title=f"actrec live, one stream ({res['frames']} frames, {res['cores']} "
                        f"cores, load {res['load'][0]:.1f})" if res["load"] else "actrec live")
    for col in ("run", "frames/s", "latency ms median", "p99", "decode wait ms med / p99",
                "extract", "step", "decode cost ms", "streams at 15 fps"):
        table.add_column(col, justify="right")
    for name, r in res["runs"].items():
        s = r["stages_ms"]
        table.add_row(name, f"{r['fps']:.0f}", f"{r['latency_ms']['median']:.2f}",
                      f"{r['latency_ms']['p99']:.2f}",
                      *(f"{s[k]['median']:.2f} / {s[k]['p99']:.2f}" for k in
                        ("decode", "extract", "step")), f"{r['decode_cost_ms']:.2f}",
                      (">= " if r["realtime"]["capped"] else "") + str(r["realtime"]["streams"]))
    step = res["step_alone"]
    alone = Table(title="model step alone: 3 x 128, one stream, one thread")
    for col in ("model", "frames/s"):
        alone.add_column(col, justify="right")
    for k, v in step["frames_per_s"].items():
        alone.add_row(k, f"{v:.0f}")
    alone.add_row("ddlstm / lstm", f"{step['ddlstm_vs_lstm']:.2f}x")
    return Group(table, alone)


def main(argv: list[str] | None = None) -> int:
    return run_and_report(run, _parse(list(argv or [])), _render)
