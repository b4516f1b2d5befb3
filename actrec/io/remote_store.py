"""A feature store at a URL (``s3://bucket/store.zarr``, ...): ``RemoteFeatureStore``.

Same layout and attributes as a local store (``actrec.io.features``), so a store copied
between a folder and a bucket reads the same. Object stores have no directory rename and no
OS locks, so three things are done differently:

* Committing a video: each write of a video is a new generation: its arrays are written under
  ``videos/<name>/gen-<seconds>-<random>/`` (a prefix no other write uses), then the group's
  ``zarr.json`` (``complete``, the ``integrity`` record of those chunks, and ``generation``
  naming them) is written in one PUT, conditional on the ``zarr.json`` the writer found when
  it started (S3 ``If-Match``, or ``If-None-Match: *`` for a new video): a compare-and-swap.
  Only then is the replaced generation deleted. So readers (who read the generation the
  commit names) never see half a video or chunks of two writes, the old copy stays whole
  until the new one is committed (a crash at any step loses nothing), and of two writers of
  one video (one silent past its claim's lease) the one that commits second is refused
  (``ClaimLost``) and deletes its own generation. A writer that dies leaves an uncommitted
  generation: invisible, and removed by a later write of that video once it is a day old
  (younger ones may be another writer's, still running), or store-wide by ``actrec check
  STORE --sweep`` (``actrec.io.leftovers``). Other backends than S3 check the
  ``zarr.json`` and then write it, which a writer between the two is not kept from.
* Creating the store: its root ``zarr.json`` is created with a conditional write (S3
  ``If-None-Match: *``), so of several machines starting at once exactly one creates it and
  the others open it and check it like a local reopen.
* Writers of one video are kept apart by claims (``actrec.extract_claims``), not by locks; a
  writer confirms its claim before it starts and before it commits (``confirm_held``), so
  one whose claim was taken over writes nothing; the conditional commit covers a pause
  between that last check and the commit.

Streams other than the store's own are local-only for now (``ConfigError`` says so).
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np

from actrec.errors import ActrecError, ConfigError, DataError
from actrec.io.features import (
    GENERATION,
    STALE_SECONDS,
    STREAMS_GROUP,
    VIDEOS_GROUP,
    FeatureStore,
)
from actrec.io.remote import StoreURL, store_location

__all__ = ["RemoteFeatureStore", "group_attributes", "missing_bucket"]


def _group_json(attributes: dict[str, Any]) -> bytes:
    """A Zarr v3 group's ``zarr.json`` as Zarr writes it."""
    return json.dumps({"attributes": attributes, "zarr_format": 3, "node_type": "group"},
                      indent=2).encode("utf-8")


class RemoteFeatureStore(FeatureStore):
    """A ``FeatureStore`` whose ``path`` is a ``StoreURL`` (see the module docstring)."""

    path: StoreURL

    @classmethod
    def create_or_reopen(cls, url: StoreURL, wanted: dict[str, Any],
                         stream: str | None = None) -> RemoteFeatureStore:
        """The store at ``url``, created with attributes ``wanted`` if absent (exactly one of
        several concurrent creators creates it), else opened and checked against ``wanted``
        as ``FeatureStore.open_or_create`` checks a local one."""
        meta = url / "zarr.json"
        if not meta.is_file():  # DataError when the store cannot be reached
            # A concurrent creator writes zarr.json first: anything listed here without a
            # zarr.json after the listing is not a store being made (a creator that made it
            # between the first look and the listing is opened below).
            if url.is_dir() and any(True for _ in url.iterdir()) and not meta.is_file():
                raise DataError(f"{url}: exists and is not a feature store (no zarr.json); "
                                f"refusing to write into it")
            try:
                made = meta.create_exclusive(_group_json(wanted))
                if made:
                    (url / VIDEOS_GROUP / "zarr.json").write_bytes(_group_json({}))
            except OSError as exc:  # no such bucket, no write permission, ...
                raise DataError(f"feature store {url}: cannot create it ({type(exc).__name__}: "
                                f"{exc})") from None
            if made:
                return cls(url, dict(wanted))
        existing = cls.open(url)
        if stream is not None and stream != existing.stream_name:
            raise ConfigError(f"feature store {url}: streams other than the store's own "
                              f"('{existing.stream_name}') are only supported in local stores "
                              f"so far; extract stream '{stream}' into a local store")
        return cls._reopen(url, wanted)

    @classmethod
    def open(cls, path) -> RemoteFeatureStore:
        """Open the store at URL ``path`` for reading; ``DataError`` if it is missing, not a
        store, or cannot be reached (naming the backend's error)."""
        try:
            return super().open(path)
        except DataError as exc:
            raise missing_bucket(path) or exc from None
        except ActrecError:
            raise
        except Exception as exc:  # noqa: BLE001 - a backend's network or credentials error
            raise DataError(f"feature store {path}: cannot reach it ({type(exc).__name__}: "
                            f"{exc})") from None

    # ------------------------------------------------------------------ listing

    def videos(self) -> list[str]:
        """Ids of the completely written videos, sorted (one listing, one batched read)."""
        metas = [entry / "zarr.json" for entry in (self.path / VIDEOS_GROUP).iterdir()]
        if not metas:
            return []
        found = self.path.fs.cat([m.fs_path for m in metas], on_error="return")
        ids = []
        for key, raw in found.items():
            if isinstance(raw, FileNotFoundError):
                continue  # a group whose writer has not committed it (or died): not listed
            if isinstance(raw, BaseException):  # leaving it out would drop a video unseen
                raise DataError(f"feature store {self.path}: cannot read {key} "
                                f"({type(raw).__name__}: {raw})")
            attrs = group_attributes(raw)
            if attrs is not None and attrs.get("complete") is True and "id" in attrs:
                ids.append(str(attrs["id"]))
        return sorted(ids)

    def streams(self) -> list[str]:
        if (self.path / STREAMS_GROUP).is_dir():
            return super().streams()
        return [self.stream_name]

    # ------------------------------------------------------------------ writing

    def _commit_video(self, video_id: str, attrs: dict[str, Any], stored: np.ndarray,
                      labels: np.ndarray) -> None:
        """Write the arrays as a new generation, commit it by a conditional write of the
        group's ``zarr.json``, then delete the generation it replaced (module docstring).
        ``ClaimLost`` (nothing of this write left) when the claim was taken over or another
        writer committed the video meanwhile."""
        import zarr

        from actrec.extract_claims import ClaimLost, confirm_held
        from actrec.io.integrity import array_record

        target = self._dir(video_id)
        meta = target / "zarr.json"
        confirm_held(self.path, video_id)  # a holder presumed dead writes nothing more
        try:
            found = meta.version()  # the commit must replace exactly this
            old = group_attributes(meta.read_bytes()) if found is not None else None
        except FileNotFoundError:  # removed between the two requests
            found, old = None, None
        generation = f"gen-{int(time.time())}-{uuid.uuid4().hex[:12]}"
        where = target / generation
        chunk = int(self._attrs.get("chunk_frames", 256))
        t = max(1, stored.shape[0])
        every = {"write_empty_chunks": True}  # every chunk file must exist (integrity)
        committed = False
        sent = False  # the commit request went out: it may have landed even if this call
        # did not return (an interrupt, a lost connection), so the generation must stay
        try:
            for name, values, dtype, chunks in (
                    ("features", stored, self._attrs["dtype"], (min(chunk, t), stored.shape[1])),
                    ("labels", labels, "int64", (min(chunk, t),))):
                array = zarr.create_array(store=str(where / name), shape=values.shape,
                                          dtype=dtype, chunks=chunks, compressors=self._codecs(),
                                          config=every)
                array[...] = values
            integrity = {
                "features": array_record(where / "features", stored, self._attrs["dtype"],
                                         min(chunk, t)),
                "labels": array_record(where / "labels", labels, "int64", min(chunk, t)),
            }
            confirm_held(self.path, video_id)
            sent = True
            committed = meta.write_if(_group_json(
                {**attrs, "integrity": integrity, "complete": True, "generation": generation}),
                found)
            if not committed:
                sent = False  # refused: nothing refers to this generation
                raise ClaimLost(f"feature store {self.path}: video {video_id!r} was committed "
                                f"by another process while this one wrote it (a new copy, "
                                f"or `actrec check --sweep` removing this unfinished write); "
                                f"keeping that copy, not writing this one")
        except OSError as exc:
            raise OSError(exc.errno, f"{target}: {exc.strerror or exc}") from None
        finally:
            if not committed and not sent:  # nothing refers to this generation: it must
                with contextlib.suppress(Exception):  # not linger (one sent and unanswered
                    where.rmtree()  # is left: invisible if uncommitted, swept a day later)
        self._drop_replaced(target, generation, old)

    @staticmethod
    def _drop_replaced(target: StoreURL, current: str | None,
                       old: dict[str, Any] | None) -> None:
        """After a commit of generation ``current`` (or a removal, ``None``): delete the copy
        it replaced (the
        generation ``old`` named, or the arrays of a video written in place, as a store made
        by a local copy or an older actrec holds them), and uncommitted generations older
        than a day (a dead writer's). Younger ones are left: another writer may be filling
        one (its conditional commit will fail, and it deletes its own)."""
        replaced = (old or {}).get("generation")
        now = time.time()
        with contextlib.suppress(Exception):  # garbage left now is removed by a later write
            for entry in target.iterdir():
                name = entry.name
                if name == current or name == "zarr.json":
                    continue
                in_place = replaced is None and name in ("features", "labels")
                dead = GENERATION.fullmatch(name) is not None and \
                    now - int(name.split("-")[1]) > STALE_SECONDS
                if name == replaced or in_place or dead:
                    entry.rmtree()

    def remove(self, video_id: str) -> None:
        """Delete one video (no error if it is not there): unlisted first, then its chunks.
        A generation another writer is filling is left to it (its commit then fails, or
        commits a whole video of its own)."""
        from actrec.extract_claims import confirm_held

        confirm_held(self.path, video_id)
        target = self._dir(video_id)
        meta = target / "zarr.json"
        try:
            old = group_attributes(meta.read_bytes())
        except FileNotFoundError:
            old = None
        meta.unlink(missing_ok=True)
        self._drop_replaced(target, None, old)

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        """No OS locks at a URL: writers of one video are kept apart by claims."""
        yield

    def _clean(self) -> None:
        """Nothing to do: unfinished writes are invisible, and removed by a later write of
        their video once a day old (``_drop_replaced``) or by ``actrec check --sweep``."""


def missing_bucket(path: Any) -> DataError | None:
    """A ``DataError`` naming the bucket (the URL's first component) when the store at URL
    ``path`` is missing because its bucket is: a mistyped bucket or an endpoint that holds
    other buckets is otherwise told "no feature store here". None when the bucket exists or
    cannot be asked about."""
    url = store_location(path)
    bucket = url.fs_path.strip("/").split("/")[0]
    if not isinstance(url, StoreURL) or not bucket or bucket == url.fs_path.strip("/"):
        return None
    try:
        if StoreURL(f"{url.protocol}://{bucket}").exists():
            return None
    except DataError:
        return None
    where = (" (AWS_ENDPOINT_URL, --storage-option endpoint_url=...)"
             if url.protocol == "s3" else " (--storage-option)")
    return DataError(f"{url}: no feature store here: the bucket {bucket!r} does not exist "
                     f"(check the URL, or the endpoint the store is reached at{where})")


def group_attributes(raw: bytes) -> dict[str, Any] | None:
    """The ``attributes`` of a Zarr group's ``zarr.json`` bytes ``raw``; ``None`` when they
    are not JSON or hold no attributes object."""
    try:
        meta = json.loads(raw)
    except ValueError:
        return None
    attrs = meta.get("attributes") if isinstance(meta, dict) else None
    return attrs if isinstance(attrs, dict) else None
