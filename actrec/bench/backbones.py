"""Backbone throughput by file format: one ResNet (random weights; speed does not depend on
them) as a state dict run by eager torch (the baseline), as a ``torch.export`` program and as
an ONNX model run by onnxruntime, all through ``actrec.backbones.load_backbone`` on the same
preprocessed batch, interleaved; plus the preprocessing alone (decoded frames -> input).

``python -m actrec.bench backbones [--depth 18|50] [--size 224] [--batch 16] [--rounds 5]
[--threads N] [--json]``. Frames per second, and the ratio to eager torch.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import warnings
from pathlib import Path

import numpy as np

from actrec.bench.common import interleaved

LAYOUTS = {
    18: ([(2, 64, 64), (2, 128, 128), (2, 256, 256), (2, 512, 512)], "basic"),
    50: ([(3, 64, 256), (4, 128, 512), (6, 256, 1024), (3, 512, 2048)], "bottleneck"),
}


def _files(folder: Path, depth: int, size: int) -> dict[str, Path]:
    import torch

    from actrec.nn.resnet import ResNet

    stages, block = LAYOUTS[depth]
    model = ResNet(stages, block=block).eval()
    x = torch.randn(2, 3, size, size)
    torch.save(model.state_dict(), folder / "m.pth")
    batch = {0: torch.export.Dim("batch", min=1, max=4096)}
    torch.export.save(torch.export.export(model, (x,), dynamic_shapes=(batch,)),
                      folder / "m.pt2")
    with warnings.catch_warnings():  # the legacy exporter warns it is deprecated; it works
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), str(folder / "m.onnx"), dynamo=False,
                          input_names=["images"], output_names=["logits"],
                          dynamic_axes={"images": {0: "n"}, "logits": {0: "n"}})
    return {"state dict, eager torch (baseline)": folder / "m.pth",
            "torch.export program (.pt2)": folder / "m.pt2",
            "ONNX, onnxruntime (.onnx)": folder / "m.onnx"}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m actrec.bench backbones")
    parser.add_argument("--depth", type=int, choices=sorted(LAYOUTS), default=18)
    parser.add_argument("--size", type=int, default=224, help="input side (crop)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch/onnxruntime threads")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    import torch

    from actrec.backbones import Preprocess, load_backbone

    if args.threads:
        torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (args.batch, 240, 320, 3), dtype=np.uint8)  # QVGA frames
    pre = Preprocess(resize=args.size * 8 // 7, crop=args.size)
    images = pre.apply(frames)
    with tempfile.TemporaryDirectory() as tmp:
        files = _files(Path(tmp), args.depth, args.size)
        backbones = {name: load_backbone(path) for name, path in files.items()}
        fns = {name: (lambda b=b: b(images)) for name, b in backbones.items()}
        fns["preprocessing only (320x240 frames)"] = lambda: pre.apply(frames)
        timings = interleaved(fns, warmup=1, rounds=args.rounds)
    base = timings["state dict, eager torch (baseline)"].median
    rows = {k: {**t.to_dict(), "frames_per_s": args.batch / t.median, "ratio": base / t.median}
            for k, t in timings.items()}
    setting = {"depth": args.depth, "size": args.size, "batch": args.batch,
               "threads": torch.get_num_threads()}
    if args.json:
        print(json.dumps({"benchmark": "backbones", **setting, "results": rows}, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"ResNet-{args.depth} at {args.size}x{args.size}, batch {args.batch}, "
                  f"{setting['threads']} thread(s) (median of interleaved rounds)")
    for col in ("case", "frames/s", "x eager torch"):
        table.add_column(col, justify="left" if col == "case" else "right")
    for name, row in rows.items():
        table.add_row(name, f"{row['frames_per_s']:.1f}", f"{row['ratio']:.2f}x")
    Console().print(table)
    return 0
