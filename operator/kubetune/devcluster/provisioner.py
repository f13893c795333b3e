"""Dynamic hostPath provisioning for the local node's default StorageClass (`kubetune-local`).

A claim of the class gets a directory under the node's volumes root and a PersistentVolume bound to
it (any access mode: there is one node); a released volume loses its directory and its PV. Like the
external provisioners of real clusters, it is a loop over the API, here through kubectl.
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


def sync_once(kubeconfig: Path, layout: NodeLayout) -> None:
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
    parser = argparse.ArgumentParser(prog="python -m kubetune.devcluster.provisioner", description=__doc__)
    parser.add_argument("--kubeconfig", type=Path, required=True)
    parser.add_argument("--volumes", type=Path, required=True, help="directory that holds the volumes")
    parser.add_argument("--interval", type=float, default=1.0)
    args = parser.parse_args(argv)
    layout = NodeLayout()
    if args.volumes != layout.volumes_root:
        layout = NodeLayout(state_root=args.volumes.parent)
    while True:
        sync_once(args.kubeconfig, layout)
        time.sleep(args.interval)


if __name__ == "__main__":
    sys.exit(main())
