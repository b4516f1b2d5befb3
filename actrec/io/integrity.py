"""What a stored video must look like on disk, and checks that it still does.

When a video is committed to a feature store (``FeatureStore.write_video``) its group records,
per array (``features``, ``labels``), an ``integrity`` entry::

    {"shape": [T, D], "chunk_frames": c, "chunks": n,
     "files": {"c/0/0": bytes, ...},          # every chunk file with its size in bytes
     "sha256": "..."}                          # of the decoded array (C order, little endian)

Zarr reads a missing chunk as its fill value (labels become class 0), so presence cannot be
left to Zarr. Two levels of checking:

* ``chunk_problems`` (cheap: one ``stat`` per chunk file, no read) runs on every read and
  before ``extract`` skips a video: a missing or resized chunk file is damage.
* ``verify_video`` (reads everything) adds the checksums (and the chunks' own crc32c, a codec
  of every array written since) and the source video's size and mtime: ``actrec check``.

A chunk altered in place with its size kept passes the cheap check, so ``extract`` would count
its video as done: ``drop_damaged`` (``actrec check --drop-damaged``) removes the videos the
full check found damaged, and ``extract`` then redoes exactly those.

Videos written before these records existed have no ``integrity`` entry: they cannot be
checked and read as before ("unverified").

A store with several streams (``actrec.io.features``) is checked stream by stream, and a
video's streams must agree with each other on frame count and labels (the labels' recorded
digest): otherwise the video is "inconsistent" in the later stream.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from actrec.io.remote import StoreURL

if TYPE_CHECKING:  # pragma: no cover
    from actrec.io.features import FeatureStore

__all__ = ["ARRAYS", "STATUSES", "PendingDigest", "StoreCheck", "VideoCheck", "array_digest",
           "array_record", "check_store", "chunk_problems", "crc32c_failures", "decode_failure",
           "digest_problems", "drop_damaged", "recorded_digest", "source_change",
           "verify_video", "window_chunks"]

ARRAYS = ("features", "labels")
STATUSES = ("ok", "damaged", "source changed", "inconsistent", "unverified")
_STORED_DTYPES = {"float16": "<f2", "float32": "<f4", "int64": "<i8"}


def recorded_digest(attrs: Mapping[str, Any], array: str) -> str | None:
    """The sha256 a stored video's attributes ``attrs`` record of its ``array`` (one of
    ``ARRAYS``) as written; ``None`` where none is recorded."""
    return ((attrs.get("integrity") or {}).get(array) or {}).get("sha256")


def array_digest(values: np.ndarray, dtype: str) -> str:
    """sha256 of ``values`` as stored: cast to ``dtype``, little endian, C order."""
    data = np.ascontiguousarray(np.asarray(values).astype(_STORED_DTYPES[dtype], copy=False))
    return hashlib.sha256(data.reshape(-1).view(np.uint8)).hexdigest()  # its buffer: no copy


# Below this many bytes an array is hashed at once: a thread costs more than it hides.
_BACKGROUND_BYTES = 1 << 20


class PendingDigest:
    """``array_digest(values, dtype)``, computed beside the caller's own work: hashlib lets go
    of the GIL while it hashes a large buffer, so a thread hashing a whole video's features
    runs while the caller reads its labels and converts the features (on another core).
    ``None`` for a dtype this module does not know. ``result()`` waits for the digest (and
    raises what hashing raised: a failed hash never passes for "nothing to compare").
    ``values`` must not be changed until then."""

    def __init__(self, values: np.ndarray, dtype: str) -> None:
        self._digest: str | None = None
        self._error: BaseException | None = None
        self._thread = None
        if dtype not in _STORED_DTYPES:
            return
        if np.asarray(values).nbytes < _BACKGROUND_BYTES:
            self._digest = array_digest(values, dtype)
            return
        import threading

        def run() -> None:
            try:
                self._digest = array_digest(values, dtype)
            except BaseException as exc:  # noqa: BLE001 - raised in the caller's thread
                self._error = exc

        self._thread = threading.Thread(target=run, name="actrec-digest", daemon=True)
        self._thread.start()

    def result(self) -> str | None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            raise self._error
        return self._digest


def digest_problems(integrity: Mapping[str, Any] | None,
                    digests: Mapping[str, str | None]) -> list[str]:
    """What is wrong with a stored video's arrays read WHOLE: for each array of ``digests``
    (name -> ``array_digest`` of its decoded values as stored) whose ``integrity`` record has
    a sha256, whether the values still hash to it. This catches what sizes and the chunks'
    own crc32c cannot: valid chunks in the wrong place (exchanged or copied from another video
    or generation), and altered chunks of arrays written without a crc32c. ``[]`` when all is
    well, or when there is no record (or no digest: a dtype this module does not know) to
    compare."""
    problems = []
    for name, digest in digests.items():
        rec = (integrity or {}).get(name)
        want = rec.get("sha256") if isinstance(rec, Mapping) else None
        if not want or digest is None:
            continue
        if digest != want:
            problems.append(f"{name}: the values read differ from the sha256 recorded when it "
                            f"was written (chunks exchanged or altered)")
    return problems


def array_record(array_dir: Path, values: np.ndarray, dtype: str, chunk_frames: int) -> dict:
    """The ``integrity`` entry of one freshly written array: its chunk files as they lie in
    ``array_dir`` (key relative to it -> size), their number, shape and digest."""
    files = {}
    if isinstance(array_dir, StoreURL):  # one listing of the object store
        files = {k: v for k, v in sorted(array_dir.sizes().items()) if k.startswith("c/")}
    chunk_root = Path(array_dir) / "c" if not isinstance(array_dir, StoreURL) else None
    if chunk_root is not None and chunk_root.is_dir():
        for f in sorted(chunk_root.rglob("*")):
            if f.is_file():
                files[f.relative_to(array_dir).as_posix()] = f.stat().st_size
    return {"shape": list(values.shape), "chunk_frames": int(chunk_frames),
            "chunks": len(files), "files": files, "sha256": array_digest(values, dtype)}


def _time_chunk(key: str) -> int:
    """The time index of chunk ``c/<t>/...`` (arrays are chunked along time only)."""
    return int(key.split("/")[1])


def window_chunks(record: Mapping[str, Any], frames: tuple[int, int] | None = None
                  ) -> list[str]:
    """The keys of the chunk files an array's ``integrity`` ``record`` lists that hold frames
    ``(t0, t1)`` (all of them for ``None``), in the record's order."""
    keys = list(record.get("files", {}))
    if frames is None:
        return keys
    step = int(record.get("chunk_frames") or 1)
    return [k for k in keys
            if _time_chunk(k) * step < frames[1] and _time_chunk(k) * step + step > frames[0]]


def chunk_problems(video_dir: Path, integrity: Mapping[str, Any] | None,
                   frames: tuple[int, int] | None = None) -> list[str]:
    """What is wrong with the files of one stored video, cheaply (``stat`` only): an array's
    missing metadata, each recorded chunk that is missing or no longer has its recorded size.
    ``frames`` = ``(t0, t1)`` limits the check to the chunks holding those frames. ``[]`` when
    all is well or when the video has no record (written before records existed)."""
    if not integrity:
        return []
    # A store at a URL: one listing instead of a request per chunk file.
    sizes = video_dir.sizes() if isinstance(video_dir, StoreURL) else None
    problems = []
    for name in ARRAYS:
        rec = integrity.get(name)
        if not isinstance(rec, Mapping):
            problems.append(f"{name}: no integrity record")
            continue
        if not ((video_dir / name / "zarr.json").is_file() if sizes is None
                else f"{name}/zarr.json" in sizes):
            problems.append(f"{name}: array metadata zarr.json is missing")
            continue
        sizes_written = rec.get("files", {})
        for key in window_chunks(rec, frames):
            size = sizes_written[key]
            try:
                actual = (os.stat(video_dir / name / key).st_size if sizes is None
                          else sizes[f"{name}/{key}"])
            except (FileNotFoundError, KeyError):
                problems.append(f"{name}: chunk {key} is missing")
                continue
            if actual != size:
                problems.append(f"{name}: chunk {key} has {actual} bytes, {size} were written")
    return problems


def source_change(recorded: Mapping[str, Any] | None, path: str | Path | None) -> str | None:
    """How the source video at ``path`` differs from what the store ``recorded`` when it was
    extracted (its path, size and mtime), in words; ``None`` when it does not differ, when
    nothing was recorded, or when the file is not there now (then the stored features are
    all there is, and they stay)."""
    if not recorded or path is None or recorded.get("size") is None:
        return None
    path = Path(path)
    try:
        stat = path.stat()
    except OSError:
        return None
    # Older stores recorded the path as given (perhaps relative): compare resolved paths.
    if recorded.get("path") is not None and Path(recorded["path"]).resolve() != path.resolve():
        return f"source is now {path}, features were made from {recorded['path']}"
    if stat.st_size != recorded.get("size"):
        return f"{path} has {stat.st_size} bytes, {recorded['size']} when extracted"
    if recorded.get("mtime") is not None and stat.st_mtime != recorded["mtime"]:
        return f"{path} was modified after extraction (modified {_when(stat.st_mtime)}; " \
               f"{_when(recorded['mtime'])} when extracted)"
    return None


@dataclass(frozen=True)
class VideoCheck:
    """One video's verdict in one stream: ``status`` is ``ok``, ``damaged`` (chunks missing,
    resized or not matching their checksum), ``source changed``, ``inconsistent`` (its frames
    or labels differ from the store's first stream that has it) or ``unverified`` (no record:
    written before actrec recorded one); ``problems`` says what exactly."""

    video: str
    status: str
    problems: tuple[str, ...] = ()
    stream: str = ""

    @property
    def bad(self) -> bool:
        return self.status in ("damaged", "source changed", "inconsistent")


@dataclass(frozen=True)
class StoreCheck:
    """``actrec check``'s report on a whole store; ``dropped``: the damaged videos that
    ``drop_damaged`` removed from it (``ok`` still says what the check found); ``swept``: what
    ``actrec.io.leftovers.sweep_store`` removed before the check (``--sweep``)."""

    store: Path
    videos: tuple[VideoCheck, ...]
    notes: tuple[str, ...] = field(default=())
    streams: tuple[str, ...] = ()
    dropped: tuple[VideoCheck, ...] = ()
    swept: Any = None  # a SweepReport

    @property
    def ok(self) -> bool:
        return not any(v.bad for v in self.videos)

    def count(self, status: str) -> int:
        return sum(v.status == status for v in self.videos)

    def to_dict(self) -> dict[str, Any]:
        return {"store": str(self.store), "ok": self.ok, "videos": len(self.videos),
                "streams": list(self.streams),
                "counts": {s: self.count(s) for s in STATUSES},
                "problems": [{"video": v.video, "stream": v.stream, "status": v.status,
                              "problems": list(v.problems)}
                             for v in self.videos if v.status != "ok"],
                "dropped": [{"video": v.video, "stream": v.stream} for v in self.dropped],
                "swept": self.swept.to_dict() if self.swept is not None else None,
                "notes": list(self.notes)}


def verify_video(store: FeatureStore, video_id: str, *, sources: bool = True) -> VideoCheck:
    """Everything ``actrec check`` knows about one stored video: its chunk files present with
    their sizes, each array decoded (chunk crc32c) with its recorded shape and sha256, and
    (``sources``) its source video unchanged."""
    import zarr

    attrs = store.video_attrs(video_id)
    integrity = attrs.get("integrity")
    if not integrity:
        why = "written before actrec recorded checksums; extract with --overwrite to add them"
        return VideoCheck(video_id, "unverified", (why,))
    video_dir = store.video_dir(video_id)
    problems = chunk_problems(video_dir, integrity)
    for name in ARRAYS:
        rec = integrity.get(name)
        if not isinstance(rec, Mapping) or any(p.startswith(f"{name}:") for p in problems):
            continue  # already known bad: decoding it says nothing new
        try:
            array = zarr.open_array(store=str(video_dir / name), mode="r")
            values = array[...]
            dtype = str(array.dtype)
        except Exception as exc:  # noqa: BLE001 - any decode failure is damage, reported
            problems.append(f"{name}: {decode_failure(video_dir / name, exc, rec.get('files'))}")
            continue
        if list(values.shape) != list(rec.get("shape", [])):
            problems.append(f"{name}: shape {list(values.shape)}, {rec.get('shape')} written")
        elif array_digest(values, dtype) != rec.get("sha256"):
            problems.append(f"{name}: checksum differs from the one recorded when written")
    if problems:
        return VideoCheck(video_id, "damaged", tuple(problems))
    if sources:
        src = attrs.get("source") or {}
        change = source_change(src, src.get("path"))
        if change:
            return VideoCheck(video_id, "source changed", (change,))
    return VideoCheck(video_id, "ok")


def decode_failure(array_dir: Path | StoreURL, exc: Exception,
                   keys: Iterable[str] | None = None) -> str:
    """What failed in the Zarr array at ``array_dir`` that raised ``exc`` when decoded: the
    chunks whose bytes fail their crc32c (altered in place after they were written), named
    as zarr stores them (``c/0/0``), found by checking the chunk files themselves
    (``crc32c_failures``; ``keys`` limits the chunks looked at); else the decoder's own words
    ("unreadable (...)"). Independent of how zarr words its errors."""
    try:
        bad = crc32c_failures(array_dir, keys)
    except Exception:  # noqa: BLE001 - the files cannot be read either: say what is known
        bad = None
    if not bad:
        return f"unreadable ({type(exc).__name__}: {exc})"
    which = f"chunk{'s' if len(bad) > 1 else ''} {', '.join(bad[:3])}" + \
        (f" (and {len(bad) - 3} more)" if len(bad) > 3 else "")
    return (f"{which} fail{'' if len(bad) > 1 else 's'} {'their' if len(bad) > 1 else 'its'} "
            f"crc32c checksum (altered in place after written)")


def crc32c_failures(array_dir: Path | StoreURL,
                    keys: Iterable[str] | None = None) -> list[str] | None:
    """The keys (``c/0/0``) of the chunk files of the Zarr v3 array at ``array_dir`` whose
    bytes fail the crc32c that closes the array's codec chain (as the ``crc32c`` codec
    stores it: the last 4 bytes, little endian, are the crc32c of the bytes before them), in
    chunk order; ``keys`` limits the check to those chunks (default: every chunk file
    there). ``None`` when the chain does not end with ``crc32c`` (an array written without
    it: nothing to check this way). A missing chunk file is not listed (``chunk_problems``
    names it)."""
    import json

    import google_crc32c  # zarr's own crc32c (a dependency of zarr)

    meta = json.loads((array_dir / "zarr.json").read_bytes())
    codecs = meta.get("codecs") if isinstance(meta, dict) else None
    if not codecs or not isinstance(codecs[-1], Mapping) or codecs[-1].get("name") != "crc32c":
        return None
    if keys is None:
        keys = _chunk_keys(array_dir)
    bad = []
    for key in sorted(keys, key=_chunk_order):
        try:
            data = (array_dir / key).read_bytes()
        except FileNotFoundError:
            continue
        if len(data) < 4 or \
                int(google_crc32c.value(data[:-4])).to_bytes(4, "little") != data[-4:]:
            bad.append(key)
    return bad


def _chunk_keys(array_dir: Path | StoreURL) -> list[str]:
    """The keys (``c/...``, relative to ``array_dir``) of the chunk files there."""
    if isinstance(array_dir, StoreURL):  # one listing of the object store
        return [k for k in array_dir.sizes() if k.startswith("c/")]
    root = Path(array_dir) / "c"
    return [f.relative_to(array_dir).as_posix() for f in root.rglob("*") if f.is_file()] \
        if root.is_dir() else []


def _chunk_order(key: str) -> tuple:
    """``c/10/0`` after ``c/2/0``: chunk keys by their indices."""
    return tuple(int(p) if p.isdigit() else -1 for p in key.split("/")[1:])


def check_store(store: FeatureStore, *, sources: bool = True,
                progress: Any = None, video_ids: Iterable[str] | None = None) -> StoreCheck:
    """``verify_video`` for every complete video (or ``video_ids``) of every stream of
    ``store``, and each video's streams compared with the first stream that has it (frame
    count and labels digest); ``progress`` (a rich Progress) gets one task counting videos."""
    names = store.streams()
    parts = [(name, store.stream(name)) for name in names]
    todo = [(name, sub, list(sub.videos() if video_ids is None else
                             [v for v in video_ids if sub.has(v)]))
            for name, sub in parts]
    total = sum(len(ids) for _, _, ids in todo)
    task = progress.add_task("checking videos", total=total) if progress is not None else None
    results = []
    first: dict[str, tuple[str, dict]] = {}  # video -> (stream, its attributes)
    for name, sub, ids in todo:
        for vid in ids:
            check = verify_video(sub, vid, sources=sources)
            attrs = sub.video_attrs(vid)
            if vid in first and check.status in ("ok", "unverified"):
                differs = _streams_differ(first[vid], (name, attrs))
                if differs:
                    check = VideoCheck(vid, "inconsistent", (differs,))
            first.setdefault(vid, (name, attrs))
            results.append(VideoCheck(check.video, check.status, check.problems,
                                      name if len(names) > 1 else ""))
            if task is not None:
                progress.advance(task)
    notes = []
    for _, sub in parts:
        leftovers = sub.path / ".tmp"
        if not isinstance(leftovers, StoreURL) and leftovers.is_dir() and \
                any(leftovers.iterdir()):
            notes.append(f"{leftovers} holds unfinished writes (removed by the next extract)")
    return StoreCheck(store.path, tuple(results), tuple(notes), tuple(names))


def drop_damaged(store: FeatureStore, report: StoreCheck) -> StoreCheck:
    """Remove from ``store`` (through ``FeatureStore.remove``: folders and URLs alike) every
    video that ``report`` (``check_store`` of this store) found damaged, so that ``actrec
    extract`` extracts exactly those again. Videos whose source changed (``extract`` redoes
    them by itself), inconsistent or unverified ones are never removed.

    Each video is claimed as ``extract`` claims one it writes, and verified again while held:
    one that another process is writing now, or that is intact by then (re-written since the
    check), stays, and so does one that cannot be removed; a note says which and why. Returns
    ``report`` with ``dropped`` (the videos removed) and those notes added."""
    from actrec.errors import ActrecError
    from actrec.extract_claims import claim

    dropped, notes = [], []
    for found in report.videos:
        if found.status != "damaged":
            continue
        sub = store.stream(found.stream) if found.stream else store
        name = f"video {found.video!r}" + (f" (stream '{found.stream}')" if found.stream else "")
        try:
            with claim(sub.path, found.video) as mine:
                if not mine:
                    notes.append(f"{name} was left: another process is extracting it now")
                    continue
                if not sub.has(found.video):
                    continue  # removed meanwhile: extract redoes it all the same
                again = verify_video(sub, found.video, sources=False)
                if again.status != "damaged":
                    notes.append(f"{name} was left: it is intact now (written again since "
                                 f"the check)")
                    continue
                sub.remove(found.video)
        except (ActrecError, OSError) as exc:
            notes.append(f"{name} could not be removed: {exc}")
            continue
        dropped.append(found)
    return replace(report, dropped=tuple(dropped), notes=report.notes + tuple(notes))


def _streams_differ(a: tuple[str, Mapping[str, Any]], b: tuple[str, Mapping[str, Any]]) -> str:
    """How one video's attributes in two streams disagree on its frames, in words ('' if not)."""
    (na, aa), (nb, ab) = a, b
    if int(aa.get("num_frames", -1)) != int(ab.get("num_frames", -1)):
        return (f"{ab.get('num_frames')} frames in stream '{nb}', {aa.get('num_frames')} in "
                f"stream '{na}'")
    la = ((aa.get("integrity") or {}).get("labels") or {}).get("sha256")
    lb = ((ab.get("integrity") or {}).get("labels") or {}).get("sha256")
    if la and lb and la != lb:
        return f"its labels in stream '{nb}' differ from those in stream '{na}'"
    return ""


def _when(mtime: float) -> str:
    """A file time as local date and time to the microsecond (mtimes differ by less than a
    second when a file is rewritten at once)."""
    from datetime import datetime

    return datetime.fromtimestamp(mtime).isoformat(sep=" ", timespec="microseconds")
