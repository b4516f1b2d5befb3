"""A split sweep's runs may have trained with different torch threads (``train --threads``):
the number decides how fast a run trains, not what it learns (a resume may change it, as it
may change the device), so ``actrec eval --all-splits`` groups such runs as it groups runs
trained on different devices, instead of refusing them as "differing in threads". Real runs
trained here on a real Zarr store."""

from __future__ import annotations

import pytest
import torch
from test_sweep import make_store, spec

from actrec.errors import ConfigError
from actrec.sweep import gather_split_runs, group_split_runs
from actrec.train import train_model


def test_runs_of_a_sweep_trained_with_other_threads_are_one_sweep(tmp_path):
    store = make_store(tmp_path / "s.zarr")
    runs = tmp_path / "runs"
    more = torch.get_num_threads() + 1  # differs from torch's own, whatever the machine
    made = {"1": runs / "lstm-split1", "2": runs / "lstm-split2", "3": runs / "lstm-split3"}
    train_model(spec(store, "1", iterations=4), made["1"])  # torch's own (threads 0)
    train_model(spec(store, "2", iterations=4, threads=more), made["2"])
    train_model(spec(store, "3", iterations=2), made["3"])
    train_model(spec(store, "3", iterations=4, threads=1), made["3"])  # resumed with 1
    assert group_split_runs([made["1"], made["2"], made["3"]]) == made
    assert gather_split_runs(made["2"]) == (made, [])
    # what does change the training is still refused
    train_model(spec(store, "2", iterations=4, seed=3), runs / "seed3")
    with pytest.raises(ConfigError, match=r"differ in seed, not only in the split"):
        group_split_runs([made["1"], runs / "seed3"])
