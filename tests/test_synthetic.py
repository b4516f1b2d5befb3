"""The ``synthetic`` kitchen dataset: real generated mp4 files, determinism, grammar, splits."""

from __future__ import annotations

import re

import numpy as np
import pytest

from actrec.errors import ConfigError, DataError
from actrec.io.video import open_video
from actrec_plugins.datasets.synthetic import SyntheticKitchen
from actrec_plugins.datasets.synthetic.render import write_mp4
from actrec_plugins.datasets.synthetic.grammar import KITCHENS, grammar, sample_timeline

TINY = dict(participants=2, videos_per_participant=1, frames_mean=24, size=32, folds=2)


def _kitchen(root, **changes):
    return SyntheticKitchen(SyntheticKitchen.Config(root=root, **{**TINY, **changes}))


def _decode_all(index):
    return {vid: open_video(r.path).read(range(r.num_frames)) for vid, r in index.videos.items()}


def test_index_shape(tiny_kitchen):
    dataset, index = tiny_kitchen
    assert index.name == "synthetic" and index.fps == 15.0 and index.background == 0
    assert index.classes == ("background", "cut", "fry", "peel", "pour", "stir", "wash")
    assert sorted(index.videos) == ["a_P01_01", "a_P02_01", "a_P03_01"]
    for r in index.videos.values():
        assert r.labels.dtype == np.int64 and 30 <= r.num_frames <= 50
        assert r.labels.min() >= 0 and r.labels.max() < len(index.classes)
        assert r.labels[0] == 0  # every video opens with background
        assert r.path.parent == dataset.folder and r.path.suffix == ".mp4"


def test_videos_decode_at_declared_rate_and_length(tiny_kitchen):
    _, index = tiny_kitchen
    for r in index.videos.values():
        v = open_video(r.path)
        assert v.num_frames == r.num_frames
        assert v.source_fps == pytest.approx(15.0) and v.size == (32, 32)


def test_leave_person_out_splits(tiny_kitchen):
    _, index = tiny_kitchen
    assert list(index.splits) == ["1", "2", "3"]
    people = {vid: r.participant for vid, r in index.videos.items()}
    tested = []
    for split in index.splits.values():
        train = {people[v] for v in split.train}
        test = {people[v] for v in split.test}
        assert train and test and not train & test
        assert set(split.train) | set(split.test) == set(index.videos)
        tested += sorted(test)
    assert sorted(tested) == ["P01", "P02", "P03"]  # each person is tested exactly once


def test_same_seed_same_labels_and_frames(tmp_path):
    a = _kitchen(tmp_path / "one").load()
    b = _kitchen(tmp_path / "two").load()
    assert list(a.videos) == list(b.videos)
    for vid in a.videos:
        np.testing.assert_array_equal(a.videos[vid].labels, b.videos[vid].labels)
    frames_a, frames_b = _decode_all(a), _decode_all(b)
    for vid in a.videos:
        np.testing.assert_array_equal(frames_a[vid], frames_b[vid])
    # Another seed gives other videos.
    c = _kitchen(tmp_path / "one", seed=1).load()
    assert any(c.videos[v].labels.shape != a.videos[v].labels.shape
               or np.any(c.videos[v].labels != a.videos[v].labels) for v in a.videos)
    frames_c = _decode_all(c)
    assert not all(frames_c[v].shape == frames_a[v].shape
                   and np.array_equal(frames_c[v], frames_a[v]) for v in a.videos)


def test_resume_regenerates_only_missing_files_identically(tmp_path):
    ds = _kitchen(tmp_path)
    index = ds.load()
    paths = sorted(r.path for r in index.videos.values())
    original = paths[1].read_bytes()
    kept = paths[0].stat().st_mtime_ns
    paths[1].unlink()
    (ds.folder / "manifest.json").unlink()  # as if generation had been interrupted
    again = ds.load()
    assert paths[1].read_bytes() == original  # the same stream re-renders the same file
    assert paths[0].stat().st_mtime_ns == kept  # finished files are not rewritten
    assert list(again.videos) == list(index.videos)
    # With the manifest present, loading generates nothing.
    stamp = (ds.folder / "manifest.json").stat().st_mtime_ns
    ds.load()
    assert (ds.folder / "manifest.json").stat().st_mtime_ns == stamp


def test_a_folder_where_a_video_goes_is_named_and_leaves_nothing(tmp_path):
    ds = _kitchen(tmp_path)
    ds.load()
    victim = ds.folder / "a_P02_01.mp4"
    victim.unlink()
    victim.mkdir()  # e.g. an unpacked archive, or a sync tool's conflict folder
    (ds.folder / "manifest.json").unlink()
    with pytest.raises(DataError, match=re.escape(f"{victim}: expected a video file of the "
                                                  "synthetic kitchen, found a folder")):
        ds.load()
    assert sorted(p.name for p in ds.folder.iterdir()) == ["a_P01_01.mp4", "a_P02_01.mp4"]
    victim.rmdir()
    assert ds.load().videos["a_P02_01"].path == victim  # moved away: generation resumes
    # the kitchen's own folder taken by a file
    other = _kitchen(tmp_path / "other")
    other.folder.parent.mkdir(parents=True)
    other.folder.write_text("")
    with pytest.raises(DataError, match=re.escape(f"{other.folder}: expected the synthetic "
                                                  "kitchen's folder, found a file")):
        other.load()


def test_write_mp4_leaves_no_partial_file(tmp_path):
    frames = [np.zeros((32, 32, 3), np.uint8)] * 3

    def failing():
        yield from frames
        raise RuntimeError("renderer failed")

    with pytest.raises(RuntimeError, match="renderer failed"):
        write_mp4(tmp_path / "v.mp4", failing(), fps=15.0, size=32)
    (tmp_path / "d.mp4").mkdir()
    with pytest.raises(DataError, match=re.escape(f"{tmp_path / 'd.mp4'}: cannot write the "
                                                  "video there")):
        write_mp4(tmp_path / "d.mp4", iter(frames), fps=15.0, size=32)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.mp4"]  # no *.part.mp4 left
    assert write_mp4(tmp_path / "v.mp4", iter(frames), fps=15.0, size=32) == 3
    assert open_video(tmp_path / "v.mp4").num_frames == 3


def test_vocabularies_differ_partly(tmp_path):
    a = set(_kitchen(tmp_path, kitchen="a").classes)
    b = set(_kitchen(tmp_path, kitchen="b").classes)
    assert a & b == {"background", "cut", "stir", "pour", "wash"}
    assert a - b == {"peel", "fry"} and b - a == {"bake", "blend"}
    # Different kitchens are different folders and ids.
    assert _kitchen(tmp_path, kitchen="a").folder != _kitchen(tmp_path, kitchen="b").folder


def test_grammar_transition_statistics():
    g = grammar("a")
    np.testing.assert_allclose(g.transitions.sum(axis=1), 1.0)
    assert np.all(np.diag(g.transitions) == 0)
    rng = np.random.default_rng(0)
    n = len(g.actions)
    counts = np.zeros((n, n))
    state = g.first(rng)
    for _ in range(30000):
        nxt = g.next(state, rng)
        counts[state, nxt] += 1
        state = nxt
    empirical = counts / counts.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(empirical, g.transitions, atol=0.025)
    # Hand values: next in recipe order 0.6, the one after 0.25, the other three 0.05 each.
    assert g.transitions[0, 1] == pytest.approx(0.6)
    assert g.transitions[0, 2] == pytest.approx(0.25)
    assert g.transitions[0, 3] == pytest.approx(0.05)
    assert g.actions == KITCHENS["a"].actions


def test_timelines_follow_the_grammar(tmp_path):
    g = grammar("b")
    rng = np.random.default_rng(3)
    seen = np.zeros((len(g.actions),) * 2)
    for _ in range(50):
        segs = sample_timeline(g, 400, 15.0, 1.0, rng)
        assert segs[0].action == -1 and segs[0].start == 0
        assert sum(s.length for s in segs) == 400
        assert all(a.start + a.length == b.start for a, b in zip(segs, segs[1:]))
        acts = [s.action for s in segs if s.action >= 0]
        for x, y in zip(acts, acts[1:]):
            seen[x, y] += 1
        # Actions are separated by background, never back to back.
        assert all(not (a.action >= 0 and b.action >= 0) for a, b in zip(segs, segs[1:]))
    assert np.all(seen[g.transitions == 0] == 0)
    # The generated dataset's labels obey the same grammar.
    index = _kitchen(tmp_path, kitchen="b", frames_mean=200).load()
    names = index.classes
    for r in index.videos.values():
        runs = [names[c] for i, c in enumerate(r.labels) if c and (i == 0 or r.labels[i - 1] != c)]
        for x, y in zip(runs, runs[1:]):
            assert g.transitions[g.actions.index(x), g.actions.index(y)] > 0


def test_bad_options(tmp_path):
    with pytest.raises(ConfigError, match="kitchen 'z'"):
        _kitchen(tmp_path, kitchen="z").load()
    with pytest.raises(ConfigError, match="folds"):
        _kitchen(tmp_path, folds=3).load()
    with pytest.raises(ConfigError, match="size"):
        _kitchen(tmp_path, size=48).load()
    cfg = SyntheticKitchen.Config.from_options({"kitchen": "b", "size": "32", "noise": "0.1"})
    assert cfg.kitchen == "b" and cfg.size == 32 and cfg.noise == 0.1


def test_default_root_comes_from_the_workspace(tmp_path, monkeypatch):
    monkeypatch.setenv("ACTREC_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("ACTREC_DATA_SYNTHETIC", raising=False)
    ds = SyntheticKitchen()
    assert ds.folder.parent == tmp_path / "home" / "data" / "synthetic"
    assert ds.config.root == tmp_path / "home" / "data" / "synthetic"  # filled by actrec
    monkeypatch.setenv("ACTREC_DATA_SYNTHETIC", str(tmp_path / "elsewhere"))
    ds = SyntheticKitchen()  # the root is resolved when the plugin is made
    assert ds.folder.parent == tmp_path / "elsewhere"
    assert ds.folder.name.startswith("a-")


@pytest.mark.slow
def test_temporal_context_helps_on_colorgrad_features(tmp_path):
    """The point of the dataset: on the default kitchen, leave-person-out split 1, an LSTM over
    colorgrad features beats the same network without recurrence (one frame is ambiguous),
    and learns the kitchen well (measured: LSTM 0.89-0.96, per-frame 0.77-0.79 over seeds)."""
    import torch

    from actrec.extract import extract_features
    from actrec.io.features import FeatureStore
    from actrec_plugins.extractors.colorgrad import ColorGradient

    index = SyntheticKitchen(SyntheticKitchen.Config(root=tmp_path / "data")).load()
    report = extract_features(index, ColorGradient(), tmp_path / "f.zarr", dataset_ref="syn")
    assert report.ok
    store = FeatureStore.open(tmp_path / "f.zarr")
    split = store.splits["1"]
    train = [tuple(map(torch.from_numpy, store.read(v))) for v in split["train"]]
    test = [tuple(map(torch.from_numpy, store.read(v))) for v in split["test"]]
    feats = torch.cat([x for x, _ in train])
    mean, std = feats.mean(0), feats.std(0) + 1e-3
    classes = len(store.classes)

    def accuracy(recurrent: bool) -> float:
        torch.manual_seed(0)
        inp = torch.nn.Linear(feats.shape[1], 64)
        lstm = torch.nn.LSTM(64, 64) if recurrent else None
        out = torch.nn.Linear(64, classes)
        params = [*inp.parameters(), *out.parameters(), *(lstm.parameters() if lstm else [])]
        opt = torch.optim.Adam(params, lr=3e-3)

        def forward(x):  # [T, D] -> [T, K]
            h = torch.relu(inp((x - mean) / std))
            if lstm is not None:
                h = lstm(h[:, None])[0][:, 0]  # one sequence: [T, 1, H] -> [T, H]
            return out(h)

        for _ in range(20):
            for x, y in train:
                loss = torch.nn.functional.cross_entropy(forward(x), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
        with torch.no_grad():
            hits = torch.cat([forward(x).argmax(1) == y for x, y in test])
        return hits.float().mean().item()

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: threads only add contention on shared CI cores
    try:
        per_frame, temporal = accuracy(False), accuracy(True)
    finally:
        torch.set_num_threads(threads)
    assert temporal > 0.8
    assert temporal > per_frame + 0.05
