"""End to end on the simulated GPU cluster: real scheduler, kwok GPU nodes, the operator in-process.

examples/quickstart.yaml must go from a FineTuneJob to a rolled-out ModelDeployment, and a job
asking for more GPUs than the cluster has must wait with a clear condition.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.support.cluster import Kube, start_plane
from tests.support.operator import running_operator
from tests.support.polling import eventually

from kubetune.devcluster.kwok import KwokController, dev_volume, gpu_nodes

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
NAMESPACE = "default"


@pytest.fixture(scope="module")
def simulated() -> Iterator[Kube]:
    """A second control plane with kwok managing 2 fake nodes x 8 GPUs (so other tests keep no nodes)."""
    workdir = Path(tempfile.mkdtemp(prefix="kubetune-e2e-"))
    kube = start_plane(workdir, with_controllers=True)
    kwok = KwokController(kubeconfig=kube.kubeconfig, workdir=workdir / "kwok")
    try:
        kwok.start()
        kube.kubectl("apply", "-f", "-", input=gpu_nodes())
        kube.kubectl("apply", "-f", "-", input=dev_volume())
        yield kube
    finally:
        kwok.stop()
        kube.plane.stop()


def phase(kube: Kube, kind: str, name: str) -> str | None:
    status: dict[str, Any] = kube.get(kind, name, NAMESPACE).get("status") or {}
    return status.get("phase")


def condition(kube: Kube, kind: str, name: str, type_: str) -> dict[str, Any] | None:
    status = kube.get(kind, name, NAMESPACE).get("status") or {}
    return next((c for c in status.get("conditions", []) if c["type"] == type_), None)


def test_quickstart_finetunes_on_gpu_nodes_and_rolls_out(simulated: Kube) -> None:
    kube = simulated
    with running_operator(kube, NAMESPACE):
        kube.kubectl("apply", "-n", NAMESPACE, "-f", str(REPO / "examples" / "quickstart.yaml"))
        eventually(
            lambda: phase(kube, "finetunejob", "quickstart") == "Succeeded",
            timeout=180,
            message="quickstart FineTuneJob Succeeded",
        )
        pods = yaml.safe_load(
            kube.kubectl(
                "get", "pods", "-n", NAMESPACE, "-l", "kubetune.io/job-name=quickstart", "-o", "yaml"
            ).stdout
        )["items"]
        nodes = {p["spec"].get("nodeName") for p in pods}
        assert nodes <= {"gpu-node-0", "gpu-node-1"}, nodes
        assert all(p["status"]["phase"] == "Succeeded" for p in pods)
        train = [p for p in pods if p["metadata"]["labels"].get("kubetune.io/role") == "train"]
        assert train, "no training pod ran"
        limits = train[0]["spec"]["containers"][0]["resources"]["limits"]
        assert limits["nvidia.com/gpu"] in ("1", 1)

        model_ready = eventually(
            lambda: (
                (c := condition(kube, "modeldeployment", "quickstart", "ModelReady"))
                and c["status"] == "True"
                and c
            ),
            timeout=120,
            message="ModelDeployment resolves the FineTuneJob's artifacts",
        )
        assert model_ready
        eventually(
            lambda: (
                kube.kubectl(
                    "get",
                    "deployments",
                    "-n",
                    NAMESPACE,
                    "-l",
                    "kubetune.io/deployment=quickstart",
                    "-o",
                    "name",
                ).stdout.count("\n")
                >= 2
            ),
            timeout=120,
            message="one vLLM Deployment per variant",
        )


def test_more_gpus_than_the_cluster_has_waits_with_a_clear_condition(simulated: Kube) -> None:
    kube = simulated
    big = {
        "apiVersion": "kubetune.io/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": "too-big"},
        "spec": {
            "baseModel": {"uri": "Qwen/Qwen2.5-72B"},
            "dataset": {"uri": "configMap://quickstart-data/train.jsonl"},
            "method": "lora",
            "resources": {"nodes": 3, "gpusPerNode": 8},
            "output": {"uri": "s3://bucket/too-big"},
        },
    }
    with running_operator(kube, NAMESPACE):
        kube.kubectl("apply", "-n", NAMESPACE, "-f", str(REPO / "examples" / "quickstart.yaml"))
        kube.apply(big, NAMESPACE)

        def unschedulable() -> dict[str, Any] | None:
            cond = condition(kube, "finetunejob", "too-big", "Running")
            return cond if cond and cond["reason"] == "Unschedulable" else None

        cond = eventually(unschedulable, timeout=180, message="Unschedulable condition on the 3x8-GPU job")
        assert "nvidia.com/gpu" in cond["message"], cond
        assert phase(kube, "finetunejob", "too-big") not in ("Succeeded", "Failed")
