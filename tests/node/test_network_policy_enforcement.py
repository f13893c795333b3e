"""Our NetworkPolicies enforced on the real node (kube-router's policy controller beside the bridge CNI).

The policies are the ones the operator renders (builders), applied to probe pods that wear the labels
of a ModelDeployment's vLLM and router pods and of a FineTuneJob's training gang. Each probe reports
whether it can open a TCP connection to another pod: before the policies anyone reaches anyone;
after, only the router reaches vLLM's port (directly and through its Service) and only gang members
reach the rendezvous port.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
from tests.builders.test_finetunejob_builders import ftj
from tests.serving.objects import model_deployment
from tests.support.cluster import Kube
from tests.support.polling import eventually
from tests.support.realnode import PROBE_IMAGE, clean_node_cluster, describe_all

from kubetune.builders import modeldeployment as md_builders
from kubetune.builders import router as router_builders
from kubetune.builders.finetunejob import ROLE_TRAIN, build_children
from kubetune.builders.finetunejob import selector_labels as gang_labels
from kubetune.builders.networkpolicy import Peers, build_vllm_network_policy
from kubetune.builders.training_pod import MASTER_PORT
from kubetune.builders.vllm import VLLM_PORT
from kubetune.devcluster.node import LocalNode

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

NS = "netpol"
CONTROL_PORT = 8080  # the probe's own HTTP port, where this machine asks it to connect elsewhere


@pytest.fixture(scope="module")
def policed() -> Iterator[tuple[Kube, LocalNode]]:
    with clean_node_cluster("kubetune-netpol-", NS, network_policies=True) as cluster:
        yield cluster


def _probe(name: str, labels: dict[str, str], listen: tuple[int, ...] = ()) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, "labels": labels},
        "spec": {
            "automountServiceAccountToken": False,
            "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1000},
            "containers": [
                {
                    "name": "probe",
                    "image": PROBE_IMAGE,
                    "imagePullPolicy": "Never",
                    "env": [{"name": "PROBE_LISTEN", "value": ",".join(str(p) for p in listen)}],
                    "readinessProbe": {"httpGet": {"path": "/healthz", "port": CONTROL_PORT}},
                    "securityContext": {
                        "readOnlyRootFilesystem": True,
                        "allowPrivilegeEscalation": False,
                        "capabilities": {"drop": ["ALL"]},
                    },
                }
            ],
        },
    }


def _without_owner(manifest: dict[str, Any]) -> dict[str, Any]:
    # The owners are not created here: the garbage collector would delete an orphan at once.
    manifest["metadata"].pop("ownerReferences", None)
    manifest["metadata"]["namespace"] = NS
    return manifest


def _policies() -> list[dict[str, Any]]:
    mdep = model_deployment([{"name": "a", "model": {"uri": "pvc://m/b"}, "weight": 100}], name="chat")
    mdep["metadata"]["namespace"] = NS
    serving = build_vllm_network_policy(
        mdep,
        router_role=router_builders.ROLE_ROUTER,
        serving_role=md_builders.ROLE_SERVING,
        port=VLLM_PORT,
        peers=Peers(operator_namespace="kubetune-system", monitoring_namespace="monitoring"),
    )
    gang = build_children(ftj("tune"), restart=0).network_policy
    return [_without_owner(serving), _without_owner(gang)]


def _pods() -> list[dict[str, Any]]:
    return [
        _probe("vllm", md_builders.selector_labels("chat", "a"), listen=(VLLM_PORT,)),
        _probe("router", router_builders.selector_labels("chat")),
        _probe("rank-0", gang_labels("tune", ROLE_TRAIN), listen=(MASTER_PORT,)),
        _probe("rank-1", gang_labels("tune", ROLE_TRAIN)),
        _probe("stranger", {"app": "stranger"}),
    ]


def _vllm_service() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "chat-a", "namespace": NS},
        "spec": {
            "selector": md_builders.selector_labels("chat", "a"),
            "ports": [{"port": VLLM_PORT, "targetPort": VLLM_PORT, "protocol": "TCP"}],
        },
    }


def _apply(kube: Kube, documents: list[dict[str, Any]]) -> None:
    documents_list = {"apiVersion": "v1", "kind": "List", "items": documents}
    kube.kubectl("apply", "-f", "-", input=json.dumps(documents_list))


def _ips(kube: Kube) -> dict[str, str]:
    pods = json.loads(kube.kubectl("get", "pods", "-n", NS, "-o", "json").stdout)["items"]
    ready = {
        p["metadata"]["name"]: p["status"]["podIP"]
        for p in pods
        if any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))
    }
    return ready


def _connects(source_ip: str, address: str) -> bool:
    """Whether the probe at `source_ip` opens a TCP connection to `address` (3 s timeout)."""
    out = subprocess.run(
        ["curl", "-sf", "--max-time", "10", f"http://{source_ip}:{CONTROL_PORT}/connect?addr={address}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    connected: bool = json.loads(out)["connected"]
    return connected


def test_only_the_router_reaches_vllm_and_only_the_gang_reaches_rendezvous(
    policed: tuple[Kube, LocalNode],
) -> None:
    kube, _ = policed
    pods = _pods()
    try:
        _apply(kube, [*pods, _vllm_service()])
        eventually(lambda: len(_ips(kube)) == len(pods), timeout=180, message="probe pods Ready")
        ip = _ips(kube)
        service_ip = kube.kubectl(
            "get", "service", "chat-a", "-n", NS, "-o", "jsonpath={.spec.clusterIP}"
        ).stdout.strip()
        vllm, vllm_service = f"{ip['vllm']}:{VLLM_PORT}", f"{service_ip}:{VLLM_PORT}"
        rendezvous = f"{ip['rank-0']}:{MASTER_PORT}"
        # (source, destination) -> reachable once our policies are enforced
        expected = {
            ("router", vllm): True,
            ("router", vllm_service): True,
            ("stranger", vllm): False,
            ("stranger", vllm_service): False,
            ("rank-1", vllm): False,
            ("rank-1", rendezvous): True,
            ("stranger", rendezvous): False,
            ("vllm", rendezvous): False,
            ("router", rendezvous): False,
        }

        def observed() -> dict[tuple[str, str], bool]:
            return {(source, dest): _connects(ip[source], dest) for source, dest in expected}

        # Without policies the bridge lets everyone through: what the policies change is what is tested.
        assert all(observed().values()), observed()
        _apply(kube, _policies())
        eventually(lambda: observed() == expected, timeout=60, interval=1, message="policies enforced")
        # The controller keeps enforcing on its periodic resync, not just once.
        assert observed() == expected
    except BaseException:
        print(describe_all(kube, NS))
        raise
