"""Serving chaos on the real node: steady open-loop load through the router while one fault at a time hits.

The stack is `make dev`'s (`kubetune.dev up`: control plane, the real node, our images, the chart, the
quickstart FineTuneJob trained on CPU); the quickstart's own ModelDeployment is removed after it
promoted and the bench serves its own (`chaos`) from the same base model and trained FineTuneJob.
A steady open-loop load (plain and streaming chat completions, half each) flows through the router's
Service while, one scenario at a time:

- pod-delete: one of three pods of the only routed variant is deleted;
- drain: the node hosting a replica is drained. There is one real node, so draining it evicts every pod
  (the router's and operator's included) with nowhere to go; the bench does what a drain does to one
  replica instead: evicts it through the eviction API, which honours the variant's PodDisruptionBudget;
- hpa: the variant's HorizontalPodAutoscaler range moves 1 -> 2 -> 1 replicas (no metrics server here,
  so the HPA is driven through its bounds, which the HPA controller then enforces on the scale subresource);
- router-delete: one of the two router pods is deleted;
- prometheus-stop: Prometheus is frozen (SIGSTOP) while the canary at 25% waits for its analysis;
- operator-kill: the operator's process is killed with SIGKILL while the canary is at a step;
- abort-promoted: `traffic.canary.abort` on a promoted canary (the stable scaled to 0);
- canary-rollback: the canary at 25% answers with errors (its pods' connections refused by iptables);
- ftj-delete: the canary's FineTuneJob is deleted mid-canary (last: it is trained again afterwards).

Per scenario: requests sent, failed (5xx, reset, timeout, a stream without its end), p99 latency added
over the seconds before the fault, and the time from the fault to the scenario's end state (`-` when
it was not reached within the scenario's limit). The last line is machine-readable:
`serving_chaos: scenarios=<n> failed_requests=<k> worst=<scenario>`.

    PYTHONPATH=operator .venv/bin/python bench/serving_chaos.py [--only pod-delete,hpa] [--keep]

Needs root, the Go-built binaries, the images (`make images`) and Prometheus, like `make dev`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from kubetune import dev
from kubetune.devcluster import images as image_build
from kubetune.devcluster import quickstart, stack
from kubetune.devcluster.controlplane import find_binary
from kubetune.devcluster.nodeconfig import NodeLayout
from kubetune.devcluster.quickstart import DevImages

NS = quickstart.NAMESPACE
MD = "chaos"
RATE = 2.0
"""Requests per second of the open-loop load (two shared cores and vLLM CPU: keep it light)."""
REQUEST_TIMEOUT_S = 60.0
BASELINE_S = 15.0
SETTLE_S = 10.0


# --- cluster access --------------------------------------------------------------------------------


def kubectl(*args: str, check: bool = True, input: str | None = None) -> str:
    proc = dev.kubectl(*args, check=False, capture=True, input=input)
    if check and proc.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)}: {proc.stderr.strip()}")
    return proc.stdout


def get_json(*args: str) -> dict[str, Any]:
    out = kubectl("get", *args, "-o", "json", check=False)
    return dict(json.loads(out)) if out.strip() else {}


def md_status() -> dict[str, Any]:
    return dict(get_json("modeldeployment", MD, "-n", NS).get("status") or {})


def condition(type_: str) -> dict[str, Any]:
    return next((c for c in md_status().get("conditions", []) if c["type"] == type_), {})


def pods(variant: str, *, terminating: bool = False) -> list[dict[str, Any]]:
    items = get_json("pods", "-n", NS, "-l", f"kubetune.io/deployment={MD},kubetune.io/variant={variant}")
    return [p for p in items.get("items", []) if terminating or not p["metadata"].get("deletionTimestamp")]


def ready_pods(variant: str) -> int:
    return sum(
        1
        for p in pods(variant)
        if any(
            c["type"] == "Ready" and c["status"] == "True" for c in p.get("status", {}).get("conditions", [])
        )
    )


def weights() -> dict[str, int]:
    return {v["name"]: int(v.get("weight", 0)) for v in md_status().get("variants", [])}


def canary_weight() -> int:
    return int((md_status().get("canary") or {}).get("weight", 0))


def wait(predicate: Callable[[], bool], timeout: float, what: str, interval: float = 2.0) -> float | None:
    """Seconds until `predicate` held, or None after `timeout`."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            if predicate():
                return time.monotonic() - started
        except (RuntimeError, KeyError, ValueError) as exc:
            print(f"    ({what}: {exc})", flush=True)
        time.sleep(interval)
    print(f"    {what}: not within {timeout:.0f}s", flush=True)
    return None


def apply(documents: list[dict[str, Any]]) -> None:
    stack.apply(dev.KUBECONFIG, documents)


def patch_md(patch: dict[str, Any]) -> None:
    kubectl("patch", "modeldeployment", MD, "-n", NS, "--type=merge", "-p", json.dumps(patch))


# --- the ModelDeployments the scenarios start from -------------------------------------------------


def _variant(name: str, replicas: int, **extra: Any) -> dict[str, Any]:
    model = (
        {"uri": f"pvc://{quickstart.CLAIM}/{quickstart.BASE_MODEL_PATH}"}
        if name == "stable"
        else {"finetuneJobRef": {"name": quickstart.JOB}}
    )
    return {
        "name": name,
        "model": model,
        "replicas": replicas,
        "vllm": {"dtype": "float32", "maxModelLen": 256, "extraArgs": ["--enforce-eager"]},
        "resources": {"gpus": 0, "memory": "3Gi"},
        **extra,
    }


def single_variant(replicas: int, autoscaling: dict[str, int] | None = None) -> dict[str, Any]:
    extra = {"weight": 100} | ({"autoscaling": autoscaling} if autoscaling else {})
    return _md([_variant("stable", replicas, **extra)], None)


def with_canary(steps: list[int], interval: str, failure_limit: int = 2, **canary: Any) -> dict[str, Any]:
    """Steps of a minute: the routers turn Ready only once the kubelet updated their ConfigMap, and a
    scenario needs the canary at 25% with its routers serving."""
    node_prometheus = "http://10.88.0.1:9090"
    spec = {
        "stableVariant": "stable",
        "canaryVariant": "tuned",
        "steps": steps,
        "interval": interval,
        "failureLimit": failure_limit,
        "analysis": {
            "prometheusUrl": node_prometheus,
            "maxErrorRate": 0.05,
            "minRequests": 5,
            "syntheticTraffic": {"enabled": True, "requestsPerSecond": 1},
        },
        **canary,
    }
    return _md([_variant("stable", 1), _variant("tuned", 1)], spec)


def _md(variants: list[dict[str, Any]], canary: dict[str, Any] | None) -> dict[str, Any]:
    traffic: dict[str, Any] = {"provider": "router", "routerReplicas": 2}
    if canary is not None:
        traffic["canary"] = canary
    return {
        "apiVersion": "kubetune.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": MD, "namespace": NS},
        "spec": {
            "variants": variants,
            "traffic": traffic,
            "smokeTest": {"prompts": [quickstart.QUESTION], "maxTokens": 8, "minStopFraction": 0},
        },
    }


def replace_md(document: dict[str, Any]) -> None:
    """A fresh ModelDeployment (its canary state starts over), every old pod gone first."""
    kubectl("delete", "modeldeployment", MD, "-n", NS, "--ignore-not-found", "--wait=true")
    gone = wait(
        lambda: not pods("stable", terminating=True) and not pods("tuned", terminating=True),
        180,
        "old pods gone",
    )
    if gone is not None:
        # kube-proxy drops the old endpoints' rules a moment later: a smoke test that reached a reused
        # pod IP through them would fail the new variant for good.
        time.sleep(5)
    apply([document])


def router_ready() -> bool:
    deployment = get_json("deployment", f"{MD}-router", "-n", NS)
    return int((deployment.get("status") or {}).get("readyReplicas", 0)) >= 2


def serving(variant: str, replicas: int) -> Callable[[], bool]:
    def check() -> bool:
        return ready_pods(variant) >= replicas and weights().get(variant, 0) > 0 and router_ready()

    return check


# --- the load --------------------------------------------------------------------------------------


@dataclass
class Sample:
    started: float
    latency: float
    ok: bool
    stream: bool
    error: str = ""


@dataclass
class Load:
    """Open-loop: a request starts every 1/RATE seconds whether or not earlier ones have answered."""

    url: str
    samples: list[Sample] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self._thread.start()

    def stop(self) -> list[Sample]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(REQUEST_TIMEOUT_S + 10)
        return sorted(self.samples, key=lambda s: s.started)

    async def _run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            tasks: set[asyncio.Task[None]] = set()
            n = 0
            next_at = time.monotonic()
            while not self._stop.is_set():
                task = asyncio.create_task(self._one(session, stream=n % 2 == 1, user=f"user-{n % 50}"))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                n += 1
                next_at += 1.0 / RATE
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)

    async def _one(self, session: aiohttp.ClientSession, *, stream: bool, user: str) -> None:
        body = {
            "model": "kubetune",
            "max_tokens": 8,
            "temperature": 0,
            "stream": stream,
            "messages": [{"role": "user", "content": quickstart.QUESTION}],
        }
        started = time.monotonic()
        ok, error = False, ""
        try:
            async with session.post(
                f"{self.url}/v1/chat/completions", json=body, headers={"x-user-id": user}
            ) as response:
                text = await response.text()
                if response.status != 200:
                    error = f"HTTP {response.status}"
                elif stream and "[DONE]" not in text:
                    error = "stream ended early"
                else:
                    ok = True
        except TimeoutError:
            error = "timeout"
        except aiohttp.ClientError as exc:
            error = type(exc).__name__
        self.samples.append(Sample(started, time.monotonic() - started, ok, stream, error))


# --- scenarios -------------------------------------------------------------------------------------


@dataclass
class Result:
    name: str
    sent: int
    failed: int
    p99_added_ms: float
    to_end_s: float | None
    errors: dict[str, int]
    note: str = ""


def p99(values: list[float]) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


def run_scenario(
    name: str, fault: Callable[[], None], end: Callable[[], bool], limit_s: float, note: str = ""
) -> Result:
    url = stack.router_url(dev.KUBECONFIG, MD, NS)
    load = Load(url)
    print(f"==> {name}: load {RATE:g} req/s through {url}", flush=True)
    load.start()
    time.sleep(BASELINE_S)
    faulted_at = time.monotonic()
    fault()
    to_end = wait(end, limit_s, f"{name} end state")
    time.sleep(SETTLE_S)
    samples = load.stop()
    before = [s.latency for s in samples if s.ok and s.started < faulted_at]
    during = [s.latency for s in samples if s.ok and s.started >= faulted_at]
    errors: dict[str, int] = {}
    for s in samples:
        if not s.ok:
            errors[s.error] = errors.get(s.error, 0) + 1
    result = Result(
        name,
        len(samples),
        sum(errors.values()),
        max(0.0, p99(during) - p99(before)) * 1000,
        to_end,
        errors,
        note,
    )
    print("    " + row(result), flush=True)
    return result


def operator_pid() -> int:
    """The operator container's process on this machine (the node runs it), from the CRI."""
    crictl = str(find_binary("crictl"))
    endpoint = f"unix://{NodeLayout().containerd_socket}"
    ids = subprocess.run(
        [crictl, "--runtime-endpoint", endpoint, "ps", "-q", "--name", "operator", "--state", "running"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    info = json.loads(
        subprocess.run(
            [crictl, "--runtime-endpoint", endpoint, "inspect", ids[0]],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    return int(info["info"]["pid"])


def prometheus_pid() -> int:
    return int(json.loads(dev.STATE.read_text())["pids"]["prometheus"])


def evict(pod: str) -> None:
    body = {
        "apiVersion": "policy/v1",
        "kind": "Eviction",
        "metadata": {"name": pod, "namespace": NS},
    }
    kubectl(
        "create", "--raw", f"/api/v1/namespaces/{NS}/pods/{pod}/eviction", "-f", "-", input=json.dumps(body)
    )


def canary_at(weight: int) -> Callable[[], bool]:
    return lambda: canary_weight() == weight and ready_pods("stable") >= 1 and router_ready()


def promoted() -> bool:
    return condition("Promoted").get("status") == "True"


def scenario_pod_delete() -> Result:
    replace_md(single_variant(3))
    wait(serving("stable", 3), 600, "three stable pods serving")
    victim = pods("stable")[0]["metadata"]["name"]
    return run_scenario(
        "pod-delete",
        lambda: kubectl("delete", "pod", victim, "-n", NS, "--wait=false"),
        lambda: ready_pods("stable") == 3 and condition("Available").get("status") == "True",
        300,
    )


def scenario_drain() -> Result:
    wait(serving("stable", 3), 600, "three stable pods serving")
    victim = pods("stable")[0]["metadata"]["name"]
    return run_scenario(
        "drain",
        lambda: evict(victim),
        lambda: ready_pods("stable") == 3 and condition("Available").get("status") == "True",
        300,
        note="one node: the replica is evicted through the eviction API (PDB honoured), not the node drained",
    )


def scenario_router_delete() -> Result:
    wait(serving("stable", 1), 600, "stable serving")
    routers = get_json("pods", "-n", NS, "-l", f"kubetune.io/deployment={MD},kubetune.io/role=router")
    names = [p["metadata"]["name"] for p in routers.get("items", [])]
    return run_scenario(
        "router-delete",
        lambda: kubectl("delete", "pod", names[0], "-n", NS, "--wait=false"),
        router_ready,
        120,
    )


def scenario_hpa() -> Result:
    replace_md(single_variant(1, {"minReplicas": 1, "maxReplicas": 3}))
    wait(serving("stable", 1), 600, "stable serving")

    def scale() -> None:
        patch_md(
            {
                "spec": {
                    "variants": [
                        _variant("stable", 1, weight=100, autoscaling={"minReplicas": 2, "maxReplicas": 3})
                    ]
                }
            }
        )
        wait(lambda: ready_pods("stable") >= 2, 300, "HPA scaled up to 2")
        patch_md(
            {
                "spec": {
                    "variants": [
                        _variant("stable", 1, weight=100, autoscaling={"minReplicas": 1, "maxReplicas": 1})
                    ]
                }
            }
        )

    return run_scenario(
        "hpa",
        scale,
        lambda: len(pods("stable")) == 1 and ready_pods("stable") == 1,
        300,
        note="no metrics server: the HPA's bounds move 1 -> 2 -> 1 and the HPA controller scales",
    )


def scenario_prometheus_stop() -> Result:
    # Steps of 90 s: Prometheus stops before the step's first analysis; two analyses without a verdict
    # pause the canary where the operator knows `noVerdictLimit` (main's CRD does not: applied without).
    document = with_canary([25, 100], "90s")
    document["spec"]["traffic"]["canary"]["analysis"]["noVerdictLimit"] = 2
    try:
        replace_md(document)
    except RuntimeError:
        del document["spec"]["traffic"]["canary"]["analysis"]["noVerdictLimit"]
        apply([document])
    wait(canary_at(25), 600, "canary at 25%")
    pid = prometheus_pid()

    def paused() -> bool:
        return any(c.get("reason") == "AnalysisStalled" for c in md_status().get("conditions", []))

    try:
        return run_scenario(
            "prometheus-stop",
            lambda: os.kill(pid, signal.SIGSTOP),
            paused,
            420,
            note="end state: the canary paused with a condition naming the cause",
        )
    finally:
        os.kill(pid, signal.SIGCONT)


def scenario_operator_kill() -> Result:
    # Continues the canary of prometheus-stop at 25%: kill -9 mid-step, the end state is the promotion.
    wait(canary_at(25), 300, "canary at 25%")
    return run_scenario(
        "operator-kill",
        lambda: os.kill(operator_pid(), signal.SIGKILL),
        lambda: promoted() and ready_pods("tuned") >= 1,
        420,
    )


def scenario_abort_promoted() -> Result:
    wait(lambda: promoted() and router_ready(), 420, "canary promoted")
    return run_scenario(
        "abort-promoted",
        lambda: patch_md({"spec": {"traffic": {"canary": {"abort": True}}}}),
        lambda: weights().get("stable") == 100 and ready_pods("stable") >= 1 and not pods("tuned"),
        300,
    )


def scenario_canary_rollback() -> Result:
    replace_md(with_canary([25, 100], "120s", failure_limit=1))
    wait(canary_at(25), 600, "canary at 25%")
    ips = [p["status"]["podIP"] for p in pods("tuned")]
    rules = [["FORWARD", "-d", ip, "-p", "tcp", "-j", "REJECT", "--reject-with", "tcp-reset"] for ip in ips]

    def inject() -> None:
        for rule in rules:
            subprocess.run(["iptables", "-I", *rule], check=True)

    try:
        return run_scenario(
            "canary-rollback",
            inject,
            lambda: condition("CanaryRolledBack").get("status") == "True" and weights().get("tuned", 0) == 0,
            300,
        )
    finally:
        for rule in rules:
            subprocess.run(["iptables", "-D", *rule], check=False)


def scenario_ftj_delete() -> Result:
    replace_md(with_canary([25, 100], "10m"))
    wait(canary_at(25), 600, "canary at 25%")
    job = get_json("finetunejob", quickstart.JOB, "-n", NS)
    try:
        return run_scenario(
            "ftj-delete",
            lambda: kubectl("delete", "finetunejob", quickstart.JOB, "-n", NS, "--wait=false"),
            lambda: weights().get("stable") == 100 and ready_pods("stable") >= 1,
            300,
        )
    finally:
        kubectl("delete", "modeldeployment", MD, "-n", NS, "--ignore-not-found", "--wait=false", check=False)
        if job:
            print("    (the FineTuneJob is trained again for later runs)", flush=True)
            apply([quickstart.finetune_job()])


SCENARIOS: dict[str, Callable[[], Result]] = {
    "pod-delete": scenario_pod_delete,
    "drain": scenario_drain,
    "router-delete": scenario_router_delete,
    "hpa": scenario_hpa,
    "prometheus-stop": scenario_prometheus_stop,
    "operator-kill": scenario_operator_kill,
    "abort-promoted": scenario_abort_promoted,
    "canary-rollback": scenario_canary_rollback,
    "ftj-delete": scenario_ftj_delete,
}


# --- the stack -------------------------------------------------------------------------------------


def use_dev_dir(directory: Path) -> None:
    """Drive the stack another checkout's `make dev` started (its `.dev` directory)."""
    dev.STATE_DIR = directory
    dev.STATE = directory / "state.json"
    dev.KUBECONFIG = directory / "cluster" / "kubeconfig"


def upgrade_operator() -> None:
    """This checkout's images (cached by content hash) into the node, and the chart upgraded to them."""
    image_build.build([])
    refs = image_build.import_images(str(NodeLayout().containerd_socket))
    images = DevImages(
        operator=refs["operator"], trainer=refs["trainer"], router=refs["router"], vllm=refs["vllm-cpu"]
    )
    stack.install_operator(dev.KUBECONFIG, images)
    # `helm upgrade` leaves CRDs as they were: new fields would be pruned from spec and status.
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(stack.REPO / "crds"))
    print(f"==> operator upgraded to {images.operator}, router {images.router}", flush=True)
    # Older tags of the repositories just imported go, as `make dev` does (the node's store is GBs).
    ctr = ["ctr", "--address", str(NodeLayout().containerd_socket), "-n", "k8s.io", "images"]
    listed = subprocess.run([*ctr, "ls", "-q"], capture_output=True, text=True, check=False).stdout.split()
    current = set(refs.values())
    repositories = {ref.rpartition(":")[0] for ref in current}
    stale = [ref for ref in listed if ref.rpartition(":")[0] in repositories and ref not in current]
    if stale:
        subprocess.run([*ctr, "rm", *stale], capture_output=True, check=False)


def ensure_stack(upgrade: bool) -> None:
    """`make dev`'s stack, reused when it runs; the quickstart's own ModelDeployment removed once promoted."""
    alive = dev.STATE.exists() and kubectl("get", "--raw", "/readyz", check=False).strip() == "ok"
    if not alive and dev.up(watch_seconds=1) != 0:
        raise RuntimeError("the stack did not come up")
    if alive and upgrade:
        upgrade_operator()
    kubectl(
        "delete", "modeldeployment", quickstart.DEPLOYMENT, "-n", NS, "--ignore-not-found", "--wait=false"
    )
    wait(
        lambda: (
            get_json("finetunejob", quickstart.JOB, "-n", NS).get("status", {}).get("phase") == "Succeeded"
        ),
        1200,
        "quickstart FineTuneJob Succeeded",
    )


HEADER = f"{'scenario':<16} {'sent':>6} {'failed':>7} {'p99 added':>10} {'to end state':>13}  errors / note"


def row(r: Result) -> str:
    end = "-" if r.to_end_s is None else f"{r.to_end_s:.0f} s"
    detail = ", ".join(f"{k}: {v}" for k, v in sorted(r.errors.items()))
    return (
        f"{r.name:<16} {r.sent:>6} {r.failed:>7} {r.p99_added_ms:>8.0f}ms {end:>13}  "
        f"{'; '.join(x for x in (detail, r.note) if x)}"
    )


def table(results: list[Result]) -> str:
    return "\n".join([HEADER, "-" * len(HEADER), *(row(r) for r in results)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", default="", help="comma-separated scenarios (default: all, in order)")
    parser.add_argument(
        "--keep", action="store_true", help="leave the stack running (default: make dev-down)"
    )
    parser.add_argument("--dev-dir", type=Path, help="the .dev directory of a running stack (default: ours)")
    parser.add_argument(
        "--upgrade", action="store_true", help="a running stack: import this checkout's images, helm upgrade"
    )
    args = parser.parse_args(argv)
    if args.dev_dir is not None:
        use_dev_dir(args.dev_dir.resolve())
    chosen = [s for s in args.only.split(",") if s] or list(SCENARIOS)
    unknown = set(chosen) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    results: list[Result] = []
    try:
        ensure_stack(args.upgrade)
        for name in chosen:
            try:
                results.append(SCENARIOS[name]())
            except (RuntimeError, subprocess.CalledProcessError, IndexError, KeyError) as exc:
                print(f"    {name} could not run: {exc}", flush=True)
    finally:
        if not args.keep:
            dev.down()
    print()
    print(table(results))
    failed = sum(r.failed for r in results)
    worst = max(results, key=lambda r: (r.failed, r.p99_added_ms)).name if results else "-"
    print(f"serving_chaos: scenarios={len(results)} failed_requests={failed} worst={worst}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
