"""Equal dataset references are equal: option values are written one way for their type, so
``mstcn:fps=14`` and ``mstcn:fps=14.0`` name one dataset and one store (they named two, and
training on one found no features extracted under the other)."""

from __future__ import annotations

from actrec.refs import canonical_ref, default_store


def test_numbers_are_spelled_by_value():
    one = canonical_ref("mstcn:fps=14")
    assert one == "mstcn:fps=14"
    assert canonical_ref("mstcn:fps=14.0") == one
    assert canonical_ref("mstcn:fps=1.4e1") == one
    assert canonical_ref("mstcn", {"fps": 14.0}) == one  # typed options, as the CLI passes
    assert canonical_ref("mstcn:fps=29.97") == "mstcn:fps=29.97"
    assert canonical_ref("synthetic:seed=07,kitchen=b") == "synthetic:kitchen=b,seed=7"
    assert canonical_ref("synthetic:noise=0.060") == "synthetic:noise=0.06"


def test_values_a_type_does_not_take_and_unknown_datasets_stay_as_given():
    assert canonical_ref("mstcn:fps=fast") == "mstcn:fps=fast"  # refused when built
    assert canonical_ref("synthetic:kitchen=01") == "synthetic:kitchen=01"  # a string option
    assert canonical_ref("imported-thing:fps=14.0") == "imported-thing:fps=14.0"


def test_equal_references_share_their_default_store(tmp_path, monkeypatch):
    monkeypatch.setenv("ACTREC_HOME", str(tmp_path))
    monkeypatch.setenv("ACTREC_DATA_MSTCN", str(tmp_path / "data"))
    assert default_store("mstcn:fps=14.0", "i3d") == default_store("mstcn:fps=14", "i3d")
    assert default_store("mstcn", "i3d", {"fps": "14.00"}) == \
        default_store("mstcn:fps=14", "i3d")
