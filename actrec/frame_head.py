"""A per-split frame classifier on stored features, and its per-frame outputs as a new store.

The papers' features: a frame classifier is trained on the frames of a split's TRAINING videos,
and its softmax (Recurrent Assistance) or logits (DDLSTM) for every frame of every video become
the temporal model's input. Here the classifier ("head") is a linear layer or a small MLP on the
frozen features of a feature store (a backbone's, or imported ones), so no test video can
influence it: ``train_frame_head`` reads the split's training videos and nothing else.

Files, for a backbone store ``<dir>/<name>.zarr``, head output ``softmax`` and split ``K``:

    <dir>/<name>-softmax-splitK.zarr     the head's outputs, a feature store whose extractor is
                                         ``<extractor>-softmax-splitK``; it records split K
                                         only (the others' test videos trained the head)
    <dir>/<name>-softmax-splitK.head.pt  the head: weights, standardisation, config, the
                                         training videos and the digests of their features

The output store records the head's digest (``head_digest``: its weights and what it was
trained on), its config, the backbone store's identity and the training data's fingerprint in
``extractor_config``, so a store is never filled by two different heads. Re-running reuses
the saved head when it was trained on the same features with the same config, skips finished
videos, and redoes a video whose backbone features or labels changed.
Training is seeded (initialisation, dropout and the frame order follow ``seed``) and runs in a
forked RNG, leaving the global one alone.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from actrec.errors import ConfigError, DataError
from actrec.plugin_api import PluginConfig

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from rich.progress import Progress

    from actrec.io.features import FeatureStore

__all__ = [
    "OUTPUTS",
    "HeadConfig",
    "HeadReport",
    "TrainedHead",
    "extract_head_features",
    "head_digest",
    "head_file",
    "head_outputs",
    "head_store_path",
    "load_head",
    "save_head",
    "train_frame_head",
]

OUTPUTS = ("softmax", "logits")
HEAD_FORMAT = "actrec-frame-head"


@dataclass(frozen=True)
class HeadConfig(PluginConfig):
    """How the frame classifier is built and trained (``--head-option KEY=VALUE``)."""

    model: str = "linear"  # linear | mlp (Linear, ReLU, Dropout, Linear)
    hidden: int = 256  # mlp: hidden units
    dropout: float = 0.2  # mlp: dropout before the last layer
    epochs: int = 20
    # At least this many optimiser steps (more epochs on a small split, where 20 epochs
    # would be a few dozen steps).
    min_steps: int = 500
    batch_size: int = 256
    lr: float = 1e-3  # Adam
    weight_decay: float = 1e-4
    seed: int = 0
    # Memory for the training frames' features (float32): a split whose training frames fit
    # is read once; otherwise each epoch streams the videos, shuffling this much at a time.
    buffer_mb: float = 2048.0
    # Train on the training videos that are stored when some are not (failed extraction);
    # by default that is an error, since the head would differ from a complete run's.
    allow_missing: bool = False

    def __post_init__(self) -> None:
        where = "head option"
        if self.model not in ("linear", "mlp"):
            raise ConfigError(f"{where} 'model' must be 'linear' or 'mlp', got {self.model!r}")
        for name in ("hidden", "epochs", "batch_size", "min_steps"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{where} '{name}' must be >= 1, got {getattr(self, name)}")
        if not self.buffer_mb > 0:
            raise ConfigError(f"{where} 'buffer_mb' must be > 0, got {self.buffer_mb}")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"{where} 'dropout' must be in [0, 1), got {self.dropout}")
        if not self.lr > 0 or self.weight_decay < 0:
            raise ConfigError(f"{where}s 'lr' must be > 0 and 'weight_decay' >= 0, got "
                              f"{self.lr}, {self.weight_decay}")


def _build(config: HeadConfig, dim: int, num_classes: int) -> torch.nn.Module:
    """The head: standardise with the training frames' mean/std, then classify."""
    import torch
    from torch import nn

    class FrameHead(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("mean", torch.zeros(dim))
            self.register_buffer("std", torch.ones(dim))
            if config.model == "linear":
                self.net = nn.Linear(dim, num_classes)
            else:
                self.net = nn.Sequential(nn.Linear(dim, config.hidden), nn.ReLU(),
                                         nn.Dropout(config.dropout),
                                         nn.Linear(config.hidden, num_classes))

        def forward(self, x: torch.Tensor) -> torch.Tensor:  # [N, D] -> [N, classes]
            return self.net((x - self.mean) / self.std)

    return FrameHead()


@dataclass
class TrainedHead:
    """A trained frame classifier and what it was trained on."""

    module: Any  # torch.nn.Module: features [N, D] -> logits [N, classes]
    config: HeadConfig
    split: str
    classes: tuple[str, ...]
    dim: int
    train_videos: tuple[str, ...]
    fingerprint: str  # sha256 over the training videos' ids and feature/label digests
    backbone_identity: str
    frames: int = 0  # labelled training frames
    losses: list[float] = field(default_factory=list)  # mean loss per epoch
    accuracy: float = float("nan")  # on the training frames, after training


def _fingerprint(store: FeatureStore, videos: Sequence[str]) -> str:
    """A digest of what the head is trained on: each video's id and its features' and
    labels' recorded sha256 (read from the store's integrity records, no data read)."""
    from actrec.io.integrity import recorded_digest

    digest = hashlib.sha256()
    for vid in videos:
        attrs = store.video_attrs(vid)
        parts = [vid] + [str(recorded_digest(attrs, a)) for a in ("features", "labels")]
        digest.update(json.dumps(parts).encode("utf-8"))
    return digest.hexdigest()


def _train_videos(store: FeatureStore, split: str) -> tuple[list[str], list[str]]:
    """(training videos of ``split`` in the store, those it lacks)."""
    splits = store.splits
    if str(split) not in splits:
        raise ConfigError(f"feature store {store.path} has no split {split!r}; expected one of: "
                          f"{', '.join(splits) or '(none)'}")
    wanted = list(splits[str(split)]["train"])
    have = set(store.videos())
    return [v for v in wanted if v in have], [v for v in wanted if v not in have]


def train_frame_head(store: FeatureStore, split: str | int, config: HeadConfig | None = None,
                     *, progress: Progress | None = None) -> TrainedHead:
    """Train a frame classifier on the features of ``split``'s training videos in ``store``
    (unlabelled frames, label -1, are left out). Reads no other video. The result depends
    only on those videos' features and labels, ``config`` (``seed`` included) and the thread
    count. ``DataError`` when the split has no training video with labelled frames stored."""
    import torch

    config = config or HeadConfig()
    split = str(split)
    videos, missing = _train_videos(store, split)
    if missing and not config.allow_missing:
        shown = ", ".join(missing[:3]) + (" ..." if len(missing) > 3 else "")
        raise DataError(f"feature store {store.path}: {len(missing)} of split {split}'s "
                        f"{len(missing) + len(videos)} training videos are not stored ({shown}); "
                        f"extract them first, or train on the others with head option "
                        f"allow_missing=true")
    if not videos:
        raise DataError(f"feature store {store.path}: none of split {split}'s training videos "
                        f"is stored; extract them before training a head")
    classes = tuple(store.classes)
    dim = store.dim
    assert dim is not None
    rng = np.random.default_rng(config.seed)
    lengths = {v: store.num_frames(v) for v in videos}
    buffer_frames = max(1, int(config.buffer_mb * 2**20 / (4 * dim)))
    in_memory = sum(lengths.values()) <= buffer_frames
    cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def load(vid: str) -> tuple[np.ndarray, np.ndarray]:
        if vid in cache:
            return cache[vid]
        x, y = store.read(vid)
        keep = y >= 0
        if y.size and y.max() >= len(classes):
            raise DataError(f"feature store {store.path}: video {vid!r} has label {y.max()} "
                            f"for {len(classes)} classes")
        pair = (x[keep], y[keep])
        if in_memory:
            cache[vid] = pair
        return pair

    # Standardisation from the labelled training frames, in float64.
    total = np.zeros(dim)
    squares = np.zeros(dim)
    frames = 0
    for vid in videos:
        x, _ = load(vid)
        total += x.sum(axis=0, dtype=np.float64)
        squares += np.square(x, dtype=np.float64).sum(axis=0)
        frames += x.shape[0]
    if frames == 0:
        raise DataError(f"feature store {store.path}: split {split}'s training videos have no "
                        f"labelled frame")
    mean = total / frames
    std = np.sqrt(np.maximum(squares / frames - mean ** 2, 0.0))
    std = np.where(std > 1e-6, std, 1.0)  # constant features pass through centred

    def shuffled_batches():
        """Minibatches over one epoch: videos in a random order fill a buffer of up to
        ``buffer_mb`` of frames, whose frames are then shuffled."""
        order = [videos[i] for i in rng.permutation(len(videos))]
        pending: list[tuple[np.ndarray, np.ndarray]] = []
        held = 0
        for i, vid in enumerate(order):
            pending.append(load(vid))
            held += pending[-1][0].shape[0]
            if held >= buffer_frames or i == len(order) - 1:
                x = np.concatenate([p[0] for p in pending])
                y = np.concatenate([p[1] for p in pending])
                perm = rng.permutation(x.shape[0])
                for s in range(0, x.shape[0], config.batch_size):
                    idx = perm[s:s + config.batch_size]
                    yield torch.from_numpy(x[idx]), torch.from_numpy(y[idx])
                pending, held = [], 0

    epochs = max(config.epochs, -(-config.min_steps // -(-frames // config.batch_size)))
    task = progress.add_task("head: training", total=epochs) if progress else None
    losses: list[float] = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        module = _build(config, dim, len(classes))
        module.mean.copy_(torch.from_numpy(mean).float())
        module.std.copy_(torch.from_numpy(std).float())
        opt = torch.optim.Adam(module.net.parameters(), lr=config.lr,
                               weight_decay=config.weight_decay)
        loss_fn = torch.nn.CrossEntropyLoss()
        module.train()
        for _epoch in range(epochs):
            seen, summed = 0, 0.0
            for xb, yb in shuffled_batches():
                loss = loss_fn(module(xb), yb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                summed += loss.item() * xb.shape[0]
                seen += xb.shape[0]
            losses.append(summed / max(seen, 1))
            if task is not None:
                progress.advance(task)
        module.eval()
    if task is not None:
        progress.remove_task(task)
    correct = 0
    with torch.inference_mode():
        for vid in videos:
            x, y = load(vid)
            correct += int((module(torch.from_numpy(x)).argmax(1).numpy() == y).sum())
    return TrainedHead(module=module, config=config, split=split, classes=classes, dim=dim,
                       train_videos=tuple(videos), fingerprint=_fingerprint(store, videos),
                       backbone_identity=store.identity, frames=frames, losses=losses,
                       accuracy=correct / frames)


def head_outputs(head: TrainedHead, features: np.ndarray, output: str) -> np.ndarray:
    """The head's per-frame ``softmax`` probabilities or ``logits``, float32 ``[T, classes]``,
    for features ``[T, D]``."""
    import torch

    if output not in OUTPUTS:
        raise ConfigError(f"head output must be one of {', '.join(OUTPUTS)}, got {output!r}")
    rows = []
    with torch.inference_mode():
        for s in range(0, features.shape[0], 8192):
            logits = head.module(torch.from_numpy(np.ascontiguousarray(
                features[s:s + 8192], dtype=np.float32)))
            rows.append((logits.softmax(dim=1) if output == "softmax" else logits).numpy())
    if not rows:
        return np.zeros((0, len(head.classes)), np.float32)
    return np.concatenate(rows).astype(np.float32, copy=False)


# ------------------------------------------------------------------ saving


def head_digest(head: TrainedHead) -> str:
    """sha256 over the head's weights (names, shapes, float32 bytes) and what it records
    (config, split, classes, training videos and their fingerprint): equal heads, equal
    digests, whatever file they are saved in."""
    digest = hashlib.sha256()
    meta = {"config": head.config.to_dict(), "split": head.split, "classes": list(head.classes),
            "dim": head.dim, "train_videos": list(head.train_videos),
            "fingerprint": head.fingerprint, "backbone_identity": head.backbone_identity}
    digest.update(json.dumps(meta, sort_keys=True).encode("utf-8"))
    for name, value in sorted(head.module.state_dict().items()):
        array = np.ascontiguousarray(value.detach().cpu().float().numpy())
        digest.update(f"{name}{list(array.shape)}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def save_head(head: TrainedHead, path: Path) -> None:
    """Write ``head`` to ``path`` atomically (a temp file renamed into place)."""
    import torch

    payload = {
        "format": HEAD_FORMAT, "version": 1,
        "state": {k: v.detach().cpu() for k, v in head.module.state_dict().items()},
        "config": head.config.to_dict(), "split": head.split, "classes": list(head.classes),
        "dim": head.dim, "train_videos": list(head.train_videos),
        "fingerprint": head.fingerprint, "backbone_identity": head.backbone_identity,
        "frames": head.frames, "losses": head.losses, "accuracy": head.accuracy,
    }
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load_head(path: Path) -> TrainedHead:
    """The head saved at ``path`` by ``save_head``; ``DataError`` naming the file otherwise."""
    import torch

    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        if payload.get("format") != HEAD_FORMAT:
            raise ValueError(f"not an actrec frame head (format {payload.get('format')!r})")
        config = HeadConfig.from_options(payload["config"])
        module = _build(config, int(payload["dim"]), len(payload["classes"]))
        module.load_state_dict(payload["state"])
    except (OSError, ValueError, KeyError, RuntimeError, AttributeError, ConfigError) as exc:
        raise DataError(f"{path}: cannot read the frame head: {exc}") from None
    module.eval()
    return TrainedHead(module=module, config=config, split=str(payload["split"]),
                       classes=tuple(payload["classes"]), dim=int(payload["dim"]),
                       train_videos=tuple(payload["train_videos"]),
                       fingerprint=payload["fingerprint"],
                       backbone_identity=payload["backbone_identity"],
                       frames=int(payload["frames"]), losses=list(payload["losses"]),
                       accuracy=float(payload["accuracy"]))


# ------------------------------------------------------------------ the output store


def head_store_path(backbone_store: Path, output: str, split: str | int,
                    stream: str | None = None) -> Path:
    """``<dir>/<backbone store name>[-<stream>]-<output>-split<K>.zarr`` beside the backbone
    store (``stream``: the head is trained on that stream of the store)."""
    backbone_store = Path(backbone_store)
    stem = backbone_store.name.removesuffix(".zarr") + (f"-{stream}" if stream else "")
    return backbone_store.parent / f"{stem}-{output}-split{split}.zarr"


def head_file(store_path: Path) -> Path:
    """Where the head whose outputs the store at ``store_path`` holds is saved: beside it,
    ``<name>.head.pt``."""
    name = store_path.name.removesuffix(".zarr")
    return store_path.parent / f"{name}.head.pt"


@dataclass(frozen=True)
class HeadReport:
    """What ``extract_head_features`` did."""

    store: Path
    head: Path
    split: str
    output: str
    trained: bool  # False: an earlier head trained on the same data was reused
    train_videos: int
    train_frames: int
    train_accuracy: float
    final_loss: float
    written: tuple[str, ...]
    skipped: tuple[str, ...]
    missing_train_videos: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"store": str(self.store), "head": str(self.head), "split": self.split,
                "output": self.output, "trained": self.trained,
                "train_videos": self.train_videos, "train_frames": self.train_frames,
                "train_accuracy": self.train_accuracy, "final_loss": self.final_loss,
                "written": list(self.written), "skipped": list(self.skipped),
                "missing_train_videos": list(self.missing_train_videos)}


_COPIED = ("label_fps", "labels_resampled", "source_fps", "frame_size", "participant",
           "source")


def extract_head_features(
    backbone_store: str | Path,
    split: str | int,
    *,
    output: str = "softmax",
    config: HeadConfig | None = None,
    out: Path | None = None,
    stream: str | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> HeadReport:
    """Train (or reuse) the frame head of ``split`` on ``backbone_store``'s training videos
    and write its per-frame ``output`` (softmax or logits) for EVERY video of that store into
    ``out`` (default ``head_store_path``), the head saved beside it (see the module docs).
    ``stream`` trains on that stream of ``backbone_store`` (default: its own).

    A saved head is reused when its config, training videos and their feature digests are
    the same; otherwise it is trained again, and an existing output store made by another head
    is refused (``DataError`` naming it) unless ``overwrite``, which removes it first. Stored
    videos are skipped unless their backbone features or labels changed since (or
    ``overwrite``).
    """
    from actrec.io.features import FeatureStore
    from actrec.io.integrity import recorded_digest
    from actrec.io.remote import StoreURL

    if output not in OUTPUTS:
        raise ConfigError(f"--head must be one of {', '.join(OUTPUTS)}, got {output!r}")
    config = config or HeadConfig()
    split = str(split)
    root = FeatureStore.open(backbone_store)  # a path or a URL (actrec.io.remote)
    backbone = root.stream(stream) if stream else root
    battrs = backbone.attrs
    if out is None and isinstance(root.path, StoreURL):
        raise ConfigError(f"{root.path}: a frame head's store and head file are written to a "
                          f"local folder; give one (out=...)")
    out = Path(out) if out is not None else head_store_path(
        root.path, output, split, stream if backbone is not root else None)
    head_path = head_file(out)
    videos, missing = _train_videos(backbone, split)
    fingerprint = _fingerprint(backbone, videos)

    head = None
    saved = None
    if head_path.exists() and not overwrite:
        with contextlib.suppress(DataError):  # an unreadable head is trained again
            saved = load_head(head_path)
    if saved is not None and (saved.fingerprint, saved.config, saved.backbone_identity) == \
            (fingerprint, config, backbone.identity):
        head = saved
    trained = head is None
    if trained:
        head = train_frame_head(backbone, split, config, progress=progress)
    name = f"{battrs['extractor']}-{output}-split{split}"
    digest = head_digest(head)
    if (out / "zarr.json").exists():
        recorded = FeatureStore.open(out).attrs.get("extractor_config") or {}
        if recorded.get("head_digest") != digest and not overwrite:
            raise DataError(
                f"{out} holds the outputs of another head (trained on other features or with "
                f"other options: did the split's training videos change?); pass --overwrite "
                f"to replace it and its head, or --out for a new store")
        if overwrite:
            shutil.rmtree(out)
    if trained:  # after the check above: a refused run leaves the old head in place
        save_head(head, head_path)
    extractor_config = {
        "backbone_extractor": battrs["extractor"],
        "backbone_config": battrs["extractor_config"],
        "backbone_identity": backbone.identity,
        "split": split, "output": output, "head_config": config.to_dict(),
        "head_file": head_path.name, "head_digest": digest,
        "train_videos": list(head.train_videos), "train_fingerprint": head.fingerprint,
    }
    source = backbone.source
    if source is not None:
        source = {**source, "extractor": name, "extractor_config": extractor_config}
    store = FeatureStore.open_or_create(
        out, dataset=battrs["dataset"], split_scheme=battrs.get("split_scheme", "default"),
        # Only this split: the other splits' test videos trained this head, so training and
        # evaluating on them would score seen frames.
        classes=battrs["classes"], splits={split: battrs["splits"][split]}, extractor=name,
        extractor_config=extractor_config, lookahead=int(battrs["lookahead"]),
        dtype=battrs["dtype"], background=backbone.background, source=source)
    written, skipped = [], []
    ids = backbone.videos()
    task = progress.add_task(f"head: {output}", total=len(ids)) if progress else None
    for vid in ids:
        attrs = backbone.video_attrs(vid)
        bsha = recorded_digest(attrs, "features")
        # redone when the backbone's features or its labels (a corrected annotation file:
        # same features) changed; both stores record the same digest of the same labels
        if not overwrite and store.has(vid) and not store.damage(vid) and \
                store.video_attrs(vid).get("backbone_sha256") == bsha and \
                recorded_digest(store.video_attrs(vid), "labels") == \
                recorded_digest(attrs, "labels"):
            skipped.append(vid)
        else:
            x, y = backbone.read(vid)
            extra = {k: attrs[k] for k in _COPIED if k in attrs}
            extra["backbone_sha256"] = bsha
            extra["head_train_video"] = vid in head.train_videos
            store.write_video(vid, head_outputs(head, x, output), y, fps=float(attrs["fps"]),
                              source=None, extra=extra)
            written.append(vid)
        if task is not None:
            progress.advance(task)
    if task is not None:
        progress.remove_task(task)
    return HeadReport(store=out, head=head_path, split=split, output=output, trained=trained,
                      train_videos=len(head.train_videos), train_frames=head.frames,
                      train_accuracy=head.accuracy,
                      final_loss=head.losses[-1] if head.losses else float("nan"),
                      written=tuple(written), skipped=tuple(skipped),
                      missing_train_videos=tuple(missing))
