"""The boundary pre-stage of DDLSTM (Perrett & Damen, CVPR 2019, Sec. 5.1).

A 1-layer LSTM reads the features and predicts, at every frame, where the next action boundary
is: a Gaussian over the number of frames to it (mean ``mu``, width ``sigma``). Its loss is the
KL divergence from a Gaussian of fixed width ``sigma0`` at the true next boundary to the
predicted one, averaged over labelled frames:

    KL(N(d, sigma0^2) || N(mu, sigma^2)) = log(sigma / sigma0)
                                           + (sigma0^2 + (d - mu)^2) / (2 sigma^2) - 1/2

Distances are in units of the training history (``d / history``) so that the numbers stay
near 1. The pre-stage is trained first (its own random streams: the main model's initial
weights and batches do not change), then frozen; its two outputs per frame (``mu`` and
``log sigma``) are concatenated to the features of the main model (``BoundaryAugmented``).
It is a causal LSTM, so the whole model stays online: ``step`` carries both states.

Width: 128 units (``HIDDEN``). Sec. 5 gives 128 hidden units per cell "for each LSTM type" and
no other width for any LSTM of the paper, the pre-stage's included. Runs trained with the
earlier 64-unit pre-stage record that width and are rebuilt (and resumed) with it.

The true next boundary of frame ``t`` is the first later frame whose label differs from its
predecessor's; after a video's last boundary, the video's end.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np

from actrec.nn.base import SequenceModel

__all__ = ["next_boundary_distance", "kl_loss",
           "train_boundary", "OUTPUTS"]

OUTPUTS = 2  # mu and log sigma, appended to the features
HIDDEN = 128  # DDLSTM Sec. 5: 128 hidden units per LSTM cell
LEGACY_HIDDEN = 64  # the width of records that do not say (none should: every record did)
BOUNDARY_STREAM = 0xB0D  # seeds of the pre-stage: (seed, BOUNDARY_STREAM)


def next_boundary_distance(labels: np.ndarray) -> np.ndarray:
    """Frames from each frame to the next action boundary ``[T]`` float32: the first ``s > t``
    with ``labels[s] != labels[s - 1]``, else the video's end ``T``; the distance is
    ``s - t`` (>= 1)."""
    labels = np.asarray(labels)
    n = labels.shape[0]
    out = np.empty(n, dtype=np.float32)
    nxt = n
    for t in range(n - 1, -1, -1):
        out[t] = nxt - t
        if t > 0 and labels[t] != labels[t - 1]:
            nxt = t
    return out


def kl_loss(mu, log_sigma, target, sigma0: float, keep):
    """Mean KL divergence from ``N(target, sigma0^2)`` to ``N(mu, exp(log_sigma)^2)`` over
    frames where ``keep`` (all tensors ``[T, N]``)."""
    import torch

    sigma = log_sigma.exp()
    kl = (log_sigma - math.log(sigma0) + (sigma0 ** 2 + (target - mu) ** 2) / (2 * sigma ** 2)
          - 0.5)
    if not bool(keep.any()):
        return kl.sum() * 0.0
    return kl[keep].mean() if keep.dtype == torch.bool else (kl * keep).sum() / keep.sum()


@functools.cache
def _module_classes():
    import torch
    from torch import nn

    class BoundaryLSTM(SequenceModel):
        """1-layer LSTM -> (mu >= 0, log sigma) per frame, in history units."""

        def __init__(self, input_dim: int, hidden: int = HIDDEN) -> None:
            super().__init__()
            self.lstm = nn.LSTM(input_dim, hidden)
            self.out = nn.Linear(hidden, OUTPUTS)

        def _head(self, h):
            raw = self.out(h)
            mu = nn.functional.softplus(raw[..., 0])
            log_sigma = raw[..., 1].clamp(-6.0, 3.0)
            return torch.stack([mu, log_sigma], dim=-1)

        def forward(self, x, domain=None, mask=None):  # [T, N, D] -> [T, N, 2]
            h, _ = self.lstm(x)
            return self._head(h)

        def init_state(self, batch, domain=None):
            z = self.out.weight.new_zeros(1, batch, self.lstm.hidden_size)
            return (z, z.clone())

        def step(self, x_t, state):  # [N, D] -> [N, 2]
            h, state = self.lstm(x_t[None], state)
            return self._head(h[0]), state

    class BoundaryAugmented(SequenceModel):
        """The main model fed with ``[features, pre-stage outputs]`` (pre-stage frozen)."""

        def __init__(self, pre: BoundaryLSTM, main: SequenceModel) -> None:
            super().__init__()
            self.pre, self.main = pre, main
            self.causal = bool(main.causal)
            for p in self.pre.parameters():
                p.requires_grad_(False)

        def augment(self, x):
            with torch.no_grad():
                self.pre.eval()
                return torch.cat([x, self.pre(x)], dim=-1)

        def forward(self, x, domain, mask=None):
            return self.main(self.augment(x), domain, mask=mask)

        def init_state(self, batch, domain):
            return (self.pre.init_state(batch), self.main.init_state(batch, domain))

        def step(self, x_t, state):
            pre_state, main_state = state
            with torch.no_grad():
                extra, pre_state = self.pre.step(x_t, pre_state)
            logits, main_state = self.main.step(torch.cat([x_t, extra], dim=-1), main_state)
            return logits, (pre_state, main_state)

        def after_optimizer_step(self) -> None:
            self.main.after_optimizer_step()

        def optimizer_overrides(self):
            return self.main.optimizer_overrides()  # e.g. the DDLSTM's alpha_lr group

    return BoundaryLSTM, BoundaryAugmented


def __getattr__(name: str) -> Any:  # torch classes built on first use (no import-time torch)
    if name in ("BoundaryLSTM", "BoundaryAugmented"):
        return dict(zip(("BoundaryLSTM", "BoundaryAugmented"), _module_classes()))[name]
    raise AttributeError(name)


def train_boundary(banks: list[Any], layout: Any, mix: tuple[int, ...], history: int,
                   iterations: int, sigma0: float, seed: int, device: Any, hidden: int = HIDDEN,
                   lr: float = 0.001, progress: Any = None) -> tuple[Any, list[float]]:
    """Train the pre-stage on windows of ``banks`` (``mix[k]`` per dataset and batch; its own
    generators seeded from ``seed``); returns the module (eval mode) and its loss per
    iteration. Distances and ``sigma0`` are divided by ``history``."""
    import torch

    from actrec.data.windows import sample_windows

    BoundaryLSTM, _ = _module_classes()
    dist = [[next_boundary_distance(y) for y in bank.labels] for bank in banks]
    rng = np.random.default_rng([seed, BOUNDARY_STREAM])
    losses: list[float] = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + BOUNDARY_STREAM)
        pre = BoundaryLSTM(layout.width, hidden).to(device)
        opt = torch.optim.Adam(pre.parameters(), lr=lr)
        task = progress.add_task("boundary pre-stage", total=iterations) if progress else None
        for _ in range(iterations):
            xs, ds, keeps = [], [], []
            for k, bank in enumerate(banks):
                if not mix[k]:
                    continue
                w = sample_windows(bank, int(mix[k]), history, rng)
                x = np.zeros((history, int(mix[k]), layout.width), np.float32)
                x[:, :, layout.columns(k)] = w.features
                d = np.zeros((history, int(mix[k])), np.float32)
                for i, (v, s) in enumerate(zip(w.video, w.start)):
                    n = int(w.mask[:, i].sum())
                    d[:n, i] = dist[k][v][s : s + n]
                xs.append(x)
                ds.append(d)
                keeps.append(w.mask & (w.labels >= 0))
            x = torch.from_numpy(np.concatenate(xs, 1)).to(device)
            d = torch.from_numpy(np.concatenate(ds, 1) / history).to(device)
            keep = torch.from_numpy(np.concatenate(keeps, 1)).to(device)
            out = pre(x)
            loss = kl_loss(out[..., 0], out[..., 1], d, sigma0 / history, keep)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            if task is not None:
                progress.advance(task)
        if task is not None:
            progress.remove_task(task)
    pre.eval()
    return pre, losses


class WidenedLayout:
    """An input layout with ``extra`` columns appended (what the main model sees)."""

    def __init__(self, layout: Any, extra: int = OUTPUTS) -> None:
        self.base, self.extra = layout, extra
        self.mode, self.dims = layout.mode, layout.dims

    @property
    def width(self) -> int:
        return self.base.width + self.extra


def attach(spec: Any, data: Any, model: Any, device: Any, progress: Any, *,
           fresh: bool, recorded: dict[str, Any] | None = None) -> Any:
    """``model`` (built for ``WidenedLayout(data.layout)``) behind the pre-stage: trained now
    for a fresh run (``spec.boundary_iters``, default a quarter of the run's iterations),
    an untrained one whose weights the checkpoint restores for a resumed run. The wrapper's
    ``boundary_record`` is what its checkpoints record: ``record(spec)`` for a fresh run, the
    checkpoint's ``recorded`` for a resumed one (its iterations may have changed since)."""
    BoundaryLSTM, BoundaryAugmented = _module_classes()
    if fresh:
        iterations = spec.boundary_iters or max(1, spec.total_iterations // 4)
        pre, losses = train_boundary(data.banks, data.layout,
                                     pre_stage_mix(spec, len(data.banks)), spec.history,
                                     iterations,
                                     spec.boundary_sigma, spec.seed, device, progress=progress)
    else:  # the checkpoint restores the weights: build the width it trained with
        pre, losses = BoundaryLSTM(data.layout.width, recorded_hidden(recorded)), []
    wrapped = BoundaryAugmented(pre, model)
    wrapped.boundary_losses = losses
    wrapped.boundary_record = (record(spec) if fresh else dict(recorded) if recorded
                               else {**record(spec), "hidden": LEGACY_HIDDEN})
    return wrapped


def pre_stage_mix(spec: Any, n: int) -> tuple[int, ...]:
    """Windows per dataset of the pre-stage's batches: every dataset some phase of the run
    trains on (transfer: D2, which pre-training feeds through the pre-stage, and D1), each
    with the most windows a phase gives it."""
    from actrec.protocols import phase_mix

    mixes = [phase_mix(spec, i, n) for i, count in enumerate(spec.phase_iterations) if count]
    mixes = mixes or [phase_mix(spec, len(spec.phase_iterations) - 1, n)]
    return tuple(max(column) for column in zip(*mixes))


def record(spec: Any) -> dict[str, Any]:
    """What a checkpoint records of the pre-stage a fresh run of ``spec`` trains."""
    return {"hidden": HIDDEN, "sigma": spec.boundary_sigma,
            "iterations": spec.boundary_iters or max(1, spec.total_iterations // 4),
            "outputs": ["mu (history units)", "log sigma"]}


def rebuild(record_: dict[str, Any], layout: Any, model: Any) -> Any:
    """The wrapper of a trained run's ``model`` (weights loaded afterwards)."""
    BoundaryLSTM, BoundaryAugmented = _module_classes()
    return BoundaryAugmented(BoundaryLSTM(layout.width, recorded_hidden(record_)), model)


def recorded_hidden(record_: dict[str, Any] | None) -> int:
    """The pre-stage width a checkpoint's record says it trained (64 before it became 128)."""
    return int((record_ or {}).get("hidden", LEGACY_HIDDEN))


def log_losses(metrics: Any, model: Any, every: int) -> None:
    """Append the pre-stage's KL losses of a fresh run (``model.boundary_losses``; none after
    a resume) to the metrics log, every ``every`` steps and the last, at iteration 0."""
    from actrec.checkpoints import log_line

    losses = list(getattr(model, "boundary_losses", ()))
    if not losses:
        return
    with open(metrics, "a", encoding="utf-8") as handle:
        for i, value in enumerate(losses):
            if (i + 1) % max(1, every) == 0 or i + 1 == len(losses):
                log_line(handle, {"iteration": 0, "phase": "boundary", "step": i + 1,
                                  "boundary_kl": value})
