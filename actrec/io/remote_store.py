"""A feature store at a URL (``s3://bucket/store.zarr``, ...): ``RemoteFeatureStore``.

Same layout and attributes as a local store (``actrec.io.features``), so a store copied
between a folder and a bucket reads the same. Object stores have no directory rename and no
OS locks, so three things are done differently:

* Committing a video: its arrays are written in place under ``videos/<name>/`` and the group's
  ``zarr.json`` (with ``complete`` and the ``integrity`` record) is written last, in one PUT,
  which is atomic: readers list only groups whose ``zarr.json`` says complete, so they never
  see half a video. Replacing a video first deletes its ``zarr.json`` (the old copy stops
  being listed), then its chunks. A writer that dies leaves chunks without a ``zarr.json``:
  invisible, and removed by the next write of that video.
* Creating the store: its root ``zarr.json`` is created with a conditional write (S3
  ``If-None-Match: *``), so of several machines starting at once exactly one creates it and
  the others open it and check it like a local reopen.
* Writers of one video are kept apart by claims (``actrec.extract_claims``), not by locks; a
  writer confirms its claim right before it deletes an old copy and before it commits
  (``confirm_held``), so one whose claim was taken over writes nothing.

Streams other than the store's own are local-only for now (``ConfigError`` says so).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

import numpy as np

from actrec.errors import ActrecError, ConfigError, DataError
from actrec.io.features import _STREAMS, _VIDEOS, FeatureStore
from actrec.io.remote import StoreURL

__all__ = ["RemoteFeatureStore"]


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
            if url.is_dir() and any(True for _ in url.iterdir()):
                raise DataError(f"{url}: exists and is not a feature store (no zarr.json); "
                                f"refusing to write into it")
            try:
                made = meta.create_exclusive(_group_json(wanted))
                if made:
                    (url / _VIDEOS / "zarr.json").write_bytes(_group_json({}))
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
        except ActrecError:
            raise
        except Exception as exc:  # noqa: BLE001 - a backend's network or credentials error
            raise DataError(f"feature store {path}: cannot reach it ({type(exc).__name__}: "
                            f"{exc})") from None

    # ------------------------------------------------------------------ listing

    def videos(self) -> list[str]:
        """Ids of the completely written videos, sorted (one listing, one batched read)."""
        metas = [entry / "zarr.json" for entry in (self.path / _VIDEOS).iterdir()]
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
            attrs = _attributes(raw)
            if attrs is not None and attrs.get("complete") is True and "id" in attrs:
                ids.append(str(attrs["id"]))
        return sorted(ids)

    def streams(self) -> list[str]:
        if (self.path / _STREAMS).is_dir():
            return super().streams()
        return [self.stream_name]

    # ------------------------------------------------------------------ writing

    def _commit_video(self, video_id: str, attrs: dict[str, Any], stored: np.ndarray,
                      labels: np.ndarray) -> None:
        """Write the arrays in place, then the group's ``zarr.json`` (the commit)."""
        import zarr

        from actrec.extract_claims import confirm_held
        from actrec.io.integrity import array_record

        target = self._dir(video_id)
        confirm_held(self.path, video_id)  # a holder presumed dead must not delete its taker's
        self._hide_and_clear(target)
        chunk = int(self._attrs.get("chunk_frames", 256))
        t = max(1, stored.shape[0])
        every = {"write_empty_chunks": True}  # every chunk file must exist (integrity)
        try:
            for name, values, dtype, chunks in (
                    ("features", stored, self._attrs["dtype"], (min(chunk, t), stored.shape[1])),
                    ("labels", labels, "int64", (min(chunk, t),))):
                array = zarr.create_array(store=str(target / name), shape=values.shape,
                                          dtype=dtype, chunks=chunks, compressors=self._codecs(),
                                          config=every, overwrite=True)
                array[...] = values
            integrity = {
                "features": array_record(target / "features", stored, self._attrs["dtype"],
                                         min(chunk, t)),
                "labels": array_record(target / "labels", labels, "int64", min(chunk, t)),
            }
            confirm_held(self.path, video_id)  # nor commit over it
            (target / "zarr.json").write_bytes(
                _group_json({**attrs, "integrity": integrity, "complete": True}))
        except OSError as exc:
            raise OSError(exc.errno, f"{target}: {exc.strerror or exc}") from None

    def remove(self, video_id: str) -> None:
        """Delete one video (no error if it is not there): unlisted first, then its chunks."""
        from actrec.extract_claims import confirm_held

        confirm_held(self.path, video_id)
        self._hide_and_clear(self._dir(video_id))

    @staticmethod
    def _hide_and_clear(target: StoreURL) -> None:
        (target / "zarr.json").unlink(missing_ok=True)
        target.rmtree()

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        """No OS locks at a URL: writers of one video are kept apart by claims."""
        yield

    def _clean(self) -> None:
        """Nothing to do: unfinished writes are invisible, and replaced by the next write."""


def _attributes(raw: bytes) -> dict[str, Any] | None:
    try:
        meta = json.loads(raw)
    except ValueError:
        return None
    attrs = meta.get("attributes") if isinstance(meta, dict) else None
    return attrs if isinstance(attrs, dict) else None
