"""What ``actrec plugins`` reports: every plugin with its status, as data."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from actrec import registry


@dataclass(frozen=True)
class PluginRow:
    kind: str
    name: str
    dist: str
    version: str
    target: str
    status: str  # "ok" | "broken" | "conflict" | "skipped"
    options: tuple[str, ...] = ()
    defaults: dict | None = None  # option -> its default (JSON values), for ok plugins
    causal: bool | None = None
    error: str = ""
    details: str = ""


@dataclass(frozen=True)
class PluginListing:
    rows: tuple[PluginRow, ...]

    def to_dict(self) -> dict:
        return {"plugins": [{k: v for k, v in dataclasses.asdict(r).items() if k != "details"}
                            for r in self.rows]}


def list_plugins() -> PluginListing:
    """Discover, load and validate every plugin; failures become rows, never exceptions."""
    found = registry.discover()
    rows: list[PluginRow] = []
    for rec, obj in registry.load_all(found):
        if isinstance(obj, registry.BrokenPlugin):
            rows.append(_row(rec, "broken", error=obj.error, details=obj.details))
            continue
        options = tuple(f.name for f in dataclasses.fields(obj.Config))
        defaults = {f.name: _jsonable(f.default if f.default is not dataclasses.MISSING
                                      else f.default_factory())  # type: ignore[misc]
                    for f in dataclasses.fields(obj.Config)}
        causal = getattr(obj, "causal", None) if rec.kind == "models" else None
        if rec.kind == "extractors":
            causal = _extractor_causal(obj)
        rows.append(_row(rec, "ok", options=options, defaults=defaults, causal=causal))
    for clash in found.conflicts:
        msg = registry._conflict_message(clash)
        # a built-in in a clash still loads (listed above); the others are the conflict
        rows.extend(_row(rec, "conflict", error=msg) for rec in clash if not rec.builtin)
    rows.extend(_row(rec, "skipped", error="third-party loading limited by ACTREC_PLUGINS / "
                     "ACTREC_NO_PLUGIN_AUTOLOAD") for rec in found.skipped)
    return PluginListing(tuple(rows))


def _jsonable(value):
    """A default as JSON: paths as text, tuples as lists, anything else unusual as text."""
    from pathlib import Path

    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def _extractor_causal(cls: type) -> bool | None:
    """Whether extractor ``cls`` is causal with its default options: its ``lookahead``
    attribute, or a ``lookahead`` property read on an instance built with the defaults
    (None when that instance cannot be built, e.g. a required model file)."""
    value = getattr(cls, "lookahead", None)
    if isinstance(value, property):
        try:
            value = cls().checked_lookahead()
        except Exception:  # noqa: BLE001 - third-party constructors may need options
            return None
    return value == 0


def _row(rec: registry.PluginRecord, status: str, **kw) -> PluginRow:
    return PluginRow(rec.kind, rec.name, rec.dist, rec.version, rec.target, status, **kw)
