"""Pure configuration of the local real node: containerd, CNI, kubelet, kube-proxy, CoreDNS.

Everything here is a function of `NodeLayout`: no I/O, so each file is tested as a table and the
process layer (`node.py`) only writes what these return. What each setting works around on this
kind of machine is written in shared/docs/real-node.md and docs/real-node.md.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubetune.builders.common import LABEL_DEPLOYMENT, LABEL_VARIANT

PAUSE_IMAGE = "localhost/kubetune/pause:3.10"
NODE_LABEL = "kubetune.io/real-node"
STORAGE_CLASS = "kubetune-local"
PROVISIONER = "kubetune.io/local-hostpath"
CNI_NETWORK = "kubetune"


@dataclass(frozen=True)
class NodeLayout:
    """Where the node lives on this machine. One node per machine: the paths and bridge are fixed."""

    name: str = "kubetune-node"
    bridge: str = "kt0"
    pod_cidr: str = "10.88.0.0/24"
    state_root: Path = Path("/var/lib/kubetune-node")
    run_root: Path = Path("/run/kubetune-node")
    kubelet_port: int = 10250
    kubelet_healthz_port: int = 10248
    kube_proxy_healthz_port: int = 10256
    kube_proxy_metrics_port: int = 10249
    kube_router_health_port: int = 20244

    @property
    def node_ip(self) -> str:
        """The bridge's own address: the node IP, the API server's address and the cluster DNS."""
        return str(next(ipaddress.ip_network(self.pod_cidr).hosts()))

    @property
    def prefix_length(self) -> int:
        return ipaddress.ip_network(self.pod_cidr).prefixlen

    @property
    def containerd_root(self) -> Path:
        # Survives `make dev-down` like a real node's image store: images are imported once.
        return self.state_root / "containerd"

    @property
    def config_dir(self) -> Path:
        # Under run_root so every node process names a path of this node (crash recovery finds them).
        return self.run_root / "config"

    @property
    def scrape_targets(self) -> Path:
        return self.config_dir / "scrape-targets.json"

    @property
    def containerd_socket(self) -> Path:
        return self.run_root / "containerd.sock"

    @property
    def runtime_endpoint(self) -> str:
        return f"unix://{self.containerd_socket}"

    @property
    def kubelet_root(self) -> Path:
        return self.state_root / "kubelet"

    @property
    def volumes_root(self) -> Path:
        return self.state_root / "volumes"

    @property
    def cni_data_dir(self) -> Path:
        return self.state_root / "cni"

    @property
    def cni_conf_dir(self) -> Path:
        return self.state_root / "net.d"


def containerd_config(layout: NodeLayout, cni_bin_dir: str = "/usr/lib/cni") -> str:
    """containerd 1.6 (config version 2) with its CRI plugin set up for this machine."""
    return f"""version = 2
root = "{layout.containerd_root}"
state = "{layout.run_root / "containerd"}"
# Snapshotters that cannot work here only add warnings to the log.
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs"]

[grpc]
  address = "{layout.containerd_socket}"

[plugins."io.containerd.grpc.v1.cri"]
  # The upstream pause image cannot be pulled: a local one is imported before the kubelet starts.
  sandbox_image = "{PAUSE_IMAGE}"
  # No CAP_SYS_RESOURCE: without this every sandbox fails writing /proc/self/oom_score_adj.
  restrict_oom_score_adj = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{cni_bin_dir}"
    conf_dir = "{layout.cni_conf_dir}"
"""


def cni_conflist(layout: NodeLayout) -> dict[str, Any]:
    """One bridge network for every pod of the node, masqueraded when it leaves the pod subnet."""
    return {
        "cniVersion": "0.4.0",
        "name": CNI_NETWORK,
        "plugins": [
            {
                "type": "bridge",
                "bridge": layout.bridge,
                "isGateway": True,
                "ipMasq": True,
                # A pod reaching itself through its Service's ClusterIP comes back over the bridge.
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "dataDir": str(layout.cni_data_dir),
                    "ranges": [[{"subnet": layout.pod_cidr, "gateway": layout.node_ip}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def kubelet_config(
    layout: NodeLayout, client_ca: Path, serving_cert: Path, serving_key: Path
) -> dict[str, Any]:
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": layout.node_ip,
        "port": layout.kubelet_port,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": layout.kubelet_healthz_port,
        "tlsCertFile": str(serving_cert),
        "tlsPrivateKeyFile": str(serving_key),
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": False},
            "x509": {"clientCAFile": str(client_ca)},
        },
        # Only the API server (a system:masters client certificate) talks to this kubelet.
        "authorization": {"mode": "AlwaysAllow"},
        "containerRuntimeEndpoint": layout.runtime_endpoint,
        # The machine has cgroup v1 and no systemd; kubelet 1.34 refuses cgroup v1 unless told.
        "cgroupDriver": "cgroupfs",
        "failCgroupV1": False,
        "failSwapOn": False,
        "localStorageCapacityIsolation": False,
        # The disk and memory are shared with the developer's own work: evict only when nearly full,
        # and never garbage-collect the images (they are imported, not pullable).
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%"},
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "clusterDNS": [layout.node_ip],
        "clusterDomain": "cluster.local",
        "resolvConf": "/etc/resolv.conf",
        "serializeImagePulls": False,
        "maxPods": 110,
        "shutdownGracePeriod": "0s",
        "volumePluginDir": str(layout.state_root / "volume-plugins"),
    }


def kube_proxy_config(layout: NodeLayout, kubeconfig: Path) -> dict[str, Any]:
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "hostnameOverride": layout.name,
        "bindAddress": layout.node_ip,
        "healthzBindAddress": f"127.0.0.1:{layout.kube_proxy_healthz_port}",
        "metricsBindAddress": f"127.0.0.1:{layout.kube_proxy_metrics_port}",
        "mode": "iptables",
        "clusterCIDR": layout.pod_cidr,
        # 0 leaves the kernel's conntrack limits alone: setting them needs privileges we lack.
        "conntrack": {"maxPerCore": 0, "min": 0},
        "iptables": {"localhostNodePorts": False},
    }


def corefile(layout: NodeLayout, kubeconfig: Path, context: str = "kubetune") -> str:
    """Cluster DNS on the bridge address; names outside the cluster go to the machine's resolver."""
    return f""".:53 {{
    bind {layout.node_ip}
    errors
    kubernetes cluster.local in-addr.arpa ip6.arpa {{
        kubeconfig {kubeconfig} {context}
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 5
    }}
    forward . /etc/resolv.conf
    cache 5
}}
"""


def storage_class() -> dict[str, Any]:
    """The default StorageClass: hostPath volumes under the node's state root, any access mode."""
    return {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {
            "name": STORAGE_CLASS,
            "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
        },
        "provisioner": PROVISIONER,
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "Immediate",
    }


def persistent_volume_for(claim: dict[str, Any], layout: NodeLayout) -> dict[str, Any] | None:
    """The hostPath PV that satisfies a pending claim of our StorageClass, or None if not ours."""
    spec = claim.get("spec") or {}
    meta = claim["metadata"]
    if (claim.get("status") or {}).get("phase") != "Pending" or spec.get("volumeName"):
        return None
    if spec.get("storageClassName") != STORAGE_CLASS:
        return None
    name = f"pvc-{meta['uid']}"
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {
            "name": name,
            "annotations": {"pv.kubernetes.io/provisioned-by": PROVISIONER},
        },
        "spec": {
            "capacity": {"storage": spec.get("resources", {}).get("requests", {}).get("storage", "1Gi")},
            "accessModes": list(spec.get("accessModes") or ["ReadWriteOnce"]),
            "persistentVolumeReclaimPolicy": "Delete",
            "storageClassName": STORAGE_CLASS,
            "volumeMode": spec.get("volumeMode", "Filesystem"),
            "hostPath": {"path": str(layout.volumes_root / name), "type": "DirectoryOrCreate"},
            "claimRef": {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "namespace": meta["namespace"],
                "name": meta["name"],
                "uid": meta["uid"],
            },
            "nodeAffinity": {
                "required": {
                    "nodeSelectorTerms": [
                        {"matchExpressions": [{"key": NODE_LABEL, "operator": "In", "values": ["true"]}]}
                    ]
                }
            },
        },
    }


def to_json(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, sort_keys=True) + "\n"


PROMETHEUS_PORT = 9090


def prometheus_config(targets_file: Path, scrape_interval: str = "2s") -> str:
    """Scrape the pods the node agent lists in `targets_file` (see `scrape_targets`)."""
    config = {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
        "scrape_configs": [
            {
                "job_name": "kubetune-pods",
                "file_sd_configs": [{"files": [str(targets_file)], "refresh_interval": "2s"}],
            }
        ],
    }
    return json.dumps(config, indent=2)


def scrape_targets(pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Running pods annotated `prometheus.io/scrape: "true"`, labelled like the operator's PodMonitors.

    What kube-prometheus does with `kubernetes_sd_configs` and the PodMonitor relabelings (namespace,
    pod, variant, model_deployment), for a Prometheus built without Kubernetes discovery.
    """
    targets = []
    for pod in pods:
        meta, status = pod["metadata"], pod.get("status") or {}
        annotations = meta.get("annotations") or {}
        if annotations.get("prometheus.io/scrape") != "true" or status.get("phase") != "Running":
            continue
        if not status.get("podIP") or not annotations.get("prometheus.io/port"):
            continue
        labels = meta.get("labels") or {}
        target_labels = {
            "__metrics_path__": annotations.get("prometheus.io/path", "/metrics"),
            "namespace": meta["namespace"],
            "pod": meta["name"],
        }
        for label, name in ((LABEL_VARIANT, "variant"), (LABEL_DEPLOYMENT, "model_deployment")):
            if label in labels:
                target_labels[name] = labels[label]
        targets.append(
            {"targets": [f"{status['podIP']}:{annotations['prometheus.io/port']}"], "labels": target_labels}
        )
    return sorted(targets, key=lambda target: target["labels"]["namespace"] + "/" + target["labels"]["pod"])
