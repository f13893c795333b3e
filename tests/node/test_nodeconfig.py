"""The real node's configuration files, as pure functions of its layout."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest

from kubetune.devcluster import nodeconfig
from kubetune.devcluster.node import binary_image_archive
from kubetune.devcluster.nodeagent import released_volume_paths
from kubetune.devcluster.nodeconfig import NodeLayout

LAYOUT = NodeLayout()


@pytest.mark.parametrize(
    ("pod_cidr", "node_ip", "prefix"),
    [("10.88.0.0/24", "10.88.0.1", 24), ("10.250.8.0/22", "10.250.8.1", 22)],
)
def test_the_node_ip_is_the_first_address_of_the_pod_subnet(pod_cidr: str, node_ip: str, prefix: int) -> None:
    layout = NodeLayout(pod_cidr=pod_cidr)
    assert (layout.node_ip, layout.prefix_length) == (node_ip, prefix)
    assert nodeconfig.cni_conflist(layout)["plugins"][0]["ipam"]["ranges"] == [
        [{"subnet": pod_cidr, "gateway": node_ip}]
    ]


@pytest.mark.parametrize(
    "line",
    [
        'sandbox_image = "localhost/kubetune/pause:3.10"',
        "restrict_oom_score_adj = true",
        "SystemdCgroup = false",
        'snapshotter = "overlayfs"',
        'address = "/run/kubetune-node/containerd.sock"',
        'conf_dir = "/var/lib/kubetune-node/net.d"',
        'root = "/var/lib/kubetune-node/containerd"',
    ],
)
def test_containerd_config_carries_what_this_machine_needs(line: str) -> None:
    assert line in nodeconfig.containerd_config(LAYOUT)


def test_every_node_process_names_a_path_of_the_node() -> None:
    """Crash recovery finds stray processes by these paths: configs must live under run_root."""
    assert LAYOUT.config_dir.is_relative_to(LAYOUT.run_root)
    assert LAYOUT.containerd_socket.is_relative_to(LAYOUT.run_root)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("cgroupDriver", "cgroupfs"),
        ("failCgroupV1", False),
        ("failSwapOn", False),
        ("containerRuntimeEndpoint", "unix:///run/kubetune-node/containerd.sock"),
        ("clusterDNS", ["10.88.0.1"]),
        ("address", "10.88.0.1"),
        ("readOnlyPort", 0),
        ("imageGCHighThresholdPercent", 100),
    ],
)
def test_kubelet_config(key: str, value: Any) -> None:
    config = nodeconfig.kubelet_config(LAYOUT, Path("/ca"), Path("/crt"), Path("/key"))
    assert config[key] == value
    assert config["authentication"]["anonymous"] == {"enabled": False}


def test_kube_proxy_leaves_conntrack_limits_alone_and_knows_the_pod_subnet() -> None:
    config = nodeconfig.kube_proxy_config(LAYOUT, Path("/kc"))
    assert config["conntrack"] == {"maxPerCore": 0, "min": 0}
    assert (config["mode"], config["clusterCIDR"]) == ("iptables", "10.88.0.0/24")


def test_corefile_binds_the_bridge_and_serves_the_cluster_domain() -> None:
    text = nodeconfig.corefile(LAYOUT, Path("/kc"))
    assert "bind 10.88.0.1" in text
    assert "kubernetes cluster.local in-addr.arpa ip6.arpa" in text
    assert "kubeconfig /kc kubetune" in text


def claim(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "metadata": {"name": "models", "namespace": "default", "uid": "u-1"},
        "spec": {
            "storageClassName": "kubetune-local",
            "accessModes": ["ReadWriteMany"],
            "resources": {"requests": {"storage": "5Gi"}},
        },
        "status": {"phase": "Pending"},
    }
    for key, value in overrides.items():
        base[key] = {**base[key], **value}
    return base


@pytest.mark.parametrize(
    ("pending", "expected_name"),
    [
        (claim(), "pvc-u-1"),
        (claim(status={"phase": "Bound"}), None),
        (claim(spec={"volumeName": "pv-x"}), None),
        (claim(spec={"storageClassName": "gp3"}), None),
        (claim(spec={"storageClassName": None}), None),
    ],
)
def test_a_pending_claim_of_the_class_gets_a_bound_hostpath_volume(
    pending: dict[str, Any], expected_name: str | None
) -> None:
    volume = nodeconfig.persistent_volume_for(pending, LAYOUT)
    if expected_name is None:
        assert volume is None
        return
    assert volume is not None
    assert volume["metadata"]["name"] == expected_name
    assert volume["spec"]["claimRef"]["uid"] == "u-1"
    assert volume["spec"]["accessModes"] == ["ReadWriteMany"]
    assert volume["spec"]["capacity"] == {"storage": "5Gi"}
    assert volume["spec"]["hostPath"]["path"] == "/var/lib/kubetune-node/volumes/pvc-u-1"


def test_only_released_volumes_of_our_provisioner_are_reclaimed() -> None:
    def pv(name: str, phase: str, provisioner: str = nodeconfig.PROVISIONER) -> dict[str, Any]:
        return {
            "metadata": {"name": name, "annotations": {"pv.kubernetes.io/provisioned-by": provisioner}},
            "spec": {"hostPath": {"path": f"/v/{name}"}},
            "status": {"phase": phase},
        }

    volumes = [
        pv("a", "Released"),
        pv("b", "Bound"),
        pv("c", "Released", "ebs.csi.aws.com"),
        pv("d", "Failed"),
    ]
    assert released_volume_paths(volumes) == {"a": "/v/a", "d": "/v/d"}


def test_binary_image_archive_is_an_oci_layout_naming_the_image() -> None:
    with tarfile.open(fileobj=io.BytesIO(binary_image_archive(b"\x7fELF", "localhost/x:1", "x"))) as archive:

        def read(name: str) -> bytes:
            member = archive.extractfile(name)
            assert member is not None
            return member.read()

        def blob(digest: str) -> bytes:
            return read(f"blobs/sha256/{digest.removeprefix('sha256:')}")

        assert "oci-layout" in archive.getnames()
        manifest_ref = json.loads(read("index.json"))["manifests"][0]
        assert manifest_ref["annotations"]["io.containerd.image.name"] == "localhost/x:1"
        manifest_bytes = blob(manifest_ref["digest"])
        assert "sha256:" + hashlib.sha256(manifest_bytes).hexdigest() == manifest_ref["digest"]
        manifest = json.loads(manifest_bytes)
        assert json.loads(blob(manifest["config"]["digest"]))["config"]["Entrypoint"] == ["/x"]
        with tarfile.open(fileobj=io.BytesIO(blob(manifest["layers"][0]["digest"]))) as layer:
            assert layer.getnames() == ["x"]
            assert layer.getmember("x").mode == 0o755


def pod(name: str, *, phase: str = "Running", annotations: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "namespace": "ns",
            "labels": {"kubetune.io/variant": "tuned", "kubetune.io/deployment": "chat"},
            "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": "8000"}
            if annotations is None
            else annotations,
        },
        "status": {"phase": phase, "podIP": "10.88.0.7"},
    }


@pytest.mark.parametrize(
    ("pods", "targets"),
    [
        (
            [pod("vllm-0")],
            [
                {
                    "targets": ["10.88.0.7:8000"],
                    "labels": {
                        "__metrics_path__": "/metrics",
                        "namespace": "ns",
                        "pod": "vllm-0",
                        "variant": "tuned",
                        "model_deployment": "chat",
                    },
                }
            ],
        ),
        ([pod("pending", phase="Pending")], []),
        ([pod("unannotated", annotations={})], []),
        ([pod("no-port", annotations={"prometheus.io/scrape": "true"})], []),
    ],
)
def test_scrape_targets_are_the_running_annotated_pods_labelled_like_podmonitors(
    pods: list[dict[str, Any]], targets: list[dict[str, Any]]
) -> None:
    assert nodeconfig.scrape_targets(pods) == targets
