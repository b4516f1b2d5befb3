"""The DDLSTM benchmark times GEMMs with torch.profiler, whose C++ side prints two lines on
stderr at every start and stop ("USDT:... profiler_start"), whatever KINETO_LOG_LEVEL says.
``quiet_profiler_logs`` drops exactly those and keeps everything else written meanwhile."""

from __future__ import annotations

import os

import torch
from torch.profiler import ProfilerActivity, profile

from actrec.bench.ddlstm import quiet_profiler_logs


def test_profiler_chatter_is_dropped_and_other_stderr_kept(capfd):
    with quiet_profiler_logs(), profile(activities=[ProfilerActivity.CPU]):
        torch.ones(4).sum()
        os.write(2, b"USDT: made up, dropped too\n")
        os.write(2, b"a real warning from C code\n")
        os.write(2, b"and another one\n")
    os.write(2, b"after the block\n")
    err = capfd.readouterr().err
    assert err == "a real warning from C code\nand another one\nafter the block\n"
    # Without the filter, the profiler's own lines would be there.
    with profile(activities=[ProfilerActivity.CPU]):
        torch.ones(4).sum()
    assert "profiler_start" in capfd.readouterr().err
