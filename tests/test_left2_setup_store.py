"""An extractor that cannot start leaves nothing behind and says so once: a ``setup`` that
raises, in this process or in worker processes, creates no feature store (the store is made
once the extractor is ready); a ``dim()`` that raises (or answers no positive integer) is
refused in one message before anything is written, not once per video. Real mp4 files, real
stores, real worker processes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from actrec.errors import ConfigError
from actrec.extract import extract_features
from actrec.io.features import FeatureStore
from actrec.plugin_api import FeatureExtractor


class Grey(FeatureExtractor):
    """The mean grey level of a frame."""

    name = "grey"
    lookahead = 0

    def dim(self) -> int:
        return 1

    def extract(self, batches):
        for batch in batches:
            yield batch.reshape(batch.shape[0], -1).mean(axis=1, keepdims=True) \
                .astype(np.float32)


class NoWeights(Grey):
    """Its weights file is missing: ``setup`` raises (in every process that extracts)."""

    name = "noweights"

    def setup(self, runtime) -> None:
        super().setup(runtime)
        raise RuntimeError("weights file missing")


class BadDim(Grey):
    """A bug in ``dim``."""

    name = "baddim"

    def dim(self) -> int:
        return {}["d"]


class ZeroDim(Grey):
    name = "zerodim"

    def dim(self) -> int:
        return 0


class DimAfterSetup(Grey):
    """Knows its length only once set up (a model loaded in ``setup``): legitimate."""

    name = "dimaftersetup"

    def setup(self, runtime) -> None:
        super().setup(runtime)
        self._dim = 1

    def dim(self) -> int:
        return self._dim


@pytest.mark.parametrize("workers", [1, 2])
def test_a_failing_setup_leaves_no_store(tiny_kitchen, tmp_path, workers):
    _, index = tiny_kitchen
    out = tmp_path / "s.zarr"
    with pytest.raises(ConfigError, match=r"^extractor 'noweights' failed to set up: "
                                          r"RuntimeError: weights file missing$"):
        extract_features(index, NoWeights(), out, dataset_ref="r", workers=workers)
    assert not out.exists()
    # nothing left in the way: a working extractor makes the store there
    report = extract_features(index, Grey(), out, dataset_ref="r", workers=workers)
    assert len(report.written) == len(index.videos)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_failing_dim_is_one_refusal_before_any_store(tiny_kitchen, tmp_path, workers):
    _, index = tiny_kitchen
    out = tmp_path / "s.zarr"
    line = BadDim.dim.__code__.co_firstlineno + 1
    with pytest.raises(ConfigError) as err:
        extract_features(index, BadDim(), out, dataset_ref="r", workers=workers)
    assert str(err.value) == (f"extractor 'baddim': dim() failed: KeyError: 'd' (at "
                              f"{Path(__file__).name}:{line} in dim)")
    assert not out.exists()
    with pytest.raises(ConfigError, match=r"^extractor 'zerodim': dim\(\) returned 0; expected "
                                          r"the feature length, an integer >= 1$"):
        extract_features(index, ZeroDim(), out, dataset_ref="r", workers=workers)
    assert not out.exists()


@pytest.mark.parametrize("workers", [1, 2])
def test_an_extractor_whose_length_comes_with_setup_still_runs(tiny_kitchen, tmp_path,
                                                               workers):
    _, index = tiny_kitchen
    out = tmp_path / "s.zarr"
    report = extract_features(index, DimAfterSetup(), out, dataset_ref="r", workers=workers)
    assert len(report.written) == len(index.videos) and not report.failed
    store = FeatureStore.open(out)
    vid = min(index.videos)
    feats, _ = store.read(vid)
    assert feats.shape == (index.videos[vid].num_frames, 1)


def test_a_run_with_nothing_to_do_still_makes_its_store(tiny_kitchen, tmp_path):
    """No video selected: the store is made (its splits recorded), as before."""
    _, index = tiny_kitchen
    out = tmp_path / "s.zarr"
    report = extract_features(index, NoWeights(), out, dataset_ref="r", video_ids=[])
    assert report.written == () and FeatureStore.open(out).videos() == []
