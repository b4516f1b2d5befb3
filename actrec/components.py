"""What training and evaluation both need: opening stores, choosing splits, building models.

``actrec.train`` and ``actrec.evaluate`` import from here and never from each other (training
only calls evaluation lazily, for its periodic monitoring).
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from actrec.errors import ActrecError, ConfigError, DataError

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from actrec.data.labels import InputLayout, LabelSpace
    from actrec.io.features import FeatureStore
    from actrec.nn.base import SequenceModel

__all__ = ["open_store", "choose_split", "build_model", "resolve_model", "resolve_device",
           "same_store", "same_videos", "check_model_contract", "model_options",
           "store_fingerprint", "store_changes", "no_splits"]

# Model options the trainer ties to the run: a plugin option of this name left unset (None)
# becomes the run's history (the number of per-timestep statistics slots a model trains).
HISTORY_OPTION = "max_len"


def open_store(path: Path, streams: Sequence[str] | None = None) -> FeatureStore:
    """Open a feature store (``DataError`` naming the path if it is not one) and select its
    ``streams`` (``FeatureStore.select``: ``None`` its own, several read side by side)."""
    from actrec.io.features import FeatureStore

    return FeatureStore.open(path).select(streams)


def no_splits(path: object) -> DataError:
    """The error for a store without splits, saying how to give it some."""
    return DataError(
        f"feature store {path} records no splits: its dataset listed none when it was "
        "extracted. Give the dataset split lists (MS-TCN layout: splits/train.split1.bundle "
        "and splits/test.split1.bundle, one video per line) and run `actrec extract` again: "
        "it records them without extracting any video twice. An imported store: `actrec "
        "import ... --splits loo` (or kfold:K)")


def choose_split(store: FeatureStore, name: str | None) -> tuple[str, dict[str, list[str]]]:
    """The split called ``name`` of ``store`` (default: its first); ``ConfigError`` if unknown."""
    splits = store.splits
    if not splits:
        raise no_splits(store.path)
    if name is None:
        name = next(iter(splits))
    if name not in splits:
        raise ConfigError(f"feature store {store.path} has no split '{name}'; expected one of: "
                          f"{', '.join(splits)}")
    return name, splits[name]


def same_store(a: FeatureStore, b: FeatureStore) -> bool:
    """True when two opened stores are one: the same folder, or the same recorded source."""
    from actrec.io.remote import StoreURL

    if isinstance(a.path, StoreURL) or isinstance(b.path, StoreURL):  # a store at a URL
        if str(a.path) == str(b.path):
            return True
    elif Path(a.path).resolve() == Path(b.path).resolve():
        return True
    ida, idb = getattr(a, "identity", None), getattr(b, "identity", None)
    return ida is not None and ida == idb


def same_videos(a: FeatureStore, b: FeatureStore) -> bool:
    """True when two stores hold features of the same videos (other extractors, say): the same
    recorded dataset source (plugin and options), or, where a store recorded none, the same
    dataset name and classes."""
    sa, sb = getattr(a, "source", None), getattr(b, "source", None)
    if sa is not None and sb is not None:
        return (sa.get("dataset"), sa.get("options")) == (sb.get("dataset"), sb.get("options"))
    return (a.attrs.get("dataset") == b.attrs.get("dataset")
            and list(a.classes) == list(b.classes))


def store_fingerprint(store: FeatureStore, split: str) -> dict[str, Any]:
    """What a run trained on in ``store``: its identity (source, extractor and config), whether
    the store recorded its source, its extractor config, and for every stored video of
    ``split`` (train and test) the frame count and the digests its commit recorded."""
    _, lists = choose_split(store, split)
    ids = sorted({*lists.get("train", ()), *lists.get("test", ())})
    videos = {}
    for v in ids:
        if store.has(v):
            attrs = store.video_attrs(v)
            digests = {k: r.get("sha256") for k, r in (attrs.get("integrity") or {}).items()}
            videos[v] = {"frames": int(attrs["num_frames"]), "sha256": digests}
    return {"identity": getattr(store, "identity", None),
            "has_source": getattr(store, "source", None) is not None,
            "extractor_config": store.attrs.get("extractor_config"),
            "split": split, "videos": videos}


def store_changes(recorded: Mapping[str, Any], now: Mapping[str, Any]) -> list[str]:
    """What differs between two ``store_fingerprint``s, in words (empty when nothing does).

    A video extracted since (a test video that was missing) is not a change; one that is gone,
    has another frame count or other recorded digests is. Identities are compared when both
    stores recorded their source (recording it on an older store changes the identity, not
    the data)."""
    changes = []
    if recorded.get("has_source") and now.get("has_source") and \
            recorded.get("identity") != now.get("identity"):
        changes.append("its source or extractor differs")
    if recorded.get("extractor_config") != now.get("extractor_config"):
        changes.append(f"extractor config {recorded.get('extractor_config')} -> "
                       f"{now.get('extractor_config')}")
    old, new = dict(recorded.get("videos") or {}), dict(now.get("videos") or {})
    gone = sorted(set(old) - set(new))
    both = sorted(set(old) & set(new))
    resized = [v for v in both if old[v]["frames"] != new[v]["frames"]]
    rewritten = [v for v in both if v not in resized and old[v].get("sha256")
                 and new[v].get("sha256") and old[v]["sha256"] != new[v]["sha256"]]
    if gone:
        changes.append(f"{len(gone)} video(s) missing (e.g. '{gone[0]}')")
    if resized:
        v = resized[0]
        changes.append(f"{len(resized)} video(s) have other frame counts (e.g. '{v}': "
                       f"{old[v]['frames']} -> {new[v]['frames']})")
    if rewritten:
        changes.append(f"{len(rewritten)} video(s) hold other features or labels (e.g. "
                       f"'{rewritten[0]}')")
    return changes


def resolve_device(name: str) -> torch.device:
    """``torch.device(name)``; ``ConfigError`` for an unknown device or CUDA that is absent."""
    import torch

    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r}; expected 'cpu' or 'cuda'") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but torch sees no CUDA device")
    return device


def _model_class(name: str) -> type:
    from actrec.registry import plugin_class

    return plugin_class("models", name)


def _projection_value(config_cls: type, layout: InputLayout) -> Any:
    """What to pass as ``input_projection``: the domains' dims for a tuple option, else on."""
    hint = typing.get_type_hints(config_cls).get("input_projection")
    if typing.get_origin(hint) is tuple or hint is tuple:
        return tuple(layout.dims)
    return True


def model_options(
    name: str, options: Mapping[str, Any], layout: InputLayout, history: int | None
) -> dict[str, Any]:
    """The options the plugin ``name`` is configured with for a run: ``options`` plus the
    per-domain input projection (``layout.mode == "projection"``) and, where the plugin has a
    ``max_len`` option left unset, the run's ``history``. ``ConfigError`` when the plugin
    lacks a projection that is asked for, or a ``max_len`` shorter than the history is given:
    timesteps past it would be normalised with statistics no batch ever estimated."""
    cls = _model_class(name)
    fields = {f.name for f in dataclasses.fields(cls.Config)}
    opts = dict(options)
    if layout.mode == "projection":
        if "input_projection" not in fields:
            raise ConfigError(
                f"model '{name}' has no per-domain input projection (option input_projection); "
                f"use input_arrangement 'blocks'"
            )
        opts["input_projection"] = _projection_value(cls.Config, layout)
    if history is not None and HISTORY_OPTION in fields:
        given = opts.get(HISTORY_OPTION)
        if given is None or given == "":
            opts[HISTORY_OPTION] = history
        else:
            try:
                value = int(given)
            except (TypeError, ValueError):
                raise ConfigError(f"model '{name}': option {HISTORY_OPTION} must be an integer, "
                                  f"got {given!r}") from None
            if value < history:
                raise ConfigError(
                    f"model '{name}': option {HISTORY_OPTION}={value} is shorter than the "
                    f"training history ({history} frames); leave it unset (it follows "
                    f"--history) or give at least {history}")
    return opts


def build_model(
    name: str,
    options: Mapping[str, Any],
    layout: InputLayout,
    labels: LabelSpace,
    *,
    history: int | None = None,
) -> tuple[Any, SequenceModel]:
    """The model plugin ``name`` configured by ``options`` (see :func:`model_options`) and its
    module for ``layout`` inputs and ``labels`` outputs.

    Checks what the contract promises, naming the plugin: ``build`` returns a
    ``SequenceModel`` whose ``forward`` takes ``mask``, and a causal model implements ``step``.
    An exception inside the plugin's ``build`` becomes a ``ConfigError``. Draws initial weights
    from torch's global RNG (seed it, or fork it, first)."""
    cls = _model_class(name)
    opts = model_options(name, options, layout, history)
    config = cls.Config.from_options(opts, owner=f"model '{name}'")
    return _instantiate(name, cls, config, layout, labels)


def _instantiate(name: str, cls: type, config: Any, layout: InputLayout,
                 labels: LabelSpace) -> tuple[Any, SequenceModel]:
    from actrec.nn.base import SequenceModel

    plugin = cls(config)
    try:
        model = plugin.build(layout.width, labels.num_classes)
    except ActrecError:
        raise
    except Exception as exc:  # a plugin's bug must not surface as a traceback
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ConfigError(f"model plugin '{name}' failed to build its module "
                          f"({type(exc).__name__}{': ' + first if first else ''})") from None
    if not isinstance(model, SequenceModel):
        raise ConfigError(f"model plugin '{name}': build() must return an "
                          f"actrec.nn.base.SequenceModel, got {type(model).__name__}")
    check_model_contract(name, plugin, model)
    return plugin, model


def check_model_contract(name: str, plugin: Any, model: SequenceModel) -> None:
    """``ConfigError`` naming the plugin when ``model`` breaks the module contract: ``forward``
    without a ``mask`` parameter, or a model declared causal (plugin or module) without its own
    ``init_state``/``step`` (it could be trained but never evaluated online)."""
    from actrec.nn.base import SequenceModel

    params = inspect.signature(model.forward).parameters
    takes_mask = "mask" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())
    if not takes_mask:
        raise ConfigError(f"model plugin '{name}': {type(model).__name__}.forward must accept "
                          f"forward(x, domain, mask=None) (mask [T, N], True on real frames)")
    causal = bool(getattr(plugin, "causal", True)) and bool(model.causal)
    if causal:
        missing = [m for m in ("init_state", "step")
                   if getattr(type(model), m) is getattr(SequenceModel, m)]
        if missing:
            raise ConfigError(
                f"model plugin '{name}' is declared causal but {type(model).__name__} does not "
                f"implement {' and '.join(missing)}(): online evaluation steps a causal model "
                f"frame by frame; implement them, or set causal = False on the plugin")


def resolve_model(checkpoint: Mapping[str, Any], layout: InputLayout, labels: LabelSpace, *,
                  where: Any) -> tuple[Any, SequenceModel]:
    """The plugin and a fresh module of the model a training checkpoint holds, configured
    exactly as trained: from the plugin config the run recorded (its ``max_len`` included,
    whatever today's defaults are), or, for checkpoints without one, from the spec's options
    and history. ``where`` names the checkpoint in errors."""
    name = str(checkpoint["model_name"])
    spec = checkpoint.get("spec", {})
    cls = _model_class(name)
    # Options added to a plugin after a run was recorded: the value that run trained with,
    # not today's default (a plugin's Config.RECORDED_BEFORE, e.g. average's window 0).
    before = dict(getattr(cls.Config, "RECORDED_BEFORE", {}) or {})
    recorded = checkpoint.get("model_config")
    if isinstance(recorded, Mapping):
        # The recorded config already holds the projection and max_len the run trained with.
        config = cls.Config.from_options({**before, **dict(recorded)},
                                         owner=f"model '{name}' ({where})")
        return _instantiate(name, cls, config, layout, labels)
    return build_model(name, {**before, **spec.get("model_options", {})}, layout, labels,
                       history=int(spec.get("history", 200)))
