"""The layering the house style promises, checked on the source (imports and environment reads)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "operator" / "kubetune"
PURE = ("builders", "status", "planning")
IO = ("kubetune.kube", "kubetune.reconcile", "kubetune.controller", "kubetune.handlers", "kopf", "aiohttp")
# Programs with their own entry points read their own environment; the operator reads it once.
ENV_READERS = {"settings.py", "dev.py", "serving/stage.py"}
ENV_READING_PACKAGES = ("trainer/", "router/", "devcluster/")


def modules(folder: str = "") -> list[Path]:
    return sorted((PACKAGE / folder).rglob("*.py"))


def imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


@pytest.mark.parametrize("layer", PURE)
def test_pure_layers_do_no_io(layer: str) -> None:
    offending = {
        f"{path.relative_to(PACKAGE)}: {name}"
        for path in modules(layer)
        for name in imports(path)
        if any(name == io or name.startswith(io + ".") for io in IO)
    }
    assert not offending


@pytest.mark.parametrize("program", ["trainer", "router"])
def test_programs_in_their_own_images_never_import_kopf(program: str) -> None:
    assert not {str(p) for p in modules(program) if any(n.split(".")[0] == "kopf" for n in imports(p))}


def test_only_the_settings_read_the_operator_environment() -> None:
    readers = set()
    for path in modules():
        rel = path.relative_to(PACKAGE).as_posix()
        if rel in ENV_READERS or rel.startswith(ENV_READING_PACKAGES):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv"):
                readers.add(rel)
    assert readers == set()


def test_children_are_written_only_by_the_applier() -> None:
    """Reconcilers read through the client; every write of a child goes through reconcile/apply.py."""
    writes = {"apply", "ensure", "delete", "patch_merge", "create"}
    writers = set()
    for path in modules("reconcile"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Attribute)
                and node.attr in writes
                and isinstance(node.value, ast.Name)
                and node.value.id == "client"
            ):
                writers.add(path.name)
    assert writers == {"apply.py"}
