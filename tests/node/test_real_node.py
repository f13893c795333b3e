"""The local node runs pods for real: containerd + runc + CNI bridge, kubelet, kube-proxy, CoreDNS.

A probe image (a static Go program, imported into containerd) reports from inside its container
what our workloads rely on: the uid the pod asked for, a read-only root, a PVC from the default
StorageClass, cluster DNS, the `kubernetes` Service with a projected service-account token, and a
Service ClusterIP in front of a readiness-gated endpoint. Stopping the node leaves nothing behind.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from tests.support.cluster import Kube
from tests.support.polling import eventually
from tests.support.realnode import PROBE_IMAGE, answering_json, clean_node_cluster, describe_all

from kubetune.devcluster.node import LocalNode

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

NAMESPACE = "probe"


@pytest.fixture(scope="module")
def node_cluster() -> Iterator[tuple[Kube, LocalNode]]:
    with clean_node_cluster("kubetune-node-", NAMESPACE) as cluster:
        yield cluster


def probe_manifests() -> list[dict[str, Any]]:
    labels = {"app": "probe"}
    return [
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": "probe-data"},
            "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "1Gi"}}},
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "probe"},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1000},
                        "containers": [
                            {
                                "name": "probe",
                                "image": PROBE_IMAGE,
                                "imagePullPolicy": "Never",
                                "env": [{"name": "PROBE_VOLUME", "value": "/data"}],
                                "ports": [{"containerPort": 8080, "name": "http"}],
                                "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}},
                                "securityContext": {
                                    "readOnlyRootFilesystem": True,
                                    "allowPrivilegeEscalation": False,
                                    "capabilities": {"drop": ["ALL"]},
                                },
                                "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                            }
                        ],
                        "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "probe-data"}}],
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "probe"},
            "spec": {"selector": labels, "ports": [{"port": 80, "targetPort": "http"}]},
        },
    ]


def ready_pod(kube: Kube) -> dict[str, Any] | None:
    pods = yaml.safe_load(
        kube.kubectl("get", "pods", "-n", NAMESPACE, "-l", "app=probe", "-o", "yaml").stdout
    )
    for pod in pods["items"]:
        conditions = {c["type"]: c["status"] for c in pod.get("status", {}).get("conditions", [])}
        if conditions.get("Ready") == "True":
            return dict(pod)
    return None


def test_a_pod_runs_with_its_user_volume_dns_token_and_service(node_cluster: tuple[Kube, LocalNode]) -> None:
    kube, node = node_cluster
    kube.kubectl("apply", "-n", NAMESPACE, "-f", "-", input=yaml.safe_dump_all(probe_manifests()))
    try:
        pod = eventually(lambda: ready_pod(kube), timeout=120, message="probe pod Ready")
    except AssertionError:
        print(describe_all(kube, NAMESPACE))
        raise
    assert pod["spec"]["nodeName"] == node.layout.name
    assert pod["status"]["podIP"].startswith("10.88.0.")
    cluster_ip = kube.get("service", "probe", NAMESPACE)["spec"]["clusterIP"]

    # Through the Service from the host: kube-proxy's rules lead to the ready endpoint (once it has
    # seen the EndpointSlice, a moment after the pod turned Ready).
    url = f"http://{cluster_ip}/report?resolve=probe.{NAMESPACE}.svc.cluster.local"
    report = eventually(lambda: answering_json(url), timeout=60, message="the Service answers")
    assert report["uid"] == 1000
    assert report["gid"] == 1000
    assert report["resolved"] == [cluster_ip], report
    assert str(report["apiVersion"]).startswith('200 {\n  "major": "1"'), report
    assert report["volumeError"] == "<nil>", report
    assert report["rootWritable"] is False

    # The claim was bound by the local provisioner to a directory on this machine.
    claim = kube.get("pvc", "probe-data", NAMESPACE)
    assert claim["status"]["phase"] == "Bound"
    assert claim["spec"]["storageClassName"] == "kubetune-local"
    written = list(node.layout.volumes_root.glob(f"{claim['spec']['volumeName']}/written-by-*"))
    assert [path.read_text() for path in written] == ["ok\n"]

    # The API server reaches the kubelet (logs) by the node's InternalIP with a verified certificate.
    logs = kube.kubectl("logs", "-n", NAMESPACE, pod["metadata"]["name"], check=False)
    assert logs.returncode == 0, logs.stderr


def test_an_image_that_is_not_there_reports_the_kubelets_reason(node_cluster: tuple[Kube, LocalNode]) -> None:
    kube, _ = node_cluster
    kube.kubectl(
        "run", "missing", "-n", NAMESPACE, "--image=localhost/kubetune/missing:0", "--image-pull-policy=Never"
    )

    def waiting_reason() -> str | None:
        status = kube.get("pod", "missing", NAMESPACE).get("status", {})
        for container in status.get("containerStatuses", []):
            reason = (container.get("state", {}).get("waiting") or {}).get("reason")
            if reason:
                return str(reason)
        return None

    eventually(lambda: waiting_reason() == "ErrImageNeverPull", timeout=60, message="ErrImageNeverPull")
