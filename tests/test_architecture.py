"""The import rules of docs/architecture.md, checked on the source: each package of ``moorage`` imports only the
Moorage modules its row allows. A new import across a boundary fails here first, naming the file, so the page
and the code cannot drift apart."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

PACKAGE = Path(__file__).resolve().parents[1] / "moorage"

# package -> the Moorage modules (prefixes) it may import besides its own. Keep in step with docs/architecture.md.
ALLOWED: dict[str, tuple[str, ...]] = {
    "moorage.sidecar": (),
    "moorage.agents": (
        "moorage._sdk",
        "moorage._proto",
        "moorage.connection",
        "moorage.observability.agent_telemetry",
        "moorage.observability.ops",
        "moorage.observability.tracing",
    ),
    "moorage.client": ("moorage._proto", "moorage.connection"),
    "moorage.gateway": (
        "moorage.agents",
        "moorage.listeners",
        "moorage._sdk",
        "moorage._proto",
        "moorage.connection",
        "moorage.shutdown",
        "moorage.sidecar.terms",
        "moorage.security",
        "moorage.observability.tracing",
    ),
    "moorage.dashboard": ("moorage.sidecar", "moorage.agents.protocol", "moorage.security", "moorage.listeners"),
    "moorage.security": (),
    "moorage.observability": (
        "moorage.sidecar.core",
        "moorage.sidecar.store.base",
        "moorage.sidecar.terms",
        "moorage.listeners",
    ),
}
EVERYWHERE = ("moorage.__version__",)
SHARED = (
    "moorage._sdk",
    "moorage._proto",
    "moorage.connection",
    "moorage.listeners",
    "moorage.logs",
    "moorage.shutdown",
)


def _module_of(path: Path) -> list[str]:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return parts[:-1] if parts[-1] == "__init__" else parts


def all_imports(path: Path) -> set[str]:
    """Every module a file imports, at any depth (function-level and TYPE_CHECKING imports included)."""
    names: set[str] = set()
    here = _module_of(path)
    package = here if path.name == "__init__.py" else here[:-1]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = package[: len(package) - node.level + 1]
                base = ".".join([*anchor, node.module] if node.module else anchor)
            else:
                base = node.module or ""
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def imports(path: Path) -> set[str]:
    """The Moorage modules (and names) a file imports."""
    return {n for n in all_imports(path) if n.startswith("moorage.")}


def _within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_only_what_its_row_allows(package: str) -> None:
    root = PACKAGE / package.split(".", 1)[1]
    files = sorted(root.rglob("*.py"))
    assert files, f"no sources under {root}"
    offenders = sorted(
        f"{p.relative_to(PACKAGE.parent)}: {name}"
        for p in files
        for name in imports(p)
        if not _within(name, (package, *ALLOWED[package], *EVERYWHERE))
    )
    assert not offenders, f"{package} may import only {ALLOWED[package] or 'itself'}: {offenders}"


def test_only_the_grpc_face_of_the_sidecar_imports_grpc() -> None:
    """The core, the engine and the stores know no gRPC: a second face (or a store test) needs none."""
    sources = sorted((PACKAGE / "sidecar").rglob("*.py"))
    bad = sorted(
        f"{p.relative_to(PACKAGE.parent)}: {n}"
        for p in sources
        if p.name != "service.py"
        for n in all_imports(p)
        if n == "grpc" or n.startswith(("grpc.", "grpc_"))
    )
    assert not bad, f"only moorage/sidecar/service.py may import grpc: {bad}"


def test_shared_modules_import_no_package() -> None:
    """The small shared modules sit below every package: they import none of them."""
    for name in SHARED:
        path = PACKAGE / (name.split(".", 1)[1].replace(".", "/"))
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path.with_suffix(".py")]
        bad = sorted(
            f"{f.relative_to(PACKAGE.parent)}: {i}" for f in files for i in imports(f) if not _within(i, SHARED)
        )
        assert not bad, f"{name} must stay below the packages: {bad}"


def test_the_scanner_sees_imports() -> None:
    """It resolves absolute and relative imports, so the rules above can fail."""
    assert "moorage.sidecar.core.SidecarCore" in imports(PACKAGE / "sidecar" / "service.py")
    assert "grpc" in all_imports(PACKAGE / "sidecar" / "service.py")
    assert "moorage.dashboard.app.create_app" in imports(PACKAGE / "dashboard" / "__init__.py")
    assert "moorage._sdk" in imports(PACKAGE / "agents" / "runtime.py")
    root = imports(PACKAGE / "server.py")
    assert any(n.startswith("moorage.gateway") for n in root) and any(n.startswith("moorage.dashboard") for n in root)
