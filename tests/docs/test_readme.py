"""Every command in README.md's shell blocks is exercised: each must match one kind below, and each
kind has a check that runs it (against the real API server, dry-run where it would change
something), renders it (helm), or holds it against what it names (images, Services, ports)."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from tests.chart.helm import KUBE_VERSION, helm
from tests.integration.test_modeldeployment_reconcile import GOMOD, PROMETHEUS_OPERATOR, established
from tests.support.cluster import REPO, Kube

from kubetune import dev
from kubetune.builders.router import ROUTER_PORT, build_router_service
from kubetune.devcluster import imageplan as plan
from kubetune.devcluster import images
from kubetune.devcluster.controlplane import find_binary

README = REPO / "README.md"
PROMETHEUS_CRD = "example/prometheus-operator-crd/monitoring.coreos.com_prometheuses.yaml"
README_NAMESPACE = "llm"  # the namespace the README creates; the tests use a fresh one instead


def readme_commands() -> list[list[str]]:
    """The commands of every ```sh block, continuation lines joined, comments dropped, tokenized."""
    commands: list[list[str]] = []
    for block in re.findall(r"```sh\n(.*?)```", README.read_text(), flags=re.DOTALL):
        for line in block.replace("\\\n", " ").splitlines():
            tokens = shlex.split(line, comments=True)
            if tokens:
                commands.append(tokens)
    return commands


COMMANDS = readme_commands()

KINDS: dict[str, Callable[[list[str]], bool]] = {
    "make": lambda t: t[0] == "make",
    "export": lambda t: t[0] == "export",
    "helm install": lambda t: t[:2] == ["helm", "install"],
    "kubectl change": lambda t: t[0] == "kubectl" and t[1] in ("apply", "create", "patch"),
    "kubectl read": lambda t: t[0] == "kubectl" and t[1] in ("get", "describe"),
    "kubectl rollout status": lambda t: t[:3] == ["kubectl", "rollout", "status"],
    "kubectl port-forward": lambda t: t[:2] == ["kubectl", "port-forward"],
    "curl": lambda t: t[0] == "curl",
    "skopeo copy": lambda t: t[:2] == ["skopeo", "copy"],
    "image build": lambda t: "kubetune.devcluster.images" in t,
}


def of_kind(kind: str) -> list[list[str]]:
    return [c for c in COMMANDS if KINDS[kind](c)]


def ids(commands: list[list[str]]) -> list[str]:
    return [" ".join(c)[:60] for c in commands]


def only(kind: str) -> list[str]:
    (command,) = of_kind(kind)
    return command


def test_every_command_is_of_exactly_one_checked_kind() -> None:
    assert len(COMMANDS) > 20
    uncovered = [" ".join(c) for c in COMMANDS if sum(match(c) for match in KINDS.values()) != 1]
    assert uncovered == []
    assert all(of_kind(kind) for kind in KINDS), "a kind no command uses: drop its check"


def test_the_first_two_commands_stay_make_dev_and_make_test() -> None:
    assert COMMANDS[:2] == [["make", "dev"], ["make", "test"]]


# --- make, the dev cluster, image builds ---------------------------------------------------------


def flag(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def setting(command: list[str], prefix: str) -> str:
    """The value of `prefix=...` among a command's tokens (`--set` assignments, make variables)."""
    (value,) = [t.split("=", 1)[1] for t in command if t.startswith(f"{prefix}=")]
    return value


REGISTRY = next(setting(c, "REGISTRY") for c in of_kind("make") if any(t.startswith("REGISTRY=") for t in c))


@pytest.mark.parametrize("command", of_kind("make"), ids=ids(of_kind("make")))
def test_make_targets_exist_and_expand(command: list[str]) -> None:
    proc = subprocess.run(
        ["make", "-n", *command[1:]], cwd=REPO, capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    if "PUSH=1" in command:
        assert "kubetune.devcluster.images build" in proc.stdout
        assert f"--push {setting(command, 'REGISTRY')}" in proc.stdout


def test_the_dev_kubeconfig_is_where_make_dev_writes_it() -> None:
    (command,) = of_kind("export")
    assert command[1] == f"KUBECONFIG={dev.KUBECONFIG.relative_to(REPO)}"


def test_the_cuda_trainer_build_parses_and_pushes_where_the_chart_looks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    command = only("image build")
    assert command[:4] == ["PYTHONPATH=operator", "python3", "-m", "kubetune.devcluster.images"]
    calls: list[dict[str, Any]] = []

    def fake_build(names: list[str], **kwargs: Any) -> dict[str, Any]:
        calls.append({"names": names, **kwargs})
        return {}

    monkeypatch.setattr(images, "build", fake_build)
    assert images.main(command[4:]) == 0
    (call,) = calls
    assert set(call["names"]) <= {spec.name for spec in plan.IMAGES}
    assert call["local_bases"] is False  # the CUDA bases
    assert call["push"] == REGISTRY == helm_set("global.imageRegistry")


# --- helm --------------------------------------------------------------------------------------------


def helm_set(key: str) -> str:
    command = only("helm install")
    return setting(
        [flag_value for i, flag_value in enumerate(command) if i and command[i - 1] == "--set"], key
    )


def template_of(command: list[str]) -> list[str]:
    """`helm install` → `helm template` with the same release, chart and flags (no cluster needed)."""
    args = [a for a in command[2:] if a != "--create-namespace"]
    return ["template", *args, "--kube-version", KUBE_VERSION]


@pytest.fixture(scope="module")
def installed() -> dict[str, list[dict[str, Any]]]:
    """The objects the README's `helm install` creates, by kind."""
    proc = subprocess.run(
        [str(helm_binary()), *template_of(only("helm install"))],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    objects: dict[str, list[dict[str, Any]]] = {}
    for doc in yaml.safe_load_all(proc.stdout):
        if doc:
            objects.setdefault(doc["kind"], []).append(doc)
    return objects


def helm_binary() -> Path:
    return find_binary("helm")


def operator_env(installed: dict[str, list[dict[str, Any]]]) -> dict[str, str]:
    (deployment,) = installed["Deployment"]
    return {e["name"]: e["value"] for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}


def test_helm_install_renders_what_kube_prometheus_stack_selects(
    installed: dict[str, list[dict[str, Any]]],
) -> None:
    env = operator_env(installed)
    assert json.loads(env["KUBETUNE_MONITOR_LABELS"]) == {"release": "kube-prometheus-stack"}
    for kind in ("ServiceMonitor", "PrometheusRule"):
        (monitor,) = installed[kind]
        assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack", kind
    assert {cm["metadata"]["namespace"] for cm in installed["ConfigMap"]} == {"monitoring"}
    for name in ("KUBETUNE_TRAINER_IMAGE", "KUBETUNE_ROUTER_IMAGE", "KUBETUNE_VLLM_IMAGE"):
        assert env[name].startswith(f"{REGISTRY}/"), (name, env[name])


def test_helm_install_flags_pass_lint() -> None:
    command = only("helm install")
    flags = [a for a in command[4:] if a not in ("--create-namespace",)]
    flags = [f for i, f in enumerate(flags) if f != "-n" and (i == 0 or flags[i - 1] != "-n")]
    proc = helm("lint", "--strict", str(REPO / command[3]), *flags)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_rollout_status_names_the_installed_deployment(installed: dict[str, list[dict[str, Any]]]) -> None:
    command = only("kubectl rollout status")
    (deployment,) = installed["Deployment"]
    assert command[3] == f"deploy/{deployment['metadata']['name']}"
    assert flag(command, "-n") == flag(only("helm install"), "-n") == deployment["metadata"]["namespace"]


def test_skopeo_mirrors_the_vllm_image_to_where_the_chart_points(
    installed: dict[str, list[dict[str, Any]]],
) -> None:
    _, _, source, destination = only("skopeo copy")
    values = yaml.safe_load((REPO / "charts/kubetune/values.yaml").read_text())["images"]["vllm"]
    assert source == f"docker://{values['repository']}:{values['tag']}"
    assert destination == f"docker://{operator_env(installed)['KUBETUNE_VLLM_IMAGE']}"


# --- kubectl against the real API server ---------------------------------------------------------


def in_namespace(command: list[str], namespace: str) -> list[str]:
    """The README's namespaces replaced by the test's (everywhere but `create namespace`)."""
    if command[1:3] == ["create", "namespace"]:
        return command
    if "-n" not in command and "-A" not in command:
        # The dev cluster's commands use the kubeconfig's namespace (ignored for cluster-scoped kinds).
        return [*command, "-n", namespace]
    return [
        namespace if t == README_NAMESPACE and command[i - 1] == "-n" else t for i, t in enumerate(command)
    ]


@pytest.fixture(scope="module")
def prometheus_crd(kube: Kube) -> Iterator[None]:
    """The Prometheus CRD (for `kubectl get prometheus`), from the Prometheus Operator's pinned module."""
    path = GOMOD / PROMETHEUS_OPERATOR / PROMETHEUS_CRD
    assert path.exists(), f"{path} missing: run .ci/toolchain/build.sh crds"
    existed = kube.kubectl("get", "crd", "prometheuses.monitoring.coreos.com", check=False).returncode == 0
    kube.kubectl("apply", "--server-side", "--field-manager=test", "-f", str(path))
    established(kube, "prometheuses.monitoring.coreos.com")
    yield
    if not existed:
        kube.kubectl("delete", "-f", str(path), "--ignore-not-found")


@pytest.fixture
def quickstart(kube: Kube, namespace: str) -> str:
    """The quickstart's objects, applied for real (no operator runs: they only need to exist)."""
    kube.kubectl("apply", "-n", namespace, "-f", str(REPO / "examples/quickstart.yaml"))
    return namespace


@pytest.mark.cluster
@pytest.mark.parametrize("command", of_kind("kubectl change"), ids=ids(of_kind("kubectl change")))
def test_kubectl_changes_pass_server_side_dry_run(kube: Kube, quickstart: str, command: list[str]) -> None:
    proc = kube.kubectl(*in_namespace(command, quickstart)[1:], "--dry-run=server", check=False)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.cluster
@pytest.mark.parametrize("command", of_kind("kubectl read"), ids=ids(of_kind("kubectl read")))
def test_kubectl_reads_run(kube: Kube, quickstart: str, prometheus_crd: None, command: list[str]) -> None:
    args = in_namespace(command, quickstart)[1:]
    if "--watch" in args:
        # A watch never ends: it must print the object, then keep running until stopped.
        with subprocess.Popen(
            [str(find_binary("kubectl")), *args],
            env={**os.environ, "KUBECONFIG": str(kube.kubeconfig)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        ) as proc:
            try:
                out, err = proc.communicate(timeout=5)
                raise AssertionError(f"--watch ended ({proc.returncode}): {err}")
            except subprocess.TimeoutExpired:
                proc.kill()
                out, err = proc.communicate()
        assert "quickstart" in out, err
        return
    proc = kube.kubectl(*args, check=False)
    assert proc.returncode == 0, proc.stderr
    if "quickstart" in args:
        assert "quickstart" in proc.stdout


# --- reaching the endpoint -----------------------------------------------------------------------


def quickstart_deployment() -> dict[str, Any]:
    docs = [d for d in yaml.safe_load_all((REPO / "examples/quickstart.yaml").read_text()) if d]
    (mdep,) = [d for d in docs if d["kind"] == "ModelDeployment"]
    return {**mdep, "metadata": {**mdep["metadata"], "namespace": README_NAMESPACE, "uid": "u"}}


def test_port_forward_targets_the_routers_service() -> None:
    command = only("kubectl port-forward")
    mdep = quickstart_deployment()
    service = build_router_service(mdep)
    assert flag(command, "-n") == README_NAMESPACE
    target, ports = [t for t in command[2:] if t not in ("-n", README_NAMESPACE)]
    assert target == f"svc/{service['metadata']['name']}"
    _, remote = ports.split(":")
    assert int(remote) == ROUTER_PORT == service["spec"]["ports"][0]["port"]


def test_curl_asks_the_forwarded_router_for_a_chat_completion() -> None:
    command = only("curl")
    local = only("kubectl port-forward")[-1].split(":")[0]
    url = urlsplit("http://" + next(t for t in command[1:] if t.startswith("localhost:")))
    assert (url.hostname, str(url.port), url.path) == ("localhost", local, "/v1/chat/completions")
    headers = dict(h.split(": ", 1) for h in (command[i + 1] for i, t in enumerate(command) if t == "-H"))
    assert headers["content-type"] == "application/json"
    sticky = quickstart_deployment()["spec"]["traffic"]["stickyHeader"]
    assert sticky in headers, "the sticky header the quickstart's router reads"
    body = json.loads(flag(command, "-d"))
    assert body["messages"][0]["role"] == "user"
    assert body["model"]
