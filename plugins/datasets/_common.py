"""Helpers shared by the dataset plugins: listing annotation files (hidden files left out),
splits by participant, split lists, and checking video ids. Private to
``actrec_plugins.datasets``. (The data root is resolved by actrec for every dataset plugin:
``actrec.plugin_api.Dataset``.)"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

from actrec.errors import DataError
from actrec.plugin_api import Split


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


def split_from_lists(name: str, train_list: Path, test_list: Path, known: Iterable[str],
                     repairs: dict[str, int], *, strict: bool = False) -> Split:
    """Split ``name`` from two split-list files, keeping the videos that have annotations.

    An entry without an annotation file is dropped and counted under ``"split entries
    without annotations (dropped)"``, or with ``strict`` raises ``DataError`` naming the list
    file and line.
    """
    from actrec.io import annotations as A

    have = set(known)
    kept: list[tuple[str, ...]] = []
    dropped = 0
    for path in (train_list, test_list):
        entries = A.read_bundle_entries(path, repairs)
        for video, line in entries:
            if video not in have and strict:
                raise DataError(f"{path}:{line}: split entry {video!r} has no annotation file")
        kept.append(tuple(v for v, _ in entries if v in have))
        dropped += sum(1 for v, _ in entries if v not in have)
    if dropped:
        key = "split entries without annotations (dropped)"
        repairs[key] = repairs.get(key, 0) + dropped
    both = sorted(set(kept[0]) & set(kept[1]))
    if both:  # a model would be scored on videos it trained on
        raise DataError(f"split {name}: {len(both)} video(s) listed both in {train_list} and in "
                        f"{test_list} (e.g. {both[0]!r}); fix the split lists")
    return Split(name, kept[0], kept[1])


UNTESTED = "annotated videos in no split's test list (never evaluated)"
TESTED_TWICE = "annotated videos in several splits' test lists"


def count_test_coverage(videos: Iterable[str], splits: Mapping[str, Split],
                        repairs: dict[str, int]) -> None:
    """Count in ``repairs`` the ``videos`` that no split tests (``UNTESTED``) and those that
    several splits test (``TESTED_TWICE``): with k folds every annotated video should be in
    exactly one test set, or a mean over the splits leaves some out or weighs some twice.
    Nothing is counted for fewer than 2 splits (one train/test split tests part by design)."""
    if len(splits) < 2:
        return
    times: dict[str, int] = {}
    for split in splits.values():
        for video in split.test:
            times[video] = times.get(video, 0) + 1
    untested = sum(1 for v in videos if v not in times)
    twice = sum(1 for n in times.values() if n > 1)
    for key, count in ((UNTESTED, untested), (TESTED_TWICE, twice)):
        if count:
            repairs[key] = repairs.get(key, 0) + count


HIDDEN_FILES = "hidden files (dot-files, skipped)"


def visible_files(directory: Path, patterns: Iterable[str], repairs: dict[str, int]
                  ) -> list[Path]:
    """The files under ``directory`` matching any of the glob ``patterns``, sorted, without
    hidden ones: a file whose name, or a folder between ``directory`` and it, starts with a dot
    (``.P03_copy.txt``, macOS ``._X.txt`` resource forks, ``.ipynb_checkpoints/``). Those are
    no annotations; they are counted under ``HIDDEN_FILES`` in ``repairs``."""
    found: set[Path] = set()
    hidden: set[Path] = set()
    for pattern in patterns:
        for path in directory.glob(pattern):
            parts = path.relative_to(directory).parts
            (hidden if any(p.startswith(".") for p in parts) else found).add(path)
    if hidden:
        repairs[HIDDEN_FILES] = repairs.get(HIDDEN_FILES, 0) + len(hidden)
    return sorted(found)


def index_files(paths: Iterable[Path]) -> dict[str, Path]:
    """``video id (file stem) -> path``; ``DataError`` naming both files for a duplicate id."""
    found: dict[str, Path] = {}
    for path in sorted(paths):
        stem = path.stem
        if stem in found:
            raise DataError(f"duplicate video id {stem!r}: {found[stem]} and {path}")
        found[stem] = path
    return found
