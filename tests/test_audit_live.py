"""Audit of ``actrec live`` on real files: a dataset whose videos are 30 fps mp4s labelled at
15 fps (the run's features made at 15 fps), recognised live from the files and from stream
URLs, gives ``eval --online``'s classes AND probabilities frame by frame; sources at other
rates are paired with frames as extraction pairs them; a store extracted again with other
options since training is refused; Ctrl-C and SIGTERM close every stream as ``stopped``, with
every record, the status lines and a playable video kept."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from test_live import _live

CLASSES = ["background", "red_right", "blue_down"]
LABEL_FPS, VIDEO_FPS = 15.0, 30.0


def _clip(labels: list[int], seed: int, repeat: int) -> np.ndarray:
    """RGB frames ``[len(labels) * repeat, 32, 32, 3]`` (``repeat`` video frames per label):
    grey background, a red square moving right (class 1) or a blue one moving down (2)."""
    rng = np.random.default_rng(seed)
    n = len(labels) * repeat
    frames = np.full((n, 32, 32, 3), 90, np.uint8)
    for t in range(n):
        c, p = labels[t // repeat], 2 + (t * 2) % 20
        if c == 1:
            frames[t, 12:20, p:p + 8] = (230, 20, 20)
        elif c == 2:
            frames[t, p:p + 8, 12:20] = (20, 20, 230)
    return np.clip(frames.astype(int) + rng.integers(-6, 7, frames.shape), 0, 255).astype(
        np.uint8)


def _write_dataset(root: Path, write_mp4) -> None:
    """MS-TCN layout: four 30 fps mp4s whose labels count 15 fps frames (54 labels, 108
    video frames each); alice_* train, bob_* test."""
    (root / "groundTruth").mkdir(parents=True)
    (root / "mapping.txt").write_text("".join(f"{i} {c}\n" for i, c in enumerate(CLASSES)))
    for k, name in enumerate(["alice_1", "alice_2", "bob_1", "bob_2"]):
        labels = [0] * 10 + [1 + k % 2] * 20 + [0] * 8 + [2 - k % 2] * 16
        write_mp4(root / f"{name}.mp4", _clip(labels, k, 2), fps=VIDEO_FPS)
        (root / "groundTruth" / f"{name}.txt").write_text(
            "".join(CLASSES[c] + "\n" for c in labels))
    (root / "splits").mkdir()
    (root / "splits" / "train.split1.bundle").write_text("alice_1.txt\nalice_2.txt\n")
    (root / "splits" / "test.split1.bundle").write_text("bob_1.txt\nbob_2.txt\n")


def _train(store: Path, run_dir: Path, iterations: int = 40) -> Path:
    from actrec.pipeline import train_from_refs

    return train_from_refs("lstm", d1=str(store), model_options={"hidden": "16"},
                           run_dir=run_dir, history=16, iterations=iterations, mix=(8, 0),
                           optimizer="adam", lr=0.01).run_dir


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(data root, store, run, {video path: eval --online probabilities [T, 3]})."""
    from conftest import _write_mp4

    from actrec.evaluate import evaluate_run
    from actrec.io.features import FeatureStore
    from actrec.pipeline import extract_dataset

    root = tmp_path_factory.mktemp("audit-live")
    _write_dataset(root / "mydata", _write_mp4)
    store = root / "s.zarr"
    extract_dataset("mstcn", dataset_options={"root": str(root / "mydata"),
                                              "fps": str(LABEL_FPS)}, out=store)
    run = _train(store, root / "run")
    result = evaluate_run(run, online=True, keep_probabilities=True)
    (probs,) = result.probabilities.values()
    opened = FeatureStore.open(store)
    expected = {opened.video_attrs(v)["source"]["path"]: p
                for v, p in zip(probs.ids, probs.probabilities)}
    return root, store, run, expected


@pytest.mark.slow
def test_30fps_files_and_urls_give_eval_onlines_classes_and_probabilities(setup, capsys):
    """Every frame: the class and the three class probabilities of ``eval --online``
    (float tolerance), the frame index and time at the run's 15 fps (frame i is the 30 fps
    file's frame 2i, at 2i / 30 s), from the file and from its file:// stream URL."""
    _, _, run, expected = setup
    videos = list(expected)
    assert all(p.shape == (54, 3) for p in expected.values())
    assert sum(len(np.unique(p.argmax(1))) for p in expected.values()) > len(videos), \
        "the tiny run predicts one class per video: the comparison would prove little"
    sources = videos + [f"file://{v}" for v in videos]
    code, records, err = _live([str(run), *sources], capsys)
    assert code == 0, err
    assert "run on mstcn:fps=15 (D1, 15 fps)" in err  # the summary names what it recognised
    for s, source in enumerate(sources):
        probs = expected[source.removeprefix("file://")]
        frames = [r for r in records if r.get("stream") == s and "frame" in r]
        assert [r["frame"] for r in frames] == list(range(54))
        assert [r["index"] for r in frames] == probs.argmax(1).tolist()
        for r, p in zip(frames, probs):
            assert r["time"] == pytest.approx(2 * r["frame"] / VIDEO_FPS, abs=1e-6)
            live = {t["label"]: t["score"] for t in r["top"]}
            assert [live[c] for c in CLASSES] == pytest.approx(p.tolist(), abs=2e-6)
            assert r["score"] == pytest.approx(float(p.max()), abs=2e-6)


@pytest.mark.slow
def test_an_early_fusion_run_equals_eval_online(setup, tmp_path, capsys):
    """Two streams of one store (colorgrad 2x2x8 and 1x1x4, trained in the order coarse,
    fine): each rebuilt, rounded to float16, concatenated in the run's order and standardised
    together, as evaluation reads them."""
    from actrec import Recognizer
    from actrec.evaluate import evaluate_run
    from actrec.pipeline import extract_dataset, train_from_refs

    root, _, _, expected = setup
    store = tmp_path / "two.zarr"
    options = {"root": str(root / "mydata"), "fps": str(LABEL_FPS)}
    extract_dataset("mstcn", dataset_options=options, out=store, stream="fine")
    extract_dataset("mstcn", dataset_options=options, out=store, stream="coarse",
                    extractor_options={"grid": "1", "bins": "4"})
    run = train_from_refs("lstm", d1=str(store), model_options={"hidden": "16"},
                          run_dir=tmp_path / "run", history=16, iterations=40, mix=(8, 0),
                          optimizer="adam", lr=0.01, streams=["coarse", "fine"]).run_dir
    assert [f.dim for f in Recognizer.from_run(run).run.features] == [19, 134]
    (probs,) = evaluate_run(run, online=True, keep_probabilities=True).probabilities.values()
    paths = {Path(v).stem: v for v in expected}
    want = {paths[v]: p for v, p in zip(probs.ids, probs.probabilities)}
    code, records, err = _live([str(run), *want], capsys)
    assert code == 0, err
    for s, p in enumerate(want.values()):
        frames = [r for r in records if r.get("stream") == s and "frame" in r]
        assert [r["index"] for r in frames] == p.argmax(1).tolist()
        got = np.array([[{t["label"]: t["score"] for t in r["top"]}[c] for c in CLASSES]
                        for r in frames])
        assert np.abs(got - p).max() < 2e-6


@pytest.mark.parametrize("source_fps, run_fps", [(30, 15), (25, 30), (29.97, 30), (30, 25),
                                                 (14.985, 15)])
def test_sources_at_other_rates_are_paired_with_frames_as_extraction_pairs_them(
        tmp_path, write_mp4, level_frames, source_fps, run_fps):
    """A file or stream at ``source_fps`` read for a run at ``run_fps`` yields, frame by frame,
    the source frames ``actrec extract`` reads for it (``open_video`` with the label rate as
    nominal rate): 30 -> 15 every other frame, 25 -> 30 one repeated in five, 29.97 -> 30
    one to one (never a dropped frame every 33 s)."""
    from actrec.io.video import open_video
    from actrec.live_sources import open_source

    # 600 frames: resampling 29.97 as 29.97 would repeat frame 500 (0.001 x 500 = half a frame)
    path = write_mp4(tmp_path / "v.mp4", level_frames(600, 16, 16), fps=source_fps)
    levels = np.array([20 + 9 * i for i in range(24)])  # level_frames' grey of frame i % 24
    wanted = open_video(path, fps=run_fps, nominal_fps=run_fps).source_indices
    hand = {(30, 15): np.arange(0, 600, 2), (29.97, 30): np.arange(600),
            (14.985, 15): np.arange(600)}
    if (source_fps, run_fps) in hand:
        assert np.array_equal(wanted, hand[(source_fps, run_fps)])
    for text in (str(path), f"file://{path}"):
        source = open_source(text, run_fps)
        got = [int(np.abs(levels - f.mean()).argmin()) for _, f in source.frames()]
        assert got == (wanted % 24).tolist(), text
        assert source.fps == run_fps


@pytest.mark.parametrize("source_fps, run_fps, label_fps, by_time",
                         [(29.97, 15, 30, False), (59.94, 60, 60, True), (59.94, 30, 60, True)])
def test_near_rate_sources_are_counted_as_extraction_counts_them(
        tmp_path, write_mp4, level_frames, source_fps, run_fps, label_fps, by_time):
    """A run whose extractor reads at its own rate (``-x fps=15``) on 29.97 fps files
    labelled at 30: extraction takes the file as 30 fps (every other frame); live took it as
    29.97 and drifted from frame 251 on (8 s): 199 of 450 frames one source frame off, and
    one frame too many. Labels that count time (EPIC's 60 on 59.94 fps files) resample by
    timestamps, as extraction does (live read the file one to one: 399 of 900 frames off)."""
    from actrec.io.video import open_video
    from actrec.live_sources import open_source

    path = write_mp4(tmp_path / "v.mp4", level_frames(1100, 16, 16), fps=source_fps)
    levels = np.array([20 + 9 * i for i in range(24)])
    wanted = open_video(path, fps=run_fps, nominal_fps=None if by_time else label_fps
                        ).source_indices
    if not by_time:
        assert np.array_equal(wanted, np.arange(0, 1100, 2))
    for text in (str(path), f"file://{path}"):
        source = open_source(text, run_fps, nominal_fps=label_fps, by_time=by_time)
        got = [int(np.abs(levels - f.mean()).argmin()) for _, f in source.frames()]
        assert got == (wanted % 24).tolist(), text


@pytest.mark.slow
def test_a_run_reading_at_its_own_rate_on_near_rate_files_equals_eval_online(tmp_path,
                                                                             write_mp4, capsys):
    """colorgrad ``-x fps=15`` on 29.97 fps files labelled at 30 fps (540 frames, 18 s): the
    run records the label rate and live takes the files at 30 fps as extraction did."""
    from actrec import Recognizer
    from actrec.evaluate import evaluate_run
    from actrec.io.features import FeatureStore
    from actrec.pipeline import extract_dataset

    data = tmp_path / "mydata"
    (data / "groundTruth").mkdir(parents=True)
    (data / "mapping.txt").write_text("".join(f"{i} {c}\n" for i, c in enumerate(CLASSES)))
    for k, name in enumerate(["alice_1", "alice_2", "bob_1"]):
        labels = [0] * 100 + [1 + k % 2] * 200 + [0] * 80 + [2 - k % 2] * 160
        write_mp4(data / f"{name}.mp4", _clip(labels, k, 1), fps=29.97)
        (data / "groundTruth" / f"{name}.txt").write_text(
            "".join(CLASSES[c] + "\n" for c in labels))
    (data / "splits").mkdir()
    (data / "splits" / "train.split1.bundle").write_text("alice_1.txt\nalice_2.txt\n")
    (data / "splits" / "test.split1.bundle").write_text("bob_1.txt\n")
    store = tmp_path / "s.zarr"
    extract_dataset("mstcn", dataset_options={"root": str(data), "fps": "30"}, out=store,
                    extractor_options={"fps": "15"})
    run = _train(store, tmp_path / "run")
    rec = Recognizer.from_run(run)
    assert (rec.fps, rec.label_fps, rec.labels_by_time) == (15.0, 30.0, False)
    (probs,) = evaluate_run(run, online=True, keep_probabilities=True).probabilities.values()
    (p,) = probs.probabilities
    video = FeatureStore.open(store).video_attrs("bob_1")["source"]["path"]
    code, records, err = _live([str(run), video], capsys)
    assert code == 0, err
    frames = [r for r in records if "frame" in r]
    assert len(frames) == len(p) == 270
    assert [r["index"] for r in frames] == p.argmax(1).tolist()
    got = np.array([[{t["label"]: t["score"] for t in r["top"]}[c] for c in CLASSES]
                    for r in frames])
    assert np.abs(got - p).max() < 2e-6


@pytest.mark.parametrize("source_fps, run_fps", [(30, 15), (25, 30), (30, 25)])
def test_a_video_rate_source_hands_every_source_frame_once_with_its_output_frame(
        tmp_path, write_mp4, level_frames, source_fps, run_fps):
    """For an extractor whose windows run at the video's own rate (``window_rate=video``):
    each output frame comes with the source frames since the one before, ending with its own
    (none when it repeats the previous one's), so every source frame up to the last output
    frame's is fed once, in order, from a file and from a stream."""
    from actrec.io.video import open_video
    from actrec.live_sources import open_source

    path = write_mp4(tmp_path / "v.mp4", level_frames(120, 16, 16), fps=source_fps)
    levels = np.array([20 + 9 * i for i in range(24)])
    wanted = open_video(path, fps=run_fps, nominal_fps=run_fps).source_indices
    for text in (str(path), f"file://{path}"):
        items = list(open_source(text, run_fps, video_rate=True).frames())
        assert [i for i, _, _ in items] == list(range(len(wanted)))
        sizes = [fresh.shape[0] for _, _, fresh in items]
        assert sizes == np.diff(wanted, prepend=-1).tolist()  # 30 -> 15: 1, 2, 2, 2, ...
        fed = np.concatenate([fresh for _, _, fresh in items])
        got = [int(np.abs(levels - f.mean()).argmin()) for f in fed]
        assert got == (np.arange(wanted[-1] + 1) % 24).tolist(), text
        for (_, image, _), src in zip(items, wanted):
            assert int(np.abs(levels - image.mean()).argmin()) == src % 24


@pytest.mark.slow
def test_a_run_whose_windows_run_at_the_videos_rate_equals_eval_online(setup, tmp_path,
                                                                        capsys):
    """``framediff -x window_rate=video`` on the 30 fps files (rows kept at the 15 fps labels):
    live fed the extractor the 15 fps frames, so its windows spanned twice the time the
    stored ones did (probabilities off by up to 0.77, one frame in ten classified otherwise);
    now every 30 fps frame is fed, the row of each label frame's own kept."""
    from actrec.evaluate import evaluate_run
    from actrec.pipeline import extract_dataset

    root, _, _, expected = setup
    store = tmp_path / "fd.zarr"
    extract_dataset("mstcn", dataset_options={"root": str(root / "mydata"),
                                              "fps": str(LABEL_FPS)}, out=store,
                    extractor="framediff",
                    extractor_options={"window_rate": "video", "grid": "2", "resize": "32"})
    run = _train(store, tmp_path / "run")
    (probs,) = evaluate_run(run, online=True, keep_probabilities=True).probabilities.values()
    paths = {Path(v).stem: v for v in expected}
    want = {paths[v]: p for v, p in zip(probs.ids, probs.probabilities)}
    sources = list(want) + [f"file://{v}" for v in want]
    code, records, err = _live([str(run), *sources], capsys)
    assert code == 0, err
    for s, source in enumerate(sources):
        p = want[source.removeprefix("file://")]
        frames = [r for r in records if r.get("stream") == s and "frame" in r]
        assert [r["index"] for r in frames] == p.argmax(1).tolist()
        got = np.array([[{t["label"]: t["score"] for t in r["top"]}[c] for c in CLASSES]
                        for r in frames])
        assert np.abs(got - p).max() < 2e-6


@pytest.mark.slow
def test_a_store_extracted_again_with_other_options_is_refused(setup, tmp_path, capsys):
    """Live rebuilds the extractor from the run's store: after the store was deleted and
    extracted again with another resize (the same 134-d features), it fed the model other
    features than it was trained on, without a word."""
    from actrec.pipeline import extract_dataset

    root, store, _, expected = setup
    copy = tmp_path / "s.zarr"
    shutil.copytree(store, copy)
    run = _train(copy, tmp_path / "run", iterations=2)
    video = next(iter(expected))
    code, records, err = _live([str(run), video, "--no-frames"], capsys)
    assert code == 0, err
    shutil.rmtree(copy)  # a store holds one source: deleted, then extracted again
    extract_dataset("mstcn", dataset_options={"root": str(root / "mydata"),
                                              "fps": str(LABEL_FPS)},
                    extractor_options={"resize": "32"}, out=copy)
    code, records, err = _live([str(run), video], capsys)
    assert code == 1 and records == [] and "Traceback" not in err
    assert f"feature store {copy} changed since the run was trained on it" in err
    assert "'resize': 64" in err and "'resize': 32" in err


@pytest.fixture(scope="module")
def head_run(setup):
    """(frame-head store of the colorgrad store (split 1, logits), a run trained on it,
    {video path: its eval --online probabilities})."""
    from actrec.evaluate import evaluate_run
    from actrec.frame_head import HeadConfig, extract_head_features

    root, store, _, expected = setup
    report = extract_head_features(store, "1", output="logits",
                                   config=HeadConfig(epochs=2, min_steps=20))
    run = _train(report.store, root / "head-run")
    (probs,) = evaluate_run(run, online=True, keep_probabilities=True).probabilities.values()
    paths = {Path(v).stem: v for v in expected}
    return report.store, run, {paths[v]: p for v, p in zip(probs.ids, probs.probabilities)}


@pytest.mark.slow
def test_a_run_on_frame_head_outputs_applies_the_head_live(head_run, capsys):
    """The papers' input: a frame classifier's per-frame logits (``actrec.frame_head``). Live
    rebuilt the store's "extractor" ``colorgrad-logits-split1``, which no plugin is, and
    refused the run; now it extracts the backbone's features, rounds them to the store's
    float16 as the head read them, applies the saved head, and equals ``eval --online``."""
    _, run, expected = head_run
    videos = list(expected)
    code, records, err = _live([str(run), *videos], capsys)
    assert code == 0, err
    for s, video in enumerate(videos):
        frames = [r for r in records if r.get("stream") == s and "frame" in r]
        probs = expected[video]
        assert len(frames) == len(probs) == 54
        assert [r["index"] for r in frames] == probs.argmax(1).tolist()
        for r, p in zip(frames, probs):
            live = {t["label"]: t["score"] for t in r["top"]}
            assert [live[c] for c in CLASSES] == pytest.approx(p.tolist(), abs=2e-6)


@pytest.mark.slow
def test_a_frame_head_trained_again_is_refused(head_run, setup, tmp_path, capsys):
    """The head file beside the store is not the head that filled it (trained again with
    other options): its outputs are not the run's inputs."""
    from actrec.frame_head import HeadConfig, extract_head_features

    store, run, expected = head_run
    other = extract_head_features(setup[1], "1", output="logits", out=tmp_path / "o.zarr",
                                  config=HeadConfig(epochs=1, min_steps=10, seed=3))
    saved = store.parent / f"{store.name.removesuffix('.zarr')}.head.pt"
    kept = tmp_path / "kept.head.pt"
    shutil.copy(saved, kept)
    shutil.copy(other.head, saved)
    try:
        code, records, err = _live([str(run), next(iter(expected))], capsys)
    finally:
        shutil.copy(kept, saved)
    assert code == 1 and records == [] and "Traceback" not in err
    assert f"{saved} is not the head whose outputs fill {store}" in err


@pytest.mark.slow
@pytest.mark.parametrize("scalers", [[{"std": [1.0]}], [], "wrong width"])
def test_a_damaged_standardisation_is_refused_by_name(setup, tmp_path, capsys, scalers):
    """A checkpoint whose saved feature standardisation is damaged (a key missing, the list
    empty for D1, statistics of another width): a one-line error naming the checkpoint; a
    missing key was a KeyError traceback, a wrong width a broadcasting error mid-stream."""
    import torch

    _, _, run, expected = setup
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    ckpt = torch.load(copy / "checkpoint.pt", weights_only=True)
    if scalers == "wrong width":
        scalers = [{"mean": torch.zeros(5), "std": torch.ones(5)}]
    ckpt["input_scalers"] = scalers or [None]
    torch.save(ckpt, copy / "checkpoint.pt")
    code, records, err = _live([str(copy), next(iter(expected))], capsys)
    assert code == 1 and records == [] and "Traceback" not in err
    assert f"Error: {copy / 'checkpoint.pt'}: damaged feature standardisation of D1" in err


@pytest.mark.slow
def test_run_live_stops_between_two_frames_on_ctrl_c(setup):
    """Ctrl-C arriving while a sink handles frame 5 (inside a tick): the tick is finished
    (its record, its event), the stream closed as ``stopped`` after frame 5, ``LiveStopped``
    carries the report, and Python's handler is back afterwards."""
    from actrec import Recognizer
    from actrec.live import LiveStopped, run_live

    _, _, run, expected = setup

    class Sink:
        def __init__(self) -> None:
            self.frames: list[int] = []
            self.events: list[dict] = []
            self.status: list[dict] = []

        def on_frame(self, stream, frame, record) -> None:
            self.frames.append(record["frame"])
            if record["frame"] == 5:
                os.kill(os.getpid(), signal.SIGINT)

        def on_event(self, record) -> None:
            self.events.append(record)

        def on_status(self, record) -> None:
            self.status.append(record)

    sink = Sink()
    with pytest.raises(LiveStopped) as stopped:
        run_live(Recognizer.from_run(run), [next(iter(expected))], sinks=[sink])
    assert sink.frames == list(range(6))
    assert sink.events[-1]["event"] == "end" and \
        sink.events[-1]["end"] == pytest.approx(6 / LABEL_FPS)
    assert [(r["status"], r["frames"]) for r in sink.status] == [("stopped", 6)]
    assert stopped.value.signum == signal.SIGINT
    assert [(s.status, s.frames) for s in stopped.value.report.streams] == [("stopped", 6)]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


@pytest.mark.slow
def test_a_written_video_keeps_the_clock_across_dropped_frames(setup, tmp_path):
    """``--realtime`` with a 0.6 s stall at frame 10: the frames that came meanwhile are
    dropped and counted; the video written with the labels holds the last answered frame again
    in their place, so frame i of it is at i / 15 s as the records' ``time`` (it skipped them:
    every later frame showed up to 0.6 s early)."""
    import cv2

    from actrec import Recognizer
    from actrec.live import run_live
    from actrec.live_output import VideoSink

    _, _, run, expected = setup
    rec = Recognizer.from_run(run)
    step, calls = rec.run.model.step, [0]

    def stalled(*args, **kwargs):  # call 1 warms up; call 12 steps frame 10
        calls[0] += 1
        if calls[0] == 12:
            time.sleep(0.6)
        return step(*args, **kwargs)

    rec.run.model.step = stalled
    answered: list[int] = []

    class Keep:
        def on_frame(self, stream, frame, record) -> None:
            answered.append(record["frame"])

    out = tmp_path / "v.mp4"
    report = run_live(rec, [next(iter(expected))], realtime=True,
                      sinks=[Keep(), VideoSink(out, 1, rec.fps)])
    (status,) = report.streams
    assert status.dropped >= 4 and answered[-1] + 1 == status.frames + status.dropped
    cap = cv2.VideoCapture(str(out))
    images = []
    while True:
        ok, image = cap.read()
        if not ok:
            break
        images.append(image.astype(int))
    cap.release()
    assert len(images) == answered[-1] + 1 == 54
    for a, b in itertools.pairwise(answered):
        for gap in range(a + 1, b):  # a dropped frame shows the last answered one again
            assert np.abs(images[gap] - images[a]).mean() < 2.0


@pytest.mark.slow
def test_the_frame_rate_is_counted_from_the_clocks_start(setup):
    """A file played at 15 fps after a first model call of 1.5 s: ``running_seconds`` is the
    time its 54 frames took (53 periods, 3.53 s; not the warm-up, nor opening or closing the
    source), and ``frames_per_second`` about 15. The bench divided by the whole session less
    the warm-up, so opening and closing the sources counted as frames' time: 364 frames/s
    reported for 60 frames of 0.58 ms each (1460 frames/s measured from the clock)."""
    from actrec import Recognizer
    from actrec.live import run_live

    _, _, run, expected = setup
    rec = Recognizer.from_run(run)
    step, calls = rec.run.model.step, [0]
    warmed_up: list[float] = []  # when the warm-up call returned: the clock starts after it

    def slow_first(*args, **kwargs):
        calls[0] += 1
        if calls[0] == 1:
            time.sleep(1.5)
            out = step(*args, **kwargs)
            warmed_up.append(time.perf_counter())
            return out
        return step(*args, **kwargs)

    class LastAnswer:  # when the last frame's answer reached the sinks (after it was given)
        seen = 0.0

        def on_frame(self, stream, frame, record) -> None:
            LastAnswer.seen = time.perf_counter()

    rec.run.model.step = slow_first
    report = run_live(rec, [next(iter(expected))], realtime=True, sinks=[LastAnswer()])
    assert report.streams[0].frames + report.streams[0].dropped == 54
    assert report.warmup_ms >= 1500
    # Frame 53 is due 53 periods after the clock's start, and the clock runs between the
    # warm-up's end and the last answer (bounds this process measured, however loaded the
    # machine is: the warm-up, or the source's opening or closing, would fall outside them).
    assert 53 / 15 - 0.05 <= report.running_seconds <= LastAnswer.seen - warmed_up[0]
    assert report.seconds >= report.running_seconds + 1.5
    assert report.frames_per_second(0) == pytest.approx(
        report.streams[0].frames / report.running_seconds)
    assert report.to_dict()["running_seconds"] == pytest.approx(report.running_seconds,
                                                                abs=1e-3)


@pytest.mark.slow
def test_realtime_latency_counts_the_time_a_frame_waited_for_the_loop(setup):
    """Frames every 67 ms and a model step of 100 ms: the frame taken at each tick arrived
    during the step before and waited for it (on average a third of a period); ``latency_ms``
    counted only decode, extract and step, as if each frame had been taken as it arrived.
    Now ``queue`` holds that wait and ``latency_ms`` is the sum, arrival to answer; files read
    as fast as they decode have no queue."""
    from actrec import Recognizer
    from actrec.live import run_live

    _, _, run, expected = setup
    video = next(iter(expected))
    rec = Recognizer.from_run(run)
    step = rec.run.model.step

    def slow(*args, **kwargs):
        time.sleep(0.1)
        return step(*args, **kwargs)

    rec.run.model.step = slow
    records: list[dict] = []

    class Keep:
        def on_frame(self, stream, frame, record) -> None:
            records.append(record)

    report = run_live(rec, [video], realtime=True, max_frames=12, sinks=[Keep()])
    assert report.streams[0].dropped >= 3
    for r in records:
        assert set(r["timings_ms"]) >= {"queue", "decode", "extract", "step"}
        assert r["latency_ms"] == pytest.approx(sum(r["timings_ms"].values()), abs=0.01)
    assert np.mean([r["timings_ms"]["queue"] for r in records[1:]]) > 5
    records.clear()
    rec.run.model.step = step
    run_live(rec, [video], max_frames=5, sinks=[Keep()])
    assert all("queue" not in r["timings_ms"] for r in records)


@pytest.mark.slow
def test_a_run_on_imported_features_is_refused_saying_why(tmp_path, capsys):
    """Features imported from files (``actrec import mstcn``): no extractor of actrec made
    them; the refusal said only "unknown extractor 'mstcn-import'"."""
    from actrec.importers import import_mstcn

    root = tmp_path / "pub"
    (root / "groundTruth").mkdir(parents=True)
    (root / "features").mkdir()
    (root / "mapping.txt").write_text("".join(f"{i} {c}\n" for i, c in enumerate(CLASSES)))
    rng = np.random.default_rng(0)
    for name in ("a_1", "a_2", "b_1"):
        labels = [0] * 10 + [1] * 10 + [2] * 10
        (root / "groundTruth" / f"{name}.txt").write_text(
            "".join(CLASSES[c] + "\n" for c in labels))
        np.save(root / "features" / f"{name}.npy", rng.normal(size=(8, 30)).astype(np.float32))
    (root / "splits").mkdir()
    (root / "splits" / "train.split1.bundle").write_text("a_1.txt\na_2.txt\n")
    (root / "splits" / "test.split1.bundle").write_text("b_1.txt\n")
    store = tmp_path / "pub.zarr"
    import_mstcn(root, store, name="pub", lookahead=0)
    run = _train(store, tmp_path / "run", iterations=2)
    code, records, err = _live([str(run), "0"], capsys)
    assert code == 1 and records == [] and "Traceback" not in err
    assert "holds features imported from files (actrec import, 'mstcn-import')" in err


@pytest.mark.slow
def test_a_moved_store_is_found_and_given_with_store(setup, tmp_path, capsys, monkeypatch):
    """The run's store renamed after training: the refusal names the renamed copy (same
    identity) and ``--store`` recognises with it, as with the store in place; a store of other
    data given so is refused. It said only "missing or unreadable", with no way to go on."""
    root, store, _, expected = setup
    monkeypatch.setenv("ACTREC_HOME", str(tmp_path / "home"))
    copy = tmp_path / "data" / "s.zarr"
    shutil.copytree(store, copy)
    run = _train(copy, tmp_path / "run", iterations=2)
    video = next(iter(expected))
    code, before, err = _live([str(run), video, "--no-frames"], capsys)
    assert code == 0, err
    moved = tmp_path / "data" / "renamed.zarr"
    copy.rename(moved)
    code, records, err = _live([str(run), video], capsys)
    assert code == 1 and records == [] and "Traceback" not in err
    assert f"its feature store {copy} is missing or unreadable" in err
    assert f"The same data (the store identity the run recorded) is in {moved}" in err
    code, after, err = _live([str(run), video, "--no-frames", "--store", str(moved)], capsys)
    assert code == 0, err
    assert [r for r in after if "event" in r] == [r for r in before if "event" in r]
    other = tmp_path / "other.zarr"
    from actrec.pipeline import extract_dataset

    extract_dataset("mstcn", dataset_options={"root": str(root / "mydata"),
                                              "fps": str(LABEL_FPS)},
                    extractor_options={"resize": "32"}, out=other)
    code, records, err = _live([str(run), video, "--store", str(other)], capsys)
    assert code == 1 and records == [] and "its source or extractor differs" in err
    code, records, err = _live([str(run), video, "--store", str(moved), "--store",
                                str(moved)], capsys)
    assert code == 1 and "trained on 1 dataset(s); give one --store per dataset" in err


@pytest.mark.slow
def test_a_bad_max_frames_creates_no_output_file(setup, tmp_path, capsys):
    """``--max-frames 0`` was refused after ``--out`` was created: an empty file that the
    next run (``--out`` refuses existing files) then refused too."""
    _, _, run, expected = setup
    out = tmp_path / "o.jsonl"
    code, _, err = _live([str(run), next(iter(expected)), "--max-frames", "0", "--out",
                          str(out)], capsys)
    assert code == 2 and "--max-frames" in err and not out.exists()


def _start_live(run: Path, video: Path, out: Path, mp4: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    return subprocess.Popen(
        [sys.executable, "-m", "actrec", "live", str(run), str(video), "--realtime",
         "--out", str(out), "--write-video", str(mp4)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_ctrl_c_and_sigterm_stop_every_stream_keeping_what_was_written(setup, tmp_path,
                                                                         write_mp4, sig):
    """A realtime session stopped midway: exit 130 (Ctrl-C) or 143 (SIGTERM), between two
    frames; every frame answered is a JSON line, the last action's end (after the last frame
    answered) and the stream's status (``stopped``, not ``failed``) follow, the summary is
    printed, and the video with the action drawn holds every answered frame (a SIGTERM killed
    the process: no status line and an mp4 no player could open)."""
    import cv2

    run = setup[2]
    long = tmp_path / "long.mp4"
    frames = _clip([0] * 10 + [1] * 20 + [0] * 8 + [2] * 16, 0, 2)
    write_mp4(long, np.concatenate([frames] * 5), fps=VIDEO_FPS)  # 270 frames at 15 fps
    out, mp4 = tmp_path / "live.jsonl", tmp_path / "live.mp4"
    proc = _start_live(run, long, out, mp4)
    deadline = time.monotonic() + 120
    while not (out.is_file() and out.read_text().count('"frame"') >= 10):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
        time.sleep(0.1)
    proc.send_signal(getattr(signal, sig))
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == (130 if sig == "SIGINT" else 143), err
    assert "Traceback" not in err
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    answered = [r["frame"] for r in lines if "frame" in r]
    n = len(answered)
    assert 10 <= n < 270
    # From frame 0, in order, each once: in real time a loaded machine may drop frames, so
    # the last answered frame, not n, is where the session ended.
    assert answered[0] == 0 and answered == sorted(set(answered))
    assert lines[-2]["event"] == "end" and \
        lines[-2]["end"] == pytest.approx((answered[-1] + 1) / LABEL_FPS)
    assert {k: lines[-1][k] for k in ("stream", "status", "frames")} == \
        {"stream": 0, "status": "stopped", "frames": n}
    assert "error" not in lines[-1]
    assert "│ stopped │" in err  # the summary table's status
    if sig == "SIGINT":
        assert "Interrupted: live recognition stopped" in err and "stream 0: " in err
    cap = cv2.VideoCapture(str(mp4))
    count = 0
    while cap.read()[0]:
        count += 1
    cap.release()
    assert count == answered[-1] + 1  # a dropped frame is the last answered one again
