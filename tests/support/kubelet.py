"""Play the kubelet against the real control plane: fake GPU nodes and pod status written by hand.

The real scheduler binds pods to Node objects created here (no kubelet runs on them); tests then
move pods through their lifecycle by patching the status subresource the way a kubelet would
(running, succeeded/failed with an exit code and termination message, disrupted). A background
thread keeps the nodes' Leases fresh (without it the node lifecycle controller taints them
unreachable after the grace period) and finishes pods that are deleted while running: the API
server waits for the kubelet to confirm such deletions, and the Job controller writes a Job's
final `Failed` condition only once every pod of it has terminated.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubetune.kube.client import ApiError, KubeClient, load_credentials

GPU_PRODUCT = "NVIDIA-H100-80GB-HBM3"
LEASE_SECONDS = 40
RENEW_SECONDS = 5.0
REAP_SECONDS = 0.5
SIGTERM_EXIT = 143
SIGKILL_EXIT = 137
STRATEGIC = "application/strategic-merge-patch+json"


def stamp(when: datetime | None = None) -> str:
    return (when or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _micro(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def node_manifest(name: str, *, gpus: int, product: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "nvidia.com/gpu.product": product,
            },
        },
    }


def node_status(gpus: int) -> dict[str, Any]:
    capacity = {"cpu": "256", "memory": "2Ti", "pods": "500", "nvidia.com/gpu": str(gpus)}
    now = stamp()
    return {
        "capacity": capacity,
        "allocatable": capacity,
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "KubeletReady",
                "message": "fake kubelet (tests)",
                "lastHeartbeatTime": now,
                "lastTransitionTime": now,
            }
        ],
        "addresses": [{"type": "InternalIP", "address": "10.1.0.1"}],
        "nodeInfo": {
            "machineID": "fake",
            "systemUUID": "fake",
            "bootID": "fake",
            "kernelVersion": "6.0",
            "osImage": "fake",
            "containerRuntimeVersion": "fake://1",
            "kubeletVersion": "v1.34.0",
            "kubeProxyVersion": "v1.34.0",
            "operatingSystem": "linux",
            "architecture": "amd64",
        },
    }


class FakeKubelet:
    """Fake GPU nodes kept healthy, and the part of a kubelet that finishes deleted pods.

    Runs its own event loop and client in a thread, so that it keeps working while a test blocks
    (kubectl, stopping the operator).
    """

    def __init__(self, kubeconfig: str) -> None:
        self._kubeconfig = kubeconfig
        self._nodes: list[str] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fake-kubelet", daemon=True)
        self._client: KubeClient | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.errors: list[str] = []

    def __enter__(self) -> FakeKubelet:
        self._thread.start()
        self._call(self._start())
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            self._call(self._stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()

    def _call(self, coro: Any, timeout: float = 120.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    @property
    def client(self) -> KubeClient:
        assert self._client is not None
        return self._client

    async def _start(self) -> None:
        self._client = KubeClient(await load_credentials(self._kubeconfig))
        self._tasks = [asyncio.create_task(self._renew_leases()), asyncio.create_task(self._reap())]

    async def _stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for name in self._nodes:
            with contextlib.suppress(ApiError):
                await self.client.delete("v1", "Node", None, name)
        await self.client.close()

    def add_node(self, name: str, *, gpus: int = 8, product: str = GPU_PRODUCT) -> None:
        self._call(self._add_node(name, gpus, product))

    async def _add_node(self, name: str, gpus: int, product: str) -> None:
        await self.client.apply(node_manifest(name, gpus=gpus, product=product), field_manager="fake-kubelet")
        await self.client.patch_merge(
            "v1", "Node", None, name, {"status": node_status(gpus)}, subresource="status"
        )
        await self._renew(name)
        self._nodes.append(name)

    async def _renew(self, name: str) -> None:
        lease = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": name, "namespace": "kube-node-lease"},
            "spec": {
                "holderIdentity": name,
                "leaseDurationSeconds": LEASE_SECONDS,
                "renewTime": _micro(datetime.now(UTC)),
            },
        }
        await self.client.request(
            "PATCH",
            f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{name}",
            body=lease,
            content_type="application/apply-patch+yaml",
            params={"fieldManager": "fake-kubelet", "force": "true"},
        )

    async def _renew_leases(self) -> None:
        while True:
            for name in list(self._nodes):
                try:
                    await self._renew(name)
                except (ApiError, OSError) as exc:
                    self.errors.append(f"lease {name}: {exc}")
            await asyncio.sleep(RENEW_SECONDS)

    async def _reap(self) -> None:
        while True:
            await asyncio.sleep(REAP_SECONDS)
            for node in list(self._nodes):
                try:
                    listed = await self.client.request(
                        "GET", "/api/v1/pods", params={"fieldSelector": f"spec.nodeName={node}"}
                    )
                    for pod in listed.get("items", []):
                        if pod["metadata"].get("deletionTimestamp"):
                            await finish_deleted_pod(self.client, pod)
                except (ApiError, OSError) as exc:
                    self.errors.append(f"reap {node}: {exc}")


async def finish_deleted_pod(client: KubeClient, pod: Mapping[str, Any]) -> None:
    """What a kubelet does for a pod deleted while running: stop it (SIGTERM), report, confirm."""
    phase = (pod.get("status") or {}).get("phase")
    if phase not in ("Succeeded", "Failed"):
        await _patch_pod_status(client, pod, _terminated_status(pod, SIGTERM_EXIT, "", reason="Error"))
    meta = pod["metadata"]
    with contextlib.suppress(ApiError):
        await client.request(
            "DELETE",
            f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}",
            body={"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0},
        )


async def _patch_pod_status(client: KubeClient, pod: Mapping[str, Any], status: dict[str, Any]) -> None:
    meta = pod["metadata"]
    await client.request(
        "PATCH",
        f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}/status",
        body={"status": status},
        content_type=STRATEGIC,
    )


def _container_names(pod: Mapping[str, Any], key: str) -> list[tuple[str, str]]:
    return [(c["name"], c["image"]) for c in pod["spec"].get(key) or []]


def _container_status(name: str, image: str, state: dict[str, Any], *, ready: bool) -> dict[str, Any]:
    return {
        "name": name,
        "image": image,
        "imageID": "",
        "ready": ready,
        "started": "running" in state,
        "restartCount": 0,
        "state": state,
    }


def _init_done(pod: Mapping[str, Any], now: str) -> list[dict[str, Any]]:
    done = {"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": now, "finishedAt": now}}
    return [
        _container_status(name, image, done, ready=True)
        for name, image in _container_names(pod, "initContainers")
    ]


def _running_status(pod: Mapping[str, Any], ip: str) -> dict[str, Any]:
    now = stamp()
    conditions = [
        {"type": t, "status": "True", "lastTransitionTime": now}
        for t in ("PodReadyToStartContainers", "Initialized", "ContainersReady", "Ready")
    ]
    return {
        "phase": "Running",
        "podIP": ip,
        "podIPs": [{"ip": ip}],
        "hostIP": "10.1.0.1",
        "startTime": now,
        "conditions": conditions,
        "initContainerStatuses": _init_done(pod, now),
        "containerStatuses": [
            _container_status(name, image, {"running": {"startedAt": now}}, ready=True)
            for name, image in _container_names(pod, "containers")
        ],
    }


def _terminated_status(
    pod: Mapping[str, Any], exit_code: int, message: str, *, reason: str
) -> dict[str, Any]:
    now = stamp()
    terminated: dict[str, Any] = {
        "exitCode": exit_code,
        "reason": reason,
        "startedAt": now,
        "finishedAt": now,
    }
    if message:
        terminated["message"] = message
    conditions = [
        {"type": t, "status": "False", "reason": "PodCompleted" if exit_code == 0 else "PodFailed"}
        for t in ("ContainersReady", "Ready")
    ]
    status: dict[str, Any] = {
        "phase": "Succeeded" if exit_code == 0 else "Failed",
        "conditions": conditions,
        "initContainerStatuses": _init_done(pod, now),
        "containerStatuses": [
            _container_status(name, image, {"terminated": terminated}, ready=False)
            for name, image in _container_names(pod, "containers")
        ],
    }
    if not (pod.get("status") or {}).get("startTime"):
        status["startTime"] = now
    return status


async def job_pods(client: KubeClient, namespace: str, job: str) -> list[dict[str, Any]]:
    """The Job's live pods (not being deleted), by completion index."""
    pods = await client.list("v1", "Pod", namespace, label_selector=f"batch.kubernetes.io/job-name={job}")
    alive = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
    return sorted(
        alive,
        key=lambda p: int(
            p["metadata"].get("annotations", {}).get("batch.kubernetes.io/job-completion-index", "0")
        ),
    )


async def scheduled_pods(client: KubeClient, namespace: str, job: str, count: int) -> list[dict[str, Any]]:
    """`count` pods of the Job bound to a node by the scheduler, or [] (poll with aeventually)."""
    pods = await job_pods(client, namespace, job)
    bound = [p for p in pods if p["spec"].get("nodeName")]
    return bound if len(bound) == count else []


async def run_pods(client: KubeClient, pods: Sequence[Mapping[str, Any]]) -> None:
    """The containers started: phase Running, init containers done, an IP each."""
    for index, pod in enumerate(pods):
        await _patch_pod_status(client, pod, _running_status(pod, f"10.2.0.{index + 1}"))


async def finish_pod(client: KubeClient, pod: Mapping[str, Any], exit_code: int, message: str = "") -> None:
    """The main container exited: Succeeded on 0, else Failed, with the termination message."""
    reason = "Completed" if exit_code == 0 else "OOMKilled" if exit_code == SIGKILL_EXIT else "Error"
    await _patch_pod_status(client, pod, _terminated_status(pod, exit_code, message, reason=reason))


async def disrupt_pod(
    client: KubeClient, pod: Mapping[str, Any], reason: str = "PreemptionByScheduler"
) -> None:
    """Preemption as the scheduler does it: the DisruptionTarget condition, then a graceful delete."""
    await _patch_pod_status(
        client,
        pod,
        {
            "conditions": [
                {
                    "type": "DisruptionTarget",
                    "status": "True",
                    "reason": reason,
                    "message": "preempted by a higher-priority pod (tests)",
                    "lastTransitionTime": stamp(),
                }
            ]
        },
    )
    meta = pod["metadata"]
    await client.delete("v1", "Pod", meta["namespace"], meta["name"])


# Absolute paths the pod specs use; a locally run container sees them under its own root.
POD_PATH_PREFIXES = ("/etc/kubetune", "/mnt/kubetune")
MAX_TERMINATION_MESSAGE = 4096


def _relocate(text: str, root: Path) -> str:
    for prefix in POD_PATH_PREFIXES:
        text = text.replace(prefix, f"{root}{prefix}")
    return text


async def run_container(
    client: KubeClient, pod: Mapping[str, Any], container: str, root: Path
) -> tuple[int, str]:
    """Run one of the pod's containers as a local process, the way the kubelet would run it.

    ConfigMap volumes are materialised from the API server and emptyDirs created under `root`;
    the container's paths (and the files of its ConfigMaps) are relocated there. Only commands
    that start with `python` can run here (this interpreter stands in for the image's). Returns
    the exit code and the termination message (the log tail when the message file is empty and
    the container failed: terminationMessagePolicy FallbackToLogsOnError).
    """
    spec = next(c for c in pod["spec"]["containers"] if c["name"] == container)
    volumes = {v["name"]: v for v in pod["spec"].get("volumes") or []}
    namespace = pod["metadata"]["namespace"]
    for mount in spec.get("volumeMounts") or []:
        target = Path(f"{root}{mount['mountPath']}")
        target.mkdir(parents=True, exist_ok=True)
        source = volumes[mount["name"]].get("configMap")
        if source is None:
            continue
        config_map = await client.get("v1", "ConfigMap", namespace, source["name"])
        assert config_map is not None, f"ConfigMap {source['name']} of pod {pod['metadata']['name']}"
        data: dict[str, str] = config_map.get("data") or {}
        items = source.get("items") or [{"key": key, "path": key} for key in data]
        for item in items:
            (target / item["path"]).write_text(_relocate(data[item["key"]], root), encoding="utf-8")
    command = [_relocate(arg, root) for arg in spec["command"] + (spec.get("args") or [])]
    assert command[0] == "python", f"cannot run {command[0]} locally"
    termination_log = root / "termination-log"
    termination_log.write_text("")
    env = {e["name"]: _relocate(e["value"], root) for e in spec.get("env") or [] if "value" in e}
    env |= {"KUBETUNE_TERMINATION_LOG": str(termination_log), "PATH": os.environ.get("PATH", "")}
    # The code under test, not whichever kubetune the interpreter has installed (a worktree over a
    # shared virtualenv sets PYTHONPATH; the image's own is the one being tested).
    if os.environ.get("PYTHONPATH"):
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    proc = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, *command[1:]],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    message = termination_log.read_text(encoding="utf-8")
    if not message and proc.returncode != 0:
        message = (proc.stdout + proc.stderr)[-MAX_TERMINATION_MESSAGE:]
    return proc.returncode, message[:MAX_TERMINATION_MESSAGE]
