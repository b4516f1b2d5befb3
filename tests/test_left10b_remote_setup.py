"""A store at a URL is made once the extractor is set up, as a local one is: an extractor
whose ``setup`` fails (in this process or in worker processes) leaves no empty store in the
bucket, while a mistyped bucket is still named before any extractor is loaded. Real S3
server (moto), real mp4 files, real worker processes."""

from __future__ import annotations

import pytest
from test_left2_setup_store import Grey, NoWeights

from actrec.errors import ConfigError, DataError
from actrec.extract import extract_features
from actrec.io.features import FeatureStore


def _objects(bucket: str) -> list[str]:
    import s3fs

    fs = s3fs.S3FileSystem()
    fs.invalidate_cache()
    return sorted(fs.find(bucket))


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_a_failing_setup_leaves_no_store_in_the_bucket(tiny_kitchen, bucket, workers):
    _, index = tiny_kitchen
    url = f"s3://{bucket}/s.zarr"
    with pytest.raises(ConfigError, match=r"^extractor 'noweights' failed to set up: "
                                          r"RuntimeError: weights file missing$"):
        extract_features(index, NoWeights(), url, dataset_ref="r", workers=workers)
    assert _objects(bucket) == []  # no zarr.json, no videos group, no run record
    with pytest.raises(DataError, match="no feature store here"):
        FeatureStore.open(url)
    # nothing in the way: a working extractor makes the store there
    report = extract_features(index, Grey(), url, dataset_ref="r", workers=workers)
    assert len(report.written) == len(index.videos) and not report.failed
    assert FeatureStore.open(url).videos() == sorted(index.videos)


class NotToBeLoaded(Grey):
    """Set up only by mistake: the run must stop at the bucket before loading it."""

    name = "nottobeloaded"

    def setup(self, runtime) -> None:
        raise AssertionError("set up although the store's bucket does not exist")


def test_a_missing_bucket_is_named_before_the_extractor_is_set_up(tiny_kitchen, bucket):
    _, index = tiny_kitchen
    with pytest.raises(DataError, match=r"^feature store s3://no-such-bucket-l10/s.zarr: cannot "
                                        r"create it \(FileNotFoundError: The specified bucket"):
        extract_features(index, NotToBeLoaded(), "s3://no-such-bucket-l10/s.zarr",
                         dataset_ref="r")


def test_an_existing_remote_store_is_still_opened_first(tiny_kitchen, bucket):
    """A store that is there is opened (and checked) before the extractor is set up, as
    before: a store of another extractor is refused without loading this one."""
    _, index = tiny_kitchen
    url = f"s3://{bucket}/s.zarr"
    extract_features(index, Grey(), url, dataset_ref="r")
    with pytest.raises(DataError, match=r"was written with a different extractor"):
        extract_features(index, NotToBeLoaded(), url, dataset_ref="r")
