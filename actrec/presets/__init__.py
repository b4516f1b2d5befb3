"""Training presets: the papers' settings as TOML files a user can read, copy and change.

A preset is the ``[train]`` table of a ``--config`` file (keys are ``actrec train``'s long
option names, ``[train.options]`` the model options) plus an optional top-level
``description``; the files shipped with actrec live beside this module (``ddlstm.toml``,
``recassist.toml``, ...). ``actrec train --preset NAME`` (or ``--preset path/to/file.toml``)
applies one: explicit options (command line, environment) override it, and it overrides a
``--config`` file; the run records the preset's name, path, digest and values.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from actrec.errors import ConfigError

__all__ = ["Preset", "PRESET_DIR", "available", "load_preset"]

PRESET_DIR = Path(__file__).parent


@dataclass(frozen=True)
class Preset:
    """A parsed preset file: ``train`` is its ``[train]`` table as written (model options under
    ``options``)."""

    name: str
    path: Path
    sha256: str
    description: str = ""
    train: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "path": str(self.path), "sha256": self.sha256,
                "description": self.description, "values": self.train}


def available() -> list[str]:
    """Names of the presets shipped with actrec."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.toml"))


def load_preset(ref: str | Path) -> Preset:
    """The preset ``ref`` names: a shipped preset's name, or a path to a TOML file.

    ``ConfigError`` naming the file (and line) for a missing or malformed file, a top-level key
    other than ``description`` and ``train``, or a ``[train]`` that is not a table."""
    text = str(ref)
    path = Path(text).expanduser()
    if not (path.suffix == ".toml" or path.is_file() or "/" in text):
        path = PRESET_DIR / f"{text}.toml"
        if not path.is_file():
            raise ConfigError(f"no preset '{text}'; shipped presets: {', '.join(available())} "
                              f"(or give a path to a .toml file)")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"preset file {path}: cannot read ({exc.strerror or exc})") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"preset file {path} is not valid TOML: {exc}") from None
    unknown = sorted(set(data) - {"description", "train"})
    if unknown:
        raise ConfigError(f"preset file {path}: unknown top-level key '{unknown[0]}'; a preset "
                          f"holds 'description' and a [train] table")
    train = data.get("train", {})
    if not isinstance(train, dict):
        raise ConfigError(f"preset file {path}: [train] must be a table of options")
    return Preset(path.stem, path.resolve(), hashlib.sha256(raw).hexdigest(),
                  str(data.get("description", "")), train)
