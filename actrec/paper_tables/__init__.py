"""The papers' result tables as data: what each cell reports, how actrec reruns it, the numbers.

One TOML file per table beside this module (``ddlstm-table1.toml``, ``recassist-table4.toml``,
...), typed in from the papers and citing paper, table and caption. A file declares:

- ``id``, ``title``, ``report`` (``mean``: each cell is the mean +- std over the splits of the
  datasets' stores; ``split``: each row names one split), ``metric`` (a key of
  ``actrec.sweep.METRICS``), ``decimals`` (as the paper prints them), ``preset`` (the training
  preset the training cells start from: a shipped preset's name (``actrec.presets``) or a
  preset file, absolute or relative to the table's folder; ``PaperTable.preset`` holds the
  name or the file's absolute path), ``inputs`` (``softmax`` or
  ``logits``: what the per-split frame classifier feeds the temporal models), ``header`` (the
  row-label column names), ``notes``, ``splits`` (optional: how many splits the paper's
  protocol has; a store with another number is named in the reproduced table's notes, as its
  split i is then not the paper's split i);
- ``[source]``: ``paper``, ``file`` (under the papers folder), ``table``, ``caption``;
- ``[datasets.KEY]``: ``name`` (the paper's), ``ref`` (the workspace dataset reference used by
  default) and ``tiny`` (the synthetic stand-in of ``--preset tiny``); optionally the paper's
  label set: ``classes`` (how many) and ``background`` (whether it has a background class): a
  store with another label set is named in the reproduced table's notes;
- ``[methods.KEY]``: ``kind`` ``frame-classifier`` (the frame classifier alone) or ``train``
  with ``model``, ``protocol`` (single / joint / transfer), for transfer ``source`` (``D1``: the
  row's D1 pre-trains and D2 is fine-tuned; ``D2``: the other way round) and an optional
  ``[methods.KEY.train]`` table of ``actrec.train.TrainSpec`` fields;
- ``[defaults]``, ``[[columns]]`` (``label``) and ``[[rows]]`` (``labels``, ``paper``: one number
  per column, None-able as ``nan``; or ``aggregate = "mean"``: the mean over the table's split
  rows, column by column): each may set the cell settings ``SETTINGS``; a cell's settings are
  its row's and its column's (one key in both is an error) over the defaults.

``load_table`` validates everything and raises ``ConfigError`` naming the file and the key.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from actrec.errors import ConfigError

__all__ = ["SETTINGS", "TABLE_DIR", "Cell", "Method", "PaperTable", "available", "load_table"]

TABLE_DIR = Path(__file__).parent
REPORTS = ("mean", "split")
INPUTS = ("softmax", "logits")
KINDS = ("frame-classifier", "train")
ROLES = ("D1", "D2")
# Cell settings a row, a column or [defaults] may give.
SETTINGS = {
    "method": "a method key",
    "D1": "a dataset key",
    "D2": "a dataset key",
    "split": "the paper's split number (0-based position among a store's splits)",
    "D2_split": "D2's fixed split number (default: D1's split)",
    "label_arrangement": "concat, merged, random or multi-random",
    "seeds": "runs with seeds 0..N-1, averaged",
    "score": "D1 or D2: the dataset whose score the cell reports",
    "boundary": "true or false: the boundary pre-stage (DDLSTM Sec. 5.1)",
}
TOP_KEYS = {"id", "title", "report", "metric", "decimals", "preset", "inputs", "header", "notes",
            "source", "datasets", "methods", "defaults", "columns", "rows", "splits"}


@dataclass(frozen=True)
class Method:
    key: str
    kind: str
    model: str | None = None
    protocol: str | None = None
    source: str = "D2"  # transfer: the role that pre-trains
    train: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Cell:
    """One (row, column) of a table: its merged settings and the paper's number."""

    row: int
    column: int
    settings: dict[str, Any]
    paper: float | None


@dataclass(frozen=True)
class PaperTable:
    id: str
    path: Path
    title: str
    report: str
    metric: str
    decimals: int
    preset: str
    inputs: str
    header: tuple[str, ...]
    notes: tuple[str, ...]
    source: dict[str, str]
    datasets: dict[str, dict[str, str]]
    methods: dict[str, Method]
    columns: tuple[dict[str, Any], ...]
    rows: tuple[dict[str, Any], ...]
    cells: tuple[Cell, ...]
    splits: int | None = None  # the paper's number of splits (None: not said)

    def column_labels(self) -> list[str]:
        return [str(c["label"]) for c in self.columns]

    def aggregate_rows(self) -> list[int]:
        return [i for i, r in enumerate(self.rows) if r.get("aggregate")]


def available() -> list[str]:
    """Ids of the tables shipped with actrec."""
    return sorted(p.stem for p in TABLE_DIR.glob("*.toml"))


def table_path(ref: str | Path) -> Path:
    """The file of table ``ref``: a shipped table's id or a path to a TOML file."""
    text = str(ref)
    path = Path(text).expanduser()
    if path.suffix == ".toml" or "/" in text:
        return path
    path = TABLE_DIR / f"{text}.toml"
    if not path.is_file():
        raise ConfigError(f"no paper table '{text}'; shipped tables: {', '.join(available())} "
                          f"(or give a path to a .toml file)")
    return path


def load_table(ref: str | Path) -> PaperTable:
    """The validated table ``ref`` names (``table_path``); ``ConfigError`` naming the file and
    the key for anything missing, unknown or of the wrong type."""
    path = table_path(ref)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"paper table {path}: cannot read ({exc.strerror or exc})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"paper table {path} is not valid TOML: {exc}") from None
    return _Validator(path).table(data)


class _Validator:
    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, key: str, what: str) -> ConfigError:
        return ConfigError(f"paper table {self.path}: {key}: {what}")

    def get(self, data: dict, key: str, kind: type | tuple, where: str = "",
            default: Any = ...) -> Any:
        name = f"{where}{key}"
        if key not in data:
            if default is not ...:
                return default
            raise self.fail(name, "missing")
        value = data[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            kinds = kind if isinstance(kind, tuple) else (kind,)
            raise self.fail(name, f"expected {' or '.join(k.__name__ for k in kinds)}, got "
                                  f"{value!r}")
        return value

    def strings(self, data: dict, key: str, where: str = "", default: Any = ...) -> tuple:
        value = self.get(data, key, list, where, default)
        if not all(isinstance(v, str) for v in value):
            raise self.fail(f"{where}{key}", "expected a list of strings")
        return tuple(value)

    def table(self, data: dict) -> PaperTable:
        from actrec.sweep import METRICS

        unknown = sorted(set(data) - TOP_KEYS)
        if unknown:
            raise self.fail(unknown[0], f"unknown key; expected one of {', '.join(sorted(TOP_KEYS))}")
        report = self.get(data, "report", str)
        if report not in REPORTS:
            raise self.fail("report", f"expected one of {', '.join(REPORTS)}, got {report!r}")
        metric = self.get(data, "metric", str)
        if metric not in dict(METRICS):
            raise self.fail("metric", f"expected one of {', '.join(dict(METRICS))}, got {metric!r}")
        decimals = self.get(data, "decimals", int, default=1)
        if not 0 <= decimals <= 4:
            raise self.fail("decimals", f"expected 0..4, got {decimals}")
        splits = self.get(data, "splits", int, default=None)
        if splits is not None and splits < 1:
            raise self.fail("splits", f"expected an integer >= 1, got {splits}")
        preset = self.preset(self.get(data, "preset", str))
        inputs = self.get(data, "inputs", str)
        if inputs not in INPUTS:
            raise self.fail("inputs", f"expected one of {', '.join(INPUTS)}, got {inputs!r}")
        source = self.get(data, "source", dict)
        for key in ("paper", "file", "table", "caption"):
            self.get(source, key, str, "source.")
        datasets = self.get(data, "datasets", dict)
        if not datasets:
            raise self.fail("datasets", "expected at least one [datasets.KEY] table")
        for key, ds in datasets.items():
            self.get(datasets, key, dict, "datasets.")
            for part in ("name", "ref", "tiny"):
                self.get(ds, part, str, f"datasets.{key}.")
            classes = self.get(ds, "classes", int, f"datasets.{key}.", default=None)
            if classes is not None and classes < 1:
                raise self.fail(f"datasets.{key}.classes", f"expected an integer >= 1, got "
                                                           f"{classes}")
            self.get(ds, "background", bool, f"datasets.{key}.", default=None)
        methods = {key: self.method(key, m) for key, m in
                   self.get(data, "methods", dict).items()}
        defaults = self.get(data, "defaults", dict, default={})
        self.settings(defaults, "defaults.")
        header = self.strings(data, "header")
        columns = self.get(data, "columns", list)
        if not columns:
            raise self.fail("columns", "expected at least one [[columns]] entry")
        for i, col in enumerate(columns):
            where = f"columns[{i}]."
            if not isinstance(col, dict):
                raise self.fail(f"columns[{i}]", "expected a table")
            self.get(col, "label", str, where)
            self.settings({k: v for k, v in col.items() if k != "label"}, where)
        rows = self.get(data, "rows", list)
        cells = []
        for i, row in enumerate(rows):
            where = f"rows[{i}]."
            if not isinstance(row, dict):
                raise self.fail(f"rows[{i}]", "expected a table")
            labels = self.strings(row, "labels", where)
            if len(labels) != len(header):
                raise self.fail(f"{where}labels", f"expected {len(header)} labels (one per "
                                                  f"header column), got {len(labels)}")
            paper = self.get(row, "paper", list, where)
            if len(paper) != len(columns) or not all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) for v in paper):
                raise self.fail(f"{where}paper", f"expected {len(columns)} numbers (one per "
                                                 f"column), got {paper!r}")
            if "aggregate" in row:
                if row["aggregate"] != "mean" or report != "split":
                    raise self.fail(f"{where}aggregate", "only 'mean' over the split rows of a "
                                                         "report = 'split' table")
                extra = sorted(set(row) - {"labels", "paper", "aggregate"})
                if extra:
                    raise self.fail(f"{where}{extra[0]}", "an aggregate row runs nothing; it "
                                                          "takes labels and paper only")
                continue
            mine = {k: v for k, v in row.items() if k not in ("labels", "paper")}
            self.settings(mine, where)
            for j, col in enumerate(columns):
                theirs = {k: v for k, v in col.items() if k != "label"}
                both = sorted(set(mine) & set(theirs))
                if both:
                    raise self.fail(f"{where}{both[0]}", f"also set by columns[{j}]; a cell "
                                                         f"takes each setting from one place")
                merged = {**defaults, **theirs, **mine}
                self.cell(merged, f"{where[:-1]} x columns[{j}]", report, methods, datasets)
                value = float(paper[j])
                cells.append(Cell(i, j, merged, None if math.isnan(value) else value))
        if not cells:
            raise self.fail("rows", "expected at least one row that runs something")
        return PaperTable(
            id=self.get(data, "id", str), path=self.path, title=self.get(data, "title", str),
            report=report, metric=metric, decimals=decimals, preset=preset, inputs=inputs,
            header=header, notes=self.strings(data, "notes", default=[]),
            source=dict(source), datasets={k: dict(v) for k, v in datasets.items()},
            methods=methods, columns=tuple(dict(c) for c in columns),
            rows=tuple(dict(r) for r in rows), cells=tuple(cells), splits=splits)

    def preset(self, value: str) -> str:
        """A shipped preset's name as it is, or the preset file ``value`` names (absolute, or
        relative to the table's folder: a copied table keeps working from any directory)
        as an absolute path, checked to be a readable preset."""
        from actrec.presets import available, load_preset

        shipped = ", ".join(available())
        if value in available():
            return value
        if not (value.endswith(".toml") or "/" in value):
            raise self.fail("preset", f"expected a shipped preset ({shipped}) or a .toml file, "
                                      f"got {value!r}")
        path = Path(value).expanduser()
        if not path.is_absolute():
            path = (self.path.parent / path).absolute()
        if not path.is_file():
            raise self.fail("preset", f"no preset file {path} (a path is read relative to the "
                                      f"table's folder); or a shipped preset: {shipped}")
        try:
            load_preset(path)
        except ConfigError as exc:
            raise self.fail("preset", str(exc)) from None
        return str(path)

    def method(self, key: str, data: Any) -> Method:
        from actrec.train_spec import PROTOCOLS, TrainSpec

        where = f"methods.{key}."
        if not isinstance(data, dict):
            raise self.fail(f"methods.{key}", "expected a table")
        unknown = sorted(set(data) - {"kind", "model", "protocol", "source", "train"})
        if unknown:
            raise self.fail(f"{where}{unknown[0]}", "unknown key; expected kind, model, "
                                                    "protocol, source, train")
        kind = self.get(data, "kind", str, where)
        if kind not in KINDS:
            raise self.fail(f"{where}kind", f"expected one of {', '.join(KINDS)}, got {kind!r}")
        if kind == "frame-classifier":
            return Method(key, kind)
        model = self.get(data, "model", str, where)
        protocol = self.get(data, "protocol", str, where)
        if protocol not in PROTOCOLS:
            raise self.fail(f"{where}protocol", f"expected one of {', '.join(PROTOCOLS)}, got "
                                                f"{protocol!r}")
        source = self.get(data, "source", str, where, default="D2")
        if source not in ROLES:
            raise self.fail(f"{where}source", f"expected D1 or D2, got {source!r}")
        train = self.get(data, "train", dict, where, default={})
        fields = set(TrainSpec.__dataclass_fields__)
        for name in train:
            if name.replace("-", "_") not in fields:
                raise self.fail(f"{where}train.{name}", "not a training spec field")
        return Method(key, kind, model, protocol, source, dict(train))

    def settings(self, data: dict, where: str) -> None:
        for key, value in data.items():
            if key not in SETTINGS:
                raise self.fail(f"{where}{key}", f"unknown setting; expected one of "
                                                 f"{', '.join(SETTINGS)}")
            if key in ("split", "D2_split", "seeds"):
                lowest = 1 if key == "seeds" else 0
                if not isinstance(value, int) or isinstance(value, bool) or value < lowest:
                    raise self.fail(f"{where}{key}", f"expected an integer >= {lowest}, got "
                                                     f"{value!r}")
            elif key == "boundary":
                if not isinstance(value, bool):
                    raise self.fail(f"{where}{key}", f"expected true or false, got {value!r}")
            elif not isinstance(value, str):
                raise self.fail(f"{where}{key}", f"expected {SETTINGS[key]}, got {value!r}")

    def cell(self, s: dict, where: str, report: str, methods: dict, datasets: dict) -> None:
        from actrec.train_spec import LABEL_ARRANGEMENTS

        def bad(key: str, what: str) -> ConfigError:
            return self.fail(f"{where}: {key}", what)

        if "method" not in s:
            raise bad("method", "missing (give it in the row, the column or [defaults])")
        method = methods.get(s["method"])
        if method is None:
            raise bad("method", f"no [methods.{s['method']}]; methods: {', '.join(methods)}")
        for role in ROLES:
            if role in s and s[role] not in datasets:
                raise bad(role, f"no [datasets.{s[role]}]; datasets: {', '.join(datasets)}")
        if "D1" not in s:
            raise bad("D1", "missing")
        score = s.get("score", "D1")
        if score not in ROLES:
            raise bad("score", f"expected D1 or D2, got {score!r}")
        two = method.protocol in ("joint", "transfer") or score == "D2"
        if two and "D2" not in s:
            raise bad("D2", f"missing: method '{method.key}' scoring {score} needs D2")
        if method.protocol == "single" and score == "D2":
            raise bad("score", "a single-dataset run has no D2 to score")
        if report == "split" and "split" not in s:
            raise bad("split", "missing: a report = 'split' table names each row's split")
        if report == "mean" and "split" in s:
            raise bad("split", "a report = 'mean' table averages over every split; give none")
        if "D2_split" in s and "D2" not in s:
            raise bad("D2_split", "is the split of D2, which the cell does not have")
        arrangement = s.get("label_arrangement", "concat")
        if arrangement not in LABEL_ARRANGEMENTS:
            raise bad("label_arrangement", f"expected one of {', '.join(LABEL_ARRANGEMENTS)}, "
                                           f"got {arrangement!r}")
        if method.kind == "frame-classifier" and ("label_arrangement" in s or "seeds" in s):
            raise bad("label_arrangement" if "label_arrangement" in s else "seeds",
                      "a frame classifier alone has no label arrangement or seeds")
