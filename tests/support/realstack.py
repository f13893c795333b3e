"""The kubetune stack on the real local node as the e2e tests drive it: the user's view (kubectl,
status, the router's counters) and the faults they inject (a pod's traffic rejected on the node)."""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from tests.support.cluster import Kube
from tests.support.realnode import describe_all

from kubetune.devcluster import quickstart, stack
from kubetune.devcluster.node import LocalNode
from kubetune.devcluster.quickstart import DevImages

NS = quickstart.NAMESPACE


@dataclass
class RealStack:
    kube: Kube
    node: LocalNode
    images: DevImages

    def status(self, kind: str, name: str) -> dict[str, Any]:
        return dict(self.kube.get(kind, name, NS).get("status") or {})

    def loss_history(self, artifact_uri: str) -> list[tuple[int, float]]:
        """(step, loss) of every logged step, from the trainer's `metrics.json` next to `artifact_uri`
        (a `pvc://models/...` artifact) on the node's volume. Not `status.progress`: it shows the
        latest report the operator read, and a run of a few seconds may show only the last one."""
        path = PurePosixPath(artifact_uri.removeprefix(f"pvc://{quickstart.CLAIM}/"))
        claim = self.kube.get("pvc", quickstart.CLAIM, NS)
        volume = json.loads(self.kube.kubectl("get", "pv", claim["spec"]["volumeName"], "-o", "json").stdout)
        folder = Path(volume["spec"]["hostPath"]["path"]) / path.parent
        history = json.loads((folder / "metrics.json").read_text())["training"]["lossHistory"]
        return [(entry["step"], entry["loss"]) for entry in history]

    def condition(self, kind: str, name: str, type_: str) -> dict[str, Any] | None:
        return next((c for c in self.status(kind, name).get("conditions", []) if c["type"] == type_), None)

    def apply(self, documents: list[dict[str, Any]]) -> None:
        stack.apply(self.kube.kubeconfig, documents)

    def pod_ips(self, selector: str) -> list[str]:
        pods = json.loads(self.kube.kubectl("get", "pods", "-n", NS, "-l", selector, "-o", "json").stdout)
        return [p["status"]["podIP"] for p in pods["items"] if p.get("status", {}).get("podIP")]

    @contextlib.contextmanager
    def explained(self) -> Iterator[None]:
        """On failure, print what an engineer would look at: describe, Events, logs of both namespaces."""
        try:
            yield
        except BaseException:
            for namespace in (NS, stack.RELEASE_NAMESPACE):
                print(describe_all(self.kube, namespace))
            print(self.kube.kubectl("get", "kubetune", "-A", "-o", "yaml", check=False).stdout)
            raise


@contextlib.contextmanager
def rejected(pod_ips: list[str]) -> Iterator[None]:
    """The injected fault: every connection forwarded to these pods is reset on the node (as a
    crashed server or a broken network path looks to the router), until the block exits."""
    rules = [
        ["FORWARD", "-d", ip, "-p", "tcp", "-j", "REJECT", "--reject-with", "tcp-reset"] for ip in pod_ips
    ]
    for rule in rules:
        subprocess.run(["iptables", "-I", *rule], check=True)
    try:
        yield
    finally:
        for rule in rules:
            subprocess.run(["iptables", "-D", *rule], check=False)


def router_counts(router: str) -> dict[tuple[str, str], float]:
    """`kubetune_router_requests_total` by (variant, source), read from the router pod itself."""
    text = subprocess.run(
        ["curl", "-sf", "--max-time", "10", f"{router}/metrics"], capture_output=True, text=True, check=True
    ).stdout
    counts: dict[tuple[str, str], float] = {}
    for line in text.splitlines():
        if not line.startswith("kubetune_router_requests_total{"):
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', line))
        key = (labels.get("variant", ""), labels.get("source", ""))
        counts[key] = counts.get(key, 0.0) + float(line.rsplit(" ", 1)[1])
    return counts
