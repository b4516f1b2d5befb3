"""Where actrec keeps its files: data, feature stores and runs under one home folder.

``ACTREC_HOME`` overrides the home (default ``~/.cache/actrec``). A dataset's data folder is
resolved here, once, for every dataset plugin (built-in or third-party): its ``root`` option if
given, else ``$ACTREC_DATA_<NAME>``, else ``home()/data/<name>`` (``dataset_root``).
Nothing here creates directories.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

__all__ = ["home", "default_store_path", "data_root", "data_root_var", "dataset_root", "slug",
           "short_hash"]


def home() -> Path:
    """``$ACTREC_HOME`` if set (and non-empty), else ``~/.cache/actrec``."""
    value = os.environ.get("ACTREC_HOME", "").strip()
    return Path(value).expanduser() if value else Path.home() / ".cache" / "actrec"


def slug(text: str) -> str:
    """A file-name-safe form of ``text``: lower-case ``[a-z0-9._-]`` runs joined by ``-``.

    When that changes ``text``, an 8-hex-digit hash of the original is appended so that
    different texts (``"a b"``, ``"a/b"``) never share a slug.
    """
    cleaned = re.sub(r"[^a-z0-9._-]+", "-", text.lower()).strip("-.") or "x"
    if cleaned == text:
        return cleaned
    digest = hashlib.sha1(text.encode("utf-8")).hexdigest()[:8]
    return f"{cleaned}-{digest}"


def short_hash(text: str) -> str:
    """8 hex digits of the SHA-1 of ``text``: a short, stable name for a longer identity."""
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:8]


def default_store_path(dataset_ref: str, extractor: str, root: str | Path | None = None) -> Path:
    """Where a dataset's features go by default.

    ``home()/features/<slug of dataset_ref>/<slug of extractor>.zarr`` for a dataset with no
    data folder; with one, the folder is ``<slug of dataset_ref>@<short hash of the absolute
    root>``, so that the same dataset read from two roots never shares a store.
    """
    folder = slug(dataset_ref)
    if root is not None:
        folder += "@" + short_hash(str(Path(root).expanduser().resolve()))
    return home() / "features" / folder / f"{slug(extractor)}.zarr"


def data_root_var(dataset_name: str) -> str:
    """The environment variable naming a dataset's data folder: ``ACTREC_DATA_<NAME>``, the
    name upper-cased with every other character than ``A-Z0-9`` written ``_``."""
    return "ACTREC_DATA_" + re.sub(r"[^A-Z0-9]", "_", dataset_name.upper())


def data_root(dataset_name: str) -> Path:
    """``$ACTREC_DATA_<NAME>`` if set (and non-empty), else ``home()/data/<name>``."""
    value = os.environ.get(data_root_var(dataset_name), "").strip()
    return Path(value).expanduser() if value else home() / "data" / dataset_name


def dataset_root(dataset_name: str, given: str | Path | None = None) -> Path:
    """The data folder of dataset plugin ``dataset_name``, absolute with links resolved:
    ``given`` (its ``root`` option) when set, else ``data_root(dataset_name)``. It may not
    exist (a plugin that generates its data creates it; the others check with
    ``Dataset.existing_root``).

    This is the one place the rule lives; ``actrec.plugin_api.Dataset`` applies it to every
    dataset plugin whose ``Config`` has a ``root`` field.
    """
    if given is None or str(given).strip() == "":
        given = data_root(dataset_name)
    return Path(given).expanduser().resolve()
