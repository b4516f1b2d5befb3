"""The store benchmark (``python -m actrec.bench store``) refuses a size or round count it
cannot use with argparse's usage error naming the option (exit status 2), not a traceback
from numpy or statistics several seconds in; and the benchmark list's own help names it."""

from __future__ import annotations

import pytest

from actrec.bench.__main__ import BENCHMARKS
from actrec.bench.__main__ import __doc__ as bench_help
from actrec.bench.store import main


@pytest.mark.parametrize("option, value", [("--frames", "0"), ("--frames", "-3"),
                                           ("--dim", "0"), ("--rounds", "0"),
                                           ("--frames", "many")])
def test_a_size_or_count_below_one_is_a_usage_error(capsys, option, value):
    with pytest.raises(SystemExit) as stop:
        main(["--frames", "40", "--dim", "8", "--rounds", "1", option, value])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {option}: expected an integer >= 1, got {value!r}" in err
    assert "Traceback" not in err


def test_the_benchmark_list_names_every_benchmark():
    listed = bench_help.split("(")[1].split(")")[0].replace(",", " ").split()
    assert listed == list(BENCHMARKS)
