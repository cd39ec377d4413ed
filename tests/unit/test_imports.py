"""The house rules the import contract (``lint-imports``, pyproject.toml) does not cover.

import-linter checks the layers between packages and keeps I/O out of the core; this module
adds that no two modules import each other, even inside one package, that every package opens
with a docstring naming its role (architecture.md: a newcomer finds where a change belongs from
the tree alone), that only ``sidecar.consul`` imports ``http.client`` (import-linter takes no
stdlib submodule, and ``health.endpoint`` serves ``http.server``), and that no module grows past
300 lines.
"""

import ast
import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[2]
SIDECAR = ROOT / "sidecar"


def test_the_import_contract_holds() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run([str(lint)], cwd=ROOT, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout[-3000:]


def test_no_module_imports_one_that_imports_it_back() -> None:
    graph = grimp.build_graph("sidecar")
    circles = []
    for module in sorted(graph.modules):
        for imported in graph.find_modules_directly_imported_by(module):
            if module < imported and graph.chain_exists(imported=module, importer=imported):
                circles.append(f"{module} <-> {imported}")
    assert not circles, circles


def test_every_package_says_what_it_is_for() -> None:
    bare = []
    for init in sorted(SIDECAR.rglob("__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text()))
        if not doc or len(doc) < 40:
            bare.append(str(init.relative_to(ROOT)))
    assert not bare, bare


def test_no_module_over_300_lines() -> None:
    """architecture.md: a module a newcomer can read at once (the package and the dev kit)."""
    long = [
        f"{path.relative_to(ROOT)}: {n}"
        for path in sorted([*SIDECAR.rglob("*.py"), *(ROOT / "devkit").rglob("*.py")])
        if (n := len(path.read_text().splitlines())) > 300
    ]
    assert not long, long


def test_only_the_consul_package_imports_an_http_client() -> None:
    graph = grimp.build_graph("sidecar", include_external_packages=True)
    users = {
        module
        for module in graph.find_modules_that_directly_import("http")
        for detail in graph.get_import_details(importer=module, imported="http")
        if "http.client" in str(detail["line_contents"])
    }
    assert users == {"sidecar.consul.plain"}, users
