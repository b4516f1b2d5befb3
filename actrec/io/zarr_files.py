"""A video's Zarr v3 arrays and group written straight to files, byte for byte what zarr's
own calls write (``zarr.create_array(data=...)`` with every chunk written, then
``zarr.Group.from_store``; ``tests/test_store_write_format.py`` compares the two).

Why: zarr runs every write through its asynchronous machinery (an event loop thread, a
worker thread per codec call and per file), about 8 ms of CPU time for a video of a few
hundred frames whose actual work (compressing ~100 KB, a checksum, a few files) takes well
under one. Extraction writes one video every few hundred frames on two cores shared with the
decoder, so that overhead was a fifth of the decoding's CPU time.

What zarr decides stays zarr's: the array metadata is zarr's own, made once per kind of array
(``zarr.create_array`` on an in-memory store) and serialised as zarr serialises it, with the
shape and chunk shape of each video; chunks go through the codecs that metadata names. A
codec chain other than ``bytes`` (little endian), ``blosc``, ``crc32c`` is not written here
(``ArrayFiles.for_array`` returns ``None``: the caller uses zarr).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

__all__ = ["ArrayFiles", "write_group"]

_ZARR_JSON = "zarr.json"


def _json_bytes(document: dict[str, Any]) -> bytes:
    """``document`` as zarr writes a metadata document (its indent, NaN allowed)."""
    import zarr

    return json.dumps(document, allow_nan=True, indent=zarr.config.get("json_indent")).encode()


class ArrayFiles:
    """Writes arrays of one dtype, one trailing shape and one codec chain (see the module
    docstring). Build with ``for_array``."""

    _cache: ClassVar[dict[tuple, ArrayFiles | None]] = {}

    def __init__(self, document: dict[str, Any], dtype: np.dtype, compress, fill) -> None:
        self._document = document  # zarr's metadata of a template array, as a JSON document
        self._dtype = dtype
        self._compress = compress  # bytes -> bytes: the blosc codec
        self._fill = fill

    @classmethod
    def for_array(cls, dtype: str, trailing: tuple[int, ...], compressors: list) -> ArrayFiles | None:
        """The writer of ``dtype`` arrays of shape ``[T, *trailing]`` chunked along T with
        ``compressors`` (zarr codec objects), or ``None`` when their chain is not one this
        module writes (the caller then uses zarr)."""
        key = (dtype, trailing, repr(compressors))  # codecs are dataclasses: repr says all
        if key not in cls._cache:
            cls._cache[key] = cls._make(dtype, trailing, compressors)
        return cls._cache[key]

    @classmethod
    def _make(cls, dtype: str, trailing: tuple[int, ...], compressors: list) -> ArrayFiles | None:
        import zarr
        from zarr.storage import MemoryStore

        if any(n <= 0 for n in trailing):
            return None
        template = zarr.create_array(store=MemoryStore(), shape=(1, *trailing), dtype=dtype,
                                     chunks=(1, *trailing), compressors=compressors,
                                     config={"write_empty_chunks": True})
        document = template.metadata.to_dict()
        codecs = document.get("codecs") or []
        names = [c.get("name") for c in codecs]
        if names != ["bytes", "blosc", "crc32c"] or \
                codecs[0].get("configuration", {}).get("endian") != "little" or \
                document.get("chunk_key_encoding") != {"name": "default",
                                                       "configuration": {"separator": "/"}} or \
                document.get("storage_transformers") or \
                document.get("chunk_grid", {}).get("name") != "regular":
            return None
        from numcodecs import Blosc

        blosc = codecs[1]["configuration"]
        shuffles = {"noshuffle": Blosc.NOSHUFFLE, "shuffle": Blosc.SHUFFLE,
                    "bitshuffle": Blosc.BITSHUFFLE}
        if blosc.get("shuffle") not in shuffles:
            return None
        codec = Blosc(cname=blosc["cname"], clevel=blosc["clevel"],
                      shuffle=shuffles[blosc["shuffle"]], blocksize=blosc.get("blocksize", 0),
                      typesize=blosc["typesize"])
        np_dtype = np.dtype(dtype).newbyteorder("<")
        fill = np.asarray(template.metadata.fill_value, dtype=np_dtype)
        return cls(document, np_dtype, codec.encode, fill)

    def write(self, folder: Path, values: np.ndarray, chunk_frames: int) -> None:
        """Write ``values`` ``[T, *trailing]`` as a Zarr array in the new folder ``folder``,
        chunked by ``chunk_frames`` along T (and whole along the other axes), every chunk
        written (also those holding only the fill value), the last one padded with it."""
        import google_crc32c

        values = np.ascontiguousarray(values, dtype=self._dtype)
        grid = {"name": "regular",
                "configuration": {"chunk_shape": [chunk_frames, *values.shape[1:]]}}
        document = {**self._document, "shape": list(values.shape), "chunk_grid": grid}
        folder.mkdir()
        (folder / _ZARR_JSON).write_bytes(_json_bytes(document))
        count = math.ceil(values.shape[0] / chunk_frames)
        if count == 0:
            return
        tail = ("0",) * (values.ndim - 1)  # one chunk along each other axis
        chunks = folder / "c"
        chunks.mkdir()
        for i in range(count):
            part = values[i * chunk_frames:(i + 1) * chunk_frames]
            if part.shape[0] < chunk_frames:  # an edge chunk is stored whole, padded
                padded = np.empty((chunk_frames, *values.shape[1:]), self._dtype)
                padded[:part.shape[0]] = part
                padded[part.shape[0]:] = self._fill
                part = padded
            packed = self._compress(part)  # C order, little endian: the bytes codec
            crc = int(google_crc32c.value(packed)).to_bytes(4, "little")
            path = chunks.joinpath(str(i), *tail)
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "wb") as f:
                f.write(packed)
                f.write(crc)


_group_document: dict[str, Any] | None = None


def write_group(folder: Path, attributes: dict[str, Any]) -> None:
    """Write the metadata of a Zarr v3 group with ``attributes`` (JSON values) into
    ``folder`` (which exists), as ``zarr.Group.from_store`` writes it."""
    global _group_document
    if _group_document is None:
        # zarr's document of a group, made once (its to_dict deep-copies the attributes:
        # slow for a video's records)
        from zarr.core.group import GroupMetadata

        _group_document = GroupMetadata(attributes={}).to_dict()
    document = {**_group_document, "attributes": attributes}
    (folder / _ZARR_JSON).write_bytes(_json_bytes(document))
