"""Run directories: unique names, resolution, atomic writes, checkpoint loading errors."""

import json
import pickle

import pytest
import torch

from actrec import runs
from actrec.errors import DataError


def test_new_run_dir_never_reuses(tmp_path):
    made = [runs.new_run_dir(tmp_path / "runs", "lstm") for _ in range(3)]
    assert len(set(made)) == 3
    assert all(p.is_dir() and p.parent == tmp_path / "runs" for p in made)
    assert all(p.name.split("-", 2)[2].startswith("lstm") for p in made)
    # Names with path separators cannot escape the root.
    odd = runs.new_run_dir(tmp_path / "runs", "../evil name")
    assert odd.parent == tmp_path / "runs"


def test_resolve_run_path_or_name(tmp_path, monkeypatch):
    monkeypatch.setenv("ACTREC_HOME", str(tmp_path / "home"))
    run = runs.new_run_dir(runs.runs_root(), "gru")
    assert runs.resolve_run(run) == run
    assert runs.resolve_run(run.name) == run
    with pytest.raises(DataError, match="no run 'missing'"):
        runs.resolve_run("missing")


def test_atomic_write_json_keeps_old_file_on_failure(tmp_path):
    path = tmp_path / "out" / "eval.json"
    runs.atomic_write_json(path, {"a": 1})
    assert json.loads(path.read_text()) == {"a": 1}
    with pytest.raises(TypeError):
        runs.atomic_write_json(path, {"a": object()})  # not JSON: fails mid-write
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in path.parent.iterdir()] == ["eval.json"]  # no temp file left


def test_checkpoint_round_trip_weights_only(tmp_path):
    obj = {"model": {"w": torch.arange(6.0).reshape(2, 3)}, "iteration": 7,
           "spec": {"mix": [64, 64], "d2": None}, "rng": {"state": 2**100 + 3}}
    path = tmp_path / "checkpoint.pt"
    runs.atomic_torch_save(path, obj)
    back = runs.load_checkpoint(path)
    assert back["iteration"] == 7 and back["rng"]["state"] == 2**100 + 3
    assert torch.equal(back["model"]["w"], obj["model"]["w"])
    assert torch.load(path, weights_only=True)["spec"] == obj["spec"]


class Custom:
    pass


def test_load_checkpoint_errors_name_the_file(tmp_path):
    with pytest.raises(DataError, match="no checkpoint file"):
        runs.load_checkpoint(tmp_path / "absent.pt")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"PK\x03\x04 definitely not a zip archive")
    with pytest.raises(DataError, match="corrupt.pt"):
        runs.load_checkpoint(corrupt)
    truncated = tmp_path / "truncated.pt"
    runs.atomic_torch_save(truncated, {"w": torch.zeros(1000)})
    truncated.write_bytes(truncated.read_bytes()[:200])
    with pytest.raises(DataError, match="truncated.pt"):
        runs.load_checkpoint(truncated)
    unsafe = tmp_path / "unsafe.pt"
    torch.save({"obj": Custom()}, unsafe)  # needs arbitrary unpickling: refused
    with pytest.raises(DataError, match="unsafe.pt.*other than tensors"):
        runs.load_checkpoint(unsafe)
    listy = tmp_path / "list.pt"
    torch.save([1, 2], listy)
    with pytest.raises(DataError, match="expected a checkpoint dict"):
        runs.load_checkpoint(listy)
    plain = tmp_path / "plain.pkl"
    plain.write_bytes(pickle.dumps({"a": Custom()}, protocol=2))
    with pytest.raises(DataError, match="other than tensors"):
        runs.load_checkpoint(plain)


def test_read_json_names_file_and_line(tmp_path):
    bad = tmp_path / "config.json"
    bad.write_text('{\n  "a": 1,\n  oops\n}\n')
    with pytest.raises(DataError, match=r"config.json, line 3"):
        runs.read_json(bad)
    with pytest.raises(DataError, match="cannot read"):
        runs.read_json(tmp_path / "nope.json")
