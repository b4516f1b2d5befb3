"""Benchmarks: ``python -m actrec.bench {cli,ddbn,ddlstm,datasets}``.

Every benchmark prints ratios against a baseline measured in the same run, because these
machines are noisy; none of them asserts a time.
"""
