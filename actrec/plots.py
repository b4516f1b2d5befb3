"""Figures of a run: what it predicted, how it trained (the ``plots`` extra: matplotlib).

Each figure is written as PNG and SVG into an output folder (default ``<run>/plots``) and the
written paths are returned:

- ``timeline``: ground truth above prediction, one colour per class name, for chosen test videos
  (the DDLSTM paper's Fig. 6); from an evaluation's per-frame predictions
  (``actrec.predictions``, written by every ``actrec eval``).
- ``confusion``: the confusion matrix of each dataset, rows normalised (each true class's
  frames spread over the predicted classes); from the same predictions.
- ``per-class``: each class's frame accuracy (recall) per dataset; from the results file.
- ``alphas``: every DDBN alpha (alpha1 for D1, alpha2 for D2, per layer) over training (the
  DDLSTM paper's Fig. 7); from ``metrics.jsonl``.
- ``curves``: training loss and accuracy, validation loss and accuracy and the periodic test
  accuracy over iterations, for one run or several side by side (Recurrent Assistance
  Figs. 3-5); from ``metrics.jsonl``.

An evaluation is chosen by its setting (``online``, ``offline``, ``lookahead-12``,
``online-split-2``: the results file ``eval-<setting>.json``); default ``online`` when the run
has it, else its one results file. A missing input (no evaluation yet, a run without alphas)
is a ``DataError`` saying what to run first. matplotlib is imported inside the functions, with
the non-interactive Agg backend, so importing this module costs nothing.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from actrec.errors import ConfigError, DataError

__all__ = ["FIGURES", "class_colour_table", "plot_alphas", "plot_confusion", "plot_curves",
           "plot_per_class", "plot_run", "plot_timeline", "results_file"]

FIGURES = ("timeline", "alphas", "curves", "confusion", "per-class")
UNLABELLED = "#d9d9d9"  # frames nobody annotated (label -1)


# --------------------------------------------------------------------------------------------
# Inputs


def _pyplot():
    """matplotlib.pyplot on the Agg backend; ``ConfigError`` naming the extra without it."""
    try:
        import matplotlib
    except ImportError:
        raise ConfigError("plots need matplotlib: pip install 'actrec[plots]'") from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def results_file(run_dir: Path, setting: str | None = None) -> Path:
    """The results file of ``setting`` in ``run_dir`` (default: ``online``, else the run's
    only one); ``DataError`` listing the run's settings, or saying to run ``actrec eval``."""
    from actrec import runs

    run_dir = Path(run_dir)
    files = runs.eval_files(run_dir)
    names = [p.stem[len(runs.EVAL_PREFIX):] for p in files]
    if not files:
        raise DataError(f"run {run_dir} has no evaluation results yet: run `actrec eval "
                        f"{run_dir}` first (add --lookahead K or --offline for those settings)")
    if setting is None:
        if "online" in names:
            return files[names.index("online")]
        if len(files) == 1:
            return files[0]
        raise ConfigError(f"run {run_dir} has several evaluations ({', '.join(names)}): "
                          f"choose one with --eval SETTING")
    wanted = str(setting).removeprefix(runs.EVAL_PREFIX).removesuffix(".json")
    if wanted not in names:
        raise DataError(f"run {run_dir} has no '{wanted}' evaluation (it has: "
                        f"{', '.join(names)}); run `actrec eval {run_dir}` with that setting "
                        f"first")
    return files[names.index(wanted)]


def _load_results(run_dir: Path, setting: str | None) -> tuple[Path, dict[str, Any]]:
    from actrec.runs import read_json

    path = results_file(run_dir, setting)
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("datasets"), dict):
        raise DataError(f"{path}: not an actrec results file (no 'datasets')")
    return path, data


def _load_predictions(run_dir: Path, setting: str | None):
    from actrec.predictions import load_predictions

    path, data = _load_results(run_dir, setting)
    record = (data.get("protocol") or {}).get("predictions")
    if record is None:
        raise DataError(f"{path} was written without per-frame predictions (an older actrec): "
                        f"evaluate the run again (actrec eval {Path(run_dir)})")
    return path, data, load_predictions(path, record)


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The JSON lines of ``run_dir/metrics.jsonl``; ``DataError`` naming the file and line
    of a damaged one, or saying to train first when there is no log."""
    from actrec import runs

    path = Path(run_dir) / runs.METRICS
    if not path.is_file():
        raise DataError(f"{path}: no training log; train the run first (actrec train)")
    lines = []
    for number, text in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not text.strip():
            continue
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}, line {number}: invalid JSON ({exc.msg})") from None
        if isinstance(value, dict):
            lines.append(value)
    return lines


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_.+" else "_" for c in str(text)).strip("_")


def _save(fig: Any, out_dir: Path, stem: str) -> list[Path]:
    """Write ``fig`` as ``stem.png`` and ``stem.svg`` (each atomically) and close it."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for suffix in (".png", ".svg"):
        target = out_dir / f"{stem}{suffix}"
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix, dir=out_dir)
        os.close(fd)
        try:
            fig.savefig(tmp, format=suffix[1:], dpi=100, bbox_inches="tight")
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        written.append(target)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return written


def _class_colours(count: int) -> list[Any]:
    """``count`` distinct colours: tab10, the light half of tab20, tab20b, tab20c (60 in
    all), then evenly spaced hues."""
    import matplotlib

    base: list[Any] = list(matplotlib.colormaps["tab10"].colors)
    base.extend(matplotlib.colormaps["tab20"].colors[1::2])
    for name in ("tab20b", "tab20c"):
        base.extend(matplotlib.colormaps[name].colors)
    if count <= len(base):
        return base[:count]
    hsv = matplotlib.colormaps["hsv"]
    return [hsv(i / count) for i in range(count)]


# --------------------------------------------------------------------------------------------
# Figures from an evaluation


def class_colour_table(datasets: Sequence[Any]) -> dict[str, Any]:
    """One colour per class NAME over the union of the class lists of ``datasets`` (objects
    with ``.classes``; names in order of first appearance), so a class shared by two datasets
    of a joint run has the same colour in both and distinct names have distinct colours."""
    names = list(dict.fromkeys(c for ds in datasets for c in ds.classes))
    return dict(zip(names, _class_colours(len(names))))


def plot_timeline(run_dir: Path, out_dir: Path, *, videos: Sequence[str] = (),
                  setting: str | None = None, frames: tuple[int, int] | None = None,
                  max_videos: int = 4) -> list[Path]:
    """Ground truth above prediction for each of ``videos`` (default: the first test videos
    of each dataset, ``max_videos`` in all), frames ``frames = (start, stop)`` of each (default
    all), one colour per class name (the same in every video, also across the datasets of a
    joint run; the legend lists exactly the classes drawn), unlabelled frames grey. A range
    running past a video's end is clipped (the video's title says so); ``ConfigError`` naming
    the video and its length for a range that starts after its end. ``DataError`` for a video
    id no dataset of the evaluation has."""
    plt = _pyplot()
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    path, data, preds = _load_predictions(run_dir, setting)
    chosen: list[tuple[str, str]] = []  # (dataset, video)
    for vid in videos:
        owners = [name for name, ds in preds.items() if vid in ds.ids]
        if not owners:
            known = "; ".join(f"{n}: {', '.join(ds.ids[:5])}{' ...' if len(ds.ids) > 5 else ''}"
                              for n, ds in preds.items())
            raise DataError(f"{path.name}: no test video {vid!r} (videos: {known})")
        chosen.append((owners[0], vid))
    if not chosen:
        per = max(1, max_videos // max(1, len(preds)))
        chosen = [(name, vid) for name, ds in preds.items() for vid in ds.ids[:per]]
    if not chosen:
        raise DataError(f"{path.name}: the evaluation scored no video")

    # Check every range before drawing anything: a range past a video's end is an error, one
    # running over its end is clipped (and the title says so).
    spans: list[tuple[int, int, str]] = []
    for name, vid in chosen:
        length = len(preds[name].video(vid)[1])
        if frames is None:
            spans.append((0, length, ""))
            continue
        start, stop = frames
        if not 0 <= start < stop:
            raise ConfigError(f"--frames {start}:{stop}: expected 0 <= START < STOP")
        if start >= length:
            raise ConfigError(f"--frames {start}:{stop} is outside test video {vid!r} of {name}, "
                              f"which has {length} frames (0:{length}): choose a range that "
                              f"starts before frame {length}, or other videos with --video")
        note = f" (--frames {start}:{stop} clipped to the video's {length})" \
            if stop > length else ""
        spans.append((start, min(stop, length), note))

    fig, axes = plt.subplots(len(chosen), 1, figsize=(12, 1.5 * len(chosen) + 1.2),
                             squeeze=False, layout="constrained")
    table = class_colour_table([preds[n] for n in dict.fromkeys(n for n, _ in chosen)])
    drawn: set[str] = set()
    unlabelled = False
    for ax, (name, vid), (start, stop, note) in zip(axes[:, 0], chosen, spans):
        ds = preds[name]
        p, y = ds.video(vid)
        p, y = p[start:stop], y[start:stop]
        cmap = ListedColormap([UNLABELLED, *(table[c] for c in ds.classes)])
        rows = np.stack([y, p]) + 1  # [2, T]: 0 = unlabelled, class c -> c + 1
        ax.imshow(rows, aspect="auto", cmap=cmap, vmin=0, vmax=len(ds.classes),
                  interpolation="nearest", extent=(start, start + len(y), 1.5, -0.5))
        ax.set_yticks([0, 1], ["truth", "prediction"])
        labelled = y >= 0
        score = (f"frame accuracy {100 * float((p[labelled] == y[labelled]).mean()):.1f} %"
                 if labelled.any() else "no labelled frames")
        ax.set_title(f"{name} / {vid}: {score}{note}", fontsize=9, loc="left")
        drawn.update(ds.classes[int(c)] for c in np.unique(np.concatenate([y[labelled], p])))
        unlabelled |= not labelled.all()
    # Exactly the classes drawn, each with the one colour it has in every video.
    legend = {n: c for n, c in table.items() if n in drawn}
    if unlabelled:
        legend["(unlabelled)"] = UNLABELLED
    axes[-1, 0].set_xlabel("frame")
    mode = (data.get("protocol") or {}).get("mode", "")
    fig.suptitle(f"{Path(run_dir).name}: {mode} predictions", fontsize=10)
    shown = list(legend.items())[:40]
    fig.legend(handles=[Patch(color=c, label=n) for n, c in shown],
               loc="outside lower center", ncol=min(8, max(1, len(shown))), fontsize=8,
               frameon=False)
    return _save(fig, out_dir, f"timeline-{_slug(path.stem[5:])}")


def confusion_matrix(predictions: np.ndarray, targets: np.ndarray, classes: int) -> np.ndarray:
    """Counts ``[classes, classes]``: row = true class, column = predicted class, over the
    labelled frames (target >= 0) only (``actrec.metrics.confusion``). A prediction outside
    ``0..classes-1`` (another dataset's class under ``--prediction full``) is in no column."""
    from actrec.metrics import confusion

    return confusion(predictions, targets, classes)


def confusion_shares(predictions: np.ndarray, targets: np.ndarray, classes: int
                     ) -> tuple[np.ndarray, np.ndarray, int, float]:
    """``(counts, share, frames, accuracy)`` of a confusion figure: ``share`` divides each row
    by the true class's labelled frames (NaN without any), so frames predicted as no class of
    this dataset leave their row short of 1; ``frames`` counts the labelled frames and
    ``accuracy`` is the diagonal over them (NaN without any)."""
    counts = confusion_matrix(predictions, targets, classes)
    per_class = np.bincount(targets[targets >= 0], minlength=classes)[:classes, None]
    share = np.divide(counts, per_class, out=np.full(counts.shape, np.nan),
                      where=per_class > 0)
    frames = int(per_class.sum())
    accuracy = float(np.trace(counts) / frames) if frames else float("nan")
    return counts, share, frames, accuracy


def plot_confusion(run_dir: Path, out_dir: Path, *, setting: str | None = None) -> list[Path]:
    """One confusion matrix per dataset of the evaluation, each row divided by the true
    class's frame count (classes without frames stay empty). A dataset without labelled test
    frames has none; ``DataError`` when no dataset has any."""
    plt = _pyplot()

    path, _, preds = _load_predictions(run_dir, setting)
    written: list[Path] = []
    for name, ds in preds.items():
        k = len(ds.classes)
        _, share, frames, acc = confusion_shares(
            np.concatenate(ds.predictions) if ds.predictions else np.zeros(0, np.int64),
            np.concatenate(ds.targets) if ds.targets else np.zeros(0, np.int64), k)
        if not frames:  # an empty matrix titled "accuracy nan %" says nothing
            continue
        side = min(16, 3 + 0.28 * k)
        fig, ax = plt.subplots(figsize=(side + 1.5, side))
        image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
        fig.colorbar(image, ax=ax, fraction=0.046, label="share of the true class's frames")
        if k <= 80:
            font = 8 if k <= 20 else 5
            ax.set_xticks(range(k), ds.classes, rotation=90, fontsize=font)
            ax.set_yticks(range(k), ds.classes, fontsize=font)
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
        ax.set_title(f"{name}: {frames} labelled frames, frame accuracy {100 * acc:.1f} %",
                     fontsize=10)
        written += _save(fig, out_dir, f"confusion-{_slug(path.stem[5:])}-{_slug(name)}")
    if not written:
        raise _nothing_scored(path, list(preds))
    return written


def _nothing_scored(path: Path, names: Sequence[str]) -> DataError:
    return DataError(f"{path}: no dataset of this evaluation has labelled test frames "
                     f"({', '.join(names)}): their test splits list no video their stores hold")


def plot_per_class(run_dir: Path, out_dir: Path, *, setting: str | None = None) -> list[Path]:
    """Each class's frame accuracy per dataset of the evaluation, as horizontal bars; classes
    absent from the test videos are named as such. A dataset without labelled test frames
    has no figure; ``DataError`` when no dataset has any."""
    plt = _pyplot()

    path, data = _load_results(run_dir, setting)
    written: list[Path] = []
    for name, ds in data["datasets"].items():
        if not ds.get("frames"):  # nothing to score: not a result to re-evaluate
            continue
        per_class = ds.get("per_class") or {}
        if not per_class:
            raise DataError(f"{path}: no per-class accuracy for {name}; evaluate the run again")
        classes = list(per_class)
        values = [per_class[c] for c in classes]
        present = [v is not None and not np.isnan(v) for v in values]
        fig, ax = plt.subplots(figsize=(8, 1.5 + 0.25 * len(classes)))
        ypos = np.arange(len(classes))
        ax.barh(ypos, [100 * v if ok else 0 for v, ok in zip(values, present)],
                color=["tab:blue" if ok else "none" for ok in present])
        for i, ok in enumerate(present):
            if not ok:
                ax.text(1, i, "no test frames", va="center", fontsize=7, color="grey")
        ax.set_yticks(ypos, classes, fontsize=7 if len(classes) > 20 else 9)
        ax.invert_yaxis()
        ax.set_xlim(0, 100)
        ax.set_xlabel("frame accuracy of the class (%)")
        overall = ds.get("frame_accuracy")
        ax.axvline(100 * overall if overall is not None else 0, color="tab:red", ls="--",
                   lw=1, label="all frames")
        ax.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
        ax.set_title(f"{name}: per-class accuracy ({(data.get('protocol') or {}).get('mode')})",
                     fontsize=10)
        written += _save(fig, out_dir, f"per-class-{_slug(path.stem[5:])}-{_slug(name)}")
    if not written:
        raise _nothing_scored(path, list(data["datasets"]))
    return written


# --------------------------------------------------------------------------------------------
# Figures from training


def plot_alphas(run_dir: Path, out_dir: Path) -> list[Path]:
    """Every logged DDBN alpha over training iterations: one colour per layer, alpha1 (D1)
    solid and alpha2 (D2) dashed. ``DataError`` when the run logged none."""
    plt = _pyplot()

    lines = [line for line in read_metrics(run_dir) if isinstance(line.get("alphas"), dict)]
    if not lines:
        raise DataError(f"run {run_dir} logged no alphas: only models with dual-domain batch "
                        f"normalisation (ddlstm) have them; train one (actrec train ddlstm "
                        f"--d1 ... --d2 ...) to plot them")
    names = sorted({n for line in lines for n in line["alphas"]})
    fig, ax = plt.subplots(figsize=(8, 4.5))
    colours = _class_colours(len(names))
    for colour, name in zip(colours, names):
        its = [line["iteration"] for line in lines if name in line["alphas"]]
        vals = np.array([line["alphas"][name] for line in lines if name in line["alphas"]],
                        dtype=float)  # [steps, 2]
        for j in range(vals.shape[1]):
            ax.plot(its, vals[:, j], color=colour, ls="-" if j == 0 else "--",
                    label=f"{name.removesuffix('.alpha')} alpha{j + 1} (D{j + 1})")
    ax.set_xlabel("iteration")
    ax.set_ylabel("alpha")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=7, ncol=2)
    ax.set_title(f"{Path(run_dir).name}: DDBN alphas during training", fontsize=10)
    return _save(fig, out_dir, "alphas")


def plot_curves(run_dirs: Sequence[Path], out_dir: Path) -> list[Path]:
    """Training loss (left) and accuracies (right) over iterations of each run: training
    loss and frame accuracy, validation loss and accuracy per dataset, and the periodic test
    accuracy (``--eval-every``) per dataset. Several runs share the axes (one colour each)."""
    plt = _pyplot()

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    colours = _class_colours(max(1, len(run_dirs)))
    anything = False
    for colour, run_dir in zip(colours, run_dirs):
        lines = read_metrics(run_dir)
        label = Path(run_dir).name
        train = [line for line in lines if "loss" in line and "iteration" in line
                 and line.get("loss") is not None]
        if not train:
            raise DataError(f"run {run_dir}: metrics.jsonl has no training iterations yet; "
                            f"train the run first (actrec train)")
        anything = True
        its = [line["iteration"] for line in train]
        left.plot(its, [line["loss"] for line in train], color=colour, label=f"{label} train")
        acc = [(line["iteration"], line["train_frame_accuracy"]) for line in train
               if line.get("train_frame_accuracy") is not None]
        if acc:
            right.plot(*zip(*acc), color=colour, alpha=0.5, label=f"{label} train")
        # A transfer run's loss jumps where fine-tuning on D1 begins: mark it, on both axes.
        for line in lines:
            if line.get("event") == "start" and line.get("phase") and "iteration" in line:
                for ax in (left, right):
                    ax.axvline(line["iteration"], color=colour, ls=":", lw=1)
                right.annotate(f"{line['phase']} starts", (line["iteration"], 0.98),
                               xycoords=("data", "axes fraction"), fontsize=7, color=colour,
                               rotation=90, ha="right", va="top")
        val = [line for line in lines if isinstance(line.get("val"), dict)]
        if val:
            vloss = [(line["iteration"], line["val"]["loss"]) for line in val
                     if line["val"].get("loss") is not None]
            if vloss:
                left.plot(*zip(*vloss), color=colour, ls="--", marker=".",
                          label=f"{label} {val[0]['val'].get('on', 'validation')}")
            keys = sorted({k for line in val for k, v in line["val"].items()
                           if isinstance(v, dict)})
            for key, style in zip(keys, ("--", "-.", ":")):
                pts = [(line["iteration"], line["val"][key]["frame_accuracy"]) for line in val
                       if (line["val"].get(key) or {}).get("frame_accuracy") is not None]
                if pts:
                    right.plot(*zip(*pts), color=colour, ls=style, marker=".",
                               label=f"{label} {key} {val[0]['val'].get('on', 'validation')}")
        tests = [line for line in lines if isinstance(line.get("eval"), dict)]
        names = sorted({k for line in tests for k in line["eval"]})
        for name, marker in zip(names, ("o", "s", "^", "D")):
            pts = [(line["iteration"], line["eval"][name]) for line in tests
                   if line["eval"].get(name) is not None]
            if pts:
                right.plot(*zip(*pts), color=colour, marker=marker, ls="-",
                           label=f"{label} test {name} (offline)")
    if not anything:
        raise DataError("no run to plot")
    left.set_xlabel("iteration")
    left.set_ylabel("cross-entropy loss")
    left.set_title("loss", fontsize=10)
    left.legend(fontsize=7)
    right.set_xlabel("iteration")
    right.set_ylabel("frame accuracy")
    right.set_ylim(0, 1)
    right.set_title("accuracy", fontsize=10)
    right.legend(fontsize=7)
    stem = "curves" if len(run_dirs) == 1 else "curves-" + "+".join(
        _slug(Path(r).name) for r in run_dirs[1:])[:120]
    return _save(fig, out_dir, stem)


def plot_run(run_dir: Path, what: str, *, out_dir: Path | None = None,
             videos: Sequence[str] = (), setting: str | None = None,
             frames: tuple[int, int] | None = None,
             compare: Sequence[Path] = ()) -> list[Path]:
    """Draw figure ``what`` (one of ``FIGURES``) of ``run_dir`` into ``out_dir`` (default
    ``run_dir/plots``); returns the written files (PNG and SVG of each figure)."""
    run_dir = Path(run_dir)
    out = Path(out_dir) if out_dir is not None else run_dir / "plots"
    if what not in FIGURES:
        raise ConfigError(f"unknown figure {what!r}; choose one of {', '.join(FIGURES)}")
    if what == "timeline":
        return plot_timeline(run_dir, out, videos=videos, setting=setting, frames=frames)
    if videos or frames:
        raise ConfigError("--video and --frames choose what a timeline shows; "
                          f"'{what}' takes neither")
    if compare and what != "curves":
        raise ConfigError(f"--compare overlays other runs' training curves; '{what}' takes "
                          f"one run")
    if what == "confusion":
        return plot_confusion(run_dir, out, setting=setting)
    if what == "per-class":
        return plot_per_class(run_dir, out, setting=setting)
    if setting is not None:
        raise ConfigError(f"--eval chooses an evaluation; '{what}' is drawn from the "
                          f"training log")
    if what == "alphas":
        return plot_alphas(run_dir, out)
    return plot_curves([run_dir, *compare], out)
