"""Render the chart with the Go-built helm: the real template engine, never a re-implementation."""

from __future__ import annotations

import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from kubetune.devcluster.controlplane import find_binary

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "kubetune"
VALUES = Path(__file__).resolve().parent / "values"
KUBE_VERSION = "1.34.0"  # a go-installed helm otherwise assumes Kubernetes 1.20
RELEASE = "kt"
NAMESPACE = "kubetune-system"


@dataclass(frozen=True)
class Rendered:
    objects: list[dict[str, Any]]
    text: str

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]

    def one(self, kind: str) -> dict[str, Any]:
        found = self.of_kind(kind)
        assert len(found) == 1, f"expected one {kind}, got {[o['metadata']['name'] for o in found]}"
        return found[0]

    def kinds(self) -> set[str]:
        return {o["kind"] for o in self.objects}


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(find_binary("helm")), *args], capture_output=True, text=True, timeout=120)


def template_args(
    values: Iterable[str] = (),
    sets: Iterable[str] = (),
    *,
    include_crds: bool = False,
    namespace: str = NAMESPACE,
) -> list[str]:
    args = ["template", RELEASE, str(CHART), "--namespace", namespace, "--kube-version", KUBE_VERSION]
    if include_crds:
        args.append("--include-crds")
    for name in values:
        args += ["--values", str(VALUES / name)]
    for assignment in sets:
        args += ["--set", assignment]
    return args


def render(
    values: Iterable[str] = (),
    sets: Iterable[str] = (),
    *,
    include_crds: bool = False,
    namespace: str = NAMESPACE,
) -> Rendered:
    proc = helm(*template_args(values, sets, include_crds=include_crds, namespace=namespace))
    assert proc.returncode == 0, f"helm template failed:\n{proc.stderr}"
    objects = [doc for doc in yaml.safe_load_all(proc.stdout) if doc]
    return Rendered(objects=objects, text=proc.stdout)
