"""The pure core imports no adapter and no I/O library (architecture.md)."""

import ast
from pathlib import Path

import pytest

SIDECAR = Path(__file__).resolve().parents[2] / "sidecar"
PURE = [
    "model.py",
    "desired.py",
    "plan.py",
    "pipeline.py",
    "validate.py",
    "portmap.py",
    "statefile.py",
    "runtime_state.py",
    "render/haproxy.py",
    "catalog/parse.py",
]
FORBIDDEN = {
    "consul",
    "subprocess",
    "socket",
    "psutil",
    "watchdog",
    "requests",
    "time",
    "sidecar.apply",
    "sidecar.catalog.client",
    "sidecar.catalog.watch",
    "sidecar.catalog.watcher",
    "sidecar.status",
    "sidecar.daemon",
    "sidecar.cli",
    "os",
    "random",
    "threading",
}


def imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("module", PURE)
def test_pure_modules_import_no_adapter(module: str) -> None:
    bad = {
        name
        for name in imports(SIDECAR / module)
        if any(name == f or name.startswith(f + ".") for f in FORBIDDEN)
    }
    assert not bad, f"{module} imports {bad}"


def test_only_the_client_imports_consul() -> None:
    users = [
        p.relative_to(SIDECAR)
        for p in SIDECAR.rglob("*.py")
        if any(n == "consul" or n.startswith("consul.") for n in imports(p))
    ]
    assert [str(u) for u in users] == ["catalog/client.py"]
