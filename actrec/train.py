"""Training a temporal model on one feature store, or jointly on two (D1 + D2).

``train_model(spec, run_dir)`` loads the training videos of the split into memory once (see
``actrec.data.windows``), then repeats: sample ``n1`` windows of ``history`` frames from D1 and
``n2`` from D2 (D1 rows first, domain vector ``[0]*n1 + [1]*n2``), map their labels into the
concatenated label vector (``actrec.data.labels``), and minimise the mean per-frame
cross-entropy over every labelled frame of the batch (padding and unlabelled frames carry label
-1 and are ignored). After each optimiser step it calls ``model.after_optimizer_step()`` (DDBN
projects its alphas there).

Randomness: window sampling draws from a ``numpy.random.Generator`` seeded from ``spec.seed``;
torch's own randomness (initial weights, dropout) runs inside ``torch.random.fork_rng`` seeded
from ``spec.seed``, so the caller's global RNG is left as it was. Both generators' states are in
every checkpoint, so a resumed run continues exactly as an uninterrupted one would.

The run directory layout is in ``actrec.runs``.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from actrec.checkpoints import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    check_resume,
    check_schedule_span,
    log_line,
    restore,
    truncate_metrics,
)
from actrec.components import (
    build_model,
    choose_split,
    open_store,
    resolve_device,
    resolve_model,
    same_store,
    store_changes,
    store_fingerprint,
)
from actrec.errors import ActrecError, ConfigError, DataError, Interrupted
from actrec.train_spec import TrainSpec

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["TrainResult", "TrainSpec", "optimizer_groups", "thread_share", "torch_threads",
           "train_model"]


@dataclass(frozen=True)
class TrainResult:
    """What a call to ``train_model`` did."""

    run_dir: Path
    iterations: int  # iterations done in total (including before a resume)
    resumed_from: int  # 0 for a fresh run
    final_loss: float  # mean loss of the last logged interval (nan when nothing ran)
    elapsed_s: float  # training time in total
    checkpoint: Path
    warnings: tuple[str, ...] = ()  # about the trained model (e.g. stale batch-norm statistics)

    def to_dict(self) -> dict[str, Any]:
        out = {"run_dir": str(self.run_dir), "iterations": self.iterations,
               "resumed_from": self.resumed_from, "final_loss": self.final_loss,
               "elapsed_s": round(self.elapsed_s, 3), "checkpoint": str(self.checkpoint)}
        if self.warnings:
            out["warnings"] = list(self.warnings)
        return out


def _alphas(model: torch.nn.Module) -> dict[str, list[float]]:
    """DDBN alpha parameters by name (empty for models without them)."""
    return {name: [round(float(v), 6) for v in p.detach().reshape(-1).cpu()]
            for name, p in model.named_parameters() if "alpha" in name}


# --------------------------------------------------------------------------------------------
# Training


def train_model(
    spec: TrainSpec,
    run_dir: Path,
    *,
    sources: Mapping[str, str] | None = None,
    progress: Any = None,
    preset: Mapping[str, Any] | None = None,
    tensorboard: bool = False,
) -> TrainResult:
    """Train (or resume training) ``spec`` in ``run_dir``; see the module docs.

    An existing ``run_dir/checkpoint.pt`` is resumed: its spec must equal ``spec`` except for
    the ``RESUMABLE`` fields (iterations, epochs, eval_every, checkpoint_every, log_every,
    device, threads; ``ConfigError`` naming the differing fields otherwise), and training
    continues from its iteration up to ``spec.iterations``. ``sources`` (field -> "default" /
    "config file" / "env" / "command line") is recorded in ``config.json`` as given.
    ``progress`` is a ``rich.progress.Progress`` to show iterations and loss on.
    ``tensorboard``: mirror the metrics log into ``run_dir/tensorboard`` as it grows
    (``actrec.tb_logging``; ``ConfigError`` before anything is written when TensorBoard is not
    installed). Torch runs with ``thread_share(spec.threads)`` threads while training (this
    process's torch threads are as before when the call returns, however it ends); the number
    is recorded in ``config.json`` as ``threads``.
    """
    with torch_threads(thread_share(spec.threads)):
        return _train_model(spec, run_dir, sources=sources, progress=progress, preset=preset,
                            tensorboard=tensorboard)


def thread_share(threads: int) -> int | None:
    """This process's torch threads for a training given ``threads`` (``TrainSpec.threads``):
    None for 0 (torch's own number stays); else ``threads``, or under torchrun its share of
    them among the processes on this machine (``LOCAL_WORLD_SIZE``), at least 1 each: K
    processes each taking all of them would run K times as many threads as asked for."""
    if threads <= 0:
        return None
    from actrec.distributed import launched

    local = 1
    if launched():
        try:
            local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
        except ValueError:
            local = 1  # torchrun sets it; a malformed value splits nothing
    return max(1, threads // local)


@contextlib.contextmanager
def torch_threads(threads: int | None):
    """Torch's intra-op threads set to ``threads`` in the block (None: left alone), and
    torch's number before the block back after it."""
    import torch

    before = torch.get_num_threads()
    if threads is not None and threads != before:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def _train_model(spec: TrainSpec, run_dir: Path, *, sources: Mapping[str, str] | None,
                 progress: Any, preset: Mapping[str, Any] | None,
                 tensorboard: bool) -> TrainResult:
    """``train_model`` in torch's threads for the run."""
    import numpy as np
    import torch

    from actrec import runs

    run_dir = Path(run_dir)
    ckpt_path = run_dir / runs.CHECKPOINT
    if run_dir.exists() and not run_dir.is_dir():
        raise DataError(f"run folder {run_dir} exists and is not a folder")

    # Everything that can fail on bad input happens before anything is written.
    dist, main = None, True
    try:
        if tensorboard:
            from actrec.tb_logging import require_tensorboard

            require_tensorboard()
        device = resolve_device(spec.device)
        from actrec import distributed

        dist = distributed.current(spec.sync_bn)  # None: one process (torchrun: see there)
        if dist is not None:
            device = dist.device(device)
            dist.check(spec)
            progress = progress if dist.main else None
        main = dist is None or dist.main  # the process that writes
        checkpoint = runs.load_checkpoint(ckpt_path) if ckpt_path.exists() else None
        if checkpoint is not None:
            check_resume(checkpoint, spec, ckpt_path)
        data = _load_data(spec, progress, (checkpoint or {}).get("label_space"), ckpt_path)
        if dist is not None:
            _check_same_data(dist, data)
        spec = _with_epoch_iterations(spec, data)
        if checkpoint is not None:
            _check_stores_unchanged(checkpoint, data, ckpt_path)
            check_schedule_span(checkpoint, spec, ckpt_path)
        cuda = [device.index or 0] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):
            torch.manual_seed(spec.seed)
            from actrec import boundary

            # The main model's inputs: the features, and the boundary pre-stage's outputs.
            inputs = boundary.WidenedLayout(data.layout) if spec.boundary else data.layout
            if checkpoint is not None and "model_config" in checkpoint:
                # As trained, whatever today's defaults are (an older run's max_len, say).
                plugin, model = resolve_model(checkpoint, inputs, data.labels,
                                              where=ckpt_path)
            else:
                plugin, model = build_model(spec.model, spec.model_options, inputs,
                                            data.labels, history=spec.history)
            if spec.boundary:  # trained now, in its own random streams
                model = boundary.attach(spec, data, model, device, progress,
                                        fresh=checkpoint is None,
                                        recorded=(checkpoint or {}).get("boundary"))
            init_rng = torch.get_rng_state()
        if spec.delay and not model.causal:
            raise ConfigError(f"--delay {spec.delay}: model '{spec.model}' is not causal (it "
                              f"sees the whole video), so it has nothing to wait for")
    except BaseException:
        if main:
            _remove_if_empty(run_dir)  # e.g. a fresh folder made by the caller for this run
        raise

    if dist is not None:  # every rank has read the checkpoint before rank 0 writes
        dist.barrier()
    try:
        if main:
            run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create run folder {run_dir}: {exc.strerror}") from None
    if checkpoint is None and main:  # a best.pt of an attempt killed before its first
        (run_dir / runs.BEST).unlink(missing_ok=True)  # checkpoint: what `actrec eval` scores
    with torch.random.fork_rng(devices=cuda):
        torch.set_rng_state(init_rng)  # continue the stream right after the initial weights
        if device.type == "cuda":
            torch.cuda.manual_seed(spec.seed)
        model.to(device)
        optimizer = make_optimizer(spec, model)
        rng = np.random.default_rng(spec.seed)
        start, elapsed_before = 0, 0.0
        if checkpoint is not None:
            restore(checkpoint, model, optimizer, rng, ckpt_path, device)
            start = int(checkpoint["iteration"])
            elapsed_before = float(checkpoint.get("elapsed_s", 0.0))
        if dist is not None:
            dist.seed_torch(spec.seed, start)
        stopped = int(((checkpoint or {}).get("monitor") or {}).get("stopped_at", 0))
        total = stopped or spec.total_iterations  # a run the schedule stopped stays stopped
        if main:
            # Lines logged after the last checkpoint (or before a first one) are redone.
            truncate_metrics(run_dir / runs.METRICS, start)
            if start < total:  # results of the checkpoint so far: kept, set aside
                runs.archive_results(run_dir)
            if checkpoint is None or start < total:
                _write_config(run_dir, spec, sources, data, plugin, model,
                              resumed_at=start if checkpoint is not None else None,
                              preset=preset, distributed=dist)

        state = _Loop(spec, run_dir, model, optimizer, rng, device, data, plugin,
                      elapsed_before, dist=dist)
        if spec.boundary and main:
            boundary.log_losses(run_dir / runs.METRICS, model, spec.log_every)
        final_loss = float("nan")
        if checkpoint is not None:
            state.monitor.load_state_dict(checkpoint.get("monitor"))
            state.recorded_drawn = checkpoint.get("windows_drawn")
            state.log_pending = checkpoint.get("log_pending")
        if tensorboard and main:
            from actrec.tb_logging import TensorBoardMirror

            state.tensorboard = TensorBoardMirror(run_dir)
        state.saved_at = start if checkpoint is not None else None
        try:
            if start < total:
                from actrec.protocols import run_protocol

                final_loss = run_protocol(state, start, progress)
                total = state.monitor.stopped_at or total
        except KeyboardInterrupt as exc:
            if not main or isinstance(exc, Interrupted):
                raise
            raise Interrupted(_interrupted_message(run_dir, state.saved_at, total)) from exc
        finally:
            if state.tensorboard is not None:
                state.tensorboard.close()
            if dist is not None:
                dist.unwrap(model)
                dist.close()
        if checkpoint is None and total == 0:  # an untrained model is still a run
            state.save(0, final_loss)
        if start >= total and checkpoint is not None:  # nothing left to do
            final_loss = float(checkpoint.get("loss", float("nan")))
    warnings: list[str] = []
    if not spec.reestimate_batches:
        from actrec.nn.reestimate import stale_statistics_warning

        stale = stale_statistics_warning(model, max(start, total))
        if stale:
            warnings.append(stale)
    return TrainResult(run_dir, max(start, total), start, final_loss,
                       state.elapsed(), ckpt_path, tuple(warnings))


def _interrupted_message(run_dir: Path, saved_at: int | None, total: int) -> str:
    """What an interrupted training kept, and how to resume it."""
    if saved_at is None:
        return (f"training stopped before its first checkpoint; {run_dir} holds no weights "
                f"yet, so running the command again with --run-dir {run_dir} starts it over")
    return (f"training stopped; {run_dir} keeps its checkpoint of iteration {saved_at} of "
            f"{total} (later iterations are redone): run the same command again with "
            f"--run-dir {run_dir} to resume, to exactly the result of an uninterrupted run")


@dataclass
class _Data:
    """The training data of a run: opened stores, chosen splits, in-memory (scaled) banks."""

    stores: list[Any]
    splits: list[str]
    banks: list[Any]
    scalers: list[Any]
    labels: Any  # LabelSpace
    layout: Any  # InputLayout
    fingerprints: list[dict[str, Any]]  # what each store held (components.store_fingerprint)
    carves: list[Any] | None = None  # per store: its validation carve (data.validation.Carve)


def _load_data(spec: TrainSpec, progress: Any, recorded_labels: Any = None,
               checkpoint: Path | None = None) -> _Data:
    """Open the stores, check them, load each one's training videos into memory, scaled.
    ``recorded_labels``: the label space a resumed run's ``checkpoint`` holds; the run keeps
    its maps (``DataError`` when the stores' classes are no longer the ones it had)."""
    from actrec.data.labels import InputLayout, LabelSpace
    from actrec.data.leakage import init_not_trained_on_tests, no_test_in_training
    from actrec.data.scaling import FeatureScaler
    from actrec.data.windows import VideoBank
    from actrec.protocols import arrange_labels, carve_split, check_model_domains

    check_model_domains(spec)
    paths = spec.datasets
    stores = [open_store(p, spec.streams) for p in paths]
    for i in range(len(stores)):
        for j in range(i + 1, len(stores)):
            if not spec.allow_same_store and same_store(stores[i], stores[j]):
                which = "--d1 and --d2" if (i, j) == (0, 1) else f"D{i + 1} and D{j + 1}"
                raise ConfigError(
                    f"{which} are the same feature store ({stores[i].path} and "
                    f"{stores[j].path}): joint training would see one dataset twice as two "
                    f"domains; give distinct datasets, or --allow-same-store if that is what "
                    f"you want")
    split_names = ([spec.split, spec.d2_split] + [None] * len(stores))[: len(stores)]
    banks, chosen, carves, lists = [], [], [], []
    roles = [f"D{k + 1}" for k in range(len(stores))]
    for role, store, wanted in zip(roles, stores, split_names):
        name, split = choose_split(store, wanted)
        both = sorted(set(split.get("train", ())) & set(split.get("test", ())))
        if both:
            raise DataError(
                f"feature store {store.path}: split '{name}' lists {len(both)} video(s) both "
                f"for training and for testing (e.g. '{both[0]}'); a model would be scored on "
                f"videos it trained on: fix the dataset's split lists and extract again")
        twice = sorted(v for v, n in Counter(split.get("train", ())).items() if n > 1)
        if twice:
            raise DataError(
                f"feature store {store.path}: split '{name}' lists {len(twice)} training "
                f"video(s) more than once (e.g. '{twice[0]}'); each would be drawn as often as "
                f"it is listed: fix the dataset's split lists and extract again")
        if not split.get("train"):
            raise DataError(
                f"feature store {store.path}: split '{name}' (split scheme "
                f"{store.attrs.get('split_scheme')!r}) lists no training videos; another split "
                f"scheme of the dataset may fit its files (e.g. -o split_scheme=... when "
                f"extracting), or another --split")
        chosen.append(name)
        lists.append(split)
        carve = carve_split(spec, store, name, split["train"], len(carves))
        carves.append(carve)
        bank = VideoBank.from_store(store, carve.train, progress=progress,
                                    name=f"{role} {store.path} split '{name}'",
                                    option=f"--{role.lower()}" if role in ("D1", "D2") else None)
        check_finite(bank, store)
        if not any(bool((y >= 0).any()) for y in bank.labels):
            raise DataError(
                f"feature store {store.path}: no training video of {role} (split '{name}', "
                f"{len(bank)} video(s)) has a labelled frame (every label is -1): the loss would "
                f"be 0 at every step and the model learn nothing; extract the store with its "
                f"labels")
        longest = max(range(len(bank)), key=lambda i: bank.labels[i].shape[0])
        if spec.history > bank.labels[longest].shape[0]:
            raise ConfigError(
                f"--history {spec.history} is longer than every training video of {role} "
                f"({store.path}, split '{name}': the longest, '{bank.ids[longest]}', has "
                f"{bank.labels[longest].shape[0]} frames); every window would be mostly "
                f"padding: use a history of at most that")
        banks.append(bank)
    no_test_in_training(stores, chosen, lists)
    if spec.init_from is not None:
        init_not_trained_on_tests(Path(spec.init_from), stores, chosen, lists)
    scalers = [FeatureScaler.fit(b.features) if spec.standardize else FeatureScaler.identity(b.dim)
               for b in banks]
    banks = [b.transformed(s) for b, s in zip(banks, scalers)]
    labels, score_inputs = arrange_labels(spec, stores, [b.dim for b in banks])
    if recorded_labels is not None:
        # A resumed run goes on with the maps it was trained with, even where this version
        # draws them otherwise (merged's background link, say): outputs keep their meaning.
        recorded = LabelSpace.from_state(recorded_labels)
        if (recorded.classes, recorded.arrangement) != (labels.classes, labels.arrangement):
            raise DataError(f"the stores' classes or the label arrangement differ from the "
                            f"ones {checkpoint} was trained with ({labels.arrangement}: "
                            f"{[len(c) for c in labels.classes]} classes now, "
                            f"{recorded.arrangement}: {[len(c) for c in recorded.classes]} "
                            f"then); train a new run")
        labels = recorded
    for bank, store in zip(banks, stores):
        bad = [vid for vid, y in zip(bank.ids, bank.labels)
               if y.size and (y.max() >= len(store.classes) or y.min() < -1)]
        if bad:
            raise DataError(f"feature store {store.path}: video '{bad[0]}' has labels outside "
                            f"-1..{len(store.classes) - 1}")
    if score_inputs:  # per-class scores: inputs arranged by the label maps, as outputs are
        layout = InputLayout(tuple(b.dim for b in banks), "scores",
                             tuple(labels.tables[k][0] for k in range(len(banks))))
    else:
        layout = InputLayout(tuple(b.dim for b in banks), spec.input_arrangement)
    fingerprints = [store_fingerprint(s, n) for s, n in zip(stores, chosen)]
    for store, fingerprint in zip(stores, fingerprints):
        _check_read_as_recorded(store, fingerprint)
    return _Data(stores, chosen, banks, scalers, labels, layout, fingerprints, carves)


def _check_same_data(dist: Any, data: _Data) -> None:
    """``DataError`` on every process unless all read the same stores: each process reads
    them itself, and one whose store at that path holds other data (another machine's copy,
    or a writer changing it while the processes started) would train its share of every
    batch on that data. Collective: compares each process's fingerprints with rank 0's."""
    reference = dist.agree(data.fingerprints)
    why = ""
    for store, ref, mine in zip(data.stores, reference, data.fingerprints):
        if ref != mine:
            changes = sorted({*store_changes(ref, mine), *store_changes(mine, ref)})
            why = f"{store.path}: {'; '.join(changes) or 'other split lists or videos'}"
            break
    whys = dist.everyone(why)  # every process learns which ones differ, and how
    bad = [r for r, w in enumerate(whys) if w]
    if not bad:
        return
    who = ", ".join(str(r) for r in bad)
    raise DataError(
        f"process{'es' if len(bad) > 1 else ''} {who} of {dist.world} read other data than "
        f"process 0 ({whys[bad[0]]}): every process must read the same feature stores (one "
        f"shared folder or URL, not per-machine copies that differ) and no writer may change "
        f"them while the run starts")


def _check_read_as_recorded(store: Any, fingerprint: Mapping[str, Any]) -> None:
    """``DataError`` when a video this run read from ``store`` was rewritten before the
    store's ``fingerprint`` was taken: the run would record digests of a copy it never read,
    and later checks that the store is unchanged (resume, eval) would pass on other data."""
    read = getattr(store, "read_digests", None)
    if read is None:  # several streams: each stream's reads are checked by their own store
        return
    for vid, seen in read().items():
        now = (fingerprint.get("videos") or {}).get(vid)
        if now is None or not any(seen.values()):
            continue  # not in the split lists, or written before digests were recorded
        if now.get("sha256") != seen:
            raise DataError(f"feature store {store.path}: video '{vid}' was rewritten while "
                            f"this run read the store (another `actrec extract` or import is "
                            f"writing it); start the run again once that writer is done")


def check_finite(bank: Any, store: Any) -> None:
    """``DataError`` naming the store, video and first frame when stored features hold NaN or
    infinity (they would surface later as a diverging loss)."""
    import numpy as np

    for vid, x in zip(bank.ids, bank.features):
        bad = ~np.isfinite(x)
        if bad.any():
            t, d = np.argwhere(bad)[0]
            raise DataError(f"feature store {store.path}: video '{vid}' has a non-finite "
                            f"feature value ({x[t, d]}) at frame {t}, dimension {d} "
                            f"({int(bad.any(1).sum())} frame(s) affected); re-extract it")


def _check_stores_unchanged(checkpoint: Mapping[str, Any], data: _Data, path: Path) -> None:
    """``DataError`` when a store changed since the checkpoint was written: a resumed run
    must train on the data it started on."""
    recorded = checkpoint.get("store_fingerprints") or []
    for fp, now, store in zip(recorded, data.fingerprints, data.stores):
        changes = store_changes(fp, now)
        if changes:
            raise DataError(f"feature store {store.path} changed since {path} was written: "
                            f"{'; '.join(changes)}; resume on the data the run started on, or "
                            f"train a new run")


def _with_epoch_iterations(spec: TrainSpec, data: _Data) -> TrainSpec:
    """``spec`` with ``iterations`` set to what ``spec.epochs`` epochs of D1's windows take
    (``actrec.data.sampling.iterations_for_epochs``); unchanged when ``epochs`` is None."""
    import dataclasses

    from actrec.data.sampling import iterations_for_epochs, make_samplers, parse_windows

    if spec.epochs is None:
        return spec
    sampler = make_samplers(parse_windows(spec.windows), data.banks[:1], spec.history,
                            spec.seed)[0]
    iterations = iterations_for_epochs(sampler, spec.epochs, spec.batch_mix[0])
    return dataclasses.replace(spec, iterations=iterations)


def _remove_if_empty(run_dir: Path) -> None:
    try:
        run_dir.rmdir()  # only ever removes an empty folder
    except OSError:
        pass


def optimizer_groups(model: torch.nn.Module, weight_decay: float,
                     lr: float | None = None) -> list[dict[str, Any]]:
    """Parameter groups: weight matrices (2+ dimensions) decayed by ``weight_decay``; biases,
    normalisation gains/shifts and DDBN alphas (1-D or scalar) never decayed; then one undecayed
    group per ``model.optimizer_overrides()`` entry with its settings (e.g. the DDLSTM's
    ``alpha_lr``) and ``lr_scale``, its lr over the run's ``lr``, which lr schedules keep."""
    overrides = getattr(model, "optimizer_overrides", lambda: [])()
    own = {id(p) for params, _ in overrides for p in params}
    decay, keep = [], []
    for p in model.parameters():
        if p.requires_grad and id(p) not in own:
            (decay if p.dim() >= 2 else keep).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay},
              {"params": keep, "weight_decay": 0.0}]
    for params, settings in overrides:
        group = {"params": list(params), "weight_decay": 0.0, **settings}
        if "lr" in group and lr:
            group["lr_scale"] = group["lr"] / lr
        groups.append(group)
    return [g for g in groups if g["params"]]


def make_optimizer(spec: TrainSpec, model: torch.nn.Module) -> torch.optim.Optimizer:
    """SGD with momentum, Adam, or AdamW (weight decay decoupled from the gradient step,
    Loshchilov & Hutter) over ``optimizer_groups``."""
    import torch

    groups = optimizer_groups(model, spec.weight_decay, spec.lr)
    if spec.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=spec.lr, momentum=spec.momentum)
    if spec.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=spec.lr)  # decay per group, as given
    return torch.optim.Adam(groups, lr=spec.lr)


class _Loop:
    """The optimisation loop and its bookkeeping (logging, checkpoints, periodic eval)."""

    def __init__(self, spec, run_dir, model, optimizer, rng, device, data: _Data, plugin,
                 elapsed_before, dist: Any = None):
        self.spec, self.run_dir, self.model, self.optimizer = spec, run_dir, model, optimizer
        # Several processes (actrec.distributed): this one's share of every batch, a DDP
        # wrapper for the training forward; self.model stays the bare model.
        self.dist = dist
        self.forward_model = model
        if dist is not None:
            from actrec.distributed import unused_parameters_possible

            self.forward_model = dist.wrap(model, device,
                                           find_unused=unused_parameters_possible(spec, model))
        self.rng, self.device, self.data, self.plugin = rng, device, data, plugin
        self.elapsed_before = elapsed_before
        self.t0 = time.perf_counter()
        self.tensorboard = None  # an actrec.tb_logging.TensorBoardMirror (--tensorboard)
        self.saved_at: int | None = None  # iteration of the last checkpoint.pt written
        from actrec.data.sampling import make_samplers, parse_windows

        self.samplers = make_samplers(parse_windows(spec.windows), data.banks, spec.history,
                                      spec.seed)
        from actrec.protocols import Monitor

        # The phase's batch mix, datasets and name (set per phase by actrec.protocols), and
        # each dataset's windows drawn in the phase so far: where its window stream stands.
        self.monitor = Monitor(spec, data)
        self.mix, self.phase_name = spec.batch_mix, "train"
        self.domains = list(range(len(spec.batch_mix)))
        self.drawn = [0] * len(data.banks)
        self.recorded_drawn: list[int] | None = None  # a resumed checkpoint's ``drawn``
        # Losses and frame counts of the iterations since the last logged line (saved).
        self.log_pending: dict[str, Any] | None = None

    def batch(self, rng: Any, iteration: int | None = None) -> Any:
        """The training batch of global ``iteration`` (D1 rows first) on the run's device,
        windows chosen by ``spec.windows`` at the streams' positions ``self.drawn`` (the
        caller advances them); ``iteration`` None: random windows from ``rng``."""
        from actrec.data.windows import two_domain_batch

        d = self.data
        samplers = None if iteration is None else self.samplers
        part = None if self.dist is None else self.dist.part  # this process's share
        batch = two_domain_batch(d.banks, self.mix, self.spec.history, rng,
                                 d.labels, d.layout, samplers=samplers,
                                 iteration=iteration or 0, part=part,
                                 positions=None if iteration is None else self.drawn)
        if d.labels.arrangement == "multi-random" and iteration is not None:
            from actrec.protocols import draw_label_maps

            draw_label_maps(batch, d.labels, d.layout, self.spec.seed, iteration, part)
        return batch.to(self.device)

    def elapsed(self) -> float:
        return self.elapsed_before + time.perf_counter() - self.t0

    def epochs_done(self) -> dict[str, float]:
        """Epochs of windows each dataset of the phase has drawn (``actrec.data.sampling``;
        random windows: nominal epochs, as many windows as cover the training frames)."""
        return {f"D{k + 1}": round(self.samplers[k].epochs_done(self.drawn[k]), 4)
                for k in self.domains}

    def fresh_optimizer(self) -> None:
        """A new optimiser over the model (a new phase starts)."""
        self.optimizer = make_optimizer(self.spec, self.model)

    def run(self, start: int, progress: Any, stop: int | None = None) -> float:
        """Iterations ``start .. stop - 1`` (default ``spec.iterations``) of the current phase;
        the mean loss of the last logged ones. Stops early when the schedule says so."""
        import dataclasses

        import torch

        from actrec import runs
        from actrec.lookahead import delay_targets
        from actrec.losses import frame_loss

        spec, model = self.spec, self.model
        task = None
        if progress is not None:
            task = progress.add_task(f"{self.phase_name} {spec.model}",
                                     total=spec.total_iterations,
                                     completed=min(start, spec.total_iterations))
        stop = spec.iterations if stop is None else stop
        # Iterations since the last logged line (a resumed run picks up its checkpoint's, so
        # the first line after a resume averages what the uninterrupted run's line does).
        pending = self.log_pending if self.log_pending is not None and start < stop else {}
        losses: list[float] = [float(v) for v in pending.get("losses", ())]
        correct, counted = int(pending.get("correct", 0)), int(pending.get("counted", 0))
        self.log_pending = None
        last_loss = float("nan")
        dist = self.dist
        main = dist is None or dist.main
        metrics = open(self.run_dir / runs.METRICS if main else os.devnull, "a",
                       encoding="utf-8")
        try:
            for it in range(start, stop):
                self.monitor.apply_lr(self.optimizer, it)
                batch = self.batch(self.rng, it)
                self.drawn = [p + int(m) for p, m in zip(self.drawn, self.mix)]
                if spec.delay:  # step s answers for frame s - delay (actrec.lookahead)
                    batch = dataclasses.replace(
                        batch, y=delay_targets(batch.y, spec.delay, batch.mask))
                model.train()
                logits = self.forward_model(batch.x, batch.domain, mask=batch.mask)  # [T, N, K]
                if dist is None:
                    loss = frame_loss(logits, batch.y, batch.mask, spec.loss_frames, batch.start)
                    to_backward = loss
                else:  # the global batch's mean; gradients as one process would have them
                    loss, to_backward = dist.frame_loss(logits, batch.y, batch.mask,
                                                        spec.loss_frames, batch.start)
                self.optimizer.zero_grad(set_to_none=True)
                to_backward.backward()
                if spec.grad_clip is not None:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), spec.grad_clip)
                self.optimizer.step()
                model.after_optimizer_step()

                value = float(loss.detach())
                if not math.isfinite(value):
                    raise ActrecError(f"training diverged at iteration {it + 1} (loss {value}); "
                                      f"lower the learning rate or set grad_clip")
                losses.append(value)
                hits, frames = frame_hits(logits, batch, self.data.labels, spec.prediction)
                if dist is not None:
                    hits, frames = (int(v) for v in dist.sum(hits, frames))
                correct, counted = correct + hits, counted + frames
                done = it + 1
                last = done == stop
                if (spec.log_every and done % spec.log_every == 0) or last:
                    last_loss = sum(losses) / len(losses)
                    line = {"iteration": done, "phase": self.phase_name, "loss": last_loss,
                            "train_frame_accuracy": correct / counted if counted else None,
                            "lr": self.optimizer.param_groups[0]["lr"],
                            "epochs": self.epochs_done(),
                            "elapsed_s": round(self.elapsed(), 3)}
                    alphas = _alphas(model)
                    if alphas:
                        line["alphas"] = alphas
                    log_line(metrics, line)
                    losses, correct, counted = [], 0, 0
                    if task is not None:
                        progress.update(task, description=f"train {spec.model} "
                                        f"loss {last_loss:.3f}")
                if done == spec.total_iterations and spec.reestimate_batches:
                    self.reestimate(done)
                self.log_pending = {"losses": list(losses), "correct": correct,
                                    "counted": counted}
                if dist is not None and self.monitor.due(done, stop):
                    dist.broadcast_buffers(model)  # every rank validates rank 0's model
                stopping = self.monitor.after_step(self, done, stop, metrics, last_loss)
                if stopping and spec.reestimate_batches and done != spec.total_iterations:
                    self.reestimate(done)  # the schedule ended the run here: its last iteration
                if (spec.checkpoint_every and done % spec.checkpoint_every == 0) or last \
                        or stopping:
                    self.save(done, last_loss)
                if spec.eval_every and done % spec.eval_every == 0 and main:
                    log_line(metrics, {"iteration": done, "eval": self.evaluate()})
                if self.tensorboard is not None:  # every line this iteration logged
                    self.tensorboard.sync()
                if task is not None:
                    progress.advance(task)
                if stopping:
                    break
        finally:
            metrics.close()
            if task is not None:
                progress.remove_task(task)
        return last_loss

    def reestimate(self, iteration: int) -> None:
        """Exact population statistics over ``spec.reestimate_batches`` fresh batches."""
        import numpy as np

        from actrec.nn.reestimate import reestimate_statistics

        spec = self.spec
        rng = np.random.default_rng([spec.seed, iteration])

        def batches():
            for _ in range(spec.reestimate_batches):
                b = self.batch(rng)
                yield b.x, b.domain, b.mask

        reestimate_statistics(self.model, batches())

    def evaluate(self) -> dict[str, float]:
        """Offline frame accuracy of each dataset's test split with the current weights."""
        from actrec.evaluate import evaluate_model

        d = self.data
        results = evaluate_model(  # a delayed model is stepped with its delay (online)
            self.model, d.stores, d.splits, d.labels, d.layout,
            online=bool(self.spec.delay), prediction=self.spec.prediction, device=self.device,
            scalers=d.scalers, lookahead=self.spec.delay,
        )
        self.model.train()
        return {name: r.frame_accuracy for name, r in results.items()}

    def save(self, iteration: int, loss: float, name: str | None = None) -> None:
        """Write the checkpoint of ``iteration`` (to ``name``, default checkpoint.pt)."""
        import torch

        from actrec import runs

        if self.dist is not None and not self.dist.main:
            return  # rank 0 writes
        spec = self.spec
        checkpoint = {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "iteration": iteration,
            "loss": loss,
            "elapsed_s": self.elapsed(),
            "spec": spec.to_dict(),
            "model_name": spec.model,
            "model_config": self.plugin.config.to_dict(),
            "causal": bool(getattr(self.plugin, "causal", True)) and bool(self.model.causal),
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "classes": [list(c) for c in self.data.labels.classes],
            "input_dims": list(self.data.layout.dims),
            "input_arrangement": self.data.layout.mode,
            "input_scalers": [s.to_state() for s in self.data.scalers],
            "stores": [str(s.path) for s in self.data.stores],
            "splits": list(self.data.splits),
            "store_fingerprints": self.data.fingerprints,
            "rng": {"numpy": self.rng.bit_generator.state, "torch": torch.get_rng_state()},
            "label_space": self.data.labels.to_state(),
            "input_tables": ([list(t) for t in self.data.layout.tables]
                             if self.data.layout.tables is not None else None),
            "phase": self.phase_name,
            "boundary": getattr(self.model, "boundary_record", None),  # None: no pre-stage
            "monitor": self.monitor.state_dict(),
            "windows_drawn": list(self.drawn),
            "log_pending": self.log_pending,  # iterations not yet in a logged line
            "selected": self.monitor.selected(iteration),
            "distributed": None if self.dist is None else self.dist.record(),
        }
        if self.device.type == "cuda":
            checkpoint["rng"]["torch_cuda"] = torch.cuda.get_rng_state(self.device)
        def saved() -> None:  # with the file in place, before Ctrl-C can stop the loop
            if name is None:
                self.saved_at = iteration

        runs.atomic_torch_save(self.run_dir / (name or runs.CHECKPOINT), checkpoint, saved)


def frame_hits(logits: torch.Tensor, batch: Any, labels: Any, prediction: str) -> tuple[int, int]:
    """(correct, labelled) frames of a training batch, each frame predicted by the rule
    evaluation uses (``LabelSpace.predict`` over its own dataset's block, or the full vector)
    and compared with its local label."""
    import torch

    correct = counted = 0
    with torch.no_grad():
        for k in range(len(labels.classes)):
            rows = batch.domain == k  # [N]
            if not bool(rows.any()):
                continue
            y = batch.y[:, rows]  # [T, n_k] output indices, -1 unlabelled
            keep = y >= 0
            # In output space: every label map of a dataset covers the same outputs, so this
            # is right for multi-random windows under any of their maps too.
            cols = torch.as_tensor(sorted(labels.tables[k][0]), device=logits.device)
            if prediction == "block":
                pred = cols[logits[:, rows].index_select(-1, cols).argmax(-1)]  # [T, n_k]
            else:
                pred = logits[:, rows].argmax(-1)
            correct += int(((pred == y) & keep).sum())
            counted += int(keep.sum())
    return correct, counted


def _write_config(run_dir, spec, sources, data: _Data, plugin, model,
                  *, resumed_at: int | None, preset: Mapping[str, Any] | None = None,
                  distributed: Any = None) -> None:
    import torch

    from actrec import runs
    from actrec.data.sampling import parse_windows
    from actrec.losses import parse_loss_frames
    from actrec.protocols import phase_bounds, phase_mix, phase_names
    from actrec.system_info import versions

    path = run_dir / runs.CONFIG
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    if resumed_at is not None and path.exists():
        config = runs.read_json(path)
        config.setdefault("resumed", []).append({
            "at_iteration": resumed_at, "time": now, "spec": spec.to_dict(),
            "sources": dict(sources or {}), "versions": versions(),
            "distributed": None if distributed is None else distributed.record(),
            "threads": torch.get_num_threads()})
        runs.atomic_write_json(path, config)
        return
    store_info = []
    labels, layout = data.labels, data.layout
    roles = [f"d{k + 1}" for k in range(len(data.stores))]
    for role, store, split, bank in zip(roles, data.stores, data.splits, data.banks):
        attrs = store.attrs
        store_info.append({
            "role": role, "path": str(store.path), "split": split,
            "dataset": attrs.get("dataset"), "split_scheme": attrs.get("split_scheme"),
            "extractor": attrs.get("extractor"), "extractor_config": attrs.get("extractor_config"),
            "lookahead": attrs.get("lookahead"), "causal": attrs.get("causal"),
            "dtype": attrs.get("dtype"), "dim": bank.dim, "classes": len(store.classes),
            "train_videos": len(bank), "train_frames": bank.num_frames,
        })
    config = {
        "created": now,
        "spec": spec.to_dict(),
        "sources": dict(sources or {}),
        "versions": versions(),
        "stores": store_info,
        "model": {"name": spec.model, "config": plugin.config.to_dict(),
                  "causal": bool(getattr(plugin, "causal", True)) and bool(model.causal),
                  "parameters": sum(p.numel() for p in model.parameters())},
        "labels": {"arrangement": labels.arrangement, "num_classes": labels.num_classes,
                   "offsets": list(labels.offsets) if labels.arrangement == "concat" else None,
                   "maps": labels.to_state()["tables"], "score_inputs": layout.mode == "scores"},
        "validation": [c.to_dict() for c in data.carves],
        "preset": dict(preset) if preset else None,
        "distributed": None if distributed is None else distributed.record(),
        # torch's threads in this process while it trained (spec.threads: what was asked)
        "threads": torch.get_num_threads(),
        "phases": [{"name": n, "first_iteration": a + 1, "last_iteration": b}
                   for n, (a, b) in zip(phase_names(spec), phase_bounds(spec))],
        "inputs": {"arrangement": layout.mode, "dims": list(layout.dims),
                   "width": layout.width, "shared_columns": layout.shared},
        "protocol": {"loss": "mean per-frame cross-entropy over the concatenated label vector, "
                             "label -1 and padding ignored, over "
                             + parse_loss_frames(spec.loss_frames).describe(),
                     "windows": parse_windows(spec.windows).describe(),
                     # iterations x windows per batch x history (padding included), over
                     # the phases (transfer: pre-training's D2 batches too)
                     "window_frames": spec.history * sum(
                         count * sum(phase_mix(spec, i, len(data.stores)))
                         for i, count in enumerate(spec.phase_iterations) if count),
                     "prediction": spec.prediction,
                     "padding": "masked: padded frames enter no loss, statistic or gradient",
                     "weight_decay": "weight matrices only; biases, normalisation parameters "
                                     "and alphas are not decayed"},
    }
    if resumed_at:
        config["resumed"] = [{"at_iteration": resumed_at, "time": now}]
    runs.atomic_write_json(path, config)
