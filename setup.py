"""Packaging that pyproject.toml cannot express: the plugins/ -> actrec_plugins mapping, and
(see the extension issue) the optional C++/CUDA extension actrec._C built from csrc/."""

from setuptools import find_packages, setup


def packages() -> tuple[list[str], dict[str, str]]:
    """actrec from actrec/, and the top-level plugins/ folder under the name actrec_plugins."""
    pkgs = ["actrec"] + [f"actrec.{p}" for p in find_packages("actrec")]
    pkgs += ["actrec_plugins"] + [f"actrec_plugins.{p}" for p in find_packages("plugins")]
    return pkgs, {"actrec": "actrec", "actrec_plugins": "plugins"}


pkgs, dirs = packages()
setup(packages=pkgs, package_dir=dirs)
