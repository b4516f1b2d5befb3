"""Dataset references (``NAME`` or ``NAME:key=value,...``) and the feature stores they map to.

A reference names a dataset plugin and some of its options, so that ``synthetic:kitchen=b``
and ``synthetic:kitchen=a`` are two datasets (two domains) on the command line. Equal
references are spelled alike (``canonical_ref``): ``mstcn:fps=14`` and ``mstcn:fps=14.0`` are
one dataset, with one store.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from actrec.errors import ConfigError, DataError


def parse_dataset_ref(ref: str) -> tuple[str, dict[str, str]]:
    """``"synthetic:kitchen=b,seed=1"`` -> ``("synthetic", {"kitchen": "b", "seed": "1"})``."""
    name, _, rest = ref.partition(":")
    name = name.strip()
    if not name:
        raise ConfigError(f"dataset reference {ref!r} has no dataset name")
    options: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in rest.split(","))):
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"dataset reference {ref!r}: expected key=value, got {part!r}")
        options[key.strip()] = value.strip()
    return name, options


def canonical_ref(ref: str, options: Mapping[str, str] | None = None) -> str:
    """``ref`` with ``options`` folded in, keys sorted and ``root`` / ``videos`` (folders)
    left out: the one spelling
    of a dataset whatever order or flags the options came in. (The root is part of the
    default store path as a hash, see ``default_store``, and of the store's recorded source.)"""
    name, ref_options = parse_dataset_ref(ref)
    merged = {**ref_options, **{k: _text(v) for k, v in (options or {}).items()}}
    for where in ("root", "videos"):  # where the files are does not change what they are
        merged.pop(where, None)
    if not merged:
        return name
    merged = _canonical_values(name, merged)
    return name + ":" + ",".join(f"{k}={merged[k]}" for k in sorted(merged))


def _text(value: object) -> str:
    """An option value as a reference spells it (``None`` as ``none``, booleans lower-case)."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _canonical_values(name: str, options: dict[str, str]) -> dict[str, str]:
    """``options`` with each value written one way for its option's type in dataset plugin
    ``name``'s ``Config``: numbers by value (``14``, ``14.0`` and ``1.4e1`` are ``14``;
    ``29.97`` stays), booleans ``true``/``false``, an unset optional ``none``. Options of
    another type, values their type does not take (the plugin refuses those when it is built)
    and every option of a dataset that is no installed plugin are kept as given."""
    import typing

    from actrec.plugin_api import coerce

    try:
        from actrec import registry

        hints = typing.get_type_hints(registry.plugin_class("datasets", name).Config)
    except Exception:  # noqa: BLE001 - no such plugin (an imported name), or a broken one
        return options
    out = {}
    for key, value in options.items():
        annotation = hints.get(key.replace("-", "_"))
        try:
            typed = coerce(value, annotation) if annotation is not None else value
        except (TypeError, ValueError):
            typed = value
        if isinstance(typed, float) and typed.is_integer() and abs(typed) < 2**53:
            typed = int(typed)
        out[key] = _text(typed) if isinstance(typed, (bool, int, float, type(None))) \
            else value
    return out


def dataset_from_ref(ref: str, options: Mapping[str, str] | None = None):
    """The dataset plugin instance for ``ref``, with ``options`` added (they win on clashes)."""
    from actrec import registry

    name, ref_options = parse_dataset_ref(ref)
    return registry.create("datasets", name, {**ref_options, **(options or {})})


def default_store(ref: str, extractor: str, options: Mapping[str, str] | None = None) -> Path:
    """The workspace's store for dataset reference ``ref`` (with ``options``) and
    ``extractor``: ``actrec.workspace.default_store_path`` of its canonical reference and of
    its data root, resolved as the dataset plugin resolves it (``--root`` / ``root=``, else
    ``ACTREC_DATA_<NAME>``, else the workspace). A name that is no installed dataset plugin
    (a dataset only imported under that name) has no root: its path has none either."""
    from actrec import registry
    from actrec.workspace import default_store_path

    name, _ = parse_dataset_ref(ref)
    root = None
    if any(r.kind == "datasets" and r.name == name for r in registry.discover().records):
        root = getattr(dataset_from_ref(ref, options).config, "root", None)
    return default_store_path(canonical_ref(ref, options), extractor, root)


def resolve_store(ref_or_path: str, extractor: str):
    """A feature store: ``ref_or_path`` itself when it is a URL (``s3://...``, ``file://...``:
    ``actrec.io.remote.store_location``), an existing folder or ends in ``.zarr``, else the
    workspace's store for dataset reference ``ref_or_path`` and ``extractor``
    (``default_store``: where ``actrec extract`` writes by default)."""
    from actrec.io.remote import is_url, store_location

    if is_url(ref_or_path):
        return store_location(ref_or_path)
    path = Path(ref_or_path).expanduser()
    if path.suffix == ".zarr" or path.is_dir():
        return path
    return default_store(ref_or_path, extractor)


def workspace_stores(ref: str) -> list[Path]:
    """Every feature store in the workspace made for dataset reference ``ref``, however it was
    made: extracted (``features/<ref>@<root hash>/<extractor>.zarr``, or without the root part)
    or imported under that name (``actrec import ... --name <ref>``), sorted by path."""
    from actrec.workspace import home, slug

    folder = slug(canonical_ref(ref))
    base = home() / "features"
    if not base.is_dir():
        return []
    return sorted(store for sub in base.iterdir()
                  if sub.is_dir() and (sub.name == folder or sub.name.startswith(folder + "@"))
                  for store in sub.glob("*.zarr") if (store / "zarr.json").is_file())


def existing_store(ref_or_path: str, extractor: str | None = None):
    """The feature store that training of ``ref_or_path`` reads.

    A URL (``s3://...``, ``file://...``; see ``actrec.io.remote``) or a path (an existing
    folder, or one ending in ``.zarr``) is itself, except a bare name (``imp``, no folder
    part) that is a folder here but no feature store while the workspace has stores of
    dataset ``imp`` (the data folder an import or extraction read, say): that is the
    reference. A dataset reference
    finds its store in the workspace (``workspace_stores``): with ``extractor``, the store of
    that extractor (``default_store`` for the dataset's data root, else the only workspace
    store of that extractor); without, the only store of the dataset, extracted or imported.
    ``DataError`` saying how to make one when there is none; ``ConfigError`` listing them and
    how to choose (``--extractor NAME`` or a store path) when several fit.
    """
    from actrec.io.remote import is_url, store_location
    from actrec.workspace import home, slug

    if is_url(ref_or_path):
        return store_location(ref_or_path)
    path = Path(ref_or_path).expanduser()
    if path.exists() and not path.is_dir():
        raise DataError(f"{path} is a file, not a feature store folder")
    if path.suffix == ".zarr" or path.is_dir():
        if not _names_a_workspace_dataset(ref_or_path, path):
            return path
    if extractor is not None:
        store = default_store(ref_or_path, extractor)
        if (store / "zarr.json").exists():
            return store
    found = workspace_stores(ref_or_path)
    if extractor is not None:
        found = [s for s in found if s.name == slug(extractor) + ".zarr"]
    root = parse_dataset_ref(ref_or_path)[1].get("root")
    if root:  # the stores of that data folder (its hash names their folder, but be sure)
        found = [s for s in found if _same_folder(recorded_source(s).get("options", {})
                                                  .get("root"), root)]
    if len(found) == 1:
        return found[0]
    what = f"'{extractor}' features" if extractor is not None else "features"
    kind = f"'{extractor}' feature" if extractor is not None else "feature"
    if not found:
        looked = home() / "features" / f"{slug(canonical_ref(ref_or_path))}[@*]"
        others = _stores_with_other_options(ref_or_path, extractor)
        moved = [s for s in others if _made_for(s, ref_or_path)]  # renamed or moved by hand
        others = [s for s in others if s not in moved]
        found_elsewhere = []
        if moved:
            listed = "; ".join(f"{s} ({_source_summary(s)})" for s in moved)
            back = _default_place(moved[0], ref_or_path)
            found_elsewhere.append(
                f"the workspace has {'a store' if len(moved) == 1 else f'{len(moved)} stores'} "
                f"of the same data under another folder (moved or renamed?): {listed}; give "
                f"{'its' if len(moved) == 1 else 'one'} path, or move it back to {back}")
        if others:  # e.g. extracted with -o fps=30: that is the reference mstcn:fps=30
            listed = "; ".join(f"{s} ({_source_summary(s)})" for s in others)
            found_elsewhere.append(
                f"the workspace has {len(others)} store(s) of dataset "
                f"'{parse_dataset_ref(ref_or_path)[0]}' made with other dataset options: "
                f"{listed}. Refer to the dataset with the options it was extracted with "
                f"(`actrec extract NAME -o fps=30` is NAME:fps=30) or give the store path")
        if found_elsewhere:
            raise DataError(f"no {what} of '{ref_or_path}' (looked in {looked}), but "
                            + "; and ".join(found_elsewhere))
        raise DataError(
            f"no {what} of '{ref_or_path}' yet (looked in {looked}): extract them first "
            f"(actrec extract {ref_or_path} --extractor {extractor or 'NAME'} ...) or import "
            f"public ones (actrec import mstcn|lstr ROOT --name {ref_or_path}), or give a "
            f"feature store folder")
    listed = "; ".join(f"{s.stem}: {s} ({_source_summary(s)})" for s in found)
    how = ("give one of the store paths" if extractor is not None
           else "choose one with --extractor NAME or give its store path")
    if not root and len({recorded_source(s).get("options", {}).get("root")
                         for s in found}) > 1:
        how += f", or add the data root to the reference ({ref_or_path}:root=DIR)"
    raise ConfigError(f"'{ref_or_path}' has {len(found)} {kind} stores in the workspace "
                      f"({listed}); {how}")


def _names_a_workspace_dataset(ref: str, path: Path) -> bool:
    """Whether ``ref``, which is also the folder ``path`` here, is rather the name of a
    workspace dataset: a bare name (no folder part, no ``.zarr``), ``path`` holds no feature
    store, and the workspace has stores made for it."""
    import os

    bare = os.sep not in ref and (os.altsep is None or os.altsep not in ref) \
        and not ref.startswith((".", "~")) and path.suffix != ".zarr"
    return bare and not (path / "zarr.json").is_file() and bool(workspace_stores(ref))


def recorded_source(store: Path) -> dict:
    """The ``source`` a store recorded at extraction (dataset, its options, extractor), read
    from its ``zarr.json`` alone; ``{}`` when there is none or it cannot be read."""
    import json

    try:
        attrs = json.loads((store / "zarr.json").read_text()).get("attributes", {})
    except (OSError, ValueError, AttributeError):
        return {}
    source = attrs.get("source")
    return source if isinstance(source, dict) else {}


def _same_folder(recorded: object, given: str) -> bool:
    """Whether a store's recorded data root is the folder ``given`` (relative to the current
    folder, ``~`` expanded)."""
    if not isinstance(recorded, str):
        return False
    return Path(recorded).resolve() == Path(given).expanduser().resolve()


def _source_summary(store: Path) -> str:
    """``root /data/x, fps=30.0``: where a store's videos came from and its dataset options
    that differ from the plugin's defaults (all of them when the plugin cannot be loaded)."""
    import dataclasses

    from actrec import registry

    source = recorded_source(store)
    if not source:
        return "no recorded source"
    options = dict(source.get("options") or {})
    root = options.pop("root", None)
    options.pop("videos", None)
    try:
        config = registry.plugin_class("datasets", str(source.get("dataset"))).Config
    except Exception:  # noqa: BLE001 - only a summary in an error message: show every option
        config = None
    if config is not None and dataclasses.is_dataclass(config):
        defaults = {f.name: f.default for f in dataclasses.fields(config)}
        options = {k: v for k, v in options.items() if defaults.get(k, object()) != v}
    parts = ([f"root {root}"] if root else []) + [f"{k}={v}" for k, v in sorted(options.items())]
    return ", ".join(parts) or "default options"


def _stores_with_other_options(ref: str, extractor: str | None) -> list[Path]:
    """The workspace stores whose recorded source is dataset ``ref``'s plugin (any options),
    of ``extractor`` when given: where a reference that names none of them may have meant."""
    from actrec.workspace import home, slug

    name, _ = parse_dataset_ref(ref)
    base = home() / "features"
    if not base.is_dir():
        return []
    stores = sorted(base.glob("*/*.zarr"))
    if extractor is not None:
        stores = [s for s in stores if s.name == slug(extractor) + ".zarr"]
    return [s for s in stores if recorded_source(s).get("dataset") == name]


def stores_holding_more(store: Path, videos: Sequence[str]) -> list[tuple[Path, int, str | None]]:
    """The other workspace stores of the data ``store`` was extracted from (its recorded
    dataset, data root and extractor; other dataset options, e.g. another ``fps``) that hold
    more of ``videos`` than ``store`` does, those holding most first: ``(path, how many of
    ``videos`` it holds, the dataset reference that finds it with ``existing_store``, or
    ``None`` when only its path does)``. ``[]`` for a store that records no source (an
    imported or a remote one) or a workspace without features."""
    from actrec.io.features import FeatureStore
    from actrec.workspace import home

    if not isinstance(store, Path):  # a URL: not a workspace store
        return []
    mine = recorded_source(store)
    root = (mine.get("options") or {}).get("root")
    base = home() / "features"
    if not mine.get("dataset") or not base.is_dir():
        return []
    wanted = list(dict.fromkeys(videos))

    def held(path: Path) -> int:
        try:
            opened = FeatureStore.open(path)
            return sum(opened.has(v) for v in wanted)
        except Exception:  # noqa: BLE001 - an unreadable store holds nothing usable
            return 0

    own = held(store)
    found = []
    for other in sorted(base.glob("*/*.zarr")):
        if other.resolve() == store.resolve():
            continue
        source = recorded_source(other)
        if (source.get("dataset") != mine["dataset"]
                or source.get("extractor") != mine.get("extractor")
                or (root is not None and not _same_folder(
                    (source.get("options") or {}).get("root"), root))):
            continue
        count = held(other)
        if count > own:
            found.append((other, count, _reference_to(other, source)))
    return sorted(found, key=lambda f: -f[1])


def other_store_hint(store: Path, videos: Sequence[str], flag: str | None = "--d1") -> str:
    """A sentence naming the workspace store that holds the ``videos`` ``store`` lacks
    (``stores_holding_more``) and how to train on it (``did you mean --d1 mstcn:fps=10?``,
    ``flag`` the option that takes the reference; ``None``: the reference alone), or ``""``
    when no other store of that data holds more of them."""
    found = stores_holding_more(store, videos)
    if not found:
        return ""
    path, count, ref = found[0]
    total = len(set(videos))
    share = f"all {total}" if count == total else f"{count} of the {total}"
    how = (f"did you mean {flag + ' ' if flag else ''}{ref}? (or give that store's path)"
           if ref else "give that store's path to train on it")
    more = f" ({len(found) - 1} more such store(s))" if len(found) > 1 else ""
    return (f"the workspace store {path} ({_source_summary(path)}) holds {share} of the "
            f"split's videos{more}: {how}")


def _store_reference(source: Mapping) -> str | None:
    """The canonical reference of a recorded ``source``: its dataset with the options that
    differ from the plugin's defaults (data folders left out); ``None`` when the dataset is
    no installed plugin."""
    import dataclasses

    from actrec import registry

    name = str(source.get("dataset"))
    options = {k: v for k, v in (source.get("options") or {}).items()
               if k not in ("root", "videos")}
    try:
        config = registry.plugin_class("datasets", name).Config
        defaults = {f.name: f.default for f in dataclasses.fields(config)}
    except Exception:  # noqa: BLE001 - no such plugin (any more)
        return None
    return canonical_ref(name, {k: v for k, v in options.items()
                                if defaults.get(k, object()) != v})


def _made_for(store: Path, ref: str) -> bool:
    """Whether ``store`` recorded the data reference ``ref`` names: the same dataset options
    (``_store_reference``) and, where ``ref`` gives one, the same data root."""
    source = recorded_source(store)
    if not source or _store_reference(source) != canonical_ref(ref):
        return False
    root = parse_dataset_ref(ref)[1].get("root")
    return not root or _same_folder((source.get("options") or {}).get("root"), root)


def _default_place(store: Path, ref: str) -> Path:
    """Where ``ref``'s store of ``store``'s data and extractor is looked for first
    (``actrec.workspace.default_store_path`` of its recorded root)."""
    from actrec.workspace import default_store_path

    source = recorded_source(store)
    return default_store_path(canonical_ref(ref), str(source.get("extractor") or store.stem),
                              (source.get("options") or {}).get("root"))


def _reference_to(store: Path, source: Mapping) -> str | None:
    """The shortest dataset reference (its recorded options that differ from the plugin's
    defaults; with ``root=`` where that alone is ambiguous) that ``existing_store`` resolves
    to ``store``; ``None`` when none does (a store moved out of its default folder)."""
    from actrec.errors import ActrecError

    base = _store_reference(source)
    if base is None:  # no such plugin any more: the path is the way
        return None
    root = (source.get("options") or {}).get("root")
    tries = [base] + ([f"{base}{',' if ':' in base else ':'}root={root}"] if root else [])
    for ref in tries:
        for extractor in (None, str(source.get("extractor"))):
            try:
                if Path(existing_store(ref, extractor)).resolve() == store.resolve():
                    return ref if extractor is None else f"{ref} --extractor {extractor}"
            except (ActrecError, OSError):
                continue
    return None
