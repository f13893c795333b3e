"""A control plane with the real local node beside it, as tests use it (one per machine at a time)."""

from __future__ import annotations

import json
import subprocess
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.cluster import CRDS, Kube, install_crds

from kubetune.devcluster.controlplane import ControlPlane
from kubetune.devcluster.node import LocalNode, binary_image_archive, build_go_binary, leftovers
from kubetune.devcluster.nodeconfig import NodeLayout

PROBE_IMAGE = "localhost/kubetune/nodeprobe:test"
PROBE_SOURCE = Path(__file__).resolve().parent / "nodeprobe" / "probe.go"


def probe_archive(workdir: Path) -> Path:
    binary = build_go_binary(PROBE_SOURCE, workdir / "probe")
    archive = workdir / "nodeprobe.oci.tar"
    archive.write_bytes(binary_image_archive(binary.read_bytes(), PROBE_IMAGE, "probe", user="1000:1000"))
    return archive


@contextmanager
def real_node_cluster(
    workdir: Path, images: Iterable[Path] = (), *, network_policies: bool = False
) -> Iterator[tuple[Kube, LocalNode]]:
    """Control plane (with controllers) bound to the node's bridge, the node Ready, CRDs installed;
    with `network_policies`, NetworkPolicies enforced (LocalNode.network_policies)."""
    layout = NodeLayout()
    LocalNode.prepare_network(layout)
    plane = ControlPlane(workdir=workdir, with_controllers=True, node_ip=layout.node_ip)
    node = LocalNode(plane, layout, network_policies=network_policies)
    try:
        plane.start()
        node.start(images=[probe_archive(workdir), *images])
        kube = Kube(plane)
        install_crds(kube, sorted(CRDS.glob("*.yaml")))
        yield kube, node
    finally:
        node.stop()
        plane.stop()  # logs of a failure were printed by the test (describe, Events, pod logs)


def describe_all(kube: Kube, namespace: str) -> str:
    """What a failing real-node test prints: pods described, Events, and every container's log."""
    sections = []
    for args in (
        ("describe", "pods", "-n", namespace),
        ("get", "events", "-n", namespace, "--sort-by=.lastTimestamp"),
    ):
        sections.append(kube.kubectl(*args, check=False).stdout)
    pods = json.loads(kube.kubectl("get", "pods", "-n", namespace, "-o", "json", check=False).stdout or "{}")
    for pod in pods.get("items", []):
        name = pod["metadata"]["name"]
        proc = kube.kubectl("logs", "-n", namespace, name, "--all-containers", "--tail=80", check=False)
        sections.append(f"--- logs {name}\n{proc.stdout}{proc.stderr}")
    return "\n".join(sections)


def curl_json(url: str, timeout: float = 10.0) -> dict[str, object]:
    out = subprocess.run(
        ["curl", "-sf", "--max-time", str(timeout), url], capture_output=True, text=True, check=True
    ).stdout
    result: dict[str, object] = json.loads(out)
    return result


def answering_json(url: str) -> dict[str, object] | None:
    """`curl_json`, or None while nothing answers there yet (for `eventually`)."""
    try:
        return curl_json(url)
    except subprocess.CalledProcessError:
        return None


def answers(url: str) -> bool:
    """Whether `url` answers with a 2xx status now."""
    return (
        subprocess.run(["curl", "-sf", "--max-time", "5", url], capture_output=True, check=False).returncode
        == 0
    )


@contextmanager
def clean_node_cluster(
    prefix: str, namespace: str, *, network_policies: bool = False
) -> Iterator[tuple[Kube, LocalNode]]:
    """`real_node_cluster` with a namespace made; afterwards nothing of the node is left on the machine."""
    with real_node_cluster(Path(tempfile.mkdtemp(prefix=prefix)), network_policies=network_policies) as (
        kube,
        node,
    ):
        kube.kubectl("create", "namespace", namespace)
        yield kube, node
    assert leftovers(NodeLayout()) == {
        "processes": [],
        "mounts": [],
        "bridge": False,
        "veths": [],
        "kube_chains": [],
        "cni_chains": [],
        "ipsets": [],
    }
