"""A real node beside the local control plane: containerd + runc + CNI bridge, kubelet, kube-proxy, CoreDNS.

Pods scheduled here really run, from images built by `make images` and imported into containerd's
`k8s.io` namespace. The node needs root (cgroups, mounts, network devices, iptables); one node per
machine (fixed bridge, paths and ports: `NodeLayout`). `teardown()` is idempotent and is also run
before a start, so a crashed run leaves nothing that blocks the next one.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubetune.devcluster import nodeconfig
from kubetune.devcluster.controlplane import (
    SERVICE_CIDR,
    ControlPlane,
    ControlPlaneError,
    find_binary,
    run_kubectl,
    stop_group,
)
from kubetune.devcluster.nodeconfig import CNI_NETWORK, NodeLayout

REPO = Path(__file__).resolve().parents[3]
HOST_TOOLS = {
    "containerd": "apt-get install containerd",
    "runc": "apt-get install runc",
    "ctr": "apt-get install containerd",
    "iptables": "apt-get install iptables",
    "ip": "apt-get install iproute2",
}
CNI_PLUGINS = ("bridge", "host-local", "loopback", "portmap")
NODE_BINARIES = ("kubelet", "kube-proxy", "coredns", "crictl")
# The CNI bridge enforces no NetworkPolicy; with `network_policies` the node also runs kube-router's
# policy controller alone (iptables + ipsets on the bridge's forwarded traffic; no routing, no proxy).
POLICY_BINARY = "kube-router"
KUBE_SET_PREFIXES = ("KUBE-", "inet6:KUBE-")


class NodeError(RuntimeError):
    pass


def missing_prerequisites(cni_bin_dir: Path = Path("/usr/lib/cni")) -> list[str]:
    """What this machine lacks to run a node, as one phrase each (empty when it can)."""
    missing: list[str] = []
    if os.geteuid() != 0:
        missing.append("root (the node creates cgroups, mounts, a bridge and iptables rules)")
    for controller in ("memory", "cpu", "pids"):
        if (
            not (Path("/sys/fs/cgroup") / controller).is_dir()
            and not Path("/sys/fs/cgroup/cgroup.controllers").is_file()
        ):
            missing.append(f"the {controller} cgroup controller mounted under /sys/fs/cgroup")
            break
    missing += [f"{tool} ({how})" for tool, how in HOST_TOOLS.items() if shutil.which(tool) is None]
    missing += [
        f"CNI plugin {cni_bin_dir / plugin} (apt-get install containernetworking-plugins)"
        for plugin in CNI_PLUGINS
        if not (cni_bin_dir / plugin).is_file()
    ]
    for binary in NODE_BINARIES:
        try:
            find_binary(binary)
        except ControlPlaneError:
            missing.append(f"{binary} (make cluster-binaries)")
    return missing


def binary_image_archive(binary: bytes, reference: str, name: str, user: str = "65535:65535") -> bytes:
    """An OCI image archive of one static binary `/<name>`, in the layout `ctr images import` reads."""

    def blob(data: bytes) -> tuple[str, bytes]:
        return "sha256:" + hashlib.sha256(data).hexdigest(), data

    layer_buffer = io.BytesIO()
    with tarfile.open(fileobj=layer_buffer, mode="w", format=tarfile.PAX_FORMAT) as layer:
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = len(binary), 0o755, 0
        layer.addfile(info, io.BytesIO(binary))
    layer_digest, layer_bytes = blob(layer_buffer.getvalue())
    config_digest, config_bytes = blob(
        json.dumps(
            {
                "architecture": "amd64",
                "os": "linux",
                "config": {"Entrypoint": [f"/{name}"], "User": user},
                "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
            },
            sort_keys=True,
        ).encode()
    )
    manifest_digest, manifest_bytes = blob(
        json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {
                    "mediaType": "application/vnd.oci.image.config.v1+json",
                    "digest": config_digest,
                    "size": len(config_bytes),
                },
                "layers": [
                    {
                        "mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": layer_digest,
                        "size": len(layer_bytes),
                    }
                ],
            },
            sort_keys=True,
        ).encode()
    )
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": manifest_digest,
                "size": len(manifest_bytes),
                "annotations": {
                    "io.containerd.image.name": reference,
                    "org.opencontainers.image.ref.name": reference,
                },
            }
        ],
    }
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w", format=tarfile.PAX_FORMAT) as tar:

        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))

        add("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        add("index.json", json.dumps(index).encode())
        for digest, data in (
            (layer_digest, layer_bytes),
            (config_digest, config_bytes),
            (manifest_digest, manifest_bytes),
        ):
            add(f"blobs/sha256/{digest.removeprefix('sha256:')}", data)
    return archive.getvalue()


def build_go_binary(source: Path, out: Path) -> Path:
    """A single-file Go program as a static binary (cached in the Go build cache like the rest)."""
    cache = Path(os.environ.get("KUBETUNE_CACHE", str(Path.home() / ".cache" / "kubetune")))
    env = {
        **os.environ,
        "CGO_ENABLED": "0",
        "GOTOOLCHAIN": "local",
        "GOCACHE": os.environ.get("GOCACHE", str(cache / "gocache")),
        "GO111MODULE": "off",
    }
    go = shutil.which("go") or "/usr/local/go/bin/go"
    subprocess.run(
        [go, "build", "-trimpath", "-ldflags", "-s -w", "-o", str(out), str(source)],
        check=True,
        env=env,
        capture_output=True,
    )
    return out


def _run(*args: str, check: bool = False, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, check=check, timeout=timeout)


def _mounts_under(roots: Iterable[Path]) -> list[str]:
    prefixes = [str(root) for root in roots]
    points = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        point = line.split()[1].replace("\\040", " ")
        if any(point == p or point.startswith(p + "/") for p in prefixes):
            points.append(point)
    # Deepest first: a mount under another must go before it.
    return sorted(points, key=len, reverse=True)


@dataclass
class LocalNode:
    """The node's processes, started against `plane` (which must have been started with its node IP)."""

    plane: ControlPlane
    layout: NodeLayout = field(default_factory=NodeLayout)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    owner: str = ""
    network_policies: bool = False
    """Enforce NetworkPolicies (kube-router's firewall; `make cluster-binaries` builds it, apt ipset)."""

    @property
    def workdir(self) -> Path:
        return self.plane.workdir / "node"

    @property
    def config(self) -> Path:
        return self.layout.config_dir

    def _log(self, name: str) -> Path:
        return self.workdir / f"{name}.log"

    # ---- lifecycle -------------------------------------------------------------------------------

    @staticmethod
    def prepare_network(layout: NodeLayout) -> None:
        """The bridge and its address exist before the API server binds to it and the kubelet starts."""
        if _run("ip", "link", "show", layout.bridge).returncode != 0:
            _run("ip", "link", "add", layout.bridge, "type", "bridge", check=True)
        address = f"{layout.node_ip}/{layout.prefix_length}"
        if address not in _run("ip", "-o", "addr", "show", "dev", layout.bridge).stdout:
            _run("ip", "addr", "add", address, "dev", layout.bridge, check=True)
        _run("ip", "link", "set", layout.bridge, "up", check=True)
        with contextlib.suppress(OSError):
            Path("/proc/sys/net/ipv4/ip_forward").write_text("1\n")
        with contextlib.suppress(OSError):
            Path("/proc/sys/net/bridge/bridge-nf-call-iptables").write_text("1\n")

    def acquire(self, owner: str) -> None:
        """Claim the machine's one node for `owner`; a dead owner's node is torn down, a live one's kept."""
        holder = current_owner(self.layout)
        if holder is not None and holder != owner and owner_alive(holder):
            raise NodeError(
                f"the local node is in use by {holder} (`make dev`?): stop it first (`make dev-down`)"
            )
        self.layout.state_root.mkdir(parents=True, exist_ok=True)
        (self.layout.state_root / "owner").write_text(owner)
        self.owner = owner

    @property
    def prometheus_url(self) -> str:
        """Where pods (the operator's canary analysis) and this machine reach the node's Prometheus."""
        return f"http://{self.layout.node_ip}:{nodeconfig.PROMETHEUS_PORT}"

    def start_prometheus(self) -> None:
        """Debian's Prometheus on the bridge address, scraping annotated pods (apt-get install prometheus)."""
        binary = shutil.which("prometheus")
        if binary is None:
            raise NodeError("prometheus is not installed: apt-get install prometheus")
        (self.config / "prometheus.yml").write_text(nodeconfig.prometheus_config(self.layout.scrape_targets))
        self._spawn(
            "prometheus",
            [
                binary,
                f"--config.file={self.config / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.layout.run_root / 'prometheus'}",
                f"--web.listen-address={self.layout.node_ip}:{nodeconfig.PROMETHEUS_PORT}",
                "--log.level=warn",
            ],
        )
        deadline = time.monotonic() + 60
        while not _healthy(self.prometheus_url + "/-/ready"):
            self._check_alive()
            if time.monotonic() > deadline:
                raise NodeError("prometheus not ready within 60s")
            time.sleep(0.3)

    def start(self, images: Iterable[Path] = (), owner: str | None = None) -> LocalNode:
        problems = missing_prerequisites()
        if problems:
            raise NodeError("cannot start a real node here; missing: " + "; ".join(problems))
        self.acquire(owner or f"pid:{os.getpid()}")
        try:
            teardown(self.layout)
            self.prepare_network(self.layout)
            self.workdir.mkdir(parents=True, exist_ok=True)
            self.config.mkdir(parents=True, exist_ok=True)
            self._write_configs()
            self._start_containerd()
            remove_pods(self.layout)  # sandboxes a crashed run left in containerd's metadata
            self.import_archive(self._pause_archive())
            for archive in images:
                self.import_archive(archive)
            self._spawn("coredns", [str(find_binary("coredns")), "-conf", str(self.config / "Corefile")])
            self._spawn(
                "kubelet",
                [
                    str(find_binary("kubelet")),
                    f"--config={self.config / 'kubelet.json'}",
                    f"--kubeconfig={self.plane.kubeconfig}",
                    f"--root-dir={self.layout.kubelet_root}",
                    f"--hostname-override={self.layout.name}",
                    f"--node-ip={self.layout.node_ip}",
                    f"--node-labels={nodeconfig.NODE_LABEL}=true",
                    "--v=1",
                ],
            )
            self._spawn(
                "kube-proxy",
                [str(find_binary("kube-proxy")), f"--config={self.config / 'kube-proxy.json'}", "--v=1"],
            )
            if self.network_policies:
                # kube-router reads its node (name, InternalIP) once at start and exits without it.
                self._wait_registered()
                self._start_policy_controller()
            self._spawn(
                "nodeagent",
                [
                    sys.executable,
                    "-m",
                    "kubetune.devcluster.nodeagent",
                    f"--kubeconfig={self.plane.kubeconfig}",
                    f"--state-root={self.layout.state_root}",
                    f"--run-root={self.layout.run_root}",
                ],
            )
            self.wait_ready()
            self.kubectl("apply", "-f", "-", input=nodeconfig.to_json(nodeconfig.storage_class()))
            return self
        except BaseException:
            self.stop()  # nothing half-started stays on the machine
            raise

    def _write_configs(self) -> None:
        pki = self.plane.pki
        (self.config / "containerd.toml").write_text(nodeconfig.containerd_config(self.layout))
        self.layout.cni_conf_dir.mkdir(parents=True, exist_ok=True)
        (self.layout.cni_conf_dir / "10-kubetune.conflist").write_text(
            nodeconfig.to_json(nodeconfig.cni_conflist(self.layout))
        )
        (self.config / "kubelet.json").write_text(
            nodeconfig.to_json(
                nodeconfig.kubelet_config(
                    self.layout, pki / "ca.crt", pki / "kubelet.crt", pki / "kubelet.key"
                )
            )
        )
        (self.config / "kube-proxy.json").write_text(
            nodeconfig.to_json(nodeconfig.kube_proxy_config(self.layout, self.plane.kubeconfig))
        )
        (self.config / "Corefile").write_text(nodeconfig.corefile(self.layout, self.plane.kubeconfig))
        self.layout.volumes_root.mkdir(parents=True, exist_ok=True)

    def _start_policy_controller(self) -> None:
        if shutil.which("ipset") is None:
            raise NodeError("ipset is not installed (apt-get install ipset): the policy controller needs it")
        # A copy under the node's run root: teardown recognises the node's processes by those paths.
        kubeconfig = self.config / "kube-router.kubeconfig"
        shutil.copyfile(self.plane.kubeconfig, kubeconfig)
        self._spawn(
            POLICY_BINARY,
            [
                str(find_binary(POLICY_BINARY)),
                f"--kubeconfig={kubeconfig}",
                f"--hostname-override={self.layout.name}",
                "--run-firewall=true",
                "--run-router=false",
                "--run-service-proxy=false",
                "--enable-cni=false",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                f"--health-port={self.layout.kube_router_health_port}",
                "--v=1",
            ],
        )

    def _spawn(self, name: str, command: list[str]) -> None:
        log = self._log(name).open("ab")
        self.processes[name] = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=self.workdir
        )

    def _start_containerd(self) -> None:
        self._spawn("containerd", ["containerd", "--config", str(self.config / "containerd.toml")])
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            self._check_alive()
            if self.ctr("version").returncode == 0:
                return
            time.sleep(0.2)
        raise NodeError(f"containerd did not answer on {self.layout.containerd_socket} within 60s")

    def _pause_archive(self) -> Path:
        binary = build_go_binary(REPO / "images" / "pause" / "pause.go", self.workdir / "pause")
        archive = self.workdir / "pause.oci.tar"
        archive.write_bytes(binary_image_archive(binary.read_bytes(), nodeconfig.PAUSE_IMAGE, "pause"))
        return archive

    def ctr(self, *args: str, timeout: float = 600.0) -> subprocess.CompletedProcess[str]:
        return _run(
            "ctr", "--address", str(self.layout.containerd_socket), "-n", "k8s.io", *args, timeout=timeout
        )

    def import_archive(self, archive: Path) -> None:
        result = self.ctr("images", "import", "--no-unpack", str(archive))
        if result.returncode != 0:
            raise NodeError(f"importing {archive} into containerd failed: {result.stderr.strip()}")

    def image_references(self) -> set[str]:
        return set(self.ctr("images", "ls", "-q").stdout.split())

    def kubectl(self, *args: str, input: str | None = None) -> str:
        proc = run_kubectl(self.plane.kubeconfig, *args, input=input)
        if proc.returncode != 0:
            raise NodeError(f"kubectl {' '.join(args)}: {proc.stderr.strip()}")
        return proc.stdout

    def _check_alive(self) -> None:
        for name, proc in self.processes.items():
            if proc.poll() is not None:
                tail = self._log(name).read_text(errors="replace")[-3000:]
                raise NodeError(f"{name} exited with {proc.returncode}:\n{tail}")

    def _wait_registered(self, timeout: float = 60.0) -> None:
        """Until the kubelet has registered the node with its InternalIP."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive()
            if self._node_field("{.status.addresses[?(@.type=='InternalIP')].address}"):
                return
            time.sleep(0.3)
        raise NodeError(f"the kubelet did not register node {self.layout.name} within {timeout}s")

    def node_ready(self) -> bool:
        return self._node_field("{.status.conditions[?(@.type=='Ready')].status}") == "True"

    def _node_field(self, jsonpath: str) -> str:
        """A field of this node's Node object ('' while it is not registered)."""
        node = self.layout.name
        proc = run_kubectl(self.plane.kubeconfig, "get", "node", node, "-o", f"jsonpath={jsonpath}")
        return proc.stdout.strip() if proc.returncode == 0 else ""

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive()
            if (
                self.node_ready()
                and _healthy(f"http://127.0.0.1:{self.layout.kube_proxy_healthz_port}/healthz")
                and (
                    not self.network_policies
                    or _healthy(f"http://127.0.0.1:{self.layout.kube_router_health_port}/healthz")
                )
            ):
                return
            time.sleep(0.5)
        tails = {
            name: self._log(name).read_text(errors="replace")[-1500:]
            for name in ("kubelet", "kube-proxy", POLICY_BINARY)
            if self._log(name).exists()
        }
        raise NodeError(f"node {self.layout.name} not Ready within {timeout}s: {tails}")

    def stop(self) -> None:
        """Stop the kubelet first (so it recreates nothing), remove every pod, then the rest."""
        for name in ("kubelet", "nodeagent"):
            stop_group(self.processes.pop(name, None), timeout=20.0)
        remove_pods(self.layout)
        for name in reversed(list(self.processes)):
            stop_group(self.processes.pop(name), timeout=20.0)
        teardown(self.layout)
        release(self.layout, self.owner)


def current_owner(layout: NodeLayout) -> str | None:
    try:
        return (layout.state_root / "owner").read_text().strip() or None
    except FileNotFoundError:
        return None


def owner_alive(owner: str) -> bool:
    """`pid:N` lives while process N does; `dev:PATH` while `make dev`'s state file PATH exists."""
    kind, _, value = owner.partition(":")
    if kind == "pid" and value.isdigit():
        try:
            os.kill(int(value), 0)
        except ProcessLookupError:
            return False
        return True
    if kind == "dev":
        return Path(value).exists()
    return False


def release(layout: NodeLayout, owner: str) -> None:
    if current_owner(layout) == owner:
        (layout.state_root / "owner").unlink(missing_ok=True)


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 (loopback health check)
            return bool(response.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def remove_pods(layout: NodeLayout) -> None:
    """Every pod sandbox through the CRI, so the CNI plugin releases addresses, veths and rules."""
    if not layout.containerd_socket.exists():
        return
    with contextlib.suppress(ControlPlaneError, subprocess.TimeoutExpired):
        crictl = str(find_binary("crictl"))
        _run(
            crictl,
            "--runtime-endpoint",
            layout.runtime_endpoint,
            "--timeout",
            "30s",
            "rmp",
            "-fa",
            timeout=180,
        )


def _processes_of_node(layout: NodeLayout) -> list[int]:
    """Node processes (a crashed run's too), recognised by the paths only this node uses."""
    markers = (str(layout.state_root).encode(), str(layout.run_root).encode())
    own = {os.getpid(), os.getppid()}
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) in own:
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if any(marker in cmdline for marker in markers):
            found.append(int(proc.name))
    return found


def teardown(layout: NodeLayout) -> None:
    """Leave no pod, process, mount, veth, bridge or iptables rule of the node behind. Idempotent."""
    remove_pods(layout)
    for pid in _processes_of_node(layout):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for point in _mounts_under((layout.kubelet_root, layout.run_root, layout.containerd_root)):
        _run("umount", "-l", point)
    with contextlib.suppress(ControlPlaneError):
        _run(str(find_binary("kube-proxy")), "--cleanup", timeout=60)
    _remove_cni_rules(layout)
    _remove_kube_chains()
    _destroy_kube_ipsets()  # after the rules that matched on them
    _run("ip", "link", "delete", layout.bridge)
    for path in (
        layout.kubelet_root,
        layout.volumes_root,  # the volumes die with the cluster whose claims they served
        layout.cni_data_dir,
        layout.run_root / "containerd",
        layout.run_root / "prometheus",
        layout.config_dir,
    ):
        shutil.rmtree(path, ignore_errors=True)


def _remove_cni_rules(layout: NodeLayout) -> None:
    """Masquerade rules and chains the bridge plugin made for sandboxes that were never torn down,
    including a chain whose POSTROUTING jump is already gone (a CNI DEL cut short by the teardown)."""
    chains = set()
    for rule in _run("iptables", "-t", "nat", "-S").stdout.splitlines():
        parts = shlex.split(rule)
        # The comment as the bridge plugin wrote it (`iptables -S` prints its quotes escaped).
        if parts[:1] != ["-A"] or not any(f'name: "{CNI_NETWORK}"' in part for part in parts):
            continue
        if parts[1] == "POSTROUTING":
            _run("iptables", "-t", "nat", "-D", *parts[1:])
            if "-j" in parts:
                chains.add(parts[parts.index("-j") + 1])
        elif parts[1].startswith("CNI-"):
            chains.add(parts[1])
    for chain in sorted(chains):
        _run("iptables", "-t", "nat", "-F", chain)
        _run("iptables", "-t", "nat", "-X", chain)


IPTABLES = ("iptables", "ip6tables")
TABLES = ("filter", "nat", "mangle")


def _kube_rules() -> list[tuple[str, str, str]]:
    """(command, table, rule) of every KUBE-* chain or rule, in both address families."""
    found = []
    for command in IPTABLES:
        for table in TABLES:
            for rule in _run(command, "-t", table, "-S").stdout.splitlines():
                if "KUBE-" in rule:
                    found.append((command, table, rule))
    return found


def _remove_kube_chains() -> None:
    """What kube-proxy --cleanup leaves: the kubelet's own chains (KUBE-FIREWALL, canaries, hints)."""
    rules = _kube_rules()
    for command, table, rule in rules:
        if rule.startswith("-A "):
            _run(command, "-t", table, "-D", *shlex.split(rule)[1:])
    for command, table, rule in rules:
        if rule.startswith("-N "):
            _run(command, "-t", table, "-F", rule.split()[1])
    for command, table, rule in rules:
        if rule.startswith("-N "):
            _run(command, "-t", table, "-X", rule.split()[1])


def _kube_ipsets() -> list[str]:
    """The policy controller's ipsets (KUBE-SRC-*, KUBE-DST-*); none where ipset is not installed."""
    if shutil.which("ipset") is None:
        return []
    names = _run("ipset", "list", "-n").stdout.split()
    return [name for name in names if name.startswith(KUBE_SET_PREFIXES)]


def _destroy_kube_ipsets() -> None:
    for name in _kube_ipsets():
        _run("ipset", "destroy", name)


def leftovers(layout: NodeLayout) -> dict[str, Any]:
    """What a stopped node left on the machine (all empty after a clean teardown)."""
    nat = _run("iptables", "-t", "nat", "-S").stdout
    return {
        "processes": _processes_of_node(layout),
        "mounts": _mounts_under((layout.kubelet_root, layout.run_root, layout.containerd_root)),
        "bridge": _run("ip", "link", "show", layout.bridge).returncode == 0,
        "veths": [
            line for line in _run("ip", "-o", "link", "show", "type", "veth").stdout.splitlines() if line
        ],
        "kube_chains": [" ".join(found) for found in _kube_rules()],
        "cni_chains": [line for line in nat.splitlines() if "CNI-" in line],
        "ipsets": _kube_ipsets(),
    }
