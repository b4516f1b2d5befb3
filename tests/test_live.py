"""Live recognition (``actrec live``, ``actrec.Recognizer``) on real synthetic-kitchen mp4s:
its per-frame predictions equal ``actrec eval --online``'s (a run trained with ``--delay``
included), its events are the predicted segments, streams stepped together equal streams run
alone, a failing stream leaves the others running, and a slow first call is not a drop."""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow  # trains three tiny runs once per module (seconds)

DELAY = 3  # frames the delayed run answers late
KITCHEN = {"participants": "3", "videos_per_participant": "1", "frames_mean": "40",
           "size": "32"}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(stores of kitchens a and b, {"ddlstm": joint run, "lstm": run on a, "lstm-delay": run
    on a trained to answer 3 frames late}), evaluated online (the last at its delay)."""
    from actrec.evaluate import evaluate_run
    from actrec.pipeline import extract_dataset, train_from_refs

    root = tmp_path_factory.mktemp("live")
    stores = []
    for k in "ab":
        out = root / f"{k}.zarr"
        extract_dataset(f"synthetic:kitchen={k}", dataset_options={**KITCHEN,
                                                                   "root": str(root / "data")},
                        out=out)
        stores.append(str(out))
    runs = {
        "ddlstm": train_from_refs("ddlstm", d1=stores[0], d2=stores[1],
                                  model_options={"hidden": "16", "layers": "2"},
                                  run_dir=root / "ddlstm", history=16, iterations=60,
                                  mix=(4, 4), optimizer="adam", lr=0.01).run_dir,
        "lstm": train_from_refs("lstm", d1=stores[0], model_options={"hidden": "16"},
                                run_dir=root / "lstm", history=16, iterations=60, mix=(8, 0),
                                optimizer="adam", lr=0.01).run_dir,
        "lstm-delay": train_from_refs("lstm", d1=stores[0], model_options={"hidden": "16"},
                                      run_dir=root / "lstm-delay", history=16, iterations=60,
                                      mix=(8, 0), optimizer="adam", lr=0.01,
                                      delay=DELAY).run_dir,
    }
    for run in runs.values():
        evaluate_run(run, online=True)
    return stores, runs


def _eval_file(run: Path) -> Path:
    """The results file of ``eval --online`` (``eval-lookahead-K.json`` for a delayed run)."""
    (path,) = [p for p in (run / "eval-online.json", run / f"eval-lookahead-{DELAY}.json")
               if p.is_file()]
    return path


def _eval_predictions(run: Path) -> dict[str, np.ndarray]:
    """Video file -> eval --online predictions of D1's test videos."""
    from actrec.io.features import FeatureStore
    from actrec.predictions import load_predictions

    results = json.loads(_eval_file(run).read_text())
    first = next(iter(load_predictions(_eval_file(run),
                                       results["protocol"]["predictions"]).values()))
    store = FeatureStore.open(results["protocol"]["stores"][0])
    return {store.video_attrs(v)["source"]["path"]: first.video(v)[0] for v in first.ids}


def _videos(store: str) -> list[str]:
    from actrec.io.features import FeatureStore

    s = FeatureStore.open(store)
    return [s.video_attrs(v)["source"]["path"] for v in s.videos()]


def _live(args: list[str], capsys) -> tuple[int, list[dict], str]:
    """Run ``actrec live`` in this process: exit code, JSON records on stdout, stderr."""
    from actrec.cli import main

    try:
        main(["live", *args])
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, [json.loads(line) for line in out.splitlines() if line.strip()], err


def _frames_of(records: list[dict], stream: int) -> list[dict]:
    return [r for r in records if r.get("stream") == stream and "label" in r
            and "event" not in r]


def _alone(run: Path, video: str) -> list[int]:
    """Predictions of ``video`` through a one-stream Recognizer, frame by frame."""
    from actrec import Recognizer
    from actrec.live_sources import open_source

    rec = Recognizer.from_run(run)
    return [rec.push(frame).index for _, frame in open_source(video, rec.fps).frames()]


def _alone_scores(run: Path, video: str) -> np.ndarray:
    """Class probabilities [T, K] of ``video`` through a one-stream Recognizer."""
    from actrec import Recognizer
    from actrec.live_sources import open_source

    rec = Recognizer.from_run(run, top_k=99)
    return np.stack([_probs(rec.push(frame), rec.classes)
                     for _, frame in open_source(video, rec.fps).frames()])


def _probs(prediction, classes) -> np.ndarray:
    top = dict(prediction.top)
    return np.array([top[c] for c in classes])


def _segments(pred: np.ndarray, fps: float) -> list[tuple[int, float, float]]:
    """(class, start s, end s) of each run of equal predictions."""
    out, start = [], 0
    for t in range(1, len(pred) + 1):
        if t == len(pred) or pred[t] != pred[start]:
            out.append((int(pred[start]), start / fps, t / fps))
            start = t
    return out


@pytest.mark.parametrize("model", ["ddlstm", "lstm", "lstm-delay"])
def test_live_equals_eval_online_and_events_are_the_predicted_segments(setup, model, capsys):
    _, runs = setup
    delay = DELAY if model == "lstm-delay" else 0
    results = json.loads(_eval_file(runs[model]).read_text())
    assert results["protocol"]["lookahead"] == delay  # eval scored it at the run's delay
    expected = _eval_predictions(runs[model])
    assert sum(len(np.unique(p)) for p in expected.values()) > len(expected), \
        "the tiny run predicts one class per video: the comparison would prove little"
    videos = list(expected)
    code, records, err = _live([str(runs[model]), *videos], capsys)
    assert code == 0, err
    from actrec import Recognizer

    classes = Recognizer.from_run(runs[model]).classes
    for s, video in enumerate(videos):
        frames = _frames_of(records, s)
        n = len(expected[video])
        assert [r["frame"] for r in frames] == list(range(n))
        # each frame answered once the frame `delay` later was taken; the last ones at the end
        assert [r["seen"] for r in frames] == [min(t + delay, n - 1) for t in range(n)]
        assert np.array_equal([r["index"] for r in frames], expected[video])
        assert [r["label"] for r in frames] == [classes[i] for i in expected[video]]
        for r in frames:
            assert r["stream"] == s and r["source"] == video and r["latency_ms"] >= 0
            assert r["time"] == pytest.approx(r["frame"] / 15.0, abs=1e-6)
            assert len(r["top"]) == 3 and r["top"][0] == {"label": r["label"],
                                                          "score": r["score"]}
        starts = [(r["label"], r["start"]) for r in records
                  if r.get("event") == "start" and r["stream"] == s]
        ends = [(r["label"], r["start"], r["end"]) for r in records
                if r.get("event") == "end" and r["stream"] == s]
        segments = _segments(expected[video], 15.0)
        assert starts == [(classes[c], pytest.approx(a, abs=1e-6)) for c, a, _ in segments]
        assert ends == [(classes[c], pytest.approx(a, abs=1e-6), pytest.approx(b, abs=1e-6))
                        for c, a, b in segments]
        status = [r for r in records if r.get("status") and r["stream"] == s]
        assert status == [{**status[0], "status": "ended", "frames": len(expected[video]),
                           "dropped": 0}]


def test_features_equal_the_stored_ones(setup):
    """The rebuilt extractor, the store's float16 rounding and the run's standardisation give
    the evaluation's model inputs bit for bit."""
    import torch

    from actrec import Recognizer
    from actrec.data.scaling import FeatureScaler
    from actrec.io.features import FeatureStore
    from actrec.live_sources import open_source

    stores, runs = setup
    rec = Recognizer.from_run(runs["ddlstm"])
    scaler = FeatureScaler.from_state(torch.load(runs["ddlstm"] / "checkpoint.pt",
                                                 weights_only=True)["input_scalers"][0])
    store = FeatureStore.open(stores[0])
    for vid in store.videos():
        rec.reset()
        stored, _ = store.read(vid)
        source = open_source(store.video_attrs(vid)["source"]["path"], rec.fps)
        live = np.stack([rec.features(f) for _, f in source.frames()])
        width = live.shape[1]  # the joint run's input: D1's block of the two stores' columns
        assert np.array_equal(live[:, : stored.shape[1]], scaler(stored))
        assert not live[:, stored.shape[1]:].any() and width >= stored.shape[1]


def test_the_second_dataset_of_a_joint_run_equals_its_online_evaluation(setup):
    """``--dataset D2``: D2's domain (its DDBN statistics), its standardisation and its input
    columns, as ``eval --online`` scores D2's test videos."""
    from actrec import Recognizer
    from actrec.io.features import FeatureStore
    from actrec.live_sources import open_source
    from actrec.predictions import load_predictions

    stores, runs = setup
    results = json.loads(_eval_file(runs["ddlstm"]).read_text())
    d2 = list(load_predictions(_eval_file(runs["ddlstm"]),
                               results["protocol"]["predictions"]).values())[1]
    store = FeatureStore.open(stores[1])
    rec = Recognizer.from_run(runs["ddlstm"], dataset="D2")
    assert rec.run.domain == 1 and rec.classes == d2.classes
    for vid in d2.ids:
        rec.reset()
        source = open_source(store.video_attrs(vid)["source"]["path"], rec.fps)
        live = [rec.push(frame).index for _, frame in source.frames()]
        assert np.array_equal(live, d2.video(vid)[0])


def test_an_answer_outside_the_runs_dataset_is_never_one_of_its_classes(setup):
    """A run that predicts over all outputs (``--prediction full``) whose argmax falls in the
    other dataset's block: evaluation counts it wrong (OFF_BLOCK); live said the class at
    index -2 of the dataset's own list ('stir' here) with the probability of that class."""
    import torch

    from actrec import Recognizer
    from actrec.data.labels import OFF_BLOCK
    from actrec.live_sources import open_source
    from actrec.recognizer import OTHER_DATASET

    stores, runs = setup
    rec = Recognizer.from_run(runs["ddlstm"])
    run = rec.run
    with torch.no_grad():  # D2's outputs win every frame over the full vector
        run.model.head.bias[run.labels.block(1)] += 100.0
    run.prediction = "full"
    frames = [f for _, f in open_source(_videos(stores[0])[0], rec.fps).frames()][:5]
    answers = [rec.push(f) for f in frames]
    assert {(p.index, p.label) for p in answers} == {(OFF_BLOCK, OTHER_DATASET)}
    for p in answers:
        probs = [score for _, score in p.top]
        assert p.score == pytest.approx(1.0, abs=1e-6) and max(probs) < 1e-6
        assert p.to_dict()["label"] == OTHER_DATASET
    run.prediction = "block"  # the same logits read over D1's block: one of its classes
    rec.reset()
    assert rec.push(frames[0]).label in rec.classes


def test_many_streams_equal_each_stream_alone(setup):
    """Three videos of different lengths stepped in one batch, one joining 5 frames late (its
    DDLSTM step counter differs: it is stepped in its own batch), one reset midway."""
    from actrec import Recognizer
    from actrec.live_sources import open_source

    stores, runs = setup
    run = runs["ddlstm"]
    videos = _videos(stores[0])
    alone = [_alone_scores(run, v) for v in videos]
    rec = Recognizer.from_run(run, streams=3, top_k=99)
    frames = [[f for _, f in open_source(v, rec.fps).frames()] for v in videos]
    assert len({len(f) for f in frames}) > 1  # streams end at different ticks
    got: list[list[np.ndarray]] = [[], [], []]
    offsets = [0, 5, 0]
    for tick in range(max(len(f) + o for f, o in zip(frames, offsets))):
        batch = [f[tick - o] if 0 <= tick - o < len(f) else None
                 for f, o in zip(frames, offsets)]
        for s, p in enumerate(rec.push_many(batch)):
            if p is not None:
                assert p.frame == len(got[s])
                got[s].append(_probs(p, rec.classes))
    for s in range(3):  # the same numbers, up to float rounding of another batch size
        np.testing.assert_allclose(np.stack(got[s]), alone[s], rtol=0, atol=1e-5)
    rec.reset(1)
    again = np.stack([_probs(rec.push(f, stream=1), rec.classes) for f in frames[1]])
    np.testing.assert_allclose(again, alone[1], rtol=0, atol=1e-5)


def test_failing_streams_leave_the_others_running(setup, capsys, tmp_path):
    """An undecodable file, a missing one and a frame folder with a damaged frame fail with
    messages naming them; the good stream is answered as if alone."""
    import cv2

    from actrec.live_sources import open_source

    stores, runs = setup
    good = _videos(stores[0])[0]
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    missing = tmp_path / "missing.mp4"
    folder = tmp_path / "frames"  # frame 20 of 30 is damaged: the stream fails there
    folder.mkdir()
    for i, frame in list(open_source(good, 15.0).frames())[:30]:
        cv2.imwrite(str(folder / f"{i + 1:04d}.png"), frame[:, :, ::-1])
    (folder / "0021.png").write_bytes(b"not a png")
    out = tmp_path / "live.jsonl"
    code, _, err = _live([str(runs["lstm"]), str(broken), good, str(missing), str(folder),
                          "--out", str(out)], capsys)
    assert code == 1
    assert "Traceback" not in err
    assert f"Error: stream 0: source '{broken}'" in err
    assert f"Error: stream 2: source '{missing}': no such file or folder" in err
    assert f"Error: stream 3: source '{folder}'" in err and "0021.png" in err
    records = [json.loads(line) for line in out.read_text().splitlines()]  # every line valid
    assert [r["index"] for r in _frames_of(records, 1)] == _alone(runs["lstm"], good)
    assert [r["frame"] for r in _frames_of(records, 3)] == list(range(20))
    status = {r["stream"]: r["status"] for r in records if "status" in r}
    assert status == {0: "failed", 1: "ended", 2: "failed", 3: "failed"}
    # --out never overwrites
    code, _, err = _live([str(runs["lstm"]), good, "--out", str(out)], capsys)
    assert code == 1 and "exists" in err and "Traceback" not in err


def test_a_stream_url_and_a_frame_folder_give_the_files_predictions(setup, tmp_path, capsys):
    """A real HTTP server serving the mp4 (read by OpenCV's FFmpeg) and a folder of the
    decoded frames as PNG files."""
    import functools
    import http.server
    import threading

    import cv2

    from actrec.live_sources import open_source

    stores, runs = setup
    video = Path(_videos(stores[0])[1])
    expected = _alone(runs["lstm"], str(video))
    shutil.copy(video, tmp_path / "clip.mp4")
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, frame in open_source(str(video), 15.0).frames():
        cv2.imwrite(str(folder / f"{i + 1:05d}.png"), frame[:, :, ::-1])
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/clip.mp4"
        code, records, err = _live([str(runs["lstm"]), url, str(folder)], capsys)
    finally:
        server.shutdown()
    assert code == 0, err
    assert [r["index"] for r in _frames_of(records, 0)] == expected
    assert [r["index"] for r in _frames_of(records, 1)] == expected


def test_write_video_overlays_every_frame_and_realtime_counts_drops(setup, tmp_path, capsys):
    import cv2

    stores, runs = setup
    video = _videos(stores[0])[0]
    out = tmp_path / "overlay.mp4"
    code, records, err = _live([str(runs["lstm"]), video, "--write-video", str(out),
                                "--no-frames"], capsys)
    assert code == 0, err
    assert all("event" in r or "status" in r for r in records)  # --no-frames
    capture = cv2.VideoCapture(str(out))
    frames = []
    while True:
        ok, image = capture.read()
        if not ok:
            break
        frames.append(image)
    original = [f for _, f in __import__("actrec.live_sources", fromlist=["x"]).open_source(
        video, 15.0).frames()]
    # a small video is enlarged by a whole factor so that its label can be read
    factor = -(-320 // original[0].shape[1])
    first = np.repeat(np.repeat(original[0], factor, axis=0), factor, axis=1)[:, :, ::-1]
    assert len(frames) == len(original) and frames[0].shape == first.shape
    assert frames[0].shape[1] >= 320
    # the text changed pixels of the top-left corner, not the bottom
    diff = np.abs(frames[0].astype(int) - first.astype(int))
    strong = diff.max(axis=2) > 80  # text pixels, not the codec's noise
    assert strong[:16].sum() > 30 and strong[-16:].sum() < 10, (strong[:16].sum(), strong[-16:].sum())
    code, _, err = _live([str(runs["lstm"]), video, "--write-video",
                          str(tmp_path / "no-such-folder" / "x.mp4")], capsys)
    assert code != 0 and "no-such-folder" in err and "does not exist" in err
    # real time with the live panel: every frame is answered or counted as dropped
    code, records, err = _live([str(runs["lstm"]), video, "--realtime", "--display"], capsys)
    assert code == 0, err
    (status,) = [r for r in records if "status" in r]
    answered = _frames_of(records, 0)
    assert status["status"] == "ended" and status["frames"] == len(answered)
    assert status["frames"] + status["dropped"] == len(original)
    assert "actrec live" in err and "ended" in err  # the panel's last state


def test_runs_that_cannot_recognise_live_are_refused_by_name(setup, tmp_path, capsys):
    import torch

    stores, runs = setup
    video = _videos(stores[0])[0]

    def variant(name, change):
        run = tmp_path / name
        shutil.copytree(runs["lstm"], run)
        ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
        change(ckpt)
        torch.save(ckpt, run / "checkpoint.pt")
        code, _, err = _live([str(run), video], capsys)
        assert code == 1 and "Traceback" not in err
        return err

    err = variant("nostore", lambda c: c.update(stores=[str(tmp_path / "gone.zarr")]))
    assert f"feature store {tmp_path / 'gone.zarr'} is missing" in err and "nostore" in err
    store = tmp_path / "other.zarr"
    shutil.copytree(stores[0], store)
    meta = json.loads((store / "zarr.json").read_text())
    meta["attributes"]["extractor"] = "no-such-extractor"
    (store / "zarr.json").write_text(json.dumps(meta))
    err = variant("noplugin", lambda c: c.update(stores=[str(store)]))
    assert "no-such-extractor" in err and "cannot be rebuilt" in err
    meta["attributes"].update(extractor="colorgrad", lookahead=2, causal=False)
    (store / "zarr.json").write_text(json.dumps(meta))
    err = variant("lookahead", lambda c: c.update(stores=[str(store)]))
    assert "non-causal features" in err and "2 frame(s)" in err


def test_a_delayed_run_answers_late_and_flushes_as_eval_does(setup):
    """``push`` answers the frame ``delay`` pushes back (None before), ``flush`` the last
    ones, exactly as ``actrec.lookahead.step_with_delay`` (what ``eval --online`` runs) does on
    the same inputs, for a stream longer and one shorter than the delay; a stream flushed early
    among several equals it alone."""
    import torch

    from actrec import Recognizer
    from actrec.evaluate import local_probabilities
    from actrec.live_sources import open_source
    from actrec.lookahead import step_with_delay

    stores, runs = setup
    run = runs["lstm-delay"]
    frames = [f for _, f in open_source(_videos(stores[0])[0], 15.0).frames()]
    rec = Recognizer.from_run(run, top_k=99)
    assert rec.delay == DELAY and rec.run.describe()["delay"] == DELAY

    def oracle(frames):
        """(indices, probabilities) of step_with_delay on the recogniser's own inputs."""
        fresh = Recognizer.from_run(run)
        x = torch.from_numpy(np.stack([fresh.features(f) for f in frames]))[:, None]  # [T,1,W]
        o = fresh.run
        with torch.no_grad():  # as evaluation runs it
            pred, probs = step_with_delay(
                o.model, x, [len(frames)], torch.zeros(1, dtype=torch.long), DELAY,
                lambda z: (o.labels.predict(z, 0, o.prediction),
                           local_probabilities(z, o.labels, 0, o.prediction)))
        return pred[:, 0].numpy(), probs[:, 0].numpy()

    for n in (len(frames), 2):  # longer and shorter than the delay
        got = [rec.push(f) for f in frames[:n]]
        assert all(p is None for p in got[:DELAY])
        answered = [p for p in got if p is not None]
        assert [(p.frame, p.seen) for p in answered] == [(t - DELAY, t) for t in range(DELAY, n)]
        flushed = rec.flush()
        assert [(p.frame, p.seen) for p in flushed] == [(t, n - 1)
                                                         for t in range(max(0, n - DELAY), n)]
        assert all(set(p.timings) == {"step"} for p in flushed)
        index, probs = oracle(frames[:n])
        assert len(np.unique(index)) > 1 or n == 2
        assert [p.index for p in answered + flushed] == list(index)
        np.testing.assert_array_equal(
            np.stack([_probs(p, rec.classes) for p in answered + flushed]), probs)
        assert rec.flush() == []  # flushed streams start again: nothing owed
    # two streams: stream 1 ends (flushed) after 10 frames while stream 0 goes on
    many = Recognizer.from_run(run, streams=2, top_k=99)
    got: list[list] = [[], []]
    for t, f in enumerate(frames):
        for s, p in enumerate(many.push_many([f, f if t < 10 else None])):
            if p is not None:
                got[s].append(p)
        if t == 9:
            got[1] += many.flush(1)
    got[0] += many.flush(0)
    for s, n in ((0, len(frames)), (1, 10)):
        index, probs = oracle(frames[:n])
        assert [p.frame for p in got[s]] == list(range(n))
        assert [p.index for p in got[s]] == list(index)
        np.testing.assert_allclose(np.stack([_probs(p, many.classes) for p in got[s]]), probs,
                                   rtol=0, atol=1e-5)


def test_max_frames_of_a_delayed_run_answers_every_frame_taken(setup, capsys):
    _, runs = setup
    expected = _eval_predictions(runs["lstm-delay"])
    video = next(iter(expected))
    code, records, err = _live([str(runs["lstm-delay"]), video, "--max-frames", "10"], capsys)
    assert code == 0, err
    frames = _frames_of(records, 0)
    assert [(r["frame"], r["seen"]) for r in frames] == [(t, min(t + DELAY, 9))
                                                         for t in range(10)]
    # frames answered before the end saw what eval saw
    assert [r["index"] for r in frames[: 10 - DELAY]] == list(expected[video][: 10 - DELAY])
    (status,) = [r for r in records if "status" in r]
    assert status["frames"] == 10


def _slow_call(rec, call: int, seconds: float) -> None:
    """Make the ``call``-th model step of ``rec`` take ``seconds`` longer (a first call on a
    cold cache or a GPU can take that long)."""
    import time

    step = rec.run.model.step
    calls = [0]

    def slowed(*args, **kwargs):
        calls[0] += 1
        if calls[0] == call:
            time.sleep(seconds)
        return step(*args, **kwargs)

    rec.run.model.step = slowed


def test_realtime_counts_real_drops_but_not_the_warm_up(setup):
    """A file played at 15 fps: a first model call of 2 s (30 frame periods) is paid before
    the clock starts, so nothing is dropped and every frame is answered as in fast mode; a
    stall of 0.5 s on a later frame drops the frames that came meanwhile."""
    import time

    from actrec import Recognizer
    from actrec.live import run_live

    stores, runs = setup
    video = _videos(stores[0])[0]
    n = 30
    expected = _alone(runs["lstm"], video)[:n]

    class Keep:
        def __init__(self):
            self.records = []
            self.times = []  # when each answer reached this sink

        def on_frame(self, stream, frame, record):
            self.records.append(record)
            self.times.append(time.perf_counter())

    rec = Recognizer.from_run(runs["lstm"])
    _slow_call(rec, 1, 2.0)
    slow, warmed_up = rec.run.model.step, []

    def noted(*args, **kwargs):  # notes when the warm-up call returned
        out = slow(*args, **kwargs)
        if not warmed_up:
            warmed_up.append(time.perf_counter())
        return out

    rec.run.model.step = noted
    keep = Keep()
    report = run_live(rec, [video], realtime=True, max_frames=n, sinks=[keep])
    (status,) = report.streams
    assert (status.status, status.frames, status.startup_skipped) == ("ended", n, 0)
    assert report.warmup_ms >= 2000
    # The clock starts after the warm-up: no frame was handed over before its time counted
    # from there. Were the warm-up counted, frames 1-29 would all be due at its end and frame
    # ~29 answered at once. (A machine loaded by other work may still drop frames later.)
    for record, answered in zip(keep.records, keep.times, strict=True):
        assert record["frame"] / rec.fps <= answered - warmed_up[0] + 1e-3, record["frame"]
    if status.dropped == 0:  # then the model saw what it sees in fast mode
        assert [r["index"] for r in keep.records] == expected
    rec = Recognizer.from_run(runs["lstm"])
    _slow_call(rec, 12, 0.5)  # call 1 warms up; call 12 steps frame 10
    keep = Keep()
    report = run_live(rec, [video], realtime=True, max_frames=n, sinks=[keep])
    (status,) = report.streams
    assert status.dropped >= 4, status
    taken = [r["frame"] for r in keep.records]
    assert len(taken) == status.frames == n and taken == sorted(set(taken))
    assert taken[-1] + 1 == status.frames + status.dropped  # every frame answered or counted
    missed, after = max((b - a - 1, a) for a, b in itertools.pairwise(taken))
    assert missed >= 4 and after >= 10  # the frames that came during the stall


def test_a_bad_frame_fails_its_stream_only(setup):
    """push_many with ``errors``: a frame that is no uint8 RGB image is that stream's error
    (naming the stream and frame); the other stream is answered as if alone."""
    from actrec import Recognizer
    from actrec.errors import ActrecError, DataError
    from actrec.live_sources import open_source

    stores, runs = setup
    video = _videos(stores[0])[0]
    frames = [f for _, f in open_source(video, 15.0).frames()]
    rec = Recognizer.from_run(runs["lstm"], streams=2)
    errors: dict[int, ActrecError] = {}
    first = rec.push_many([frames[0], frames[0].astype(np.float32)], errors=errors)
    assert first[1] is None and isinstance(errors[1], DataError)
    assert "stream 1, frame 0: expected a uint8 RGB image [H, W, 3], got float32" in str(errors[1])
    rest = [rec.push_many([f, None])[0].index for f in frames[1:]]
    assert [first[0].index, *rest] == _alone(runs["lstm"], video)
    with pytest.raises(DataError, match="stream 0, frame 40"):
        rec.push(frames[0][..., :2])


def test_an_unknown_dataset_is_refused_with_the_names_the_run_knows(setup, capsys):
    stores, runs = setup
    code, _, err = _live([str(runs["ddlstm"]), _videos(stores[0])[0], "--dataset", "b"], capsys)
    assert code == 1 and "Traceback" not in err
    assert "no dataset 'b'" in err
    listed = err.split("store's dataset: ")[1]
    d1, d2 = listed.split(", D2 = ")
    assert d1.startswith("D1 = synthetic:") and "kitchen=a" in d1 and "kitchen=b" in d2
