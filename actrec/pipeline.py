"""The steps of the command line as library calls: dataset reference in, report out.

Each function resolves names (plugins, dataset references, workspace paths) and calls the
module that does the work; ``actrec.cli`` only parses options and renders what these return.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from actrec.errors import ConfigError, Interrupted


def extract_dataset(
    dataset_ref: str,
    *,
    dataset_options: Mapping[str, str] | None = None,
    extractor: str = "colorgrad",
    extractor_options: Mapping[str, str] | None = None,
    split: str | None = None,
    out: Path | None = None,
    overwrite: bool = False,
    dtype: str = "float16",
    progress: Any = None,
    trust_store: bool = False,
    workers: int = 1,
    shard: str | tuple[int, int] | None = None,
    device: str = "cpu",
    length_policy: str = "truncate",
    max_length_gap: float = 5.0,
    batch_size: int = 64,
    stream: str | None = None,
    max_length_share: float = 0.2,
):
    """Extract per-frame features of a dataset's videos into a feature store.

    ``split`` limits the work to that split's videos (train and test); the store records all
    splits either way. ``trust_store`` skips comparing stored videos' sources and labels with
    the files and annotations; ``workers``, ``shard``, ``device``, ``length_policy``,
    ``max_length_gap``, ``max_length_share`` and ``batch_size`` are passed on (see
    ``actrec.extract.extract_features``). Annotated videos whose file the dataset did not
    find fail with its reason while the others go on; a ``ConfigError`` only when none of the
    selected videos has a file. ``stream`` writes that named stream of the store (default
    store with a stream: the dataset's ``streams.zarr``, which holds all its streams). Returns ``actrec.extract.ExtractReport``.
    """
    from actrec import registry
    from actrec.extract import extract_features
    from actrec.io.features import source_of
    from actrec.refs import canonical_ref, dataset_from_ref
    from actrec.workspace import default_store_path

    # Options given with -o are part of what the dataset is: they name its store.
    ref = canonical_ref(dataset_ref, dataset_options)
    dataset = dataset_from_ref(dataset_ref, dataset_options)
    ext = registry.create("extractors", extractor, dict(extractor_options or {}))
    # The store is tied to this source: all dataset options (the root absolute), extractor.
    source = source_of(dataset.name, dataset.config.to_dict(), ext.name, ext.config.to_dict())
    index = dataset.load()
    video_ids = None
    if split is not None:
        chosen = index.split(split)
        video_ids = sorted(set(chosen.train) | set(chosen.test))
    store = out if out is not None else default_store_path(
        ref, extractor if stream is None else "streams", getattr(dataset.config, "root", None))
    selected = [index.videos[v] for v in (index.videos if video_ids is None else video_ids)]
    if selected and all(r.path is None for r in selected):
        reasons = getattr(index, "missing_videos", None) or {}
        why = reasons.get(selected[0].id, "the dataset gives no video file for it")
        raise ConfigError(
            f"dataset '{ref}' has no video files for extraction (e.g. {selected[0].id}: {why}); "
            f"point --root (or -o videos=DIR) at its videos, or import its public features "
            f"instead (actrec import)"
        )
    return extract_features(
        index, ext, store, dataset_ref=ref, split_scheme=index.label_set,
        video_ids=video_ids, overwrite=overwrite, dtype=dtype, progress=progress,
        source=source, trust_store=trust_store, workers=workers, shard=shard, device=device,
        length_policy=length_policy, max_length_gap=max_length_gap, batch_size=batch_size,
        stream=stream, max_length_share=max_length_share,
    )


def train_from_refs(
    model: str,
    *,
    d1: str | None = None,
    d2: str | None = None,
    data_refs: list[str] | None = None,
    preset_record: Mapping[str, Any] | None = None,
    extractor: str | None = None,
    model_options: Mapping[str, str] | None = None,
    run_dir: Path | None = None,
    sources: Mapping[str, str] | None = None,
    progress: Any = None,
    tensorboard: bool = False,
    **spec_fields: Any,
):
    """Train ``model`` on the feature stores of ``d1`` (and ``d2``); returns ``TrainResult``.

    ``d1``/``d2`` are store paths or dataset references (see ``actrec.refs.resolve_store``);
    ``data_refs`` gives D1, D2, D3, ... at once instead (joint training of several).
    ``spec_fields`` are the remaining ``actrec.train.TrainSpec`` fields (``init_from`` may be a
    run name or folder). ``preset_record`` (``actrec.presets.Preset.to_dict()``) is recorded
    in the run's config.json. ``tensorboard``: see ``actrec.train.train_model``.
    """
    from actrec import registry

    registry.create("models", model, dict(model_options or {}))  # fail fast, before any data
    from actrec.refs import existing_store
    from actrec.runs import new_run_dir, resolve_run
    from actrec.train import TrainSpec, train_model
    from actrec.workspace import home

    refs = list(data_refs or [d1] + ([d2] if d2 else []))
    if not refs or refs[0] is None:
        raise ConfigError("no dataset to train on: give --d1 (and --d2), or --data A,B,...")
    stores = [existing_store(r, extractor) for r in refs]
    if spec_fields.get("init_from"):
        spec_fields["init_from"] = str(resolve_run(spec_fields["init_from"]).absolute())
    model_options = dict(model_options or {})
    if run_dir is not None and sources:
        model_options = _resumed_defaults(Path(run_dir), spec_fields, model_options, sources)
    spec = TrainSpec(
        model=model,
        model_options=model_options,
        d1=stores[0],
        d2=stores[1] if len(stores) > 1 else None,
        extra_data=tuple(str(p) for p in stores[2:]),
        **spec_fields,
    )
    if run_dir is None:  # under torchrun: rank 0's new folder, for every rank
        from actrec.distributed import rank_zero_value

        run_dir = rank_zero_value(lambda: new_run_dir(home() / "runs", model))
    return train_model(spec, run_dir, sources=sources, progress=progress, preset=preset_record,
                       tensorboard=tensorboard)


def train_all_splits(model: str, *, run_dir: Path | None = None, **kwargs: Any) -> list:
    """Train ``model`` once per split of D1's store, in natural order (``actrec.sweep``): the
    run of split K is ``<run_dir>-split<K>`` (default ``run_dir``: a new workspace run name),
    so the runs sit side by side as ``actrec eval RUN --all-splits`` gathers them, and an
    interrupted sweep resumes run by run. D2 trains on the split of the same name
    (``ConfigError`` naming the store when it has none), unless ``d2_split`` is given; further
    datasets (D3, ...) on their first split, as in any run. ``kwargs`` are those of ``train_from_refs`` but ``split``. Returns the
    ``TrainResult`` of every split."""
    from actrec.io.features import FeatureStore
    from actrec.refs import existing_store
    from actrec.runs import new_run_dir
    from actrec.sweep import split_order
    from actrec.workspace import home

    if kwargs.get("split") is not None:
        raise ConfigError("--all-splits trains every split; drop --split")
    kwargs.pop("split", None)
    refs = list(kwargs.get("data_refs") or [kwargs.get("d1")] + (
        [kwargs["d2"]] if kwargs.get("d2") else []))
    if not refs or refs[0] is None:
        raise ConfigError("no dataset to train on: give --d1 (and --d2), or --data A,B,...")
    stores = [FeatureStore.open(existing_store(r, kwargs.get("extractor"))) for r in refs]
    names = sorted(stores[0].splits, key=split_order)
    if not names:
        from actrec.components import no_splits

        raise no_splits(stores[0].path)
    if kwargs.get("d2_split") is None:
        for store in stores[1:2]:  # D2 follows D1's splits; D3, ... keep their first
            lacking = [k for k in names if k not in store.splits]
            if lacking:
                raise ConfigError(f"--all-splits: feature store {store.path} has no split "
                                  f"{lacking[0]!r} (it has {', '.join(store.splits)}); give "
                                  f"--d2-split to train every run on one split of it")
    if run_dir is None:
        from actrec.distributed import rank_zero_value

        def fresh() -> Path:
            path = new_run_dir(home() / "runs", model)
            path.rmdir()  # only its unique name is used: the runs are its siblings
            return path

        run_dir = rank_zero_value(fresh)  # under torchrun: one name for every rank
    run_dir = Path(run_dir)
    results = []
    for name in names:
        fields = dict(kwargs, split=name)
        if kwargs.get("d2_split") is None and len(stores) > 1:
            fields["d2_split"] = name
        split_dir = run_dir.with_name(f"{run_dir.name}-split{name}")
        try:
            results.append(train_from_refs(model, run_dir=split_dir, **fields))
        except KeyboardInterrupt as exc:
            # The run's own advice (--run-dir <R>-split<K>) would train one split, or with
            # --all-splits a sweep of <R>-split<K>-split<J>: the sweep's base name resumes it.
            if isinstance(exc, Interrupted) or os.environ.get("RANK", "0") == "0":
                raise Interrupted(
                    f"the sweep stopped in split {name}; the splits before it are kept and "
                    f"{split_dir} keeps its last checkpoint: run the same command again with "
                    f"--all-splits --run-dir {run_dir} to go on from there") from exc
            raise
    return results


def _resumed_defaults(run_dir: Path, spec_fields: dict[str, Any], model_options: dict[str, Any],
                      sources: Mapping[str, str]) -> dict[str, Any]:
    """When ``run_dir`` holds a checkpoint, the fields the user left at their defaults
    (``sources[name] == "default"``) take the values the run was started with, so that a run
    resumes as it was specified even after a release changed a default (or when the user
    gives only ``--run-dir``). ``spec_fields`` is updated in place; returns the model options
    to use. ``device`` stays as given (the machine may differ)."""
    from actrec.runs import CHECKPOINT, load_checkpoint
    from actrec.train_spec import TrainSpec

    path = run_dir / CHECKPOINT
    if not path.is_file():
        return model_options
    saved = load_checkpoint(path).get("spec") or {}
    try:
        recorded = TrainSpec.from_dict(saved, where=str(path))
    except ConfigError:
        return model_options  # check_resume names what differs
    explicit_length = sources.get("iterations", "default") != "default"
    for name in list(spec_fields):
        if name == "device" or (name == "epochs" and explicit_length):
            continue  # an explicit --iterations replaces the recorded epochs
        if sources.get(name) == "default" and name in saved:
            spec_fields[name] = getattr(recorded, name)
    if sources.get("options") == "default" and not model_options:
        return dict(recorded.model_options)
    return model_options
