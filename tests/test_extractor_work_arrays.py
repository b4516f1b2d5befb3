"""The weight-free extractors compute into work arrays kept on the extractor between batches
(``actrec_plugins.extractors.scratch``). Nothing a video needs later may live in them: one
extractor running two videos at once (two generators stepped in turn, as live recognition's
streams and a re-started feed do) gives each video exactly the rows it gets alone, and the
rows handed out are never overwritten afterwards."""

from __future__ import annotations

import numpy as np
import pytest

from actrec import registry


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """Frames decoded from two real mp4 files: a textured patch drifting over noise."""
    import cv2

    from actrec.io.video import open_video

    out = []
    for seed, (h, w) in enumerate(((96, 128), (64, 64))):
        rng = np.random.default_rng(seed)
        background = rng.integers(0, 120, (h, w, 3), dtype=np.uint8)
        patch = rng.integers(100, 256, (24, 24, 3), dtype=np.uint8)
        path = tmp_path_factory.mktemp("mp4") / f"v{seed}.mp4"
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 15.0, (w, h))
        for t in range(21):
            img = background.copy()
            img[10 + t:34 + t, 5 + t:29 + t] = patch
            writer.write(img)
        writer.release()
        video = open_video(path)
        out.append(video.read(np.arange(len(video))))
    return out


def _batches(frames, size=5):
    return (frames[i:i + size] for i in range(0, len(frames), size))


@pytest.mark.parametrize("name", ["colorgrad", "framediff", "mhi"])
def test_two_videos_stepped_in_turn_on_one_extractor_get_their_own_rows(name, videos):
    alone = [np.concatenate(list(registry.create("extractors", name, {}).extract(_batches(v))))
             for v in videos]
    shared = registry.create("extractors", name, {})
    gens = [shared.extract(_batches(v)) for v in videos]
    rows: list[list[np.ndarray]] = [[], []]
    for _ in range(5):  # 5 batches each, in turn
        for k, gen in enumerate(gens):
            rows[k].append(next(gen))
    held = [r[0].copy() for r in rows]
    for k, gen in enumerate(gens):
        rows[k].extend(gen)
    for k in range(2):
        np.testing.assert_array_equal(np.concatenate(rows[k]), alone[k])
        np.testing.assert_array_equal(rows[k][0], held[k])  # not overwritten since
