"""``python -m actrec.bench.store`` runs end to end on a small video and reports each
candidate against the unchecked read of the same run (no timing is asserted)."""

from __future__ import annotations

import json

from actrec.bench.store import main


def test_the_store_benchmark_reports_ratios_to_its_baseline(capsys):
    assert main(["--frames", "40", "--dim", "8", "--rounds", "1", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["video"] == {"frames": 40, "dim": 8, "dtype": "float16", "feature_mb": 0.0}
    results = res["results"]
    assert list(results) == ["unchecked", "hashed after", "store.read",
                             "store.read_window, last frame left out (no hash)",
                             "sha256 of the features alone", "float32 conversion alone",
                             "zarr decode of the features alone"]
    assert results["unchecked"]["ratio_to_unchecked"] == 1.0
    for r in results.values():
        assert r["n"] == 1 and r["median_s"] > 0
        assert r["ratio_to_unchecked"] == r["median_s"] / results["unchecked"]["median_s"]
    assert main(["--frames", "40", "--dim", "8", "--rounds", "1"]) == 0  # the table
    assert "x unchecked" in capsys.readouterr().out
