"""The per-frame feature store: one Zarr v3 directory store per (dataset, extractor).

Layout on disk::

    <store>/zarr.json                 root group; its attributes describe the whole store
    <store>/videos/<name>/            one group per video: ``features`` [T, D] (chunked along
                                      time, compressed) and ``labels`` [T] int64
    <store>/.tmp/                     videos being written (not a Zarr node)

``<name>`` is the video id made safe for a file name (``encode_video_id``); the id itself is
kept in the group's ``id`` attribute. A video is written completely under ``.tmp/`` and then
moved into ``videos/`` with one directory rename, so a reader never sees it half-written;
the ``complete`` attribute is set before the move and only complete groups are listed. Where
the file system can, the move that replaces an earlier copy is one atomic exchange of the two
folders (Linux ``renameat2``), so readers always find one whole copy. A store at a URL writes
each version of a video under a new generation folder in its group and commits it by naming
it (``generation``, see ``actrec.io.remote_store``); readers read the generation named.

Integrity: each video group records what was written (``integrity``: per array its shape,
chunk files with their sizes, and a sha256 of the values; see ``actrec.io.integrity``), and
every chunk carries a crc32c. Reads refuse a video whose chunk files are missing or resized
(Zarr would return fill values: labels of class 0); ``actrec check`` verifies everything.

Values: features are stored in the store's ``dtype`` and read back as float32. ``float16``
(the default) rounds each value to 11 significant bits: a relative error of at most 2**-11
(4.9e-4) down to 6.1e-5, an absolute one of at most 3e-8 below that (smaller values become
0); values beyond 65504 are refused (they would become infinite). ``float32`` stores the
extractor's values exactly. NaN and infinity are refused in either (``write_video``).

Concurrent writers: creating or opening a store for writing, moving a video into
``videos/``, removing one and cleaning leftovers hold an OS lock (``flock``) on the store
folder, which dies with its holder; so two creators never see or wipe each other's half-made
store (the second opens the first's), and two writers of one video replace it in turn.

Source: a store records where its features came from (``source``: the dataset plugin and all
its options, the data root as an absolute path among them, the extractor and its config) and
refuses to be filled from another source, so that extracting a dataset from a second root can
never skip videos because the first root's copies are there. ``background`` lists the
dataset's background classes (segment metrics leave them out by default); stores written
before these attributes existed read as no source and no background.

Streams: one store may hold several named streams of features of the same frames (``rgb``,
``flow``, ``mhi``, ...), each from its own extractor. The store itself is its first stream,
named by its ``stream`` attribute (stores written before streams existed: their extractor's
name); every further stream is a complete store of this same layout under
``<store>/streams/<name>/`` (a Zarr group of the hierarchy), with its own extractor, config,
lookahead, source, labels and integrity records, written and resumed on its own
(``open_or_create(..., stream=NAME)``). Every stream must agree with the store on dataset,
classes and data source; a video's streams must agree on frames and labels (``StreamConcat``
refuses to read a video whose streams do not, and ``actrec check`` reports it). ``select``
reads one stream, or several concatenated frame by frame (early fusion,
``actrec.io.streams.StreamConcat``).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from actrec.errors import ConfigError, DataError
from actrec.io.remote import StoreURL, store_location

if TYPE_CHECKING:  # pragma: no cover
    from actrec.io.streams import StreamConcat

__all__ = ["FORMAT", "FORMAT_VERSION", "STALE_SECONDS", "STREAMS_GROUP", "TMP_DIR",
           "VIDEOS_GROUP", "FeatureStore", "check_stream_name", "decode_video_id",
           "describe_source", "encode_video_id", "source_of"]

FORMAT = "actrec-features"
FORMAT_VERSION = 1
_DTYPES = ("float16", "float32")
# The store's layout (its folders and groups), shared with the remote store and the sweep.
TMP_DIR = ".tmp"  # writers' temp folders
VIDEOS_GROUP = "videos"  # one group per video below it
STREAMS_GROUP = "streams"  # the stores of streams other than the store's own
_STREAM_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
STALE_SECONDS = 24 * 3600  # a temp dir from another host is only removed after this long
# Attributes that must match for new features to be mixed with the stored ones.
_IDENTITY = ("dataset", "classes", "extractor", "extractor_config", "lookahead", "dtype")


def encode_video_id(video_id: str) -> str:
    """A file-name-safe, reversible name for ``video_id``: letters, digits, ``-`` and ``_``
    are kept, every other byte of its UTF-8 is written ``%XX``; a leading ``_`` is escaped
    too (Zarr reserves names starting with ``__``)."""
    if not video_id:
        raise DataError("video id must not be empty")
    out = []
    for i, byte in enumerate(video_id.encode("utf-8")):
        ch = chr(byte)
        if (ch.isascii() and ch.isalnum()) or ch == "-" or (ch == "_" and i > 0):
            out.append(ch)
        else:
            out.append(f"%{byte:02X}")
    return "".join(out)


def decode_video_id(name: str) -> str:
    """The video id that ``encode_video_id`` turned into ``name``."""
    from urllib.parse import unquote_to_bytes

    return unquote_to_bytes(name).decode("utf-8")


def check_stream_name(name: str) -> str:
    """``name`` if it can name a stream (letters, digits, ``-`` and ``_``, not starting with
    ``-`` or ``_``); ``ConfigError`` saying so otherwise."""
    if not isinstance(name, str) or not _STREAM_NAME.fullmatch(name):
        raise ConfigError(f"stream name {name!r}: expected letters, digits, '-' and '_' "
                          f"(starting with a letter or digit), e.g. rgb, flow, mhi")
    return name


def _jsonable(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples become lists, paths strings)."""
    return json.loads(json.dumps(value, default=str, sort_keys=True))


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this host (one owned by another user counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class FeatureStore:
    """Per-video features and labels of one dataset under one extractor (see module docs).

    Create with ``open_or_create`` (for writing) or ``open`` (for reading).
    """

    def __init__(self, path: Path | StoreURL, attrs: dict[str, Any]) -> None:
        self.path = path if isinstance(path, StoreURL) else Path(path)
        self._attrs = attrs
        self._read_digests: dict[str, dict[str, str | None]] = {}  # see ``read_digests``

    # ------------------------------------------------------------------ opening

    @classmethod
    def open_or_create(
        cls,
        path: str | Path,
        *,
        dataset: str,
        split_scheme: str,
        classes: Sequence[str],
        splits: Mapping[str, Mapping[str, Sequence[str]]],
        extractor: str,
        extractor_config: Mapping[str, Any],
        lookahead: int,
        dtype: str = "float16",
        chunk_frames: int = 256,
        background: Sequence[int] = (),
        source: Mapping[str, Any] | None = None,
        stream: str | None = None,
    ) -> FeatureStore:
        """Create the store at ``path``, or open the existing one there.

        ``stream`` names the stream these features are for (see the module docstring). ``None``
        is the store's own (first) stream, as before streams existed; a new store's own stream is
        named ``stream``, or the extractor's name. A ``stream`` that is not the existing store's
        own opens (or creates) that stream's store under ``streams/``, which must agree with this
        one on dataset, classes and data source (``ConfigError`` naming both otherwise); the
        checks below then apply to the stream.

        ``source`` describes where the features come from (``{"dataset": name, "options":
        {...}, "extractor": name, "extractor_config": {...}}``, see ``source_of``). An existing
        store with another source is refused with ``ConfigError`` naming both; one written
        before sources were recorded is refused too unless it is empty or its videos' files
        lie under the requested root (then the source is recorded). An existing store must
        also agree on dataset, classes, extractor, extractor_config, lookahead and dtype;
        otherwise ``DataError`` names the store and the first differing field, and nothing is
        changed. ``splits``, ``split_scheme`` and ``background`` are updated when they differ
        (they do not affect stored values). Temp directories left by crashed writers and
        incomplete video groups are removed.
        """
        path = store_location(path)
        if dtype not in _DTYPES:
            raise DataError(f"{path}: feature dtype must be one of {_DTYPES}, got {dtype!r}")
        if chunk_frames <= 0:
            raise DataError(f"{path}: chunk_frames must be positive, got {chunk_frames}")
        wanted = _jsonable({
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "dataset": dataset,
            "split_scheme": split_scheme,
            "classes": list(classes),
            "splits": {name: {"train": list(s["train"]), "test": list(s["test"])}
                       for name, s in splits.items()},
            "extractor": extractor,
            "extractor_config": dict(extractor_config),
            "causal": lookahead == 0,
            "lookahead": int(lookahead),
            "dtype": dtype,
            "chunk_frames": int(chunk_frames),
            "background": sorted({int(c) for c in background}),
            "source": dict(source) if source is not None else None,
            "stream": check_stream_name(stream) if stream is not None else extractor,
        })
        bad = [c for c in wanted["background"] if not 0 <= c < len(wanted["classes"])]
        if bad:
            raise DataError(f"{path}: background class {bad[0]} is not an index of the "
                            f"{len(wanted['classes'])} classes")
        if isinstance(path, StoreURL):  # no OS locks or renames there: see remote_store
            from actrec.io.remote_store import RemoteFeatureStore

            return RemoteFeatureStore.create_or_reopen(path, wanted, stream)
        if path.exists() and not path.is_dir():
            raise DataError(f"feature store {path} exists and is not a folder; expected a Zarr "
                            f"store (a folder) or a new path")
        fresh = not path.exists()
        path.mkdir(parents=True, exist_ok=True)
        try:
            # Creators and openers of one path take turns (an OS lock on the folder): none
            # sees another's half-made store, or wipes it.
            with cls(path, {})._lock():
                if (path / "zarr.json").exists():
                    existing = cls.open(path)
                    if stream is None or stream == existing.stream_name:
                        return cls._reopen(path, wanted)
                    # Another stream: its own store below this one, opened outside our lock.
                    sub = existing._stream_dir_for(wanted)
                elif any(path.iterdir()):
                    raise DataError(f"{path}: exists and is not a feature store (no zarr.json); "
                                    f"refusing to write into it")
                else:
                    # zarr's group metadata, written directly (``zarr_files``): zarr's own
                    # calls cost a few ms of the run's start, the files are the same
                    from actrec.io.zarr_files import write_group

                    write_group(path, wanted)
                    (path / VIDEOS_GROUP).mkdir()
                    write_group(path / VIDEOS_GROUP, {})
                    return cls(path, json.loads(json.dumps(wanted)))
        except BaseException:
            if fresh:
                _rmdir_if_empty(path)  # leave no empty folder where nothing was made
            raise
        return cls.open_or_create(sub, dataset=dataset, split_scheme=split_scheme,
                                  classes=classes, splits=splits, extractor=extractor,
                                  extractor_config=extractor_config, lookahead=lookahead,
                                  dtype=dtype, chunk_frames=chunk_frames, background=background,
                                  source=source, stream=stream)

    def _stream_dir_for(self, wanted: dict[str, Any]) -> Path:
        """The folder of stream ``wanted["stream"]`` of this store, after checking that the
        stream's dataset, classes and data source are this store's (``ConfigError`` naming
        both otherwise); makes ``streams/`` a Zarr group. The caller holds the lock."""
        import zarr

        name = wanted["stream"]
        for key in ("dataset", "classes"):
            if self._attrs.get(key) != wanted[key]:
                raise ConfigError(
                    f"stream '{name}' cannot join feature store {self.path}: the store holds "
                    f"{key} {_short(self._attrs.get(key))}, the stream {_short(wanted[key])}")
        mine, theirs = self._attrs.get("source"), wanted["source"]
        if mine is not None and theirs is not None and \
                _data_source(mine) != _data_source(theirs):
            raise ConfigError(
                f"stream '{name}' cannot join feature store {self.path}: the store holds "
                f"{describe_source(mine, theirs)}, the stream would hold "
                f"{describe_source(theirs, mine)}; streams of one store are of the same data")
        group = self.path / STREAMS_GROUP
        if not (group / "zarr.json").exists():
            zarr.open_group(store=str(group), mode="a")
        return group / name

    @classmethod
    def _reopen(cls, path: Path, wanted: dict[str, Any]) -> FeatureStore:
        """The existing store at ``path`` checked against ``wanted`` (see ``open_or_create``),
        its mutable attributes updated and its leftovers cleaned; the caller holds the lock."""
        import zarr

        store = cls.open(path)
        store._check_source(wanted["source"])
        for key in _IDENTITY:
            if store._attrs.get(key) != wanted[key]:
                raise DataError(
                    f"feature store {path} was written with a different {key}: "
                    f"stored {_short(store._attrs.get(key))}, requested {_short(wanted[key])}; "
                    f"use another store path or delete it"
                )
        # Attributes that describe the data but not the stored values follow the request.
        mutable = ["splits", "split_scheme", "background"]
        if wanted["source"] is not None:
            mutable.append("source")  # only ever recorded into a store that had none
        changed = {k: wanted[k] for k in mutable if store._attrs.get(k) != wanted[k]}
        if changed:
            group = zarr.open_group(store=str(path), mode="r+")
            group.attrs.update(changed)
            store._attrs.update(changed)
        store._clean()
        return store

    @classmethod
    def open(cls, path: str | Path) -> FeatureStore:
        """Open an existing store for reading (a path, or a URL, see ``actrec.io.remote``);
        ``DataError`` if it is missing or not a store."""
        path = store_location(path)
        if isinstance(path, StoreURL) and cls is FeatureStore:
            from actrec.io.remote_store import RemoteFeatureStore

            return RemoteFeatureStore.open(path)
        meta = path / "zarr.json"
        if not meta.is_file():
            raise DataError(f"{path}: no feature store here (missing {meta.name})")
        try:
            attrs = json.loads(meta.read_text())["attributes"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DataError(f"{meta}: unreadable Zarr metadata ({exc})") from None
        if not isinstance(attrs, dict) or attrs.get("format") != FORMAT:
            raise DataError(f"{path}: a Zarr store but not an actrec feature store "
                            f"(attribute 'format' is not {FORMAT!r})")
        if attrs.get("format_version") != FORMAT_VERSION:
            raise DataError(f"{path}: feature store format version "
                            f"{attrs.get('format_version')}, this actrec reads {FORMAT_VERSION}")
        return cls(path, attrs)

    # ------------------------------------------------------------------ metadata

    @property
    def attrs(self) -> dict[str, Any]:
        """The store-level attributes (a copy)."""
        return json.loads(json.dumps(self._attrs))

    @property
    def imported(self) -> bool:
        """Whether the features were imported (``actrec import``: extractor ``<layout>-import``),
        so that only the import, not extraction, can write them again."""
        return str(self._attrs.get("extractor", "")).endswith("-import")

    @property
    def stream_name(self) -> str:
        """The name of this store's own stream (its extractor's for older stores)."""
        return str(self._attrs.get("stream") or self._attrs.get("extractor"))

    def streams(self) -> list[str]:
        """Names of the streams this store holds: its own first, then the others sorted."""
        others = []
        group = self.path / STREAMS_GROUP
        if group.is_dir():
            for entry in sorted(group.iterdir()):
                attrs = _group_attrs(entry)
                if attrs is not None and attrs.get("format") == FORMAT:
                    others.append(entry.name)
        return [self.stream_name] + [n for n in others if n != self.stream_name]

    def stream(self, name: str) -> FeatureStore:
        """The store of stream ``name`` (this store for its own stream); ``DataError`` listing
        the streams there are when it has none of that name."""
        if name == self.stream_name:
            return self
        check_stream_name(name)
        if not (self.path / STREAMS_GROUP / name / "zarr.json").is_file():
            raise DataError(f"feature store {self.path} has no stream '{name}'; it holds: "
                            f"{', '.join(self.streams())} (extract one with `actrec extract "
                            f"... --out {self.path} --stream {name}`)")
        return FeatureStore.open(self.path / STREAMS_GROUP / name)

    def select(self, names: Sequence[str] | None) -> FeatureStore | StreamConcat:
        """What training reads: this store's own stream (``None``), one named stream, or
        several concatenated along the feature axis in the order given (``StreamConcat``).
        ``ConfigError`` for an empty or repeated list, ``DataError`` for a missing stream."""
        if names is None:
            return self
        names = [str(n) for n in names]
        if not names or len(set(names)) != len(names):
            raise ConfigError(f"streams of {self.path}: expected distinct stream names, got "
                              f"{names}")
        stores = [self.stream(n) for n in names]
        if len(stores) == 1:
            return stores[0]
        from actrec.io.streams import StreamConcat

        return StreamConcat(self.path, names, stores)

    @property
    def classes(self) -> list[str]:
        return list(self._attrs["classes"])

    @property
    def splits(self) -> dict[str, dict[str, list[str]]]:
        return json.loads(json.dumps(self._attrs["splits"]))

    @property
    def background(self) -> tuple[int, ...]:
        """The dataset's background classes (indices into ``classes``) that segment metrics
        leave out by default; ``()`` where there is none or the store predates the record."""
        return tuple(int(c) for c in self._attrs.get("background") or ())

    @property
    def source(self) -> dict[str, Any] | None:
        """Where the features came from: ``{"dataset", "options", "extractor",
        "extractor_config"}`` (the data root, absolute, among the options); ``None`` for a
        store written before sources were recorded."""
        src = self._attrs.get("source")
        return json.loads(json.dumps(src)) if src is not None else None

    @property
    def identity(self) -> str:
        """16 hex digits naming what the store holds: a hash of ``source`` (of dataset,
        classes, extractor, its config, lookahead and dtype for a store without one). Two
        stores with the same identity hold features of the same data."""
        import hashlib

        what = self._attrs.get("source") or {k: self._attrs.get(k) for k in _IDENTITY}
        text = json.dumps(what, sort_keys=True)
        return hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]

    @property
    def dim(self) -> int | None:
        """Feature length D, from any stored video (``None`` while the store is empty)."""
        return self._dim()

    def _dim(self, exclude: str | None = None) -> int | None:
        root = self.path / VIDEOS_GROUP
        if not root.is_dir():
            return None
        for entry in root.iterdir():  # the first complete video answers
            attrs = _group_attrs(entry)
            if attrs and attrs.get("complete") is True and attrs.get("id") != exclude:
                return int(attrs["dim"])
        return None

    def videos(self) -> list[str]:
        """Ids of the completely written videos, sorted."""
        root = self.path / VIDEOS_GROUP
        if not root.is_dir():
            return []
        ids = []
        for entry in root.iterdir():
            attrs = _group_attrs(entry)
            if attrs is not None and attrs.get("complete") is True and "id" in attrs:
                ids.append(str(attrs["id"]))
        return sorted(ids)

    def has(self, video_id: str) -> bool:
        attrs = _group_attrs(self._dir(video_id))
        return attrs is not None and attrs.get("complete") is True

    def video_attrs(self, video_id: str) -> dict[str, Any]:
        """The attributes of one stored video (fps, num_frames, source, ...)."""
        attrs = _group_attrs(self._dir(video_id))
        if attrs is None or attrs.get("complete") is not True:
            raise DataError(f"feature store {self.path}: no video {video_id!r}")
        return attrs

    def num_frames(self, video_id: str) -> int:
        return int(self.video_attrs(video_id)["num_frames"])

    def video_dir(self, video_id: str) -> Path:
        """The folder holding one stored video's arrays (``features/``, ``labels/``): its
        group's folder, or the generation its group names (see ``arrays_dir``)."""
        attrs = _group_attrs(self._dir(video_id))
        return arrays_dir(self._dir(video_id), attrs) if attrs else self._dir(video_id)

    def damage(self, video_id: str, frames: tuple[int, int] | None = None) -> list[str]:
        """What is wrong with the chunk files of a stored video, found cheaply (``stat``
        only, see ``actrec.io.integrity.chunk_problems``), limited to the chunks of frames
        ``(t0, t1)`` if given; ``[]`` when nothing is (or the video predates the record)."""
        from actrec.io.integrity import chunk_problems

        attrs = self.video_attrs(video_id)
        return chunk_problems(arrays_dir(self._dir(video_id), attrs), attrs.get("integrity"),
                              frames)

    # ------------------------------------------------------------------ reading

    def read(self, video_id: str) -> tuple[np.ndarray, np.ndarray]:
        """All features (float32 ``[T, D]``) and labels (int64 ``[T]``) of one video."""
        return self.read_window(video_id, 0, self.num_frames(video_id))

    def read_window(self, video_id: str, t0: int, length: int) -> tuple[np.ndarray, np.ndarray]:
        """Frames ``t0 .. t0+length-1`` (clipped to the video), reading only the chunks that
        overlap them. Returns float32 ``[L, D]`` and int64 ``[L]``. Damage is refused
        (``DataError``), never read: missing or resized chunks (sizes), altered chunks (their
        crc32c), and when the window is the whole video, values whose sha256 is not the one
        recorded at the commit."""
        from actrec.io.integrity import (
            PendingDigest,
            array_digest,
            chunk_problems,
            digest_problems,
            recorded_digest,
            window_chunks,
        )

        if t0 < 0 or length < 0:
            raise ValueError(f"window start and length must be >= 0, got {t0}, {length}")
        attrs = self.video_attrs(video_id)
        error: Exception | None = None
        for attempt in range(2):
            where = arrays_dir(self._dir(video_id), attrs)
            t1 = min(int(attrs["num_frames"]), t0 + length)
            window = (min(t0, t1), t1)
            problems = chunk_problems(where, attrs.get("integrity"), window) \
                if t1 > window[0] else []
            if not problems:
                whole = window == (0, int(attrs["num_frames"]))
                error = hashing = None
                try:
                    reading = "features"
                    feats = self._array(where, reading)[window[0]:t1]
                    if whole:  # hashed (a thread for a large video) while labels are read
                        hashing = PendingDigest(feats, str(self._attrs.get("dtype")))
                    reading = "labels"
                    labels = self._array(where, reading)[window[0]:t1]
                except (OSError, ValueError, RuntimeError) as exc:  # also a chunk's crc32c
                    record = (attrs.get("integrity") or {}).get(reading)
                    keys = window_chunks(record, window) if isinstance(record, dict) else None
                    error, failed = exc, (where / reading, exc, keys)
                if error is None and isinstance(where, StoreURL) and t1 > window[0]:
                    # A re-write at a URL deletes the generation it replaced, and a chunk
                    # gone during the read was read as fill values. One still there after
                    # the read was there during it (a generation is never written again).
                    problems = chunk_problems(where, attrs.get("integrity"), window)
                if error is None and not problems:
                    out = np.asarray(feats, dtype=np.float32)  # converted beside the hashing
                    if hashing is not None:
                        # The whole video: what was read must hash to what its commit
                        # recorded (valid chunks in the wrong place pass sizes and crc32c).
                        problems = digest_problems(attrs.get("integrity"), {
                            "features": hashing.result(),
                            "labels": array_digest(labels, "int64")})
                if error is None and not problems:
                    if whole:
                        self._read_digests[video_id] = {
                            a: recorded_digest(attrs, a) for a in ("features", "labels")}
                    return out, np.asarray(labels, dtype=np.int64)
            # The video may have been re-written since its attributes were read (at a URL a
            # new generation committed and the one read removed; in a folder the group
            # swapped for the new copy, whose chunks the old record does not describe):
            # read the new copy instead.
            newer = _group_attrs(self._dir(video_id)) if attempt == 0 else None
            if not newer or newer.get("complete") is not True or newer == attrs:
                break
            attrs = newer
        # extract's cheap test misses a chunk altered in place: check finds and drops it
        redo = (f"run `actrec check {self.path} --drop-damaged` to find and remove every "
                f"damaged video, then `actrec extract` again for this store to redo them")
        if self.imported:
            # imported features are written again by the import, which check prints
            redo = (f"run `actrec check {self.path} --drop-damaged` to find and remove every "
                    f"damaged video; it prints the `actrec import` command that writes them "
                    f"again")
        if problems:  # Zarr would read a missing chunk as fill values: refuse instead
            raise DataError(
                f"feature store {self.path}: video {video_id!r} is damaged ("
                f"{'; '.join(problems[:3])}{'; ...' if len(problems) > 3 else ''}); {redo}")
        from actrec.io.integrity import decode_failure

        array_dir, exc, keys = failed  # the chunks of the window are looked at
        raise DataError(f"feature store {self.path}: cannot read video {video_id!r} frames "
                        f"{window[0]}..{window[1]}: {array_dir.name}: "
                        f"{decode_failure(array_dir, exc, keys)}; if its chunks are damaged, "
                        f"{redo}")

    def read_digests(self) -> dict[str, dict[str, str | None]]:
        """For each video this store object has read whole (``read``): the sha256 its commit
        recorded of the features and labels of the copy that read returned (the last such
        read). A caller that fingerprints the store after reading it compares the two, so
        that a video rewritten in between is not recorded as what it read."""
        return dict(self._read_digests)

    # ------------------------------------------------------------------ writing

    def write_video(
        self,
        video_id: str,
        features: np.ndarray,
        labels: np.ndarray,
        *,
        fps: float,
        source: Path | None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        """Store one video's features ``[T, D]`` and labels ``[T]``, replacing any earlier copy.

        Atomic: the group is built under ``.tmp/`` and renamed into place, so a crash leaves
        either the old complete copy or the new one. ``extra`` adds JSON attributes (e.g. how
        labels were resampled). ``DataError`` (nothing written) if the lengths differ, the
        shapes are wrong, a feature is NaN or infinite, or beyond float16's range in a float16
        store.
        """
        features = np.asarray(features)
        labels = np.asarray(labels)
        where = f"feature store {self.path}, video {video_id!r}"
        if features.ndim != 2:
            raise DataError(f"{where}: features must be [T, D], got shape {features.shape}")
        if labels.ndim != 1:
            raise DataError(f"{where}: labels must be [T], got shape {labels.shape}")
        if features.shape[0] != labels.shape[0]:
            raise DataError(f"{where}: {features.shape[0]} feature rows but {labels.shape[0]} "
                            f"labels; nothing written")
        finite = np.isfinite(features)
        if not finite.all():
            # NaN / inf rows would be scored as class 0 at evaluation (argmax) without an error
            t, d = (int(i) for i in np.argwhere(~finite)[0])
            raise DataError(f"{where}: {int((~finite).any(axis=1).sum())} feature row(s) hold "
                            f"NaN or infinity (first: frame {t}, dimension {d}, "
                            f"{features[t, d]}) from extractor '{self._attrs['extractor']}'; "
                            f"nothing written")
        if self._attrs["dtype"] == "float16" and features.size and \
                not np.all(np.abs(features) <= 65504):
            raise DataError(f"{where}: feature values beyond the float16 range (65504); "
                            f"use a float32 store; nothing written")
        dim = self._dim(exclude=video_id)
        if dim is not None and features.shape[1] != dim:
            raise DataError(f"{where}: features have D={features.shape[1]}, the store holds "
                            f"D={dim}; nothing written")
        attrs: dict[str, Any] = {
            "id": video_id,
            "fps": float(fps),
            "num_frames": int(features.shape[0]),
            "dim": int(features.shape[1]),
            "extractor": self._attrs["extractor"],
            "extractor_config": self._attrs["extractor_config"],
            "causal": self._attrs["causal"],
            "lookahead": self._attrs["lookahead"],
            "source": None,
            "written_at": time.time(),
        }
        if source is not None:
            source = Path(source)
            stat = source.stat() if source.exists() else None
            attrs["source"] = {"path": str(source),
                               "size": stat.st_size if stat else None,
                               "mtime": stat.st_mtime if stat else None}
        attrs.update(_jsonable(dict(extra or {})))
        self._commit_video(video_id, attrs, features.astype(self._attrs["dtype"]),
                           labels.astype(np.int64))

    def _codecs(self) -> list:
        """Compression, then a crc32c of the compressed bytes: every read checks every chunk."""
        from zarr.codecs import BloscCodec, Crc32cCodec

        return [BloscCodec(cname="zstd", clevel=3, shuffle="bitshuffle"), Crc32cCodec()]

    def _commit_video(self, video_id: str, attrs: dict[str, Any], stored: np.ndarray,
                      labels: np.ndarray) -> None:
        """Write one checked video (``stored`` in the store's dtype, ``labels`` int64) with
        its ``attrs`` atomically: built under ``.tmp/``, renamed into ``videos/``."""
        import zarr

        from actrec.io.integrity import array_record
        from actrec.io.zarr_files import ArrayFiles, write_group

        features = stored
        name = encode_video_id(video_id)
        tmp = self.path / TMP_DIR / _tmp_name(name, uuid.uuid4().hex[:8])
        with self._lock():  # .tmp is only removed under the lock, and never while it has this
            tmp.mkdir(parents=True)
        try:
            chunk = int(self._attrs.get("chunk_frames", 256))
            codec = self._codecs()
            # Every chunk is written, even all-fill ones, so that every chunk file must exist.
            every = {"write_empty_chunks": True}
            t = max(1, features.shape[0])
            # The group's metadata is written once, last, with the record and the complete
            # marker. The arrays' files are written directly (``zarr_files``: the same bytes,
            # without zarr's asynchronous machinery, which cost ten times the work itself);
            # zarr writes them where that module does not handle the codecs or shape.
            for array, values, dtype in (("features", stored, self._attrs["dtype"]),
                                         ("labels", labels, "int64")):
                files = ArrayFiles.for_array(dtype, values.shape[1:], codec)
                if files is not None:
                    files.write(tmp / array, values, min(chunk, t))
                else:
                    zarr.create_array(store=str(tmp / array), data=values,
                                      chunks=(min(chunk, t), *values.shape[1:]),
                                      compressors=codec, config=every)
            integrity = {
                "features": array_record(tmp / "features", stored, self._attrs["dtype"],
                                         min(chunk, t)),
                "labels": array_record(tmp / "labels", labels, "int64", min(chunk, t)),
            }
            write_group(tmp, {**attrs, "integrity": integrity, "complete": True})
            with self._lock():
                self._move_into_place(tmp, self._dir(video_id))
        finally:
            with self._lock():
                if tmp.exists():
                    shutil.rmtree(tmp, ignore_errors=True)
                _rmdir_if_empty(tmp.parent)  # keeps the store a clean Zarr hierarchy

    def remove(self, video_id: str) -> None:
        """Delete one video (no error if it is not there)."""
        target = self._dir(video_id)
        with self._lock():
            if target.exists():
                trash = self.path / TMP_DIR / _tmp_name(target.name, "rm-" + uuid.uuid4().hex[:8])
                trash.parent.mkdir(parents=True, exist_ok=True)
                os.rename(target, trash)  # disappears from listings at once
                shutil.rmtree(trash, ignore_errors=True)
                _rmdir_if_empty(trash.parent)

    # ------------------------------------------------------------------ internals

    def _check_source(self, wanted: dict[str, Any] | None) -> None:
        """``ConfigError`` naming both sources when ``wanted`` is not what this store holds."""
        stored = self._attrs.get("source")
        if wanted is None or stored == wanted:
            return
        if stored is None:
            if self._legacy_matches(wanted):
                return  # a store from before sources were recorded, of this source: adopt it
            raise ConfigError(
                f"feature store {self.path} was written before stores recorded their source, "
                f"so it cannot be checked against {describe_source(wanted)}; delete it or "
                f"write to another store (--out)")
        raise ConfigError(
            f"feature store {self.path} holds features of {describe_source(stored, wanted)}, "
            f"not of {describe_source(wanted, stored)}; a store holds one source only: "
            f"write to another store (--out) or delete this one")

    def _legacy_matches(self, wanted: dict[str, Any]) -> bool:
        """Whether a store written before sources were recorded holds ``wanted``'s data, as
        far as it can tell: it is empty, or its data root is the one its record shows (an
        import's ``extractor_config.source``, else every video's file under that root)."""
        ids = self.videos()
        if not ids:
            return True
        root = (wanted.get("options") or {}).get("root")
        if root is None:
            return False
        config = self._attrs.get("extractor_config") or {}
        if "source" in config:
            return config["source"] == root
        for vid in ids:
            src = (self.video_attrs(vid).get("source") or {}).get("path")
            if src is None or not Path(src).resolve().is_relative_to(Path(root)):
                return False
        return True

    def _dir(self, video_id: str) -> Path:
        return self.path / VIDEOS_GROUP / encode_video_id(video_id)

    @staticmethod
    def _array(where: Path | StoreURL, name: str):
        """Array ``name`` of the video whose arrays lie in ``where`` (``arrays_dir``)."""
        import zarr

        return zarr.open_array(store=str(where / name), mode="r")

    @contextlib.contextmanager
    def _lock(self):
        """Hold an exclusive OS lock on the store folder (released when the holder dies).
        Not re-entrant: never nest. Where the file system has no ``flock`` it runs unlocked."""
        try:
            fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        except OSError:
            yield
            return
        try:
            try:
                import fcntl

                fcntl.flock(fd, fcntl.LOCK_EX)
            except (ImportError, OSError):
                pass  # no locking here (e.g. some network file systems): best effort
            yield
        finally:
            os.close(fd)  # also releases the lock

    def _move_into_place(self, tmp: Path, target: Path) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            if _exchange(tmp, target):  # one step: readers see the old copy or the new
                shutil.rmtree(tmp, ignore_errors=True)  # tmp holds the old copy now
                return
            # Renaming onto a non-empty directory fails: move the old copy aside first (a
            # crash between the renames leaves it there; _clean puts it back).
            old = tmp.with_name(tmp.name + "-old")
            os.rename(target, old)
            os.rename(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, target)

    def _clean(self) -> None:
        """Remove temp dirs of dead writers and video groups without the complete marker."""
        host = socket.gethostname()
        tmp_root = self.path / TMP_DIR
        if tmp_root.is_dir():
            for entry in tmp_root.iterdir():
                parts = entry.name.split(".")  # <name>.<host>.<pid>.<tag>, see _tmp_name
                try:
                    same_host = ".".join(parts[1:-2]) == host
                    dead = same_host and not pid_alive(int(parts[-2]))
                except (ValueError, IndexError):
                    dead = True
                try:
                    old = time.time() - entry.stat().st_mtime > STALE_SECONDS
                except OSError:
                    continue
                if dead or old:
                    target = self.path / VIDEOS_GROUP / parts[0]
                    attrs = _group_attrs(entry)
                    if (entry.name.endswith("-old") and not target.exists() and attrs
                            and attrs.get("complete") is True):
                        # The overwrite died between its two renames: keep the old copy.
                        target.parent.mkdir(parents=True, exist_ok=True)
                        os.rename(entry, target)
                        continue
                    shutil.rmtree(entry, ignore_errors=True)
            _rmdir_if_empty(tmp_root)
        videos = self.path / VIDEOS_GROUP
        if videos.is_dir():
            for entry in videos.iterdir():
                attrs = _group_attrs(entry)
                if entry.is_dir() and (attrs is None or attrs.get("complete") is not True):
                    shutil.rmtree(entry, ignore_errors=True)


GENERATION = re.compile(r"gen-[0-9]+-[0-9a-f]+")


def arrays_dir(group: Path | StoreURL, attrs: Mapping[str, Any]) -> Path | StoreURL:
    """Where the arrays of a video committed with ``attrs`` lie: its group folder ``group``,
    or the generation subfolder the attributes name (a store at a URL writes each version of
    a video under a new generation and commits by naming it, see
    ``actrec.io.remote_store``). ``DataError`` for a generation that is not such a name."""
    gen = attrs.get("generation")
    if gen is None:
        return group
    if not isinstance(gen, str) or not GENERATION.fullmatch(gen):
        raise DataError(f"{group}/zarr.json: generation {gen!r} is not a generation name "
                        f"(gen-<seconds>-<hex>)")
    return group / gen


def _exchange(a: Path, b: Path) -> bool:
    """Swap folders ``a`` and ``b`` in one atomic step (Linux ``renameat2`` with
    ``RENAME_EXCHANGE``); ``False``, with nothing changed, where the OS or the file system
    cannot."""
    import ctypes
    import errno

    try:
        rename = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError, TypeError):  # not glibc/Linux
        return False
    rename.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                       ctypes.c_uint]
    at_cwd, exchange = -100, 2
    if rename(at_cwd, os.fsencode(a), at_cwd, os.fsencode(b), exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV,
                errno.EPERM):
        return False  # e.g. NFS, older kernels, overlay layers, a seccomp filter: two renames
    raise OSError(code, os.strerror(code), str(b))


def _data_source(source: Mapping[str, Any]) -> dict[str, Any]:
    """The data part of a source record: dataset and options, without the extractor."""
    return {"dataset": source.get("dataset"), "options": source.get("options")}


# Dataset options that decide only whether damaged input is an error, never what a successful
# extraction stores: they are not part of a store's source (its identity).
NOT_SOURCE_OPTIONS = frozenset({"strict"})


def source_of(dataset: str, options: Mapping[str, Any], extractor: str,
              extractor_config: Mapping[str, Any]) -> dict[str, Any]:
    """A store's ``source`` record: the dataset plugin ``dataset`` with its ``options`` (the
    data root absolute; ``NOT_SOURCE_OPTIONS`` left out), the extractor and its config, as JSON
    values."""
    kept = {k: v for k, v in options.items() if k not in NOT_SOURCE_OPTIONS}
    return _jsonable({"dataset": dataset, "options": kept, "extractor": extractor,
                      "extractor_config": dict(extractor_config)})


def describe_source(source: Mapping[str, Any], other: Mapping[str, Any] | None = None) -> str:
    """``source`` in words: dataset and extractor names, with the options that differ from
    ``other`` (all of them when ``other`` is ``None``)."""
    def opts(key: str) -> str:
        mine, theirs = source.get(key) or {}, (other or {}).get(key) or {}
        shown = {k: v for k, v in mine.items() if other is None or theirs.get(k) != v}
        shown.update({k: None for k in theirs if k not in mine})
        return " (" + ", ".join(f"{k}={v}" for k, v in sorted(shown.items())) + ")" \
            if shown else ""

    return (f"dataset '{source.get('dataset')}'{opts('options')} with extractor "
            f"'{source.get('extractor')}'{opts('extractor_config')}")


def _rmdir_if_empty(directory: Path) -> None:
    try:
        directory.rmdir()
    except OSError:  # not empty (another writer) or already gone
        pass


def _tmp_name(name: str, tag: str) -> str:
    """``<name>.<host>.<pid>.<tag>``: lets ``_clean`` tell a dead writer's leftovers from a
    live one's (encoded names contain no dots)."""
    return f"{name}.{socket.gethostname()}.{os.getpid()}.{tag}"


def _group_attrs(directory: Path) -> dict[str, Any] | None:
    """The attributes in ``directory/zarr.json``, or ``None`` if it is not a readable group."""
    try:
        meta = json.loads((directory / "zarr.json").read_text())
    except (OSError, ValueError):
        return None
    attrs = meta.get("attributes") if isinstance(meta, dict) else None
    return attrs if isinstance(attrs, dict) else None


def _short(value: Any, limit: int = 120) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= limit else text[: limit - 3] + "..."
