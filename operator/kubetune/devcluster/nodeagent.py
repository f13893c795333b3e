"""The local node's two small controllers, one loop over the API (through kubectl):

- dynamic hostPath provisioning for the default StorageClass (`kubetune-local`): a claim of the class
  gets a directory under the node's volumes root and a PersistentVolume bound to it (any access mode:
  there is one node); a released volume loses its directory and its PV;
- Prometheus pod discovery: Debian's Prometheus is built without Kubernetes service discovery, so the
  agent writes the annotated pods as a `file_sd_configs` target list (`nodeconfig.scrape_targets`).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from kubetune.devcluster import nodeconfig
from kubetune.devcluster.controlplane import run_kubectl
from kubetune.devcluster.nodeconfig import NodeLayout


def _items(kubeconfig: Path, *args: str) -> list[dict[str, Any]]:
    proc = run_kubectl(kubeconfig, "get", *args, "-o", "json", timeout=30)
    if proc.returncode != 0:
        return []
    items: list[dict[str, Any]] = json.loads(proc.stdout).get("items", [])
    return items


def released_volume_paths(volumes: list[dict[str, Any]]) -> dict[str, str]:
    """PV name → directory, for volumes of our provisioner whose claim is gone."""
    out = {}
    for volume in volumes:
        annotations = volume["metadata"].get("annotations") or {}
        if annotations.get("pv.kubernetes.io/provisioned-by") != nodeconfig.PROVISIONER:
            continue
        if (volume.get("status") or {}).get("phase") in ("Released", "Failed"):
            out[volume["metadata"]["name"]] = volume["spec"]["hostPath"]["path"]
    return out


def write_scrape_targets(path: Path, pods: list[dict[str, Any]]) -> None:
    text = json.dumps(nodeconfig.scrape_targets(pods), indent=1, sort_keys=True)
    if not path.exists() or path.read_text() != text:
        temporary = path.with_suffix(".tmp")
        temporary.write_text(text)
        temporary.replace(path)  # Prometheus must never read half a file


def sync_once(kubeconfig: Path, layout: NodeLayout) -> None:
    write_scrape_targets(layout.scrape_targets, _items(kubeconfig, "pods", "-A"))
    for claim in _items(kubeconfig, "pvc", "-A"):
        volume = nodeconfig.persistent_volume_for(claim, layout)
        if volume is None:
            continue
        directory = Path(volume["spec"]["hostPath"]["path"])
        directory.mkdir(parents=True, exist_ok=True)
        # Pods run as non-root users of their own choosing: the volume must be writable by any uid.
        directory.chmod(0o777)
        run_kubectl(kubeconfig, "create", "-f", "-", input=json.dumps(volume), timeout=30)
    for name, path in released_volume_paths(_items(kubeconfig, "pv")).items():
        if Path(path).resolve().is_relative_to(layout.volumes_root):
            shutil.rmtree(path, ignore_errors=True)
        run_kubectl(kubeconfig, "delete", "pv", name, "--wait=false", timeout=30)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kubetune.devcluster.nodeagent", description=__doc__)
    parser.add_argument("--kubeconfig", type=Path, required=True)
    parser.add_argument("--state-root", type=Path, required=True, help="the node's NodeLayout.state_root")
    parser.add_argument("--run-root", type=Path, required=True, help="the node's NodeLayout.run_root")
    parser.add_argument("--interval", type=float, default=1.0)
    args = parser.parse_args(argv)
    layout = NodeLayout(state_root=args.state_root, run_root=args.run_root)
    while True:
        sync_once(args.kubeconfig, layout)
        time.sleep(args.interval)


if __name__ == "__main__":
    sys.exit(main())
