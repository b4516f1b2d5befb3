"""Evaluating a trained run on the test videos of each of its datasets.

Online (the default): every WHOLE test video is processed causally, frame by frame, with the
model's state carried from one frame to the next (``SequenceModel.step``) in eval mode, exactly
as a live system would see it; never a window, never a future frame. Several videos are stepped
side by side for speed (padded at the end; in eval mode each sequence's state is independent,
and padding after a video's end cannot change its earlier frames). Non-causal models are
refused, and so are features that look ahead (store attribute ``lookahead`` > 0, or -1:
unknown) unless ``allow_noncausal_features`` is set; such a result is recorded, named and
filed as ``online-features-ahead-F`` (``-unknown``), never as online.

Offline: one batched ``forward`` over each whole video (causal models: several videos padded at
the end; others one at a time, since padding would leak into their backward pass).

A frame of dataset k is predicted by argmax over k's block of the concatenated label vector
(or over the whole vector, as the run's ``prediction`` says). Scores per dataset: frame accuracy
over all labelled frames (micro), the mean of per-video frame accuracies (macro), and MS-TCN's
segmental edit score and F1@{10,25,50} (all as fractions in 0..1). Unlabelled frames (label -1)
are left out of everything: for the segment metrics they are removed from the prediction as well
as the target, as background, so that predictions where nobody annotated cannot add segments.
The dataset's own background classes (recorded in its feature store) are left out of the
segment metrics too by default, as MS-TCN's evaluation does (``segment_background="include"``
keeps them); the choice is recorded with every result.

Each evaluation setting (online/offline, split, stores, segment background) has its own results
file in the run folder (``actrec.runs.eval_filename``), so one evaluation never overwrites
another's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from actrec.data.scaling import FeatureScaler
from actrec.errors import ActrecError, ConfigError, DataError
from actrec.io.remote import store_location

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from actrec.data.labels import InputLayout, LabelSpace
    from actrec.io.features import FeatureStore
    from actrec.nn.base import SequenceModel

__all__ = ["DatasetResult", "EvalResult", "VideoProbabilities", "evaluate_model", "evaluate_run",
           "load_run_model", "local_probabilities", "predict_videos", "score_dataset"]

OVERLAPS = (0.10, 0.25, 0.50)
BATCH_VIDEOS = 32  # videos stepped side by side


@dataclass(frozen=True)
class DatasetResult:
    """Scores of one dataset's test split; accuracies are fractions (0..1)."""

    name: str
    store: str
    split: str
    videos: int
    frames: int  # labelled frames
    frame_accuracy: float  # micro: correct frames / labelled frames
    mean_video_accuracy: float  # macro: mean over videos with a labelled frame
    edit: float  # MS-TCN edit score / 100, mean over videos
    f1: dict[str, float]  # "10"/"25"/"50" -> F1 / 100 from counts summed over videos
    per_video: dict[str, dict[str, float]] = field(default_factory=dict)
    per_class: dict[str, float] = field(default_factory=dict)  # recall per class (nan: absent)
    segment_background: tuple[str, ...] = ()  # classes left out of edit and F1
    # Precision per predicted class, pooled over the videos (nan: never predicted on a
    # labelled frame), and its mean over the classes predicted (the sign-language paper's).
    per_class_precision: dict[str, float] = field(default_factory=dict)
    mean_class_precision: float = float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {"store": self.store, "split": self.split, "videos": self.videos,
                "segment_background": list(self.segment_background),
                "frames": self.frames, "frame_accuracy": self.frame_accuracy,
                "mean_video_accuracy": self.mean_video_accuracy, "edit": self.edit,
                "f1": dict(self.f1), "per_class": self.per_class,
                "per_class_precision": self.per_class_precision,
                "mean_class_precision": self.mean_class_precision, "per_video": self.per_video}


@dataclass(frozen=True)
class EvalResult:
    """An evaluation of a run: one ``DatasetResult`` per dataset, and the protocol used."""

    run_dir: Path
    online: bool
    model: str
    datasets: dict[str, DatasetResult]
    protocol: dict[str, Any]
    # Per dataset, what the run predicted (``evaluate_run(keep_probabilities=True)``); not saved.
    probabilities: dict[str, VideoProbabilities] = field(default_factory=dict, repr=False,
                                                         compare=False)
    # Per dataset, the model step's latency and throughput (``actrec.latency``; online only).
    latency: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"run_dir": str(self.run_dir), "online": self.online, "model": self.model,
                "datasets": {k: v.to_dict() for k, v in self.datasets.items()},
                "protocol": self.protocol, "latency": self.latency}


@dataclass(frozen=True)
class VideoProbabilities:
    """One dataset's test videos as a run saw them: per video its class probabilities float32
    ``[T, K]`` and targets int64 ``[T]`` (what late fusion averages and scores)."""

    store: str
    split: str
    ids: tuple[str, ...]
    probabilities: tuple[np.ndarray, ...]
    targets: tuple[np.ndarray, ...]
    classes: tuple[str, ...]
    segment_background: tuple[int, ...]
    dataset: str | None


# --------------------------------------------------------------------------------------------
# Predictions


def predict_videos(
    model: SequenceModel,
    videos: Sequence[np.ndarray],
    domain: int,
    labels: LabelSpace,
    layout: InputLayout,
    *,
    online: bool,
    prediction: str = "block",
    device: Any = "cpu",
    batch_videos: int = BATCH_VIDEOS,
    progress: Any = None,
    task: Any = None,
    probabilities: list | None = None,
    lookahead: int = 0,
    model_name: str | None = None,
) -> list[np.ndarray]:
    """Local class predictions ``[T_i]`` (int64) of ``domain`` for each feature array ``[T_i, d_k]``.

    ``online``: frame by frame through ``model.step`` (the model must be causal). Leaves the
    model in eval mode. ``probabilities``, a list, receives each video's class probabilities
    float32 ``[T_i, K_k]`` (``local_probabilities``), in the order of ``videos``.
    ``lookahead`` K (online only): frame t is answered by the step that has seen frame t+K
    (``actrec.lookahead``); 0 is online. ``ConfigError`` for a look-ahead offline, and
    online for a model whose ``step`` does not give its ``forward``'s logits or mixes the rows
    it steps together (named ``model_name``, the plugin, in the message).
    """
    import torch

    if lookahead and not online:  # a look-ahead is a delay of the online pass
        raise ConfigError(f"a look-ahead ({lookahead}) is a delay of the online pass; "
                          f"offline evaluation sees whole videos")
    model.eval()
    order = sorted(range(len(videos)), key=lambda i: -videos[i].shape[0])  # longest first
    batchable = online or bool(model.causal)
    size = max(1, batch_videos) if batchable else 1
    out: list[np.ndarray | None] = [None] * len(videos)
    probs_out: list[np.ndarray | None] = [None] * len(videos)
    with torch.no_grad():
        for first in range(0, len(order), size):
            chunk = order[first : first + size]
            lengths = [videos[i].shape[0] for i in chunk]
            x = np.zeros((max(lengths), len(chunk), layout.width), dtype=np.float32)  # [T, B, W]
            for b, i in enumerate(chunk):
                x[: lengths[b], b] = layout.arrange(videos[i], domain)
            xt = torch.from_numpy(x).to(device)
            dom = torch.full((len(chunk),), domain, dtype=torch.long, device=device)  # [B]
            label = f"model '{model_name}'" if model_name else f"model {type(model).__name__}"
            if online and first == 0 and size > 1:
                _check_rows_independent(model, xt, lengths, dom, label)
            if online and first == 0:
                _check_step_matches_forward(model, xt, lengths[0], dom, label)
            probs = None
            if online and lookahead:
                from actrec.lookahead import step_with_delay

                pred, probs = step_with_delay(model, xt, lengths, dom, lookahead, lambda z: (
                    labels.predict(z, domain, prediction),
                    local_probabilities(z, labels, domain, prediction)
                    if probabilities is not None else None))  # [T, B], [T, B, K_k]
            elif online:
                pred, probs = _step_through(model, xt, dom, labels, domain, prediction,
                                            probabilities is not None)  # [T, B], [T, B, K_k]
            else:
                mask = torch.zeros(xt.shape[:2], dtype=torch.bool, device=device)  # [T, B]
                for b, n in enumerate(lengths):
                    mask[:n, b] = True
                logits = model(xt, dom, mask=mask)  # [T, B, K]
                pred = labels.predict(logits, domain, prediction)  # [T, B]
                if probabilities is not None:
                    probs = local_probabilities(logits, labels, domain, prediction)
            pred = pred.cpu().numpy()
            for b, i in enumerate(chunk):
                out[i] = pred[: lengths[b], b].astype(np.int64)
                if probs is not None:
                    probs_out[i] = probs[: lengths[b], b].float().cpu().numpy()
            if progress is not None and task is not None:
                progress.advance(task, len(chunk))
    if probabilities is not None:
        probabilities.extend(probs_out)
    return out  # type: ignore[return-value]


def local_probabilities(logits: torch.Tensor, labels: LabelSpace, domain: int,
                        prediction: str = "block") -> torch.Tensor:
    """Probabilities ``[..., K_k]`` of ``domain``'s own classes from logits ``[..., K]``, whose
    argmax is the ``"block"`` prediction: the softmax over the domain's block (``"full"``: the
    softmax over all outputs, read at the block's columns). ``ConfigError`` for label
    arrangements without blocks (maps), whose outputs are no single dataset's classes."""
    from actrec.errors import ConfigError

    if getattr(labels, "arrangement", "concat") != "concat":
        raise ConfigError(f"class probabilities of one dataset need the concatenated label "
                          f"arrangement; this run maps its labels ({labels.arrangement})")
    cols = labels.block(domain)
    if prediction == "full":
        return logits.float().softmax(-1)[..., cols]
    return logits[..., cols].float().softmax(-1)


STEP_CHECK_FRAMES = 64  # frames of one test video stepped and run through forward alike


def _check_step_matches_forward(model, x: torch.Tensor, length: int, dom: torch.Tensor,
                                label: str) -> None:
    """``ConfigError`` unless stepping the first ``STEP_CHECK_FRAMES`` frames of row 0 of
    ``x [T, B, W]`` (``length`` real frames) from a fresh state gives ``model.forward``'s
    logits on them (eval mode, float rounding allowed): online scores are those of the trained
    model only then, and a plugin's ``step`` that drifted from its ``forward`` would otherwise
    be scored silently."""
    import torch

    n = min(length, STEP_CHECK_FRAMES)
    if n < 1:
        return
    seq = x[:n, :1]  # [n, 1, W]
    try:
        whole = model(seq, dom[:1], mask=None).float()  # [n, 1, K]
        stepped = _stepped(model, seq, dom[:1])  # [n, 1, K]
    except NotImplementedError:  # a model without online inference says so itself
        raise
    except (ValueError, RuntimeError) as exc:  # e.g. batch norm refusing a batch of one
        raise _alone_error(label, "run", exc, "online evaluation compares its step with its "
                           "forward on the first frames of a test video") from None
    if stepped.shape != whole.shape:
        raise ConfigError(f"{label}: step gives logits of shape {tuple(stepped.shape[1:])} per "
                          f"frame, forward {tuple(whole.shape[1:])}")
    gap = (stepped - whole).abs()
    scale = whole.abs().amax().clamp(min=1.0)
    # float32 on the CPU agrees to rounding; on CUDA, cuDNN's recurrent kernels run in TF32
    # by default and half precision rounds at 1e-3: looser there, still far below a step
    # that drifted (a wrong state update moves logits by tenths)
    low = x.device.type != "cpu" or any(q.dtype in (torch.float16, torch.bfloat16)
                                        for q in model.parameters())
    if bool((gap > (3e-2 if low else 1e-3) * scale).any()):
        t = int(gap.amax(dim=(1, 2)).argmax())
        raise ConfigError(
            f"{label}: stepping frame by frame gives other logits than forward on the same "
            f"frames (largest difference {float(gap.max()):.3g} at frame {t} of the first test "
            f"video): online scores would not be those of the trained model. A causal model's "
            f"step must give forward's logits in eval mode (docs/plugins.md, Temporal models)")


def _stepped(model, seqs: torch.Tensor, dom: torch.Tensor) -> torch.Tensor:
    """Float logits ``[T, B, K]`` of ``model.step`` over ``seqs [T, B, W]`` from a fresh
    state (``dom [B]``: the rows' domains)."""
    import torch

    state = model.init_state(seqs.shape[1], dom)
    out = []
    for t in range(seqs.shape[0]):
        logits, state = model.step(seqs[t], state)
        out.append(logits.float())
    return torch.stack(out)


def _alone_error(label: str, verb: str, exc: Exception, why: str) -> ConfigError:
    """The error for a model that failed on one sequence alone (its first line of ``exc``)."""
    said = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return ConfigError(f"{label} cannot {verb} one sequence alone ({said}): {why}")


def _check_rows_independent(model, x: torch.Tensor, lengths: list[int],
                            dom: torch.Tensor, label: str = "model") -> None:
    """``ConfigError`` unless ``model.step`` answers each sequence of a batch as it answers
    it alone: two different frames ``a``, ``b`` of ``x [T, B, W]`` (real rows, ``lengths``)
    as two sequences (a, b) and (b, a), stepped from a fresh state together and one by one.
    A step that mixes the rows (batch statistics at evaluation) would make every score
    depend on which test videos are stepped together."""
    import torch

    rows = [x[t, b] for b, n in enumerate(lengths) for t in (0, n // 2) if n > t]
    pair = next(((a, b) for i, a in enumerate(rows) for b in rows[i + 1:]
                 if not torch.equal(a, b)), None)
    if pair is None:
        return  # no two different frames: nothing to tell them apart by
    frames = torch.stack([torch.stack(pair), torch.stack(pair[::-1])])  # [2 steps, 2 rows, W]

    try:
        together = _stepped(model, frames, dom[:1].repeat(2))
        alone = torch.cat([_stepped(model, frames[:, i : i + 1], dom[:1]) for i in range(2)],
                          dim=1)
        same = bool(torch.allclose(together, alone, rtol=1e-3, atol=1e-4))
    except NotImplementedError:  # a model without online inference says so itself
        raise
    except (ValueError, RuntimeError) as exc:  # e.g. batch norm refusing a batch of one
        raise _alone_error(label, "step", exc, "its online answers would depend on the "
                           "sequences stepped with it (batch statistics at evaluation?)") \
            from None
    if not same:
        raise ConfigError(f"{label}: the step's answer for a sequence "
                          f"depends on the other sequences stepped with it (batch statistics "
                          f"at evaluation?), so its scores would depend on which test videos "
                          f"are evaluated together; evaluate with running statistics")


def _step_through(model, x: torch.Tensor, dom: torch.Tensor, labels, domain: int,
                  prediction: str, keep_probabilities: bool = False):
    """Causal pass: ``x`` [T, B, W] one frame at a time with the state carried -> predictions
    [T, B] and (``keep_probabilities``) local class probabilities [T, B, K_k], else None."""
    import torch

    state = model.init_state(x.shape[1], dom)
    preds, probs = [], []
    for t in range(x.shape[0]):
        logits, state = model.step(x[t], state)  # [B, K]
        preds.append(labels.predict(logits, domain, prediction))  # [B]
        if keep_probabilities:
            probs.append(local_probabilities(logits, labels, domain, prediction))  # [B, K_k]
    return torch.stack(preds), (torch.stack(probs) if keep_probabilities else None)


# --------------------------------------------------------------------------------------------
# Scores


def score_dataset(
    name: str,
    store: str,
    split: str,
    ids: Sequence[str],
    preds: Sequence[np.ndarray],
    targets: Sequence[np.ndarray],
    classes: Sequence[str] = (),
    background: Sequence[int] = (),
) -> DatasetResult:
    """Frame and segment scores of one dataset from per-video local predictions and targets;
    with ``classes``, also the frame recall of each class over all videos. ``background``
    (local class indices) is left out of the edit score and F1, with unlabelled frames."""
    from actrec.metrics import (
        SegmentCounts,
        edit_score,
        f1_from_counts,
        per_class_accuracy,
        per_class_precision,
        segment_counts,
        segment_exclusions,
    )

    per_video: dict[str, dict[str, float]] = {}
    correct = labelled = 0
    accs, edits = [], []
    counts = {k: SegmentCounts(0, 0, 0) for k in OVERLAPS}
    drop = segment_exclusions(background)  # unlabelled frames and the background
    for vid, p, y in zip(ids, preds, targets):
        keep = y >= 0
        n = int(keep.sum())
        c = int((p[keep] == y[keep]).sum())
        correct, labelled = correct + c, labelled + n
        p_seg = np.where(keep, p, -1)  # unlabelled frames leave both segment sequences
        # A video without a labelled frame has no segments to score: no edit, out of the mean.
        edit = edit_score(p_seg, y, background=drop) / 100.0 if n else float("nan")
        if n:
            edits.append(edit)
        for k in OVERLAPS:
            found = segment_counts(p_seg, y, k, background=drop)
            counts[k] = SegmentCounts(*(a + b for a, b in zip(counts[k], found)))
        acc = c / n if n else float("nan")
        if n:
            accs.append(acc)
        per_video[vid] = {"frames": n, "accuracy": acc, "edit": edit}
    precision = _per_class(classes, preds, targets, per_class_precision)
    return DatasetResult(
        name=name, store=store, split=split, videos=len(ids), frames=labelled,
        frame_accuracy=correct / labelled if labelled else float("nan"),
        mean_video_accuracy=float(np.mean(accs)) if accs else float("nan"),
        edit=float(np.mean(edits)) if edits else float("nan"),
        # No labelled test frame: nothing to score (F1 0/0 would read as a score of 0).
        f1={str(round(k * 100)): f1_from_counts(counts[k]) / 100.0 if labelled
            else float("nan") for k in OVERLAPS},
        per_video=per_video,
        per_class=_per_class(classes, preds, targets, per_class_accuracy),
        per_class_precision=precision,
        mean_class_precision=_mean_present(precision),
        segment_background=tuple(str(classes[b]) if b < len(classes) else str(b)
                                 for b in background),
    )


def _per_class(classes, preds, targets, measure) -> dict[str, float]:
    """``measure`` (a per-class metric of ``actrec.metrics``) over all videos, by class name."""
    if not classes or not preds:
        return {}
    values = measure(np.concatenate(preds), np.concatenate(targets), len(classes))
    return {name: float(r) for name, r in zip(classes, values)}


def _mean_present(values: dict[str, float]) -> float:
    """The mean of the non-NaN values; NaN when there is none."""
    present = [v for v in values.values() if not np.isnan(v)]
    return float(np.mean(present)) if present else float("nan")


def evaluate_model(
    model: SequenceModel,
    stores: Sequence[FeatureStore],
    splits: Sequence[str],
    labels: LabelSpace,
    layout: InputLayout,
    *,
    online: bool,
    prediction: str = "block",
    device: Any = "cpu",
    progress: Any = None,
    scalers: Sequence[FeatureScaler] | None = None,
    segment_background: str = "exclude",
    probabilities: dict | None = None,
    lookahead: int = 0,
    latency: dict | None = None,
    predictions: dict | None = None,
    model_name: str | None = None,
) -> dict[str, DatasetResult]:
    """Scores of ``model`` on the test videos of ``splits[k]`` of each ``stores[k]`` (domain k),
    keyed by dataset name (the store's ``dataset`` attribute; made unique with ``(D1)``/``(D2)``
    when both stores name the same dataset). ``segment_background`` ``"exclude"`` leaves each
    store's background classes out of the segment metrics, ``"include"`` keeps them.
    ``probabilities``, a dict, receives per dataset name a ``VideoProbabilities`` (late fusion,
    ``actrec.fusion``). ``lookahead``: see ``predict_videos``. ``latency``, a dict, receives
    per dataset name the step's latency and throughput (online only; ``actrec.latency``);
    ``predictions``, a dict, per dataset name ``(ids, predictions, targets, classes)``.
    ``model_name`` (the plugin) names the model in errors."""
    from actrec.components import choose_split
    from actrec.metrics import SEGMENT_BACKGROUND_MODES

    if segment_background not in SEGMENT_BACKGROUND_MODES:
        raise ActrecError(f"segment_background must be one of "
                          f"{', '.join(SEGMENT_BACKGROUND_MODES)}, "
                          f"got {segment_background!r}")

    names = [str(s.attrs.get("dataset") or s.path.stem) for s in stores]  # Path or StoreURL
    if len(set(names)) < len(names):
        names = [f"{n} (D{k + 1})" for k, n in enumerate(names)]
    results: dict[str, DatasetResult] = {}
    for k, (store, wanted) in enumerate(zip(stores, splits)):
        split_name, split = choose_split(store, wanted)
        ids = list(split["test"])
        missing = [v for v in ids if not store.has(v)]
        if missing:
            raise DataError(f"feature store {store.path}: {len(missing)} test video(s) of split "
                            f"'{split_name}' not extracted (e.g. {missing[0]!r})")
        feats, targets = [], []
        for vid in ids:
            x, y = store.read(vid)
            feats.append(scalers[k](x) if scalers is not None else x)
            targets.append(y)
        task = None
        if progress is not None:
            mode = (f"look-ahead {lookahead}" if lookahead else "online") if online \
                else "offline"
            task = progress.add_task(f"{mode} eval {names[k]}", total=len(ids))
        probs: list | None = [] if probabilities is not None else None
        preds = predict_videos(model, feats, k, labels, layout, online=online,
                               prediction=prediction, device=device, progress=progress,
                               task=task, probabilities=probs, lookahead=lookahead,
                               model_name=model_name)
        if task is not None:
            progress.remove_task(task)
        if predictions is not None:
            predictions[names[k]] = (tuple(ids), preds, targets, tuple(labels.classes[k]))
        if latency is not None and online:
            from actrec.latency import dataset_latency

            latency[names[k]] = dataset_latency(model, feats, layout, k, device,
                                                lookahead=lookahead)
        bg = store.background if segment_background == "exclude" else ()
        if probabilities is not None:
            probabilities[names[k]] = VideoProbabilities(
                str(store.path), split_name, tuple(ids), tuple(probs), tuple(targets),
                tuple(labels.classes[k]), tuple(bg), store.attrs.get("dataset"))
        results[names[k]] = score_dataset(names[k], str(store.path), split_name, ids, preds,
                                          targets, labels.classes[k], bg)
    return results


# --------------------------------------------------------------------------------------------
# Runs


def evaluate_run(
    run_dir: Path,
    *,
    online: bool = True,
    split: str | None = None,
    stores: tuple[Path, ...] | None = None,
    progress: Any = None,
    allow_noncausal_features: bool = False,
    device: str | None = None,
    segment_background: str = "exclude",
    allow_train_overlap: bool = False,
    keep_probabilities: bool = False,
    lookahead: int | str | None = None,
    verify_stores: bool = False,
) -> EvalResult:
    """Evaluate the checkpoint of ``run_dir`` on each of its datasets' test split and write
    the result to this setting's own file in ``run_dir`` (``actrec.runs.eval_filename``).

    ``split``: the split to evaluate in every store (default: the ones trained on). ``stores``:
    other feature stores to evaluate on, one per trained dataset, with the same classes and
    feature dimension (``DataError`` otherwise); with ``verify_stores`` (``actrec eval
    --store``: a trained store that was moved), one holding the data the run trained on (the
    recorded store identity) is refused where its videos changed, as the recorded store would
    be. A trained store missing from its recorded path is a ``DataError`` naming the stores
    with its identity found nearby (``missing_store_error``). ``online=True`` refuses a
    non-causal model and
    non-causal features (``ActrecError``), unless ``allow_noncausal_features`` for the latter.
    ``device`` defaults to the run's. ``segment_background``: see ``evaluate_model``.
    A trained store that changed since training (other extractor config, videos or frame
    counts) is refused (``DataError`` naming what changed); so is a split whose test videos
    the run trained on, unless ``allow_train_overlap`` (recorded with the result).
    ``keep_probabilities`` keeps every test video's class probabilities in the result.
    ``lookahead``: frames K the online pass may wait before answering a frame (an int, or
    ``"half-history"``: the run's history // 2; ``actrec.lookahead``); K > 0 is its own mode
    ``lookahead-K`` with its own results file, and needs ``online``. Online results record
    the step's latency and throughput; every result saves its per-frame predictions beside
    the results file (``actrec.predictions``).
    """
    import torch

    from actrec import runs
    from actrec.components import open_store
    from actrec.protocols import selected_checkpoint

    run_dir = Path(run_dir)
    ckpt_path = selected_checkpoint(run_dir)  # best.pt of a run that selects on validation
    ckpt = runs.load_checkpoint(ckpt_path)
    try:
        spec = ckpt["spec"]
        name = str(ckpt["model_name"])
        classes = tuple(tuple(c) for c in ckpt["classes"])
        dims = tuple(int(d) for d in ckpt["input_dims"])
        store_paths = [store_location(p) for p in ckpt["stores"]]
        trained_splits = [str(s) for s in ckpt["splits"]]
        causal = bool(ckpt.get("causal", True))
    except (KeyError, TypeError) as exc:
        raise DataError(f"{ckpt_path}: not an actrec training checkpoint (missing {exc})") from None

    from actrec.lookahead import resolve_lookahead

    # ``delay``: the look-ahead of the online pass (``lookahead`` below is the features')
    trained_delay = int(spec.get("delay") or 0)  # a run trained to answer late (--delay)
    if lookahead is None and trained_delay and online:
        lookahead = trained_delay
    delay, delay_rule = resolve_lookahead(lookahead, spec.get("history"))
    if delay and not online:
        raise ActrecError("a look-ahead is a delay of the online pass: it cannot be combined "
                          "with offline evaluation, which sees every frame of a video")
    if trained_delay and delay != trained_delay:
        raise ActrecError(f"run {run_dir} was trained to answer {trained_delay} frame(s) late "
                          f"(--delay {trained_delay}): its output at frame s is about frame "
                          f"s-{trained_delay}, so it is evaluated with --lookahead "
                          f"{trained_delay} only")
    if online and not causal:
        raise ActrecError(
            f"model '{name}' is not causal: it looks at future frames, so it cannot be "
            f"evaluated online, frame by frame; use --offline"
        )
    if stores is not None:
        if len(stores) != len(store_paths):
            raise ActrecError(f"run {run_dir} was trained on {len(store_paths)} dataset(s); "
                              f"got {len(stores)} store(s) to evaluate on")
        store_paths = [store_location(p) for p in stores]
    else:
        for k, path in enumerate(store_paths):
            if isinstance(path, Path) and not (path / "zarr.json").is_file():
                raise missing_store_error(run_dir, k, path, ckpt)
    opened = [open_store(p, spec.get("streams")) for p in store_paths]
    for k, store in enumerate(opened):
        if tuple(store.classes) != classes[k]:
            raise DataError(f"feature store {store.path} has other classes than D{k + 1} of run "
                            f"{run_dir} ({len(store.classes)} vs {len(classes[k])})")
        if store.dim is not None and store.dim != dims[k]:
            raise DataError(f"feature store {store.path} has {store.dim}-d features; run "
                            f"{run_dir} was trained on {dims[k]}-d features for D{k + 1}")
    from actrec.lookahead import evaluation_mode, features_reach, store_lookahead

    features = []
    for store in opened:
        attrs = store.attrs
        lookahead, causal, ahead = store_lookahead(attrs)
        features.append({"store": str(store.path), "extractor": attrs.get("extractor"),
                         "lookahead": lookahead, "causal": causal})
        if online and not causal and not allow_noncausal_features:
            # Imported features: their reach is what the import declared (or did not).
            redo = ("import them again with --lookahead 0 if they are per-frame features"
                    if store.imported
                    else "re-extract with a causal extractor")
            raise ActrecError(
                f"feature store {store.path} holds non-causal features (extractor "
                f"'{attrs.get('extractor')}' looks {ahead} frame(s) ahead), so "
                f"an online evaluation would see the future; {redo}, "
                f"or allow it explicitly (--allow-noncausal-features; recorded with the result)"
            )

    model, labels, layout = load_run_model(ckpt, ckpt_path)
    dev = torch.device(device or spec.get("device", "cpu"))
    if dev.type == "cuda" and not torch.cuda.is_available():
        dev = torch.device("cpu")
    model.to(dev)
    if online and not model.causal:
        raise ActrecError(f"model '{name}' is not causal; use --offline")
    splits = [split or s for s in trained_splits]
    overlap = _check_inputs(ckpt, ckpt_path, run_dir, opened, splits, trained_splits,
                            overridden=stores is not None, verify=verify_stores,
                            allow_train_overlap=allow_train_overlap)
    prediction = str(spec.get("prediction", "block"))
    scalers = [FeatureScaler.from_state(s) for s in ckpt["input_scalers"]] \
        if "input_scalers" in ckpt else None
    probabilities: dict | None = {} if keep_probabilities else None
    latency: dict = {}
    predictions: dict = {}
    datasets = evaluate_model(model, opened, splits, labels, layout, online=online,
                              prediction=prediction, device=dev, progress=progress,
                              scalers=scalers, segment_background=segment_background,
                              probabilities=probabilities, lookahead=delay,
                              latency=latency, predictions=predictions, model_name=name)
    reach = features_reach(features)  # the features' own look-ahead (None: unknown)
    training = str(spec.get("protocol") or ("joint" if len(datasets) > 1 else "single"))
    protocol = {
        # How the run trained, and for a transfer run which dataset is the target (D1, the
        # fine-tuning data the run is for) and which the pre-training source (D2).
        "training_protocol": training,
        "roles": dict(zip(datasets, ("target", "source"))) if training == "transfer" else {},
        # Online on features that look ahead is named so (``-features-ahead-F``): not online.
        "mode": evaluation_mode(online, delay, reach),
        "online": online,
        "lookahead": delay if online else None,  # frames; None: offline sees everything
        "lookahead_rule": delay_rule if online else "offline (whole videos)",
        "trained_delay": trained_delay,
        # The latest frame a prediction for frame t may depend on is t + frames_ahead (the
        # look-ahead plus the features' own; None: offline, or features of unknown reach).
        "frames_ahead": None if not online or reach is None else delay + reach,
        "prediction": prediction,
        "iteration": int(ckpt.get("iteration", 0)),
        "checkpoint": ckpt_path.name,
        "selected": ckpt.get("selected"),
        "selected_on_test": bool(spec.get("select_on_test", False)),
        "labels": labels.arrangement,
        "splits": splits,
        "stores": [str(p) for p in store_paths],
        "streams": spec.get("streams"),
        "ignored_label": -1,
        "segment_metrics": "MS-TCN edit and F1 (last segment ends at T-1); frames labelled "
                           "-1 removed from prediction and target as background",
        "segment_background": segment_background,
        "features": features,
        "noncausal_features_allowed": bool(allow_noncausal_features),
        "noncausal_features_used": online and any(not f["causal"] for f in features),
        "train_overlap_allowed": bool(allow_train_overlap),
        "train_videos_scored": overlap,
    }
    trained_stores = [str(p) for p in ckpt["stores"]]
    if verify_stores:  # a verified copy of a trained store (moved) files as the store itself
        recorded = ckpt.get("store_fingerprints") or [None] * len(opened)
        named = [trained if fp and getattr(store, "identity", None) == fp.get("identity")
                 else given for store, fp, given, trained
                 in zip(opened, recorded, protocol["stores"], trained_stores)]
    else:
        named = protocol["stores"]
    setting = {"mode": protocol["mode"], "splits": splits, "trained_splits": trained_splits,
               "stores": named, "trained_stores": trained_stores,
               "segment_background": segment_background}
    from actrec.predictions import save_predictions

    results_path = run_dir / runs.eval_filename(setting)
    protocol["predictions"] = save_predictions(results_path, predictions)
    result = EvalResult(run_dir, online, name, datasets, protocol, probabilities or {},
                        latency)
    runs.atomic_write_json(results_path, result.to_dict())
    return result


def load_run_model(ckpt: dict[str, Any], ckpt_path: Path
                   ) -> tuple[SequenceModel, LabelSpace, InputLayout]:
    """The trained model of checkpoint ``ckpt`` (read from ``ckpt_path``, named in errors) with
    its weights, on the CPU, and the label space and input layout it was trained with
    (``evaluate_run`` and live recognition, ``actrec.recognizer``, both build it here).
    ``DataError`` for damaged label maps or weights that do not fit the model."""
    import torch

    from actrec.components import resolve_model
    from actrec.data.labels import InputLayout, LabelSpace

    name = str(ckpt["model_name"])
    try:  # the label arrangement (maps) and score-input tables the run trained with
        classes = tuple(tuple(c) for c in ckpt["classes"])
        labels = LabelSpace.from_state(ckpt["label_space"]) if "label_space" in ckpt \
            else LabelSpace(classes)
        tables = ckpt.get("input_tables")
        layout = InputLayout(tuple(int(d) for d in ckpt["input_dims"]),
                             str(ckpt["input_arrangement"]),
                             tuple(tuple(t) for t in tables) if tables is not None else None)
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"{ckpt_path}: damaged label maps ({exc})") from None
    with torch.random.fork_rng(devices=[]):
        if ckpt.get("boundary"):  # the main model behind the boundary pre-stage
            from actrec import boundary

            _, main = resolve_model(ckpt, boundary.WidenedLayout(layout), labels,
                                    where=ckpt_path)
            model = boundary.rebuild(ckpt["boundary"], layout, main)
        else:
            _, model = resolve_model(ckpt, layout, labels, where=ckpt_path)
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        raise DataError(f"{ckpt_path}: weights do not fit model '{name}' "
                        f"({str(exc).splitlines()[0]})") from None
    return model, labels, layout


def missing_store_error(run_dir: Path, k: int, path: Path, ckpt: dict[str, Any]) -> DataError:
    """The error for D{k+1}'s trained store, recorded at ``path``, that is not there: it names
    the store's dataset and extractor (from the run's config.json) and the stores holding the
    same data (the identity the run recorded) found in the workspace's features folder or
    beside ``path`` (a moved or renamed store), with the option that evaluates on one."""
    from actrec import runs
    from actrec.workspace import home

    try:
        about = (runs.read_json(Path(run_dir) / "config.json").get("stores") or [])[k]
    except (DataError, IndexError, AttributeError, TypeError):
        about = {}
    what = ", ".join(f"{key} '{about[key]}'" for key in ("dataset", "extractor")
                     if about.get(key))
    fingerprint = (ckpt.get("store_fingerprints") or [None] * (k + 1))[k] or {}
    found = stores_with_identity(fingerprint.get("identity"),
                                 [home() / "features", path.parent, path.parent.parent])
    suggestion = found[0] if found else "PATH"
    flags = " ".join(f"--store {suggestion if i == k else other}"
                     for i, other in enumerate(ckpt.get("stores") or [path]))
    text = (f"run {run_dir} was trained on D{k + 1}'s feature store {path}"
            f"{f' ({what})' if what else ''}, which is not there any more (moved, renamed or "
            f"deleted). ")
    if found:
        text += (f"The same data (the store identity the run recorded) is in "
                 f"{'; '.join(map(str, found))}: evaluate on it with `actrec eval {run_dir} "
                 f"{flags}` (one --store per dataset, D1 first; its videos are checked against "
                 f"the ones the run trained on), or move it back to {path}")
    else:
        text += (f"No store with the same data is in {home() / 'features'} or beside "
                 f"{path.parent}. If you moved it elsewhere, evaluate on it with "
                 f"`actrec eval {run_dir} {flags}` (one --store per dataset, D1 first); "
                 f"otherwise extract the dataset again into {path}")
    return DataError(text)


def stores_with_identity(identity: str | None, folders: Sequence[Path],
                         limit: int = 500) -> list[Path]:
    """Feature stores (``*.zarr`` in ``folders`` and one level below) whose identity is
    ``identity``, in the order found, without duplicates; at most ``limit`` folders are
    opened (each read is one small JSON file)."""
    from actrec.io.features import FeatureStore

    if not identity:
        return []
    found: list[Path] = []
    looked = 0
    for folder in folders:
        if not folder.is_dir():
            continue
        for candidate in sorted([*folder.glob("*.zarr"), *folder.glob("*/*.zarr")]):
            if looked >= limit:
                return found
            looked += 1
            resolved = candidate.resolve()
            if resolved in found or not (candidate / "zarr.json").is_file():
                continue
            try:
                if FeatureStore.open(candidate).identity == identity:
                    found.append(resolved)
            except DataError:
                continue
    return found


def _check_inputs(ckpt, ckpt_path, run_dir, opened, splits, trained_splits, *, overridden: bool,
                  allow_train_overlap: bool, verify: bool = False) -> dict[str, int]:
    """Refuse changed stores and test videos the run trained on; returns, per store, how many
    of the scored test videos were training videos (allowed only by ``allow_train_overlap``).
    Stores given instead of the recorded ones (``overridden``) are compared with what the run
    trained on only with ``verify`` and where they hold the same data (identity)."""
    from actrec.components import choose_split, store_changes, store_fingerprint

    recorded = ckpt.get("store_fingerprints") or [None] * len(opened)
    overlap: dict[str, int] = {}
    for k, (store, fp) in enumerate(zip(opened, recorded)):
        if fp is None:  # a run trained before fingerprints were recorded
            continue
        same_data = getattr(store, "identity", None) == fp.get("identity")
        if not overridden or (verify and same_data):  # verify: a moved copy of the store
            changes = store_changes(fp, store_fingerprint(store, trained_splits[k]))
            if changes:
                raise DataError(
                    f"feature store {store.path} changed since run {run_dir} was trained on it: "
                    f"{'; '.join(changes)}. Its scores would not be those of the trained "
                    f"inputs: evaluate on the store as it was, or train again")
        if not same_data:
            continue
        trained = set(choose_split(store, trained_splits[k])[1].get("train", ()))
        test = choose_split(store, splits[k])[1].get("test", ())
        seen = [v for v in test if v in trained]
        overlap[str(store.path)] = len(seen)
        if seen and not allow_train_overlap:
            raise DataError(
                f"split '{splits[k]}' of {store.path} tests {len(seen)} video(s) that run "
                f"{run_dir} trained on (split '{trained_splits[k]}', e.g. '{seen[0]}'): its "
                f"scores would be inflated; evaluate the trained split, or allow it explicitly "
                f"(--allow-train-overlap; recorded with the result)")
    return overlap
