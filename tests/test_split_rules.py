"""Split rules for data without split lists: leave-one-out and seeded k-fold by video."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from actrec.errors import ConfigError
from actrec.split_rules import make_splits, parse_split_rule

IDS = [f"v{i}" for i in range(7)]


def test_parse_spellings_and_canonical_text():
    assert parse_split_rule("loo").text == "loo"
    assert parse_split_rule("kfold:5").text == "kfold:5:seed=0"
    assert parse_split_rule(" KFold:4:seed=3 ").text == "kfold:4:seed=3"
    for bad in ("", "kfold", "kfold:x", "kfold:5:7", "kfold:5:sed=1", "loo:2", "folds:5"):
        with pytest.raises(ConfigError, match=r"--splits: expected loo, kfold:K or kfold:K:"):
            parse_split_rule(bad)
    with pytest.raises(ConfigError, match=r"K >= 2 folds"):
        parse_split_rule("kfold:1")
    assert parse_split_rule("kfold:4:by=participant").text == "kfold:4:seed=0:by=participant"
    assert parse_split_rule("kfold:4:seed=2:by=video").text == "kfold:4:seed=2"
    assert parse_split_rule("loo:by=participant").by == "participant"
    for bad in ("loo:by=scene", "kfold:4:by", "by=participant", "kfold:4:by=participant:seed=1"):
        with pytest.raises(ConfigError, match=r"--splits: expected"):
            parse_split_rule(bad)


def test_kfold_hand_values():
    # default_rng(0).permutation(7) is [2, 4, 3, 6, 5, 0, 1]; dealt round-robin into 3 folds:
    # fold 1 = positions 0, 3, 6 -> v2, v6, v1; fold 2 -> v4, v5; fold 3 -> v3, v0
    splits = make_splits(parse_split_rule("kfold:3:seed=0"), reversed(IDS))
    assert {k: s.test for k, s in splits.items()} == {
        "1": ("v1", "v2", "v6"), "2": ("v4", "v5"), "3": ("v0", "v3")}
    assert splits["2"].train == ("v0", "v1", "v2", "v3", "v6")


def test_leave_one_out():
    splits = make_splits(parse_split_rule("loo"), ["b", "a", "c"])
    assert [(k, s.train, s.test) for k, s in splits.items()] == [
        ("1", ("b", "c"), ("a",)), ("2", ("a", "c"), ("b",)), ("3", ("a", "b"), ("c",))]
    with pytest.raises(ConfigError, match=r"kfold:5:seed=0 needs at least 5 videos, got 3"):
        make_splits(parse_split_rule("kfold:5"), ["a", "b", "c"])


@given(st.integers(2, 40), st.integers(2, 6), st.integers(0, 3))
def test_kfold_partitions_the_videos(n, k, seed):
    ids = [f"x{i:02d}" for i in range(n)]
    if n < k:
        return
    splits = make_splits(parse_split_rule(f"kfold:{k}:seed={seed}"), ids)
    tests = [s.test for s in splits.values()]
    assert sorted(v for t in tests for v in t) == ids  # every video tested exactly once
    assert max(map(len, tests)) - min(map(len, tests)) <= 1
    for s in splits.values():
        assert sorted(s.train + s.test) == ids and not set(s.train) & set(s.test)
    again = make_splits(parse_split_rule(f"kfold:{k}:seed={seed}"), list(reversed(ids)))
    assert again == splits  # the rule, not the order given, decides
