"""Feature stores at fsspec URLs: ``file://`` (a local folder), ``s3://``, ``gs://``, ...

A store location is either a local ``pathlib.Path`` or a ``StoreURL``. ``store_location`` turns
what a user typed into one: a plain path or a ``file://`` URL is a local ``Path`` (the store then
keeps every local guarantee: OS locks, atomic directory renames); any other ``scheme://`` is a
``StoreURL`` reached through fsspec and the scheme's backend package (``s3fs`` for ``s3://``,
``gcsfs`` for ``gs://``, ...). A missing backend is a ``ConfigError`` naming the package.

``StoreURL`` offers the small part of ``pathlib.Path`` that feature stores use (``/``, ``name``,
``parent``, ``exists``, ``is_dir``, ``is_file``, ``iterdir``, ``read_text``, ``write_text``,
``stat().st_size``, ``unlink``, ``rmtree``), and ``str()`` is the URL, which Zarr opens
itself. It never has ``__fspath__``: no ``os`` function can take it for a local path.

Endpoint and credentials are the backend's own (for S3: ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL``, ``~/.aws/credentials``) or fsspec's
configuration (``FSSPEC_S3_ENDPOINT_URL=...``, ``FSSPEC_S3='{"key": ...}'``, or
``~/.config/fsspec/s3.json``), which applies to every file system fsspec makes, Zarr's
included. ``set_storage_options`` adds options in this process and exports them to the
processes it starts (``actrec extract --storage-option KEY=VALUE``).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from actrec.errors import ConfigError, DataError

__all__ = ["StoreURL", "is_url", "looks_like_mangled_url", "parse_storage_options",
           "precondition_failed", "set_storage_options", "store_location"]

_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://(.*)$")
_MANGLED = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:$")  # Path("s3://b/x").parts[0] == "s3:"


def is_url(text: object) -> bool:
    """Whether ``text`` (a string; paths and URLs objects answer by type) is ``scheme://...``."""
    if isinstance(text, StoreURL):
        return True
    return isinstance(text, str) and _URL.match(text) is not None


def looks_like_mangled_url(path: Path) -> bool:
    """Whether ``path`` is a URL that ``Path()`` squashed (``s3://b/x`` -> ``s3:/b/x``)."""
    parts = Path(path).parts
    return bool(parts) and _MANGLED.match(parts[0]) is not None


def store_location(where: str | os.PathLike | StoreURL) -> Path | StoreURL:
    """Where a store lives: a local ``Path`` for a path or a ``file://`` URL, else a
    ``StoreURL``. ``ConfigError`` for a ``file://`` URL naming another host or a path that is a
    URL squashed by ``Path``."""
    if isinstance(where, StoreURL):
        return where
    if isinstance(where, Path):
        if looks_like_mangled_url(where):
            raise ConfigError(f"{where}: looks like a URL that lost a '/' ({where.parts[0]}//...); "
                              f"pass the URL as text, e.g. {where.parts[0]}//bucket/store.zarr")
        return where
    text = os.fspath(where)
    match = _URL.match(text)
    if match is None:
        return store_location(Path(text).expanduser())  # refuses 's3:/bucket/...'
    scheme, rest = match.group(1).lower(), match.group(2)
    if scheme in ("file", "local"):
        host, slash, tail = rest.partition("/")
        if host not in ("", "localhost"):
            raise ConfigError(f"{text}: a file:// URL names a local path (file:///abs/path), "
                              f"not host {host!r}")
        from urllib.parse import unquote

        return Path("/" + unquote(tail) if slash else unquote(rest)).expanduser()
    return StoreURL(f"{scheme}://{rest.rstrip('/')}")


def set_storage_options(protocol: str, options: Mapping[str, Any]) -> None:
    """Use ``options`` for every ``protocol`` file system made from now on, in this process
    (fsspec's config) and in the processes it starts (the ``FSSPEC_<PROTOCOL>`` variable)."""
    if not options:
        return
    _import_fsspec(f"{protocol}://")
    import fsspec
    import fsspec.config

    conf = fsspec.config.conf.setdefault(protocol, {})
    conf.update(options)
    os.environ[f"FSSPEC_{protocol.upper()}"] = json.dumps(conf)
    # Instances are cached by their options: drop those made without the new ones.
    cls = fsspec.get_filesystem_class(protocol)
    clear = getattr(cls, "clear_instance_cache", None)
    if clear is not None:
        clear()


def parse_storage_options(pairs: Mapping[str, str]) -> dict[str, Any]:
    """``KEY=VALUE`` strings as Python values: JSON where the value parses as JSON
    (``true``, ``3``, ``{"a": 1}``), else the text itself."""
    out: dict[str, Any] = {}
    for key, value in pairs.items():
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


def _import_fsspec(url: str):
    try:
        import fsspec
    except ImportError:
        raise ConfigError(f"{url}: stores at URLs need fsspec and the backend for the URL's "
                          f"scheme: pip install 'actrec[remote]' (fsspec + s3fs), or fsspec and "
                          f"e.g. gcsfs for gs://") from None
    return fsspec


@dataclass(frozen=True)
class _Stat:
    st_size: int


@dataclass(frozen=True)
class StoreURL:
    """A location in an fsspec file system, by URL (``s3://bucket/path``). Picklable: the
    file system is made (from the URL and fsspec's configuration) where it is first used."""

    url: str

    def __post_init__(self) -> None:
        if not _URL.match(self.url):
            raise ConfigError(f"{self.url!r}: expected a URL scheme://...")

    # ------------------------------------------------------------------ names

    def __str__(self) -> str:
        return self.url

    def __truediv__(self, other: str) -> StoreURL:
        other = str(other).strip("/")
        return StoreURL(f"{self.url}/{other}") if other else self

    @property
    def protocol(self) -> str:
        return self.url.split("://", 1)[0]

    @property
    def name(self) -> str:
        return self.url.split("://", 1)[1].rsplit("/", 1)[-1]

    @property
    def stem(self) -> str:
        name = self.name
        return name.rsplit(".", 1)[0] if "." in name[1:] else name

    @property
    def suffix(self) -> str:
        name = self.name
        return "." + name.rsplit(".", 1)[1] if "." in name[1:] else ""

    @property
    def parent(self) -> StoreURL:
        scheme, rest = self.url.split("://", 1)
        head = rest.rsplit("/", 1)[0] if "/" in rest else rest
        return StoreURL(f"{scheme}://{head}")

    def relative_to(self, other: StoreURL) -> str:
        prefix = other.url.rstrip("/") + "/"
        if not self.url.startswith(prefix):
            raise ValueError(f"{self} is not under {other}")
        return self.url[len(prefix):]

    # ------------------------------------------------------------------ file system

    @property
    def fs(self):
        """The fsspec file system (``ConfigError`` naming the package when its backend is
        not installed)."""
        fs, _ = _filesystem(self.url)
        return fs

    @property
    def fs_path(self) -> str:
        """This location as the file system's own path (``bucket/key`` for S3)."""
        _, path = _filesystem(self.url)
        return path

    def _fresh(self) -> None:
        # Listings are cached per file system; other machines write this store.
        invalidate = getattr(self.fs, "invalidate_cache", None)
        if invalidate is not None:
            invalidate(self.fs_path)

    def _info(self) -> dict[str, Any] | None:
        """What is here (fsspec's ``info``), ``None`` when nothing is. Anything else (no
        connection, refused credentials) is a ``DataError`` saying the store cannot be
        reached: fsspec's ``exists``/``isfile`` would answer ``False``, and an unreachable
        store would read as a missing one."""
        self._fresh()
        try:
            return self.fs.info(self.fs_path)
        except FileNotFoundError:
            return None
        except Exception as exc:  # noqa: BLE001 - the backend's network/credential errors
            raise _unreachable(self, exc) from None

    def exists(self) -> bool:
        return self._info() is not None

    def is_dir(self) -> bool:
        info = self._info()
        return info is not None and info.get("type") == "directory"

    def is_file(self) -> bool:
        info = self._info()
        return info is not None and info.get("type", "file") == "file"

    def iterdir(self) -> Iterator[StoreURL]:
        self._fresh()
        try:
            names = self.fs.ls(self.fs_path, detail=False)
        except FileNotFoundError:
            return iter(())
        except Exception as exc:  # noqa: BLE001 - the backend's network/credential errors
            raise _unreachable(self, exc) from None
        base = self.fs_path.rstrip("/")
        out = []
        for entry in names:
            entry = str(entry).rstrip("/")
            if entry != base and entry.startswith(base + "/"):
                out.append(self / entry[len(base) + 1:])
        return iter(sorted(out, key=lambda u: u.url))

    def read_bytes(self) -> bytes:
        return bytes(self.fs.cat_file(self.fs_path))

    def read_text(self, encoding: str = "utf-8") -> str:
        return self.read_bytes().decode(encoding)

    def write_bytes(self, data: bytes) -> None:
        self.fs.pipe_file(self.fs_path, data)

    def write_text(self, text: str, encoding: str = "utf-8") -> None:
        self.write_bytes(text.encode(encoding))

    def create_exclusive(self, data: bytes) -> bool:
        """Write ``data`` here only if nothing is here, atomically (S3: a conditional
        ``If-None-Match: *`` PUT; other backends: their exclusive ``xb`` mode): ``True`` if
        this call created it, ``False`` if something was already there. ``ConfigError`` for a
        backend that cannot create exclusively."""
        try:
            with self.fs.open(self.fs_path, "xb") as f:
                f.write(data)
        except FileExistsError:
            return False
        except (ValueError, NotImplementedError) as exc:
            raise ConfigError(f"{self}: the {self.protocol} backend cannot create a file only if "
                              f"absent ({exc}); several writers cannot share a store there") \
                from None
        return True

    def version(self) -> str | None:
        """What a conditional write (``write_if``) compares: the object's ETag (S3), or the
        backend's closest equivalent; ``None`` when nothing is here. ``DataError`` when the
        store cannot be reached."""
        info = self._info()
        if info is None:
            return None
        for key in ("ETag", "etag", "generation"):
            if info.get(key):
                return str(info[key])
        stamp = info.get("mtime") or info.get("LastModified") or info.get("created")
        return f"{info.get('size')}@{stamp}"

    def write_if(self, data: bytes, version: str | None) -> bool:
        """Write ``data`` here only if the object is still at ``version`` (``None``: only if
        nothing is here): ``True`` if written, ``False`` if it changed meanwhile. S3: one
        conditional PUT (``If-Match`` / ``If-None-Match: *``), a compare-and-swap on the
        server. Other backends: an exclusive create for ``None``, else the version checked
        and then written (two requests: a writer between them is not detected)."""
        fs = self.fs
        if hasattr(fs, "call_s3") and hasattr(fs, "split_path"):
            bucket, key, _ = fs.split_path(self.fs_path)
            condition = {"IfNoneMatch": "*"} if version is None else {"IfMatch": version}
            try:
                fs.call_s3("put_object", Bucket=bucket, Key=key, Body=data, **condition)
            except OSError as exc:
                if isinstance(exc, FileExistsError) or precondition_failed(exc) or \
                        _error_code(exc) == "NoSuchKey":  # If-Match on an object deleted since
                    return False
                raise
            finally:
                self._fresh()
            return True
        if version is None:
            return self.create_exclusive(data)
        if self.version() != version:
            return False
        self.write_bytes(data)
        return True

    def stat(self) -> _Stat:
        try:
            info = self.fs.info(self.fs_path)
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise FileNotFoundError(str(exc)) from None
        return _Stat(int(info.get("size") or 0))

    def listing(self) -> dict[str, dict]:
        """Every file below this location (relative key -> the backend's info: size, times,
        ...), from one listing."""
        self._fresh()
        base = self.fs_path.rstrip("/") + "/"
        try:
            found = self.fs.find(self.fs_path, detail=True)
        except FileNotFoundError:
            return {}
        return {name[len(base):]: info for name, info in found.items()
                if name.startswith(base) and info.get("type", "file") == "file"}

    def sizes(self) -> dict[str, int]:
        """Every file below this location (relative key -> bytes), from one listing."""
        return {key: int(info.get("size") or 0) for key, info in self.listing().items()}

    def unlink(self, missing_ok: bool = False) -> None:
        try:
            self.fs.rm_file(self.fs_path)
        except FileNotFoundError:
            if not missing_ok:
                raise

    def rmtree(self) -> None:
        """Remove everything below this location (nothing if there is nothing)."""
        self._fresh()
        try:
            self.fs.rm(self.fs_path, recursive=True)
        except FileNotFoundError:
            pass

    def mkdir(self, parents: bool = False, exist_ok: bool = False) -> None:
        """Object stores have no folders: nothing to make (kept for ``Path``'s interface)."""


def precondition_failed(exc: BaseException) -> bool:
    """Whether an S3 error (as s3fs raises it) is a 412: a condition (``If-Match``,
    ``If-None-Match``) did not hold."""
    return _error_code(exc) in ("PreconditionFailed", "ConditionalRequestConflict") or \
        "pre-condition" in str(exc)


def _error_code(exc: BaseException) -> str | None:
    """The S3 error code (``NoSuchKey``, ...) behind an error s3fs raised, if any."""
    cause = exc.__cause__ or exc.__context__
    return (getattr(cause, "response", None) or {}).get("Error", {}).get("Code")


def _unreachable(where: StoreURL, exc: BaseException) -> DataError:
    """The error for a store the backend cannot reach (network, endpoint, credentials)."""
    return DataError(f"{where}: cannot reach the store ({type(exc).__name__}: {exc}); check "
                     f"the endpoint and credentials (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, "
                     f"--storage-option)" if where.protocol == "s3" else
                     f"{where}: cannot reach the store ({type(exc).__name__}: {exc})")


def _filesystem(url: str):
    """``(fs, path)`` for ``url``; ``ConfigError`` naming the package for a missing backend,
    ``DataError`` when the backend cannot be set up (bad options)."""
    fsspec = _import_fsspec(url)
    protocol = url.split("://", 1)[0]
    try:
        return fsspec.core.url_to_fs(url)
    except ImportError as exc:
        from fsspec.registry import known_implementations

        known = known_implementations.get(protocol, {})
        package = str(known.get("class", "")).split(".", 1)[0] or None
        hint = f"pip install {package}" if package else str(known.get("err") or exc)
        raise ConfigError(f"{url}: the fsspec backend for {protocol}:// is not installed "
                          f"({hint})") from None
    except ValueError as exc:
        if "Protocol not known" in str(exc):
            raise ConfigError(f"{url}: fsspec knows no file system for {protocol}://") from None
        raise DataError(f"{url}: cannot reach the store: {exc}") from None
    except TypeError as exc:  # an option the backend does not take
        raise ConfigError(f"{url}: storage options the {protocol} backend refuses: {exc}") \
            from None
