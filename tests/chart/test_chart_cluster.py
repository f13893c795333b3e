"""The rendered chart against the real API server: schema validation, Pod Security admission,
installation, idempotent re-apply, and RBAC that is exactly rbac.OPERATOR_RULES."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.chart.helm import CHART, helm, render
from tests.support.cluster import Kube
from tests.support.polling import eventually

from kubetune import chartgen
from kubetune.builders.finetunejob import build_children
from kubetune.rbac import OPERATOR_RULES

pytestmark = pytest.mark.cluster

PROMETHEUS_OPERATOR = "github.com/prometheus-operator/prometheus-operator@v0.85.0"
# Only the kinds the chart renders: a PodMonitor CRD would change what the operator under test
# in other modules creates (it detects the CRD), and this cluster is shared by the session.
MONITORING_CRDS = ("monitoring.coreos.com_servicemonitors.yaml", "monitoring.coreos.com_prometheusrules.yaml")
VALUE_SETS = {
    "default": (),
    "monitoring": ("monitoring.yaml",),
    "networkpolicy-images": ("networkpolicy-images.yaml",),
    "namespaced-minimal": ("namespaced-minimal.yaml",),
}
Triple = tuple[str, str, str]
OPERATOR_TRIPLES: set[Triple] = {
    (rule.api_group, resource, verb)
    for rule in OPERATOR_RULES
    for resource in rule.resources
    for verb in rule.verbs
}


def ensure_namespace(kube: Kube, name: str, labels: dict[str, str] | None = None) -> None:
    kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels or {}}})


def prometheus_operator_crd_dir() -> Path:
    """The Prometheus Operator's CRDs from its Go module (no GitHub here; the module proxy works)."""
    cache = Path(os.environ.get("KUBETUNE_CACHE", Path.home() / ".cache" / "kubetune"))
    env = {**os.environ, "GOMODCACHE": str(cache / "gomod"), "GOFLAGS": "-mod=mod", "GOTOOLCHAIN": "local"}
    result = subprocess.run(
        ["go", "mod", "download", "-json", PROMETHEUS_OPERATOR],
        capture_output=True,
        text=True,
        env=env,
        cwd=cache,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return Path(json.loads(result.stdout)["Dir"]) / "example" / "prometheus-operator-crd"


@pytest.fixture(scope="module")
def monitoring_crds(kube: Kube) -> None:
    crd_dir = prometheus_operator_crd_dir()
    for name in MONITORING_CRDS:
        kube.kubectl("apply", "--server-side", "--field-manager=chart-test", "-f", str(crd_dir / name))
    for name in MONITORING_CRDS:
        crd = name.removeprefix("monitoring.coreos.com_").removesuffix(".yaml") + ".monitoring.coreos.com"
        kube.kubectl("wait", "--for=condition=Established", "--timeout=60s", f"crd/{crd}")


@pytest.fixture
def release_namespace(kube: Kube) -> Iterator[str]:
    name = f"kt-chart-{uuid.uuid4().hex[:8]}"
    ensure_namespace(kube, name, {"pod-security.kubernetes.io/enforce": "restricted"})
    yield name
    kube.kubectl("delete", "namespace", name, "--wait=false", check=False)


def target_namespaces(kube: Kube) -> None:
    for name in ("team-a", "team-b", "monitoring"):
        ensure_namespace(kube, name)


@pytest.mark.parametrize("name", VALUE_SETS)
def test_rendered_objects_pass_server_side_validation(
    kube: Kube,
    monitoring_crds: None,
    release_namespace: str,
    name: str,
) -> None:
    target_namespaces(kube)
    chart = render(VALUE_SETS[name], namespace=release_namespace)
    result = kube.kubectl(
        "apply",
        "--dry-run=server",
        "--server-side",
        "--field-manager=chart-test",
        "--validate=strict",
        "-f",
        "-",
        input=chart.text,
    )
    assert len(chart.objects) == result.stdout.count("(server dry run)"), result.stdout
    assert "Warning" not in result.stderr, result.stderr


def pod_from_deployment(deployment: dict[str, Any], namespace: str) -> dict[str, Any]:
    template = deployment["spec"]["template"]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "podsecurity-probe",
            "namespace": namespace,
            "labels": template["metadata"]["labels"],
        },
        "spec": template["spec"],
    }


def test_operator_pod_is_admitted_under_restricted_pod_security(kube: Kube, release_namespace: str) -> None:
    chart = render(namespace=release_namespace)
    pod = pod_from_deployment(chart.one("Deployment"), release_namespace)
    pod["spec"]["serviceAccountName"] = "default"
    admitted = kube.kubectl(
        "create", "--dry-run=server", "-o", "json", "-f", "-", input=json.dumps(pod), check=False
    )
    assert admitted.returncode == 0, admitted.stderr
    # Control: the same pod without its security context is refused, so the admission plugin is on.
    del pod["spec"]["securityContext"]
    del pod["spec"]["containers"][0]["securityContext"]
    refused = kube.kubectl("create", "--dry-run=server", "-f", "-", input=json.dumps(pod), check=False)
    assert refused.returncode != 0
    assert "violates PodSecurity" in refused.stderr, refused.stderr


def subject_access(kube: Kube, user: str, checks: list[tuple[str, str, str, str]]) -> list[bool]:
    """One SubjectAccessReview per (namespace, group, resource, verb), in a single request."""
    namespace_of_sa = user.split(":")[2]
    groups = ["system:serviceaccounts", f"system:serviceaccounts:{namespace_of_sa}", "system:authenticated"]
    reviews = {
        "apiVersion": "v1",
        "kind": "List",
        "items": [
            {
                "apiVersion": "authorization.k8s.io/v1",
                "kind": "SubjectAccessReview",
                "spec": {
                    "user": user,
                    "groups": groups,
                    "resourceAttributes": {
                        "namespace": namespace,
                        "group": group,
                        "resource": resource.split("/")[0],
                        "verb": verb,
                        "subresource": resource.split("/")[1] if "/" in resource else "",
                    },
                },
            }
            for namespace, group, resource, verb in checks
        ],
    }
    out = kube.kubectl("create", "-o", "json", "-f", "-", input=json.dumps(reviews)).stdout
    return [bool(item["status"].get("allowed")) for item in json_stream(out)]


def json_stream(text: str) -> list[dict[str, Any]]:
    """kubectl prints one JSON document per created object, back to back."""
    decoder = json.JSONDecoder()
    docs, index = [], 0
    while index < len(text.rstrip()):
        doc, end = decoder.raw_decode(text, index)
        docs.append(doc)
        index = end
        while index < len(text) and text[index].isspace():
            index += 1
    return docs


def rules_review(kube: Kube, user: str, namespace: str) -> set[Triple]:
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectRulesReview",
        "spec": {"namespace": namespace},
    }
    # --validate=false: client-side validation would list CRDs as the impersonated user.
    args = ("create", "--as", user, "--validate=false", "-o", "json", "-f", "-")
    out = json.loads(kube.kubectl(*args, input=json.dumps(review)).stdout)
    status = out["status"]
    assert not status.get("incomplete"), status
    return {
        (g, r, v)
        for rule in status["resourceRules"]
        for g in rule.get("apiGroups", [])
        for r in rule.get("resources", [])
        for v in rule["verbs"]
    }


@pytest.fixture
def installed(kube: Kube, release_namespace: str) -> Iterator[tuple[str, str]]:
    """`helm install` of the default values; yields (namespace, service account user)."""
    # A release name containing the chart name is used as is for object names.
    release = f"kubetune-{release_namespace.rsplit('-', 1)[1]}"
    kubeconfig = f"--kubeconfig={kube.kubeconfig}"
    result = helm("install", release, str(CHART), "--namespace", release_namespace, kubeconfig)
    assert result.returncode == 0, result.stderr
    # NOTES.txt tells the next command to run.
    assert f"kubectl -n {release_namespace} rollout status deployment/{release}" in result.stdout
    user = f"system:serviceaccount:{release_namespace}:{release}"
    # The RBAC authorizer works from informer caches: wait until the binding is in effect.
    eventually(
        lambda: subject_access(kube, user, [("x", "apps", "deployments", "patch")]) == [True],
        timeout=60,
        message="the chart's ClusterRoleBinding never took effect",
    )
    yield release_namespace, user
    helm("uninstall", release, "--namespace", release_namespace, kubeconfig)


def test_helm_install_creates_the_operator(kube: Kube, installed: tuple[str, str]) -> None:
    namespace, user = installed
    release = user.rsplit(":", 1)[1]
    deployment = kube.get("deployment", release, namespace)
    assert deployment["spec"]["strategy"]["type"] == "Recreate"
    assert kube.get("serviceaccount", release, namespace)["metadata"]["labels"][
        "app.kubernetes.io/instance"
    ] == (release)


def test_rbac_scopes_match_api_discovery(kube: Kube) -> None:
    listed = kube.kubectl("api-resources", "--namespaced=false", "--no-headers", "-o", "name").stdout.split()
    # "nodes" or "customresourcedefinitions.apiextensions.k8s.io"
    cluster_scoped = {(name.partition(".")[2], name.partition(".")[0]) for name in listed}
    for rule in OPERATOR_RULES:
        expected = all((rule.api_group, r.split("/")[0]) in cluster_scoped for r in rule.resources)
        assert chartgen.is_cluster_scoped(rule) is expected, rule


def test_service_account_holds_exactly_the_operator_rules(kube: Kube, installed: tuple[str, str]) -> None:
    namespace, user = installed
    # Whatever every authenticated identity may do (self reviews, discovery) is not ours to check.
    baseline = rules_review(kube, f"system:serviceaccount:{namespace}:nobody", namespace)
    granted = rules_review(kube, user, namespace) - baseline
    assert granted == OPERATOR_TRIPLES


CLUSTER_SCOPED = {("apiextensions.k8s.io", "customresourcedefinitions"), ("", "namespaces")}


def test_every_operator_call_is_allowed_in_any_namespace(kube: Kube, installed: tuple[str, str]) -> None:
    _, user = installed
    checks = [
        ("" if (group, resource.split("/")[0]) in CLUSTER_SCOPED else "some-team", group, resource, verb)
        for group, resource, verb in sorted(OPERATOR_TRIPLES)
    ]
    denied = [c for c, ok in zip(checks, subject_access(kube, user, checks), strict=True) if not ok]
    assert denied == []


FORBIDDEN = [
    # Secrets: get and create only, for the router token (by name); never listed, watched or rewritten.
    ("some-team", "", "secrets", "list"),
    ("some-team", "", "secrets", "watch"),
    ("some-team", "", "secrets", "patch"),
    ("some-team", "", "secrets", "update"),
    ("some-team", "", "secrets", "delete"),
    ("some-team", "kubetune.io", "finetunejobs", "update"),  # the operator never writes spec
    ("some-team", "kubetune.io", "finetunejobs", "patch"),  # a schedule's runs are created, never patched
    ("some-team", "kubetune.io", "finetuneschedules", "patch"),
    ("some-team", "kubetune.io", "modeldeployments", "create"),
    ("some-team", "kubetune.io", "modeldeployments", "delete"),
    ("some-team", "apps", "deployments", "update"),  # children are server-side applied (patch)
    ("some-team", "", "pods", "create"),
    ("some-team", "", "pods/exec", "create"),
    ("some-team", "", "events", "delete"),
    ("some-team", "rbac.authorization.k8s.io", "roles", "escalate"),
    # Applied only (garbage collection deletes them): no delete, no list (tests/unit/test_rbac_usage.py).
    ("some-team", "rbac.authorization.k8s.io", "roles", "delete"),
    ("some-team", "rbac.authorization.k8s.io", "rolebindings", "delete"),
    ("some-team", "", "serviceaccounts", "delete"),
    ("some-team", "", "serviceaccounts", "list"),
    ("some-team", "", "pods", "get"),
    ("some-team", "", "configmaps", "watch"),
    ("some-team", "rbac.authorization.k8s.io", "rolebindings", "update"),
    ("", "rbac.authorization.k8s.io", "clusterroles", "create"),
    ("", "", "nodes", "get"),
    ("", "", "namespaces", "create"),
    ("", "apiextensions.k8s.io", "customresourcedefinitions", "patch"),  # the operator never installs CRDs
    ("some-team", "coordination.k8s.io", "leases", "create"),
]


def test_nothing_beyond_the_operator_rules_is_allowed(kube: Kube, installed: tuple[str, str]) -> None:
    _, user = installed
    allowed = [c for c, ok in zip(FORBIDDEN, subject_access(kube, user, FORBIDDEN), strict=True) if ok]
    assert allowed == []


def test_namespaced_install_is_confined_to_its_namespaces(kube: Kube, release_namespace: str) -> None:
    target_namespaces(kube)
    chart = render(
        VALUE_SETS["namespaced-minimal"],
        namespace=release_namespace,
        sets=[f"fullnameOverride=kt-{release_namespace}"],
    )
    kube.kubectl("apply", "--server-side", "--field-manager=helm", "-f", "-", input=chart.text)
    try:
        user = f"system:serviceaccount:{release_namespace}:kubetune-operator"
        checks = [
            ("team-a", "apps", "deployments", "patch"),
            ("team-b", "kubetune.io", "finetunejobs/status", "patch"),
            ("", "apiextensions.k8s.io", "customresourcedefinitions", "list"),
            ("team-c", "apps", "deployments", "patch"),
            ("", "apps", "deployments", "list"),  # cluster-wide list needs the ClusterRole, which has none
        ]
        eventually(
            lambda: subject_access(kube, user, checks[:3]) == [True] * 3,
            timeout=60,
            message="the chart's Roles never took effect",
        )
        assert subject_access(kube, user, checks) == [True, True, True, False, False]
    finally:
        kube.kubectl("delete", "--wait=false", "--ignore-not-found", "-f", "-", input=chart.text, check=False)


def test_applying_the_chart_twice_changes_nothing(kube: Kube, release_namespace: str) -> None:
    chart = render(namespace=release_namespace, sets=[f"fullnameOverride=kt-{release_namespace}"])
    try:
        kube.kubectl("apply", "--server-side", "--field-manager=helm", "-f", "-", input=chart.text)
        versions = {
            (o["kind"], o["metadata"]["name"]): o["metadata"]["resourceVersion"]
            for o in yaml.safe_load(kube.kubectl("get", "-f", "-", "-o", "yaml", input=chart.text).stdout)[
                "items"
            ]
        }
        kube.kubectl("apply", "--server-side", "--field-manager=helm", "-f", "-", input=chart.text)
        diff = kube.kubectl(
            "diff", "--server-side", "--field-manager=helm", "-f", "-", input=chart.text, check=False
        )
        assert diff.returncode == 0, diff.stdout + diff.stderr
        after = {
            (o["kind"], o["metadata"]["name"]): o["metadata"]["resourceVersion"]
            for o in yaml.safe_load(kube.kubectl("get", "-f", "-", "-o", "yaml", input=chart.text).stdout)[
                "items"
            ]
        }
        # Controllers write status (the Deployment's, a ValidatingAdmissionPolicy's type checking), which
        # bumps resourceVersion; the rest must not move.
        with_status = {"Deployment", "ValidatingAdmissionPolicy"}
        moved = {k for k in versions if versions[k] != after[k] and k[0] not in with_status}
        assert moved == set()
    finally:
        kube.kubectl("delete", "--wait=false", "--ignore-not-found", "-f", "-", input=chart.text, check=False)


def test_the_operator_may_grant_the_trainer_role_and_no_more(kube: Kube, installed: tuple[str, str]) -> None:
    """RBAC escalation prevention holds the operator to what it has: its identity creates the training
    pods' Role as rendered, and is refused one granting a verb it lacks (`update`)."""
    namespace, user = installed
    ftj = {
        "apiVersion": "kubetune.io/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": "demo", "namespace": namespace, "uid": str(uuid.uuid4())},
        "spec": {
            "baseModel": {"uri": "pvc://m/x"},
            "dataset": {"uri": "pvc://d/x.jsonl"},
            "output": {"uri": "pvc://o/x"},
        },
    }
    role = build_children(ftj, restart=0).role
    role["metadata"].pop("ownerReferences")  # no such FineTuneJob: only the grant is under test
    create = ("create", "--as", user, "--dry-run=server", "--validate=false", "-o", "name", "-f", "-")
    assert (
        kube.kubectl(*create, input=json.dumps(role)).stdout.strip()
        == "role.rbac.authorization.k8s.io/demo-trainer"
    )
    wider = json.loads(json.dumps(role))
    wider["rules"][0]["verbs"] = ["patch", "update"]
    refused = kube.kubectl(*create, input=json.dumps(wider), check=False)
    assert refused.returncode != 0
    assert "attempting to grant RBAC permissions not currently held" in refused.stderr
