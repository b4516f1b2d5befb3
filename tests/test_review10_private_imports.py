"""No module of actrec or of the built-in plugins imports another module's private name
(``from actrec.x import _y``): test_left10b_private_imports reads extraction, export and the
store; this reads every module, so that the rest of the package (the CLI's tables, the
reproduction's units) keeps to public names too. The compiled kernel's private modules
(``actrec.ops._ext``, the loader, and ``actrec._C``) are imported as modules, by design."""

from __future__ import annotations

from pathlib import Path

from test_left10b_private_imports import PACKAGE, private_imports

ROOT = PACKAGE.parent


def _modules() -> list[Path]:
    return sorted(p for folder in (PACKAGE, ROOT / "plugins") for p in folder.rglob("*.py"))


KERNEL_MODULES = {"actrec.ops._ext", "actrec._C"}


def test_no_module_imports_another_modules_private_name():
    modules = _modules()
    assert len(modules) > 100 and PACKAGE / "cli" / "fuse_cmd.py" in modules
    found = [line for path in modules for line in private_imports(path, ROOT)
             if line.split()[1] not in KERNEL_MODULES]
    assert found == []
