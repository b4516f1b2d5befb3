"""Dataset references (``NAME`` or ``NAME:key=value,...``) and the feature stores they map to.

A reference names a dataset plugin and some of its options, so that ``synthetic:kitchen=b``
and ``synthetic:kitchen=a`` are two datasets (two domains) on the command line.
"""

from __future__ import annotations

from collections.abc import Mapping
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
    """``ref`` with ``options`` folded in, keys sorted and ``root`` left out: the one spelling
    of a dataset whatever order or flags the options came in. (The root is part of the
    default store path as a hash, see ``default_store``, and of the store's recorded source.)"""
    name, ref_options = parse_dataset_ref(ref)
    merged = {**ref_options, **{k: str(v) for k, v in (options or {}).items()}}
    merged.pop("root", None)  # where the files are does not change what they are
    if not merged:
        return name
    return name + ":" + ",".join(f"{k}={merged[k]}" for k in sorted(merged))


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


def resolve_store(ref_or_path: str, extractor: str) -> Path:
    """A feature store: ``ref_or_path`` itself when it is an existing folder or ends in
    ``.zarr``, else the workspace's store for dataset reference ``ref_or_path`` and
    ``extractor`` (``default_store``: where ``actrec extract`` writes by default)."""
    path = Path(ref_or_path).expanduser()
    if path.suffix == ".zarr" or path.is_dir():
        return path
    return default_store(ref_or_path, extractor)


def existing_store(ref_or_path: str, extractor: str) -> Path:
    """``resolve_store``, with a ``DataError`` that says what to do when a dataset reference
    has no extracted features yet (or a path is a file): what training needs."""
    path = Path(ref_or_path).expanduser()
    if path.exists() and not path.is_dir():
        raise DataError(f"{path} is a file, not a feature store folder")
    store = resolve_store(ref_or_path, extractor)
    if store != path and not (store / "zarr.json").exists():
        raise DataError(
            f"no '{extractor}' features of '{ref_or_path}' yet (looked in {store}): extract "
            f"them first (actrec extract {ref_or_path} --extractor {extractor} ...), or give a "
            f"feature store folder")
    return store
