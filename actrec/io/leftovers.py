"""What dead writers leave in a feature store, and removing it: ``sweep_store``
(``actrec check STORE --sweep``).

* A store at a URL writes each version of a video as a generation
  ``videos/<name>/gen-<seconds>-<hex>/`` and commits it by one conditional write of the group's
  ``zarr.json`` (``actrec.io.remote_store``). A writer that dies before its commit leaves its
  generation uncommitted (invisible to readers), and one that dies right after it leaves the
  generation it replaced. A later write of that video removes them once a day old; a video
  never written again keeps them. The sweep removes every generation but the committed one
  that is older than ``older_than`` (since its newest object was written, by the store's
  clock; by the time its name records, the writer's clock, where the backend gives no
  times): younger ones may be a live writer's, about to commit.
* A local store builds each write under ``.tmp/<name>.<host>.<pid>.<tag>`` and renames it into
  place; a writer that dies leaves its temp folder, and one that died between the two renames
  of a re-write leaves the old copy aside (``-old``). Opening the store for writing already
  clears these (``FeatureStore._clean``: a dead process's of this host at once, another
  host's after a day); the sweep does the same without a write, and says what it did.

Safety: each video is swept while holding its claim (``actrec.extract_claims``), as a writer
holds it, so a video another live process is extracting is left alone (and said so); the
committed generation is read again while the claim is held, so a commit that landed since
the listing is never removed. A writer silent past its lease (paused, suspended) may
still be between its last claim check and its conditional commit, with its generation
among those removed: before removing any, the sweep rewrites the video's ``zarr.json``
(adding ``swept_at``) conditionally on the version it read, as a commit is written, so that
writer's commit is refused (it then removes its own generation) instead of landing on a
removed generation and deleting the old copy; if a commit landed first, the sweep's write is
refused and the video is left as it is (reported). A video never committed has no
``zarr.json`` to rewrite: there such a writer's commit can still land on its removed
generation, which ``actrec check`` then reports damaged and ``actrec extract`` writes again
(no earlier copy existed to be lost). Other backends than S3 check a version and then write
(``StoreURL.write_if``): a writer resuming between those two requests is not kept out.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from actrec.io.remote import StoreURL

__all__ = ["DEFAULT_AGE", "Leftover", "SweepReport", "parse_age", "sweep_store"]

DEFAULT_AGE = 24 * 3600.0  # seconds: as old as a later write's own clean-up requires


_UNITS = {"s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0}


def parse_age(text: str | float, option: str = "--older-than") -> float:
    """Seconds from ``90s``, ``30m``/``30min``, ``12h``, ``2d`` or a plain number of seconds;
    ``ConfigError`` naming ``option`` otherwise (negative included)."""
    from actrec.errors import ConfigError

    raw = str(text).strip().lower()
    unit = next((u for u in sorted(_UNITS, key=len, reverse=True) if raw.endswith(u)), "")
    try:
        value = float(raw[: len(raw) - len(unit)]) * _UNITS.get(unit, 1.0)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise ConfigError(f"{option}: expected an age such as 2d, 12h, 30m or 90s, got {text!r}")
    return value


@dataclass(frozen=True)
class Leftover:
    """One thing a dead writer left: where, of which video, what it is, how old (seconds;
    ``None`` when unknown) and, for one left in place, why."""

    video: str
    path: str
    kind: str  # "uncommitted generation", "temp folder", "old copy restored", "generation"
    age: float | None
    why: str = ""

    def to_dict(self) -> dict[str, Any]:
        out = {"video": self.video, "path": self.path, "kind": self.kind,
               "age_seconds": None if self.age is None else round(self.age, 1)}
        if self.why:
            out["why"] = self.why
        return out


@dataclass(frozen=True)
class SweepReport:
    """What ``sweep_store`` removed (``removed``), put back (``restored``) and left in place
    with the reason (``left``)."""

    store: str
    older_than: float
    removed: tuple[Leftover, ...] = ()
    restored: tuple[Leftover, ...] = ()
    left: tuple[Leftover, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"store": self.store, "older_than_seconds": self.older_than,
                "removed": [x.to_dict() for x in self.removed],
                "restored": [x.to_dict() for x in self.restored],
                "left": [x.to_dict() for x in self.left]}


def sweep_store(store: Any, *, older_than: float = DEFAULT_AGE, now: float | None = None,
                progress: Any = None) -> SweepReport:
    """Remove what dead writers left in every stream of ``store`` (see the module docstring):
    at a URL, each video's generations but the committed one that are older than
    ``older_than`` seconds; in a folder, dead writers' temp folders (an old copy left aside
    by a re-write is put back where its video is missing). Never the committed copy of a
    video, never anything of a video another live process holds the claim of. ``now``: the
    time ages are measured at (default: now); ``progress`` (a rich Progress) gets a task
    counting the videos of a store at a URL."""
    from actrec.errors import ConfigError

    if not older_than >= 0:
        raise ConfigError(f"--older-than: expected a duration >= 0, got {older_than!r}")
    now = time.time() if now is None else now
    removed: list[Leftover] = []
    restored: list[Leftover] = []
    left: list[Leftover] = []
    for name in store.streams():
        sub = store.stream(name)
        if isinstance(sub.path, StoreURL):
            _sweep_generations(sub, older_than, now, removed, left, progress)
        else:
            _sweep_folder(sub, removed, restored, left)
    return SweepReport(str(store.path), float(older_than), tuple(removed), tuple(restored),
                       tuple(left))


# ---------------------------------------------------------------------- at a URL


def _committed(group: StoreURL) -> tuple[bool, str | None]:
    """(whether the group has a ``zarr.json``, the generation it commits or ``None``).
    ``_Unreadable`` when it has one whose attributes cannot be read: which generation it
    commits is then unknown, and none of them may be removed."""
    from actrec.io.remote_store import group_attributes

    try:
        attrs = group_attributes((group / "zarr.json").read_bytes())
    except FileNotFoundError:
        return False, None
    if attrs is None:
        raise _Unreadable(f"{group / 'zarr.json'} cannot be read as a group's metadata")
    return True, attrs.get("generation")


def _commit_of(group: StoreURL) -> tuple[str | None, bytes | None, str | None]:
    """(the version of the group's ``zarr.json`` as a conditional write compares it, its
    bytes, the generation they commit); ``(None, None, None)`` when there is none.
    ``_Unreadable`` as ``_committed``. The version is read first: if a commit lands between
    the two reads, the bytes are newer than the version and a write conditional on it fails."""
    from actrec.io.remote_store import group_attributes

    meta = group / "zarr.json"
    version = meta.version()
    if version is None:
        return None, None, None
    try:
        raw = meta.read_bytes()
    except FileNotFoundError:  # removed since: only its claim holder (this sweep) removes it
        return None, None, None
    attrs = group_attributes(raw)
    if attrs is None:
        raise _Unreadable(f"{meta} cannot be read as a group's metadata")
    return version, raw, attrs.get("generation")


def _invalidate(group: StoreURL, version: str, raw: bytes) -> bool:
    """Rewrite the group's ``zarr.json`` (read as ``raw`` at ``version``) with the sweep's
    time added (``swept_at``), conditional on ``version`` as a writer's commit is: ``True``
    if written, ``False`` if a commit landed since. Once written, a writer that read the
    commit before (one paused past its lease before its own conditional commit, whose
    generation the sweep is about to remove) has its commit refused: S3 compares ETags, the
    MD5 of the content, so the bytes must change, not just be written again."""
    import json
    from datetime import datetime, timezone

    meta = json.loads(raw)
    meta["attributes"] = {**meta["attributes"],
                          "swept_at": datetime.now(timezone.utc).isoformat()}
    return (group / "zarr.json").write_if(json.dumps(meta, indent=2).encode("utf-8"), version)


class _Unreadable(Exception):
    """A video group's ``zarr.json`` exists but is not readable JSON with attributes."""


def _generations(group: StoreURL, now: float) -> list[tuple[StoreURL, float]]:
    """The group's generations with their ages at ``now``: since the newest of its objects
    was written, by the store's clock (S3 ``LastModified``, ``mtime``, ...), so a writer
    whose clock is slow cannot make a generation it is still writing look old; by the time
    its name records (the writer's clock) where the backend gives no times."""
    from actrec.io.features import GENERATION

    written = _written_at(group)
    out = []
    for entry in group.iterdir():
        if GENERATION.fullmatch(entry.name):
            at = written.get(entry.name, float(int(entry.name.split("-")[1])))
            out.append((entry, now - at))
    return out


_TIME_KEYS = ("LastModified", "mtime", "last_modified", "updated", "created")


def _written_at(group: StoreURL) -> dict[str, float]:
    """Generation name -> when its newest object was written (POSIX seconds, the store's
    clock), from one listing; generations whose objects carry no time are absent."""
    out: dict[str, float] = {}
    for key, info in group.listing().items():
        if "/" not in key:  # the group's own zarr.json
            continue
        at = _stamp(info)
        if at is not None:
            first = key.split("/", 1)[0]
            out[first] = max(at, out.get(first, at))
    return out


def _stamp(info: dict[str, Any]) -> float | None:
    """An object's modification time from an fsspec ``info``/``find`` entry (a datetime, a
    number or an ISO 8601 string, by backend), ``None`` when it has none."""
    from datetime import datetime, timezone

    for key in _TIME_KEYS:
        value = info.get(key)
        if isinstance(value, datetime):
            return (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).timestamp()
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
            return float(value)
        if isinstance(value, str) and value:
            try:
                parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                continue
            return (parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)).timestamp()
    return None


def _sweep_generations(store: Any, older_than: float, now: float, removed: list,
                       left: list, progress: Any = None) -> None:
    """Remove each video's uncommitted generations older than ``older_than`` under its claim
    (module docstring, "Safety"). A committed video's ``zarr.json`` is rewritten first, on
    the condition of the version read while holding the claim, so that a writer paused
    before its commit cannot commit a removed generation; when that write is refused (a
    commit landed), the video is left (``left``, kind "video"). A video with no commit is
    swept without such a write: a writer paused past ``older_than`` that commits afterwards
    commits a removed generation (``check`` reports the video damaged, ``extract`` writes
    it again; there was no earlier copy to lose)."""
    from actrec.errors import ActrecError
    from actrec.extract_claims import claim
    from actrec.io.features import VIDEOS_GROUP, decode_video_id

    groups = sorted((g for g in (store.path / VIDEOS_GROUP).iterdir() if g.name != "zarr.json"),
                    key=lambda g: g.name)
    task = None if progress is None else progress.add_task("sweeping videos",
                                                           total=len(groups))
    for group in groups:
        if task is not None:
            progress.advance(task)
        video = decode_video_id(group.name)
        try:
            _, current = _committed(group)
        except _Unreadable as exc:  # a commit it cannot read: any generation may be it
            left.extend(Leftover(video, str(g), "generation", age,
                                 f"{exc}: which generation is committed is unknown")
                        for g, age in _generations(group, now) if age > older_than)
            continue
        found = [(g, age) for g, age in _generations(group, now) if g.name != current]
        if not found:
            continue
        young = [(g, age) for g, age in found if age <= older_than]
        for g, age in young:
            left.append(Leftover(video, str(g), "uncommitted generation", age,
                                 f"younger than {_span(older_than)}: may be a live writer's"))
        if len(young) == len(found):
            continue
        try:
            with claim(store.path, video) as mine:
                if not mine:
                    for g, age in found:
                        if age > older_than:
                            left.append(Leftover(video, str(g), "uncommitted generation", age,
                                                 "another process is extracting this video"))
                    continue
                try:  # again, held: a commit since is kept
                    version, raw, current = _commit_of(group)
                except _Unreadable:
                    continue  # said when it is met first (a later sweep)
                doomed = [(g, age) for g, age in _generations(group, now)
                          if g.name != current and age > older_than]
                if doomed and version is not None and not _invalidate(group, version, raw):
                    left.append(Leftover(
                        video, str(group), "video", None,
                        "committed by another process while the sweep held its claim (a "
                        "writer silent past its lease): its generations are left to a later "
                        "sweep"))
                    continue
                for g, age in doomed:
                    g.rmtree()
                    removed.append(Leftover(video, str(g), "uncommitted generation", age))
        except (ActrecError, OSError) as exc:
            left.append(Leftover(video, str(group), "uncommitted generation", None,
                                 f"could not be removed: {exc}"))


# ---------------------------------------------------------------------- in a folder


def _sweep_folder(store: Any, removed: list, restored: list, left: list) -> None:
    """``FeatureStore._clean`` under the store's lock, and what it changed; a temp folder it
    keeps (a live writer's on this host, or one of another host's writers, whose liveness
    cannot be told from here, not yet ``STALE_SECONDS`` old) is listed as left."""
    from actrec.io.features import STALE_SECONDS, TMP_DIR, VIDEOS_GROUP

    tmp_root = store.path / TMP_DIR
    videos = store.path / VIDEOS_GROUP
    with store._lock():  # writers create and move their temp folders under it
        before = _entries(tmp_root)
        groups = _entries(videos)
        present = {e.name for e in groups}
        ages = {e.name: _age(e) for e in before + groups}
        store._clean()
        after = {e.name for e in _entries(tmp_root)}
        now_present = {e.name for e in _entries(videos)}
    for entry in groups:  # a group without its complete marker (never a live write's)
        if entry.is_dir() and entry.name not in now_present:
            removed.append(Leftover(_video(entry.name), str(entry), "incomplete video group",
                                    ages[entry.name]))
    for entry in before:
        if entry.name in after:
            left.append(Leftover(_video(entry.name.split(".")[0]), str(entry), "temp folder",
                                 ages[entry.name],
                                 f"its writer may be alive (this host: running; another "
                                 f"host: removed once {STALE_SECONDS // 3600} h old)"))
            continue
        name = entry.name.split(".")[0]
        video = _video(name)
        if entry.name.endswith("-old") and name in now_present and name not in present:
            restored.append(Leftover(video, str(videos / name), "old copy restored",
                                     ages[entry.name]))
        else:
            removed.append(Leftover(video, str(entry), "temp folder", ages[entry.name]))


def _video(name: str) -> str:
    from actrec.io.features import decode_video_id

    try:
        return decode_video_id(name)
    except (UnicodeDecodeError, ValueError):
        return name


def _entries(folder) -> list:
    try:
        return sorted(folder.iterdir(), key=lambda e: e.name)
    except OSError:
        return []


def _age(entry) -> float | None:
    try:
        return time.time() - entry.stat().st_mtime
    except OSError:
        return None


def _span(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:g} h"
    if seconds >= 60:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"
