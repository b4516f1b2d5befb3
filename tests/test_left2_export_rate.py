"""What ``actrec export`` records of how a stream's frames are taken: ``video_rate`` is asked
of the extractor rebuilt from the store's config (motion extractors' ``window_rate=video``),
imported features and extractors that cannot be rebuilt here fall back to the recorded option."""

from __future__ import annotations

from pathlib import Path

from actrec.export import _stream_input
from actrec.recognizer import FeatureSpec


def _spec(extractor: str, config: dict) -> dict:
    return _stream_input(FeatureSpec(Path("s.zarr"), extractor, config, "float16", 7), "run r")


def test_video_rate_is_the_extractors_own_answer():
    assert _spec("framediff", {"window_rate": "video"})["video_rate"] is True
    assert _spec("framediff", {"window_rate": "labels"})["video_rate"] is False
    plain = _spec("colorgrad", {})
    assert plain == {"extractor": "colorgrad", "config": {}, "dim": 7, "video_rate": False,
                     "head": None}


def test_features_no_extractor_here_can_make_fall_back_to_the_recorded_option():
    assert _spec("mstcn-import", {"window_rate": "video"})["video_rate"] is False
    assert _spec("not-installed", {"window_rate": "video"})["video_rate"] is True
    assert _spec("not-installed", {})["video_rate"] is False
