"""`actrec reproduce` without a terminal (a batch job, `2> log`): no progress bar is drawn, so
each unit's start and end are written to stderr as lines."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from test_reproduce import breakfast_table

ROOT = Path(__file__).resolve().parents[1]

BROKEN_ONLY = breakfast_table(
    "broken-only", "one method that cannot train",
    """[methods.broken]
kind = "train"
model = "no-such-model"
protocol = "single"

""",
    """[[columns]]
label = "broken"
method = "broken"

[[rows]]
labels = ["0"]
split = 0
paper = [1.0]

[[rows]]
labels = ["1"]
split = 1
paper = [1.0]
""")


def reproduce_cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    table = tmp_path / "broken.toml"
    table.write_text(BROKEN_ONLY)
    env = dict(os.environ, PYTHONPATH=str(ROOT), ACTREC_HOME=str(tmp_path / "home"))
    return subprocess.run([sys.executable, "-m", "actrec", "reproduce", str(table), "--preset",
                           "tiny", "--inputs", "store", "--root", str(tmp_path / "root"), *args],
                          check=False, capture_output=True, text=True, env=env, timeout=300)


def unit_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith(("started", "finished"))]


def test_a_line_per_unit_started_and_finished_without_a_terminal(tmp_path: Path):
    out = reproduce_cli(tmp_path)
    assert out.returncode == 1  # both cells failed
    reason = "unknown model 'no-such-model'; available: "
    lines = unit_lines(out.stderr)
    assert [line.split(" in ")[0] for line in lines] == [
        "started 1/2: train no-such-model broken-breakfast1-concat-seed0",
        "finished 1/2: broken-breakfast1-concat-seed0 failed",
        "started 2/2: train no-such-model broken-breakfast2-concat-seed0",
        "finished 2/2: broken-breakfast2-concat-seed0 failed",
    ], out.stderr
    assert all(reason in line for line in lines if line.startswith("finished")), lines


def test_worker_processes_log_each_unit_once(tmp_path: Path):
    out = reproduce_cli(tmp_path, "--jobs", "2")
    assert out.returncode == 1
    lines = unit_lines(out.stderr)
    assert sorted(line.split(":")[0] for line in lines) == [
        "finished 1/2", "finished 2/2", "started 1/2", "started 2/2"], out.stderr
    keys = {f"broken-breakfast{s}-concat-seed0" for s in (1, 2)}
    assert {line.split()[-1] for line in lines if line.startswith("started")} == keys
