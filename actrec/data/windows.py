"""Random training windows over whole videos, and two-domain batches.

Training reads every training video of a split into memory once (``VideoBank``, float32): the
feature stores are small (per-frame vectors of tens to a few thousand floats), and random
windows then cost one slice each instead of one store read each. Memory is frames x D x 4
bytes (for example 2.6 M frames of 64-d features: 0.7 GB); very large stores of wide features
would need windows read from the store instead (``FeatureStore.read_window``).

A window is ``history`` consecutive frames from a random video (uniform over videos, then a
uniform start). A video shorter than ``history`` gives one window from its first frame, padded
at the END with zero features, label -1 and mask False: the mask travels with the batch, so the
padded frames enter no loss and no batch statistic (the models' batch normalisation counts
real frames only); a timestep that only padding reaches learns nothing, so choose ``history``
below the typical video length.

``actrec.data.sampling`` chooses windows for training (these random ones, or all windows at a
stride in shuffled epochs). Two-domain batches hold ``n1`` windows of D1 then ``n2`` of D2 (the
row order DDBN needs), with
the domain vector ``[0]*n1 + [1]*n2`` and labels in the concatenated label space.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from actrec.data.labels import InputLayout, LabelSpace
from actrec.errors import ConfigError, DataError

if TYPE_CHECKING:  # pragma: no cover
    from torch import Tensor

__all__ = ["VideoBank", "Windows", "sample_windows", "Batch", "two_domain_batch", "share_of"]


@dataclass(frozen=True)
class VideoBank:
    """Features ``[T_i, D]`` float32 and labels ``[T_i]`` int64 of a set of videos, in memory."""

    ids: tuple[str, ...]
    features: tuple[np.ndarray, ...]
    labels: tuple[np.ndarray, ...]
    dim: int
    name: str = ""  # where the videos came from, for messages

    def __post_init__(self) -> None:
        if not self.ids:
            raise DataError(f"{self.name or 'video bank'}: no videos to sample from")
        for vid, x, y in zip(self.ids, self.features, self.labels):
            if x.ndim != 2 or x.shape[1] != self.dim or y.shape != (x.shape[0],):
                raise DataError(
                    f"{self.name}: video '{vid}' has features {x.shape} and labels {y.shape}; "
                    f"expected [T, {self.dim}] and [T]"
                )
            if x.shape[0] == 0:
                raise DataError(f"{self.name}: video '{vid}' has no frames")

    def __len__(self) -> int:
        return len(self.ids)

    def transformed(self, fn: Callable[[np.ndarray], np.ndarray]) -> VideoBank:
        """The same videos with ``fn`` applied to each video's features (e.g. a scaler)."""
        return VideoBank(self.ids, tuple(fn(x) for x in self.features), self.labels, self.dim,
                         self.name)

    @property
    def num_frames(self) -> int:
        return sum(int(y.shape[0]) for y in self.labels)

    @classmethod
    def from_arrays(
        cls,
        videos: Iterable[tuple[str, np.ndarray, np.ndarray]],
        *,
        name: str = "",
    ) -> VideoBank:
        """A bank from ``(id, features [T, D], labels [T])`` triples (copied to float32/int64)."""
        ids, feats, labs = [], [], []
        for vid, x, y in videos:
            ids.append(str(vid))
            feats.append(np.ascontiguousarray(x, dtype=np.float32))
            labs.append(np.ascontiguousarray(y, dtype=np.int64))
        if not ids:
            raise DataError(f"{name or 'video bank'}: no videos to sample from")
        return cls(tuple(ids), tuple(feats), tuple(labs), int(feats[0].shape[1]), name)

    @classmethod
    def from_store(cls, store: Any, video_ids: Sequence[str], *, progress: Any = None,
                   name: str = "", option: str | None = None) -> VideoBank:
        """Read ``video_ids`` from a ``FeatureStore`` (``DataError`` for a missing video, saying
        why; ``option``, e.g. ``--d1``, is the command's option for this dataset, which the
        error's hint names when another store of the same data holds the videos)."""
        available = set(store.videos())
        missing = [v for v in video_ids if v not in available]
        if missing:
            raise DataError(_missing_videos_message(store, missing, name, video_ids, option))
        task = None
        if progress is not None:
            task = progress.add_task(f"loading {name}", total=len(video_ids))

        def read():
            for vid in video_ids:
                x, y = store.read(vid)
                yield vid, x, y
                if task is not None:
                    progress.advance(task)

        bank = cls.from_arrays(read(), name=name)
        if task is not None:
            progress.remove_task(task)
        return bank


class Windows(NamedTuple):
    """``n`` windows, time-major."""

    features: np.ndarray  # [history, n, D] float32, zero past a video's end
    labels: np.ndarray  # [history, n] int64, -1 past a video's end (and where unlabelled)
    mask: np.ndarray  # [history, n] bool, True on real frames (False on padding)
    video: np.ndarray  # [n] int64 index into the bank
    start: np.ndarray  # [n] int64 first frame


def sample_windows(bank: VideoBank, n: int, history: int, rng: np.random.Generator,
                   rows: slice | None = None) -> Windows:
    """``n`` random windows of ``history`` frames; draws videos then starts from ``rng``.
    ``rows``: read only these of the ``n`` windows (all ``n`` are drawn, so ``rng`` moves on
    as it would without ``rows``)."""
    if history <= 0 or n < 0:
        raise ConfigError(f"history must be > 0 and n >= 0, got history={history}, n={n}")
    video = rng.integers(0, len(bank), size=n)  # [n]
    lengths = np.array([bank.labels[v].shape[0] for v in video], dtype=np.int64)  # [n]
    room = np.maximum(lengths - history, 0) + 1  # number of possible starts
    start = rng.integers(0, room).astype(np.int64)  # [n], uniform over 0 .. room-1
    if rows is not None:
        video, lengths, start = video[rows], lengths[rows], start[rows]
        n = len(video)
    x = np.zeros((history, n, bank.dim), dtype=np.float32)  # [T, n, D]
    y = np.full((history, n), -1, dtype=np.int64)  # [T, n]
    mask = np.zeros((history, n), dtype=bool)
    for i, (v, s) in enumerate(zip(video, start)):
        length = min(history, int(lengths[i]) - int(s))
        x[:length, i] = bank.features[v][s : s + length]
        y[:length, i] = bank.labels[v][s : s + length]
        mask[:length, i] = True
    return Windows(x, y, mask, video.astype(np.int64), start)


@dataclass(frozen=True)
class Batch:
    """One training batch: D1 rows first, then D2 rows."""

    x: Tensor  # [T, N, width] float32
    y: Tensor  # [T, N] int64 global labels, -1 ignored
    domain: Tensor  # [N] int64
    mask: Tensor  # [T, N] bool, real frames
    start: Tensor | None = None  # [N] int64 first frame of each window in its video

    def to(self, device: Any) -> Batch:
        start = None if self.start is None else self.start.to(device, non_blocking=True)
        return Batch(*(t.to(device, non_blocking=True) for t in (self.x, self.y, self.domain,
                                                                  self.mask)), start)


def two_domain_batch(
    banks: Sequence[VideoBank],
    mix: Sequence[int],
    history: int,
    rng: np.random.Generator,
    labels: LabelSpace,
    layout: InputLayout,
    *,
    samplers: Sequence[Any] | None = None,
    iteration: int = 0,
    part: tuple[int, int] | None = None,
    positions: Sequence[int] | None = None,
) -> Batch:
    """``mix[k]`` windows from ``banks[k]`` for each domain k in order, arranged by ``layout``,
    labels offset into ``labels``' concatenated vector, domain vector ``[0]*n1 + [1]*n2``.
    ``samplers[k]`` (``actrec.data.sampling``) chooses domain k's windows of ``iteration``;
    None: random windows from ``rng``; ``positions[k]``: where domain k's window stream stands
    (None: ``iteration * mix[k]``). ``part = (rank, world)``: only this process's share of
    the batch, ``share_of(mix[k], rank, world)`` of each domain's windows (every window is
    still chosen, so the generators move on as for the whole batch)."""
    import torch

    if len(mix) < len(banks):
        raise ConfigError(f"need a window count per dataset, got mix={tuple(mix)}")
    shares = [None if part is None else share_of(int(mix[k]), *part) for k in range(len(banks))]
    total = sum(int(mix[k]) if s is None else s.stop - s.start for k, s in enumerate(shares))
    x = np.zeros((history, total, layout.width), dtype=np.float32)  # [T, N, width]
    y = np.empty((history, total), dtype=np.int64)  # [T, N]
    mask = np.empty((history, total), dtype=bool)
    domain = np.empty(total, dtype=np.int64)
    start = np.empty(total, dtype=np.int64)
    row = 0
    for k, bank in enumerate(banks):
        n = int(mix[k])
        w = (sample_windows(bank, n, history, rng, shares[k]) if samplers is None
             else samplers[k].draw(iteration, n, rng, shares[k],
                                   position=None if positions is None else int(positions[k])))
        n = w.video.shape[0]
        rows = slice(row, row + n)
        x[:, rows, layout.columns(k)] = w.features
        y[:, rows] = labels.to_global(w.labels, k)
        mask[:, rows] = w.mask
        domain[rows] = k
        start[rows] = w.start
        row += n
    return Batch(torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(domain),
                 torch.from_numpy(mask), torch.from_numpy(start))


def share_of(n: int, rank: int, world: int) -> slice:
    """The rows ``rank`` holds of ``n`` rows split evenly over ``world`` processes
    (``ValueError`` when ``n`` is not a multiple of ``world``)."""
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"rank {rank} outside 0..{world - 1}")
    if n % world:
        raise ValueError(f"{n} rows do not split evenly over {world} processes")
    per = n // world
    return slice(rank * per, (rank + 1) * per)


def _missing_videos_message(store: Any, missing: Sequence[str], name: str,
                            video_ids: Sequence[str] = (), option: str | None = None) -> str:
    """Why split videos (``missing`` of ``video_ids``) are not in ``store``: another workspace
    store of the same data holds them (``actrec.refs.other_store_hint``), extraction failed on
    them (its recorded reason, and what to do: another run of extract cannot help until the
    video is fixed) or they were never extracted. ``option`` (``--d1``) names where the hint's
    reference goes."""
    from actrec.extract_status import recorded_failure

    path = getattr(store, "path", None)
    failed = {v: recorded_failure(path, v) for v in missing} if path is not None else {}
    failed = {v: why for v, why in failed.items() if why}
    # Another workspace store of the same data holding them (extracted again with other
    # dataset options, e.g. -o fps=10 after the default rate refused every video) is what the
    # user meant: named first, and then no advice to fix or extract videos that are there.
    try:
        from actrec.refs import other_store_hint

        hint = other_store_hint(path, video_ids, option) if path is not None else ""
    except Exception:  # noqa: BLE001 - only a hint: the error stands without it
        hint = ""

    def listed(ids: Sequence[str]) -> str:
        more = f" (and {len(ids) - 3} more)" if len(ids) > 3 else ""
        return f"{', '.join(ids[:3])}{more}"

    parts = [f"{name}: {len(missing)} split video(s) not in the feature store"]
    if hint:
        parts.append(hint)
    if failed:
        first, why = next(iter(failed.items()))
        text = f"{len(failed)} failed extraction: {listed(list(failed))} ({first}: {why})"
        if not hint:
            text += (f"; fix the video file(s) and extract again (failed videos are retried), "
                     f"or leave them out of the split's lists (`actrec extract --status "
                     f"{path}` lists every failure)")
        parts.append(text)
    never = [v for v in missing if v not in failed]
    if never:
        parts.append(f"{len(never)} never extracted: {listed(never)}"
                     f"{'' if hint else '; extract them first'}")
    return "; ".join(parts)
