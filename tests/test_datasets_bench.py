"""The dataset-loading benchmark runs on the real files and reports consistent numbers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from actrec.bench.datasets import main

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.mark.skipif(not DATA.is_dir(), reason="shared/data is absent")
def test_bench_json(capsys):
    assert main(["--data", str(DATA), "--rounds", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    cases = out["cases"]
    assert len(cases) == 5 and any(k.startswith("breakfast") for k in cases)
    for case in cases.values():
        assert case["load_s"] > 0 and case["read_bytes_s"] > 0
        assert case["ratio"] == pytest.approx(case["load_s"] / case["read_bytes_s"])
    assert cases["breakfast coarse .txt"]["files"] == 253  # 252 videos + mapping.txt


def test_bench_missing_data(tmp_path, capsys):
    assert main(["--data", str(tmp_path / "none")]) == 2
    assert "data folder not found" in capsys.readouterr().err
