"""Which videos a run may train on: never one that a dataset of the run is tested on.

A dataset's own split never lists a video on both sides (``actrec.train`` checks that). These
checks cover what one split cannot see: two stores of the same videos in one run (two
extractors of one dataset) under different splits, and a run that starts from another run's
weights (``init_from``) trained on the same videos under another split. Each names the
stores, splits and option to change, before anything is written.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from actrec.errors import ActrecError, DataError

__all__ = ["init_not_trained_on_tests", "no_test_in_training"]


def no_test_in_training(stores: list[Any], names: list[str],
                        lists: list[Mapping[str, Any]]) -> None:
    """``DataError`` when one dataset of the run trains on videos another one is tested on:
    two stores of the same videos (other features, or one store allowed twice) under splits
    that differ, e.g. ``--split 2`` with D2's default split 1."""
    from actrec.components import same_videos

    for i, (store, name, split) in enumerate(zip(stores, names, lists)):
        for j, (other, oname, osplit) in enumerate(zip(stores, names, lists)):
            if i == j or not same_videos(store, other):
                continue
            leak = sorted(set(osplit.get("train", ())) & set(split.get("test", ())))
            if leak:
                option = "--split" if j == 0 else ("--d2-split" if j == 1 else "its split")
                raise DataError(
                    f"D{j + 1} ({other.path}, split '{oname}') trains on {len(leak)} video(s) "
                    f"that D{i + 1} ({store.path}, split '{name}') is tested on (e.g. "
                    f"'{leak[0]}'): its scores would come from videos the model trained on; "
                    f"give both the same split ({option} {name}), or distinct datasets")


def init_not_trained_on_tests(run: Path, stores: list[Any], names: list[str],
                              lists: list[Mapping[str, Any]]) -> None:
    """``DataError`` when the run ``init_from`` names trained on videos this run is tested on:
    the same videos (``components.same_videos``) under another split, e.g. fine-tuning split 1
    from a run of split 2. Stores of that run that cannot be opened any more are not
    compared."""
    from actrec import runs
    from actrec.components import open_store, same_videos
    from actrec.protocols import selected_checkpoint

    path = selected_checkpoint(runs.resolve_run(run))
    ckpt = runs.load_checkpoint(path)
    for where, split_name in zip(ckpt.get("stores") or [], ckpt.get("splits") or []):
        try:
            theirs = open_store(where)
            trained = theirs.splits[str(split_name)]["train"]
        except (ActrecError, KeyError, OSError):
            continue
        for k, (store, name, split) in enumerate(zip(stores, names, lists)):
            leak = sorted(set(trained) & set(split.get("test", ()))) \
                if same_videos(theirs, store) else []
            if leak:
                raise DataError(
                    f"--init-from {run}: that run trained on {len(leak)} video(s) that D{k + 1} "
                    f"({store.path}, split '{name}') is tested on (e.g. '{leak[0]}'; it trained "
                    f"on {where}, split '{split_name}'): fine-tuning from it would score videos "
                    f"the model has seen; start from a run of the same split, or of other data")
