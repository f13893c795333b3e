"""The kubetune stack on the local real node, as `make dev` and the real-node e2e test install it:
images built and imported, the operator installed by `helm install charts/kubetune`, and a client
call through a ModelDeployment's router.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

from kubetune.devcluster import images as image_build
from kubetune.devcluster import quickstart
from kubetune.devcluster.controlplane import find_binary, run_kubectl
from kubetune.devcluster.node import LocalNode
from kubetune.devcluster.quickstart import DevImages

REPO = Path(__file__).resolve().parents[3]
RELEASE = "kubetune"
RELEASE_NAMESPACE = "kubetune-system"


def local_images(node: LocalNode) -> DevImages:
    """Build the images (cached by content hash) and import them into the node's containerd."""
    image_build.build([])
    refs = image_build.import_images(str(node.layout.containerd_socket))
    # Every source change makes new images: without this the node's store grows by GBs a run. Only
    # older tags of the repositories just imported go (never the pause image or a test's own).
    current = set(refs.values())
    repositories = {ref.rpartition(":")[0] for ref in current}
    stale = [
        ref
        for ref in node.image_references()
        if ref.rpartition(":")[0] in repositories and ref not in current
    ]
    if stale:
        node.ctr("images", "rm", *stale)
    return DevImages(
        operator=refs["operator"], trainer=refs["trainer"], router=refs["router"], vllm=refs["vllm-cpu"]
    )


def helm_values(images: DevImages, resync_seconds: int = 5, prometheus_url: str | None = None) -> list[str]:
    """`--set` flags pointing the chart at the local images (imported, never pulled), and canary
    analysis at the node's Prometheus (the only URL the operator may then query)."""

    def image(prefix: str, ref: str) -> list[str]:
        repository, _, tag = ref.rpartition(":")
        return ["--set", f"{prefix}.repository={repository}", "--set", f"{prefix}.tag={tag}"]

    return [
        *image("operator.image", images.operator),
        *image("images.trainer", images.trainer),
        *image("images.vllm", images.vllm),
        *image("router.image", images.router),
        "--set",
        "operator.image.pullPolicy=Never",
        "--set",
        "router.replicas=1",
        "--set",
        "operator.extraEnv[0].name=KUBETUNE_RESYNC_SECONDS",
        "--set-string",
        f"operator.extraEnv[0].value={resync_seconds}",
        *(["--set-json", f'analysis.prometheusUrls=["{prometheus_url}"]'] if prometheus_url else []),
    ]


def install_operator(
    kubeconfig: Path, images: DevImages, timeout: str = "5m", *, prometheus_url: str | None = None
) -> None:
    """`helm upgrade --install` of the chart as a user runs it; returns once the operator pod is Ready."""
    subprocess.run(
        [
            str(find_binary("helm")),
            "upgrade",
            "--install",
            RELEASE,
            str(REPO / "charts" / "kubetune"),
            "--namespace",
            RELEASE_NAMESPACE,
            "--create-namespace",
            "--wait",
            "--timeout",
            timeout,
            *helm_values(images, prometheus_url=prometheus_url),
        ],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "KUBECONFIG": str(kubeconfig)},
    )


def apply(kubeconfig: Path, documents: list[dict[str, Any]]) -> None:
    """Server-side apply of `documents`, as a user's `kubectl apply --server-side` does."""
    proc = run_kubectl(
        kubeconfig, "apply", "--server-side", "-f", "-", input="\n".join(json.dumps(d) for d in documents)
    )
    if proc.returncode != 0:
        raise RuntimeError(f"kubectl apply failed: {proc.stderr.strip()}")


def seed_base_model(kubeconfig: Path, images: DevImages, timeout_s: int = 600) -> None:
    """The quickstart's claim and data, and its tiny base model made by a Job in the trainer image."""
    apply(kubeconfig, [*quickstart.storage_and_data(), quickstart.seed_job(images)])
    proc = run_kubectl(
        kubeconfig,
        "wait",
        "-n",
        quickstart.NAMESPACE,
        "--for=condition=Complete",
        f"--timeout={timeout_s}s",
        f"job/{quickstart.SEED_JOB}",
        timeout=timeout_s + 30,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"the base model Job did not complete: {proc.stderr.strip()}")


def router_url(kubeconfig: Path, deployment: str, namespace: str) -> str:
    """The router Service's ClusterIP URL (kube-proxy routes it from this machine too)."""
    proc = run_kubectl(kubeconfig, "get", "svc", f"{deployment}-router", "-n", namespace, "-o", "json")
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr)
    spec = json.loads(proc.stdout)["spec"]
    return f"http://{spec['clusterIP']}:{spec['ports'][0]['port']}"


def chat(
    url: str, question: str, *, user: str | None = None, max_tokens: int = 16, timeout: float = 60
) -> dict[str, Any]:
    """One chat completion, as a client sends it (sticky header when `user` is given)."""
    body = {
        "model": "kubetune",
        "max_tokens": max_tokens,
        "temperature": 0,
        "messages": [{"role": "user", "content": question}],
    }
    headers = ["-H", "content-type: application/json"]
    if user is not None:
        headers += ["-H", f"x-user-id: {user}"]
    proc = subprocess.run(
        [
            "curl",
            "-sS",
            "--max-time",
            str(timeout),
            f"{url}/v1/chat/completions",
            *headers,
            "-d",
            json.dumps(body),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"curl failed ({proc.returncode}): {proc.stderr.strip()}")
    reply: dict[str, Any] = json.loads(proc.stdout)
    return reply


def answer_of(reply: dict[str, Any]) -> str:
    return str(reply["choices"][0]["message"]["content"])
