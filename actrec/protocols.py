"""Training protocols (single, joint, transfer), validation, checkpoint selection, schedules.

Phases: ``single`` and ``joint`` have one (``train``); ``transfer`` has ``pretrain`` (batches of
D2 only) then ``finetune`` (batches of D1 only), counted on one iteration axis: pre-training is
iterations ``1 .. P``, fine-tuning ``P+1 .. P+F``, and the metrics log and checkpoints use that
axis, so a run killed in either phase resumes where it was. Both phases use one label space over
D1 and D2 (the run's label arrangement), so the output layer keeps its meaning and is kept
(``head="auto"``); fine-tuning starts with a fresh optimiser and schedule from the last
pre-trained weights. ``init_from`` starts fine-tuning from another run's selected weights
instead: every parameter of the same name and shape is copied; the output layer is kept when
each of that run's outputs means the same class here, and re-initialised otherwise (always with
``head="reinit"``), and what was done is recorded in the metrics log.

Validation: a subset of each dataset's training videos, carved by participant
(``actrec.data.validation``), is scored every ``val_every`` iterations (default: at each
checkpoint) and at the end of each phase: the mean per-frame cross-entropy and the frame
accuracy (offline pass over whole videos: the same numbers as online for causal models). The
selection score is the mean frame accuracy over the datasets the phase trains on; with
``select="best-val"`` the best checkpoint of the last phase is kept as ``best.pt`` and is what
``actrec eval`` scores. ``select_on_test`` scores the test split instead (recorded).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from actrec.errors import ConfigError, DataError

__all__ = ["arrange_labels", "carve_split", "phase_names", "phase_bounds", "phase_mix",
           "Monitor", "run_protocol", "load_init_weights"]

LABEL_STREAM = 0x1AB  # seeds of the random label maps: (seed, LABEL_STREAM)
VAL_STREAM = 0x7A1  # seeds of the validation carve: (seed, VAL_STREAM, dataset)
MULTI_STREAM = 0x3AB  # choice of multi-random maps per window: (seed, MULTI_STREAM, iteration)


def arrange_labels(spec: Any, stores: list[Any], dims: list[int]) -> tuple[Any, bool]:
    """The run's ``LabelSpace`` (its arrangement's maps seeded from ``spec.seed``) and whether
    the inputs are per-class scores arranged by the same maps."""
    from actrec.data.labels import LabelSpace

    classes = [tuple(s.classes) for s in stores]
    rng = np.random.default_rng([spec.seed, LABEL_STREAM])
    # merged links background to background where each store records one background class
    background = [s.background[0] if len(s.background) == 1 else None for s in stores]
    labels = LabelSpace.build(classes, spec.labels, rng, spec.label_maps, background)
    match = all(d == len(c) for d, c in zip(dims, classes))
    if spec.score_inputs == "yes" and not match:
        bad = next(k for k, (d, c) in enumerate(zip(dims, classes)) if d != len(c))
        raise ConfigError(f"--score-inputs yes: the features of D{bad + 1} ({stores[bad].path}) "
                          f"have {dims[bad]} columns but the dataset has {len(classes[bad])} "
                          f"classes; per-class scores have one column per class")
    scores = match and spec.input_arrangement == "blocks" and spec.score_inputs != "no"
    if spec.labels == "multi-random" and not scores:
        # Each window picks one of several maps; only score inputs, mapped the same way, tell
        # the model which. On other features the maps contradict each other (measured: D2 fell
        # from 77 % with concat to 16 %).
        raise ConfigError("--labels multi-random needs per-class score inputs (the papers' "
                          "softmax features: one column per class, arranged by the same maps); "
                          "these features are not, so the maps would contradict each other: "
                          "use --labels random or concat")
    return labels, scores


def check_model_domains(spec: Any) -> None:
    """``ConfigError`` when a two-domain model (the DDLSTM: dual-domain batch norm) is asked to
    train on more than two datasets: its generalisation is not specified."""
    from actrec.registry import plugin_class

    n = len(spec.datasets)
    if n > 2 and getattr(plugin_class("models", spec.model), "dual", False):
        raise ConfigError(f"model '{spec.model}' is two-domain (dual-domain batch norm "
                          f"normalises D1 and D2 apart): it cannot train on {n} datasets; use "
                          f"two datasets, or lstm / gru / bnlstm for {n}")


def carve_split(spec: Any, store: Any, split: str, videos: list[str], k: int) -> Any:
    """The validation carve of dataset ``k``'s training videos (``spec.val_fraction``)."""
    from actrec.data.validation import carve_validation

    participants = {v: store.video_attrs(v).get("participant") if store.has(v) else None
                    for v in videos}
    return carve_validation(videos, participants, spec.val_fraction, [spec.seed, VAL_STREAM, k],
                            where=f"D{k + 1} {store.path} split '{split}'")


def phase_names(spec: Any) -> tuple[str, ...]:
    return ("pretrain", "finetune") if spec.protocol == "transfer" else ("train",)


def phase_bounds(spec: Any) -> list[tuple[int, int]]:
    """``(first, stop)`` iterations of each phase on the run's one iteration axis."""
    out, first = [], 0
    for n in spec.phase_iterations:
        out.append((first, first + n))
        first += n
    return out


def phase_domains(spec: Any, index: int, n: int) -> list[int]:
    """The datasets a phase trains on."""
    if spec.protocol == "transfer":
        return [1] if index == 0 else [0]
    return list(range(n)) if spec.protocol == "joint" else [0]


def phase_mix(spec: Any, index: int, n: int, scale: float = 1.0) -> tuple[int, ...]:
    """Windows per dataset of a phase's batches (zeros for datasets it does not train on)."""
    mix = [0] * n
    if spec.protocol == "joint":
        mix = list(spec.mix[:n])
    elif spec.protocol == "transfer" and index == 0:
        mix[1] = spec.mix[1] if len(spec.mix) > 1 and spec.mix[1] > 0 else spec.mix[0]
    else:
        mix[0] = spec.mix[0]
    return tuple(max(1, round(m * scale)) if m else 0 for m in mix)


class Monitor:
    """Validation, selection and the schedule of a run (state in every checkpoint)."""

    def __init__(self, spec: Any, data: Any) -> None:
        from actrec.schedules import Schedule

        self.spec, self.data = spec, data
        self.best_score = -math.inf
        self.best_iteration = 0
        self.phase = 0
        self.stopped_at = 0  # the iteration the schedule stopped the run at (0: it did not)
        self.schedule = Schedule(spec.lr_schedule, spec.lr, spec.phase_iterations[0],
                                 spec.lr_step, spec.lr_gamma, spec.lr_patience, spec.lr_min,
                                 spec.batch_growth, spec.max_batch_growths, spec.early_stop)
        self._sets: dict[int, Any] = {}

    # -- state
    def state_dict(self) -> dict[str, Any]:
        return {"best_score": self.best_score, "best_iteration": self.best_iteration,
                "phase": self.phase, "stopped_at": self.stopped_at,
                "schedule": self.schedule.state_dict()}

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        if not state:
            return
        self.best_score = float(state["best_score"])
        self.best_iteration = int(state["best_iteration"])
        self.phase = int(state["phase"])
        self.stopped_at = int(state.get("stopped_at", 0))
        self.schedule.phase_iterations = self.spec.phase_iterations[self.phase]
        self.schedule.load_state_dict(state["schedule"])

    def enter_phase(self, index: int, fresh: bool) -> None:
        """A new phase starts (``fresh``) or continues after a resume: a fresh phase resets the
        schedule and the best checkpoint (only the last phase's best is selected)."""
        from actrec.schedules import Schedule

        if fresh and (index != self.phase or index > 0):
            self.schedule = Schedule(self.spec.lr_schedule, self.spec.lr,
                                     self.spec.phase_iterations[index], self.spec.lr_step,
                                     self.spec.lr_gamma, self.spec.lr_patience, self.spec.lr_min,
                                     self.spec.batch_growth, self.spec.max_batch_growths,
                                     self.spec.early_stop)
            self.best_score, self.best_iteration = -math.inf, 0
        self.phase = index

    @property
    def final_phase(self) -> bool:
        return self.phase == len(self.spec.phase_iterations) - 1

    def due(self, done: int, stop: int) -> bool:
        """Whether iteration ``done`` is validated."""
        if not self.spec.validates:
            return False
        every = self.spec.val_every or self.spec.checkpoint_every
        return done == stop or bool(every and done % every == 0)

    # -- validation
    def _videos(self, k: int) -> Any:
        """Scaled features and local labels of dataset ``k``'s selection videos (cached)."""
        if k not in self._sets:
            from actrec.components import choose_split

            store = self.data.stores[k]
            if self.spec.select_on_test:
                ids = list(choose_split(store, self.data.splits[k])[1]["test"])
            else:
                ids = list(self.data.carves[k].val)
            missing = [v for v in ids if not store.has(v)]
            if missing:
                raise DataError(f"feature store {store.path}: selection video '{missing[0]}' "
                                f"is not extracted")
            feats, labels = [], []
            classes = len(store.classes)
            for vid in ids:
                x, y = store.read(vid)
                y = np.asarray(y, dtype=np.int64)
                if y.size and (y.max() >= classes or y.min() < -1):
                    raise DataError(f"feature store {store.path}: selection video '{vid}' has "
                                    f"labels outside -1..{classes - 1}")
                feats.append(self.data.scalers[k](x))
                labels.append(y)
            if ids and not any(bool((y >= 0).any()) for y in labels):
                which = "test split" if self.spec.select_on_test else "validation videos"
                raise DataError(f"feature store {store.path}: the {which} of D{k + 1} "
                                f"({len(ids)} video(s)) hold no labelled frame: selection and "
                                f"schedules would score nothing; extract them with labels")
            self._sets[k] = (ids, feats, labels)
        return self._sets[k]

    def validate(self, model: Any, device: Any, domains: list[int]) -> dict[str, Any]:
        """Validation loss and frame accuracy of each of ``domains`` and their means (a
        boundary pre-stage is inside ``model``: ``actrec.boundary.BoundaryAugmented``)."""
        import torch
        import torch.nn.functional as F

        labels, layout = self.data.labels, self.data.layout
        out: dict[str, Any] = {}
        model.eval()
        with torch.no_grad():
            for k in domains:
                ids, feats, targets = self._videos(k)
                loss_sum = correct = frames = 0.0
                for first in range(0, len(ids), 16):
                    chunk = range(first, min(first + 16, len(ids)))
                    lengths = [feats[i].shape[0] for i in chunk]
                    x = np.zeros((max(lengths), len(lengths), layout.width), np.float32)
                    y = np.full((max(lengths), len(lengths)), -1, np.int64)
                    for b, i in enumerate(chunk):
                        x[: lengths[b], b] = layout.arrange(feats[i], k)
                        y[: lengths[b], b] = targets[i]
                    if self.spec.delay:  # a delayed model answers frame s - delay at s
                        from actrec.lookahead import delay_targets

                        real = np.arange(y.shape[0])[:, None] < np.array(lengths)[None]
                        y = delay_targets(y, self.spec.delay, real)  # none on padding steps
                    xt = torch.from_numpy(x).to(device)
                    mask = torch.zeros(y.shape, dtype=torch.bool, device=device)  # [T, B]
                    for b, n in enumerate(lengths):
                        mask[:n, b] = True
                    dom = torch.full((len(lengths),), k, dtype=torch.long, device=device)
                    logits = model(xt, dom, mask=mask)  # [T, B, K]
                    yt = torch.from_numpy(y).to(device)
                    target = torch.from_numpy(labels.to_global(y, k)).to(device)
                    keep = yt >= 0
                    if bool(keep.any()):
                        loss_sum += float(F.cross_entropy(logits[keep], target[keep],
                                                          reduction="sum"))
                        pred = labels.predict(logits, k, self.spec.prediction)
                        correct += float((pred[keep] == yt[keep]).sum())
                        frames += float(keep.sum())
                name = f"D{k + 1}"
                out[name] = {"loss": loss_sum / frames if frames else None,
                             "frame_accuracy": correct / frames if frames else None,
                             "videos": len(ids), "frames": int(frames)}
        model.train()
        losses = [v["loss"] for v in out.values() if v["loss"] is not None]
        accs = [v["frame_accuracy"] for v in out.values() if v["frame_accuracy"] is not None]
        out["loss"] = float(np.mean(losses)) if losses else None
        out["score"] = float(np.mean(accs)) if accs else None
        out["on"] = "test" if self.spec.select_on_test else "validation"
        return out

    def apply_lr(self, optimizer: Any, iteration: int) -> None:
        """Set the learning rate of global ``iteration`` (schedules other than ``none``)."""
        if self.spec.lr_schedule == "none":
            return
        first = phase_bounds(self.spec)[self.phase][0]
        lr = self.schedule.lr_at(iteration - first)
        for group in optimizer.param_groups:  # a group with its own lr keeps its ratio
            group["lr"] = lr * group.get("lr_scale", 1.0)

    def after_step(self, loop: Any, done: int, stop: int, metrics: Any, loss: float) -> bool:
        """Validate when due (logged; the best checkpoint of the last phase saved as best.pt;
        the schedule told); returns True when the schedule stops the run early."""
        from actrec import runs
        from actrec.checkpoints import log_line

        if not self.due(done, stop):
            return False
        result = self.validate(loop.model, loop.device, loop.domains)
        best, event = self.record(done, result)
        line: dict[str, Any] = {"iteration": done, "phase": loop.phase_name, "val": result}
        if event:
            line["schedule"] = {"event": event, "lr": self.schedule.lr,
                                "batch_scale": self.schedule.batch_scale}
        if event == "grow":
            loop.mix = phase_mix(self.spec, self.phase, len(loop.data.banks),
                                 self.schedule.batch_scale)
            line["schedule"]["mix"] = list(loop.mix)
        if event == "stop":
            self.stopped_at = done
        log_line(metrics, line)
        if best and self.spec.selection == "best-val":
            loop.save(done, loss, runs.BEST)
        return event == "stop"

    def record(self, done: int, result: dict[str, Any]) -> tuple[bool, str]:
        """Update the best checkpoint and the schedule from a validation at ``done``; returns
        (whether this is the new best of the last phase, what the schedule did)."""
        best = False
        score = result.get("score")
        if self.final_phase and score is not None and score > self.best_score:
            self.best_score, self.best_iteration, best = float(score), done, True
        loss = result.get("loss")
        event = self.schedule.on_validation(loss) if loss is not None else ""
        return best, event

    def selected(self, iteration: int) -> dict[str, Any]:
        """What the run selects, recorded in its checkpoint of ``iteration``: with ``last``,
        that checkpoint itself (no selection set, no score); with ``best-val``, the best
        validated iteration so far and its score (both None before a first validation)."""
        if self.spec.selection == "last":
            return {"select": "last", "on": None, "iteration": int(iteration), "score": None}
        validated = self.best_score != -math.inf
        return {"select": self.spec.selection, "on": "test" if self.spec.select_on_test
                else "validation", "iteration": self.best_iteration if validated else None,
                "score": self.best_score if validated else None}


def run_protocol(loop: Any, start: int, progress: Any) -> float:
    """Run every phase of ``loop.spec`` from global iteration ``start``; returns the mean
    loss of the last logged iterations."""
    spec = loop.spec
    loss = float("nan")
    n = len(loop.data.banks)
    if loop.monitor.stopped_at:  # the schedule stopped this run: it stays stopped
        return loss
    for index, (first, stop) in enumerate(phase_bounds(spec)):
        if start >= stop:
            continue
        fresh = start <= first
        loop.monitor.enter_phase(index, fresh)
        loop.phase_name = phase_names(spec)[index]
        loop.mix = phase_mix(spec, index, n, loop.monitor.schedule.batch_scale)
        loop.domains = phase_domains(spec, index, n)
        # Window streams start with the phase (fine-tuning at D1's first epoch) and go on
        # where the checkpoint left them (older checkpoints: where a constant mix puts them).
        if fresh:
            loop.drawn = [0] * n
        else:
            recorded = getattr(loop, "recorded_drawn", None)
            loop.drawn = (list(recorded) if recorded is not None
                          else [(start - first) * m for m in loop.mix])
        if fresh and (index > 0 or spec.init_from is not None):
            start_finetune(loop, first)
        loss = loop.run(max(start, first), progress, stop=stop)
        if loop.monitor.schedule.stopped:
            break
    return loss


def draw_label_maps(batch: Any, labels: Any, layout: Any, seed: int, iteration: int,
                    part: tuple[int, int] | None = None) -> None:
    """multi-random: each window of a dataset with several label maps switches to one drawn
    at random (its own generator, seeded from ``(seed, iteration)``: the training stream is
    untouched and a resumed run draws the same maps), labels and score inputs alike.
    ``part = (rank, world)``: ``batch`` is that process's share of the whole batch
    (``actrec.data.windows.share_of``); its windows get the maps they have in the whole batch."""
    from actrec.data.label_maps import remap_rows

    rng = np.random.default_rng([seed, MULTI_STREAM, iteration])
    x, y, dom = batch.x.numpy(), batch.y.numpy(), batch.domain.numpy()  # CPU tensors: views
    for k in range(labels.num_domains):
        count = labels.num_maps(k)
        rows = np.flatnonzero(dom == k)
        if count < 2 or not rows.size:
            continue
        if part is None:
            choice = rng.integers(0, count, size=rows.size)
        else:  # drawn for the whole batch's windows of dataset k, then this share's
            rank, world = part
            choice = rng.integers(0, count, size=rows.size * world)
            choice = choice[rank * rows.size : (rank + 1) * rows.size]
        remap_rows(x, y, rows, [labels.table(k, j) for j in range(count)], choice,
                   scores=layout.mode == "scores")


def start_finetune(loop: Any, iteration: int) -> None:
    """Fine-tuning starts after global ``iteration``: a fresh optimiser, weights from
    ``init_from`` when given, and the output layer re-initialised when ``head="reinit"``;
    logged at the first fine-tuning iteration (``iteration + 1``), so a run killed before
    its next checkpoint drops the line with that work and logs it once again on resume."""
    from actrec import runs
    from actrec.checkpoints import log_line

    spec = loop.spec
    event: dict[str, Any] = {"iteration": iteration + 1, "phase": "finetune", "event": "start"}
    reinit: list[str] = []
    if spec.init_from is not None:
        copied, reinit = load_init_weights(loop.model, Path(spec.init_from), loop.data.labels,
                                           spec.head)
        event["init_from"] = spec.init_from
        event["copied"] = len(copied)
    elif spec.head == "reinit":
        reinit = reset_head(loop.model)
    event["head"] = "reinitialised" if reinit else "kept"
    event["reinitialised"] = reinit
    event["start_weights_sha256"] = weights_digest(loop.model.state_dict())
    loop.fresh_optimizer()
    if getattr(loop, "dist", None) is not None and not loop.dist.main:
        return  # rank 0 logs (actrec.distributed)
    with open(loop.run_dir / runs.METRICS, "a", encoding="utf-8") as handle:
        log_line(handle, event)


def weights_digest(state: dict[str, Any], skip: tuple[str, ...] = ()) -> str:
    """SHA-256 over a state dict's tensors (names sorted; ``skip``: names left out), so a log
    can say by value which weights a phase started from."""
    import hashlib

    digest = hashlib.sha256()
    for name in sorted(state):
        if name in skip:
            continue
        value = state[name].detach().cpu().contiguous()
        digest.update(name.encode())
        digest.update(value.numpy().tobytes())
    return digest.hexdigest()


def head_names(model: Any) -> list[str]:
    """Parameters of the output layer: names under ``head.``, else the last Linear's."""
    import torch

    names = [n for n, _ in model.named_parameters() if n.startswith("head.") or ".head." in n]
    if names:
        return names
    last = [name for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    return [n for n, _ in model.named_parameters() if last and n.startswith(last[-1] + ".")]


def reset_head(model: Any) -> list[str]:
    """Re-initialise the output layer (its module's own ``reset_parameters``)."""
    names = head_names(model)
    prefixes = {n.rsplit(".", 1)[0] for n in names}
    for name, module in model.named_modules():
        if name in prefixes and hasattr(module, "reset_parameters"):
            module.reset_parameters()
    return names


def selected_checkpoint(run_dir: Path) -> Path:
    """The checkpoint a run selects: ``best.pt`` when it selected by validation (or test)
    and has one, else ``checkpoint.pt``."""
    from actrec import runs

    best = Path(run_dir) / runs.BEST
    return best if best.is_file() else Path(run_dir) / runs.CHECKPOINT


def load_init_weights(model: Any, run: Path, labels: Any, head: str) -> tuple[list[str],
                                                                             list[str]]:
    """Copy ``run``'s selected weights into ``model``: every parameter and buffer of the same
    name and shape; the output layer only when each of the run's outputs means the same class
    here (``head="auto"``) or ``head="keep"`` (then it must fit). Returns (copied,
    re-initialised) names. ``DataError`` naming the run when nothing fits or a body parameter
    has another shape (another hidden size, say)."""
    import torch

    from actrec import runs
    from actrec.data.labels import LabelSpace

    path = selected_checkpoint(runs.resolve_run(run))
    ckpt = runs.load_checkpoint(path)
    theirs = ckpt.get("model") or {}
    if "label_space" in ckpt:
        source = LabelSpace.from_state(ckpt["label_space"])
    else:
        source = LabelSpace(tuple(tuple(c) for c in ckpt.get("classes", [["?"]])))
    same = _same_outputs(source, labels)
    heads = set(head_names(model))
    if head == "keep" and not same:
        raise ConfigError(f"--head keep: run {run}'s outputs mean other classes than this run's "
                          f"({source.num_classes} outputs there, {labels.num_classes} here); "
                          f"use --head auto or reinit")
    keep_head = head == "keep" or (head == "auto" and same)
    mine = model.state_dict()
    copied, reinit, problems = [], [], []
    with torch.no_grad():
        for name, value in mine.items():
            base = name.rsplit(".", 1)[0]
            is_head = name in heads or any(h.rsplit(".", 1)[0] == base for h in heads)
            if is_head and not keep_head:
                reinit.append(name)
                continue
            if name not in theirs:
                problems.append(f"{name} missing")
            elif tuple(theirs[name].shape) != tuple(value.shape):
                if is_head or name.startswith(("input", "proj")):
                    reinit.append(name)
                    continue
                problems.append(f"{name} {tuple(theirs[name].shape)} there, "
                                f"{tuple(value.shape)} here")
            else:
                value.copy_(theirs[name].to(value.device, value.dtype))
                copied.append(name)
    if problems:
        raise DataError(f"cannot start from run {run} ({path.name}): its model does not fit "
                        f"this one: {'; '.join(problems[:3])}; train the same model and options")
    if reinit:
        reset_head(model) if not keep_head else None
    return copied, sorted(set(reinit))


def _same_outputs(source: Any, target: Any) -> bool:
    """Whether every output of ``source`` means the same class(es) in ``target``."""
    if source.num_classes != target.num_classes:
        return False
    return source.names() == target.names()
