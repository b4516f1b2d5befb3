"""``actrec demo``: the whole pipeline on the built-in synthetic kitchen, two domains.

Generates the two kitchens' videos, extracts causal features, trains a plain LSTM on kitchen
A alone, and an LSTM, a BNLSTM and a DDLSTM jointly on A + B (the comparison of the DDLSTM
paper), evaluates every run online and returns the results. All
of it is cached under one folder: a second run reuses the videos, the features and finished
runs.
"""

from __future__ import annotations

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


def run_demo(cache: Path | None = None, *, plan: DemoPlan | None = None, progress: Any = None
             ) -> DemoResult:
    """Run (or resume) the demo under ``cache`` (default: the workspace's ``demo`` folder)."""
    from actrec.evaluate import evaluate_run
    from actrec.pipeline import extract_dataset, train_from_refs
    from actrec.workspace import home

    plan = plan or DemoPlan()
    cache = Path(cache) if cache is not None else home() / "demo"
    stores = []
    for ref in KITCHENS:
        store = cache / "features" / (ref.split("=")[-1] + ".zarr")
        extract_dataset(ref, dataset_options={"root": str(cache / "data"),
                                              **dict(plan.kitchen_options)},
                        out=store, progress=progress)
        stores.append(store)
    result = DemoResult(cache)
    for name, model, joint, options in plan.runs:
        run = train_from_refs(
            model, d1=str(stores[0]), d2=str(stores[1]) if joint else None,
            model_options=options, run_dir=cache / "runs" / name, history=plan.history,
            iterations=plan.iterations, mix=plan.mix if joint else (plan.mix[0] * 2, 0),
            optimizer=plan.optimizer, lr=plan.lr, progress=progress,
        )
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
