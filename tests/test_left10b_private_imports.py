"""No module of extraction, export, live recognition's feeds or the store imports a private
name (``_x``) of another module: what one module needs of another is that module's public
API (``recognizer.build_feed``, ``FeatureSpec.is_head_store``, the store's layout names in
``io.features``, ``extract_claims.this_process``/``ended_here``, ...). Read from the
sources (their import statements), not from a list kept by hand."""

from __future__ import annotations

import ast
from pathlib import Path

import actrec

PACKAGE = Path(actrec.__file__).resolve().parent
MODULES = sorted(
    [*PACKAGE.glob("extract*.py"), PACKAGE / "export.py", PACKAGE / "recognizer.py",
     *PACKAGE.glob("io/*.py"), PACKAGE / "cli" / "check_cmd.py",
     PACKAGE / "cli" / "extract_cmd.py", PACKAGE / "cli" / "export_cmd.py"])


def private_imports(path: Path, base: Path = PACKAGE.parent) -> list[str]:
    """``file:line module.name`` for every ``from actrec... import _name`` in ``path`` (a
    private module itself, ``actrec.ops._ext``, is its package's own business: not looked
    at here)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("actrec"):
            found += [f"{path.relative_to(base)}:{node.lineno} {node.module}.{a.name}"
                      for a in node.names
                      if a.name.startswith("_") and not a.name.startswith("__")]
    return found


def test_the_scan_finds_a_private_import(tmp_path):
    """The scan itself: it sees a private name in a function-level, multi-name import."""
    probe = tmp_path / "probe.py"
    probe.write_text("import os\n\n\ndef f():\n"
                     "    from actrec.recognizer import FeatureSpec, _Starved\n")
    assert private_imports(probe, tmp_path) == ["probe.py:5 actrec.recognizer._Starved"]


def test_no_private_name_crosses_a_module():
    assert len(MODULES) > 15  # the globs found the modules
    found = [line for path in MODULES for line in private_imports(path)]
    assert found == []
