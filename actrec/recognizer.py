"""Live recognition of a trained run, frame by frame: ``Recognizer``.

A ``Recognizer`` rebuilds everything a run's online evaluation uses, from what the run
recorded: the causal feature extractor(s) with the config recorded in the run's feature store
(one per stream of a multi-stream run, concatenated in the run's order), the store's feature
dtype (a float16 store's features are rounded to float16 here too), the run's saved feature
standardisation, its input layout and label space, and the model with its state carried from
frame to frame (``SequenceModel.step`` in eval mode). So a video pushed frame by frame (decoded
as ``actrec extract`` decodes it: ``Recognizer.fps``, ``actrec.live_sources``) gets exactly the
predictions ``actrec eval --online`` gives its stored features.

A run trained to answer late (``actrec train --delay K``) is answered as ``actrec eval
--online`` scores it (``actrec.lookahead``): frame t is labelled by the step that has seen frame
t+K, so a push answers the frame K pushes back (nothing for the first K pushes; each
``Prediction`` names the frame it labels and the newest frame it has seen), and ``flush`` answers
the last K frames at the end of a video by stepping the last input again K times.

A run trained on a frame head's outputs (``actrec.frame_head``: a store of per-frame softmax
or logits of a classifier on a backbone store) gets them live too: the backbone's extractor,
its rows rounded to the store's dtype as the head read them, then the head saved beside the
store (it must be the head that filled it).

Refused, with a ``ConfigError``/``DataError`` naming the run: a model that is not causal,
features that look ahead (the store's ``lookahead`` or the rebuilt extractor's), a store that is
missing, an extractor plugin that cannot be loaded, a store whose extractor or config is not
the one the run was trained on (extracted again since), a frame head that is missing or was
trained again.

Many streams: ``Recognizer(..., streams=N)`` keeps one extractor and one model state per stream;
``push_many`` steps every stream that has a frame in one batch (``actrec.live_state``). Rows an
extractor yields come out as frames go in; an extractor that holds a frame's row back until it
sees more frames cannot answer live and is refused when it does.
"""

from __future__ import annotations

import collections
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from actrec.errors import ActrecError, ConfigError, DataError

if TYPE_CHECKING:  # pragma: no cover
    from actrec.plugin_api import FeatureExtractor

__all__ = ["OTHER_DATASET", "ExtractorFeed", "FeatureSpec", "FrameHead", "OnlineRun",
           "Prediction", "Recognizer", "build_extractor", "build_feed", "load_online_run"]

OTHER_DATASET = "(other dataset)"  # the label of an answer outside the run's dataset

_FPS_SAMPLE = 200  # stored videos read to find the rate the run's features were made at


@dataclass(frozen=True)
class Prediction:
    """The answer for one frame of one stream.

    ``frame``: the frame this labels, its index among the frames the recogniser saw (at
    ``fps``); ``seen``: the newest frame seen when it was answered (``frame`` + the run's
    delay; the stream's last frame for the answers of a ``flush``); ``time``: ``frame / fps``
    seconds; ``label``/``index``: the predicted class (local to the run's dataset) and
    ``score`` its probability (NaN for label arrangements without per-dataset probabilities);
    a run that predicts over all its datasets' outputs (``train --prediction full``) may
    answer with another dataset's class, as evaluation counts it: ``index`` is then
    ``OFF_BLOCK`` (-2), ``label`` ``OTHER_DATASET`` and ``score`` the probability outside
    this dataset's classes; ``top``: the ``top_k`` most probable (label, probability) pairs
    of the dataset's classes; ``timings``: milliseconds
    spent per stage on the push that answered (``extract``, ``step``; the command adds
    ``decode``; a flush has ``step`` only); ``latency_ms``: their sum (a delayed run answers
    ``seen - frame`` frames later on top of it)."""

    stream: int
    frame: int
    seen: int
    time: float
    label: str
    index: int
    score: float
    top: tuple[tuple[str, float], ...]
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def latency_ms(self) -> float:
        return float(sum(self.timings.values()))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (NaN score as null)."""
        return {"stream": self.stream, "frame": self.frame, "seen": self.seen,
                "time": round(self.time, 6), "label": self.label, "index": self.index,
                "score": None if np.isnan(self.score) else round(self.score, 6),
                "top": [{"label": lab, "score": round(p, 6)} for lab, p in self.top],
                "latency_ms": round(self.latency_ms, 3),
                "timings_ms": {k: round(v, 3) for k, v in self.timings.items()}}


@dataclass(frozen=True)
class FeatureSpec:
    """One feature stream of a run: the extractor and config recorded in its store, and the
    dtype the store keeps features in."""

    store: Any  # Path, or actrec.io.remote.StoreURL
    extractor: str
    config: dict[str, Any]
    dtype: str
    dim: int

    @property
    def is_head_store(self) -> bool:
        """Whether the store holds a frame head's outputs (``actrec.frame_head``): its rows
        are computed by the backbone extractor recorded in ``config``, then the head."""
        return "head_file" in self.config and "backbone_extractor" in self.config


@dataclass
class OnlineRun:
    """What live recognition needs of a run (``load_online_run``)."""

    run_dir: Path
    checkpoint: Path
    model_name: str
    model: Any  # SequenceModel, eval mode
    labels: Any  # LabelSpace
    layout: Any  # InputLayout
    domain: int
    dataset: str
    classes: tuple[str, ...]
    prediction: str
    scaler: Any  # FeatureScaler or None
    features: tuple[FeatureSpec, ...]
    fps: float
    device: Any
    delay: int = 0  # frames: the run answers frame t after seeing t + delay (train --delay)
    # How extraction counted a file's frames (``actrec.extract_video``): a file within 2.5 %
    # of ``label_fps`` is read one frame per label frame, unless the labels count time
    # (``labels_by_time``: such a file is resampled by its timestamps).
    label_fps: float | None = None  # None: ``fps``
    labels_by_time: bool = False

    def describe(self) -> dict[str, Any]:
        return {"run": str(self.run_dir), "checkpoint": self.checkpoint.name,
                "model": self.model_name, "dataset": self.dataset, "domain": self.domain,
                "classes": list(self.classes), "fps": self.fps, "delay": self.delay,
                "label_fps": self.label_fps or self.fps, "labels_by_time": self.labels_by_time,
                "features": [{"store": str(f.store), "extractor": f.extractor,
                              "config": f.config, "dtype": f.dtype} for f in self.features]}


def load_online_run(run: str | Path, *, dataset: int | str | None = None,
                    device: str = "cpu", stores: Sequence[str | Path] | None = None
                    ) -> OnlineRun:
    """Load the run ``run`` (a folder or a name ``actrec.runs.resolve_run`` knows) for online
    recognition of its dataset ``dataset`` (an index 0.., a D-number ``"D2"`` or the dataset's
    name as its store records it; default the first). ``stores``: where the run's feature
    stores are now (one per dataset, D1 first; a moved or renamed store, which must hold the
    data the run recorded). Only that dataset's store is read. See the module docstring for
    what is refused."""
    import torch

    from actrec import runs
    from actrec.components import open_store
    from actrec.data.scaling import FeatureScaler
    from actrec.evaluate import load_run_model
    from actrec.io.remote import store_location
    from actrec.lookahead import store_lookahead
    from actrec.protocols import selected_checkpoint

    run_dir = runs.resolve_run(run) if not Path(run).is_dir() else Path(run)
    ckpt_path = selected_checkpoint(run_dir)
    ckpt = runs.load_checkpoint(ckpt_path)
    try:
        spec = ckpt["spec"]
        name = str(ckpt["model_name"])
        store_paths = [store_location(p) for p in ckpt["stores"]]  # a path or a StoreURL
        causal = bool(ckpt.get("causal", True))
    except (KeyError, TypeError) as exc:
        raise DataError(f"{ckpt_path}: not an actrec training checkpoint (missing {exc})") from None
    where = f"run {run_dir}"
    if not causal:
        raise ConfigError(f"{where}: model '{name}' is not causal (it looks at future frames), "
                          f"so it cannot recognise live, frame by frame")
    delay = int(spec.get("delay") or 0)  # answered as eval --online scores it (lookahead)
    if delay < 0:
        raise DataError(f"{ckpt_path}: delay {delay} in its spec; expected frames >= 0")
    if stores is not None:
        if len(stores) != len(store_paths):
            raise ConfigError(f"--store: {where} was trained on {len(store_paths)} dataset(s); "
                              f"give one --store per dataset, D1 first (got {len(stores)})")
        store_paths = [store_location(str(p)) for p in stores]
    k = _domain_index(dataset, store_paths, where)
    recorded = (ckpt.get("store_fingerprints") or [None] * len(store_paths))[k]
    try:
        store = open_store(store_paths[k], spec.get("streams"))
    except DataError as exc:
        raise _missing_store(where, k, store_paths[k], exc, recorded,
                             given=stores is not None) from None
    _check_unchanged(store, recorded, where)
    attrs = store.attrs
    _, causal, ahead = store_lookahead(attrs)  # the rule `actrec eval --online` applies
    if not causal:
        raise ConfigError(f"{where}: feature store {store.path} holds non-causal features "
                          f"(extractor '{attrs.get('extractor')}' looks {ahead} frame(s) "
                          f"ahead): live recognition sees no future frame")
    parts = getattr(store, "stores", None) or (store,)
    features = tuple(FeatureSpec(p.path, str(p.attrs.get("extractor")),
                                 dict(p.attrs.get("extractor_config") or {}),
                                 str(p.attrs.get("dtype") or "float32"), int(p.dim or 0))
                     for p in parts)
    model, labels, layout = load_run_model(ckpt, ckpt_path)
    dev = torch.device(device)
    model.to(dev).eval()
    if not model.causal:
        raise ConfigError(f"{where}: model '{name}' is not causal; it cannot recognise live")
    scalers = ckpt.get("input_scalers")
    width = sum(f.dim for f in features)
    try:
        scaler = FeatureScaler.from_state(scalers[k]) if scalers else None
        if scaler is not None and all(f.dim for f in features) and \
                not scaler.mean.shape == scaler.std.shape == (width,):
            raise ValueError(f"mean {scaler.mean.shape} and std {scaler.std.shape} for "
                             f"{width}-d features")
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise DataError(f"{ckpt_path}: damaged feature standardisation of D{k + 1} "
                        f"(input_scalers: {type(exc).__name__}: {exc})") from None
    return OnlineRun(
        run_dir=run_dir, checkpoint=ckpt_path, model_name=name, model=model, labels=labels,
        layout=layout, domain=k, dataset=str(attrs.get("dataset") or store.path),
        classes=tuple(labels.classes[k]), prediction=str(spec.get("prediction", "block")),
        scaler=scaler, features=features, fps=_feature_fps(store, features, where),
        device=dev, delay=delay, **_label_timing(store))


def _missing_store(where: str, k: int, path: Any, exc: DataError,
                   recorded: dict[str, Any] | None, given: bool) -> DataError:
    """The error for D{k+1}'s store that cannot be opened at ``path``: for the run's own
    record, with the stores of the same data (the identity the run recorded) found in the
    workspace's features folder or beside ``path`` and the option that uses one."""
    text = (f"{where}: its feature store {path} is missing or unreadable ({exc}); live "
            f"recognition of D{k + 1} rebuilds the run's extractor from the config recorded "
            f"there")
    if given or not isinstance(path, Path):
        return DataError(text)
    from actrec.evaluate import stores_with_identity
    from actrec.workspace import home

    found = stores_with_identity((recorded or {}).get("identity"),
                                 [home() / "features", path.parent, path.parent.parent])
    if found:
        text += (f". The same data (the store identity the run recorded) is in "
                 f"{'; '.join(map(str, found))}: give it with --store (one per dataset, D1 "
                 f"first), or move it back")
    else:
        text += ". If you moved it, give its new place with --store (one per dataset, D1 first)"
    return DataError(text)


def _check_unchanged(store: Any, recorded: dict[str, Any] | None, where: str) -> None:
    """``DataError`` when ``store``'s extractor or its config is not the one the run was
    trained on (``recorded``: its ``store_fingerprint``; None for a run trained before they
    were recorded): live recognition rebuilds the extractor from the store, so a store
    extracted again with other options would feed the model features it never learned from."""
    if recorded is None:
        return
    from actrec.components import store_changes

    now = {"identity": getattr(store, "identity", None),
           "has_source": getattr(store, "source", None) is not None,
           "extractor_config": store.attrs.get("extractor_config")}
    # only what the rebuilt extractor depends on: the stored videos are not read here
    changes = store_changes({**recorded, "videos": {}}, {**now, "videos": {}})
    if changes:
        raise DataError(f"{where}: feature store {store.path} changed since the run was trained "
                        f"on it ({'; '.join(changes)}); live recognition rebuilds the "
                        f"extractor recorded there, which is not the one the model learned "
                        f"from: recognise with the store as it was, or train again")


def _domain_index(dataset: int | str | None, stores: Sequence[Any], where: str) -> int:
    if dataset is None:
        return 0
    text = str(dataset).strip()
    if text.isdigit() and int(text) < len(stores):
        return int(text)
    if text.upper().startswith("D") and text[1:].isdigit() and 1 <= int(text[1:]) <= len(stores):
        return int(text[1:]) - 1
    from actrec.io.features import FeatureStore

    names = []
    for i, path in enumerate(stores):
        try:
            name = FeatureStore.open(path).attrs.get("dataset")
        except ActrecError:
            continue
        if name == text:
            return i
        names.append(f"D{i + 1} = {name}")
    raise ConfigError(f"{where}: no dataset {dataset!r}; it was trained on {len(stores)} "
                      f"(give 0..{len(stores) - 1}, D1..D{len(stores)} or a store's dataset: "
                      f"{', '.join(names) or 'none readable'})")


def _feature_fps(store: Any, features: Sequence[FeatureSpec], where: str) -> float:
    """The frame rate the run's features were made at: the extractor's ``fps`` option where it
    sets one, else the rate most of the store's videos were decoded at."""
    for spec in features:
        config = spec.config.get("backbone_config") if spec.is_head_store else spec.config
        fps = (config or {}).get("fps")
        if fps:
            return float(fps)
    rates: Counter = Counter()
    for vid in store.videos()[:_FPS_SAMPLE]:
        fps = store.video_attrs(vid).get("fps")
        if fps:
            rates[float(fps)] += 1
    if not rates:
        raise DataError(f"{where}: feature store {store.path} records no frame rate for its "
                        f"videos; cannot tell at which rate to decode live frames")
    return rates.most_common(1)[0][0]


def _label_timing(store: Any) -> dict[str, Any]:
    """``label_fps`` and ``labels_by_time`` of ``OnlineRun``: the label rate most of the
    store's videos record, and whether most of its videos that a near-rate file would tell
    apart were read by time (their source rate left at the container's, not snapped to the
    label rate). Empty (the defaults) when the store records neither."""
    from actrec.io.video import same_rate

    rates: Counter = Counter()
    by_time: Counter = Counter()
    for vid in store.videos()[:_FPS_SAMPLE]:
        attrs = store.video_attrs(vid)
        label, container = attrs.get("label_fps"), attrs.get("container_fps")
        source = attrs.get("source_fps")
        if not label:
            continue
        rates[float(label)] += 1
        if container and source and abs(container - label) > 1e-9 and \
                same_rate(float(container), float(label)):
            by_time[abs(float(source) - float(container)) < 1e-9] += 1
    if not rates:
        return {}
    return {"label_fps": rates.most_common(1)[0][0],
            "labels_by_time": by_time[True] > by_time[False]}


# --------------------------------------------------------------------------------------------
# Extractors fed frame by frame


class _Starved(Exception):
    """The extractor asked for another frame before yielding the row of the last one."""


class ExtractorFeed:
    """One extractor generator for one stream, fed one frame at a time (``extract`` is a
    generator per video; its state lives in it, so one feed per stream). With ``head`` (a
    frame-head store's, ``FrameHead``), each row is the head's output for the extractor's.
    An extractor that reads the video at its own rate (``video_rate``) is fed a frame's
    ``fresh`` source frames when it has them (``actrec.live_sources``)."""

    def __init__(self, extractor: FeatureExtractor, dim: int, where: str,
                 head: FrameHead | None = None) -> None:
        from actrec.extract_video import reads_video_rate

        self.extractor = extractor
        self.dim = dim
        self.where = where
        self.head = head
        self.video_rate = reads_video_rate(extractor)
        self._pending: collections.deque = collections.deque()
        self._gen: Iterator[np.ndarray] | None = None
        self._last: np.ndarray | None = None  # the row of the last frame

    def _frames(self) -> Iterator[np.ndarray]:
        while True:
            if not self._pending:
                raise _Starved
            yield self._pending.popleft()

    def push(self, frame: np.ndarray, fresh: np.ndarray | None = None) -> np.ndarray:
        """The feature row float32 ``[D]`` of ``frame`` uint8 ``[H, W, 3]``. A video-rate
        extractor is fed ``fresh`` (uint8 ``[n, H, W, 3]``: the source frames since the last
        frame, ending with ``frame``'s) where given, and the row is its last one's; ``n = 0``
        repeats the last frame's row. Other extractors, and ``fresh=None``, take ``frame``."""
        if self.video_rate and fresh is not None:
            if fresh.shape[0] == 0 and self._last is not None:
                return self._last
            batch = fresh if fresh.shape[0] else frame[None]
        else:
            batch = frame[None]
        rows = self._rows(batch)  # [n, D]
        self._last = rows[-1] if self.head is None else self.head(rows[-1:])[0]
        return self._last

    def _rows(self, batch: np.ndarray) -> np.ndarray:
        """The extractor's rows float32 ``[n, D]`` of the next ``n`` frames ``batch``."""
        if self._gen is None:
            self._gen = self.extractor.extract(self._frames())
        self._pending.append(batch)
        name, n = self.extractor.name, batch.shape[0]
        rows: list[np.ndarray] = []
        count = 0
        try:
            while count < n:
                out = np.asarray(next(self._gen), dtype=np.float32)
                if out.ndim != 2 or out.shape[1] != self.dim or count + out.shape[0] > n:
                    self._gen = None
                    raise DataError(f"{self.where}: extractor '{name}' yielded features of "
                                    f"shape {out.shape} for {n - count} frame(s), expected "
                                    f"[{n - count}, {self.dim}]")
                rows.append(out)
                count += out.shape[0]
        except _Starved:
            self._gen = None
            raise ConfigError(f"{self.where}: extractor '{name}' holds a frame's features back "
                              f"until it has seen later frames; live recognition needs one "
                              f"row per frame as it comes") from None
        except StopIteration:
            self._gen = None
            raise DataError(f"{self.where}: extractor '{name}' stopped yielding features") \
                from None
        except ActrecError:
            self._gen = None
            raise
        except (ValueError, TypeError, RuntimeError, IndexError, MemoryError) as exc:
            self._gen = None
            raise DataError(f"{self.where}: extractor '{name}' failed on this frame: "
                            f"{type(exc).__name__}: {exc}") from None
        return np.concatenate(rows)

    def fresh(self) -> ExtractorFeed:
        """A feed of the same extractor (and head) with a generator of its own."""
        return ExtractorFeed(self.extractor, self.dim, self.where, self.head)

    def reset(self) -> None:
        if self._gen is not None:
            self._gen.close()
        self._gen = None
        self._pending.clear()
        self._last = None


@dataclass(frozen=True)
class FrameHead:
    """A frame-head store's head (``actrec.frame_head``): the backbone's rows, rounded to the
    backbone store's dtype as the head read them there, become the head's ``output``
    (softmax or logits)."""

    head: Any  # actrec.frame_head.TrainedHead
    output: str
    dtype: str

    def __call__(self, rows: np.ndarray) -> np.ndarray:  # [N, D] -> [N, classes]
        from actrec.frame_head import head_outputs

        if self.dtype != "float32":
            rows = rows.astype(self.dtype).astype(np.float32)
        return head_outputs(self.head, rows, self.output)


def build_feed(spec: FeatureSpec, where: str, threads: int) -> ExtractorFeed:
    """The feed of one of the run's feature streams: its store's extractor, rebuilt; for a
    frame-head store (``actrec extract-head``/``actrec.frame_head``), the backbone's extractor
    with the head saved beside the store, which must be the head that filled it."""
    if not spec.is_head_store:
        return ExtractorFeed(build_extractor(spec, where, threads), spec.dim or 0, where)
    from actrec.frame_head import head_digest, load_head
    from actrec.io.remote import StoreURL

    cfg = spec.config
    if isinstance(spec.store, StoreURL):
        raise ConfigError(f"{where}: frame-head store {spec.store} is at a URL; live "
                          f"recognition reads its head file from a local folder")
    path = Path(spec.store).parent / str(cfg["head_file"])
    if not path.is_file():
        raise DataError(f"{where}: the frame head of feature store {spec.store} is missing "
                        f"({path}); live recognition applies it to the backbone's features")
    head = load_head(path)
    if head_digest(head) != cfg.get("head_digest"):
        raise DataError(f"{where}: {path} is not the head whose outputs fill {spec.store} "
                        f"(it was trained again since); its outputs are not what the run "
                        f"learned from")
    output = str(cfg.get("output"))
    if spec.dim and len(head.classes) != spec.dim:
        raise DataError(f"{where}: head {path} has {len(head.classes)} outputs, store "
                        f"{spec.store} holds {spec.dim}-d features")
    backbone = FeatureSpec(spec.store, str(cfg["backbone_extractor"]),
                           dict(cfg.get("backbone_config") or {}), spec.dtype, head.dim)
    extractor = build_extractor(backbone, where, threads)
    return ExtractorFeed(extractor, head.dim, where, FrameHead(head, output, spec.dtype))


def build_extractor(spec: FeatureSpec, where: str, threads: int) -> FeatureExtractor:
    """The extractor of ``spec``'s store, rebuilt from its recorded config and set up on the
    CPU with ``threads`` threads. ``ConfigError`` (naming ``where``) for imported features, an
    extractor that cannot be rebuilt, looks ahead or fails to set up; ``DataError`` when it
    gives features of another length than the store's."""
    from actrec import registry
    from actrec.plugin_api import ExtractRuntime

    if spec.extractor.endswith("-import"):  # FeatureStore.imported
        raise ConfigError(f"{where}: feature store {spec.store} holds features imported from "
                          f"files (actrec import, '{spec.extractor}'); live recognition "
                          f"computes features from frames with the extractor that made them, "
                          f"which actrec does not have: train on features `actrec extract` "
                          f"makes to recognise live")

    try:
        extractor = registry.create("extractors", spec.extractor, spec.config)
    except ActrecError as exc:
        raise ConfigError(f"{where}: the extractor of its feature store {spec.store} cannot be "
                          f"rebuilt: {exc}") from None
    lookahead = extractor.checked_lookahead()
    if lookahead:
        raise ConfigError(f"{where}: extractor '{spec.extractor}' looks {lookahead} frame(s) "
                          f"ahead; live recognition sees no future frame")
    dim = extractor.dim()
    if spec.dim and dim != spec.dim:
        raise DataError(f"{where}: extractor '{spec.extractor}' rebuilt from {spec.store} gives "
                        f"{dim}-d features, the store holds {spec.dim}-d ones")
    try:
        extractor.setup(ExtractRuntime(device="cpu", threads=threads))
    except ActrecError:
        raise
    except Exception as exc:  # noqa: BLE001 - third-party code: one message
        raise ConfigError(f"{where}: extractor '{spec.extractor}' failed to set up: "
                          f"{type(exc).__name__}: {exc}") from None
    return extractor


# --------------------------------------------------------------------------------------------
# The recogniser


class Recognizer:
    """Online recognition of a run for ``streams`` independent streams of frames.

    ``push(frame)`` takes one frame of stream 0; ``push_many(frames)`` one frame of each
    stream that has one (``None``: no frame this tick), stepping them in one batch;
    ``flush(stream)`` ends a stream's video; ``reset(stream)`` starts a stream (default: all)
    again as a new video. Frames are uint8 RGB ``[H, W, 3]`` at ``fps`` frames per second (the
    rate the run's features were made at; ``actrec.live_sources`` decodes sources at it).

    Each push answers the frame ``delay`` pushes back (the frame itself for a run trained
    without ``--delay``; nothing while fewer than ``delay + 1`` frames were pushed), and
    ``flush`` answers the ones still owed: every frame pushed is answered exactly once, in
    order."""

    def __init__(self, online: OnlineRun, *, streams: int = 1, top_k: int = 3,
                 threads: int = 1) -> None:
        from actrec.live_state import StateBatcher

        if streams < 1:
            raise ConfigError(f"streams: expected an integer >= 1, got {streams}")
        if top_k < 1:
            raise ConfigError(f"--top-k: expected an integer >= 1, got {top_k}")
        self.run = online
        self.top_k = min(top_k, len(online.classes))
        self._where = f"run {online.run_dir}"
        self._threads = threads
        self._feeds = [self._new_feeds() for _ in range(streams)]
        import torch

        model, dev, k = online.model, online.device, online.domain
        self._batcher = StateBatcher(
            model.init_state, lambda n: torch.full((n,), k, dtype=torch.long, device=dev))
        self._states = [self._batcher.fresh() for _ in range(streams)]
        self._frames = [0] * streams  # frames pushed since the stream's (re)start
        self._last: list[np.ndarray | None] = [None] * streams  # last input row, for a flush

    @classmethod
    def from_run(cls, run: str | Path, *, streams: int = 1, dataset: int | str | None = None,
                 top_k: int = 3, device: str = "cpu", threads: int = 1,
                 stores: Sequence[str | Path] | None = None) -> Recognizer:
        """A recogniser of the run ``run`` (folder or name) for its dataset ``dataset``
        (default: its first; ``stores``: where its stores are now); see ``load_online_run``
        for what is refused."""
        return cls(load_online_run(run, dataset=dataset, device=device, stores=stores),
                   streams=streams, top_k=top_k, threads=threads)

    # ------------------------------------------------------------------ properties

    @property
    def fps(self) -> float:
        """Frames per second the run's features were made at: push frames at this rate."""
        return self.run.fps

    @property
    def classes(self) -> tuple[str, ...]:
        return self.run.classes

    @property
    def label_fps(self) -> float:
        """The rate at which extraction counted a file's frames (``OnlineRun.label_fps``):
        decode sources with it as ``open_source``'s ``nominal_fps``."""
        return self.run.label_fps or self.run.fps

    @property
    def labels_by_time(self) -> bool:
        """Whether extraction resampled near-rate files by their timestamps
        (``OnlineRun.labels_by_time``): ``open_source``'s ``by_time``."""
        return self.run.labels_by_time

    @property
    def delay(self) -> int:
        """Frames a push answers late: frame t is answered once frame t + delay was pushed
        (the run's ``train --delay``; 0: at once)."""
        return self.run.delay

    @property
    def streams(self) -> int:
        return len(self._feeds)

    def _new_feeds(self) -> list[ExtractorFeed]:
        return [build_feed(spec, self._where, self._threads) for spec in self.run.features]

    # ------------------------------------------------------------------ stepping

    @property
    def video_rate(self) -> bool:
        """Whether an extractor of the run reads the video at its own rate (motion windows
        ``window_rate=video``): push each frame with its ``fresh`` source frames
        (``actrec.live_sources.open_source(..., video_rate=True)`` gives them), or features
        differ from the stored ones wherever the source's rate is not the run's."""
        return any(feed.video_rate for feed in self._feeds[0])

    def push(self, frame: np.ndarray, stream: int = 0, fresh: np.ndarray | None = None
             ) -> Prediction | None:
        """Push ``frame``, the next frame of ``stream`` (with its ``fresh`` source frames for
        a ``video_rate`` run): the prediction for the frame ``delay`` pushes back (``frame``
        itself for a run without delay), or ``None`` while the stream has had ``delay``
        frames or fewer."""
        frames: list[np.ndarray | None] = [None] * self.streams
        frames[stream] = frame
        news: list[np.ndarray | None] = [None] * self.streams
        news[stream] = fresh
        return self.push_many(frames, fresh=news)[stream]

    def features(self, frame: np.ndarray, stream: int = 0, fresh: np.ndarray | None = None
                 ) -> np.ndarray:
        """The model input row float32 ``[width]`` of ``frame`` (the next frame of ``stream``;
        ``fresh``: its source frames, for a ``video_rate`` run): the extractors' rows, rounded
        to the store's dtype, concatenated, standardised and arranged as in evaluation.
        Advances the stream's extractors (not its model state)."""
        if fresh is not None:
            fresh = np.asarray(fresh)
            if fresh.dtype != np.uint8 or fresh.ndim != 4 or fresh.shape[3] != 3:
                raise DataError(f"stream {stream}, frame {self._frames[stream]}: expected its "
                                f"source frames as uint8 [n, H, W, 3], got {fresh.dtype} "
                                f"{tuple(fresh.shape)}")
        return self._input_row(self._check_frame(frame, stream), self._feeds[stream], fresh)

    def _input_row(self, frame: np.ndarray, feeds: Sequence[ExtractorFeed],
                   fresh: np.ndarray | None = None) -> np.ndarray:
        rows = []
        for spec, feed in zip(self.run.features, feeds):
            row = feed.push(frame, fresh)
            if spec.dtype != "float32":  # what the store kept and evaluation read back
                row = row.astype(spec.dtype).astype(np.float32)
            rows.append(row)
        x = rows[0] if len(rows) == 1 else np.concatenate(rows)
        if self.run.scaler is not None:
            x = self.run.scaler(x)
        return self.run.layout.arrange(x, self.run.domain)

    def push_many(self, frames: Sequence[np.ndarray | None], *,
                  errors: dict[int, ActrecError] | None = None,
                  fresh: Sequence[np.ndarray | None] | None = None) -> list[Prediction | None]:
        """Push the next frame of each stream that has one in ``frames`` (one entry per stream,
        ``None``: none this tick; ``fresh``: per stream its source frames, for a
        ``video_rate`` run, see ``features``): one entry per stream, its prediction (for the
        frame ``delay`` pushes back, as ``push``) or ``None`` (no frame, or no answer yet). Streams
        whose state allows it are stepped in one batch (``actrec.live_state``). A frame that
        fails (a malformed image, an extractor error) raises its ``ActrecError``, or, with
        ``errors`` (a dict), is recorded there under its stream, which gets ``None``, and the
        other streams go on."""
        import torch

        if len(frames) != self.streams:
            raise ConfigError(f"push_many: expected {self.streams} frame(s) (one per stream, "
                              f"None for none), got {len(frames)}")
        rows: dict[int, np.ndarray] = {}
        extract_ms: dict[int, float] = {}
        for s, frame in enumerate(frames):
            if frame is None:
                continue
            t0 = time.perf_counter()
            try:
                rows[s] = self.features(frame, s, None if fresh is None else fresh[s])
            except ActrecError as exc:
                if errors is None:
                    raise
                errors[s] = exc
                continue
            extract_ms[s] = (time.perf_counter() - t0) * 1e3
        groups: dict[Any, list[int]] = {}
        for s in rows:
            groups.setdefault(self._batcher.key(self._states[s]), []).append(s)
        out: list[Prediction | None] = [None] * self.streams
        run = self.run
        for members in groups.values():
            t0 = time.perf_counter()
            x = torch.from_numpy(np.stack([rows[s] for s in members])).to(run.device)  # [B, W]
            with torch.no_grad():
                state = self._batcher.join([self._states[s] for s in members])
                logits, state = run.model.step(x, state)  # [B, K]
                pred = run.labels.predict(logits, run.domain, run.prediction).cpu().numpy()
                probs = self._probabilities(logits)  # [B, K_k] or None
            for s, new in zip(members, self._batcher.split(state, len(members))):
                self._states[s] = new
            step_ms = (time.perf_counter() - t0) * 1e3
            for b, s in enumerate(members):
                self._last[s] = rows[s]
                seen = self._frames[s]
                self._frames[s] += 1
                if seen < self.delay:  # this step's answer is for a frame before the first
                    continue
                out[s] = self._prediction(s, seen - self.delay, seen, int(pred[b]),
                                          None if probs is None else probs[b],
                                          {"extract": extract_ms[s], "step": step_ms})
        return out

    def flush(self, stream: int = 0) -> list[Prediction]:
        """End ``stream``'s video: the predictions still owed (its last ``delay`` frames, or
        all of them if it had fewer; none without delay), made as ``actrec eval --online``
        makes them at a video's end (``actrec.lookahead``: the last input stepped again
        ``delay`` times, frame t answered by the step that would have seen frame t + delay).
        Then the stream starts again as a new video (``reset``)."""
        import torch

        out: list[Prediction] = []
        pushed, last = self._frames[stream], self._last[stream]
        if self.delay and pushed and last is not None:
            run = self.run
            x = torch.from_numpy(last[None]).to(run.device)  # [1, W]
            state = self._states[stream]
            with torch.no_grad():
                for step in range(pushed, pushed + self.delay):  # steps past the last frame
                    t0 = time.perf_counter()
                    logits, state = run.model.step(x, state)  # [1, K]: frame step - delay
                    if step < self.delay:  # a stream shorter than the delay
                        continue
                    pred = int(run.labels.predict(logits, run.domain, run.prediction)[0])
                    probs = self._probabilities(logits)
                    out.append(self._prediction(
                        stream, step - self.delay, pushed - 1, pred,
                        None if probs is None else probs[0],
                        {"step": (time.perf_counter() - t0) * 1e3}))
        self.reset(stream)
        return out

    def warm_up(self, frames: Sequence[np.ndarray | None]) -> float:
        """Pay the first-call costs (an extractor's lazy set-up, the model's first step,
        allocations) on ``frames`` (one entry per stream, ``None``: none), with throwaway
        extractor and model state: no stream's state or frame count changes. A frame that
        fails is left out (its stream fails on its real push). Returns the milliseconds it
        took. ``actrec.live.run_live`` calls it before any clock starts."""
        import torch

        t0 = time.perf_counter()
        rows = []
        for s, frame in enumerate(frames):
            if frame is None:
                continue
            feeds = [feed.fresh() for feed in self._feeds[s]]  # new generators
            try:
                rows.append(self._input_row(self._check_frame(frame, s), feeds))
            except ActrecError:
                continue
            finally:
                for feed in feeds:
                    feed.reset()
        if rows:
            run = self.run
            x = torch.from_numpy(np.stack(rows)).to(run.device)  # [B, W]
            with torch.no_grad():
                state = self._batcher.join([self._batcher.fresh() for _ in rows])
                logits, _ = run.model.step(x, state)  # [B, K]
                run.labels.predict(logits, run.domain, run.prediction)
                self._probabilities(logits)
        return (time.perf_counter() - t0) * 1e3

    def reset(self, stream: int | None = None) -> None:
        """Start ``stream`` (default: every stream) again as a new video: fresh extractor
        state, fresh model state, frame count 0."""
        for s in range(self.streams) if stream is None else (stream,):
            for feed in self._feeds[s]:
                feed.reset()
            self._states[s] = self._batcher.fresh()
            self._frames[s] = 0
            self._last[s] = None

    # ------------------------------------------------------------------ helpers

    def _check_frame(self, frame: Any, stream: int) -> np.ndarray:
        frame = np.asarray(frame)
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3 \
                or frame.shape[0] < 1 or frame.shape[1] < 1:
            raise DataError(f"stream {stream}, frame {self._frames[stream]}: expected a uint8 "
                            f"RGB image [H, W, 3], got {frame.dtype} {tuple(frame.shape)}")
        return np.ascontiguousarray(frame)

    def _probabilities(self, logits: Any) -> np.ndarray | None:
        from actrec.evaluate import local_probabilities

        try:
            return local_probabilities(logits, self.run.labels, self.run.domain,
                                       self.run.prediction).cpu().numpy()
        except ConfigError:  # label maps: outputs are no single dataset's classes
            return None

    def _prediction(self, stream: int, frame: int, seen: int, index: int,
                    probs: np.ndarray | None, timings: dict[str, float]) -> Prediction:
        classes = self.run.classes
        # index < 0 (OFF_BLOCK): another dataset's output won; never index classes with it
        label = classes[index] if index >= 0 else OTHER_DATASET
        if probs is None:
            score, top = float("nan"), ((label, float("nan")),)
        else:
            order = np.argsort(-probs, kind="stable")[: self.top_k]
            score = float(probs[index]) if index >= 0 else max(0.0, 1.0 - float(probs.sum()))
            top = tuple((classes[int(i)], float(probs[int(i)])) for i in order)
        return Prediction(stream, frame, seen, frame / self.run.fps, label, index, score, top,
                          timings)
