"""Helpers shared by the dataset plugins: finding the data root, splits by participant, split
lists, and checking video ids. Private to ``actrec_plugins.datasets``."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from actrec.errors import DataError
from actrec.plugin_api import Split


def env_var(name: str) -> str:
    """The environment variable that overrides a dataset's root: ``ACTREC_DATA_<NAME>``."""
    return "ACTREC_DATA_" + name.upper().replace("-", "_")


def resolve_root(name: str, root: Path | None) -> Path:
    """``root`` if given, else the workspace's folder for ``name``; ``DataError`` naming the
    path and the environment variable when the folder does not exist."""
    if root is None:
        try:
            from actrec.workspace import data_root
        except ImportError:  # workspace module not there: the environment variable alone
            value = os.environ.get(env_var(name))
            if not value:
                raise DataError(
                    f"no data root for dataset '{name}': pass --root or set {env_var(name)}"
                ) from None
            root = Path(value)
        else:
            root = Path(data_root(name))
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(
            f"data root for dataset '{name}' not found: {root} (pass --root or set "
            f"{env_var(name)})"
        )
    return root


def person_splits(participants: Mapping[str, str], k: int = 4) -> dict[str, Split]:
    """``k`` leave-person-out splits: the sorted participants cut into ``k`` contiguous
    blocks of near-equal size (the first blocks one larger); split ``i`` tests on block ``i``.

    Deterministic, and the same rule as Breakfast's official splits (P03-P15, P16-P28, ...).
    """
    people = sorted(set(participants.values()))
    if len(people) < k:
        raise DataError(f"{len(people)} participant(s) cannot make {k} leave-person-out splits")
    size, extra = divmod(len(people), k)
    splits, at = {}, 0
    for i in range(k):
        block = set(people[at: at + size + (1 if i < extra else 0)])
        at += size + (1 if i < extra else 0)
        test = tuple(sorted(v for v, p in participants.items() if p in block))
        train = tuple(sorted(v for v, p in participants.items() if p not in block))
        splits[str(i + 1)] = Split(str(i + 1), train, test)
    return splits


def filter_split(name: str, train: Sequence[str], test: Sequence[str], known: Iterable[str],
                 repairs: dict[str, int]) -> Split:
    """A split restricted to the videos that have annotations; entries without one are
    dropped and counted under ``"split entries without annotations (dropped)"``."""
    have = set(known)
    kept_train = tuple(v for v in train if v in have)
    kept_test = tuple(v for v in test if v in have)
    dropped = len(train) + len(test) - len(kept_train) - len(kept_test)
    if dropped:
        key = "split entries without annotations (dropped)"
        repairs[key] = repairs.get(key, 0) + dropped
    return Split(name, kept_train, kept_test)


def index_files(paths: Iterable[Path]) -> dict[str, Path]:
    """``video id (file stem) -> path``; ``DataError`` naming both files for a duplicate id."""
    found: dict[str, Path] = {}
    for path in sorted(paths):
        stem = path.stem
        if stem in found:
            raise DataError(f"duplicate video id {stem!r}: {found[stem]} and {path}")
        found[stem] = path
    return found
