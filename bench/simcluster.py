"""Shared by the scale and chaos benchmarks: a simulated GPU cluster, the operator as a
separate process, mass creation of FineTuneJobs and a watch that timestamps their Jobs."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kubetune.builders.common import LABEL_JOB, LABEL_ROLE
from kubetune.devcluster.controlplane import ControlPlane, operator_command, run_kubectl
from kubetune.devcluster.kwok import KwokController, gpu_nodes
from kubetune.kube.client import USER_AGENT, KubeClient, load_credentials

REPO = Path(__file__).resolve().parents[1]
NAMESPACE = "scale"


def ftj_manifest(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "kubetune.io/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "baseModel": {"uri": "Qwen/Qwen2.5-0.5B"},
            "dataset": {"uri": "configMap://scale-data/train.jsonl"},
            "output": {"uri": "s3://bucket/scale"},
            "resources": {"gpusPerNode": 1, "gpuType": "NVIDIA-A100-SXM4-80GB"},
        },
    }


@dataclass
class SimCluster:
    """Control plane (+ optional controllers and kwok nodes) and an operator subprocess."""

    controllers: bool
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="kubetune-bench-")))
    plane: ControlPlane | None = None
    kwok: KwokController | None = None
    operator: subprocess.Popen[bytes] | None = None
    operator_starts: int = 0

    def start(self) -> None:
        self.plane = ControlPlane(
            workdir=self.workdir / "plane", with_controllers=self.controllers, audit=True
        )
        self.plane.start()
        if self.controllers:
            self.kwok = KwokController(kubeconfig=self.plane.kubeconfig, workdir=self.workdir / "kwok")
            self.kwok.start()
            self.kubectl("apply", "-f", "-", input=gpu_nodes())
        self.kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
        for crd in ("finetunejobs.kubetune.io", "modeldeployments.kubetune.io"):
            self.kubectl("wait", "--for=condition=Established", "--timeout=60s", f"crd/{crd}")
        self.kubectl("create", "namespace", NAMESPACE)
        data = '{"instruction": "hi", "output": "hello"}\n'
        self.kubectl(
            "create", "configmap", "scale-data", "-n", NAMESPACE, f"--from-literal=train.jsonl={data}"
        )

    def kubectl(self, *args: str, input: str | None = None) -> str:
        assert self.plane is not None
        proc = run_kubectl(self.plane.kubeconfig, *args, input=input)
        if proc.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)}: {proc.stderr}")
        return proc.stdout

    def start_operator(self) -> None:
        assert self.plane is not None
        env = {**os.environ, "KUBECONFIG": str(self.plane.kubeconfig), "KUBETUNE_RESYNC_SECONDS": "60"}
        log = (self.workdir / "operator.log").open("ab")
        self.operator = subprocess.Popen(
            operator_command(NAMESPACE),
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        self.operator_starts += 1

    def kill_operator(self) -> None:
        if self.operator is not None and self.operator.poll() is None:
            os.killpg(self.operator.pid, signal.SIGKILL)
            self.operator.wait()

    def operator_rss_mib(self) -> float:
        """Peak resident set (VmHWM) of the running operator process."""
        if self.operator is None:
            return 0.0
        try:
            status = Path(f"/proc/{self.operator.pid}/status").read_text()
        except FileNotFoundError:
            return 0.0
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def cpu_seconds(self) -> dict[str, float]:
        """CPU time used so far by the operator and each control-plane process."""
        pids = {name: proc.pid for name, proc in (self.plane.processes.items() if self.plane else [])}
        if self.operator is not None:
            pids["operator"] = self.operator.pid
        ticks = os.sysconf("SC_CLK_TCK")
        result = {}
        for name, pid in pids.items():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except FileNotFoundError:
                continue
            result[name] = (int(fields[11]) + int(fields[12])) / ticks
        return result

    def operator_requests(self) -> Counter[str]:
        """API requests by the operator (kopf and our client), by verb, from the audit log."""
        assert self.plane is not None
        verbs: Counter[str] = Counter()
        with self.plane.audit_log.open() as log:
            for line in log:
                entry = json.loads(line)
                agent = entry.get("userAgent", "")
                if agent.startswith(USER_AGENT) or agent.startswith("kopf/"):
                    verbs[entry.get("verb", "?")] += 1
        return verbs

    def stop(self) -> None:
        self.kill_operator()
        if self.kwok is not None:
            self.kwok.stop()
        if self.plane is not None:
            self.plane.stop()

    async def client(self) -> KubeClient:
        assert self.plane is not None
        # Its own user agent: the audit count of operator requests must not include the benchmark's.
        return KubeClient(
            await load_credentials(str(self.plane.kubeconfig)), timeout=120, user_agent="kubetune-bench"
        )


async def create_all(client: KubeClient, names: list[str], concurrency: int = 32) -> dict[str, float]:
    """Create the FineTuneJobs; returns each one's creation time (monotonic, after the POST returned)."""
    created: dict[str, float] = {}
    gate = asyncio.Semaphore(concurrency)

    async def one(name: str) -> None:
        async with gate:
            for _ in range(20):
                try:
                    await client.create(ftj_manifest(name))
                    break
                except Exception:  # apiserver restarts in the chaos run
                    await asyncio.sleep(0.5)
            created[name] = time.monotonic()

    await asyncio.gather(*(one(n) for n in names))
    return created


async def watch_jobs(client: KubeClient, seen: dict[str, float], stop: asyncio.Event) -> None:
    """Record when each FineTuneJob's first Job appears, via a watch (re-listing after disconnects)."""
    path = f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs"
    while not stop.is_set():
        try:
            listing = await client.request("GET", path)
            now = time.monotonic()
            for job in listing.get("items", []):
                seen.setdefault(job["metadata"]["labels"].get(LABEL_JOB, ""), now)
            version = listing["metadata"]["resourceVersion"]
            params = {
                "watch": "1",
                "resourceVersion": version,
                "allowWatchBookmarks": "false",
                "timeoutSeconds": "60",
            }
            async with client.session.get(
                path, params=params, headers=await client.credentials.headers(), timeout=None
            ) as resp:
                async for raw in resp.content:
                    if stop.is_set():
                        return
                    event = json.loads(raw)
                    if event.get("type") == "ADDED":
                        labels = event["object"]["metadata"].get("labels", {})
                        seen.setdefault(labels.get(LABEL_JOB, ""), time.monotonic())
        except Exception:  # the chaos run restarts the apiserver under us
            await asyncio.sleep(0.5)


async def children_by_parent(client: KubeClient) -> dict[str, Counter[str]]:
    jobs = await client.list("batch/v1", "Job", NAMESPACE)
    result: dict[str, Counter[str]] = {}
    for job in jobs:
        labels = job["metadata"].get("labels", {})
        result.setdefault(labels.get(LABEL_JOB, ""), Counter())[labels.get(LABEL_ROLE, "?")] += 1
    return result


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))
    return ordered[index]


def dump(obj: Any) -> str:
    return yaml.safe_dump(obj, sort_keys=False)
