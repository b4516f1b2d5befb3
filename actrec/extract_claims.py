"""Claims: which process is extracting which video of a store, across processes and machines.

A process extracts a video only while it holds the video's claim, a small JSON file
``<store>/.claims/<name>.json`` saying who holds it (host, pid and the pid's start time, a
random token, since when). A claim is a lease: its holder refreshes it every ``lease / 4``
seconds (a heartbeat thread) and deletes it when done. Another process may take a claim over
when it is stale:

* its holder ran on this host and that process is gone (or a zombie, or its pid was reused):
  at once, so re-running right after a kill never waits for the dead. A holder on this host
  that still runs keeps its claim however long it is silent (stopped with Ctrl-Z, swapping),
  as an OS lock would: its liveness is known, no lease is needed;
* a holder on another machine: when its last refresh is older than the lease (default 120 s,
  ``ACTREC_CLAIM_LEASE`` or ``actrec extract --claim-lease``): that machine died, or lost the
  store. The age is measured on the storage's clock (the file system's times, S3's ``Date``),
  not this machine's, so clock skew between machines does not make a live claim look stale.

"This host" is the host name and, on Linux, the boot and the pid namespace: containers that
share a host name but not their processes count as different hosts.

Atomicity, so that two processes never both hold one claim:

* Local folders (and NFS): a claim is created by hard-linking a fully written file to its name
  (``link`` fails if the name exists, the classic NFS-safe exclusive create); a refresh
  touches its mtime. A takeover renames the stale file aside (only one renamer can win), checks
  that what it moved is still the stale claim it judged (else puts it back), and then creates
  its own.
* S3: created with a conditional PUT (``If-None-Match: *``), refreshed and taken over with a
  PUT conditional on the ETag last seen (``If-Match``): a compare-and-swap on the server; and
  released with a DELETE conditional on it, so a release never removes a taker's claim.
* Other fsspec backends: created with their exclusive ``xb`` mode; a takeover deletes and
  re-creates, which two takers of one stale claim can race (documented limit).

A holder on another machine that was silent past its lease (a network partition, a long
pause) may be alive: its claim is then taken over, and it finds out at its next refresh. On a
folder its write is a whole, atomic one, so the store stays correct whichever lands last. At a
URL the writer confirms its claim (``confirm_held``, a compare-and-swap refresh) before it
starts and again before it commits, and stops if the claim is no longer its own; a pause
between that check and the commit is caught by the commit itself, which is conditional on the
video's state when the writer started (``actrec.io.remote_store``).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from actrec.errors import ConfigError, DataError
from actrec.io.remote import StoreURL, precondition_failed, store_location

__all__ = ["CLAIMS", "DEFAULT_LEASE", "Claim", "ClaimInfo", "ClaimLost", "claim", "claim_info",
           "confirm_held", "ended_here", "lease_seconds", "list_claims", "release_claims",
           "this_process", "try_claim"]

CLAIMS = ".claims"
DEFAULT_LEASE = 120.0  # seconds without a refresh after which another machine takes over
_LEASE_VAR = "ACTREC_CLAIM_LEASE"
_SUFFIX = ".json"


def lease_seconds() -> float:
    """The claim lease in seconds: ``ACTREC_CLAIM_LEASE`` if set, else ``DEFAULT_LEASE``.
    ``ConfigError`` naming the variable for a value that is not a number > 0."""
    text = os.environ.get(_LEASE_VAR)
    if not text:
        return DEFAULT_LEASE
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ConfigError(f"{_LEASE_VAR}={text!r}: expected seconds > 0")
    return value


# ---------------------------------------------------------------------- who holds a claim


def _proc_start(pid: int) -> str | None:
    """The start time of process ``pid`` (clock ticks since boot, Linux), ``None`` elsewhere
    or when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return fields[19] if len(fields) > 19 else None  # field 22 of the whole line


def _node() -> str | None:
    """This host's boot and pid namespace (Linux), so that a claim from a container sharing
    the host name but not the processes is not judged by this host's process table."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        return f"{boot}/{os.stat('/proc/self/ns/pid').st_ino}"
    except OSError:
        return None


def _same_node(content: dict[str, Any]) -> bool:
    """Whether a claim's holder ran where this process can see whether it is alive."""
    if str(content.get("host", "?")) != socket.gethostname():
        return False
    theirs = content.get("node")
    return theirs is None or theirs == _node()


def _process_alive(pid: int, start: str | None) -> bool:
    """Whether process ``pid`` of this host runs (not a zombie) and is the one that started at
    ``start`` (a reused pid is another process)."""
    proc = Path(f"/proc/{pid}/stat")
    if Path("/proc/self/stat").exists():
        try:
            stat = proc.read_text()
        except OSError:
            return False
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] in ("Z", "X", "x"):  # exited, not yet reaped: dead
            return False
        return start is None or fields[19] == start
    from actrec.io.features import pid_alive  # no /proc: existence is all we can tell

    return pid_alive(pid)


def this_process() -> dict[str, Any]:
    """This process as a claim or a run record names its holder: ``host``, ``node`` (boot
    and pid namespace, Linux), ``pid`` and ``pid_start`` (so that a reused pid is another
    process)."""
    pid = os.getpid()
    return {"host": socket.gethostname(), "node": _node(), "pid": pid,
            "pid_start": _proc_start(pid)}


def ended_here(holder: Mapping[str, Any]) -> bool:
    """Whether the process a record names (the keys of ``this_process``) ran where this
    process can see its process table and is no longer running; ``False`` when that cannot
    be told (another machine or container)."""
    return _same_node(holder) and not _process_alive(int(holder.get("pid", -1)),
                                                     holder.get("pid_start"))


@dataclass(frozen=True)
class ClaimInfo:
    """One claim as found in a store: its video, holder (``host``, ``pid``), when it was made
    (``since``, epoch seconds), seconds since its last refresh (``age``), and whether another
    process may take it over (``stale``, with ``why``)."""

    video: str
    host: str
    pid: int
    since: float
    age: float
    stale: bool
    why: str = ""
    token: str = ""
    shard: str | None = None
    version: Any = field(default=None, compare=False, repr=False)  # what a takeover checks

    def to_dict(self) -> dict[str, Any]:
        return {"video": self.video, "host": self.host, "pid": self.pid,
                "since": datetime.fromtimestamp(self.since).isoformat(timespec="seconds")
                if self.since else None,
                "age_seconds": round(self.age, 1), "stale": self.stale, "why": self.why,
                "shard": self.shard}


def _judge(video: str, content: dict[str, Any] | None, refreshed: float, lease: float,
           version: Any, clock=None) -> ClaimInfo:
    """The claim judged now. ``refreshed`` is its last refresh on the storage's clock;
    ``clock()`` (if given) reads that clock now, and is asked only for a claim that looks
    stale by this machine's clock (it may cost a request)."""
    age = max(0.0, time.time() - refreshed)
    if age > lease and clock is not None and not (content and _same_node(content)):
        age = max(0.0, clock() - refreshed)  # this machine's clock may be ahead of the store's
    if content is None:  # unreadable (half-written by a backend without atomic create)
        return ClaimInfo(video, "?", -1, refreshed, age, age > min(lease, 10.0),
                         "unreadable claim", version=version)
    host, pid = str(content.get("host", "?")), int(content.get("pid", -1))
    stale, why = False, ""
    if _same_node(content):  # alive or not is known: a live holder keeps it (as a lock)
        if not _process_alive(pid, content.get("pid_start")):
            stale, why = True, f"process {pid} on this host has ended"
    elif age > lease:
        stale, why = True, f"not refreshed for {age:.0f} s (lease {lease:g} s)"
    return ClaimInfo(video, host, pid, float(content.get("since") or 0.0), age, stale, why,
                     str(content.get("token", "")), content.get("shard"), version)


def _content(video_id: str, token: str) -> bytes:
    shard = os.environ.get("ACTREC_CLAIM_SHARD") or None
    return json.dumps({"video": video_id, **this_process(), "token": token,
                       "since": time.time(), "shard": shard}).encode("utf-8")


def _parse(raw: bytes | None) -> dict[str, Any] | None:
    try:
        value = json.loads(raw) if raw else None
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


# ---------------------------------------------------------------------- storage


class _LocalFiles:
    """Claim files in a local (or NFS) folder."""

    def __init__(self, store: Path) -> None:
        self.folder = store / CLAIMS

    def path(self, name: str) -> Path:
        return self.folder / (name + _SUFFIX)

    def names(self) -> list[str]:
        try:
            return sorted(p.name[: -len(_SUFFIX)] for p in self.folder.iterdir()
                          if p.name.endswith(_SUFFIX) and not p.name.startswith("."))
        except OSError:
            return []

    def create(self, name: str, data: bytes) -> bool:
        target = self.path(name)
        tmp = self.folder / f".{name}.{uuid.uuid4().hex}.new"
        try:  # a write that fails (a full disk) leaves no file behind
            for _ in range(3):  # the folder may vanish between mkdir and write (a finishing run)
                try:
                    self.folder.mkdir(parents=True, exist_ok=True)
                    tmp.write_bytes(data)
                    break
                except FileNotFoundError:
                    continue
            try:
                os.link(tmp, target)  # atomic create-if-absent, with the content already there
                return True
            except FileExistsError:
                return False
            except OSError:  # a file system without hard links: exclusive create, then write
                try:
                    fd = os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
                except FileExistsError:
                    return False
                try:
                    with os.fdopen(fd, "wb") as f:
                        f.write(data)
                except BaseException:
                    target.unlink(missing_ok=True)  # an empty claim is nobody's
                    raise
                return True
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()

    def read(self, name: str) -> tuple[dict[str, Any] | None, float, Any] | None:
        target = self.path(name)
        try:
            raw = target.read_bytes()
            st = os.stat(target)
        except FileNotFoundError:
            return None
        return _parse(raw), st.st_mtime, (st.st_ino, st.st_mtime_ns)

    def now(self) -> float:
        """The file system's clock now (an NFS server's, not this machine's): the time it
        stamps on a file written now."""
        probe = self.folder / f".clock.{uuid.uuid4().hex}"
        try:
            probe.write_bytes(b"")
            return os.stat(probe).st_mtime
        except OSError:
            return time.time()
        finally:
            with contextlib.suppress(OSError):
                probe.unlink()

    def refresh(self, name: str, token: str, version: Any) -> Any:
        found = self.read(name)
        if found is None or found[0] is None or found[0].get("token") != token:
            return None
        try:
            os.utime(self.path(name))
            st = os.stat(self.path(name))
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns)

    def take_over(self, name: str, stale: ClaimInfo, data: bytes) -> bool:
        target = self.path(name)
        aside = self.folder / f".{name}.{uuid.uuid4().hex}.old"
        try:
            os.rename(target, aside)  # of several takers, one moves it
        except FileNotFoundError:
            return False
        try:
            st = os.stat(aside)
            if (st.st_ino, st.st_mtime_ns) != stale.version:
                # Not the claim judged stale (refreshed, or another's new one): put it back.
                with contextlib.suppress(FileExistsError):
                    os.link(aside, target)
                return False
        finally:
            with contextlib.suppress(OSError):
                aside.unlink()
        return self.create(name, data)

    def release(self, name: str, token: str) -> None:
        found = self.read(name)
        if found is not None and found[0] is not None and found[0].get("token") == token:
            with contextlib.suppress(FileNotFoundError):
                self.path(name).unlink()


class _ObjectFiles:
    """Claim objects at a URL; compare-and-swap on S3 through conditional PUTs."""

    def __init__(self, store: StoreURL) -> None:
        self.folder = store / CLAIMS
        fs = self.folder.fs
        self.s3 = hasattr(fs, "call_s3") and hasattr(fs, "split_path")

    def path(self, name: str) -> StoreURL:
        return self.folder / (name + _SUFFIX)

    def names(self) -> list[str]:
        return sorted(u.name[: -len(_SUFFIX)] for u in self.folder.iterdir()
                      if u.name.endswith(_SUFFIX))

    def create(self, name: str, data: bytes) -> bool:
        return self.path(name).create_exclusive(data)

    def read(self, name: str) -> tuple[dict[str, Any] | None, float, Any] | None:
        target = self.path(name)
        fs = target.fs
        try:
            target._fresh()
            info = fs.info(target.fs_path)  # the version first: a later change fails the CAS
            raw = target.read_bytes()
        except FileNotFoundError:
            return None
        modified = info.get("LastModified") or info.get("mtime") or info.get("updated")
        if isinstance(modified, datetime):
            modified = modified.timestamp()
        elif isinstance(modified, str):
            modified = datetime.fromisoformat(modified.replace("Z", "+00:00")).timestamp()
        content = _parse(raw)
        if modified is None:
            modified = float((content or {}).get("refreshed") or 0.0)
        return content, float(modified), info.get("ETag") or info.get("etag")

    def now(self) -> float:
        """The object store's clock now (S3: the ``Date`` of a response), else this machine's."""
        if not self.s3:
            return time.time()
        from email.utils import parsedate_to_datetime

        bucket, key, _ = self.folder.fs.split_path(self.folder.fs_path)
        try:
            out = self.folder.fs.call_s3("list_objects_v2", Bucket=bucket, Prefix=key + "/",
                                         MaxKeys=1)
            return parsedate_to_datetime(out["ResponseMetadata"]["HTTPHeaders"]["date"]) \
                .timestamp()
        except (OSError, KeyError, TypeError, ValueError):
            return time.time()

    def _put(self, name: str, data: bytes, etag: Any) -> Any:
        """PUT ``data`` only if the object's ETag is still ``etag``; the new ETag, or
        ``None`` if it changed."""
        bucket, key, _ = self.folder.fs.split_path(self.path(name).fs_path)
        try:
            out = self.folder.fs.call_s3("put_object", Bucket=bucket, Key=key, Body=data,
                                         IfMatch=etag)
        except (OSError, FileNotFoundError):  # 412 precondition failed, or gone
            return None
        return out.get("ETag")

    def refresh(self, name: str, token: str, version: Any) -> Any:
        found = self.read(name)
        if found is None or found[0] is None or found[0].get("token") != token:
            return None
        content = dict(found[0], refreshed=time.time())
        data = json.dumps(content).encode("utf-8")
        if self.s3:
            return self._put(name, data, found[2])
        self.path(name).write_bytes(data)
        return True

    def take_over(self, name: str, stale: ClaimInfo, data: bytes) -> bool:
        if self.s3:
            return stale.version is not None and self._put(name, data, stale.version) is not None
        found = self.read(name)  # best effort: delete what was judged stale, create anew
        if found is None or found[2] != stale.version:
            return False
        self.path(name).unlink(missing_ok=True)
        return self.create(name, data)

    def release(self, name: str, token: str) -> None:
        found = self.read(name)
        if found is None or found[0] is None or found[0].get("token") != token:
            return
        if self.s3 and found[2]:  # delete only the claim read: not a taker's that replaced it
            bucket, key, _ = self.folder.fs.split_path(self.path(name).fs_path)
            try:
                self.folder.fs.call_s3("delete_object", Bucket=bucket, Key=key,
                                       IfMatch=found[2])
                return
            except FileNotFoundError:
                return
            except OSError as exc:
                if precondition_failed(exc):
                    return  # taken over since it was read: the taker's now
            except Exception:  # noqa: BLE001, S110 - a botocore without IfMatch on deletes
                pass
            # A server or client without conditional deletes: delete as before.
        self.path(name).unlink(missing_ok=True)


def _files(store_path) -> _LocalFiles | _ObjectFiles:
    where = store_location(store_path)
    return _ObjectFiles(where) if isinstance(where, StoreURL) else _LocalFiles(where)


# ---------------------------------------------------------------------- claiming


class Claim:
    """A claim this process holds; ``lost`` turns true if a refresh found it taken over."""

    def __init__(self, files, name: str, video_id: str, token: str, version: Any,
                 lease: float) -> None:
        self._files, self.name, self.video = files, name, video_id
        self.token, self.version, self.lease = token, version, lease
        self.lost = False
        self._mutex = threading.Lock()  # the heartbeat and confirm_held: one CAS at a time
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def refresh(self) -> bool:
        """Refresh the lease now; ``False`` (and ``lost``) if the claim is no longer ours."""
        with self._mutex:
            if self.lost:
                return False
            version = self._files.refresh(self.name, self.token, self.version)
            if version is None:
                self.lost = True
                return False
            self.version = version
            return True

    def _beat(self) -> None:
        while not self._stop.wait(max(0.05, self.lease / 4)):
            try:
                if not self.refresh():
                    return
            except Exception:  # noqa: BLE001, S112 - the store unreachable for a moment (any
                continue  # backend error): try again next beat; the thread must not die

    def start(self) -> Claim:
        self._thread = threading.Thread(target=self._beat, name=f"actrec-claim-{self.name}",
                                        daemon=True)
        self._thread.start()
        return self

    def release(self) -> None:
        """Stop refreshing and delete the claim if it is still ours."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with contextlib.suppress(OSError):
            self._files.release(self.name, self.token)


def try_claim(store_path, video_id: str, *, lease: float | None = None) -> Claim | None:
    """Claim ``video_id`` in the store at ``store_path`` (a path or URL) for this process:
    a held ``Claim`` (its heartbeat not started; see ``claim``), or ``None`` when another live
    process holds it. A stale claim (see the module docstring) is taken over atomically."""
    from actrec.io.features import encode_video_id

    lease = lease_seconds() if lease is None else float(lease)
    files = _files(store_path)
    name = encode_video_id(video_id)
    token = uuid.uuid4().hex
    for _ in range(5):  # each round another process changed the claim under us
        data = _content(video_id, token)
        if files.create(name, data):
            found = files.read(name)
            return Claim(files, name, video_id, token, found[2] if found else None, lease)
        found = files.read(name)
        if found is None:
            continue  # released meanwhile: create again
        info = _judge(video_id, found[0], found[1], lease, found[2], files.now)
        if not info.stale:
            return None
        if files.take_over(name, info, data):
            found = files.read(name)
            return Claim(files, name, video_id, token, found[2] if found else None, lease)
    return None


_HELD: dict[tuple[str, str], Claim] = {}  # claims held by this process, for confirm_held


class ClaimLost(DataError):
    """This process's claim on a video was taken over by another process: the video is the
    other's to write (an extraction reports it busy and finds it written later)."""


def _held_key(store_path, video_id: str) -> tuple[str, str]:
    from actrec.io.features import encode_video_id

    return str(store_location(store_path)), encode_video_id(video_id)


def confirm_held(store_path, video_id: str) -> None:
    """If this process holds ``video_id``'s claim in the store (``claim``), make sure it still
    does, by refreshing it now (a compare-and-swap on S3): ``DataError`` when another process
    took it over, or when it cannot be confirmed. Writers of a store without rename call this
    before they delete or commit, so a holder presumed dead never writes over its taker."""
    held = _HELD.get(_held_key(store_path, video_id))
    if held is None:
        return
    try:
        mine = held.refresh()
    except Exception as exc:  # noqa: BLE001 - the backend's error: unconfirmed is not ours
        raise DataError(f"feature store {store_path}: cannot confirm this process's claim on "
                        f"video {video_id!r} ({type(exc).__name__}: {exc}); not writing it") \
            from None
    if not mine:
        raise ClaimLost(f"feature store {store_path}: video {video_id!r} was taken over by "
                        f"another process while this one held it (silent past its lease); "
                        f"not writing it, the other process does")


@contextlib.contextmanager
def claim(store_path, video_id: str, *, lease: float | None = None) -> Iterator[bool]:
    """Hold ``video_id``'s claim in the store at ``store_path`` while the block runs: yields
    ``True`` (the lease refreshed in the background, the claim deleted afterwards) or
    ``False`` when another live process holds it."""
    held = try_claim(store_path, video_id, lease=lease)
    if held is None:
        yield False
        return
    key = _held_key(store_path, video_id)
    _HELD[key] = held.start()
    try:
        yield True
    finally:
        if _HELD.get(key) is held:
            del _HELD[key]
        held.release()


def claim_info(store_path, video_id: str, *, lease: float | None = None) -> ClaimInfo | None:
    """The claim on ``video_id`` in the store, judged now; ``None`` when there is none."""
    from actrec.io.features import encode_video_id

    lease = lease_seconds() if lease is None else float(lease)
    files = _files(store_path)
    found = files.read(encode_video_id(video_id))
    if found is None:
        return None
    return _judge(video_id, found[0], found[1], lease, found[2], files.now)


def list_claims(store_path, *, lease: float | None = None) -> list[ClaimInfo]:
    """Every claim in the store, judged now, by video id."""
    from actrec.io.features import decode_video_id

    lease = lease_seconds() if lease is None else float(lease)
    files = _files(store_path)
    clock: list[float] = []  # the storage's clock, read once: (its time - ours) at that moment

    def now() -> float:
        if not clock:
            clock.append(files.now() - time.time())
        return time.time() + clock[0]

    out = []
    for name in files.names():
        found = files.read(name)
        if found is not None:
            video = str((found[0] or {}).get("video") or decode_video_id(name))
            out.append(_judge(video, found[0], found[1], lease, found[2], now))
    return sorted(out, key=lambda c: c.video)


def release_claims(store_path) -> None:
    """Remove a local store's claims folder if no claim is left in it (object stores have no
    empty folders)."""
    where = store_location(store_path)
    if not isinstance(where, StoreURL):
        with contextlib.suppress(OSError):
            (where / CLAIMS).rmdir()
