"""Building and finding the extension: device code compiles with plain nvcc, the build sees every
csrc source, the just-in-time cache is keyed on the sources, and setup.py without torch builds
nothing."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from actrec.ops import _ext

ROOT = Path(__file__).resolve().parents[1]
KERNELS = sorted((ROOT / "csrc" / "cuda").glob("*_kernels.cu"))


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not on PATH")
@pytest.mark.parametrize("source", KERNELS, ids=[p.name for p in KERNELS])
def test_device_code_compiles_with_plain_nvcc(source, tmp_path):
    # Device code must need only the CUDA runtime: no torch include path is given here.
    out = tmp_path / (source.stem + ".o")
    proc = subprocess.run(
        ["nvcc", "-c", str(source), "-o", str(out), "-arch=sm_90", "-O1", "-std=c++17"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert out.stat().st_size > 0


def test_ddbn_kernels_exist_for_every_backend():
    names = {p.relative_to(ROOT).as_posix() for p in _ext.source_files(ROOT, cuda=True)}
    assert {"csrc/ddbn.cpp", "csrc/cpu/ddbn_cpu.cpp", "csrc/cuda/ddbn_kernels.cu",
            "csrc/cuda/ddbn_cuda.cu"} <= names
    cpu_only = {p.relative_to(ROOT).as_posix() for p in _ext.source_files(ROOT)}
    assert not any(n.endswith(".cu") for n in cpu_only)


def test_source_files_glob_all_csrc_folders(tmp_path):
    for rel in ["csrc/a.cpp", "csrc/cpu/b.cpp", "csrc/cuda/c.cu", "csrc/cuda/d_kernels.cu",
                "csrc/cpu/e.h", "csrc/other/f.cpp"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("// x\n")
    rel = lambda ps: [p.relative_to(tmp_path).as_posix() for p in ps]  # noqa: E731
    assert rel(_ext.source_files(tmp_path)) == ["csrc/a.cpp", "csrc/cpu/b.cpp"]
    assert rel(_ext.source_files(tmp_path, cuda=True)) == [
        "csrc/a.cpp", "csrc/cpu/b.cpp", "csrc/cuda/c.cu", "csrc/cuda/d_kernels.cu"]


def test_source_hash_tracks_sources_and_headers(tmp_path):
    (tmp_path / "csrc" / "cpu").mkdir(parents=True)
    (tmp_path / "csrc" / "a.cpp").write_text("int a;\n")
    (tmp_path / "csrc" / "cpu" / "k.h").write_text("#pragma once\n")
    first = _ext.source_hash(tmp_path)
    assert first == _ext.source_hash(tmp_path)
    (tmp_path / "csrc" / "cpu" / "k.h").write_text("#pragma once\n// changed\n")
    second = _ext.source_hash(tmp_path)
    (tmp_path / "csrc" / "notes.txt").write_text("not a source")
    assert first != second == _ext.source_hash(tmp_path)


def test_cache_root_and_disable_flag(monkeypatch, tmp_path):
    monkeypatch.setenv("ACTREC_EXT_CACHE", str(tmp_path / "c"))
    assert _ext.cache_root() == tmp_path / "c"
    monkeypatch.delenv("ACTREC_EXT_CACHE")
    assert _ext.cache_root() == Path.home() / ".cache" / "actrec" / "ext"
    for value, want in [("1", True), ("true", True), ("0", False), ("", False)]:
        monkeypatch.setenv("ACTREC_DISABLE_EXT", value)
        assert _ext.disabled() is want
    monkeypatch.setenv("ACTREC_DISABLE_EXT", "1")
    st = _ext.status()
    assert (st.active, st.backend, st.compiled_with) == (False, "reference", {})


def test_cuda_choice_follows_env(monkeypatch):
    import torch

    monkeypatch.setenv("ACTREC_CUDA", "0")
    assert _ext.cuda_wanted() == (False, "ACTREC_CUDA=0")
    monkeypatch.setenv("ACTREC_CUDA", "1")
    assert _ext.cuda_wanted()[0] is True
    monkeypatch.delenv("ACTREC_CUDA")
    if torch.version.cuda is None:
        assert _ext.cuda_wanted() == (False, "torch has no CUDA")


def test_loaded_extension_reports_its_build():
    if _ext.disabled():
        pytest.skip("ACTREC_DISABLE_EXT is set")
    import torch

    mod = _ext.load()
    assert mod is not None, _ext.status(build=False).reason
    info = mod.build_info()
    assert info["cpu"] is True
    assert info["cuda"] is (torch.version.cuda is not None and _ext.cuda_wanted()[0])
    assert info["torch_version"] == torch.__version__.split("+")[0]
    assert info["compiler"]
    # Stamped with the hash of the csrc/ it was built from (compared with the tree at load time;
    # not here, since other work may edit csrc/ while the tests run).
    assert len(info["source_hash"]) == 64 and int(info["source_hash"], 16) >= 0
    assert hasattr(torch.ops.actrec, "ddbn_forward")


def test_setup_without_torch_builds_nothing(tmp_path):
    # What a build-isolated `pip install -e .` sees: torch is not importable.
    script = (
        "import runpy, sys; sys.modules['torch'] = None; sys.argv = ['setup.py', '--name'];"
        "runpy.run_path('setup.py', run_name='__main__')"
    )
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "actrec"
    assert "not building actrec._C" in proc.stderr
