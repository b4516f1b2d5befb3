"""Several streams of one feature store read as one (early fusion): ``StreamConcat``, made by
``FeatureStore.select``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from actrec.errors import DataError

if TYPE_CHECKING:  # pragma: no cover
    from actrec.io.features import FeatureStore

__all__ = ["StreamConcat"]


class StreamConcat:
    """Several streams of one store read as one: each video's features are the streams'
    features side by side (in the order of ``names``), for early fusion. Reads like a
    ``FeatureStore`` (``videos``, ``has``, ``read``, ``read_window``, ``video_attrs``, ``dim``,
    ``attrs``, ...); a video counts as stored when every stream has it, and one whose streams
    differ in frame count or labels is refused (``DataError`` naming the streams)."""

    def __init__(self, path: Path, names: Sequence[str], stores: Sequence[FeatureStore]) -> None:
        from actrec.io.remote import StoreURL

        self.path = path if isinstance(path, StoreURL) else Path(path)  # a store URL stays one
        self.names = tuple(names)
        self.stores = tuple(stores)
        first = self.stores[0]
        for name, store in zip(self.names[1:], self.stores[1:]):
            if store.classes != first.classes:
                raise DataError(f"feature store {self.path}: streams '{self.names[0]}' and "
                                f"'{name}' have different classes")

    # -------------------------------------------------------------- what the streams share

    @property
    def stream_name(self) -> str:
        return "+".join(self.names)

    def streams(self) -> list[str]:
        return list(self.names)

    @property
    def classes(self) -> list[str]:
        return self.stores[0].classes

    @property
    def splits(self) -> dict[str, dict[str, list[str]]]:
        return self.stores[0].splits

    @property
    def background(self) -> tuple[int, ...]:
        return self.stores[0].background

    @property
    def attrs(self) -> dict[str, Any]:
        """The first stream's attributes, with extractor, config and lookahead of them all:
        ``lookahead`` is the largest of the streams' (what the concatenation looks ahead)."""
        attrs = self.stores[0].attrs
        each = [s.attrs for s in self.stores]
        lookaheads = [int(a.get("lookahead") or 0) for a in each]
        attrs.update({
            "stream": self.stream_name,
            "streams": {n: {"extractor": a.get("extractor"),
                            "extractor_config": a.get("extractor_config"),
                            "lookahead": a.get("lookahead")} for n, a in zip(self.names, each)},
            "extractor": "+".join(str(a.get("extractor")) for a in each),
            "extractor_config": {n: a.get("extractor_config") for n, a in zip(self.names, each)},
            "lookahead": -1 if min(lookaheads) < 0 else max(lookaheads),
            "causal": all(a.get("causal") is not False for a in each) and max(lookaheads) == 0,
        })
        return attrs

    @property
    def imported(self) -> bool:
        """Whether every stream was imported (``FeatureStore.imported``)."""
        return all(s.imported for s in self.stores)

    @property
    def source(self) -> dict[str, Any] | None:
        sources = [s.source for s in self.stores]
        if any(src is None for src in sources):
            return None
        return {"streams": dict(zip(self.names, sources))}

    @property
    def identity(self) -> str:
        import hashlib

        text = json.dumps([[n, s.identity] for n, s in zip(self.names, self.stores)])
        return hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]

    @property
    def dim(self) -> int | None:
        dims = [s.dim for s in self.stores]
        return None if any(d is None for d in dims) else sum(dims)

    # -------------------------------------------------------------- videos

    def videos(self) -> list[str]:
        common = set(self.stores[0].videos())
        for store in self.stores[1:]:
            common &= set(store.videos())
        return sorted(common)

    def has(self, video_id: str) -> bool:
        return all(s.has(video_id) for s in self.stores)

    def video_attrs(self, video_id: str) -> dict[str, Any]:
        """The first stream's attributes of the video, with ``integrity`` holding every
        stream's records (keys ``<stream>/<array>``); ``DataError`` when the streams differ in
        frame count."""
        each = [s.video_attrs(video_id) for s in self.stores]
        self._same_frames(video_id, [int(a["num_frames"]) for a in each])
        attrs = dict(each[0])
        attrs["integrity"] = {f"{n}/{k}": rec for n, a in zip(self.names, each)
                              for k, rec in (a.get("integrity") or {}).items()}
        attrs["dim"] = sum(int(a["dim"]) for a in each)
        return attrs

    def num_frames(self, video_id: str) -> int:
        return int(self.video_attrs(video_id)["num_frames"])

    def damage(self, video_id: str, frames: tuple[int, int] | None = None) -> list[str]:
        return [f"stream '{n}': {p}" for n, s in zip(self.names, self.stores)
                for p in s.damage(video_id, frames)]

    def read(self, video_id: str) -> tuple[np.ndarray, np.ndarray]:
        """Features float32 ``[T, D_1 + D_2 + ...]`` and labels int64 ``[T]``."""
        return self.read_window(video_id, 0, self.num_frames(video_id))

    def read_window(self, video_id: str, t0: int, length: int) -> tuple[np.ndarray, np.ndarray]:
        parts = [s.read_window(video_id, t0, length) for s in self.stores]
        self._same_frames(video_id, [p[0].shape[0] for p in parts])
        labels = parts[0][1]
        for name, (_, other) in zip(self.names[1:], parts[1:]):
            if not np.array_equal(other, labels):
                raise DataError(f"feature store {self.path}: streams '{self.names[0]}' and "
                                f"'{name}' hold different labels for video {video_id!r}; "
                                f"extract both from the same dataset and label files")
        return np.concatenate([p[0] for p in parts], axis=1), labels

    def _same_frames(self, video_id: str, counts: Sequence[int]) -> None:
        if len(set(counts)) > 1:
            shown = ", ".join(f"'{n}' {c}" for n, c in zip(self.names, counts))
            raise DataError(f"feature store {self.path}: the streams of video {video_id!r} "
                            f"have different frame counts ({shown}); re-extract the stream "
                            f"that is wrong")
