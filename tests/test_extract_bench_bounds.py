"""The idle-core bounds ``python -m actrec.bench extract`` prints (its ``idle bound`` column and
the 2-worker note), against values worked out by hand: the bench's case that a target is out
of reach on 2 cores rests on them."""

from __future__ import annotations

import pytest

from actrec.bench.extract import _decode_time, _estimates


def test_decode_only_on_idle_cores_is_its_slowest_stage_or_its_total_over_the_cores():
    # decord's thread alone (0.112) outlasts the total spread over 2 cores (0.142 / 2 = 0.071)
    assert _decode_time(0.009, 0.021, 0.112, 2) == pytest.approx(0.112)
    # three equal stages on 2 cores: 0.3 / 2 = 0.15 > 0.1
    assert _decode_time(0.1, 0.1, 0.1, 2) == pytest.approx(0.15)
    # decoded faster than the model says (decord on several threads, files opened ahead): the
    # run's own 0.077 ms/frame; slower than the model: the model (idle cores)
    assert _decode_time(0.009, 0.021, 0.112, 2, measured=0.077) == pytest.approx(0.077)
    assert _decode_time(0.009, 0.021, 0.112, 2, measured=0.130) == pytest.approx(0.112)


def test_a_decode_bound_extractor_both_cores_busy():
    # colorgrad as measured: main thread 0.121, other threads 0.204 ms/frame; decode only 0.112.
    # One worker lasts at least max(0.121, 0.325 / 2) = 0.1625: ratio 0.112 / 0.1625 = 0.689.
    # Two workers: max(0.121 / 2, 0.325 / 2) = 0.1625 as well: no gain (1.00).
    ratio, gain = _estimates(0.112, 0.121, 0.204, 2)
    assert ratio == pytest.approx(0.112 / 0.1625)
    assert gain == pytest.approx(1.0)


def test_a_compute_bound_extractor_gains_from_a_second_worker():
    # flow: main 1.125, other 0.231. One worker: max(1.125, 1.356 / 2) = 1.125;
    # two: max(0.5625, 0.678) = 0.678, a gain of 1.125 / 0.678 = 1.659.
    ratio, gain = _estimates(0.112, 1.125, 0.231, 2)
    assert ratio == pytest.approx(0.112 / 1.125)
    assert gain == pytest.approx(1.125 / 0.678)
    # Main thread only: two workers halve it, until the total over the cores binds.
    assert _estimates(0.1, 0.4, 0.0, 2)[1] == pytest.approx(2.0)
    assert _estimates(0.1, 0.4, 0.1, 2)[1] == pytest.approx(0.4 / 0.25)


def test_decode_only_reads_every_frame_opening_ahead(tmp_path):
    # The baseline decodes every frame of every video (opened one ahead on a thread of its
    # own, as the host does), and a video that cannot be opened is an error, not a hang.
    import dataclasses
    import types

    from actrec.bench.extract import _decode_only, _kitchen
    from actrec.errors import DataError
    from actrec.io.video import open_video

    args = types.SimpleNamespace(participants=2, videos=2, frames=24, size=32)
    _, index = _kitchen(tmp_path / "data", args)
    want = sum(open_video(r.path, fps=r.fps, folder_fps=r.fps).num_frames
               for r in index.videos.values())
    assert want > 0 and _decode_only(index, 8) == (want, 0.0)

    first = next(iter(index.videos))
    broken = dict(index.videos)
    broken[first] = dataclasses.replace(broken[first], path=tmp_path / "missing.mp4")
    with pytest.raises(DataError):
        _decode_only(dataclasses.replace(index, videos=broken), 8)
