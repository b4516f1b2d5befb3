"""Operators: the dual-domain batch norm (DDBN), fused C++/CUDA where built, reference otherwise."""

from actrec.ops.ddbn import ddbn, ddbn_eval

__all__ = ["ddbn", "ddbn_eval"]
