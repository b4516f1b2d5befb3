"""``actrec export``: a run's online step as a self-contained ``torch.export`` program.

The program (``OUT.pt2``, ``torch.export.save``) is one frame's step of live recognition
(``actrec.recognizer``) after feature extraction: it takes the extractor's feature rows
``x [B, D]`` float32 and the state tensors, and returns the class probabilities
``[B, K]`` of the run's dataset followed by the new state tensors. Inside it: the rounding to
the feature store's dtype, the run's standardisation, the input layout, the model's step and
the softmax, all plain tensor operations. Metadata (``actrec.json``, stored in the program's
extra files and written beside it as ``OUT.json``): label names, frame rate, the extractor and
its config that make the input features, how frames are taken from a file (``video_rate``,
``label_fps``, ``labels_by_time``, as ``actrec.live_sources.open_source`` takes them), the
initial state (zeros, shapes per stream) and the input/output order. Loading it needs only
torch (``LOADER`` below; docs/guide.md).

A run trained on a frame head's outputs (``actrec.frame_head``: a store whose "extractor" is
``<backbone>-softmax-splitK``, which no plugin is) is exported as live recognition applies it
(``actrec.recognizer``): the program takes the BACKBONE extractor's features, rounds them to
the backbone store's dtype, applies the head (its weights are the program's ``heads.<i>.*``
tensors) and its softmax or logits, then goes on as for any store; ``frame_heads`` in the
metadata describes each head (which stream, output, rounding, layers, weight names).

Where actrec's compiled DDBN op is loaded, the traced step holds it; it is replaced by its
PyTorch reference (in eval mode an affine map with each domain's running statistics), equal to
float rounding. Refused with a ``ConfigError`` naming the reason: a state value that is neither
a tensor nor an int, label arrangements without per-dataset probabilities, a step
whose operations do not export or leave an operator outside ATen (named), and a program that
differs from the model's step (``_check_program``).
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

from actrec.errors import ConfigError

__all__ = ["LOADER", "ExportReport", "export_run"]

LOADER = '''\
import json, torch
extra = {"actrec.json": ""}
program = torch.export.load("OUT.pt2", extra_files=extra)
meta = json.loads(extra["actrec.json"])
step = program.module()
state = [v if d == "int" else torch.tensor(v) if v is not None    # one stream
         else torch.zeros(s, dtype=getattr(torch, d))
         for s, d, v in zip(meta["state_shapes"], meta["state_dtypes"], meta["state_values"])]
# x: the features of one frame, float32 [1, meta["feature_dim"]], made by the extractor
# meta["extractor"] with meta["extractor_config"] from frames at meta["fps"] (a frame head,
# meta["frame_heads"], is inside the program; meta["video_rate"]: the extractor takes every
# frame of the file at its own rate, x is the row of the frame read at meta["fps"])
probs, *state = step(x, *state)
label = meta["classes"][int(probs[0].argmax())]
'''


class ExportReport(dict):
    """What was written: ``program``, ``metadata`` paths and the metadata itself."""


def _flatten(tree: Any, path: str = "state") -> list[tuple[str, Any]]:
    if isinstance(tree, dict):
        return [x for k, v in tree.items() for x in _flatten(v, f"{path}.{k}")]
    if isinstance(tree, (list, tuple)):
        return [x for i, v in enumerate(tree) for x in _flatten(v, f"{path}[{i}]")]
    return [(path, tree)]


def _unflatten(tree: Any, leaves: list[Any]) -> Any:
    it = iter(leaves)

    def build(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: build(v) for k, v in node.items()}
        if isinstance(node, list):
            return [build(v) for v in node]
        if isinstance(node, tuple):
            return tuple(build(v) for v in node)
        return next(it)

    return build(tree)


def export_run(run: str | Path, out: Path, *, dataset: int | str | None = None) -> ExportReport:
    """Write the online step of ``run`` (for its dataset ``dataset``) to ``out`` (a ``.pt2``
    file, refused if it exists) and its metadata to ``out`` with suffix ``.json``."""
    import torch
    from torch import nn

    from actrec.recognizer import load_online_run

    out = Path(out)
    if out.suffix != ".pt2":
        raise ConfigError(f"export: OUT must be a .pt2 file, got {out.name}")
    meta_path = out.with_suffix(".json")
    for path in (out, meta_path):
        if path.exists():
            raise ConfigError(f"export: {path} exists; give a new name (nothing is overwritten)")
    online = load_online_run(run, dataset=dataset)
    where = f"run {online.run_dir}"
    layout, labels, k = online.layout, online.labels, online.domain
    if getattr(labels, "arrangement", "concat") != "concat":
        raise ConfigError(f"{where}: its label maps give no per-dataset probabilities; "
                          f"only concatenated labels are exported")
    model = online.model.eval()
    domain = torch.full((1,), k, dtype=torch.long)
    init = model.init_state(1, domain)
    leaves = _flatten(init)
    for name, leaf in leaves:
        if not isinstance(leaf, (torch.Tensor, int)) or isinstance(leaf, bool):
            raise ConfigError(
                f"{where}: model '{online.model_name}' keeps {name} = {leaf!r} "
                f"({type(leaf).__name__}) in its state, which is not a tensor; torch.export "
                f"would freeze it at that value, so this model's step is not exported")
    dims = [f.dim for f in online.features]
    streams = [_stream_input(f, where) for f in online.features]
    in_dims = [s["dim"] for s in streams]
    dim = sum(in_dims)
    columns = layout.columns(k)
    dtypes = [f.dtype for f in online.features]
    heads = [s["head"] for s in streams]  # a frame head's module per stream, or None
    head_at = {i: n for n, i in enumerate(i for i, h in enumerate(heads) if h is not None)}
    scaler = online.scaler
    cols = labels.block(k)
    prediction = online.prediction

    class OnlineStep(nn.Module):
        """features [B, D] + state -> probabilities [B, K_k] + new state."""

        def __init__(self) -> None:
            super().__init__()
            self.model = model
            self.heads = nn.ModuleList([h.head.module.eval() for h in heads if h is not None])
            if layout.mode == "scores":  # class y's score goes to the input of its output
                self.register_buffer("score_columns", torch.as_tensor(columns))
            mean = scaler.mean if scaler is not None else None
            self.register_buffer("mean", torch.as_tensor(mean) if mean is not None
                                 else torch.zeros(sum(dims)))
            self.register_buffer("std", torch.as_tensor(scaler.std) if scaler is not None
                                 else torch.ones(sum(dims)))

        def forward(self, x, *state):
            parts, at = [], 0
            for i, (d, dt) in enumerate(zip(in_dims, dtypes)):  # as the store kept them
                part = x[:, at : at + d]
                if heads[i] is not None:  # as actrec.recognizer.FrameHead applies it
                    if heads[i].dtype != "float32":  # the backbone store's rounding
                        part = part.to(getattr(torch, heads[i].dtype)).to(torch.float32)
                    part = self.heads[head_at[i]](part)  # logits [B, classes]
                    if heads[i].output == "softmax":
                        part = part.softmax(dim=1)
                if dt != "float32":
                    part = part.to(getattr(torch, dt)).to(torch.float32)
                parts.append(part)
                at += d
            x = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
            x = (x - self.mean) / self.std  # [B, D]
            b = x.shape[0]
            if layout.mode == "scores":  # as InputLayout.arrange places them
                x = x.new_zeros(b, layout.width).index_copy(1, self.score_columns, x)
            else:
                left = x.new_zeros(b, columns.start)
                right = x.new_zeros(b, layout.width - columns.stop)
                x = torch.cat([left, x, right], dim=1)  # [B, width]
            logits, new = self.model.step(x, _unflatten(init, list(state)))  # [B, K]
            if prediction == "full":
                probs = logits.float().softmax(-1)[:, cols]
            else:
                probs = logits[:, cols].float().softmax(-1)
            return (probs, *[leaf for _, leaf in _flatten(new)])

    step = OnlineStep().eval()
    # distinct tensors: a state whose h and c start as one zeros tensor must not be exported
    # as one input used twice
    example = (torch.zeros(1, dim), *[leaf.clone() if isinstance(leaf, torch.Tensor) else leaf
                                      for _, leaf in leaves])
    # An int in the state (a batch-normalised LSTM's step counter) is a symbolic input, so
    # the program is not frozen at its first value.
    dynamic = (None, tuple(torch.export.Dim.DYNAMIC if isinstance(v, int) else None
                           for _, v in leaves))
    try:
        with torch.no_grad(), _per_step_path(step):
            program = torch.export.export(step, example, dynamic_shapes=dynamic)
    except Exception as exc:  # noqa: BLE001 - the reason is the message
        raise ConfigError(f"{where}: model '{online.model_name}''s step does not export with "
                          f"torch.export: {_first_op(exc)}") from None
    program = _plain_ops(program, where)
    _check_program(program.module(), step, example, where)
    meta = {
        "format": "actrec-online-step", "version": 1, "run": str(online.run_dir),
        "model": online.model_name, "dataset": online.dataset, "classes": list(online.classes),
        "fps": online.fps, "feature_dim": dim,
        "extractor": "+".join(s["extractor"] for s in streams),
        "extractor_config": streams[0]["config"] if len(streams) == 1
        else [s["config"] for s in streams],
        "feature_dtypes": dtypes,
        # how frames are taken from a file (actrec.live_sources.open_source's arguments):
        # video_rate: the extractor takes every frame at the file's own rate, the row of each
        # frame read at fps is kept; a file within 2.5 % of label_fps is read one frame per
        # label frame unless labels_by_time (then resampled by its timestamps)
        "video_rate": any(s["video_rate"] for s in streams),
        "label_fps": online.label_fps or online.fps,
        "labels_by_time": bool(online.labels_by_time),
        "frame_heads": [_head_record(i, h, head_at[i], f)
                        for i, (h, f) in enumerate(zip(heads, online.features))
                        if h is not None],
        "state_names": [n for n, _ in leaves],
        "state_shapes": [list(getattr(v, "shape", ())) for _, v in leaves],
        "state_dtypes": [str(v.dtype).replace("torch.", "") if isinstance(v, torch.Tensor)
                         else "int" for _, v in leaves],
        "state_values": [v.tolist() if isinstance(v, torch.Tensor) and v.dtype == torch.long
                         else (v if isinstance(v, int) else None) for _, v in leaves],
        "inputs": ["features [1, feature_dim] float32", "*state"],
        "outputs": ["probabilities [1, len(classes)]", "*new state"],
        # train --delay K: step t's output is for frame t - K; at a video's end, step the last
        # features K more times for the last K frames (as actrec eval --online does)
        "delay": online.delay,
        "batch": 1,
        "loader": LOADER.replace("OUT.pt2", out.name),
    }
    text = json.dumps(meta, indent=2)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.export.save(program, str(out), extra_files={"actrec.json": text})
    meta_path.write_text(text + "\n")
    return ExportReport(program=str(out), metadata=str(meta_path), meta=meta)


def _stream_input(spec: Any, where: str) -> dict[str, Any]:
    """What the program takes for one of the run's feature streams (``spec``: a
    ``actrec.recognizer.FeatureSpec``): ``extractor``, ``config`` and ``dim`` of the features
    fed in, ``video_rate`` (the extractor reads the video at its own rate) and ``head`` (a
    frame-head store's head, applied inside the program, or ``None``). A frame-head store is
    rebuilt as live recognition rebuilds it (``actrec.recognizer.build_feed``: the backbone's
    extractor, the head saved beside the store, refused when missing or trained again)."""
    from actrec.recognizer import build_feed

    if spec.is_head_store:
        feed = build_feed(spec, where, 1)
        return {"extractor": str(spec.config["backbone_extractor"]),
                "config": dict(spec.config.get("backbone_config") or {}),
                "dim": int(feed.dim), "video_rate": bool(feed.video_rate), "head": feed.head}
    return {"extractor": spec.extractor, "config": spec.config, "dim": spec.dim,
            "video_rate": _reads_video_rate(spec), "head": None}


def _reads_video_rate(spec: Any) -> bool:
    """Whether the extractor of ``spec`` reads the video at its own rate
    (``actrec.extract_video.reads_video_rate``), asked of the extractor rebuilt from the
    store's config (no setup); where it cannot be rebuilt (imported features, a plugin not
    installed here), the store's config says it (``window_rate``, the built-in option)."""
    from actrec import registry
    from actrec.extract_video import reads_video_rate

    if spec.extractor.endswith("-import"):  # no actrec extractor made them
        return False
    try:
        extractor = registry.create("extractors", spec.extractor, spec.config)
    except Exception:  # noqa: BLE001 - only a description: the recorded option then
        return spec.config.get("window_rate") == "video"
    return reads_video_rate(extractor)


def _head_record(stream: int, head: Any, at: int, spec: Any) -> dict[str, Any]:
    """``frame_heads`` metadata of the head of feature stream ``stream`` (an
    ``actrec.recognizer.FrameHead``, the program's ``heads.<at>``)."""
    trained, cfg = head.head, dict(spec.config)
    names = sorted(f"heads.{at}.{n}" for n in trained.module.state_dict())
    return {
        "stream": stream, "output": head.output,
        # the backbone's rows are rounded to this dtype first (the backbone store's, as the
        # head read them), the head's outputs to feature_dtypes[stream] after it
        "input_rounding": head.dtype, "input_dim": trained.dim, "classes": list(trained.classes),
        "layers": ("(x - mean) / std, then net: Linear" if trained.config.model == "linear"
                   else "(x - mean) / std, then net: Linear, ReLU, Dropout (off), Linear"),
        "config": trained.config.to_dict(), "weights": names, "split": trained.split,
        "head_store_extractor": spec.extractor, "head_file": cfg.get("head_file"),
        "head_digest": cfg.get("head_digest"),
    }


@contextlib.contextmanager
def _per_step_path(module: Any):  # a torch.nn.Module
    """Recurrent layers switched to their PyTorch step while tracing: the fused evaluation op
    is actrec's own and a program loaded without actrec could not run it."""
    layers = [m for m in module.modules() if isinstance(getattr(m, "fused", None), bool)]
    saved = [m.fused for m in layers]
    for m in layers:
        m.fused = False
    try:
        yield
    finally:
        for m, fused in zip(layers, saved):
            m.fused = fused


def _custom_ops(program: Any) -> list[str]:
    """Operators of ``program`` outside ATen and Python's built-ins (``actrec.ddbn_eval``)."""
    found = []
    for node in program.graph.nodes:
        if node.op == "call_function":
            target = node.target
            namespace = getattr(target, "namespace", None)  # operators: aten, actrec, ...
            if namespace is not None:
                if namespace not in ("aten", "prim", "prims"):
                    found.append(str(target))
                continue
            # Python callables: torch's symbolic helpers (torch.sym_min, ...) and operators
            # load anywhere; anything else is named by module and name
            module = getattr(target, "__module__", None) or ""
            if module.split(".")[0] not in ("torch", "_operator", "operator", "math", "builtins"):
                found.append(f"{module}.{getattr(target, '__name__', target)}")
    return sorted(set(found))


def _plain_ops(program: Any, where: str) -> Any:
    """``program`` with actrec's compiled DDBN op (traced where the extension is loaded)
    replaced by its PyTorch reference, which it equals to float rounding (in eval mode an
    affine map with the running statistics of each row's domain), so that loading needs no
    actrec; ``ConfigError`` naming any other operator outside ATen."""
    import torch

    if "actrec.ddbn_eval.default" in _custom_ops(program):
        from actrec.ops.ddbn_reference import ddbn_eval_reference

        def plain(h, domain, running_mean, running_var, gamma, beta, eps=1e-5):
            return ddbn_eval_reference(h, domain, running_mean, running_var, gamma, beta, eps,
                                       checked=True)

        program = program.run_decompositions({torch.ops.actrec.ddbn_eval.default: plain})
    left = _custom_ops(program)
    if left:
        raise ConfigError(f"{where}: the exported step uses operator(s) {', '.join(left)} "
                          f"outside PyTorch's own, which a program loaded without actrec "
                          f"cannot run; not exported")
    return program


def _check_program(exported: Any, eager: Any, example: tuple, where: str,
                   steps: int = 300) -> None:
    """Step the exported program and the eager step side by side on random features for
    ``steps`` frames (past any per-timestep statistics); ``ConfigError`` if they differ by
    more than float rounding (a value the export froze)."""
    import torch

    gen = torch.Generator().manual_seed(0)
    a, b = list(example[1:]), list(example[1:])
    with torch.no_grad():
        for t in range(steps):
            x = torch.randn(example[0].shape, generator=gen)
            pa, *a = exported(x, *a)
            pb, *b = eager(x, *b)
            if not torch.allclose(pa, pb, rtol=1e-4, atol=1e-5):
                raise ConfigError(f"{where}: the exported step differs from the model's at "
                                  f"frame {t} (by {float((pa - pb).abs().max()):.3g}): "
                                  f"torch.export froze a value the step depends on; not "
                                  f"exported")


def _first_op(exc: BaseException) -> str:
    """The line of a torch.export failure that names what failed (an operator, a guard)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    for ln in lines:
        if "torch.ops." in ln or "operator" in ln.lower() or "aten." in ln:
            return f"{type(exc).__name__}: {ln[:300]}"
    return f"{type(exc).__name__}: {(lines[0] if lines else '')[:300]}"
