"""`make dev` / `make dev-down`: a local control plane with the operator and the examples.

Everything runs as background processes recorded in `.dev/state.json`, so the cluster
outlives the command: `export KUBECONFIG=.dev/cluster/kubeconfig` and use kubectl.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from kubetune.devcluster.controlplane import ControlPlane, operator_command, run_kubectl
from kubetune.devcluster.kwok import KwokController, dev_volume, gpu_nodes

REPO = Path(__file__).resolve().parents[2]
STATE_DIR = REPO / ".dev"
STATE = STATE_DIR / "state.json"
KUBECONFIG = STATE_DIR / "cluster" / "kubeconfig"


DEV_OVERRIDES = json.dumps(
    [
        {"op": "replace", "path": "/spec/smokeTest/enabled", "value": False},
        {"op": "remove", "path": "/spec/traffic/canary/analysis"},
        {"op": "replace", "path": "/spec/traffic/canary/interval", "value": "10s"},
    ]
)


def kubectl(
    *args: str, check: bool = True, capture: bool = False, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    proc = run_kubectl(KUBECONFIG, *args, input=input, capture=capture, timeout=300)
    if check:
        proc.check_returncode()
    return proc


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def down() -> int:
    if not STATE.exists():
        print("no local cluster running")
        return 0
    state = json.loads(STATE.read_text())
    for name, pid in reversed(list(state["pids"].items())):
        if _alive(pid):
            os.killpg(pid, signal.SIGTERM)
            print(f"stopped {name} (pid {pid})")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(_alive(p) for p in state["pids"].values()):
        time.sleep(0.2)
    for pid in state["pids"].values():
        if _alive(pid):
            os.killpg(pid, signal.SIGKILL)
    STATE.unlink()
    return 0


def up(watch_seconds: float) -> int:
    if STATE.exists():
        down()
    STATE_DIR.mkdir(exist_ok=True)
    started = time.monotonic()
    plane = ControlPlane(workdir=STATE_DIR / "cluster", with_controllers=True)
    if plane.workdir.exists():
        shutil.rmtree(plane.workdir)
    print("==> starting etcd + kube-apiserver + controller-manager + scheduler (Go-built, pinned)")
    plane.start()
    pids = {name: proc.pid for name, proc in plane.processes.items()}
    STATE.write_text(json.dumps({"pids": pids}))
    print(f"    API server {plane.server} ready in {time.monotonic() - started:.1f}s")

    print("==> simulated GPU nodes: kwok controller + 2 nodes x 8 nvidia.com/gpu")
    kwok = KwokController(kubeconfig=plane.kubeconfig, workdir=STATE_DIR / "kwok")
    pids["kwok"] = kwok.start()
    STATE.write_text(json.dumps({"pids": pids}))
    kubectl("apply", "-f", "-", input=gpu_nodes())
    kubectl("apply", "-f", "-", input=dev_volume())

    print("==> installing CRDs")
    kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
    for crd in ("finetunejobs.kubetune.io", "modeldeployments.kubetune.io"):
        kubectl("wait", "--for=condition=Established", "--timeout=60s", f"crd/{crd}")

    print("==> starting the operator (log: .dev/operator.log)")
    log = (STATE_DIR / "operator.log").open("ab")
    env = {**os.environ, "KUBECONFIG": str(KUBECONFIG), "KUBETUNE_RESYNC_SECONDS": "5"}
    operator = subprocess.Popen(
        operator_command(),
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    pids["operator"] = operator.pid
    STATE.write_text(json.dumps({"pids": pids}))

    print("==> applying examples/quickstart.yaml")
    kubectl("apply", "-n", "default", "-f", str(REPO / "examples" / "quickstart.yaml"))
    # kwok pods serve nothing and there is no Prometheus here: the dev run skips the smoke test and
    # moves the canary on time alone (a real cluster runs both). The operator never writes spec; we do.
    kubectl("patch", "modeldeployment", "quickstart", "-n", "default", "--type=json", "-p", DEV_OVERRIDES)
    elapsed = time.monotonic() - started
    print(f"==> cluster up in {elapsed:.1f}s; watching the pipeline for {watch_seconds:.0f}s\n")
    _watch(watch_seconds)
    print(
        f"\nexport KUBECONFIG={KUBECONFIG}\n"
        "kubectl get kubetune -A      # both kinds with their printer columns\n"
        "make dev-down                # stop everything"
    )
    return 0


def _snapshot() -> str:
    """The pipeline's state without ages, so only real changes are printed."""
    resources = kubectl("get", "kubetune", "-n", "default", check=False, capture=True).stdout
    pods = kubectl(
        "get",
        "pods",
        "-n",
        "default",
        "--sort-by=.metadata.creationTimestamp",
        "-o",
        "custom-columns=POD:.metadata.name,PHASE:.status.phase,NODE:.spec.nodeName,"
        "GPUS:.spec.containers[0].resources.limits.nvidia\\.com/gpu",
        check=False,
        capture=True,
    ).stdout
    lines = [line.rsplit(None, 1)[0] if line.split() else line for line in resources.splitlines()]
    return "\n".join(lines) + "\n\n" + pods.rstrip()


def _promoted() -> bool:
    out = kubectl(
        "get",
        "modeldeployment",
        "quickstart",
        "-n",
        "default",
        "-o",
        "jsonpath={.status.conditions[?(@.type=='Promoted')].status}",
        check=False,
        capture=True,
    ).stdout
    return out.strip() == "True"


def _watch(seconds: float) -> None:
    deadline = time.monotonic() + seconds
    last = ""
    while time.monotonic() < deadline:
        out = _snapshot()
        if out != last:
            print(time.strftime("%H:%M:%S"), "-" * 60)
            print(out)
            last = out
        if _promoted():
            final = _snapshot()
            if final != last:
                print(time.strftime("%H:%M:%S"), "-" * 60)
                print(final)
            print("\n==> canary promoted: the fine-tuned variant takes all traffic")
            return
        time.sleep(2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kubetune.dev", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    up_cmd = sub.add_parser("up", help="start the local cluster, operator and examples")
    up_cmd.add_argument(
        "--watch",
        type=float,
        default=float(os.environ.get("KUBETUNE_DEV_WATCH", "240")),
        help="seconds to print the pipeline moving (default %(default)s)",
    )
    sub.add_parser("down", help="stop it")
    args = parser.parse_args(argv)
    return up(args.watch) if args.command == "up" else down()


if __name__ == "__main__":
    sys.exit(main())
