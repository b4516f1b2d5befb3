"""``python -m actrec.bench NAME [options]``: run one benchmark (cli, ddbn, ddlstm, datasets,
extract, backbones, scale, live, store)."""

from __future__ import annotations

import importlib
import sys

BENCHMARKS = {
    "cli": "start-up time of `actrec --help` and `actrec plugins`",
    "ddbn": "fused DDBN op vs the PyTorch reference",
    "ddlstm": "DDLSTM / BNLSTM train step vs torch.nn.LSTM",
    "datasets": "time to load the real annotation files in ../shared/data",
    "extract": "feature extraction: decode-only vs each extractor end to end, 1 vs 2 workers",
    "backbones": "CNN backbone throughput: state dict (eager torch) vs .pt2 vs ONNX",
    "scale": "DDLSTM training samples/s on 1 and 2 processes (torch.distributed, gloo)",
    "live": "live recognition: latency by stage, frames/s, streams in real time; DDLSTM step",
    "store": "whole-video reads: the sha256 check vs an unchecked read of the same video",
}


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help") or args[0] not in BENCHMARKS:
        print("usage: python -m actrec.bench {" + ",".join(BENCHMARKS) + "} [--json] [...]")
        for name, what in BENCHMARKS.items():
            print(f"  {name:9s} {what}")
        return 0 if args and args[0] in ("-h", "--help") else 2
    module = importlib.import_module(f"actrec.bench.{args[0]}")
    return int(module.main(args[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
