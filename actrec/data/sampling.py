"""How training windows are chosen: at random, or all windows at a stride in epochs.

``--windows random`` (``RandomWindows``): every window is drawn afresh from the run's generator
(uniform video, uniform start; ``actrec.data.windows.sample_windows``).

``--windows uniform`` (``UniformLabelWindows``), as the sign-language paper trains (Borg &
Camilleri, Sec. 5.1): only the full windows of ``history`` frames that all carry one label
(unlabelled frames never), drawn uniformly among all such windows of the training videos.

``--windows stride:S`` (``StrideWindows``), as the online-detection codebases train: an epoch is
every window of the training videos that ENDS at a frame ``e`` with ``e = offset (mod S)``,
the offset drawn per video and epoch (so that over epochs every frame ends some window). The
window is the ``history`` frames up to and including ``e``; near a video's start it is shorter
(frames ``0 .. e``) and padded at its end, so its state starts cold exactly where online
inference starts cold, at the video's first frame, instead of on invented frames before it.
Each epoch visits its windows in a shuffled order; epochs follow one another as one stream, and
each batch takes the next ``n`` stream positions (a batch may straddle two epochs): each training
phase walks the stream from its start (transfer's fine-tuning starts at D1's first epoch), on
through a batch that grows (``--lr-schedule sign``), the position saved with every checkpoint.
Offsets and order of epoch ``e`` of domain ``k`` come from a generator seeded with
``(seed, k, e)``: the windows at any stream position are a pure function of the seed and the
position, so a resumed run draws exactly the windows the uninterrupted run would.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from actrec.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from actrec.data.windows import VideoBank, Windows

__all__ = [
    "RandomWindows",
    "StrideWindows",
    "UniformLabelWindows",
    "WindowRule",
    "iterations_for_epochs",
    "make_samplers",
    "parse_windows",
    "windows_at",
]


@dataclass(frozen=True)
class WindowRule:
    """A parsed ``--windows`` value: ``kind`` "random", "uniform" or "stride" (with
    ``stride`` frames)."""

    kind: str
    stride: int = 0

    def __str__(self) -> str:
        return f"stride:{self.stride}" if self.kind == "stride" else self.kind

    def describe(self) -> str:
        if self.kind == "random":
            return ("uniform video, uniform start; short videos zero-padded at the end with "
                    "label -1")
        if self.kind == "uniform":
            return ("uniformly among the full windows whose frames all carry one label "
                    "(Borg & Camilleri's segments)")
        return (f"all windows at stride {self.stride} (window ends {self.stride} frame(s) apart "
                f"from an offset drawn per video and epoch), shuffled per epoch; windows near a "
                f"video's start begin at its first frame and are padded at the end")


def parse_windows(value: str) -> WindowRule:
    """``"random"``, ``"uniform"`` or ``"stride:S"`` (S >= 1) as a ``WindowRule``;
    ``ConfigError`` otherwise."""
    text = str(value).strip().lower()
    if text in ("random", "uniform"):
        return WindowRule(text)
    kind, sep, s = text.partition(":")
    if kind == "stride" and sep:
        try:
            stride = int(s)
        except ValueError:
            stride = 0
        if stride >= 1:
            return WindowRule("stride", stride)
    raise ConfigError(f"windows: expected 'random', 'uniform' or 'stride:S' with an integer "
                      f"S >= 1, got {value!r}")


def windows_at(bank: VideoBank, video: np.ndarray, start: np.ndarray, length: np.ndarray,
               history: int) -> Windows:
    """The windows ``bank.features[video[i]][start[i] : start[i] + length[i]]``, time-major,
    zero-padded (label -1, mask False) at the end up to ``history`` frames."""
    from actrec.data.windows import Windows

    n = len(video)
    x = np.zeros((history, n, bank.dim), dtype=np.float32)  # [T, n, D]
    y = np.full((history, n), -1, dtype=np.int64)  # [T, n]
    mask = np.zeros((history, n), dtype=bool)
    for i, (v, s, m) in enumerate(zip(video, start, length)):
        x[:m, i] = bank.features[v][s : s + m]
        y[:m, i] = bank.labels[v][s : s + m]
        mask[:m, i] = True
    return Windows(x, y, mask, np.asarray(video, np.int64), np.asarray(start, np.int64))


class RandomWindows:
    """Fresh random windows from the run's generator at every draw."""

    def __init__(self, bank: VideoBank, history: int):
        self.bank, self.history = bank, history

    def epoch_size(self) -> int:
        """Windows of one nominal epoch: as many as cover the training frames once."""
        return max(1, math.ceil(self.bank.num_frames / self.history))

    def epochs_done(self, position: int) -> float:
        """Nominal epochs that ``position`` windows drawn make."""
        return position / self.epoch_size()

    def draw(self, iteration: int, n: int, rng: np.random.Generator,
             rows: slice | None = None, position: int | None = None) -> Windows:
        """``n`` fresh windows (only ``rows`` of them read; all are drawn from ``rng``);
        ``iteration`` and ``position`` unused."""
        from actrec.data.windows import sample_windows

        return sample_windows(self.bank, n, self.history, rng, rows)


class UniformLabelWindows:
    """Random full windows among those whose ``history`` frames all carry one label (see the
    module docs); ``ConfigError`` naming the dataset when its videos have none."""

    def __init__(self, bank: VideoBank, history: int):
        self.bank, self.history = bank, history
        videos, starts = [], []
        self.segments = 0  # non-overlapping one-label windows: the size of an epoch
        for v, labels in enumerate(bank.labels):
            labels = np.asarray(labels)
            if labels.shape[0] < history:
                continue
            # run_end[i]: one past the last frame of the run of equal labels holding frame i
            change = np.flatnonzero(labels[1:] != labels[:-1]) + 1
            ends = np.append(change, labels.shape[0])
            run_end = np.repeat(ends, np.diff(np.insert(ends, 0, 0)))
            start = np.arange(labels.shape[0] - history + 1)
            ok = (run_end[start] - start >= history) & (labels[start] >= 0)
            runs = np.diff(np.insert(ends, 0, 0))
            self.segments += int((runs // history)[labels[ends - 1] >= 0].sum())
            videos.append(np.full(int(ok.sum()), v, np.int64))
            starts.append(start[ok].astype(np.int64))
        self.video = np.concatenate(videos) if videos else np.zeros(0, np.int64)
        self.start = np.concatenate(starts) if starts else np.zeros(0, np.int64)
        if self.video.size == 0:
            raise ConfigError(f"windows uniform: no window of {history} frames in the training "
                              f"videos of {bank.name or 'the dataset'} carries one label "
                              f"throughout; use a shorter history or other windows")

    def epoch_size(self) -> int:
        """Windows of one epoch: the non-overlapping one-label windows the videos hold."""
        return max(1, self.segments)

    def epochs_done(self, position: int) -> float:
        """Epochs that ``position`` windows drawn make."""
        return position / self.epoch_size()

    def draw(self, iteration: int, n: int, rng: np.random.Generator,
             rows: slice | None = None, position: int | None = None) -> Windows:
        """``n`` windows drawn uniformly among the one-label windows (only ``rows`` of them
        read; all are drawn from ``rng``); ``iteration`` and ``position`` unused."""
        pick = rng.integers(0, self.video.size, size=n)
        if rows is not None:
            pick = pick[rows]
        length = np.full(pick.size, self.history, np.int64)
        return windows_at(self.bank, self.video[pick], self.start[pick], length, self.history)


class StrideWindows:
    """All windows at a stride, one shuffled epoch after another (see the module docs)."""

    def __init__(self, bank: VideoBank, history: int, stride: int, seed: int, domain: int = 0):
        self.bank, self.history, self.stride = bank, history, stride
        self.seed, self.domain = seed, domain
        self.lengths = np.array([y.shape[0] for y in bank.labels], dtype=np.int64)  # [V]
        if stride > int(self.lengths.max()):
            raise ConfigError(f"windows stride:{stride}: the stride is longer than every training "
                              f"video of {bank.name or 'the dataset'} (the longest has "
                              f"{int(self.lengths.max())} frames); use a smaller stride")
        self._sizes: list[int] = []  # windows of epochs 0, 1, ... computed so far
        self._cached: tuple[int, np.ndarray, np.ndarray] | None = None  # (epoch, video, end)

    def _generator(self, epoch: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.domain, epoch])

    def _offsets(self, rng: np.random.Generator) -> np.ndarray:
        return rng.integers(0, self.stride, size=len(self.lengths))  # [V] end frame mod S

    def _counts(self, offsets: np.ndarray) -> np.ndarray:
        # Ends e = o, o + S, ... <= T - 1 (0-based): a video of at most o frames has none
        # in this epoch (a video of at least S frames always has one).
        counts = np.where(self.lengths > offsets,
                          (self.lengths - 1 - offsets) // self.stride + 1, 0)
        return counts.astype(np.int64)  # [V]

    def epoch_size(self, epoch: int = 0) -> int:
        """Number of windows in ``epoch`` (it varies a little with the drawn offsets)."""
        while len(self._sizes) <= epoch:
            e = len(self._sizes)
            self._sizes.append(int(self._counts(self._offsets(self._generator(e))).sum()))
        return self._sizes[epoch]

    def epoch(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """``(video [W], end [W])`` of every window of ``epoch``, in its shuffled order."""
        if self._cached is not None and self._cached[0] == epoch:
            return self._cached[1], self._cached[2]
        rng = self._generator(epoch)
        offsets = self._offsets(rng)
        counts = self._counts(offsets)
        video = np.repeat(np.arange(len(counts), dtype=np.int64), counts)  # [W]
        first = np.cumsum(counts) - counts  # [V] index of each video's first window
        k = np.arange(len(video), dtype=np.int64) - first[video]  # window number in its video
        end = offsets[video] + k * self.stride  # [W] last frame, inclusive
        order = rng.permutation(len(video))
        video, end = video[order], end[order]
        self._cached = (epoch, video, end)
        return video, end

    def locate(self, position: int) -> tuple[int, int]:
        """``(epoch, index within it)`` of stream position ``position``."""
        epoch = 0
        while position >= self.epoch_size(epoch):
            position -= self.epoch_size(epoch)
            epoch += 1
        return epoch, position

    def epochs_done(self, position: int) -> float:
        """Epochs (with the fraction of the current one) that stream ``position`` makes."""
        epoch, index = self.locate(position)
        return epoch + index / self.epoch_size(epoch)

    def draw(self, iteration: int, n: int, rng: np.random.Generator | None = None,
             rows: slice | None = None, position: int | None = None) -> Windows:
        """The ``n`` windows at stream ``position`` on (None: ``iteration * n``, the position
        of ``iteration`` when every batch holds ``n``); ``rng`` unused; ``rows``: only these
        of the ``n`` windows."""
        epoch, index = self.locate(iteration * n if position is None else position)
        videos, ends = [], []
        while n > 0:
            video, end = self.epoch(epoch)
            take = min(n, len(video) - index)
            videos.append(video[index : index + take])
            ends.append(end[index : index + take])
            n -= take
            epoch, index = epoch + 1, 0
        video = np.concatenate(videos) if videos else np.zeros(0, np.int64)
        end = np.concatenate(ends) if ends else np.zeros(0, np.int64)
        if rows is not None:
            video, end = video[rows], end[rows]
        start = np.maximum(end + 1 - self.history, 0)
        return windows_at(self.bank, video, start, end + 1 - start, self.history)


def make_samplers(rule: WindowRule, banks, history: int, seed: int) -> list:
    """One sampler per training bank (domain k = its position)."""
    if rule.kind == "random":
        return [RandomWindows(b, history) for b in banks]
    if rule.kind == "uniform":
        return [UniformLabelWindows(b, history) for b in banks]
    return [StrideWindows(b, history, rule.stride, seed, k) for k, b in enumerate(banks)]


def iterations_for_epochs(sampler, epochs: int, per_batch: int) -> int:
    """Iterations that draw ``epochs`` whole epochs of ``sampler`` at ``per_batch`` windows each
    (the last batch is filled from the next epoch)."""
    if isinstance(sampler, StrideWindows):
        total = sum(sampler.epoch_size(e) for e in range(epochs))
    else:
        total = sampler.epoch_size() * epochs
    return math.ceil(total / per_batch)
