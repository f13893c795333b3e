"""The chart's ValidatingAdmissionPolicy against the real API server: what it denies, what it lets by.

The policy is bound to a label only this test's namespace carries, so the session's other tests (the
same cluster) are not subject to it.
"""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from tests.chart.helm import render
from tests.support.cluster import Kube
from tests.support.manifests import minimal_ftj
from tests.support.polling import eventually

pytestmark = pytest.mark.cluster

API = "kubetune.io/v1alpha1"
FTJ = minimal_ftj("policy")
MDEP: dict[str, Any] = {
    "apiVersion": API,
    "kind": "ModelDeployment",
    "metadata": {"name": "policy"},
    "spec": {
        "variants": [
            {"name": "a", "model": {"uri": "Qwen/Qwen2.5-0.5B"}},
            {"name": "b", "model": {"uri": "Qwen/Qwen2.5-0.5B-Instruct"}},
        ],
        "traffic": {"canary": {"stableVariant": "a", "canaryVariant": "b", "steps": [50, 100]}},
    },
}


def with_spec(base: dict[str, Any], **spec: Any) -> dict[str, Any]:
    obj = copy.deepcopy(base)
    obj["spec"].update(spec)
    return obj


def with_variant(base: dict[str, Any], **fields: Any) -> dict[str, Any]:
    obj = copy.deepcopy(base)
    obj["spec"]["variants"][1].update(fields)
    return obj


def synthetic(rate: float) -> dict[str, Any]:
    obj = copy.deepcopy(MDEP)
    obj["spec"]["traffic"]["canary"]["analysis"] = {
        "prometheusUrl": "http://prometheus-operated.monitoring.svc:9090",
        "syntheticTraffic": {"enabled": True, "requestsPerSecond": rate},
    }
    return obj


DENIED = [
    ("trainer image elsewhere", with_spec(FTJ, image={"image": "evil.example/miner:1"}), "spec.image.image"),
    ("vLLM image elsewhere", with_spec(MDEP, image={"image": "docker.io/vllmx/x:1"}), "spec.image.image"),
    (
        "priority class not allowed",
        with_spec(FTJ, resources={"priorityClassName": "system-node-critical"}),
        "spec.resources.priorityClassName",
    ),
    (
        "training tolerates every taint",
        with_spec(FTJ, resources={"tolerations": [{"operator": "Exists"}]}),
        "tolerations",
    ),
    (
        "serving tolerates every taint",
        with_variant(MDEP, resources={"tolerations": [{"operator": "Exists", "effect": "NoSchedule"}]}),
        "tolerations",
    ),
    ("synthetic traffic too fast", synthetic(50), "syntheticTraffic.requestsPerSecond"),
]
ALLOWED = [
    ("no overrides", FTJ),
    ("no overrides (serving)", MDEP),
    ("trainer image under a prefix", with_spec(FTJ, image={"image": "ghcr.io/kubetune/trainer:dev"})),
    ("allowed priority class", with_spec(FTJ, resources={"priorityClassName": "team-high"})),
    (
        "a named taint",
        with_spec(FTJ, resources={"tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}]}),
    ),
    ("synthetic traffic at the limit", synthetic(5)),
]


def create(kube: Kube, namespace: str, manifest: dict[str, Any]) -> Any:
    return kube.kubectl(
        "create", "--dry-run=server", "-n", namespace, "-f", "-", input=yaml.safe_dump(manifest), check=False
    )


@pytest.fixture(scope="module")
def policy(kube: Kube) -> Iterator[str]:
    """The chart's policy, bound to namespaces labelled with a value unique to this module."""
    label = f"policy-{uuid.uuid4().hex[:8]}"
    chart = render(
        sets=[
            f"fullnameOverride=kt-{label}",
            f"admissionPolicy.namespaceSelector.matchLabels.kubetune-test={label}",
            "admissionPolicy.allowedPriorityClasses[0]=team-high",
        ]
    )
    documents = [o for o in chart.objects if o["kind"].startswith("ValidatingAdmissionPolicy")]
    assert sorted(d["kind"] for d in documents) == [
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
        "ValidatingAdmissionPolicyBinding",
    ]
    text = yaml.safe_dump_all(documents)
    kube.kubectl("apply", "-f", "-", input=text)
    namespace = f"t-{label}"
    kube.kubectl("create", "namespace", namespace)
    kube.kubectl("label", "namespace", namespace, f"kubetune-test={label}")
    yield namespace
    kube.kubectl("delete", "-f", "-", input=text, check=False)
    kube.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def test_the_api_server_serves_admission_policies(kube: Kube) -> None:
    version = json.loads(kube.kubectl("version", "-o", "json").stdout)["serverVersion"]
    assert (int(version["major"]), int(version["minor"].rstrip("+"))) >= (1, 30), version
    resources = kube.kubectl("api-resources", "--api-group=admissionregistration.k8s.io", "-o", "name").stdout
    assert "validatingadmissionpolicies.admissionregistration.k8s.io" in resources.split()


@pytest.mark.parametrize("kind", ["finetunejobs", "modeldeployments"])
def test_the_policy_type_checks_against_the_crds(kube: Kube, policy: str, kind: str) -> None:
    name = f"kt-{policy.removeprefix('t-')}-{kind}"

    def checked() -> dict[str, Any] | None:
        status = json.loads(kube.kubectl("get", "validatingadmissionpolicy", name, "-o", "json").stdout).get(
            "status", {}
        )
        return status if "typeChecking" in status else None

    status = eventually(checked, timeout=60, message="the policy's type checking")
    assert status["typeChecking"].get("expressionWarnings") in (None, []), status


@pytest.mark.parametrize(("manifest", "field"), [(m, f) for _, m, f in DENIED], ids=[c for c, _, _ in DENIED])
def test_the_policy_denies(kube: Kube, policy: str, manifest: dict[str, Any], field: str) -> None:
    # The binding takes effect once the API server's policy informer has it: poll the first denial.
    def denied() -> str | None:
        proc = create(kube, policy, manifest)
        return proc.stderr if proc.returncode != 0 else None

    stderr = eventually(denied, timeout=60, message="the policy never denied it")
    assert "ValidatingAdmissionPolicy" in stderr, stderr
    assert field in stderr, stderr
    # Outside the selected namespaces the same object is admitted (the CRD's own rules permitting).
    other = f"t-{uuid.uuid4().hex[:10]}"
    kube.kubectl("create", "namespace", other)
    try:
        assert create(kube, other, manifest).returncode == 0
    finally:
        kube.kubectl("delete", "namespace", other, "--wait=false", check=False)


@pytest.mark.parametrize("manifest", [m for _, m in ALLOWED], ids=[c for c, _ in ALLOWED])
def test_the_policy_admits(kube: Kube, policy: str, manifest: dict[str, Any]) -> None:
    # Wait until the policy is active (it denies a known-bad object), then check this one passes.
    eventually(lambda: create(kube, policy, DENIED[0][1]).returncode != 0, timeout=60)
    proc = create(kube, policy, manifest)
    assert proc.returncode == 0, proc.stderr
