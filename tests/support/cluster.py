"""The real control plane as tests see it: kubectl, CRD installation, start-up."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from kubetune.devcluster.controlplane import ControlPlane, run_kubectl

REPO = Path(__file__).resolve().parents[2]
CRDS = REPO / "crds"


@dataclass
class Kube:
    """The running control plane, as tests see it."""

    plane: ControlPlane

    @property
    def kubeconfig(self) -> Path:
        return self.plane.kubeconfig

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, kubeconfig: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        proc = run_kubectl(kubeconfig or self.kubeconfig, *args, input=input)
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
        return proc

    def apply(self, manifest: dict[str, Any] | str, namespace: str | None = None) -> None:
        text = manifest if isinstance(manifest, str) else yaml.safe_dump(manifest)
        args = ["apply", "--server-side", "--field-manager=test", "-f", "-"]
        if namespace:
            args += ["-n", namespace]
        self.kubectl(*args, input=text)

    def get(self, kind: str, name: str, namespace: str) -> dict[str, Any]:
        return dict(json.loads(self.kubectl("get", kind, name, "-n", namespace, "-o", "json").stdout))


def install_crds(kube: Kube, paths: list[Path]) -> None:
    for path in paths:
        kube.kubectl("apply", "--server-side", "--field-manager=kubetune-crds", "-f", str(path))
    for path in paths:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "CustomResourceDefinition":
                kube.kubectl(
                    "wait", "--for=condition=Established", "--timeout=60s", f"crd/{doc['metadata']['name']}"
                )


def start_plane(workdir: Path, *, with_controllers: bool) -> Kube:
    plane = ControlPlane(workdir=workdir, with_controllers=with_controllers)
    try:
        plane.start()
        kube = Kube(plane)
        install_crds(kube, sorted(CRDS.glob("*.yaml")))
    except BaseException:
        plane.stop()
        raise
    return kube
