"""Where actrec keeps its files: data, feature stores and runs under one home folder.

``ACTREC_HOME`` overrides the home (default ``~/.cache/actrec``); ``ACTREC_DATA_<NAME>``
overrides one dataset's data folder. Nothing here creates directories.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

__all__ = ["home", "default_store_path", "data_root", "slug"]


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


def default_store_path(dataset_ref: str, extractor: str) -> Path:
    """``home()/features/<slug of dataset_ref>/<slug of extractor>.zarr``."""
    return home() / "features" / slug(dataset_ref) / f"{slug(extractor)}.zarr"


def data_root(dataset_name: str) -> Path:
    """``$ACTREC_DATA_<NAME>`` (name upper-cased, other characters as ``_``) if set, else
    ``home()/data/<name>``."""
    var = "ACTREC_DATA_" + re.sub(r"[^A-Z0-9]", "_", dataset_name.upper())
    value = os.environ.get(var, "").strip()
    return Path(value).expanduser() if value else home() / "data" / dataset_name
