"""``actrec demo``: the whole pipeline on the built-in synthetic kitchen, two domains.

Generates the two kitchens' videos, extracts causal features, trains a plain LSTM on kitchen
A alone, and an LSTM, a BNLSTM and a DDLSTM jointly on A + B (the comparison of the DDLSTM
paper), evaluates every run online and returns the results. All
of it is cached under one folder: a second run reuses the videos, the features and finished
runs.

Progress: with a ``rich.progress.Progress``, one bar counts the demo's stages (each kitchen's
videos generated and features extracted, each run trained and evaluated) and names the one
running; the stage's own bars (videos, frames, training iterations with loss and ETA, videos
evaluated) show below it and are removed when it is done. On a console that is not a terminal
(a log file, a pipe), where bars are not redrawn, each stage also prints one line as it starts.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

KITCHENS = ("synthetic:kitchen=a", "synthetic:kitchen=b")


@dataclass(frozen=True)
class DemoPlan:
    """What the demo trains: (run name, model, joint?, model options)."""

    runs: tuple[tuple[str, str, bool, dict], ...] = (
        ("lstm-single", "lstm", False, {"hidden": "64", "layers": "1"}),
        ("lstm-joint", "lstm", True, {"hidden": "64", "layers": "1"}),
        ("bnlstm-joint", "bnlstm", True, {"hidden": "64", "layers": "1", "max_len": "64"}),
        ("ddlstm-joint", "ddlstm", True, {"hidden": "64", "layers": "1", "max_len": "64"}),
    )
    history: int = 64
    iterations: int = 300
    mix: tuple[int, int] = (16, 16)
    kitchen_options: tuple[tuple[str, str], ...] = ()  # synthetic dataset options, e.g. size
    optimizer: str = "adam"  # converges in a few hundred iterations, where SGD needs thousands
    lr: float = 0.003


@dataclass
class DemoResult:
    cache: Path
    rows: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"cache": str(self.cache), "results": self.rows}


DEFAULT_PLAN = DemoPlan()


class _Stages:
    """The demo's stage bar on ``progress`` (None: silent); see the module docstring."""

    def __init__(self, progress: Any, total: int) -> None:
        self.progress = progress
        self.total = total
        self.done = 0
        self.task = progress.add_task("demo", total=total) if progress is not None else None

    @contextlib.contextmanager
    def stage(self, text: str, detail: str = "") -> Iterator[None]:
        """Name the stage running (short: the bars' column is as wide as the longest
        description); when it ends, count it and remove the bars it added."""
        progress = self.progress
        if progress is None:
            yield
            return
        line = f"demo {self.done + 1}/{self.total} {text}"
        progress.update(self.task, description=line)
        if not progress.console.is_terminal:  # bars are not redrawn there: say it once
            progress.console.print(line + (f" ({detail})" if detail else ""), highlight=False)
        before = set(progress.task_ids)
        try:
            yield
        finally:
            for task in set(progress.task_ids) - before:
                progress.remove_task(task)
        self.done += 1
        progress.update(self.task, completed=self.done,
                        description="demo" if self.done == self.total else line)


def run_demo(cache: Path | None = None, *, plan: DemoPlan | None = None, progress: Any = None
             ) -> DemoResult:
    """Run (or resume) the demo under ``cache`` (default: the workspace's ``demo`` folder),
    with ``plan`` (default ``DEFAULT_PLAN``), showing its stages on ``progress`` (a
    ``rich.progress.Progress``; None: silent). Ctrl-C raises ``actrec.errors.Interrupted``
    saying that a second run goes on from what was finished."""
    from actrec.errors import Interrupted
    from actrec.workspace import home

    plan = plan or DEFAULT_PLAN
    cache = Path(cache) if cache is not None else home() / "demo"
    try:
        return _run_demo(cache, plan, progress)
    except KeyboardInterrupt as exc:  # a stage's own advice (a training's --run-dir) is not ours
        raise Interrupted(f"the demo stopped; what it finished (videos, features, runs up to "
                          f"their last checkpoint) is kept under {cache}: run `actrec demo` "
                          f"again to go on from there") from exc


def _run_demo(cache: Path, plan: DemoPlan, progress: Any) -> DemoResult:
    """``run_demo``'s stages."""
    from actrec.evaluate import evaluate_run
    from actrec.pipeline import extract_dataset, train_from_refs
    from actrec.refs import dataset_from_ref

    stages = _Stages(progress, 2 * len(KITCHENS) + 2 * len(plan.runs))
    stores = []
    for ref in KITCHENS:
        kitchen = "kitchen " + ref.rsplit("=", 1)[-1]
        options = {"root": str(cache / "data"), **dict(plan.kitchen_options)}
        with stages.stage(f"generate {kitchen}", "synthetic videos"):
            dataset = dataset_from_ref(ref, options)
            if not dataset.generated():  # extraction would generate them without a bar
                dataset.generate(progress)
        store = cache / "features" / (ref.split("=")[-1] + ".zarr")
        with stages.stage(f"extract {kitchen}", "causal colorgrad features"):
            extract_dataset(ref, dataset_options=options, out=store, progress=progress)
        stores.append(store)
    result = DemoResult(cache)
    for name, model, joint, options in plan.runs:
        with stages.stage(f"train {name}", f"{model} on kitchen a{' + b' if joint else ''}, "
                                            f"{plan.iterations} iterations"):
            run = train_from_refs(
                model, d1=str(stores[0]), d2=str(stores[1]) if joint else None,
                model_options=options, run_dir=cache / "runs" / name, history=plan.history,
                iterations=plan.iterations, mix=plan.mix if joint else (plan.mix[0] * 2, 0),
                optimizer=plan.optimizer, lr=plan.lr, progress=progress,
            )
        with stages.stage(f"eval {name}", "online, frame by frame"):
            evaluation = evaluate_run(run.run_dir, online=True, progress=progress)
        # Datasets come in domain order: D1 is kitchen a, D2 kitchen b.
        for scores, ref in zip(evaluation.to_dict()["datasets"].values(), KITCHENS):
            kitchen = "kitchen " + ref.rsplit("=", 1)[-1]
            result.rows.append({"run": name, "model": model, "dataset": kitchen,
                                "alphas": _alphas(run.run_dir), **scores})
    return result


def _alphas(run_dir: Path) -> dict[str, list[float]]:
    """The learned alpha pair of each DDLSTM layer (empty for other models)."""
    import torch

    state = torch.load(run_dir / "checkpoint.pt", weights_only=True)["model"]
    return {k: [round(float(a), 4) for a in v] for k, v in state.items()
            if k.endswith("alpha")}
