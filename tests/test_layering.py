"""The layers of the sidecar, checked on the source: ``moorage/sidecar/`` imports no front end (the composition
root ``moorage/server.py`` wires them), and only the gRPC face imports grpc."""

from __future__ import annotations

import ast
from pathlib import Path

SIDECAR = Path(__file__).resolve().parents[1] / "moorage" / "sidecar"
FRONT_ENDS = ("moorage.gateway", "moorage.dashboard", "moorage.agents", "moorage.client", "moorage.server")
GRPC_FACE = {"service.py"}


def _imports(path: Path) -> set[str]:
    """Every module a file imports, at any depth (function-level and TYPE_CHECKING imports included)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the file's package
                parts = ("moorage", *path.relative_to(SIDECAR.parent).parent.parts)
                package = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{package}.{node.module}" if node.module else package
            else:
                base = node.module or ""
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def _sources() -> list[Path]:
    files = sorted(SIDECAR.rglob("*.py"))
    assert len(files) >= 8, f"expected the sidecar's modules under {SIDECAR}"
    return files


def test_sidecar_imports_no_front_end() -> None:
    offenders = {f"{p.relative_to(SIDECAR)}: {name}" for p in _sources() for name in _imports(p)
                 if name.startswith(FRONT_ENDS)}
    assert not offenders, f"moorage/sidecar/ must not import a front end: {sorted(offenders)}"


def test_only_the_grpc_face_imports_grpc() -> None:
    offenders = {f"{p.relative_to(SIDECAR)}: {name}" for p in _sources() if p.name not in GRPC_FACE
                 for name in _imports(p) if name == "grpc" or name.startswith(("grpc.", "grpc_"))}
    assert not offenders, f"only service.py may import grpc: {sorted(offenders)}"


def test_the_checks_see_imports() -> None:
    """The scanner itself finds a front-end import and a grpc import (so the tests above can fail)."""
    service = _imports(SIDECAR / "service.py")
    assert "grpc" in service and "moorage.sidecar.core.SidecarCore" in service
    relative = _imports(SIDECAR.parent / "dashboard" / "__init__.py")
    assert "moorage.dashboard.app.create_app" in relative
    root = _imports(SIDECAR.parent / "server.py")
    assert any(name.startswith("moorage.gateway") for name in root)
    assert any(name.startswith("moorage.dashboard") for name in root)
