"""Progress of (sharded) extraction runs on one store: ``actrec extract --status STORE``.

Besides its videos, a store being extracted holds small JSON records that any machine can read:

* ``.runs/<host>-<pid>-<start>.json``: one per ``actrec extract`` run: its host and pid, its
  shard (``i/n`` or none), the videos it set out to extract (its shard of the dataset, ids),
  when it started and finished, with counts at the end;
* ``.failed/<name>.json``: the last failure of a video (its message, host, when), removed once
  the video is written;
* ``.claims/<name>.json``: the videos being extracted now (``actrec.extract_claims``).

``store_status`` puts them together: each video the runs set out to extract is ``done``
(complete in the store), ``failed`` (with its reason), ``claimed`` (by which host and pid, for
how long, stale or not) or ``pending``; in total and per recorded shard.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any

from actrec.io.remote import StoreURL, store_location

__all__ = [
    "FAILED",
    "RUNS",
    "RunRecord",
    "ShardStatus",
    "StoreStatus",
    "clear_failure",
    "record_failure",
    "start_run",
    "store_status",
]

RUNS = ".runs"
FAILED = ".failed"


def _write(target, data: dict[str, Any]) -> None:
    """Write a small JSON record (a local file is replaced atomically)."""
    text = json.dumps(data, sort_keys=True)
    if isinstance(target, StoreURL):
        target.write_text(text)  # one PUT: atomic on object stores
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, target)
    except BaseException:  # a full disk: no half-written record left behind
        tmp.unlink(missing_ok=True)
        raise


def _read(target) -> dict[str, Any] | None:
    try:
        value = json.loads(target.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _entries(folder) -> list:
    try:
        return [e for e in folder.iterdir() if e.name.endswith(".json")
                and not e.name.startswith(".")]
    except OSError:
        return []


# ---------------------------------------------------------------------- writing records


@dataclass
class RunRecord:
    """This process's record of its run in the store (``start_run``); ``finish`` completes it."""

    target: Any
    data: dict[str, Any]

    def finish(self, *, written: int, skipped: int, failed: int, busy: int,
               stopped: str = "") -> None:
        """Record the run's end and counts; ``stopped``: why it stopped before the end (a
        signal, a store it could not write), "" when it ran to the end."""
        self.data.update(finished=time.time(), written=written, skipped=skipped, failed=failed,
                         busy=busy, stopped=stopped or None)
        _write(self.target, self.data)


def start_run(store_path, videos: list[str], shard: tuple[int, int] | None,
              workers: int, extractor: str) -> RunRecord:
    """Record in the store that this process starts extracting ``videos`` (its shard)."""
    where = store_location(store_path)
    started = time.time()
    from actrec.extract_claims import this_process

    data = {**this_process(), "started": started,
            "finished": None, "shard": f"{shard[0]}/{shard[1]}" if shard else None,
            "workers": workers, "extractor": extractor, "videos": sorted(videos)}
    target = where / RUNS / f"{socket.gethostname()}-{os.getpid()}-{int(started * 1000)}.json"
    _write(target, data)
    return RunRecord(target, data)


def record_failure(store_path, video_id: str, error: str, shard: tuple[int, int] | None) -> None:
    """Record that ``video_id`` failed with ``error`` (the latest failure wins)."""
    from actrec.io.features import encode_video_id

    where = store_location(store_path)
    _write(where / FAILED / f"{encode_video_id(video_id)}.json",
           {"video": video_id, "error": error, "host": socket.gethostname(),
            "pid": os.getpid(), "time": time.time(),
            "shard": f"{shard[0]}/{shard[1]}" if shard else None})


def recorded_failure(store_path, video_id: str) -> str | None:
    """The error of ``video_id``'s last recorded extraction failure in the store, or None
    (no failure recorded, or no record readable)."""
    from actrec.io.features import encode_video_id

    try:
        data = _read(store_location(store_path) / FAILED / f"{encode_video_id(video_id)}.json")
    except (OSError, ValueError):
        return None
    return str(data.get("error", "")) or None if data else None


def clear_failure(store_path, video_id: str) -> None:
    """Forget ``video_id``'s failure (it has been written)."""
    from actrec.io.features import encode_video_id

    target = store_location(store_path) / FAILED / f"{encode_video_id(video_id)}.json"
    try:
        target.unlink(missing_ok=True)
    except OSError:
        pass
    if not isinstance(target, StoreURL):
        try:
            target.parent.rmdir()
        except OSError:
            pass


# ---------------------------------------------------------------------- reading them


@dataclass(frozen=True)
class ShardStatus:
    """Counts of one shard (``"i/n"``; ``"all"`` for runs without a shard)."""

    shard: str
    planned: int
    done: int
    failed: int
    claimed: int
    pending: int

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class StoreStatus:
    """Where the extraction of a store stands (see the module docstring)."""

    store: str
    planned: int
    done: tuple[str, ...]
    failed: tuple[tuple[str, str, str], ...]  # (video, error, host)
    claimed: tuple[Any, ...]  # ClaimInfo
    pending: tuple[str, ...]
    shards: tuple[ShardStatus, ...]
    runs: tuple[dict[str, Any], ...] = field(default=())
    extra_done: int = 0  # complete videos no recorded run planned (e.g. written before records)

    def to_dict(self) -> dict[str, Any]:
        return {
            "store": self.store,
            "planned": self.planned,
            "counts": {"done": len(self.done), "failed": len(self.failed),
                       "claimed": len(self.claimed), "pending": len(self.pending)},
            "done_outside_runs": self.extra_done,
            "failed": [{"video": v, "error": e, "host": h} for v, e, h in self.failed],
            "claimed": [c.to_dict() for c in self.claimed],
            "pending": list(self.pending),
            "shards": [s.to_dict() for s in self.shards],
            "runs": list(self.runs),
        }


def _run_state(run: dict[str, Any]) -> str:
    from actrec.extract_claims import ended_here

    if run.get("finished"):
        return f"stopped: {run['stopped']}" if run.get("stopped") else "finished"
    if ended_here(run):
        return "ended early"
    return "running"


def store_status(store_path, *, lease: float | None = None) -> StoreStatus:
    """The status of the store at ``store_path`` (a path or URL): every video a recorded run
    planned, as done / failed / claimed / pending, in total and per shard. ``DataError`` when
    there is no feature store there."""
    from actrec.extract_claims import list_claims
    from actrec.io.features import FeatureStore

    where = store_location(store_path)
    store = FeatureStore.open(where)
    done = set(store.videos())
    runs = sorted((r for r in (_read(e) for e in _entries(where / RUNS)) if r is not None),
                  key=lambda r: r.get("started") or 0)
    failures = {r["video"]: r for r in (_read(e) for e in _entries(where / FAILED))
                if r is not None and "video" in r}
    claims = {c.video: c for c in list_claims(where, lease=lease)}
    planned: set[str] = set()
    by_shard: dict[str, set[str]] = {}
    for run in runs:
        ids = set(run.get("videos") or ())
        planned |= ids
        by_shard.setdefault(run.get("shard") or "all", set()).update(ids)
    planned |= set(failures) | set(claims)

    def state(vid: str) -> str:
        if vid in claims and not claims[vid].stale:
            return "claimed"  # being (re)written now
        if vid in done:
            return "done"
        if vid in failures:
            return "failed"
        if vid in claims:
            return "claimed"  # stale: the next run takes it over
        return "pending"

    states = {vid: state(vid) for vid in planned}

    def shard_key(name: str) -> tuple:
        i, _, n = name.partition("/")
        return (0, int(n), int(i)) if n else (1, 0, 0)

    shards = []
    for name in sorted(by_shard, key=shard_key):
        ids = by_shard[name]
        count = {s: sum(states[v] == s for v in ids)
                 for s in ("done", "failed", "claimed", "pending")}
        shards.append(ShardStatus(name, len(ids), **count))
    shown_runs = tuple({"host": r.get("host"), "pid": r.get("pid"), "shard": r.get("shard"),
                        "started": r.get("started"), "finished": r.get("finished"),
                        "state": _run_state(r), "videos": len(r.get("videos") or ()),
                        "written": r.get("written"), "failed": r.get("failed")}
                       for r in runs)
    return StoreStatus(
        store=str(where),
        planned=len(planned),
        done=tuple(sorted(v for v, s in states.items() if s == "done")),
        failed=tuple((v, str(failures[v].get("error", "")), str(failures[v].get("host", "")))
                     for v in sorted(states) if states[v] == "failed"),
        claimed=tuple(claims[v] for v in sorted(states) if states[v] == "claimed"),
        pending=tuple(sorted(v for v, s in states.items() if s == "pending")),
        shards=tuple(shards),
        runs=shown_runs,
        extra_done=len(done - planned),
    )
