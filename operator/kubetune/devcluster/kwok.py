"""Simulated GPU nodes: kwok's controller (Go-built) managing fake Node objects.

The stage files under kwok_stages/ are kwok v0.8.0's own (kustomize/stage: node
fast + heartbeat, pod general; Apache-2.0), copied so no network is needed: pods
get scheduled by the real kube-scheduler, turn Running/Ready, and Job-owned pods
complete after the delay in their `pod-complete.stage.kwok.x-k8s.io/delay`
annotation. One change: a completing `trainer` container leaves a fixed TrainerResult
as its termination message, standing in for rank 0's real report (metrics for the
eval gate), since kwok runs no containers.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from kubetune.devcluster.controlplane import find_binary

STAGES_DIR = Path(__file__).with_name("kwok_stages")
FAKE_NODE_ANNOTATION = "kwok.x-k8s.io/node"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"


def stages_config() -> str:
    docs = [path.read_text().strip() for path in sorted(STAGES_DIR.glob("*.yaml"))]
    return "\n---\n".join(docs) + "\n"


def gpu_node(
    name: str, *, gpus: int, gpu_type: str, cpu: str = "96", memory: str = "1Ti", taint: bool = False
) -> dict[str, Any]:
    """A fake GPU node; `taint` marks it `nvidia.com/gpu:NoSchedule` like GPU node pools usually are,
    so that beside a real node only pods asking for GPUs (tolerating it) land on it."""
    capacity = {"cpu": cpu, "memory": memory, "pods": "110", "nvidia.com/gpu": str(gpus)}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {FAKE_NODE_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "type": "kwok",
                GPU_PRODUCT_LABEL: gpu_type,
                "nvidia.com/gpu.count": str(gpus),
            },
        },
        "spec": {"taints": [{"key": "nvidia.com/gpu", "effect": "NoSchedule"}]} if taint else {},
        "status": {"capacity": capacity, "allocatable": capacity},
    }


def gpu_nodes(
    count: int = 2, gpus: int = 8, gpu_type: str = "NVIDIA-A100-SXM4-80GB", taint: bool = False
) -> str:
    return yaml.safe_dump_all(
        [gpu_node(f"gpu-node-{i}", gpus=gpus, gpu_type=gpu_type, taint=taint) for i in range(count)]
    )


@dataclass
class KwokController:
    kubeconfig: Path
    workdir: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> int:
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "stages.yaml"
        config.write_text(stages_config())
        log = (self.workdir / "kwok.log").open("ab")
        self.process = subprocess.Popen(
            [
                str(find_binary("kwok")),
                f"--kubeconfig={self.kubeconfig}",
                f"--config={config}",
                "--manage-all-nodes=false",
                f"--manage-nodes-with-annotation-selector={FAKE_NODE_ANNOTATION}=fake",
                "--node-ip=10.244.0.1",
                "--cidr=10.244.0.0/16",
                "--server-address=",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self.process.pid

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=15)


def dev_volume(name: str = "dev-models", size: str = "1Ti") -> str:
    """A static PV for the examples' PVCs (the simulated cluster has no provisioner)."""
    return yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": name},
            "spec": {
                "capacity": {"storage": size},
                "accessModes": ["ReadWriteMany"],
                "persistentVolumeReclaimPolicy": "Retain",
                "storageClassName": "",
                "hostPath": {"path": f"/tmp/kubetune-{name}"},
            },
        }
    )
