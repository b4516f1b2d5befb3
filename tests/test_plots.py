"""Figures of a run (actrec.plots, `actrec plot`): every figure is written as PNG and SVG from a
real joint DDLSTM run trained and evaluated here; each PNG is read back and must be a real
picture (its size, more than one colour, pixel variance > 0)."""

import json

import numpy as np
import pytest
from click.testing import CliRunner
from test_train_eval import make_store

from actrec.cli import cli
from actrec.errors import ConfigError, DataError
from actrec.evaluate import evaluate_run
from actrec.plots import (
    FIGURES,
    class_colour_table,
    confusion_matrix,
    confusion_shares,
    plot_run,
    results_file,
)
from actrec.predictions import load_predictions, save_predictions
from actrec.train import TrainSpec, train_model

mpimg = pytest.importorskip("matplotlib.image")


def colour_pixels(image, colour):
    """How many pixels of ``image`` have ``colour`` (RGB in 0..1), to within a rounding."""
    return int((np.abs(image[..., :3] - np.asarray(colour)[:3]).max(-1) < 1.5 / 255).sum())


def check_png(path, min_width=300, min_height=150):
    """The PNG at ``path`` is a real picture: big enough, several colours, not flat."""
    image = mpimg.imread(str(path))  # [H, W, 4] floats in 0..1
    assert image.ndim == 3 and image.shape[0] >= min_height and image.shape[1] >= min_width
    pixels = image.reshape(-1, image.shape[2])
    assert float(pixels.var()) > 0
    assert len(np.unique(pixels, axis=0)) > 10
    assert path.with_suffix(".svg").read_text().lstrip().startswith(("<?xml", "<svg"))
    return image


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("plots")
    a = make_store(root / "a.zarr", dim=6, classes=3, n_train=6, n_test=3, seed=1)
    b = make_store(root / "b.zarr", dim=4, classes=2, n_train=6, n_test=3, seed=2)
    run_dir = root / "ddlstm"
    train_model(TrainSpec(model="ddlstm", d1=a, d2=b, mix=(4, 4), iterations=12, log_every=2,
                          eval_every=4, history=24, lr=0.02, optimizer="adam", seed=0,
                          model_options={"hidden": 8, "layers": 2, "max_len": 24}), run_dir)
    return run_dir


@pytest.fixture(scope="module")
def lstm_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("plots_lstm")
    a = make_store(root / "a.zarr", dim=6, classes=3, n_train=6, n_test=3, seed=1)
    run_dir = root / "lstm"
    train_model(TrainSpec(model="lstm", d1=a, mix=(8, 0), iterations=6, log_every=2,
                          history=24, lr=0.02, optimizer="adam", seed=0,
                          model_options={"hidden": 8}, val_fraction=0.3, val_every=2),
                run_dir)
    return run_dir


def test_missing_inputs_say_what_to_run_first(run, lstm_run, tmp_path):
    with pytest.raises(DataError, match="no evaluation results yet: run `actrec eval"):
        plot_run(lstm_run, "timeline", out_dir=tmp_path)
    with pytest.raises(DataError, match="logged no alphas.*ddlstm"):
        plot_run(lstm_run, "alphas", out_dir=tmp_path)
    with pytest.raises(ConfigError, match="unknown figure"):
        plot_run(lstm_run, "pie", out_dir=tmp_path)
    result = CliRunner().invoke(cli, ["plot", str(lstm_run), "confusion"])
    assert result.exit_code != 0
    assert "actrec eval" in str(result.exception) + result.output
    assert not list(tmp_path.iterdir())  # nothing half-written


@pytest.mark.slow
def test_every_figure_is_written_and_not_blank(run, tmp_path):
    online = evaluate_run(run, online=True)
    evaluate_run(run, online=False)
    out = tmp_path / "figs"
    written = {}
    for what in FIGURES:
        kwargs = {"setting": "online"} if what in ("timeline", "confusion", "per-class") else {}
        written[what] = plot_run(run, what, out_dir=out, **kwargs)
        assert written[what] and all(p.is_file() for p in written[what])
        for png in (p for p in written[what] if p.suffix == ".png"):
            check_png(png)
    # The timeline's bars are drawn in the class colours (tab10: c0 blue, c1 orange, c2 green;
    # the legend's patches alone are a few hundred pixels).
    import matplotlib

    timeline = mpimg.imread(str(out / "timeline-online.png"))
    tab10 = matplotlib.colormaps["tab10"].colors
    assert all(colour_pixels(timeline, tab10[c]) > 2000 for c in range(3))
    names = {p.name for files in written.values() for p in files}
    assert {"timeline-online.png", "timeline-online.svg", "alphas.png", "curves.png",
            "confusion-online-toy1.png", "confusion-online-toy2.png",
            "per-class-online-toy1.png", "per-class-online-toy2.svg"} <= names
    # Without --eval, a run with several evaluations draws its online one.
    assert results_file(run).name == "eval-online.json"
    assert online.protocol["predictions"]["file"] == "eval-online.predictions.npz"


def test_timeline_of_chosen_videos_and_frames(run, tmp_path):
    evaluate_run(run, online=True)
    files = plot_run(run, "timeline", out_dir=tmp_path, videos=["te1", "te0"],
                     frames=(0, 12))
    one = check_png(files[0])
    files = plot_run(run, "timeline", out_dir=tmp_path / "b", videos=["te1"])
    assert check_png(files[0]).shape[0] < one.shape[0]  # one video: a shorter figure
    with pytest.raises(DataError, match="no test video 'nope'"):
        plot_run(run, "timeline", out_dir=tmp_path, videos=["nope"])
    with pytest.raises(DataError, match="no 'lookahead-5' evaluation"):
        plot_run(run, "timeline", out_dir=tmp_path, setting="lookahead-5")


def test_predictions_archive_matches_the_scores(run):
    result = evaluate_run(run, online=True)
    path = run / "eval-online.json"
    saved = json.loads(path.read_text())
    preds = load_predictions(path, saved["protocol"]["predictions"])
    for name, ds in result.datasets.items():
        p = preds[name]
        correct = sum(int((a[b >= 0] == b[b >= 0]).sum()) for a, b in zip(p.predictions,
                                                                           p.targets))
        assert correct / ds.frames == pytest.approx(ds.frame_accuracy)
        counts = confusion_matrix(np.concatenate(p.predictions), np.concatenate(p.targets),
                                  len(p.classes))
        assert counts.sum() == ds.frames and np.trace(counts) == correct
        recall = np.diag(counts) / counts.sum(1)
        for c, r in zip(p.classes, recall):
            assert ds.per_class[c] == pytest.approx(r)
    # Predictions that are not the ones this results file was scored on are refused.
    name, p = next(iter(preds.items()))
    save_predictions(path, {name: (p.ids, [1 - a.clip(0, 1) for a in p.predictions],
                                   p.targets, p.classes)})
    with pytest.raises(DataError, match="does not belong"):
        plot_run(run, "confusion", setting="online", out_dir=run / "x")
    evaluate_run(run, online=True)  # rewrites both


def test_confusion_matrix_by_hand():
    p = np.array([0, 1, 1, 2, 2, 0, 1])
    y = np.array([0, 1, 2, 2, -1, 0, 0])
    assert confusion_matrix(p, y, 3).tolist() == [[2, 1, 0], [0, 1, 0], [0, 1, 1]]


def test_an_other_dataset_prediction_is_in_no_column_and_not_correct():
    """`--prediction full` marks a frame predicted as the other dataset's class -2 (OFF_BLOCK):
    numpy's negative index put it in column k-2, correct for frames of class k-2."""
    p = np.array([-2, 0, 2, -2])
    y = np.array([1, 0, 2, -1])
    assert confusion_matrix(p, y, 3).tolist() == [[1, 0, 0], [0, 0, 0], [0, 0, 1]]
    _, share, frames, accuracy = confusion_shares(p, y, 3)
    assert frames == 3 and accuracy == 2 / 3  # the title's numbers: labelled frames
    assert share[1].tolist() == [0, 0, 0] and share[0, 0] == 1 and share[2, 2] == 1


def test_curves_compare_runs_and_cli(run, lstm_run, tmp_path):
    logged = (lstm_run / "metrics.jsonl").read_text()
    assert '"val": {"D1"' in logged  # the compared run draws its validation curves too
    result = CliRunner().invoke(cli, ["plot", str(run), "curves", "--compare", str(lstm_run),
                                      "--out", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    files = [p for p in json.loads(result.output)["files"]]
    assert [f.rsplit("/", 1)[1] for f in files] == ["curves-lstm.png", "curves-lstm.svg"]
    check_png(tmp_path / "curves-lstm.png")
    bad = CliRunner().invoke(cli, ["plot", str(run), "alphas", "--video", "te0"])
    assert bad.exit_code != 0
    bad = CliRunner().invoke(cli, ["plot", str(run), "timeline", "--frames", "9"])
    assert bad.exit_code == 2 and "START:STOP" in bad.output


def test_cli_figures_match_the_library():
    from actrec.cli import plot_cmd

    assert plot_cmd.FIGURES == FIGURES


def kitchens_run(root, lengths=(40, 40)):
    """A run folder with an online results file and a real predictions archive of a joint
    run whose two datasets' class lists differ and overlap: kitchen a (peel, cut), kitchen b
    (cut, wash). Each video: its first class for half of it, its second for the rest, predicted
    exactly."""
    run_dir = root / "kitchens"
    run_dir.mkdir()
    results = run_dir / "eval-online.json"
    halves = [np.repeat([0, 1], n // 2) for n in lengths]
    record = save_predictions(results, {
        "kitchen-a": (["a0"], [halves[0]], [halves[0]], ["peel", "cut"]),
        "kitchen-b": (["b0"], [halves[1]], [halves[1]], ["cut", "wash"]),
    })
    results.write_text(json.dumps({"datasets": {"kitchen-a": {}, "kitchen-b": {}},
                                   "protocol": {"mode": "online", "predictions": record}}))
    return run_dir


def test_timeline_colours_follow_class_names_across_datasets(tmp_path):
    import matplotlib

    run_dir = kitchens_run(tmp_path)
    preds = load_predictions(run_dir / "eval-online.json")
    table = class_colour_table(list(preds.values()))
    assert list(table) == ["peel", "cut", "wash"]  # one entry per name, union of both lists
    assert len({tuple(c) for c in table.values()}) == 3  # distinct names, distinct colours
    tab10 = matplotlib.colormaps["tab10"].colors
    assert [tuple(table[n]) for n in ("peel", "cut", "wash")] == [tuple(c) for c in tab10[:3]]
    # In the picture: 'cut' (half of a0 and half of b0, truth and prediction) has twice the
    # pixels of 'peel' or 'wash', each in its one colour; before, b's 'cut' was drawn in a's
    # 'peel' red-blue and 'wash' in a's 'cut' colour, and tab10[2] was nowhere.
    image = check_png(plot_run(run_dir, "timeline", out_dir=tmp_path / "figs",
                               videos=["a0", "b0"])[0])
    peel, cut, wash = (colour_pixels(image, tab10[k]) for k in range(3))
    assert peel > 2000 and wash > 2000
    assert cut == pytest.approx(2 * peel, rel=0.1) and wash == pytest.approx(peel, rel=0.1)


def test_timeline_frames_outside_a_video(tmp_path):
    run_dir = kitchens_run(tmp_path, lengths=(100, 60))
    with pytest.raises(ConfigError, match=r"--frames 500:600 is outside test video 'a0' of "
                       r"kitchen-a, which has 100 frames \(0:100\)"):
        plot_run(run_dir, "timeline", out_dir=tmp_path / "x", videos=["a0"], frames=(500, 600))
    assert not (tmp_path / "x").exists()  # nothing written
    result = CliRunner().invoke(cli, ["plot", str(run_dir), "timeline", "--frames", "500:600",
                                      "--out", str(tmp_path / "y")])
    assert result.exit_code != 0 and not (tmp_path / "y").exists()
    assert "outside test video 'a0'" in str(result.exception) + result.output
    # b0 has 60 frames: 70:200 overlaps a0 (would be clipped to 70:100) but not b0.
    with pytest.raises(ConfigError, match="'b0' of kitchen-b, which has 60 frames"):
        plot_run(run_dir, "timeline", out_dir=tmp_path / "z", frames=(70, 200))
    # A range running over the end is clipped, and the figure says so.
    files = plot_run(run_dir, "timeline", out_dir=tmp_path / "w", videos=["a0"],
                     frames=(80, 200))
    check_png(files[0], min_height=100)
    svg = files[0].with_suffix(".svg").read_text()
    assert "clipped to the video" in svg and "nan" not in svg


def test_alphas_hint_names_the_model_as_an_argument(lstm_run, tmp_path):
    with pytest.raises(DataError, match=r"actrec train ddlstm --d1") as info:
        plot_run(lstm_run, "alphas", out_dir=tmp_path)
    assert "--model" not in str(info.value)
    result = CliRunner().invoke(cli, ["plot", str(lstm_run), "alphas"])
    assert result.exit_code != 0
    assert "actrec train ddlstm" in str(result.exception) + result.output
