"""A corrected annotation file reaches the store: `actrec extract` records a digest of each
video's labels as the dataset gives them, and a later run gives a video whose labels differ
its new labels (it skipped it, and training read the old labels without a word)."""

from __future__ import annotations

import dataclasses

import numpy as np
from actrec_plugins.extractors.colorgrad import ColorGradient

from actrec.extract import extract_features
from actrec.io.features import FeatureStore

CG = ColorGradient.Config(grid=1, bins=4, resize=16)


def _with_labels(index, vid, labels):
    return dataclasses.replace(index, videos={
        **index.videos, vid: dataclasses.replace(index.videos[vid], labels=labels)})


def test_a_video_whose_labels_changed_gets_them(tiny_kitchen, tmp_path):
    _, index = tiny_kitchen
    path = tmp_path / "s.zarr"
    first = extract_features(index, ColorGradient(CG), path, dataset_ref="r", batch_size=8)
    assert first.ok and len(first.written) == len(index.videos)
    vid = min(index.videos)
    old = index.videos[vid].labels
    fixed = old.copy()
    fixed[:5] = (old[:5] + 1) % len(index.classes)  # the first five frames relabelled
    again = extract_features(_with_labels(index, vid, fixed), ColorGradient(CG), path,
                             dataset_ref="r", batch_size=8)
    # the labels alone changed: rewritten, the features kept (tests/test_left_extract_relabel)
    assert not again.written and sorted(again.skipped) == sorted(set(index.videos) - {vid})
    assert again.relabelled == ((vid, ("its labels changed since it was extracted (the "
                                       "dataset's annotations differ); its labels were "
                                       "rewritten, its features kept")),)
    _, labels = FeatureStore.open(path).read(vid)
    np.testing.assert_array_equal(labels, fixed[:labels.shape[0]])
    # the summary table counts it (written + skipped + relabelled = every video) and says why
    from rich.console import Console

    from actrec.cli.extract_cmd import _render

    console = Console(width=200, record=True, color_system=None)
    console.print(_render(again))
    text = console.export_text()
    header = next(line for line in text.splitlines() if "labels rewritten" in line)
    counts = text.splitlines()[text.splitlines().index(header) + 2]
    cells = [c.strip() for c in counts.split("│")[1:-1]]
    assert cells[:6] == ["0", str(len(index.videos) - 1), "0", "0", "0", "1"], text
    assert f"{vid} │ labels rewritten (features kept) │ its labels changed" in text
    # the same labels again: nothing to do
    third = extract_features(_with_labels(index, vid, fixed), ColorGradient(CG), path,
                             dataset_ref="r", batch_size=8)
    assert not third.written and len(third.skipped) == len(index.videos)
    # --trust-store skips the comparison, as it does for the video files
    back = extract_features(index, ColorGradient(CG), path, dataset_ref="r", batch_size=8,
                            trust_store=True)
    assert not back.written and not back.redone_changed
