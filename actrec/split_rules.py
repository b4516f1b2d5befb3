"""Split rules for data that ship no split lists: leave-one-out or seeded k-fold, by video.

A rule is written ``loo`` (every video is the test set of its own split, the others train)
or ``kfold:K`` / ``kfold:K:seed=S`` (the videos, sorted by id, shuffled with NumPy's
``default_rng(S)`` (seed 0 unless given) and dealt round-robin into K folds, so fold sizes differ
by at most one; split ``i`` tests on fold ``i``). Splits are named ``1``, ``2``, ... A rule and
its seed are recorded where the splits are stored, in the canonical spelling ``rule.text``
(``kfold:5:seed=0``), so that the same rule over the same videos gives the same splits.
All of a video's frames are always on one side: the rule splits videos, never frames.

``groups`` (video -> group, e.g. its participant) keeps every group on one side: folds, and
``loo``'s held-out units, are then groups instead of videos. A rule asks for that grouping
with ``:by=participant`` (``loo:by=participant``, ``kfold:4:by=participant``: leave one
person out, or k folds of people); ``by=video`` is the default. Without it, two videos of one
person -- or two camera views of one recording, as Breakfast's ``P03_cam01_P03_tea`` and
``P03_webcam01_P03_tea`` -- can land on both sides of a split, and the test scores measure
recognition of recordings the model has seen.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from actrec.errors import ConfigError
from actrec.plugin_api import Split

__all__ = ["SplitRule", "make_splits", "parse_split_rule"]

SYNTAX = "loo, kfold:K or kfold:K:seed=S, each optionally with :by=participant"
BY = ("video", "participant")


@dataclass(frozen=True)
class SplitRule:
    """``kind`` ``"loo"`` or ``"kfold"``; ``folds`` and ``seed`` for k-fold; ``by`` what a
    held-out unit is (``"video"`` or ``"participant"``)."""

    kind: str
    folds: int = 0
    seed: int = 0
    by: str = "video"

    @property
    def text(self) -> str:
        """The canonical spelling: ``loo`` or ``kfold:K:seed=S``, then ``:by=participant``
        when grouped (by video stays unsaid, as rules were first recorded)."""
        base = "loo" if self.kind == "loo" else f"kfold:{self.folds}:seed={self.seed}"
        return base if self.by == "video" else f"{base}:by={self.by}"


def parse_split_rule(text: str, *, option: str = "--splits") -> SplitRule:
    """``"loo"`` / ``"kfold:5"`` / ``"kfold:5:seed=3"``, each optionally followed by
    ``":by=participant"`` (or ``":by=video"``) -> ``SplitRule``; ``ConfigError`` naming
    ``option`` and the expected syntax otherwise (K >= 2, S >= 0)."""
    parts = [p.strip() for p in str(text).strip().lower().split(":")]
    bad = ConfigError(f"{option}: expected {SYNTAX}, got {text!r}")
    by = "video"
    if len(parts) > 1 and parts[-1].startswith("by"):
        key, sep, value = parts.pop().partition("=")
        if key.strip() != "by" or not sep or value.strip() not in BY:
            raise bad
        by = value.strip()
    if parts == ["loo"]:
        return SplitRule("loo", by=by)
    if parts[0] != "kfold" or len(parts) not in (2, 3):
        raise bad
    try:
        folds = int(parts[1])
    except ValueError:
        raise bad from None
    seed = 0
    if len(parts) == 3:
        key, sep, value = parts[2].partition("=")
        if key.strip() != "seed" or not sep:
            raise bad
        try:
            seed = int(value)
        except ValueError:
            raise bad from None
    if folds < 2 or seed < 0:
        raise ConfigError(f"{option}: k-fold needs K >= 2 folds and a seed >= 0, got {text!r}")
    return SplitRule("kfold", folds, seed, by)


def make_splits(rule: SplitRule, videos: Iterable[str],
                groups: Mapping[str, str | None] | None = None) -> dict[str, Split]:
    """The splits ``rule`` makes over ``videos`` (see the module docstring), over the groups
    ``groups`` gives (a video without one is a group of its own) when it is given;
    ``ConfigError`` when there are fewer videos (groups) than splits need (2 for ``loo``, K
    for k-fold)."""
    import numpy as np

    ids = sorted(set(videos))
    if groups is None:
        units = {v: [v] for v in ids}
        what = "videos"
    else:
        units = {}
        for v in ids:
            units.setdefault(str(groups[v]) if groups.get(v) else f"video:{v}", []).append(v)
        what = "groups (participants)"
    names = sorted(units)
    need = 2 if rule.kind == "loo" else rule.folds
    if len(names) < need:
        raise ConfigError(f"split rule {rule.text} needs at least {need} {what}, got "
                          f"{len(names)}")
    if rule.kind == "loo":
        folds = [units[n] for n in names]
    else:
        order = np.random.default_rng(rule.seed).permutation(len(names))
        folds = [sorted(v for j in order[i::rule.folds] for v in units[names[j]])
                 for i in range(rule.folds)]
    splits = {}
    for i, test in enumerate(folds, 1):
        held = set(test)
        splits[str(i)] = Split(str(i), tuple(v for v in ids if v not in held), tuple(test))
    return splits
