"""Latency and throughput of a causal model's online step, measured on real test frames.

What is measured (recorded with every online and look-ahead result, per dataset):

- **latency**: one video stream stepped frame by frame (``SequenceModel.step`` on a batch of
  one, state carried) over the first ``frames`` test frames of the dataset (videos one after
  another); every step is timed alone by the wall clock, with CUDA synchronised before and
  after, after ``warmup`` untimed steps. Median, 99th percentile, mean and max in ms; the
  frames per second one stream gets is 1000 / mean.
- **throughput**: ``streams`` videos stepped side by side (the evaluation's own batching),
  the same number of steps timed as a whole: frames per second in total and per stream.

A look-ahead of K frames adds K frames of waiting to every answer (``delay_frames``); the
step cost is the same. Timing runs under ``torch.no_grad`` in eval mode, as evaluation does,
and never changes the model or the predictions (a fresh state, thrown away).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["LATENCY_FRAMES", "WARMUP_STEPS", "dataset_latency", "measure_step_latency",
           "probe_frames", "summarize_ms"]

LATENCY_FRAMES = 500  # timed steps per dataset (fewer when the test split has fewer frames)
WARMUP_STEPS = 10


def summarize_ms(seconds: Sequence[float]) -> dict[str, float]:
    """Median, 99th percentile, mean and max of step times given in seconds, in ms."""
    ms = np.asarray(seconds, dtype=np.float64) * 1000.0
    return {"median": float(np.median(ms)), "p99": float(np.percentile(ms, 99)),
            "mean": float(ms.mean()), "max": float(ms.max())}


def _sync(device: torch.device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_step_latency(model: Any, frames: torch.Tensor, domain: int, *, streams: int = 32,
                         warmup: int = WARMUP_STEPS, delay_frames: int = 0) -> dict[str, Any]:
    """Latency of one stream and throughput of ``streams`` side by side, stepping ``model``
    (causal, put in eval mode) over ``frames [N, W]`` (arranged model inputs on the model's
    device) as ``domain``; see the module docs for what each field means. ``N`` must exceed
    ``warmup`` (``ValueError`` otherwise)."""
    import torch

    n = int(frames.shape[0])
    if n <= warmup:
        raise ValueError(f"latency needs more than {warmup} frames, got {n}")
    device = frames.device
    model.eval()
    times: list[float] = []
    with torch.no_grad():
        dom = torch.full((1,), domain, dtype=torch.long, device=device)
        state = model.init_state(1, dom)
        for i in range(n):
            x = frames[i : i + 1]  # [1, W]
            _sync(device)
            start = time.perf_counter()
            _, state = model.step(x, state)
            _sync(device)
            if i >= warmup:
                times.append(time.perf_counter() - start)

        streams = max(1, int(streams))
        dom = torch.full((streams,), domain, dtype=torch.long, device=device)
        state = model.init_state(streams, dom)
        batch = frames[:, None, :].expand(n, streams, frames.shape[1]).contiguous()  # [N, S, W]
        for i in range(warmup):
            _, state = model.step(batch[i], state)
        _sync(device)
        start = time.perf_counter()
        for i in range(warmup, n):
            _, state = model.step(batch[i], state)
        _sync(device)
        elapsed = time.perf_counter() - start
    steps = n - warmup
    step_ms = summarize_ms(times)
    return {
        "step_ms": step_ms,
        "frames_per_second_per_stream": 1000.0 / step_ms["mean"] if step_ms["mean"] > 0
        else float("inf"),
        "timed_steps": steps,
        "warmup_steps": warmup,
        "throughput": {"streams": streams, "steps": steps, "seconds": elapsed,
                       "frames_per_second": streams * steps / elapsed if elapsed > 0
                       else float("inf"),
                       "frames_per_second_per_stream": steps / elapsed if elapsed > 0
                       else float("inf")},
        "delay_frames": int(delay_frames),
        "device": str(device),
        "threads": torch.get_num_threads(),
    }


def probe_frames(videos: Sequence[np.ndarray], layout: Any, domain: int,
                limit: int = LATENCY_FRAMES) -> np.ndarray:
    """The first ``limit`` frames of ``videos`` ([T_i, d_k] features, one after another),
    arranged as the model's inputs: float32 ``[N, W]``."""
    rows, total = [], 0
    for video in videos:
        if total >= limit:
            break
        part = np.asarray(video[: limit - total])
        rows.append(layout.arrange(part, domain))
        total += part.shape[0]
    if not rows:
        return np.zeros((0, layout.width), dtype=np.float32)
    return np.concatenate(rows).astype(np.float32, copy=False)


def dataset_latency(model: Any, videos: Sequence[np.ndarray], layout: Any, domain: int,
                    device: Any, *, lookahead: int = 0, streams: int = 32,
                    limit: int = LATENCY_FRAMES) -> dict[str, Any] | None:
    """``measure_step_latency`` over the first ``limit`` frames of one dataset's test
    ``videos`` (scaled features ``[T_i, d_k]``) as ``domain``; None when they hold too few
    frames to time (``WARMUP_STEPS`` or fewer)."""
    import torch

    frames = probe_frames(videos, layout, domain, limit)
    if frames.shape[0] <= WARMUP_STEPS:
        return None
    x = torch.from_numpy(frames).to(device)  # [N, W]
    return measure_step_latency(model, x, domain, streams=min(streams, max(1, len(videos))),
                                delay_frames=lookahead)
