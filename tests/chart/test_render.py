"""`helm template` of the default values and three value sets: what the chart promises, object by object."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml
from tests.chart.helm import CHART, KUBE_VERSION, NAMESPACE, RELEASE, REPO, VALUES, Rendered, helm, render
from tests.chart.podsecurity import restricted_violations
from tests.chart.rbac import triples

from kubetune import chartgen
from kubetune.devcluster import imageplan
from kubetune.rbac import OPERATOR_RULES

VALUE_SETS = {
    "default": (),
    "monitoring": ("monitoring.yaml",),
    "networkpolicy-images": ("networkpolicy-images.yaml",),
    "namespaced-minimal": ("namespaced-minimal.yaml",),
}
CLUSTER_SCOPED_KINDS = {
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
}
OPERATOR_TRIPLES = triples([rule.to_manifest() for rule in OPERATOR_RULES])
CLUSTER_TRIPLES = {t for t in OPERATOR_TRIPLES if (t[0], t[1]) in chartgen.CLUSTER_SCOPED}


@pytest.fixture(scope="module")
def rendered() -> dict[str, Rendered]:
    return {name: render(files) for name, files in VALUE_SETS.items()}


def container(chart: Rendered) -> dict[str, Any]:
    containers = chart.one("Deployment")["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["operator"]
    return dict(containers[0])


def env(chart: Rendered) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container(chart)["env"]}


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


@pytest.mark.parametrize("name", VALUE_SETS)
def test_every_object_has_the_standard_labels_and_a_namespace(
    rendered: dict[str, Rendered], name: str
) -> None:
    for obj in rendered[name].objects:
        labels = obj["metadata"]["labels"]
        what = f"{obj['kind']}/{obj['metadata']['name']}"
        assert labels["app.kubernetes.io/instance"] == RELEASE, what
        assert labels["app.kubernetes.io/name"] == "kubetune", what
        assert labels["app.kubernetes.io/part-of"] == "kubetune", what
        assert labels["app.kubernetes.io/managed-by"] == "Helm", what
        assert labels["helm.sh/chart"] == "kubetune-0.1.0", what
        assert ("namespace" in obj["metadata"]) == (obj["kind"] not in CLUSTER_SCOPED_KINDS), what
        assert len(obj["metadata"]["name"]) <= 63, what


@pytest.mark.parametrize("name", VALUE_SETS)
def test_operator_deployment_is_a_single_recreated_restricted_pod(
    rendered: dict[str, Rendered], name: str
) -> None:
    deployment = rendered[name].one("Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    assert restricted_violations(pod) == []
    assert selects(spec["selector"]["matchLabels"], spec["template"]["metadata"]["labels"])
    assert pod["automountServiceAccountToken"] is True
    assert {m["mountPath"] for m in container(rendered[name])["volumeMounts"]} == {"/tmp"}


@pytest.mark.parametrize("name", VALUE_SETS)
def test_liveness_probe_targets_the_kopf_health_endpoint(rendered: dict[str, Rendered], name: str) -> None:
    operator = container(rendered[name])
    ports = {p["name"]: p["containerPort"] for p in operator["ports"]}
    probe = operator["livenessProbe"]["httpGet"]
    assert probe["path"] == "/healthz"
    assert ports[probe["port"]] == 8080
    assert "--liveness=http://0.0.0.0:8080/healthz" in operator["args"]
    assert ports["metrics"] == 9090
    assert "--metrics-port=9090" in operator["args"]


@pytest.mark.parametrize("name", VALUE_SETS)
def test_rbac_grants_exactly_the_operator_rules(rendered: dict[str, Rendered], name: str) -> None:
    chart = rendered[name]
    granted = triples(chart.one("ClusterRole")["rules"])
    for role in chart.of_kind("Role"):
        granted |= triples(role["rules"])
    assert granted == OPERATOR_TRIPLES


@pytest.mark.parametrize("name", VALUE_SETS)
def test_bindings_name_the_operator_service_account(rendered: dict[str, Rendered], name: str) -> None:
    chart = rendered[name]
    service_account = chart.one("ServiceAccount")["metadata"]["name"]
    assert chart.one("Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == service_account
    roles = {
        (r["kind"], r["metadata"].get("namespace"), r["metadata"]["name"])
        for r in chart.of_kind("ClusterRole") + chart.of_kind("Role")
    }
    bindings = chart.of_kind("ClusterRoleBinding") + chart.of_kind("RoleBinding")
    assert len(bindings) == len(roles)
    for binding in bindings:
        ref = binding["roleRef"]
        namespace = binding["metadata"].get("namespace") if ref["kind"] == "Role" else None
        assert (ref["kind"], namespace, ref["name"]) in roles
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": service_account, "namespace": NAMESPACE}
        ]


@pytest.mark.parametrize("name", VALUE_SETS)
def test_metrics_service_reaches_the_operator_pod(rendered: dict[str, Rendered], name: str) -> None:
    chart = rendered[name]
    service = chart.one("Service")
    pod_labels = chart.one("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert selects(service["spec"]["selector"], pod_labels)
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["metrics"]
    for monitor in chart.of_kind("ServiceMonitor"):
        assert selects(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
        assert [e["port"] for e in monitor["spec"]["endpoints"]] == [
            p["name"] for p in service["spec"]["ports"]
        ]
        assert monitor["spec"]["namespaceSelector"]["matchNames"] == [NAMESPACE]
    for policy in chart.of_kind("NetworkPolicy"):
        assert selects(policy["spec"]["podSelector"]["matchLabels"], pod_labels)


def test_default_values_render_the_operator_with_dashboards_and_pinned_images(
    rendered: dict[str, Rendered],
) -> None:
    chart = rendered["default"]
    assert sorted(o["kind"] for o in chart.objects) == sorted(
        [
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "Deployment",
            "Service",
            "ConfigMap",
            "ConfigMap",
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicyBinding",
            "ValidatingAdmissionPolicyBinding",
        ]
    )
    assert triples(chart.one("ClusterRole")["rules"]) == OPERATOR_TRIPLES
    operator = container(chart)
    assert operator["image"] == "ghcr.io/kubetune/operator:0.1.0"
    assert not [a for a in operator["args"] if a.startswith("--namespace")]
    assert env(chart) == {
        "KUBETUNE_TRAINER_IMAGE": "ghcr.io/kubetune/trainer:0.1.0",
        "KUBETUNE_VLLM_IMAGE": "docker.io/vllm/vllm-openai:v0.32.0",
        "KUBETUNE_ROUTER_IMAGE": "ghcr.io/kubetune/router:0.1.0",
        "KUBETUNE_ROUTER_REPLICAS": "2",
        "KUBETUNE_ROUTER_RESOURCES": json.dumps(
            {"limits": {"memory": "1Gi"}, "requests": {"cpu": "250m", "memory": "256Mi"}},
            separators=(",", ":"),
        ),
        "KUBETUNE_MONITOR_LABELS": "{}",
        "KUBETUNE_IMAGE_PULL_SECRETS": "[]",
        "KUBETUNE_PROMETHEUS_URLS": '["http://prometheus-operated.monitoring.svc:9090"]',
        "KUBETUNE_NETWORK_POLICIES": "true",
        "KUBETUNE_OPERATOR_NAMESPACE": NAMESPACE,
        "KUBETUNE_MONITORING_NAMESPACE": "monitoring",
    }
    pod = chart.one("Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == 65532
    assert "imagePullSecrets" not in pod


# global.imageRegistry replaces a repository's registry host (a first component with "." or ":",
# or "localhost"), or prefixes a repository that has none: (repository, registry, image).
REGISTRY_CASES = [
    ("ghcr.io/kubetune/operator", "registry.example.com/team", "registry.example.com/team/kubetune/operator"),
    (
        "docker.io/vllm/vllm-openai",
        "registry.example.com/team/",
        "registry.example.com/team/vllm/vllm-openai",
    ),
    ("vllm/vllm-openai", "mirror.local:5000", "mirror.local:5000/vllm/vllm-openai"),
    ("localhost/kubetune/operator", "registry.example.com", "registry.example.com/kubetune/operator"),
    ("localhost:5000/operator", "registry.example.com", "registry.example.com/operator"),
    ("operator", "registry.example.com/team", "registry.example.com/team/operator"),
    ("ghcr.io/kubetune/operator", "", "ghcr.io/kubetune/operator"),
]


@pytest.mark.parametrize(("repository", "registry", "image"), REGISTRY_CASES)
def test_global_image_registry_replaces_the_registry_host(repository: str, registry: str, image: str) -> None:
    chart = render(sets=[f"global.imageRegistry={registry}", f"operator.image.repository={repository}"])
    assert container(chart)["image"] == f"{image}:0.1.0"


def test_global_image_registry_and_pull_secrets_reach_every_image_and_pod() -> None:
    chart = render(
        sets=[
            "global.imageRegistry=registry.example.com/team",
            "imagePullSecrets={regcred,mirror-creds}",
            "operator.imagePullSecrets={ops-only,regcred}",
        ]
    )
    assert container(chart)["image"] == "registry.example.com/team/kubetune/operator:0.1.0"
    variables = env(chart)
    assert variables["KUBETUNE_TRAINER_IMAGE"] == "registry.example.com/team/kubetune/trainer:0.1.0"
    assert variables["KUBETUNE_ROUTER_IMAGE"] == "registry.example.com/team/kubetune/router:0.1.0"
    assert variables["KUBETUNE_VLLM_IMAGE"] == "registry.example.com/team/vllm/vllm-openai:v0.32.0"
    # The operator gives the workload secrets to the pods it creates; its own pod gets both lists.
    assert json.loads(variables["KUBETUNE_IMAGE_PULL_SECRETS"]) == ["regcred", "mirror-creds"]
    pod = chart.one("Deployment")["spec"]["template"]["spec"]
    assert pod["imagePullSecrets"] == [{"name": "regcred"}, {"name": "mirror-creds"}, {"name": "ops-only"}]


def test_dashboards_are_configmaps_for_the_grafana_sidecar(rendered: dict[str, Rendered]) -> None:
    maps = rendered["default"].of_kind("ConfigMap")
    files = sorted(p.name for p in (CHART / "dashboards").glob("*.json"))
    assert sorted(key for cm in maps for key in cm["data"]) == files
    for cm in maps:
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
        ((key, text),) = cm["data"].items()
        assert json.loads(text) == json.loads((CHART / "dashboards" / key).read_text())


def test_monitoring_values_add_servicemonitor_rules_and_relocated_dashboards(
    rendered: dict[str, Rendered],
) -> None:
    chart = rendered["monitoring"]
    # The PodMonitors the operator creates get the labels kube-prometheus-stack selects.
    assert json.loads(env(chart)["KUBETUNE_MONITOR_LABELS"]) == {"release": "kube-prometheus-stack"}
    monitor = chart.one("ServiceMonitor")
    assert monitor["metadata"]["namespace"] == NAMESPACE
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert monitor["spec"]["endpoints"] == [
        {"port": "metrics", "path": "/metrics", "interval": "15s", "scrapeTimeout": "10s"}
    ]
    rule = chart.one("PrometheusRule")
    assert rule["metadata"]["namespace"] == "monitoring"
    alerts = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}
    assert "> 0.02" in alerts["KubetuneRouterErrorRate"]["expr"]
    assert "> 20" in alerts["KubetuneVLLMQueueBacklog"]["expr"]
    assert alerts["KubetuneRouterErrorRate"]["for"] == "5m"
    assert f'job="{RELEASE}-kubetune-metrics"' in alerts["KubetuneOperatorDown"]["expr"]
    for cm in chart.of_kind("ConfigMap"):
        assert cm["metadata"]["namespace"] == "monitoring"
        assert cm["metadata"]["annotations"] == {"grafana_folder": "kubetune"}


def test_networkpolicy_and_custom_images(rendered: dict[str, Rendered]) -> None:
    chart = rendered["networkpolicy-images"]
    policy = chart.one("NetworkPolicy")["spec"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    assert policy["ingress"] == [
        {
            "ports": [{"port": "metrics", "protocol": "TCP"}],
            "from": [
                {
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
                    "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
                }
            ],
        }
    ]
    api, dns, serving, extra = policy["egress"]
    assert api == {"ports": [{"port": 6443, "protocol": "TCP"}], "to": [{"ipBlock": {"cidr": "10.0.0.1/32"}}]}
    assert {(p["port"], p["protocol"]) for p in dns["ports"]} == {(53, "UDP"), (53, "TCP")}
    # Smoke tests reach vLLM pods, synthetic canary traffic the routers, in any namespace.
    assert {p["port"] for p in serving["ports"]} == {8000, 8080}
    (peer,) = serving["to"]
    assert peer["namespaceSelector"] == {}
    assert peer["podSelector"]["matchExpressions"] == [
        {"key": "kubetune.io/role", "operator": "In", "values": ["vllm", "router"]}
    ]
    assert extra["ports"] == [{"port": 9090, "protocol": "TCP"}]

    operator = container(chart)
    digest = "0123456789abcdef" * 4
    assert operator["image"] == f"registry.example.com/ml/kubetune-operator:0.1.0-rc1@sha256:{digest}"
    assert operator["imagePullPolicy"] == "Always"
    assert operator["args"][-1] == "--verbose"
    variables = env(chart)
    assert variables["KUBETUNE_TRAINER_IMAGE"] == "registry.example.com/ml/kubetune-trainer:0.1.0-cu128"
    assert variables["KUBETUNE_VLLM_IMAGE"] == (
        "registry.example.com/mirror/vllm-openai:v0.32.0@sha256:" + "fedcba9876543210" * 4
    )
    assert variables["KUBETUNE_ROUTER_IMAGE"] == "registry.example.com/ml/kubetune-router:0.1.0-rc1"
    assert variables["KUBETUNE_ROUTER_REPLICAS"] == "3"
    assert json.loads(variables["KUBETUNE_ROUTER_RESOURCES"]) == {
        "requests": {"cpu": "1", "memory": "512Mi"},
        "limits": {"memory": "2Gi"},
    }
    assert variables["HTTPS_PROXY"] == "http://proxy.example.com:3128"
    pod = chart.one("Deployment")["spec"]["template"]["spec"]
    assert pod["imagePullSecrets"] == [{"name": "registry-creds"}]
    assert pod["tolerations"][0]["key"] == "dedicated"
    assert pod["priorityClassName"] == "system-cluster-critical"


def test_namespaced_install_splits_rules_into_roles(rendered: dict[str, Rendered]) -> None:
    chart = rendered["namespaced-minimal"]
    assert triples(chart.one("ClusterRole")["rules"]) == CLUSTER_TRIPLES
    roles = chart.of_kind("Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    for role in roles:
        assert triples(role["rules"]) == OPERATOR_TRIPLES - CLUSTER_TRIPLES
    assert sorted(b["metadata"]["namespace"] for b in chart.of_kind("RoleBinding")) == ["team-a", "team-b"]
    assert chart.one("ServiceAccount")["metadata"]["name"] == "kubetune-operator"
    assert chart.one("Deployment")["metadata"]["name"] == "kubetune"
    assert [a for a in container(chart)["args"] if a.startswith("--namespace")] == [
        "--namespace=team-a",
        "--namespace=team-b",
    ]
    assert "runAsUser" not in chart.one("Deployment")["spec"]["template"]["spec"]["securityContext"]
    assert chart.of_kind("ConfigMap") == []


def test_chart_crds_are_the_generated_ones() -> None:
    generated = sorted((REPO / "crds").glob("*.yaml"))
    assert generated, "crds/ is empty: run `make manifests`"
    assert [p.name for p in sorted((CHART / "crds").glob("*.yaml"))] == [p.name for p in generated]
    for path in generated:
        assert (CHART / "crds" / path.name).read_text() == path.read_text(), (
            f"{path.name}: run `make manifests`"
        )


def test_include_crds_renders_every_custom_resource() -> None:
    chart = render(include_crds=True)
    names = sorted(c["metadata"]["name"] for c in chart.of_kind("CustomResourceDefinition"))
    assert names == [
        "finetunejobs.kubetune.io",
        "finetuneschedules.kubetune.io",
        "modeldeployments.kubetune.io",
    ]


def test_the_locally_built_images_select_through_chart_values() -> None:
    refs = {name: f"localhost/kubetune/{name}:0123456789ab" for name in chart_image_names()}
    chart = render(sets=[",".join(imageplan.chart_values(refs))])
    assert container(chart)["image"] == "localhost/kubetune/operator:0123456789ab"
    assert container(chart)["imagePullPolicy"] == "IfNotPresent"
    variables = env(chart)
    assert variables["KUBETUNE_TRAINER_IMAGE"] == "localhost/kubetune/trainer:0123456789ab"
    assert variables["KUBETUNE_VLLM_IMAGE"] == "localhost/kubetune/vllm-cpu:0123456789ab"
    assert variables["KUBETUNE_ROUTER_IMAGE"] == "localhost/kubetune/router:0123456789ab"


def chart_image_names() -> list[str]:
    return [spec.name for spec in imageplan.IMAGES]


def test_values_file_documents_every_top_level_key() -> None:
    text = (CHART / "values.yaml").read_text()
    values = yaml.safe_load(text)
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert set(values) == set(schema["properties"])


@pytest.mark.parametrize("name", VALUE_SETS)
def test_helm_lint_strict(name: str) -> None:
    values = [arg for file in VALUE_SETS[name] for arg in ("--values", str(VALUES / file))]
    result = helm("lint", "--strict", str(CHART), "--kube-version", KUBE_VERSION, *values)
    assert result.returncode == 0, result.stdout + result.stderr
