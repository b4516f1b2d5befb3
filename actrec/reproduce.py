"""``actrec reproduce``: rerun a paper's table over every split and print it beside the paper.

A table (``actrec.paper_tables``) declares its cells; ``plan_table`` expands them into units of
work (``actrec.reproduce_units``) over the splits of the datasets' feature stores:

1. inputs: with ``inputs="head"`` (the papers' pipeline) a frame classifier is trained per
   dataset and split on that split's training videos, and its per-frame softmax or logits (as
   the table says) become the split's input store (``actrec.frame_head``); with
   ``inputs="store"`` the stores are read as they are.
2. cells: a frame-classifier cell scores the argmax of the split's input store (the papers'
   CNN alone / "None"); a training cell trains the table's method on the split's input stores
   (``actrec.pipeline.train_from_refs``, settings from the table's preset, the method and the
   cell) and evaluates it online (``actrec.evaluate.evaluate_run``). Identical work in
   several cells (a baseline repeated across dataset pairs) runs once.

Splits: the paper's split ``i`` is the ``i``-th split of a store in natural order; a
``report = "mean"`` table averages over every split the datasets' stores share (D1's split i
trained with D2's split i, as the papers pair them).

Everything lives under ``<root>/reproduce/`` (``<root>/reproduce/tiny/`` for ``--preset
tiny``): input stores in ``features/`` (shared by the tables), and per table
``<table>/runs/<unit>/`` (normal run folders) and the written ``table.md``, ``table.csv`` and
``table.json``. Running again skips finished units and resumes
partly trained ones, so a killed grid finishes where it stopped.

Presets: ``paper`` trains with the table's preset (``actrec.presets``) on the workspace's
stores of the table's datasets (``datasets`` overrides, ``NAME=REF|STORE``); ``tiny`` runs the
whole grid in a minute on synthetic kitchens standing in for the papers' datasets (``tiny`` in
each table's ``[datasets]``: Breakfast = kitchen a, 50 Salads = kitchen b, MPII Cooking 2 =
kitchen c) with tiny models and a few iterations: it checks the machinery, not the papers.
With ``datasets`` overrides ``tiny`` runs its tiny models on those stores instead (a quick
check of one's own stores before the real run).

Stores may be at URLs (``s3://...``, see ``actrec.io.remote``): they are read there, by their
URL; what the grid writes (input stores, runs, tables) lives under ``root``.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from actrec.errors import ActrecError, ConfigError, Interrupted
from actrec.io.remote import StoreURL

__all__ = [
    "PRESETS",
    "Plan",
    "ReproducePreset",
    "build_result",
    "list_tables",
    "plan_table",
    "reproduce",
]


@dataclass(frozen=True)
class ReproducePreset:
    """How big the reproduction is: ``train`` and ``model_options`` override the table's
    training preset, ``mix_scale`` scales its batch counts, ``head`` configures the frame
    classifiers; ``kitchen`` (tiny only) sizes the synthetic datasets; ``notes`` go into
    every table it reproduces, ``model_notes`` (note, models) only into a table that trains a
    cell of one of ``models``."""

    name: str
    train: dict[str, Any] = field(default_factory=dict)
    model_options: dict[str, str] = field(default_factory=dict)
    mix_scale: float = 1.0
    head: dict[str, Any] = field(default_factory=dict)
    kitchen: dict[str, str] | None = None
    notes: tuple[str, ...] = ()
    model_notes: tuple[tuple[str, tuple[str, ...]], ...] = ()


TINY_ITERATIONS = 30
TINY_REESTIMATE = 20  # batches

_TINY_BN_NOTE = (
    f"tiny: each trained cell re-estimates its batch-norm statistics over {TINY_REESTIMATE} "
    f"batches after its last iteration (reestimate_batches): {TINY_ITERATIONS} momentum "
    f"updates leave {100 * 0.9 ** TINY_ITERATIONS:.0f} % of their starting variance 1, where "
    f"the papers' 50,000 leave none (the paper preset keeps the momentum averages). "
    f"BNLSTM/DDLSTM cells still sit below LSTM ones here: they train on batch statistics of a "
    f"sixteenth of the papers' batches (4 + 4 windows for 64 + 64) for {TINY_ITERATIONS} "
    f"iterations")

PRESETS = {
    "paper": ReproducePreset("paper"),
    "tiny": ReproducePreset(
        "tiny",
        # The papers' 50,000 iterations leave batch norms' momentum averages (0.1) at the
        # final weights' statistics; 30 leave 0.9^30 = 4 % of their start (variance 1):
        # re-estimated after training, the statistics are those the long runs reach (on
        # ddlstm-table1 the BNLSTM/DDLSTM cells rose 3 points on average, up to 9).
        train={"history": 16, "iterations": TINY_ITERATIONS, "pretrain_iters": TINY_ITERATIONS,
               "optimizer": "adam", "lr": 0.01, "boundary_iters": 4,
               "reestimate_batches": TINY_REESTIMATE},
        model_options={"hidden": "8", "layers": "1"},
        mix_scale=1 / 16,
        head={"epochs": 2, "min_steps": 10},
        kitchen={"participants": "4", "videos_per_participant": "2", "frames_mean": "40",
                 "size": "32", "folds": "4"},
        # said where a table has batch-norm cells (ddlstm-table1), not in the Recurrent
        # Assistance tables, whose cells are all LSTMs
        model_notes=((_TINY_BN_NOTE, ("bnlstm", "ddlstm")),),
    ),
}


@dataclass
class Plan:
    """The units of a table and, per cell, which unit scores which split and seed."""

    table: Any  # PaperTable
    preset: ReproducePreset
    root: Path
    inputs: str
    stores: dict[str, Path | StoreURL]  # dataset key -> backbone store
    heads: list[dict[str, Any]] = field(default_factory=list)
    units: list[dict[str, Any]] = field(default_factory=list)
    # (row, column) -> {"samples": [[(unit key, domain) per seed] per split], "reason": str}
    cells: dict[tuple[int, int], dict[str, Any]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def base(self) -> Path:
        return workplace(self.root, self.preset)

    @property
    def folder(self) -> Path:
        return self.base / self.table.id


def workplace(root: Path, preset: ReproducePreset) -> Path:
    """``<root>/reproduce``, or ``<root>/reproduce/<preset>`` for a preset other than
    ``paper``: a tiny grid never meets the paper's runs."""
    base = Path(root) / "reproduce"
    return base if preset.name == "paper" else base / preset.name


def list_tables() -> list[dict[str, Any]]:
    """The shipped tables: id, paper, table, number of cells, title and file."""
    from actrec.paper_tables import available, load_table

    out = []
    for name in available():
        table = load_table(name)
        out.append({"id": table.id, "paper": table.source["paper"].split(",")[1].strip()
                    if "," in table.source["paper"] else table.source["paper"],
                    "table": table.source["table"], "cells": len(table.cells),
                    "title": table.title, "file": str(table.path)})
    return out


def _preset_fields(name: str) -> tuple[dict[str, Any], dict[str, str]]:
    """TrainSpec fields and model options of a training preset (``actrec.presets``)."""
    from actrec.presets import load_preset

    train = dict(load_preset(name).train)
    options = {k: str(v) for k, v in (train.pop("options", None) or {}).items()}
    fields = {k.replace("-", "_"): v for k, v in train.items()}
    if "mix" in fields:
        fields["mix"] = _mix(fields["mix"], f"preset {name}")
    return fields, options


def _mix(value: Any, where: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in str(value).split(":"))
    except ValueError:
        raise ConfigError(f"{where}: mix must be N1:N2, got {value!r}") from None


def _short(store: Path | StoreURL | str) -> str:
    """8 hex digits naming a store: of its absolute path, or of its URL."""
    from actrec.io.remote import store_location

    where = store_location(store)
    text = str(where) if isinstance(where, StoreURL) else str(Path(where).absolute())
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def _tiny_stores(table: Any, keys: list[str], root: Path, preset: ReproducePreset,
                 progress: Any, log: Callable[[str], None] | None = None) -> dict[str, Path]:
    """The synthetic stand-ins of ``keys`` (generated and extracted once under
    ``<root>/reproduce/tiny``). Each extraction's bars are removed when it ends (without a
    terminal rich would print them at the very end, after the units' lines), and ``log``
    gets a line saying what it did, in order with the units' lines."""
    from actrec.pipeline import extract_dataset
    from actrec.workspace import slug

    base = workplace(root, preset)
    out = {}
    for key in keys:
        ref = table.datasets[key]["tiny"]
        store = base / "features" / f"{slug(ref)}.zarr"
        bars = set(progress.task_ids) if progress is not None else set()
        report = extract_dataset(ref, dataset_options={"root": str(base / "data"),
                                                       **preset.kitchen},
                                 out=store, progress=progress)
        if progress is not None:
            for task in [t for t in progress.task_ids if t not in bars]:
                progress.remove_task(task)
        if log is not None:
            done = (f"{len(report.written)} video(s) extracted in {report.seconds:.1f} s"
                    if report.written else f"{len(report.skipped)} video(s) already extracted")
            if report.failed:
                done += f", {len(report.failed)} failed ({report.failed[0][1]})"
            log(f"{table.datasets[key]['name']} is played by {ref}: {done} ({store})")
        out[key] = store
    return out


def resolve_stores(table: Any, root: Path, preset: ReproducePreset,
                   datasets: Mapping[str, str] | None = None, extractor: str | None = None,
                   progress: Any = None, log: Callable[[str], None] | None = None
                   ) -> dict[str, Path | StoreURL]:
    """The backbone store of every dataset the table uses: ``datasets[key]`` (a reference, a
    store path or a store URL, kept a ``StoreURL``), else tiny's synthetic kitchen (``log``
    gets a line per kitchen extracted) or the table's ``ref`` found in the workspace
    (``actrec.refs.existing_store``). ``ConfigError`` for an override naming no dataset of
    the table."""
    from actrec.refs import existing_store

    used = sorted({c.settings[r] for c in table.cells for r in ("D1", "D2")
                   if r in c.settings})
    overrides = dict(datasets or {})
    unknown = sorted(set(overrides) - set(table.datasets))
    if unknown:
        raise ConfigError(f"--dataset {unknown[0]}=...: table {table.id} has no dataset "
                          f"'{unknown[0]}'; its datasets: {', '.join(table.datasets)}")
    out: dict[str, Path | StoreURL] = {}
    if preset.kitchen is not None:  # the kitchens stand in for the datasets not given
        out.update(_tiny_stores(table, [k for k in used if k not in overrides], root, preset,
                                progress, log))
    problems = []
    for k in used:
        if k in out:
            continue
        try:
            out[k] = existing_store(overrides.get(k, table.datasets[k]["ref"]), extractor)
        except ActrecError as exc:
            problems.append((exc, f"{table.datasets[k]['name']} (--dataset {k}=...): {exc}"))
    if problems:  # every missing store at once, not one per attempt
        raise type(problems[0][0])(
            f"table {table.id} has no feature store for {len(problems)} of its datasets; give "
            f"each a dataset reference or a store path with --dataset KEY=...\n  "
            + "\n  ".join(text for _, text in problems))
    return out


def plan_table(table: Any, root: Path, preset: ReproducePreset,
               stores: Mapping[str, Path | StoreURL], inputs: str = "head") -> Plan:
    """Expand ``table``'s cells into units over the stores' splits (see the module docs)."""
    from actrec.io.features import FeatureStore
    from actrec.sweep import split_order

    if inputs not in ("head", "store"):
        raise ConfigError(f"--inputs must be head or store, got {inputs!r}")
    plan = Plan(table, preset, Path(root), inputs, dict(stores))
    opened = {}
    for k, path in stores.items():
        try:
            opened[k] = FeatureStore.open(path)
        except ActrecError as exc:  # say which --dataset pointed at it
            raise type(exc)(f"{table.datasets[k]['name']} (--dataset {k}=...): {exc}") from exc
    splits = {k: sorted(s.splits, key=split_order) for k, s in opened.items()}
    for k, names in splits.items():
        if not names:
            from actrec.components import no_splits

            raise no_splits(opened[k].path)
        paper_set = _label_set_difference(table.datasets[k], opened[k])
        if paper_set and not (preset.kitchen is not None and _is_kitchen(plan, stores[k])):
            plan.notes.append(
                f"the store of {table.datasets[k]['name']} has {paper_set}: another label set, "
                f"so its cells are not comparable with the paper's (see the dataset's "
                f"label_set option)")
        if table.splits is not None and len(names) != table.splits:
            # Another split rule (50 Salads' 5 MS-TCN folds for the papers' 4 leave-person-out
            # splits): position i is some other split, the cells are not the paper's.
            plan.notes.append(
                f"the store of {table.datasets[k]['name']} has {len(names)} splits, the "
                f"paper's protocol {table.splits}: its split i is not the paper's split i, so "
                f"its cells are not comparable with the paper's (extract it with the paper's "
                f"split rule, see the dataset's split_scheme option)")
    heads: dict[str, dict[str, Any]] = {}
    units: dict[str, dict[str, Any]] = {}
    fields, options = _preset_fields(table.preset)

    def input_store(key: str, position: int) -> tuple[str, str]:
        """(store path, split name) the cells read for dataset ``key``'s split ``position``."""
        name = splits[key][position]
        if inputs == "store":
            return str(stores[key]), name
        out = plan.base / "features" / (
            f"{key}-{_short(stores[key])}-{table.inputs}-split{name}.zarr")
        unit_key = f"head-{key}-{_short(stores[key])}-{table.inputs}-split{name}"
        heads.setdefault(unit_key, {"kind": "head", "key": unit_key,
                                    "backbone": str(stores[key]), "split": name,
                                    "output": table.inputs, "out": str(out),
                                    "head_config": dict(preset.head)})
        return str(out), name

    for cell in table.cells:
        s = cell.settings
        method = table.methods[s["method"]]
        role = s.get("score", "D1")
        entry: dict[str, Any] = {"samples": [], "reason": None}
        plan.cells[(cell.row, cell.column)] = entry
        fixed_d2 = s.get("D2_split")
        # The roles the cell reads, and the split of each at the cell's split position p.
        roles = [role] if method.kind == "frame-classifier" else \
            [r for r in ("D1", "D2") if r in s]

        def position(r: str, p: int, fixed: int | None = fixed_d2) -> int:
            return fixed if r == "D2" and fixed is not None else p

        if table.report == "split":
            positions = [s["split"]]
        else:  # every split all of the row's datasets have (D2's own when fixed): the frame
            # classifier alone is averaged over the same splits as the trained cells beside it
            row = [s[r] for r in ("D1", "D2") if r in s]
            paired = row if fixed_d2 is None else row[:1]
            positions = list(range(min(len(splits[k]) for k in paired)))
            counts = {table.datasets[k]["name"]: len(splits[k]) for k in paired}
            if len(set(counts.values())) > 1:
                note = (f"splits paired by position; {', '.join(f'{n}: {c}' for n, c in counts.items())}"
                        f" splits: the first {len(positions)} of each are used")
                if note not in plan.notes:
                    plan.notes.append(note)
        lacking = [(s[r], position(r, p)) for p in positions for r in roles
                   if position(r, p) >= len(splits[s[r]])]
        if lacking:
            k, p = lacking[0]
            entry["reason"] = (f"{table.datasets[k]['name']}'s store {stores[k]} has "
                               f"{len(splits[k])} split(s); the paper's split {p} is not among "
                               f"them")
            continue
        if method.kind == "frame-classifier" and inputs == "store":
            store = opened[s[role]]
            if store.dim != len(store.classes):
                entry["reason"] = (f"{table.datasets[s[role]]['name']}'s features "
                                   f"({store.dim}-d, {len(store.classes)} classes) are not "
                                   f"class scores: no frame classifier to score without "
                                   f"--inputs head")
                continue
        for p in positions:
            seeds = []
            for seed in range(int(s.get("seeds", 1))):
                if method.kind == "frame-classifier":
                    path, split = input_store(s[role], position(role, p))
                    key = f"classifier-{s[role]}-split{split}"
                    units.setdefault(key, {
                        "kind": "frame-classifier", "key": key, "store": path, "split": split,
                        "metric": table.metric, "dir": str(plan.folder / "runs" / key),
                        "needs": [] if inputs == "store" else [_head_key(heads, path)]})
                    seeds.append((key, 0))
                    continue
                unit = _train_unit(plan, method, s, p, seed, fields, options, input_store)
                units.setdefault(unit["key"], unit)
                # Transfer from D1: actrec trains d1 = the row's D2 (fine-tuned), d2 = its D1.
                flipped = method.protocol == "transfer" and method.source == "D1"
                seeds.append((unit["key"], (0 if role == "D1" else 1) ^ int(flipped)))
            entry["samples"].append(seeds)
    plan.heads = list(heads.values())
    plan.units = list(units.values())
    return plan


def _label_set_difference(dataset: Mapping[str, Any], store: Any) -> str | None:
    """How ``store``'s classes differ from the paper's label set that the table's
    ``[datasets.KEY]`` declares (``classes``, ``background``), in words; None if they do not
    (or the table declares none)."""
    classes, background = dataset.get("classes"), dataset.get("background")
    has = bool(store.background)
    if (classes is None or classes == len(store.classes)) and \
            (background is None or background == has):
        return None
    paper = [f"{classes} classes" if classes is not None else "",
             "" if background is None else "a background class" if background
             else "no background class"]
    return (f"{len(store.classes)} classes and {'a' if has else 'no'} background class, the "
            f"paper's label set {' with '.join(p for p in paper if p)}")


def _head_key(heads: Mapping[str, dict[str, Any]], path: str) -> str:
    return next(k for k, h in heads.items() if h["out"] == path)


def _train_unit(plan: Plan, method: Any, s: Mapping[str, Any], position: int, seed: int,
                fields: Mapping[str, Any], options: Mapping[str, str], input_store) -> dict:
    """The training unit of a cell's split ``position`` and ``seed``."""
    preset = plan.preset
    spec = dict(fields)
    for name, value in method.train.items():
        spec[name.replace("-", "_")] = _mix(value, f"method {method.key}") \
            if name == "mix" else value
    spec.update(preset.train)
    if preset.mix_scale != 1.0:
        spec["mix"] = tuple(max(1, round(m * preset.mix_scale)) if m else 0
                            for m in spec.get("mix", (64, 64)))
    roles = ["D1", "D2"] if "D2" in s else ["D1"]
    if method.protocol == "transfer" and method.source == "D1":
        roles = ["D2", "D1"]  # actrec fine-tunes its d1 and pre-trains on its d2
    fixed = s.get("D2_split")
    paths, names = [], []
    for role in roles:
        p = fixed if role == "D2" and fixed is not None else position
        path, split = input_store(s[role], p)
        paths.append(path)
        names.append(split)
    if method.protocol == "single":
        spec["mix"] = tuple(spec.get("mix", (64,)))[:1] + (0,)
    spec.update(protocol=method.protocol, seed=seed, split=names[0],
                d2_split=names[1] if len(names) > 1 else None,
                labels=s.get("label_arrangement", spec.get("labels", "concat")),
                boundary=bool(s.get("boundary", False)))
    if method.protocol == "transfer":  # the table's count (its method's train), else as many
        spec.setdefault("pretrain_iters", int(spec.get("iterations", 0)))  # as fine-tuning
    else:
        spec.pop("pretrain_iters", None)  # tiny's cap belongs to transfer cells only
    if spec["labels"] == "multi-random":
        spec["label_maps"] = 0  # the paper's three maps
    if not spec["boundary"]:
        spec.pop("boundary_iters", None)
    model_options = {**options, **preset.model_options}
    datasets = "-".join(f"{s[r]}{names[i]}" for i, r in enumerate(roles))
    key = (f"{method.key}-{datasets}-{spec['labels']}"
           f"{'-boundary' if spec['boundary'] else ''}-seed{seed}")
    needs = [] if plan.inputs == "store" else [f"head-{s[r]}-{_short(plan.stores[s[r]])}-"
                                               f"{plan.table.inputs}-split{names[i]}"
                                               for i, r in enumerate(roles)]
    return {"kind": "train", "key": key, "dir": str(plan.folder / "runs" / key),
            "model": method.model, "model_options": model_options, "d1": paths[0],
            "d2": paths[1] if len(paths) > 1 else None, "spec": spec,
            "metric": plan.table.metric, "needs": needs}


def build_result(plan: Plan, results: Mapping[str, dict[str, Any]],
                 elapsed_s: float = 0.0) -> dict[str, Any]:
    """The table as data: per row and column actrec's mean, std and n, the paper's number,
    the status (``ok``, ``failed``, ``not reproducible``) and its reason."""
    from actrec.reproduce_report import aggregate

    table = plan.table
    # The paper prints percentages; the result holds fractions of frames, as actrec's metrics.
    paper = {(c.row, c.column): None if c.paper is None else round(c.paper / 100, 10)
             for c in table.cells}
    rows = []
    for i, row in enumerate(table.rows):
        cells = []
        for j in range(len(table.columns)):
            if row.get("aggregate"):
                cells.append(None)  # filled below from the split rows
                continue
            cells.append(_cell(plan.cells[(i, j)], results, paper[(i, j)], aggregate,
                               table.report))
        rows.append({"labels": list(row["labels"]), "cells": cells,
                     "aggregate": row.get("aggregate")})
    for i, row in enumerate(rows):
        if not row["aggregate"]:
            continue
        for j in range(len(table.columns)):
            parts = [r["cells"][j] for r in rows if not r["aggregate"]]
            value = round(float(table.rows[i]["paper"][j]) / 100, 10)
            bad = next((c for c in parts if c["status"] != "ok"), None)
            cell = {"paper": value, "n": len(parts)}
            if bad is not None:
                cell.update(status="incomplete", reason="a split row has no value",
                            mean=None, std=None)
            else:
                mean, std, n = aggregate([c["mean"] for c in parts])
                cell.update(status="ok", reason=None, mean=mean, std=std, n=n)
            row["cells"][j] = cell
    failed = sorted({c["reason"] for r in rows for c in r["cells"] if c["status"] == "failed"})
    return {
        "table": table.id, "title": table.title, "file": str(table.path),
        "source": dict(table.source), "report": table.report, "metric": table.metric,
        "decimals": table.decimals, "preset": plan.preset.name, "inputs": plan.inputs,
        "training_preset": table.preset, "header": list(table.header),
        "columns": table.column_labels(), "rows": rows,
        "datasets": {k: {"paper": table.datasets[k]["name"], "store": str(p)}
                     for k, p in plan.stores.items()},
        "notes": list(table.notes) + plan.notes + list(plan.preset.notes) + [
            note for note, models in plan.preset.model_notes
            if any(m.kind == "train" and m.model in models for m in table.methods.values())
        ] + ([
            f"{table.datasets[k]['name']} is played by {table.datasets[k]['tiny']} (tiny preset)"
            for k, store in plan.stores.items() if _is_kitchen(plan, store)]
            if plan.preset.kitchen is not None else []) + [
            f"{k} ran again ({r['moved_because']}); its earlier run was moved to {r['moved']}"
            for k, r in results.items() if r.get("moved")],
        "failures": failed, "complete": not failed and all(
            c["status"] == "ok" for r in rows for c in r["cells"]),
        "units": {k: {"status": r["status"], "error": r.get("error"),
                      "elapsed_s": r.get("elapsed_s"), "threads": r.get("threads"),
                      **({"moved": r["moved"]} if r.get("moved") else {})}
                  for k, r in results.items()},
        "elapsed_s": round(elapsed_s, 1),
        "std": "sample standard deviation (ddof=1) over the splits (or seeds)",
        "values": "mean, std, per_split and paper are fractions of frames (table.md and "
                 "table.csv show percentages and differences in percentage points)",
    }


def _is_kitchen(plan: Plan, store: Path | StoreURL) -> bool:
    """Whether ``store`` is one of tiny's synthetic kitchens (not a store the user gave)."""
    return isinstance(store, Path) and store.parent == workplace(plan.root, plan.preset) / \
        "features"


def _looking_ahead(stores: Mapping[str, Path | StoreURL]) -> dict[str, str]:
    """Per dataset key whose store's features look ahead: by how much, in words."""
    from actrec.io.features import FeatureStore

    out = {}
    for key, path in stores.items():
        ahead = int(FeatureStore.open(path).attrs.get("lookahead", 0))
        if ahead:
            out[key] = f"{ahead} frame(s)" if ahead > 0 else "an unknown number of frames"
    return out


def _cell(entry: dict[str, Any], results: Mapping[str, dict[str, Any]], paper: float | None,
          aggregate: Any, report: str) -> dict[str, Any]:
    cell: dict[str, Any] = {"paper": paper, "mean": None, "std": None, "n": 0,
                            "per_split": [], "runs": []}
    if entry["reason"]:
        return {**cell, "status": "not reproducible", "reason": entry["reason"]}
    per_split = []
    for seeds in entry["samples"]:
        values = []
        for key, domain in seeds:
            cell["runs"].append(key)
            result = results.get(key) or {"status": "failed", "error": "not run"}
            if result["status"] == "failed":
                return {**cell, "status": "failed", "reason": f"{key}: {result['error']}"}
            scores = result.get("scores") or []
            if domain >= len(scores):
                return {**cell, "status": "failed",
                        "reason": f"{key}: no {domain + 1}-th dataset score"}
            if scores[domain] is None or scores[domain] != scores[domain]:  # None or NaN
                return {**cell, "status": "not reproducible",
                        "reason": f"{key}: D{domain + 1} has no labelled test frame to score "
                                  f"(its test split lists no video its store holds)"}
            values.append(scores[domain])
        per_split.append(values)
    cell["per_split"] = per_split
    if report == "split":  # one split; several seeds are averaged with their spread
        mean, std, n = aggregate(per_split[0])
    else:
        mean, std, n = aggregate([aggregate(v)[0] for v in per_split])
    return {**cell, "status": "ok", "reason": None, "mean": mean, "std": std, "n": n}


def unit_label(unit: Mapping[str, Any]) -> str:
    """What a unit does, in words for a log line: ``train lstm <key>``, ``frame classifier
    <key>``, ``head <key>``."""
    kind = str(unit.get("kind"))
    if kind == "train":
        return f"train {unit.get('model')} {unit['key']}"
    return f"{kind.replace('-', ' ')} {unit['key']}"


def unit_outcome(result: Mapping[str, Any], ended: int, total: int) -> str:
    """The log line of a finished unit: ``finished 3/8: <key> done in 12.3 s`` (``skipped``:
    found finished by an earlier run; ``failed``, with the first line of the reason)."""
    status = str(result.get("status"))
    line = f"finished {ended}/{total}: {result.get('key')} {status}"
    if result.get("elapsed_s") is not None:
        line += f" in {float(result['elapsed_s']):.1f} s"
    if status == "failed" and result.get("error"):
        line += ": " + str(result["error"]).splitlines()[0]
    return line


def reproduce(table_ref: str | Path, root: Path, *, preset: str = "paper",
              datasets: Mapping[str, str] | None = None, extractor: str | None = None,
              inputs: str = "head", jobs: int = 1, progress: Any = None,
              allow_noncausal_features: bool = False,
              log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run (or finish) the grid of ``table_ref`` under ``root`` and return ``build_result``'s
    table, also written to ``<root>/reproduce/<table>/table.{md,csv,json}``. Units that fail
    are reported in the table with their reason; the others go on. Ctrl-C raises
    ``actrec.errors.Interrupted`` saying that the same call again finishes the grid.
    ``allow_noncausal_features`` lets cells whose inputs look ahead be scored online (else
    they fail, saying so); the table's notes and every result record it. ``log``, where
    given, receives one line as each unit starts and one as it ends (how it ended, its time,
    a failure's reason), and before them one per synthetic kitchen ``tiny`` extracts: a
    record of a long grid where no progress bar is shown."""
    from actrec import runs
    from actrec.paper_tables import load_table
    from actrec.reproduce_report import to_csv, to_markdown
    from actrec.reproduce_workers import run_units

    if preset not in PRESETS:
        raise ConfigError(f"--preset must be one of {', '.join(PRESETS)}, got {preset!r}")
    if jobs < 1:
        raise ConfigError(f"--jobs must be >= 1, got {jobs}")
    started = time.perf_counter()
    table = load_table(table_ref)
    chosen = PRESETS[preset]
    root = Path(root).expanduser()
    stores = resolve_stores(table, root, chosen, datasets, extractor, progress, log)
    plan = plan_table(table, root, chosen, stores, inputs)
    if allow_noncausal_features:
        lookahead = _looking_ahead(stores)
        for unit in plan.units:
            if unit["kind"] == "train":
                unit["allow_noncausal_features"] = True
        if lookahead:
            plan.notes.append(
                "scored online although features look ahead (--allow-noncausal-features): "
                + ", ".join(f"{table.datasets[k]['name']} {v}" for k, v in lookahead.items()))
    plan.folder.mkdir(parents=True, exist_ok=True)
    overall = progress.add_task(f"reproduce {table.id}", total=len(plan.heads) + len(
        plan.units)) if progress is not None else None

    total = len(plan.heads) + len(plan.units)
    started_units: dict[str, int] = {}
    ended = 0

    def begin(unit: dict[str, Any]) -> None:
        started_units[unit["key"]] = len(started_units) + 1
        if log is not None:
            log(f"started {len(started_units)}/{total}: {unit_label(unit)}")

    def advance(result: dict[str, Any]) -> None:
        nonlocal ended
        ended += 1
        if overall is not None:
            progress.advance(overall)
        if log is not None:
            log(unit_outcome(result, ended, total))

    # One pool: a cell trains once its input stores are made (units name them in "needs").
    try:
        results = run_units(plan.heads + plan.units, jobs, progress, advance, begin)
    except KeyboardInterrupt as exc:  # a cell's own advice (a training's --run-dir) is not ours
        raise Interrupted(
            f"the grid of {table.id} stopped; its finished cells are kept under {plan.folder} "
            f"and a cell in training keeps its last checkpoint: run the same `actrec "
            f"reproduce` command again to finish the grid from there") from exc
    if overall is not None:
        progress.remove_task(overall)
    result = build_result(plan, results, time.perf_counter() - started)
    runs.atomic_write_json(plan.folder / "table.json", result)
    runs.atomic_write_text(plan.folder / "table.md", to_markdown(result))
    runs.atomic_write_text(plan.folder / "table.csv", to_csv(result))
    result["files"] = [str(plan.folder / f"table.{x}") for x in ("md", "csv", "json")]
    return result
