"""Versions and backend facts, as data (``actrec info``; also recorded with every run)."""

from __future__ import annotations

import platform
from importlib import metadata
from typing import Any


def versions() -> dict[str, str]:
    """Versions of Python, actrec and the libraries results depend on."""
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for dist in ("actrec", "torch", "numpy", "zarr", "decord", "opencv-python-headless",
                 "click", "rich"):
        out[dist] = _version(dist)
    if out["decord"] == "not installed":  # the maintained fork installs the same `decord` module
        fork = _version("decord2")
        out["decord"] = fork if fork == "not installed" else f"{fork} (decord2)"
    return out


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def ddbn_backend() -> dict[str, Any]:
    """Which DDBN implementation ``actrec.ops.ddbn`` uses here, and why."""
    from actrec.ops import _ext

    status = _ext.status()  # loads (or builds once) the extension, as the first use would
    return {"active": status.active, "backend": status.backend, "reason": status.reason,
            "compiled_with": dict(status.compiled_with)}


def system_info() -> dict[str, Any]:
    from actrec.workspace import home

    return {"versions": versions(), "ddbn_backend": ddbn_backend(), "workspace": str(home())}
