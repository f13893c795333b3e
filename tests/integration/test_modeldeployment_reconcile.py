"""The ModelDeployment reconciler against the real API server: model resolution, children, drift, metrics.

Pods stay Pending here (no nodes): these tests assert on what the operator renders and on the status it
derives. tests/integration/test_modeldeployment_traffic.py runs pods on simulated nodes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.support.cluster import Kube
from tests.support.events import events_once, reasons
from tests.support.operator import running_operator
from tests.support.polling import eventually

pytestmark = pytest.mark.cluster

GOMOD = Path(os.environ.get("KUBETUNE_CACHE", str(Path.home() / ".cache" / "kubetune"))) / "gomod"
PROMETHEUS_OPERATOR = "github.com/prometheus-operator/prometheus-operator@v0.85.0"
POD_MONITOR_CRD = "example/prometheus-operator-crd/monitoring.coreos.com_podmonitors.yaml"
# Detect CRDs on every pass: the tests install them while the operator runs.
FAST_ENV = {"KUBETUNE_CRD_CACHE_SECONDS": "0"}


def md(name: str, variants: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "kubetune.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": {"variants": variants, **spec},
    }


def ftj(name: str) -> dict[str, Any]:
    # Suspended: the FineTuneJob reconciler (running in-process too) starts no training; the test
    # plays the trainer by writing the terminal status, which that reconciler leaves alone.
    return {
        "apiVersion": "kubetune.io/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": name},
        "spec": {
            "baseModel": {"uri": "Qwen/Qwen2.5-0.5B-Instruct"},
            "dataset": {"uri": "pvc://data/train.jsonl"},
            "output": {"uri": f"s3://models/{name}"},
            "lora": {"r": 32},
            "runPolicy": {"suspend": True},
        },
    }


def get(kube: Kube, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
    proc = kube.kubectl("get", kind, name, "-n", namespace, "-o", "json", check=False)
    return json.loads(proc.stdout) if proc.returncode == 0 else None


def names(kube: Kube, kind: str, namespace: str) -> set[str]:
    out = kube.kubectl("get", kind, "-n", namespace, "-o", "json").stdout
    return {item["metadata"]["name"] for item in json.loads(out)["items"]}


def variant_condition(obj: dict[str, Any] | None, variant: str, type_: str) -> dict[str, Any] | None:
    for item in ((obj or {}).get("status") or {}).get("variants") or []:
        if item["name"] == variant:
            return next((c for c in item.get("conditions") or [] if c["type"] == type_), None)
    return None


def variant_entry(obj: dict[str, Any] | None, variant: str) -> dict[str, Any]:
    items = ((obj or {}).get("status") or {}).get("variants") or []
    return next((item for item in items if item["name"] == variant), {})


def args_of(deployment: dict[str, Any]) -> list[str]:
    return list(deployment["spec"]["template"]["spec"]["containers"][0]["args"])


def set_job_status(kube: Kube, namespace: str, name: str, status: dict[str, Any]) -> None:
    """Write a FineTuneJob's status subresource until it sticks (its reconciler may race the first write)."""

    def written() -> bool:
        kube.kubectl(
            "patch", "finetunejob", name, "-n", namespace, "--subresource=status", "--type=merge",
            "-p", json.dumps({"status": status}),
        )  # fmt: skip
        current = get(kube, "finetunejob", name, namespace) or {}
        return (current.get("status") or {}).get("phase") == status["phase"]

    eventually(written, timeout=30, message=f"FineTuneJob {name} status written")


def test_finetunejob_ref_waits_then_rolls_out_and_a_failed_job_rolls_out_nothing(
    kube: Kube, namespace: str
) -> None:
    kube.apply(ftj("tuned"), namespace)
    kube.apply(ftj("broken"), namespace)
    kube.apply(
        md(
            "chat",
            [
                {"name": "tuned", "model": {"finetuneJobRef": {"name": "tuned"}}, "weight": 100},
                {"name": "broken", "model": {"finetuneJobRef": {"name": "broken"}}, "weight": 0},
            ],
        ),
        namespace,
    )
    with running_operator(kube, namespace):
        waiting = eventually(
            lambda: variant_condition(get(kube, "modeldeployment", "chat", namespace), "tuned", "ModelReady"),
            message="ModelReady condition",
        )
        assert (waiting["status"], waiting["reason"]) == ("False", "WaitingForFineTuneJob")
        assert not any(n.startswith("chat-vllm") for n in names(kube, "deployments", namespace))

        lineage = {"datasetDigest": "sha256:abc", "baseModelRevision": "rev1", "configHash": "cfg1"}
        set_job_status(
            kube,
            namespace,
            "tuned",
            {
                "phase": "Succeeded",
                "artifacts": {
                    "adapterUri": "s3://models/tuned/adapter",
                    "baseModelUri": "Qwen/Qwen2.5-0.5B-Instruct",
                },
                "lineage": lineage,
            },
        )
        set_job_status(
            kube,
            namespace,
            "broken",
            {
                "phase": "Failed",
                "conditions": [
                    {
                        "type": "Failed",
                        "status": "True",
                        "reason": "BackoffLimitExceeded",
                        "message": "NCCL timeout on rank 3",
                        "lastTransitionTime": "2026-01-01T00:00:00Z",
                    }
                ],
            },
        )
        deployment = eventually(
            lambda: get(kube, "deployment", "chat-vllm-tuned", namespace), message="variant Deployment"
        )
        mdep = eventually(
            lambda: (
                (m := get(kube, "modeldeployment", "chat", namespace))
                and variant_entry(m, "tuned").get("modelUri")
                and variant_condition(m, "broken", "ModelReady")["reason"] == "FineTuneJobFailed"
                and m
            ),
            message="status with the served artifact and the failed job",
        )

    args = args_of(deployment)
    assert args[args.index("--lora-modules") + 1] == "tuned=/models/adapters/tuned"
    assert args[args.index("--served-model-name") + 1] == "tuned-base"
    assert args[args.index("--max-lora-rank") + 1] == "32"
    assert deployment["metadata"]["annotations"]["kubetune.io/model-uri"] == "s3://models/tuned/adapter"
    init = deployment["spec"]["template"]["spec"]["initContainers"]
    assert [c["name"] for c in init] == ["stage-model", "stage-adapter-tuned"]

    tuned = variant_entry(mdep, "tuned")
    assert tuned["modelUri"] == "s3://models/tuned/adapter"
    assert tuned["lineage"] == {**lineage, "finetuneJob": "tuned"}
    assert tuned["endpoint"] == f"http://chat-vllm-tuned.{namespace}.svc:8000/v1"
    assert variant_condition(mdep, "tuned", "ModelReady")["status"] == "True"
    broken = variant_condition(mdep, "broken", "ModelReady")
    assert broken is not None
    assert broken["status"] == "False"
    assert "NCCL timeout on rank 3" in broken["message"]
    assert get(kube, "deployment", "chat-vllm-broken", namespace) is None, "a failed job rolls out nothing"
    assert get(kube, "service", "chat-vllm-broken", namespace) is None
    router = get(kube, "configmap", "chat-router", namespace)
    assert router is not None
    config = json.loads(router["data"]["router.json"])
    assert {v["name"]: (v["weight"], v["ready"]) for v in config["variants"]} == {
        "tuned": (100, False),  # no pod has passed the smoke test: no traffic yet
        "broken": (0, False),
    }
    events_once(kube, namespace, "chat", lambda found: "FineTuneJobFailed" in reasons(found))


def test_edits_update_in_place_and_deleted_children_come_back(kube: Kube, namespace: str) -> None:
    variants = [
        {"name": "a", "model": {"uri": "hf://Qwen/Qwen2.5-0.5B-Instruct"}, "weight": 100, "replicas": 2},
    ]
    kube.apply(md("edit", variants), namespace)
    with running_operator(kube, namespace):
        first = eventually(lambda: get(kube, "deployment", "edit-vllm-a", namespace), message="Deployment")
        assert "--max-model-len" not in args_of(first)
        eventually(lambda: get(kube, "pdb", "edit-vllm-a", namespace), message="PDB for 2 replicas")

        kube.apply(md("edit", [{**variants[0], "vllm": {"maxModelLen": 4096}}]), namespace)

        def updated() -> dict[str, Any] | None:
            current = get(kube, "deployment", "edit-vllm-a", namespace)
            if current and "--max-model-len" in args_of(current):
                return current
            return None

        second = eventually(updated, message="maxModelLen rendered")
        assert second["metadata"]["uid"] == first["metadata"]["uid"], "updated in place, not recreated"
        assert second["metadata"]["generation"] > first["metadata"]["generation"]
        args = args_of(second)
        assert args[args.index("--max-model-len") + 1] == "4096"

        kube.kubectl("delete", "deployment", "edit-vllm-a", "-n", namespace, "--wait=true")
        third = eventually(
            lambda: (
                (d := get(kube, "deployment", "edit-vllm-a", namespace))
                and d["metadata"]["uid"] != second["metadata"]["uid"]
                and d
            ),
            message="deleted Deployment recreated",
        )
        assert "--max-model-len" in args_of(third)

        # Someone scales the Deployment by hand: the next pass restores the spec's replicas.
        kube.kubectl("scale", "deployment", "edit-vllm-a", "-n", namespace, "--replicas=5")
        eventually(
            lambda: get(kube, "deployment", "edit-vllm-a", namespace)["spec"]["replicas"] == 2,
            message="replicas restored",
        )

        # A variant leaves the spec: its children go.
        kube.apply(
            md(
                "edit",
                [
                    {"name": "b", "model": {"uri": "hf://Qwen/Qwen2.5-0.5B"}, "weight": 100},
                    {**variants[0], "weight": 0},
                ],
            ),
            namespace,
        )
        eventually(lambda: get(kube, "deployment", "edit-vllm-b", namespace), message="new variant")
        kube.apply(
            md("edit", [{"name": "b", "model": {"uri": "hf://Qwen/Qwen2.5-0.5B"}, "weight": 100}]), namespace
        )
        eventually(
            lambda: (
                get(kube, "deployment", "edit-vllm-a", namespace) is None
                and get(kube, "service", "edit-vllm-a", namespace) is None
                and get(kube, "pdb", "edit-vllm-a", namespace) is None
            ),
            message="removed variant's children deleted",
        )
    mdep = get(kube, "modeldeployment", "edit", namespace)
    assert mdep is not None
    assert [v["name"] for v in mdep["status"]["variants"]] == ["b"]
    assert mdep["status"]["endpoint"] == f"http://edit-router.{namespace}.svc:8080/v1"


@pytest.fixture
def pod_monitor_crd(kube: Kube) -> Iterator[None]:
    """The Prometheus Operator's PodMonitor CRD from its pinned Go module; removed afterwards."""
    path = GOMOD / PROMETHEUS_OPERATOR / POD_MONITOR_CRD
    assert path.exists(), (
        f"{path} missing: run GOMODCACHE={GOMOD} GOFLAGS=-mod=mod go mod download {PROMETHEUS_OPERATOR}"
    )
    try:
        yield
    finally:
        kube.kubectl("delete", "-f", str(path), "--ignore-not-found", "--wait=true")


def established(kube: Kube, crd: str) -> None:
    """Wait for a CRD to serve; `kubectl wait` errors out until the CRD has any status at all."""
    eventually(
        lambda: (
            kube.kubectl(
                "wait", "--for=condition=Established", "--timeout=10s", f"crd/{crd}", check=False
            ).returncode
            == 0
        ),
        message=f"CRD {crd} Established",
    )


def install_pod_monitor_crd(kube: Kube) -> None:
    path = GOMOD / PROMETHEUS_OPERATOR / POD_MONITOR_CRD
    kube.kubectl("apply", "--server-side", "--field-manager=test", "-f", str(path))
    established(kube, "podmonitors.monitoring.coreos.com")


# Last in this module: it installs a CRD (removed again by the fixture).
def test_pod_monitor_only_when_its_crd_is_installed(
    kube: Kube, namespace: str, pod_monitor_crd: None
) -> None:
    kube.apply(
        md("mon", [{"name": "a", "model": {"uri": "hf://Qwen/Qwen2.5-0.5B"}, "weight": 100}]), namespace
    )
    # The chart's metrics.podMonitorLabels: what kube-prometheus-stack's podMonitorSelector matches.
    selected = {**FAST_ENV, "KUBETUNE_MONITOR_LABELS": '{"release": "kube-prometheus-stack"}'}
    with running_operator(kube, namespace, extra_env=selected):
        before = eventually(lambda: get(kube, "deployment", "mon-vllm-a", namespace), message="Deployment")
        annotations = before["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true", "without the CRD: scrape annotations"
        router = eventually(lambda: get(kube, "deployment", "mon-router", namespace), message="router")
        assert router["spec"]["template"]["metadata"]["annotations"]["prometheus.io/scrape"] == "true"

        install_pod_monitor_crd(kube)
        monitor = eventually(lambda: get(kube, "podmonitor", "mon-vllm", namespace), message="PodMonitor")
        router_monitor = eventually(
            lambda: get(kube, "podmonitor", "mon-router", namespace), message="router PodMonitor"
        )
        eventually(
            lambda: (
                "prometheus.io/scrape"
                not in get(kube, "deployment", "mon-vllm-a", namespace)["spec"]["template"]["metadata"][
                    "annotations"
                ]
            ),
            message="scrape annotations dropped once a PodMonitor scrapes",
        )

    for pod_monitor in (monitor, router_monitor):
        assert pod_monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    endpoint = monitor["spec"]["podMetricsEndpoints"][0]
    assert endpoint["port"] == "http"
    assert {r["targetLabel"] for r in endpoint["relabelings"]} == {"variant", "model_deployment"}
    assert monitor["spec"]["selector"]["matchLabels"] == {
        "kubetune.io/deployment": "mon",
        "kubetune.io/role": "vllm",
    }
    assert monitor["metadata"]["ownerReferences"][0]["kind"] == "ModelDeployment"
