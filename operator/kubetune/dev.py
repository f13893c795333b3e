"""`make dev` / `make dev-down`: the quickstart on a local cluster whose pods really run.

A Go-built control plane, a real node (containerd + kubelet + kube-proxy + CoreDNS, `devcluster.node`)
running the images `make images` built, two kwok GPU nodes for GPU scheduling demos, the operator
installed with `helm install charts/kubetune`, Prometheus scraping the pods, then the dev quickstart
(`devcluster.quickstart`): train a LoRA on CPU, serve base and tuned on vLLM CPU pods behind the
router, canary the tuned one to 100%, and print its answer fetched through the router.

Everything runs as background processes recorded in `.dev/state.json`, so the cluster outlives the
command: `export KUBECONFIG=.dev/cluster/kubeconfig` and use kubectl.
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
from collections.abc import Mapping
from pathlib import Path

from kubetune.devcluster import quickstart, stack
from kubetune.devcluster.controlplane import ControlPlane, run_kubectl
from kubetune.devcluster.kwok import KwokController, gpu_nodes
from kubetune.devcluster.node import LocalNode, NodeError, missing_prerequisites, remove_pods, teardown
from kubetune.devcluster.nodeconfig import NodeLayout

REPO = Path(__file__).resolve().parents[2]
STATE_DIR = REPO / ".dev"
STATE = STATE_DIR / "state.json"
KUBECONFIG = STATE_DIR / "cluster" / "kubeconfig"
NODE_OWNER = f"dev:{STATE}"
# The kubelet goes first, so nothing recreates the pods while they are removed.
STOP_FIRST = ("operator", "kubelet", "nodeagent")


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


def _stop_pids(pids: Mapping[str, int]) -> None:
    for pid in pids.values():
        if _alive(pid):
            os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(_alive(p) for p in pids.values()):
        time.sleep(0.2)
    for pid in pids.values():
        if _alive(pid):
            os.killpg(pid, signal.SIGKILL)


def down() -> int:
    layout = NodeLayout()
    if STATE.exists():
        pids: dict[str, int] = json.loads(STATE.read_text())["pids"]
        _stop_pids({name: pid for name, pid in pids.items() if name in STOP_FIRST})
        remove_pods(layout)
        _stop_pids({name: pid for name, pid in pids.items() if name not in STOP_FIRST})
        STATE.unlink()
        print(f"stopped {', '.join(pids)}")
    else:
        print("no local cluster recorded; removing anything a crashed run left")
    teardown(layout)
    (layout.state_root / "owner").unlink(missing_ok=True)
    return 0


def _record(pids: dict[str, int]) -> None:
    STATE.write_text(json.dumps({"pids": pids}))


def up(watch_seconds: float, network_policies: bool = False) -> int:
    problems = missing_prerequisites()
    if problems:
        print("make dev needs: " + "; ".join(problems), file=sys.stderr)
        return 1
    if STATE.exists():
        down()
    STATE_DIR.mkdir(exist_ok=True)
    started = time.monotonic()
    layout = NodeLayout()
    LocalNode.prepare_network(layout)
    plane = ControlPlane(workdir=STATE_DIR / "cluster", with_controllers=True, node_ip=layout.node_ip)
    if plane.workdir.exists():
        shutil.rmtree(plane.workdir)
    print("==> control plane: etcd + kube-apiserver + controller-manager + scheduler (Go-built, pinned)")
    plane.start()
    pids = {name: proc.pid for name, proc in plane.processes.items()}
    _record(pids)
    print(f"    API server {plane.server} ready in {time.monotonic() - started:.1f}s")

    print(f"==> real node {layout.name}: containerd + kubelet + kube-proxy + CoreDNS on {layout.bridge}")
    node = LocalNode(plane, layout, network_policies=network_policies)
    if network_policies:
        print("    NetworkPolicies enforced: kube-router's policy controller (firewall only)")
    try:
        node.start(owner=NODE_OWNER)
        node.start_prometheus()
    finally:
        pids.update({name: proc.pid for name, proc in node.processes.items()})
        _record(pids)
    print("==> images: make images (cached by content hash), imported into the node's containerd")
    images = stack.local_images(node)

    print("==> simulated GPU nodes: kwok + 2 nodes x 8 nvidia.com/gpu (tainted: only GPU pods land there)")
    kwok = KwokController(kubeconfig=plane.kubeconfig, workdir=STATE_DIR / "kwok")
    pids["kwok"] = kwok.start()
    _record(pids)
    kubectl("apply", "-f", "-", input=gpu_nodes(taint=True))

    print(
        f"==> helm install kubetune charts/kubetune -n {stack.RELEASE_NAMESPACE} (the operator runs as a pod)"
    )
    stack.install_operator(KUBECONFIG, images, prometheus_url=node.prometheus_url)

    print("==> quickstart: base model made in a pod, then FineTuneJob + ModelDeployment")
    stack.seed_base_model(KUBECONFIG, images)
    stack.apply(KUBECONFIG, [quickstart.finetune_job(), quickstart.model_deployment(node.prometheus_url)])
    elapsed = time.monotonic() - started
    print(f"==> cluster up in {elapsed:.0f}s; following the pipeline (up to {watch_seconds:.0f}s)\n")
    if not _watch(watch_seconds):
        print("\n==> not promoted yet: the pipeline keeps running; `kubectl get kubetune -A` to follow it")
    else:
        print("\n==> answer of the tuned model, through the router:")
        print(ask_router(quickstart.QUESTION))
    router = f"svc/{quickstart.DEPLOYMENT}-router"
    print(
        f"\nexport KUBECONFIG={KUBECONFIG}\n"
        "kubectl get kubetune -A      # both kinds with their printer columns\n"
        f"kubectl port-forward -n {quickstart.NAMESPACE} {router} 8080:8080 &\n"
        "curl -s localhost:8080/v1/chat/completions -H 'content-type: application/json' \\\n"
        f'  -d \'{{"model": "{quickstart.DEPLOYMENT}", "max_tokens": 16, "temperature": 0, '
        f'"messages": [{{"role": "user", "content": "{quickstart.QUESTION}"}}]}}\'\n'
        "make dev-down                # stop everything"
    )
    return 0


def ask_router(question: str) -> str:
    """One chat completion through the router's Service, as a client in the cluster would send it."""
    url = stack.router_url(KUBECONFIG, quickstart.DEPLOYMENT, quickstart.NAMESPACE)
    try:
        return f"  Q: {question}\n  A: {stack.answer_of(stack.chat(url, question))}"
    except (RuntimeError, ValueError, KeyError, IndexError) as exc:
        return f"  (no answer: {exc})"


def _snapshot() -> str:
    """The pipeline's state without ages, so only real changes are printed."""
    resources = kubectl("get", "kubetune", "-n", quickstart.NAMESPACE, check=False, capture=True).stdout
    pods = kubectl(
        "get",
        "pods",
        "-A",
        "--sort-by=.metadata.creationTimestamp",
        "-o",
        "custom-columns=NAMESPACE:.metadata.namespace,POD:.metadata.name,PHASE:.status.phase,"
        "READY:.status.containerStatuses[0].ready,NODE:.spec.nodeName",
        check=False,
        capture=True,
    ).stdout
    lines = [line.rsplit(None, 1)[0] if line.split() else line for line in resources.splitlines()]
    return "\n".join(lines) + "\n\n" + pods.rstrip()


def _promoted() -> bool:
    out = kubectl(
        "get",
        "modeldeployment",
        quickstart.DEPLOYMENT,
        "-n",
        quickstart.NAMESPACE,
        "-o",
        "jsonpath={.status.conditions[?(@.type=='Promoted')].status}",
        check=False,
        capture=True,
    ).stdout
    return out.strip() == "True"


def _watch(seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    last = ""
    while time.monotonic() < deadline:
        out = _snapshot()
        if out != last:
            print(time.strftime("%H:%M:%S"), "-" * 60)
            print(out)
            last = out
        if _promoted():
            print("\n==> canary promoted: the fine-tuned variant takes all traffic")
            return True
        time.sleep(3)
    return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kubetune.dev", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    up_cmd = sub.add_parser("up", help="start the local cluster, operator and quickstart")
    up_cmd.add_argument(
        "--watch",
        type=float,
        default=float(os.environ.get("KUBETUNE_DEV_WATCH", "1800")),
        help="seconds to follow the pipeline before returning (default %(default)s)",
    )
    up_cmd.add_argument(
        "--network-policies",
        action="store_true",
        default=os.environ.get("KUBETUNE_DEV_NETWORK_POLICIES") == "1",
        help="enforce NetworkPolicies on the node (kube-router's policy controller; needs ipset)",
    )
    sub.add_parser("down", help="stop it and remove what it left on the machine")
    args = parser.parse_args(argv)
    if args.command == "down":
        return down()
    try:
        return up(args.watch, args.network_policies)
    except (NodeError, RuntimeError, subprocess.CalledProcessError) as exc:
        print(f"make dev failed: {exc}\n(logs under {STATE_DIR}; `make dev-down` cleans up)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
