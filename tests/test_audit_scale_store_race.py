"""A run must record the store as it READ it: a video rewritten by another writer (an
`actrec extract --overwrite`, a relabelling) between the run's read of it and the run's
fingerprint of the store would leave a run trained on one copy that records the other, and a
later "store unchanged" check (resume, eval) would pass on data the run never saw."""

from __future__ import annotations

import numpy as np
import pytest

from actrec.errors import DataError
from actrec.io.features import FeatureStore


def make_store(path, seed: int):
    rng = np.random.default_rng(seed)
    store = FeatureStore.open_or_create(
        path, dataset=f"toy{seed}", split_scheme="default", classes=["a", "b"],
        splits={"1": {"train": ["tr0", "tr1", "tr2"], "test": ["te0"]}}, extractor="toy",
        extractor_config={}, lookahead=0, dtype="float32", chunk_frames=8)
    for vid in ("tr0", "tr1", "tr2", "te0"):
        t = int(rng.integers(20, 30))
        store.write_video(vid, rng.normal(size=(t, 3)).astype(np.float32),
                          rng.integers(0, 2, t), fps=15.0, source=None)
    return store


def spec(tmp_path):
    from actrec.train import TrainSpec

    return TrainSpec(model="ddlstm", d1=tmp_path / "a.zarr", d2=tmp_path / "b.zarr",
                     model_options={"hidden": 4, "layers": 1}, history=8, iterations=1,
                     mix=(2, 2), lr=0.01, seed=1)


def test_a_video_rewritten_while_the_run_reads_the_store_is_refused(tmp_path, monkeypatch):
    from actrec.data.windows import VideoBank
    from actrec.train import train_model

    make_store(tmp_path / "a.zarr", 1)
    make_store(tmp_path / "b.zarr", 2)
    real = VideoBank.from_store.__func__
    rewritten = []

    def from_store(cls, store, video_ids, **kw):
        bank = real(cls, store, video_ids, **kw)
        if not rewritten:  # another writer replaces a training video the run has just read
            x, y = store.read("tr1")
            FeatureStore.open(store.path).write_video("tr1", x * 2, y, fps=15.0, source=None)
            rewritten.append(store.path)
        return bank

    monkeypatch.setattr(VideoBank, "from_store", classmethod(from_store))
    with pytest.raises(DataError, match=r"a.zarr: video 'tr1' was rewritten while this run "
                                        r"read the store"):
        train_model(spec(tmp_path), tmp_path / "run")
    assert not (tmp_path / "run").exists()
    monkeypatch.undo()
    train_model(spec(tmp_path), tmp_path / "run")  # the writer is done: the run reads one copy
    assert (tmp_path / "run" / "checkpoint.pt").is_file()
