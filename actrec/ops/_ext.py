"""Finding, loading or just-in-time compiling the compiled ops ``actrec._C``.

Order of preference, decided once per process on first use:

1. ``ACTREC_DISABLE_EXT=1``: no extension, the pure-PyTorch reference (checked on every call).
2. ``actrec._C`` built by ``pip install --no-build-isolation -e .`` when it imports and, where
   the sources are at hand (a checkout), was built from the current ones.
3. A just-in-time build of every ``csrc/*.cpp``, ``csrc/cpu/*.cpp`` (and ``csrc/cuda/*.cu`` when
   torch has CUDA and nvcc is found) with ``torch.utils.cpp_extension.load``, cached per user in
   ``$ACTREC_EXT_CACHE`` or ``~/.cache/actrec/ext/<hash of sources, torch, python, flags>``;
   announced once on stderr.
4. Otherwise the reference, with one warning saying why.

Importing this module is cheap: it imports neither torch nor the extension.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

__all__ = ["ExtStatus", "load", "status", "disabled", "source_files", "source_hash", "cache_root"]

# Flags of every build (setup.py passes the same): optimised, no -march=native so that a cached
# build stays valid on another CPU; the hot loops carry their own multi-versioned clones.
# -fopenmp: at::parallel_for is a header template, so it runs on one thread in an extension
# compiled without OpenMP (measured: the DDLSTM train step 2.0x nn.LSTM without, 1.4x with).
OPENMP = [] if sys.platform == "darwin" else ["-fopenmp"]
CXX_FLAGS = ["-O3", "-fopenmp-simd", *OPENMP]
LD_FLAGS = [*OPENMP]
NVCC_FLAGS = ["-O3", "--use_fast_math"]

_lock = threading.Lock()
_module: ModuleType | None = None
_reason: str = "not loaded yet"
_tried = False


@dataclass(frozen=True)
class ExtStatus:
    """Which DDBN implementation ``actrec.ops`` uses, and why.

    ``backend`` is ``"cpu"``, ``"cpu+cuda"`` or ``"reference"``; ``compiled_with`` is the
    extension's own report (cpu, cuda, cuda_version, compiler, torch_version, source_hash), empty
    when none is loaded.
    """

    active: bool
    backend: str
    reason: str
    compiled_with: dict[str, Any] = field(default_factory=dict)


def repo_root() -> Path:
    """The directory holding ``csrc/`` in a checkout (editable install)."""
    return Path(__file__).resolve().parents[2]


def source_files(root: Path | None = None, *, cuda: bool = False) -> list[Path]:
    """The extension's translation units, sorted: ``csrc/*.cpp``, ``csrc/cpu/*.cpp`` and, for a
    CUDA build, ``csrc/cuda/*.cu``. Empty when ``root`` has no ``csrc/``."""
    csrc = (root or repo_root()) / "csrc"
    files = sorted(csrc.glob("*.cpp")) + sorted(csrc.glob("cpu/*.cpp"))
    if cuda:
        files += sorted(csrc.glob("cuda/*.cu"))
    return files


def source_hash(root: Path | None = None) -> str:
    """sha256 over every file under ``csrc/`` (sources and headers, names and contents)."""
    csrc = (root or repo_root()) / "csrc"
    h = hashlib.sha256()
    for p in sorted(q for q in csrc.rglob("*") if q.is_file()):
        if p.suffix in {".cpp", ".cu", ".h", ".cuh", ".hpp"}:
            h.update(p.relative_to(csrc).as_posix().encode() + b"\0")
            h.update(p.read_bytes() + b"\0")
    return h.hexdigest()


def cache_root() -> Path:
    """Where just-in-time builds go: ``$ACTREC_EXT_CACHE`` or ``~/.cache/actrec/ext``."""
    env = os.environ.get("ACTREC_EXT_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "actrec" / "ext"


def disabled() -> bool:
    """True when ``ACTREC_DISABLE_EXT`` is set to a true value (1, true, yes)."""
    return os.environ.get("ACTREC_DISABLE_EXT", "").strip().lower() in {"1", "true", "yes", "on"}


def cuda_wanted() -> tuple[bool, str]:
    """Whether to compile the CUDA sources: torch has CUDA and nvcc is found, unless
    ``ACTREC_CUDA=0/1`` says otherwise. Returns (wanted, why)."""
    import torch
    from torch.utils import cpp_extension

    env = os.environ.get("ACTREC_CUDA", "").strip()
    if env in {"0", "1"}:
        return env == "1", f"ACTREC_CUDA={env}"
    if torch.version.cuda is None:
        return False, "torch has no CUDA"
    if cpp_extension.CUDA_HOME is None and shutil.which("nvcc") is None:
        return False, "nvcc not found"
    return True, f"torch CUDA {torch.version.cuda}"


def cuda_defines() -> list[str]:
    """The -D flags that tell csrc/ddbn.cpp the CUDA sources are compiled in."""
    import torch

    return ["-DACTREC_WITH_CUDA", f"-DACTREC_CUDA_VERSION={torch.version.cuda}"]


def _build_info(mod: ModuleType) -> dict[str, Any]:
    try:
        return dict(mod.build_info())
    except Exception:  # an extension from an older source tree
        return {}


BUILD_RECORD = "_C_build.json"  # written by setup.py beside actrec._C: {"source_hash": ...}


def _prebuilt_is_stale() -> str | None:
    """Why an installed actrec._C must not be used in this checkout (None: it may be).

    Decided without importing it: an import would register the ops, and a second library
    (the just-in-time build) could then no longer register them.
    """
    import importlib.util
    import json

    try:
        spec = importlib.util.find_spec("actrec._C")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.origin:
        return "no prebuilt actrec._C"
    if not source_files():
        return None  # an installed package without sources: nothing to compare with
    record = Path(spec.origin).parent / BUILD_RECORD
    try:
        built = json.loads(record.read_text()).get("source_hash")
    except (OSError, ValueError):
        return f"prebuilt actrec._C has no build record {record.name}"
    if built != source_hash():
        return "prebuilt actrec._C is older than csrc/"
    return None


def _import_prebuilt() -> tuple[ModuleType | None, str]:
    stale = _prebuilt_is_stale()
    if stale:
        return None, stale
    try:
        from actrec import _C  # type: ignore[attr-defined]
    except ImportError as e:  # e.g. built against another torch
        return None, f"prebuilt actrec._C does not import ({str(e).splitlines()[0][:160]})"
    return _C, "prebuilt actrec._C"


def _jit(cuda: bool) -> tuple[ModuleType | None, str]:
    import torch
    from torch.utils import cpp_extension

    root = repo_root()
    sources = source_files(root, cuda=cuda)
    if not sources:
        return None, f"no prebuilt actrec._C and no C++ sources under {root / 'csrc'}"
    cxx = os.environ.get("CXX", "c++")
    if shutil.which(cxx) is None:
        return None, f"no prebuilt actrec._C and no C++ compiler ({cxx!r} not on PATH)"
    if not cpp_extension.is_ninja_available():
        return None, "no prebuilt actrec._C and ninja is not installed (pip install ninja)"
    cflags = CXX_FLAGS + [f"-DACTREC_SOURCE_HASH={source_hash(root)}"]
    cflags += cuda_defines() if cuda else []
    # A CUDA build is only valid for the GPU architectures and toolkit it was compiled for.
    target = ([os.environ.get("TORCH_CUDA_ARCH_LIST", ""), str(cpp_extension.CUDA_HOME),
               *(str(torch.cuda.get_device_capability(i))
                 for i in range(torch.cuda.device_count()))] if cuda else [])
    # The checkout's path is part of the key: the build files name their sources by path, so two
    # checkouts sharing one folder would rebuild each other's extension on every load.
    key = hashlib.sha256(
        "\0".join([str(root.resolve()), source_hash(root),
                   torch.__version__, sys.version, str(cuda), cxx, *cflags,
                   *NVCC_FLAGS, *LD_FLAGS, *target]).encode()
    ).hexdigest()[:16]
    build_dir = cache_root() / key
    built = any(build_dir.glob("*.so"))
    if not built:
        print(f"actrec: compiling the C++{'/CUDA' if cuda else ''} extension once into {build_dir} "
              "(a minute or two)...", file=sys.stderr, flush=True)
    options = dict(
        name=f"actrec_C_{key}",
        sources=[str(s) for s in sources],
        extra_cflags=cflags,
        extra_cuda_cflags=NVCC_FLAGS + (cuda_defines() if cuda else []),
        extra_ldflags=LD_FLAGS,
        build_directory=str(build_dir.absolute()),  # the build child runs in another folder
        with_cuda=cuda,
        verbose=False,
    )
    # An OS lock that ends with its holder (torch's own baton outlives a killed build and then
    # blocks every later load); the compiling runs in a child whose compilers end with us.
    from contextlib import ExitStack

    from actrec.ops._build_lock import build_lock

    with ExitStack() as stack:
        try:
            lock = stack.enter_context(build_lock(build_dir))
        except OSError as e:  # e.g. a read-only cache folder
            return None, f"cannot lock the build folder {build_dir} ({e.strerror or e})"
        if not any(build_dir.glob("*.so")):  # (another process may have built it meanwhile)
            ok, why = lock.run_guarded("torch.utils.cpp_extension:load", options)
            if not ok:
                return None, f"just-in-time build in {build_dir} failed: {why}"
        try:
            mod = cpp_extension.load(**options)  # up to date now: ninja has nothing to do
        except Exception as e:  # compiler errors arrive as RuntimeError with the build log
            tail = " | ".join(str(e).strip().splitlines()[-3:])[:400]
            return None, f"just-in-time build in {build_dir} failed: {tail}"
    return mod, f"{'cached' if built else 'just-in-time'} build in {build_dir}"


def _find() -> tuple[ModuleType | None, str]:
    mod, why = _import_prebuilt()
    if mod is not None:
        return mod, why
    cuda, _ = cuda_wanted()
    jit, jwhy = _jit(cuda)
    if jit is None:
        return None, f"{why}; {jwhy}"
    return jit, jwhy


def load() -> ModuleType | None:
    """The loaded extension (its ops then live under ``torch.ops.actrec``), or None when the
    reference must be used: disabled by ``ACTREC_DISABLE_EXT``, or no build was possible (one
    warning, with the reason; see :func:`status`)."""
    global _module, _reason, _tried
    if disabled():
        return None
    with _lock:
        if not _tried:
            _tried = True
            _module, _reason = _find()
            if _module is None:
                warnings.warn(f"actrec: using the pure-PyTorch DDBN reference: {_reason}",
                              RuntimeWarning, stacklevel=2)
        return _module


def status(*, build: bool = True) -> ExtStatus:
    """Which implementation is active and why. With ``build=False`` nothing is loaded or
    compiled (the answer is then "not loaded yet" until something has used the ops)."""
    if disabled():
        return ExtStatus(False, "reference", "ACTREC_DISABLE_EXT is set")
    mod = load() if build else _module
    if mod is None:
        return ExtStatus(False, "reference", _reason)
    info = _build_info(mod)
    backend = "cpu+cuda" if info.get("cuda") else "cpu"
    return ExtStatus(True, backend, _reason, info)
