"""``runs.atomic_torch_save(path, obj, then)``: ``then`` (the trainer's record of which
checkpoint the run keeps) runs once the new file is in place, and never when the write
failed, so that the record never names a checkpoint the folder does not hold. Real files."""

from __future__ import annotations

import pytest
import torch

from actrec import runs


def test_then_sees_the_new_file_in_place(tmp_path):
    path = tmp_path / "checkpoint.pt"
    runs.atomic_torch_save(path, {"iteration": 14})
    seen = []
    runs.atomic_torch_save(path, {"iteration": 16},
                           lambda: seen.append(torch.load(path, weights_only=True)["iteration"]))
    assert seen == [16]


def test_then_is_not_called_when_the_write_fails_and_the_old_file_stays(tmp_path):
    path = tmp_path / "checkpoint.pt"
    runs.atomic_torch_save(path, {"iteration": 14})
    called = []
    with pytest.raises(Exception):  # noqa: B017 - whatever pickling raises
        runs.atomic_torch_save(path, {"iteration": 16, "bad": lambda: None},
                               lambda: called.append(True))
    assert called == []
    assert torch.load(path, weights_only=True)["iteration"] == 14
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # no temp file left
