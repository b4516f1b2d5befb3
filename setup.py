"""Packaging that pyproject.toml cannot express: the plugins/ -> actrec_plugins mapping, and the
optional C++/CUDA extension actrec._C built from csrc/.

The extension is built only when torch is importable at build time
(``pip install --no-build-isolation -e .``): every ``csrc/*.cpp`` and ``csrc/cpu/*.cpp``, plus
``csrc/cuda/*.cu`` when torch has CUDA and nvcc is found (``ACTREC_CUDA=0/1`` overrides). A plain
``pip install -e .`` (build isolation, no torch) builds nothing; the extension is then compiled
just in time on first use (actrec/ops/_ext.py). A failed extension build warns and installs the
package without it.
"""

import importlib.util
import json
import os
import sys
from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).resolve().parent


def packages() -> tuple[list[str], dict[str, str]]:
    """actrec from actrec/, and the top-level plugins/ folder under the name actrec_plugins."""
    pkgs = ["actrec"] + [f"actrec.{p}" for p in find_packages("actrec")]
    pkgs += ["actrec_plugins"] + [f"actrec_plugins.{p}" for p in find_packages("plugins")]
    return pkgs, {"actrec": "actrec", "actrec_plugins": "plugins"}


def _ext_helpers():
    """actrec/ops/_ext.py loaded by path (it imports only the standard library at top level)."""
    spec = importlib.util.spec_from_file_location("_actrec_ext_build", ROOT / "actrec/ops/_ext.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up while it executes
    spec.loader.exec_module(mod)
    return mod


def extension() -> tuple[list, dict]:
    """(ext_modules, cmdclass) for actrec._C, or ([], {}) when torch is not importable."""
    try:
        import torch  # noqa: F401
        from torch.utils import cpp_extension
    except ImportError:
        print("actrec: torch is not importable at build time; not building actrec._C "
              "(it is compiled on first use instead)", file=sys.stderr)
        return [], {}
    helpers = _ext_helpers()
    cuda, why = helpers.cuda_wanted()
    sources = [p.relative_to(ROOT).as_posix() for p in helpers.source_files(ROOT, cuda=cuda)]
    if not sources:
        return [], {}
    macros = [("ACTREC_SOURCE_HASH", helpers.source_hash(ROOT))]
    cxx = list(helpers.CXX_FLAGS)
    nvcc = list(helpers.NVCC_FLAGS)
    if cuda:
        cxx += helpers.cuda_defines()
        nvcc += helpers.cuda_defines()
    print(f"actrec: building actrec._C ({'CPU+CUDA' if cuda else 'CPU'}: {why})", file=sys.stderr)
    kind = cpp_extension.CUDAExtension if cuda else cpp_extension.CppExtension
    ext = kind("actrec._C", sources, define_macros=macros,
               extra_compile_args={"cxx": cxx, "nvcc": nvcc} if cuda else {"cxx": cxx},
               extra_link_args=list(helpers.LD_FLAGS))

    class BuildOptional(cpp_extension.BuildExtension):
        """Builds with ninja; a failure warns instead of failing the install (JIT later)."""

        built = False

        def build_extension(self, ext):
            try:
                super().build_extension(ext)
                self.built = True
            except Exception as e:  # compiler errors surface as RuntimeError from ninja
                print(f"actrec: WARNING: building {ext.name} failed ({e}); installing without "
                      "it", file=sys.stderr)

        def run(self):
            super().run()
            if not self.built:
                return
            # Beside the library (the build folder, and the source tree for in-place and
            # editable builds): which sources it was built from, so that a checkout whose csrc/
            # has changed since compiles afresh instead of loading a stale build.
            dirs = {Path(self.get_ext_fullpath(ext.name)).parent}
            if self.inplace or getattr(self, "editable_mode", False):
                dirs.add(ROOT / "actrec")
            for d in dirs:
                if d.is_dir():
                    (d / helpers.BUILD_RECORD).write_text(
                        json.dumps({"source_hash": macros[0][1]}) + "\n")

    return [ext], {"build_ext": BuildOptional.with_options(use_ninja=True)}


pkgs, dirs = packages()
ext_modules, cmdclass = extension() if os.environ.get("ACTREC_BUILD_EXT", "1") != "0" else ([], {})
# Training presets are TOML files read at run time: installed beside actrec.presets.
setup(packages=pkgs, package_dir=dirs, ext_modules=ext_modules, cmdclass=cmdclass,
      package_data={"actrec.presets": ["*.toml"], "actrec.paper_tables": ["*.toml"]},
      include_package_data=True)
