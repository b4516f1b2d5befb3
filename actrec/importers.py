"""Import public per-frame features into an actrec feature store, so that training and
evaluation run on them with no extraction.

Two layouts:
- MS-TCN (``import_mstcn``): ``features/<video>.npy`` D x T, ground truth and splits as read by
  the ``mstcn`` dataset plugin (``actrec_plugins.datasets.mstcn.load_mstcn``);
- LSTR / MiniROAD (``import_lstr``): ``<feature dir>/<video>.npy`` T x D (an RGB and optionally
  a flow directory, concatenated along D), ``target_perframe/<video>.npy`` T x C one-hot, and
  ``data_info.json`` (``{"<DATASET>": {"class_index" | "class_names": [...],
  "train_session_set": [...], "test_session_set": [...]}}``).

Causality: public features of both layouts come from temporal windows that reach into the
future, by an amount the files do not record. Give it with ``lookahead`` (``--lookahead N``)
when it is known: the public MS-TCN I3D features (Breakfast, 50 Salads, GTEA) take a window
of 21 frames centred on each frame, t-10..t+10, so ``lookahead=10``; LSTR's features are
computed on 6-frame chunks (``lookahead=5`` at the video rate, less at the chunk rate).
Without it the stores are written with ``lookahead = -1`` ("unknown"), which the store records
as ``causal: false``; ``extractor_config`` says which in words.

Splits: the MS-TCN layout's ``splits/*.splitN.bundle`` files, LSTR's train / test session
sets; or, for data that ship none (or to replace them), a rule over the imported videos
(``splits``: ``loo``, ``kfold:K[:seed=S]``, see ``actrec.split_rules``), recorded as the
store's ``split_scheme``. An MS-TCN folder without bundles needs a rule.

Source and background: each store records its source (the layout, the import options and the
import root as an absolute path; see ``actrec.io.features``) and refuses to be filled from
another, and records the background class (``background``: a class name; ``"auto"``, the
default, takes the class named ``background`` when there is one, MS-TCN's evaluation
convention, case-insensitively for LSTR's ``Background``; ``None``: no background class).

Ambiguous frames (LSTR): THUMOS'14 marks frames whose action is uncertain with its class
``Ambiguous``, and its evaluation (LSTR's and MiniROAD's per-frame mAP) leaves those frames
out. They are imported unlabelled (``-1``: no loss, no metric), counted in the summary;
``ambiguous`` names that class (``"auto"``, the default: the class named ``ambiguous`` in any
case, where there is one; ``None``: import it as a class like the others). The class stays in
the class list, so that class indices stay those of the files.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from actrec.errors import ConfigError, DataError

__all__ = ["UNKNOWN_LOOKAHEAD", "ImportReport", "import_lstr", "import_mstcn"]

UNKNOWN_LOOKAHEAD = -1
_NOT_CAUSAL = ("public features computed over temporal windows that include future frames; "
               "lookahead unknown, so not causal")


def _lookahead(lookahead: int | None) -> tuple[int, Any, str]:
    """``(stored lookahead, recorded value, note)`` for a given or unknown (``None``)
    lookahead; ``ConfigError`` for a negative one."""
    if lookahead is None:
        return UNKNOWN_LOOKAHEAD, "unknown", _NOT_CAUSAL
    if isinstance(lookahead, bool) or not isinstance(lookahead, int) or lookahead < 0:
        raise ConfigError(f"--lookahead: expected the number of future frames (an integer "
                          f">= 0) each feature depends on, got {lookahead!r}")
    causal = "causal" if lookahead == 0 else "not causal"
    return lookahead, lookahead, (f"public features whose window reaches {lookahead} frame(s) "
                                  f"past their own frame (given at import), so {causal}")


def _existing_root(root: Path | str, layout: str) -> Path:
    """``root`` resolved; ``DataError`` naming it when it is not a folder."""
    path = Path(root).expanduser().resolve()
    if not path.is_dir():
        raise DataError(f"{path}: no such folder to import from (expected the {layout})")
    return path


def _rule_splits(rule: str | None, videos, participant=None):
    """``(split_scheme, splits)`` from split rule ``rule`` over ``videos``, or ``None``;
    ``participant`` (video id -> participant) groups the videos of a ``by=participant`` rule
    (``ConfigError`` when the layout has none)."""
    from actrec.split_rules import make_splits, parse_split_rule

    if rule is None:
        return None
    parsed = parse_split_rule(rule)
    groups = None
    if parsed.by == "participant":
        if participant is None:
            raise ConfigError(f"--splits {rule}: this layout records no participant of its "
                              f"videos; split by video ({parsed.text.rsplit(':by=', 1)[0]})")
        groups = {v: participant(v) for v in videos}
    try:
        made = make_splits(parsed, videos, groups)
    except ConfigError as exc:
        raise ConfigError(f"--splits: {exc}") from None
    return parsed.text, {k: {"train": s.train, "test": s.test} for k, s in made.items()}

# ``progress``: a ``rich.progress.Progress`` (one task, advanced per video, as the CLI passes)
# or a callable ``(videos done, videos in total, current video id)``.
Progress = Any


@dataclass
class ImportReport:
    """What an import wrote: counts, the feature length, and what was skipped or repaired."""

    store: Path
    dataset: str
    extractor: str
    written: int = 0
    already_present: int = 0
    frames: int = 0
    dim: int | None = None
    classes: int = 0
    repairs: dict[str, int] = field(default_factory=dict)
    lookahead: int = UNKNOWN_LOOKAHEAD  # -1: unknown
    split_scheme: str = ""
    splits: int = 0

    def to_dict(self) -> dict[str, Any]:
        lookahead = ("unknown (not causal)" if self.lookahead < 0 else
                     f"{self.lookahead} ({'causal' if self.lookahead == 0 else 'not causal'})")
        return {"store": str(self.store), "dataset": self.dataset, "extractor": self.extractor,
                "written": self.written, "already_present": self.already_present,
                "frames": self.frames, "dim": self.dim, "classes": self.classes,
                "lookahead": lookahead, "split_scheme": self.split_scheme,
                "splits": self.splits, "repairs": dict(self.repairs)}


def _changed(store, video: str, source: Path, labels: np.ndarray | None) -> bool:
    """Whether stored ``video`` came from another version of its files: the feature file
    ``source`` differs from the path, size and mtime recorded when it was imported, or
    ``labels`` (when given) from the labels stored."""
    from actrec.io.integrity import array_digest, recorded_digest, source_change

    attrs = store.video_attrs(video)
    if source_change(attrs.get("source"), source):
        return True
    recorded = recorded_digest(attrs, "labels")
    return labels is not None and recorded is not None \
        and recorded != array_digest(labels, "int64")


def _write_all(store, items, report: ImportReport, overwrite: bool, progress: Progress | None,
               load: Callable[[str, Any], tuple[np.ndarray, np.ndarray, float, Path]],
               participant: Callable[[str], str | None] | None = None,
               changed: Callable[[str, Any], bool] | None = None) -> None:
    """Write every ``(video, payload)`` of ``items`` with ``load(video, payload) -> (features
    [T, D], labels [T], fps, source)``; existing videos are kept unless ``overwrite``,
    damaged (a missing or resized chunk file) or ``changed(video, payload)`` (its files
    differ from those it was imported from): such videos are imported again and counted in
    the repairs. ``participant(video)``, where given, is recorded with each video (validation
    carves by it)."""
    total = len(items)
    task = None
    if progress is not None and hasattr(progress, "add_task"):
        task = progress.add_task(f"import {report.dataset}", total=total)
    for done, (video, payload) in enumerate(items, 1):
        present = not overwrite and store.has(video)
        damaged = present and bool(store.damage(video))
        stale = present and not damaged and changed is not None and changed(video, payload)
        if present and not damaged and not stale:
            report.already_present += 1
        else:
            features, labels, fps, source = load(video, payload)
            extra: dict[str, Any] = {"imported": True}
            if participant is not None and participant(video):
                extra["participant"] = participant(video)
            store.write_video(video, features, labels, fps=fps, source=source, extra=extra)
            if damaged or stale:  # counted once it is whole again
                key = ("damaged videos imported again" if damaged
                       else "videos whose files changed since imported (imported again)")
                report.repairs[key] = report.repairs.get(key, 0) + 1
            report.written += 1
            report.frames += int(features.shape[0])
            report.dim = int(features.shape[1])
        if task is not None:
            progress.advance(task)
        elif progress is not None:
            progress(done, total, video)


def import_mstcn(root: Path, store_path: Path, *, name: str, overwrite: bool = False,
                 progress: Progress | None = None, fps: float = 15.0,
                 background: str | None = "auto", length_policy: str = "truncate",
                 dtype: str = "float16", lookahead: int | None = None,
                 splits: str | None = None, max_length_share: float = 0.2) -> ImportReport:
    """Write the features of an MS-TCN layout folder into the store at ``store_path``.

    Labels come from ``groundTruth/`` and are fitted to each feature length
    (``length_policy``, counted in ``report.repairs``; a disagreement of more than
    ``max_length_share`` of the longer length is a ``DataError``). Videos with ground truth but no
    feature file are skipped and counted; a feature file with no ground truth is an error
    only if no video has both. ``name`` becomes the store's dataset name. ``lookahead``
    (future frames per feature, ``None``: unknown) and ``splits`` (a rule replacing the
    bundles; required without bundles) as in the module docstring.
    """
    from actrec_plugins.datasets.mstcn import load_mstcn

    from actrec.io import annotations as A
    from actrec.io.features import FeatureStore, source_of

    root = _existing_root(root, "MS-TCN layout: mapping.txt, groundTruth/, features/")
    if background is not None and background.strip().lower() in ("", "none"):
        background = None
    feature_dir = root / "features"
    if feature_dir.is_dir():  # before the labels are fitted to (transposed) feature lengths
        truth = root / "groundTruth"
        _check_orientation([p for p in sorted(feature_dir.glob("*.npy"))
                            if (truth / f"{p.stem}.txt").is_file()
                            or (truth / f"{p.stem}.npy").is_file()])
    index = load_mstcn(root, name=name, fps=fps, background=background,
                       length_policy=length_policy, max_length_share=max_length_share)
    if not feature_dir.is_dir():
        raise DataError(f"{feature_dir}: folder not found; nothing to import (MS-TCN layout "
                        "expects features/<video>.npy, D x T)")
    report = ImportReport(store=Path(store_path), dataset=name, extractor="mstcn-import",
                          classes=len(index.classes))
    A.add_repairs(report.repairs, index.repairs)
    items = [(v, feature_dir / f"{v}.npy") for v in sorted(index.videos)
             if (feature_dir / f"{v}.npy").is_file()]
    missing = len(index.videos) - len(items)
    orphans = sum(1 for p in feature_dir.glob("*.npy") if p.stem not in index.videos)
    A.add_repairs(report.repairs, {"videos with ground truth but no features (skipped)": missing,
                                   "feature files without ground truth (skipped)": orphans})
    if not items:
        raise DataError(f"{feature_dir}: no feature file matches a ground-truth file in "
                        f"{root / 'groundTruth'}")
    stored_lookahead, recorded, note = _lookahead(lookahead)
    ruled = _rule_splits(splits, [v for v, _ in items],
                         participant=lambda v: index.videos[v].participant)
    if ruled is not None:
        scheme, split_lists = ruled
    elif index.splits:
        scheme = "mstcn-bundles"
        split_lists = {k: {"train": s.train, "test": s.test} for k, s in index.splits.items()}
    else:
        raise DataError(f"{root / 'splits'}: no split bundles (test.splitN.bundle); give a "
                        f"split rule: --splits loo, kfold:K or kfold:K:seed=S")
    config = {"layout": "mstcn", "source": str(root), "lookahead": recorded, "note": note}
    report.lookahead, report.split_scheme, report.splits = (stored_lookahead, scheme,
                                                            len(split_lists))
    store = FeatureStore.open_or_create(
        store_path, dataset=name, split_scheme=scheme, classes=index.classes,
        splits=split_lists, extractor="mstcn-import", extractor_config=config,
        lookahead=stored_lookahead, dtype=dtype, background=index.background_classes,
        source=source_of(name, {"root": str(root), "fps": fps, "background": background,
                                "length_policy": length_policy, **_rule_option(ruled)},
                         "mstcn-import", config))

    def load(video: str, path: Path):
        features = _load_npy(path, ndim=2).T  # [D, T] -> [T, D]
        labels = index.videos[video].labels  # already fitted to T by load_mstcn
        return np.ascontiguousarray(features, dtype=np.float32), labels, fps, path

    _write_all(store, items, report, overwrite, progress, load,
               participant=lambda video: index.videos[video].participant,
               changed=lambda video, path: _changed(store, video, path,
                                                    index.videos[video].labels))
    return report


def import_lstr(root: Path, store_path: Path, *, name: str, overwrite: bool = False,
                progress: Progress | None = None, dataset_key: str | None = None,
                rgb_dir: str = "rgb_kinetics_resnet50", flow_dir: str | None = None,
                target_dir: str = "target_perframe", fps: float | None = None,
                background: str | None = "auto", dtype: str = "float16",
                lookahead: int | None = None, splits: str | None = None,
                ambiguous: str | None = "auto") -> ImportReport:
    """Write an LSTR / MiniROAD layout folder into the store at ``store_path``.

    ``dataset_key`` picks the entry of ``data_info.json`` (default: its only entry, else
    ``name`` upper-cased). Features are ``rgb_dir`` (and ``flow_dir`` concatenated along D);
    labels are the argmax of the one-hot targets, ``-1`` where a row is all zero, the first
    class where a row has several (both counted). Rows beyond the shorter of features and
    targets are dropped (counted). ``fps`` defaults to ``data_info``'s ``fps``, else 4 (LSTR's
    24 fps video in 6-frame chunks). The split is ``"1"``: the train / test session sets,
    unless ``splits`` gives a rule over all sessions; ``lookahead`` as in the module docstring.
    Frames of the ``ambiguous`` class (THUMOS' ``Ambiguous``) are unlabelled, whatever other
    class they have (counted; see the module docstring).
    """
    import json

    from actrec.io import annotations as A
    from actrec.io.features import FeatureStore, source_of

    root = _existing_root(root, "LSTR layout: data_info.json and feature folders")
    info_path = root / "data_info.json"
    try:
        info = json.loads(info_path.read_text())
    except FileNotFoundError:
        raise DataError(f"{info_path}: file not found (LSTR layout expects data_info.json)") \
            from None
    except ValueError as exc:
        raise DataError(f"{info_path}: not valid JSON ({exc})") from None
    if not isinstance(info, dict) or not info:
        raise DataError(f"{info_path}: expected an object with one entry per dataset")
    if dataset_key is None:
        dataset_key = next(iter(info)) if len(info) == 1 else name.upper()
    if dataset_key not in info:
        raise DataError(f"{info_path}: no entry {dataset_key!r}; entries: {', '.join(info)}")
    entry = info[dataset_key]
    classes = entry.get("class_index") or entry.get("class_names")
    where = f"{info_path} [{dataset_key!r}]"
    if not isinstance(classes, list) or not classes:
        raise DataError(f"{where}: expected 'class_index' (or 'class_names'), a list of names")
    try:
        train = [str(v) for v in entry["train_session_set"]]
        test = [str(v) for v in entry["test_session_set"]]
    except KeyError as exc:
        raise DataError(f"{where}: missing {exc.args[0]!r}") from None
    fps = float(fps if fps is not None else entry.get("fps", 4.0))
    dirs = [root / rgb_dir] + ([root / flow_dir] if flow_dir else [])
    for d in dirs + [root / target_dir]:
        if not d.is_dir():
            raise DataError(f"{d}: folder not found (LSTR layout)")

    report = ImportReport(store=Path(store_path), dataset=name, extractor="lstr-import",
                          classes=len(classes))
    videos = list(dict.fromkeys(train + test))
    missing = [v for v in videos
               if not all((d / f"{v}.npy").is_file() for d in dirs + [root / target_dir])]
    if missing:
        raise DataError(f"{where}: session {missing[0]!r} is listed but "
                        f"{', '.join(str(d / (missing[0] + '.npy')) for d in dirs)} or "
                        f"{root / target_dir / (missing[0] + '.npy')} is missing "
                        f"({len(missing)} session(s) in all)")
    classes = [str(c) for c in classes]
    stored_lookahead, recorded, note = _lookahead(lookahead)
    ruled = _rule_splits(splits, videos)
    scheme, split_lists = ruled or ("lstr-sessions", {"1": {"train": train, "test": test}})
    report.lookahead, report.split_scheme, report.splits = (stored_lookahead, scheme,
                                                            len(split_lists))
    config = {"layout": "lstr", "source": str(root), "rgb": rgb_dir, "flow": flow_dir,
              "lookahead": recorded, "note": note}
    ignored = _ambiguous_index(classes, ambiguous, where)
    options = {"root": str(root), "dataset_key": dataset_key, "target_dir": target_dir,
               "fps": fps, "background": background, **_rule_option(ruled)}
    marked_frames = (f"frames marked {classes[ignored]} (unlabelled: the evaluation ignores "
                     f"them)" if ignored is not None else "")
    if ambiguous != "auto":  # the default is left out: stores imported before it keep their
        options["ambiguous"] = ambiguous  # source (their changed labels are imported again)
    store = FeatureStore.open_or_create(
        store_path, dataset=name, split_scheme=scheme, classes=classes,
        splits=split_lists, extractor="lstr-import",
        extractor_config=config, lookahead=stored_lookahead, dtype=dtype,
        background=_background_index(classes, background, where, exact=False),
        source=source_of(name, options, "lstr-import", config))

    def load(video: str, _payload):
        parts = [_load_npy(d / f"{video}.npy", ndim=2) for d in dirs]  # each [T_i, D_i]
        target = _load_npy(root / target_dir / f"{video}.npy", ndim=2)  # [T, C]
        if target.shape[1] != len(classes):
            raise DataError(f"{root / target_dir / (video + '.npy')}: {target.shape[1]} target "
                            f"columns; data_info lists {len(classes)} classes")
        length = min([p.shape[0] for p in parts] + [target.shape[0]])
        longest = max([p.shape[0] for p in parts] + [target.shape[0]])
        features = np.concatenate([p[:length] for p in parts], axis=1)  # [T, sum D_i]
        labels, hits = _lstr_labels(target[:length], ignored)
        marked = hits < 0
        A.add_repairs(report.repairs, {
            "frames beyond the shortest of features and targets (dropped)": longest - length,
            "frames with no target class (unlabelled)": int(np.count_nonzero(hits == 0)),
            "frames with several target classes (first kept)": int(np.count_nonzero(hits > 1)),
            marked_frames: int(np.count_nonzero(marked)),
        })
        return features.astype(np.float32), labels, fps, dirs[0] / f"{video}.npy"

    def changed(video: str, _payload) -> bool:  # file headers and the small target only
        lengths = [np.load(d / f"{video}.npy", mmap_mode="r").shape[0] for d in dirs]
        target = _load_npy(root / target_dir / f"{video}.npy", ndim=2)
        labels, _ = _lstr_labels(target[:min(lengths + [target.shape[0]])], ignored)
        return _changed(store, video, dirs[0] / f"{video}.npy", labels)

    _write_all(store, [(v, None) for v in videos], report, overwrite, progress, load,
               changed=changed)
    return report


def _lstr_labels(target: np.ndarray, ignored: int | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame labels int64 ``[T]`` of LSTR targets ``[T, C]`` (the first active class;
    unlabelled where none is, and where class ``ignored`` is active) and the number of active
    classes per frame (-1 where ``ignored`` is active)."""
    from actrec.io import annotations as A

    active = target > 0
    marked = active[:, ignored].copy() if ignored is not None else np.zeros(len(active), bool)
    if ignored is not None:
        active[:, ignored] = False
    hits = np.where(marked, -1, active.sum(axis=1))
    labels = np.where(hits > 0, active.argmax(axis=1), A.UNLABELLED)
    return labels.astype(np.int64), hits


def _ambiguous_index(classes: list[str], ambiguous: str | None, where: str) -> int | None:
    """The index of the class whose frames are imported unlabelled (see the module
    docstring: ``"auto"`` takes the class named ``ambiguous`` in any case, where there is one;
    ``None`` or ``"none"``: no such class); ``ConfigError`` naming ``where`` for a name that is
    not a class."""
    if ambiguous is None or ambiguous.strip().lower() in ("", "none"):
        return None
    if ambiguous == "auto":
        found = [i for i, c in enumerate(classes) if c.lower() == "ambiguous"]
        return found[0] if found else None
    if ambiguous not in classes:
        raise ConfigError(f"{where}: ambiguous class {ambiguous!r} is not one of the classes "
                          f"({', '.join(classes)})")
    return classes.index(ambiguous)


def _check_orientation(paths: list[Path]) -> None:
    """``DataError`` before anything is written unless every MS-TCN feature file (``D x T``,
    read from its header) has the same D: a ``T x D`` file would otherwise have its D
    columns taken for frames, its labels cut to D frames (a "repair") and its frames
    stored as feature dimensions."""
    from collections import Counter

    shapes = {}
    for path in paths:
        try:
            shapes[path] = np.load(path, mmap_mode="r", allow_pickle=False).shape
        except (ValueError, OSError) as exc:
            raise DataError(f"{path}: not a readable .npy array ({exc})") from None
    two = {p: shape for p, shape in shapes.items() if len(shape) == 2}
    dims = Counter(shape[0] for shape in two.values())
    if len(dims) < 2:
        return  # one D (other shapes: the loader names them)
    layout = "the MS-TCN layout is D x T (one column per frame, one D for all videos)"
    if len({shape[1] for shape in two.values()}) == 1:  # the frame counts vary in dim 0
        first = next(iter(two))
        raise DataError(f"{first.parent}: the feature files share their second dimension "
                        f"({two[first][1]}) and differ in the first (e.g. {first.name}: "
                        f"{two[first][0]} x {two[first][1]}): they look transposed, T x D; "
                        f"{layout}; nothing written")
    common, count = dims.most_common(1)[0]
    odd = next(p for p, shape in two.items() if shape[0] != common)
    raise DataError(f"{odd}: features of shape {two[odd][0]} x {two[odd][1]}, while {count} "
                    f"other feature file(s) have D = {common}; {layout}; nothing written")


def _rule_option(ruled) -> dict[str, str]:
    """The split rule as a source option: only when one was given, so that stores imported
    with the shipped splits keep the source they had before rules existed."""
    return {} if ruled is None else {"splits": ruled[0]}


def _background_index(classes: list[str], background: str | None, where: str, *,
                      exact: bool) -> tuple[int, ...]:
    """The index of class ``background`` as a 0- or 1-tuple (see the module docstring for
    ``"auto"``); ``ConfigError`` naming ``where`` for a name that is not a class."""
    if background is None or background.strip().lower() in ("", "none"):
        return ()
    if background == "auto":
        found = [i for i, c in enumerate(classes)
                 if (c if exact else c.lower()) == "background"]
        return tuple(found[:1])
    if background not in classes:
        raise ConfigError(f"{where}: background class {background!r} is not one of the "
                          f"classes ({', '.join(classes)})")
    return (classes.index(background),)


def _load_npy(path: Path, *, ndim: int) -> np.ndarray:
    """A numeric ``.npy`` array of ``ndim`` dimensions; ``DataError`` naming the file if not."""
    from actrec.io.annotations import read_npy

    array = read_npy(path)
    if array.ndim != ndim or not np.issubdtype(array.dtype, np.number):
        raise DataError(f"{path}: expected a {ndim}-D numeric array, got shape {array.shape} "
                        f"dtype {array.dtype}")
    return array
