"""The public plugin contract: one small base class per plugin kind.

A plugin is a class with a ``name``, a frozen ``Config`` dataclass of options, and one or two
methods. It is registered through an entry point in one of the groups ``actrec.datasets``,
``actrec.extractors`` or ``actrec.models``; the built-ins use the same groups. See
``docs/plugins.md`` for a complete walk-through.

This module imports neither torch nor zarr nor decord, so that listing and validating plugins
stays cheap; plugins should likewise import heavy libraries inside their methods.
"""

from __future__ import annotations

import dataclasses
import numbers
import types
import typing
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from actrec.errors import ConfigError, DataError, UnknownOptionError

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from actrec.nn.base import SequenceModel

__all__ = [
    "PluginConfig",
    "Plugin",
    "VideoRecord",
    "Split",
    "DatasetIndex",
    "Dataset",
    "ExtractRuntime",
    "FeatureExtractor",
    "TemporalModel",
    "KINDS",
]


# --------------------------------------------------------------------------------------------
# Options


@dataclass(frozen=True)
class PluginConfig:
    """Base of every plugin's ``Config``: a frozen dataclass whose fields are the options.

    Subclasses must be decorated with ``@dataclass(frozen=True)`` and give every field a
    default. Supported field types: ``str``, ``int``, ``float``, ``bool``, ``Path``, optional
    variants of these (``int | None``), and ``tuple[str, ...]`` / ``tuple[int, ...]``.
    """

    @classmethod
    def from_options(cls, options: Mapping[str, Any], *, owner: str = "") -> PluginConfig:
        """Build a config from ``options``, converting strings to the field types.

        Raises ``ConfigError`` naming the option and ``owner`` (for example
        ``"dataset 'synthetic'"``) for an unknown key or a value of the wrong type.
        """
        fields = {f.name: f for f in dataclasses.fields(cls)}
        hints = typing.get_type_hints(cls)
        where = f" for {owner}" if owner else ""
        values: dict[str, Any] = {}
        for key, raw in options.items():
            name = key.replace("-", "_")
            if name not in fields:
                known = ", ".join(sorted(fields)) or "(none)"
                raise UnknownOptionError(
                    f"unknown option '{key}'{where}; expected one of: {known}", key, owner)
            try:
                values[name] = coerce(raw, hints[name])
            except (TypeError, ValueError) as exc:
                raise ConfigError(
                    f"option '{key}'{where}: {exc}"
                ) from None
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """The options as JSON-compatible values (paths become strings, tuples lists)."""
        return {k: _jsonable(v) for k, v in dataclasses.asdict(self).items()}


def coerce(value: Any, annotation: Any) -> Any:
    """Convert ``value`` (often a string from the command line or a TOML file) to ``annotation``.

    Raises ``ValueError`` with a message saying what was expected.
    """
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("", "none", "null")):
            return None
        return coerce(value, args[0])
    if origin is tuple:
        (item, *_rest) = typing.get_args(annotation) or (str,)
        if isinstance(value, str):
            parts = [p.strip() for p in value.split(",") if p.strip()]
        elif isinstance(value, Iterable):
            parts = list(value)
        else:
            raise ValueError(f"expected a comma-separated list, got {value!r}")
        return tuple(coerce(p, item) for p in parts)
    if annotation is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"expected a boolean (true/false), got {value!r}")
    if annotation is int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError(f"expected an integer, got {value!r}")
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ValueError(f"expected an integer, got {value!r}") from None
    if annotation is float:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ValueError(f"expected a number, got {value!r}") from None
    if annotation is Path:
        return Path(value).expanduser()
    if annotation is str:
        if not isinstance(value, (str, int, float)):
            raise ValueError(f"expected a string, got {value!r}")
        return str(value)
    raise ValueError(f"options of type {annotation!r} are not supported; use str, int, float, "
                     f"bool, Path, an optional of these, or a tuple")


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    return value


class Plugin(ABC):
    """What every plugin kind shares: a name and a typed config, given at construction."""

    name: ClassVar[str]
    Config: ClassVar[type[PluginConfig]] = PluginConfig

    def __init__(self, config: PluginConfig | None = None) -> None:
        self.config = config if config is not None else self.Config()


# --------------------------------------------------------------------------------------------
# Datasets


@dataclass(frozen=True)
class VideoRecord:
    """One video of a dataset with its per-frame labels.

    ``labels`` is an int64 array ``[T]`` of class indices at ``fps``; ``-1`` marks an
    unlabelled frame, ignored by the loss and the metrics.

    By default label ``i`` belongs to the file's frame ``i`` when the file's own rate is within
    2.5 % of ``fps`` (29.97 for 30: the annotators counted the file's frames). Set
    ``labels_by_time`` when the labels count time at exactly ``fps`` instead (the dataset's
    frames were extracted at that rate, as ``ffmpeg -r 60`` does from 59.94 fps files for
    EPIC-Kitchens): the file is then resampled to ``fps`` by timestamps, and never drifts
    from its labels (0.1 % at 59.94 vs 60: 3.6 s after an hour).
    """

    id: str
    participant: str
    labels: np.ndarray
    fps: float
    path: Path | None = None  # the video file, where the dataset has one
    camera: str | None = None
    recipe: str | None = None
    labels_by_time: bool = False
    # The labels cover the start of the video only, by design (Signing in the Wild labels each
    # video's first 2,000 frames): extraction cuts a longer video to them without calling the
    # difference a wrong video. A video shorter than its labels is checked as any other.
    labels_cover_prefix: bool = False

    @property
    def num_frames(self) -> int:
        return int(self.labels.shape[0])


@dataclass(frozen=True)
class Split:
    """One train/test split: video ids on each side, never the same video on both (a
    ``DataError`` naming the split and a video otherwise)."""

    name: str
    train: tuple[str, ...]
    test: tuple[str, ...]

    def __post_init__(self) -> None:
        both = sorted(set(self.train) & set(self.test))
        if both:
            raise DataError(f"split '{self.name}' lists {len(both)} video(s) both for training "
                            f"and for testing (e.g. {both[0]!r}): scores would be inflated")


@dataclass
class DatasetIndex:
    """Everything a dataset plugin knows about its data once loaded."""

    name: str
    classes: tuple[str, ...]
    videos: dict[str, VideoRecord]
    splits: dict[str, Split]
    fps: float
    # The background class(es), by index: segment metrics leave their segments out by default,
    # as MS-TCN's evaluation leaves out its class named "background". Declare a class here only
    # where published segment scores for this label set leave it out.
    background: int | tuple[int, ...] | None = None
    label_set: str = "default"
    # What a loading policy dropped or repaired: description -> count (frames, rows, files).
    repairs: dict[str, int] = field(default_factory=dict)
    # Annotated videos whose file (or frame folder) was not found: id -> where it was looked
    # for. Their records have ``path=None``; extraction reports them as failed with this text.
    missing_videos: dict[str, str] = field(default_factory=dict)

    @property
    def background_classes(self) -> tuple[int, ...]:
        """``background`` as a sorted tuple of class indices (empty where there is none);
        ``ConfigError`` naming the dataset for an index outside its classes."""
        bg = self.background
        found = () if bg is None else (bg,) if isinstance(bg, numbers.Integral) else tuple(bg)
        for c in found:
            if isinstance(c, bool) or not isinstance(c, numbers.Integral) \
                    or not 0 <= c < len(self.classes):
                raise ConfigError(f"dataset '{self.name}': background class {c!r} is not an "
                                  f"index of its {len(self.classes)} classes")
        return tuple(sorted({int(c) for c in found}))

    def split(self, name: str | int) -> Split:
        """The split called ``name`` (``1`` and ``"1"`` both work); ``ConfigError`` if unknown."""
        key = str(name)
        if key not in self.splits:
            known = ", ".join(self.splits) or "(none)"
            raise ConfigError(
                f"dataset '{self.name}' has no split '{key}'; expected one of: {known}"
            )
        return self.splits[key]


class Dataset(Plugin):
    """A dataset plugin: reads a dataset's files as they are shipped.

    Implement ``load``. Its ``Config`` should hold at least ``root: Path | None = None`` (the
    data folder). actrec fills an unset ``root`` when the plugin is constructed, the same way
    for every dataset plugin: ``$ACTREC_DATA_<NAME>`` if set, else ``<workspace>/data/<name>``,
    made absolute (``actrec.workspace.dataset_root``); ``existing_root()`` checks it exists.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        load = cls.__dict__.get("load")
        if callable(load) and not getattr(load, "__isabstractmethod__", False) \
                and not getattr(load, "_actrec_guarded", False):
            cls.load = _guarded_load(load)  # type: ignore[method-assign]

    def __init__(self, config: PluginConfig | None = None) -> None:
        super().__init__(config)
        if any(f.name == "root" for f in dataclasses.fields(self.config)):
            from actrec.workspace import dataset_root

            given = self.config.root  # type: ignore[attr-defined]
            root = dataset_root(self.name, given)
            self.config = dataclasses.replace(  # type: ignore[misc]
                self.config, root=str(root) if isinstance(given, str) else root)

    def existing_root(self) -> Path:
        """The data folder (``config.root``); ``DataError`` naming it and the environment
        variable that sets it when it is not an existing folder."""
        from actrec.errors import DataError
        from actrec.workspace import data_root_var

        root = Path(getattr(self.config, "root", None) or "")
        if not root.is_dir():
            raise DataError(f"data root for dataset '{self.name}' not found: {root} (pass "
                            f"--root, -o root=DIR or set {data_root_var(self.name)})")
        return root

    @abstractmethod
    def load(self) -> DatasetIndex:
        """Read the annotations (not the videos) and return the index.

        Raises ``DataError`` naming the file (and line) for missing or malformed input.
        """


def _guarded_load(load):
    """``load`` raising ``PluginError`` (naming the dataset and where in its code it failed)
    for any exception that is not actrec's own: a bug in a dataset plugin is one message from
    every command that loads it (``datasets info``, ``extract``, ``train``), not a traceback.
    ``DataError``/``ConfigError`` pass unchanged, and so do Ctrl-C and exit."""
    import functools

    @functools.wraps(load)
    def guarded(self: Dataset, *args: Any, **kwargs: Any) -> DatasetIndex:
        from actrec.errors import ActrecError, PluginError

        try:
            return load(self, *args, **kwargs)
        except ActrecError:
            raise
        except Exception as exc:  # third-party code: one message naming the plugin
            raise PluginError(f"dataset '{self.name}' failed to load: {type(exc).__name__}: "
                              f"{exc}{_where(exc, load)}") from exc

    guarded._actrec_guarded = True  # type: ignore[attr-defined]
    return guarded


def _where(exc: BaseException, func: Any) -> str:
    """`` (at FILE:LINE in NAME)`` for the last frame of ``exc``'s traceback inside the
    module that defines ``func`` (else its last frame); empty when there is none."""
    import inspect
    import traceback

    frames = traceback.extract_tb(exc.__traceback__)
    try:
        home = inspect.getsourcefile(func)
    except TypeError:
        home = None
    own = [f for f in frames if home is not None and f.filename == home]
    frame = (own or frames or [None])[-1]
    return f" (at {frame.filename}:{frame.lineno} in {frame.name})" if frame else ""


# --------------------------------------------------------------------------------------------
# Feature extractors


@dataclass(frozen=True)
class ExtractRuntime:
    """Where and how an extractor runs, given to ``FeatureExtractor.setup`` by the host.

    ``device``: ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` (checked available before ``setup``).
    ``threads``: this process's share of the CPU cores; the host has already set torch's (when
    torch is imported) and OpenCV's thread counts to it. ``worker``/``workers``: this
    process's index among the extraction processes and their number.
    """

    device: str = "cpu"
    threads: int = 1
    worker: int = 0
    workers: int = 1


class FeatureExtractor(Plugin):
    """Turns decoded frames into one feature vector per frame.

    The host (``actrec.extract``) owns decoding, batching, resuming, progress and writing; an
    extractor only maps frames to features. Every extractor class must declare ``lookahead``,
    how many future frames a frame's feature depends on (0 for a causal extractor, which
    online recognition requires), as a class attribute or a property computed from the config.
    There is deliberately no default: a class that does not declare it is refused.
    """

    lookahead: ClassVar[int]  # declared by every subclass; see checked_lookahead
    runtime: ExtractRuntime = ExtractRuntime()  # replaced by setup()

    @property
    def causal(self) -> bool:
        return self.checked_lookahead() == 0

    @classmethod
    def lookahead_problem(cls) -> str | None:
        """Why ``cls`` does not declare a usable ``lookahead`` (``None`` when it does): it must
        be an integer >= 0 or a property (checked on instances by ``checked_lookahead``)."""
        if not hasattr(cls, "lookahead"):
            return (f"{cls.__name__} does not declare lookahead: every extractor must say how "
                    f"many future frames a frame's feature depends on (lookahead = 0 for a causal "
                    f"extractor), as a class attribute or a property")
        value = cls.lookahead
        if isinstance(value, property):
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            return (f"{cls.__name__}.lookahead must be an integer >= 0 (future frames a feature "
                    f"depends on) or a property, got {value!r}")
        return None

    def checked_lookahead(self) -> int:
        """``lookahead`` after checking it is declared and an integer >= 0; ``ConfigError``
        naming the extractor and the value otherwise (actrec calls this when it builds an
        extractor, before anything is written)."""
        if not hasattr(self, "lookahead"):
            raise ConfigError(
                f"extractor '{self.name}' ({type(self).__name__}) does not declare lookahead: "
                f"every extractor must say how many future frames a frame's feature depends on "
                f"(lookahead = 0 for a causal extractor)")
        value = self.lookahead
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(
                f"extractor '{self.name}': lookahead must be an integer >= 0 (the number of "
                f"future frames a frame's feature depends on), got {value!r} "
                f"({type(value).__name__})")
        return value

    @property
    def fps(self) -> float | None:
        """Frame rate the frames should be resampled to, or ``None`` for the dataset's label
        rate (the rate of its annotations)."""
        return getattr(self.config, "fps", None)

    def setup(self, runtime: ExtractRuntime) -> None:
        """Called once in each process that extracts, after construction and before its first
        video: load weights, build sessions, move to ``runtime.device`` here (the constructor
        also runs in the parent process, only to check the options). Overrides must call
        ``super().setup(runtime)``."""
        self.runtime = runtime

    @abstractmethod
    def dim(self) -> int:
        """Length D of every feature vector."""

    @abstractmethod
    def extract(self, batches: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """One video: consume frame batches ``[B, H, W, 3]`` uint8 RGB in time order; yield
        feature batches ``[B', D]`` float32 in the same order, exactly one row per frame
        received in total. Rows may lag behind frames (an extractor with a lookahead yields
        them late and handles the video's end itself, e.g. by repeating the last frame).
        State kept across batches lives in the generator; each call starts a new video.
        ``batches`` must be iterated on the calling thread: the host does its bookkeeping
        (progress, reports of videos written meanwhile) inside that iteration."""


# --------------------------------------------------------------------------------------------
# Temporal models


class TemporalModel(Plugin):
    """Builds a ``actrec.nn.base.SequenceModel`` (a torch module) from its config.

    The module's ``forward(x, domain, mask=None)`` maps features ``x [T, N, input_dim]``
    (time-major), domain flags ``domain [N]`` (0 = D1, 1 = D2; in training the D1 rows come
    first) and ``mask [T, N]`` (bool, True on real frames; windows shorter than the history are
    padded at the END of their row) to logits ``[T, N, num_classes]``. Padding is not data: the
    logits of real frames, every statistic the model keeps (batch-norm means and variances,
    running statistics) and the gradients of a loss over real frames must not depend on the
    padded values; the logits at padded frames are ignored.

    ``causal`` models support online, frame-by-frame inference (``init_state`` / ``step``, see
    ``actrec.nn.base``); ``eval --online`` refuses the others.

    A model with per-timestep statistics may take a ``max_len: int | None = None`` option:
    None means the run's ``--history``, which the trainer fills in before ``build``.
    """

    causal: ClassVar[bool] = True

    @abstractmethod
    def build(self, input_dim: int, num_classes: int) -> SequenceModel:
        """A fresh model mapping ``[T, N, input_dim]`` features to ``[T, N, num_classes]``
        (``forward(x, domain, mask=None)``, as the class docstring says)."""


KINDS: dict[str, type[Plugin]] = {
    "datasets": Dataset,
    "extractors": FeatureExtractor,
    "models": TemporalModel,
}
