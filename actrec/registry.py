"""Plugin discovery and loading through entry points.

``discover()`` reads entry-point metadata only (no plugin code is imported) and returns one
``PluginRecord`` per registered plugin. ``load(record)`` imports one plugin and validates it
against its kind's contract; a failure becomes a ``BrokenPlugin`` value, never an exception
that escapes to the CLI. Built-ins (distribution ``actrec``) are declared exactly like
third-party plugins.

Environment:
- ``ACTREC_PLUGINS=dist1,dist2``: load third-party plugins only from these distributions.
- ``ACTREC_NO_PLUGIN_AUTOLOAD=1``: load no third-party plugins at all.
Built-in plugins always load.
"""

from __future__ import annotations

import dataclasses
import os
import traceback
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata

from actrec.errors import PluginError

BUILTIN_DIST = "actrec"
GROUPS = {
    "datasets": "actrec.datasets",
    "extractors": "actrec.extractors",
    "models": "actrec.models",
}
SINGULAR = {"datasets": "dataset", "extractors": "extractor", "models": "model"}


@dataclass(frozen=True)
class PluginRecord:
    """One entry point, as declared: nothing of the plugin has been imported."""

    kind: str  # "datasets" | "extractors" | "models"
    name: str
    target: str  # "module:attribute"
    dist: str
    version: str

    @property
    def builtin(self) -> bool:
        return self.dist == BUILTIN_DIST

    def label(self) -> str:
        return f"{SINGULAR[self.kind]} '{self.name}' (from {self.dist} {self.version})"


@dataclass(frozen=True)
class BrokenPlugin:
    """A plugin that could not be imported or failed validation."""

    record: PluginRecord
    error: str  # one line: "ExceptionType: message"
    details: str = ""  # the traceback, for --verbose

    def to_dict(self) -> dict[str, str]:
        return {**dataclasses.asdict(self.record), "error": self.error}


@dataclass(frozen=True)
class Discovery:
    """Every plugin record found, the ones filtered out by the environment, and clashes."""

    records: tuple[PluginRecord, ...]
    skipped: tuple[PluginRecord, ...]  # third-party records filtered out by the environment
    conflicts: tuple[tuple[PluginRecord, ...], ...]  # same kind and name from several dists

    def find(self, kind: str, name: str) -> PluginRecord:
        """The record of ``kind``/``name``; ``PluginError`` if unknown or registered twice."""
        _check_kind(kind)
        for clash in self.conflicts:
            if clash[0].kind == kind and clash[0].name == name \
                    and not any(r.builtin for r in clash):
                raise PluginError(_conflict_message(clash))
        for rec in self.records:
            if rec.kind == kind and rec.name == name:
                return rec
        for rec in self.skipped:
            if rec.kind == kind and rec.name == name:
                raise PluginError(
                    f"{rec.label()} is not loaded: third-party plugins are limited by "
                    f"ACTREC_PLUGINS / ACTREC_NO_PLUGIN_AUTOLOAD"
                )
        known = ", ".join(sorted(r.name for r in self.records if r.kind == kind)) or "(none)"
        raise PluginError(f"unknown {SINGULAR[kind]} '{name}'; available: {known}")


def _check_kind(kind: str) -> None:
    if kind not in GROUPS:
        raise PluginError(f"unknown plugin kind '{kind}'; expected one of: {', '.join(GROUPS)}")


def _allowed(dist: str) -> bool:
    if dist == BUILTIN_DIST:
        return True
    if os.environ.get("ACTREC_NO_PLUGIN_AUTOLOAD", "").strip() not in ("", "0"):
        return False
    only = os.environ.get("ACTREC_PLUGINS", "").strip()
    if only:
        wanted = {_normalise(d) for d in only.split(",") if d.strip()}
        return _normalise(dist) in wanted
    return True


def _normalise(dist: str) -> str:
    return dist.strip().lower().replace("_", "-").replace(".", "-")


def discover() -> Discovery:
    """Read the entry points of every installed distribution (without importing plugins).

    A distribution found twice on ``sys.path`` (for example an editable install and a copy)
    counts once; the same kind and name from two different distributions is a conflict: none
    of them loads, except a built-in, which keeps its name (a third-party package can neither
    replace nor disable it) while the others are listed as conflicts.
    """
    by_key: dict[tuple[str, str], list[PluginRecord]] = {}
    skipped: list[PluginRecord] = []
    seen_dists: set[str] = set()
    groups = set(GROUPS.values())
    for dist in metadata.distributions():
        eps = [ep for ep in dist.entry_points if ep.group in groups]
        # Parsing METADATA is most of discovery's time: a distribution without plugins only
        # needs its name (to shadow later copies), which its .dist-info folder name gives.
        folder_name = getattr(dist, "_normalized_name", None) if not eps else None
        dist_name = folder_name or dist.metadata["Name"] or "?"
        key = _normalise(dist_name)
        if key in seen_dists:  # shadowed copy further down sys.path: Python would not use it
            continue
        seen_dists.add(key)
        for ep in eps:
            kind = next((k for k, g in GROUPS.items() if g == ep.group), None)
            if kind is None:
                continue
            rec = PluginRecord(kind, ep.name, ep.value, dist_name, dist.version or "?")
            if not _allowed(dist_name):
                skipped.append(rec)
                continue
            by_key.setdefault((kind, ep.name), []).append(rec)
    records, conflicts = [], []
    for recs in by_key.values():
        builtin = [r for r in recs if r.builtin]
        if len(recs) == 1:
            records.append(recs[0])
        elif len(builtin) == 1:  # a built-in keeps its name; the others are refused
            records.append(builtin[0])
            conflicts.append(tuple(recs))
        else:
            conflicts.append(tuple(recs))
    order = lambda r: (list(GROUPS).index(r.kind), r.name)  # noqa: E731
    return Discovery(
        tuple(sorted(records, key=order)),
        tuple(sorted(skipped, key=order)),
        tuple(sorted(conflicts, key=lambda c: order(c[0]))),
    )


def _conflict_message(clash: tuple[PluginRecord, ...]) -> str:
    where = "; ".join(f"{r.dist} {r.version} ({r.target})" for r in clash)
    if any(r.builtin for r in clash):
        others = ", ".join(f"{r.dist} {r.version} ({r.target})" for r in clash if not r.builtin)
        return (f"{SINGULAR[clash[0].kind]} '{clash[0].name}' is a built-in name: the built-in "
                f"is used and the registration by {others} is ignored; rename it there")
    return (
        f"{SINGULAR[clash[0].kind]} '{clash[0].name}' is registered by more than one "
        f"distribution: {where}. Uninstall one of them."
    )


def load(record: PluginRecord) -> type | BrokenPlugin:
    """Import the plugin of ``record`` and validate it; a failure is returned, not raised."""
    from actrec.plugin_api import KINDS

    try:
        _, _, attr = record.target.partition(":")
        if not attr:
            raise PluginError(f"entry point '{record.target}' must have the form module:Class")
        obj = metadata.EntryPoint(record.name, record.target, GROUPS[record.kind]).load()
        validate(obj, KINDS[record.kind], record.name)
        return obj
    except Exception as exc:  # any failure of third-party code becomes a record
        error = f"{type(exc).__name__}: {exc}".strip()
        return BrokenPlugin(record, error.splitlines()[0] if error else repr(exc),
                            traceback.format_exc())


def validate(cls: object, base: type, name: str) -> None:
    """Check that ``cls`` fulfils the contract of ``base``; ``PluginError`` says what is wrong."""
    from actrec.plugin_api import PluginConfig

    if not isinstance(cls, type) or not issubclass(cls, base):
        raise PluginError(f"expected a subclass of actrec.plugin_api.{base.__name__}, got {cls!r}")
    if getattr(cls, "name", None) != name:
        raise PluginError(
            f"class {cls.__name__} has name {getattr(cls, 'name', None)!r} but is registered "
            f"as '{name}'"
        )
    config = getattr(cls, "Config", None)
    if not (isinstance(config, type) and issubclass(config, PluginConfig)
            and dataclasses.is_dataclass(config)):
        raise PluginError(f"{cls.__name__}.Config must be a dataclass subclassing PluginConfig")
    if not config.__dataclass_params__.frozen:  # type: ignore[attr-defined]
        raise PluginError(f"{cls.__name__}.Config must be a frozen dataclass")
    missing = [f.name for f in dataclasses.fields(config)
               if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise PluginError(f"{cls.__name__}.Config fields need defaults: {', '.join(missing)}")
    abstract = getattr(cls, "__abstractmethods__", frozenset())
    if abstract:
        raise PluginError(f"{cls.__name__} does not implement: {', '.join(sorted(abstract))}")
    for method, args in HOST_CALLS.get(base.__name__, ()):
        _check_callable_as(cls, method, args)
    if base.__name__ == "FeatureExtractor":
        problem = cls.lookahead_problem()  # declared (no default), an integer >= 0 or a property
        if problem:
            raise PluginError(problem)


# How the host calls each kind's methods (positional arguments after self): a method that
# cannot take such a call is refused when the plugin loads, not when a video is half done.
HOST_CALLS: dict[str, tuple[tuple[str, tuple[str, ...]], ...]] = {
    "Dataset": (("load", ()),),
    "FeatureExtractor": (("dim", ()), ("extract", ("batches",)), ("setup", ("runtime",))),
    "TemporalModel": (("build", ("input_dim", "num_classes")),),
}


def _check_callable_as(cls: type, method: str, args: tuple[str, ...]) -> None:
    """``PluginError`` when ``cls.method`` cannot be called with ``args`` positionally after
    ``self`` (a signature that cannot be read is let through)."""
    import inspect

    func = inspect.getattr_static(cls, method, None)
    if not inspect.isfunction(func):  # staticmethod, property, C function: not ours to judge
        return
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError):
        return
    try:
        signature.bind(None, *args)
    except TypeError:
        raise PluginError(f"{cls.__name__}.{method}{signature} cannot be called as "
                          f"{method}({', '.join(args)}): actrec calls it so "
                          f"(docs/plugins.md)") from None


@lru_cache(maxsize=None)
def _loaded(record: PluginRecord) -> type | BrokenPlugin:
    return load(record)


def plugin_class(kind: str, name: str) -> type:
    """The validated plugin class registered as ``kind``/``name``.

    Raises ``PluginError`` if it is unknown, registered twice, or broken (with its error).
    """
    rec = discover().find(kind, name)
    obj = _loaded(rec)
    if isinstance(obj, BrokenPlugin):
        raise PluginError(f"{rec.label()} is broken: {obj.error}")
    return obj


def create(kind: str, name: str, options: dict | None = None):
    """An instance of plugin ``kind``/``name`` configured from ``options`` (strings allowed).

    User errors are ``ConfigError``/``PluginError`` naming the plugin: a bad option, any other
    exception raised while the plugin starts, an extractor whose ``lookahead`` is not an
    integer >= 0. Nothing has been written when one is raised.
    """
    from actrec.errors import ActrecError

    cls = plugin_class(kind, name)
    owner = f"{SINGULAR[kind]} '{name}'"
    config = cls.Config.from_options(options or {}, owner=owner)
    try:
        plugin = cls(config)
    except ActrecError:
        raise
    except Exception as exc:  # third-party code: one message, not a traceback
        raise PluginError(f"{owner} failed to start with options {config.to_dict()}: "
                          f"{type(exc).__name__}: {exc}") from None
    if kind == "extractors":
        plugin.checked_lookahead()
    return plugin


def load_all(discovery: Discovery | None = None) -> list[tuple[PluginRecord, type | BrokenPlugin]]:
    """Load and validate every discovered plugin (for ``actrec plugins``)."""
    found = discovery or discover()
    return [(rec, _loaded(rec)) for rec in found.records]
