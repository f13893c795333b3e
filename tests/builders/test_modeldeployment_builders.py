"""ModelDeployment builders: vLLM flags, storage, probes, PDB, autoscalers, PodMonitor (tables)."""

from __future__ import annotations

from typing import Any

import pytest
from tests.serving.objects import model_deployment, variant

from kubetune.api.conditions import Reason
from kubetune.builders.common import ANNOTATION_SPEC_HASH, LABEL_DEPLOYMENT, LABEL_VARIANT
from kubetune.builders.modeldeployment import (
    ANNOTATION_MODEL_URI,
    build_deployment,
    build_pod_monitor,
    build_variant_children,
    variant_endpoint,
    variant_resource_name,
)
from kubetune.builders.router import build_router_pod_monitor
from kubetune.builders.storage import S3_OPTIONAL_SECRET_KEYS, S3_SECRET_KEYS
from kubetune.builders.vllm import max_lora_rank, vllm_args
from kubetune.serving.resolution import LoraModule, Resolution, ResolutionState


def base_args(served: str = "a", tp: str = "1", memory: str = "0.9", dtype: str = "auto") -> list[str]:
    """vLLM's leading flags: the model, the name it answers to and the engine settings always given."""
    return [
        "--model",
        "/models/base",
        "--served-model-name",
        served,
        "--tensor-parallel-size",
        tp,
        "--gpu-memory-utilization",
        memory,
        "--dtype",
        dtype,
    ]


BASE_ARGS = base_args()
TAIL = ["--host", "0.0.0.0", "--port", "8000"]


def ready(
    model: str = "pvc://models/base", *modules: LoraModule, lineage: dict[str, str] | None = None
) -> Resolution:
    return Resolution(
        ResolutionState.READY,
        Reason.MODEL_RESOLVED,
        "ok",
        model_uri=model,
        lora_modules=tuple(modules),
        lineage=lineage or {},
    )


def mdep_for(**fields: Any) -> tuple[dict[str, Any], Any]:
    v = variant("a", **fields)
    return model_deployment([{**v.to_wire(), "weight": 100}]), v


def kinds(children: list[dict[str, Any]]) -> list[str]:
    return [c["kind"] for c in children]


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = deployment["spec"]["template"]["spec"]["containers"][0]
    return result


@pytest.mark.parametrize(
    ("engine", "modules", "expected"),
    [
        pytest.param({}, (), BASE_ARGS + TAIL, id="defaults"),
        pytest.param(
            {
                "tensorParallelSize": 4,
                "maxModelLen": 4096,
                "gpuMemoryUtilization": 0.85,
                "dtype": "bfloat16",
                "quantization": "fp8",
                "maxNumSeqs": 64,
            },
            (),
            [
                *base_args(tp="4", memory="0.85", dtype="bfloat16"),
                "--max-model-len",
                "4096",
                "--quantization",
                "fp8",
                "--max-num-seqs",
                "64",
                *TAIL,
            ],
            id="every-engine-flag",
        ),
        pytest.param(
            {},
            (LoraModule("x", "pvc://a/x"), LoraModule("y", "pvc://a/y")),
            [
                *BASE_ARGS,
                "--enable-lora",
                "--max-loras",
                "2",
                "--lora-modules",
                "x=/models/adapters/x",
                "y=/models/adapters/y",
                *TAIL,
            ],
            id="adapters-max-loras-defaults-to-count",
        ),
        pytest.param(
            {"maxLoras": 8, "maxLoraRank": 64},
            (LoraModule("x", "pvc://a/x", 16),),
            [
                *BASE_ARGS,
                "--enable-lora",
                "--max-loras",
                "8",
                "--max-lora-rank",
                "64",
                "--lora-modules",
                "x=/models/adapters/x",
                *TAIL,
            ],
            id="spec-lora-limits-win",
        ),
        pytest.param(
            {"extraArgs": ["--enforce-eager", "--port", "9000"]},
            (),
            [*BASE_ARGS, *TAIL, "--enforce-eager", "--port", "9000"],
            id="extra-args-last",
        ),
        pytest.param(
            {},
            (LoraModule("a", "pvc://out/sft/adapter", 16),),
            [
                *base_args(served="a-base"),
                "--enable-lora",
                "--max-loras",
                "1",
                "--max-lora-rank",
                "16",
                "--lora-modules",
                "a=/models/adapters/a",
                *TAIL,
            ],
            id="finetuned-adapter-takes-the-variant-name",
        ),
    ],
)
def test_vllm_args(engine: dict[str, Any], modules: tuple[LoraModule, ...], expected: list[str]) -> None:
    assert vllm_args(variant("a", vllm=engine), ready("pvc://m/b", *modules)) == expected


@pytest.mark.parametrize(
    ("ranks", "spec_rank", "expected"),
    [((), None, None), ((16,), None, 16), ((8, 24), None, 32), ((700,), None, 512), ((8,), 20, 20)],
    ids=["none-known", "exact", "rounded-up", "capped", "spec-verbatim"],
)
def test_max_lora_rank(ranks: tuple[int, ...], spec_rank: int | None, expected: int | None) -> None:
    modules = [LoraModule(f"m{i}", "pvc://a/b", r) for i, r in enumerate(ranks)]
    v = variant("a", vllm={"maxLoraRank": spec_rank} if spec_rank else {})
    assert max_lora_rank(v, ready("pvc://m/b", *modules)) == expected


@pytest.mark.parametrize(
    ("fields", "expected_kinds"),
    [
        ({"replicas": 1}, ["Deployment", "Service"]),
        ({"replicas": 3}, ["Deployment", "Service", "PodDisruptionBudget"]),
        ({"replicas": 0}, ["Deployment", "Service"]),
        ({"autoscaling": {"maxReplicas": 1}}, ["Deployment", "Service", "HorizontalPodAutoscaler"]),
        (
            {"autoscaling": {"maxReplicas": 5}},
            ["Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler"],
        ),
    ],
    ids=["one-replica", "pdb-above-one", "scaled-to-zero", "hpa-single", "hpa-with-pdb"],
)
def test_children_by_replicas(fields: dict[str, Any], expected_kinds: list[str]) -> None:
    mdep, v = mdep_for(**fields)
    children = build_variant_children(mdep, v, ready())
    assert kinds(children) == expected_kinds
    for child in children:
        owner = child["metadata"]["ownerReferences"][0]
        assert (owner["kind"], owner["uid"], owner["controller"]) == (
            "ModelDeployment",
            mdep["metadata"]["uid"],
            True,
        )
        assert child["metadata"]["labels"][LABEL_DEPLOYMENT] == "chat"
        assert child["metadata"]["labels"][LABEL_VARIANT] == "a"


@pytest.mark.parametrize(("autoscaling", "has_replicas"), [(None, True), ({"maxReplicas": 3}, False)])
def test_replicas_left_to_the_autoscaler(autoscaling: dict[str, Any] | None, has_replicas: bool) -> None:
    mdep, v = mdep_for(replicas=2, autoscaling=autoscaling)
    assert ("replicas" in build_deployment(mdep, v, ready())["spec"]) is has_replicas


def test_keda_scaled_object_uses_the_canary_prometheus_by_default() -> None:
    mdep, v = mdep_for(autoscaling={"minReplicas": 0, "maxReplicas": 3, "targetQueueDepth": 5})
    mdep["spec"]["traffic"] = {
        "canary": {
            "stableVariant": "a",
            "canaryVariant": "b",
            "analysis": {"prometheusUrl": "http://prom:9090"},
        }
    }
    scaled = build_variant_children(mdep, v, ready(), autoscaler="keda")[-1]
    assert scaled["kind"] == "ScaledObject"
    assert scaled["spec"]["minReplicaCount"] == 0
    trigger = scaled["spec"]["triggers"][0]["metadata"]
    assert trigger["serverAddress"] == "http://prom:9090"
    assert trigger["threshold"] == "5"
    assert (
        trigger["query"]
        == 'sum(vllm:num_requests_waiting{namespace="ml",model_deployment="chat",variant="a"})'
    )
    override = build_variant_children(mdep, v, ready(), autoscaler="keda", prometheus_url="http://p2:9090")[
        -1
    ]
    assert override["spec"]["triggers"][0]["metadata"]["serverAddress"] == "http://p2:9090"


def test_keda_without_a_prometheus_is_an_error() -> None:
    mdep, v = mdep_for(autoscaling={"maxReplicas": 3})
    with pytest.raises(ValueError, match="needs a Prometheus URL"):
        build_variant_children(mdep, v, ready(), autoscaler="keda")


def test_hpa_never_asks_for_zero_replicas() -> None:
    mdep, v = mdep_for(autoscaling={"minReplicas": 0, "maxReplicas": 3})
    assert build_variant_children(mdep, v, ready())[-1]["spec"]["minReplicas"] == 1


@pytest.mark.parametrize(
    ("model", "modules", "volumes", "mounts", "init"),
    [
        pytest.param(
            "pvc://models/qwen/7b",
            (),
            {"pvc": ["models"]},
            [("/models/base", "qwen/7b")],
            [],
            id="pvc-subpath",
        ),
        pytest.param("pvc://models", (), {"pvc": ["models"]}, [("/models/base", None)], [], id="whole-claim"),
        pytest.param(
            "pvc://m/base",
            (LoraModule("x", "pvc://m/ad/x"), LoraModule("y", "pvc://o/y")),
            {"pvc": ["m", "o"]},
            [("/models/base", "base"), ("/models/adapters/x", "ad/x"), ("/models/adapters/y", "y")],
            [],
            id="one-volume-per-claim",
        ),
        pytest.param(
            "hf://org/model",
            (LoraModule("x", "s3://bucket/ad/x"),),
            {"emptyDir": ["staged-models"]},
            [("/models/base", "base"), ("/models/adapters/x", "adapters/x")],
            [("hf://org/model", "/staging/base"), ("s3://bucket/ad/x", "/staging/adapters/x")],
            id="staged",
        ),
        pytest.param(
            "org/model",
            (),
            {"emptyDir": ["staged-models"]},
            [("/models/base", "base")],
            [("org/model", "/staging/base")],
            id="bare-hf-id-is-staged",
        ),
    ],
)
def test_model_storage(
    model: str,
    modules: tuple[LoraModule, ...],
    volumes: dict[str, list[str]],
    mounts: list[tuple[str, str | None]],
    init: list[tuple[str, str]],
) -> None:
    mdep, v = mdep_for()
    pod = build_deployment(mdep, v, ready(model, *modules))["spec"]["template"]["spec"]
    claims = [
        vol["persistentVolumeClaim"]["claimName"] for vol in pod["volumes"] if "persistentVolumeClaim" in vol
    ]
    assert claims == volumes.get("pvc", [])
    model_mounts = [
        m
        for m in container({"spec": {"template": {"spec": pod}}})["volumeMounts"]
        if m["mountPath"].startswith("/models")
    ]
    assert [(m["mountPath"], m.get("subPath")) for m in model_mounts] == mounts
    assert all(m["readOnly"] for m in model_mounts)
    assert [(c["command"][-2], c["command"][-1]) for c in pod.get("initContainers", [])] == init
    if init:
        assert pod["initContainers"][0]["command"][:3] == ["python", "-m", "kubetune.serving.stage"]
        assert {"name": "staged-models", "emptyDir": {}} in pod["volumes"]


@pytest.mark.parametrize(
    ("model", "expected_env"),
    [
        ("hf://org/m", [("HF_TOKEN", "tok", "token")]),
        (
            "s3://b/m",
            # The FineTuneJob Secret convention, whatever keys it grows.
            [(key, "tok", key) for key in (*S3_SECRET_KEYS, *S3_OPTIONAL_SECRET_KEYS)],
        ),
    ],
    ids=["hf-token", "s3-keys"],
)
def test_credentials_by_secret_ref_only_in_the_stager(
    model: str, expected_env: list[tuple[str, str, str]]
) -> None:
    mdep, v = mdep_for(model={"uri": model, "secretRef": {"name": "tok"}})
    pod = build_deployment(mdep, v, ready(model))["spec"]["template"]["spec"]
    env = pod["initContainers"][0]["env"]
    assert [
        (e["name"], e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"])
        for e in env
        if "valueFrom" in e
    ] == expected_env
    assert not any("valueFrom" in e for e in pod["containers"][0]["env"]), "the server needs no credentials"


def test_deployment_essentials() -> None:
    mdep, v = mdep_for(vllm={"tensorParallelSize": 2}, resources={"gpuType": "H100", "memory": "64Gi"})
    deployment = build_deployment(mdep, v, ready())
    c = container(deployment)
    pod = deployment["spec"]["template"]["spec"]
    assert c["command"] == ["python3", "-m", "vllm.entrypoints.openai.api_server"]
    assert c["resources"]["limits"] == {"memory": "64Gi", "nvidia.com/gpu": 2}
    assert {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "8Gi"}} in pod["volumes"]
    assert {"name": "dshm", "mountPath": "/dev/shm"} in c["volumeMounts"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"] == {"path": "/health", "port": "http"}
    budget = c["startupProbe"]["periodSeconds"] * c["startupProbe"]["failureThreshold"]
    assert budget >= 1800, "large models need a generous startup budget"
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "H100"}
    assert pod["enableServiceLinks"] is False
    assert deployment["metadata"]["annotations"][ANNOTATION_MODEL_URI] == "pvc://models/base"


@pytest.mark.parametrize(
    ("vllm", "resources", "limits"),
    [
        ({}, {}, {"nvidia.com/gpu": 1}),
        ({"tensorParallelSize": 4}, {}, {"nvidia.com/gpu": 4}),
        ({"tensorParallelSize": 2}, {"gpus": 4, "memory": "8Gi"}, {"memory": "8Gi", "nvidia.com/gpu": 4}),
        ({}, {"gpus": 0, "memory": "4Gi"}, {"memory": "4Gi"}),
        ({}, {"gpus": 0}, {}),
    ],
    ids=["default-one", "tensor-parallel", "explicit", "cpu-serving", "cpu-unbounded"],
)
def test_gpus_per_pod_follow_tensor_parallelism_unless_set(
    vllm: dict[str, Any], resources: dict[str, Any], limits: dict[str, Any]
) -> None:
    mdep, v = mdep_for(vllm=vllm, resources=resources)
    c = container(build_deployment(mdep, v, ready()))
    assert c["resources"] == {"limits": limits, "requests": limits}


def test_scrape_annotations_can_be_left_to_a_pod_monitor() -> None:
    mdep, v = mdep_for()
    with_annotations = build_deployment(mdep, v, ready())["spec"]["template"]["metadata"]["annotations"]
    without = build_deployment(mdep, v, ready(), scrape_annotations=False)["spec"]["template"]["metadata"][
        "annotations"
    ]
    assert with_annotations["prometheus.io/scrape"] == "true"
    assert with_annotations["prometheus.io/port"] == "8000"
    assert set(without) == {ANNOTATION_SPEC_HASH}


@pytest.mark.parametrize(
    ("change", "rolls"),
    [
        ({"lineage": {"configHash": "new"}}, True),
        ({"model": "pvc://models/other"}, True),
        ({}, False),
    ],
    ids=["retrained-same-uri", "new-uri", "unchanged"],
)
def test_pod_template_changes_when_the_artifact_does(change: dict[str, Any], rolls: bool) -> None:
    mdep, v = mdep_for()
    before = build_deployment(mdep, v, ready(lineage={"configHash": "old"}))
    after = build_deployment(
        mdep,
        v,
        ready(change.get("model", "pvc://models/base"), lineage=change.get("lineage", {"configHash": "old"})),
    )
    assert (before["spec"]["template"] != after["spec"]["template"]) is rolls


def test_unresolved_model_is_never_rendered() -> None:
    mdep, v = mdep_for()
    waiting = Resolution(ResolutionState.WAITING, Reason.WAITING_FOR_FINETUNE_JOB, "job running")
    with pytest.raises(ValueError, match="job running"):
        build_variant_children(mdep, v, waiting)


def test_image_override() -> None:
    mdep, v = mdep_for()
    mdep["spec"]["image"] = {"image": "mirror/vllm:x", "pullPolicy": "Always"}
    c = container(build_deployment(mdep, v, ready()))
    assert (c["image"], c["imagePullPolicy"]) == ("mirror/vllm:x", "Always")
    assert container(build_deployment(mdep_for()[0], v, ready(), default_image="d:1"))["image"] == "d:1"


def test_names_and_endpoint() -> None:
    mdep, _ = mdep_for()
    assert variant_resource_name("chat", "a") == "chat-vllm-a"
    assert variant_endpoint(mdep, "a") == "http://chat-vllm-a.ml.svc:8000/v1"
    long = variant_resource_name("m" * 60, "v" * 40)
    assert len(long) <= 63
    assert long != variant_resource_name("m" * 60, "v" * 39 + "w")


def test_service_selects_only_the_variant_pods() -> None:
    mdep, v = mdep_for()
    service, deployment = build_variant_children(mdep, v, ready())[1], build_deployment(mdep, v, ready())
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert service["spec"]["ports"] == [
        {"name": "http", "port": 8000, "targetPort": "http", "protocol": "TCP"}
    ]


def test_pod_monitor_relabels_the_variant() -> None:
    mdep, v = mdep_for()
    monitor = build_pod_monitor(mdep)
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    pod_labels = build_deployment(mdep, v, ready())["spec"]["template"]["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    endpoint = monitor["spec"]["podMetricsEndpoints"][0]
    assert (endpoint["port"], endpoint["path"]) == ("http", "/metrics")
    relabel = {r["targetLabel"]: r["sourceLabels"] for r in endpoint["relabelings"]}
    assert relabel["variant"] == ["__meta_kubernetes_pod_label_kubetune_io_variant"]
    assert relabel["model_deployment"] == ["__meta_kubernetes_pod_label_kubetune_io_deployment"]


def test_vllm_pods_pull_with_the_charts_image_pull_secrets() -> None:
    mdep, v = mdep_for()
    deployment = build_variant_children(mdep, v, ready(), image_pull_secrets=("regcred",))[0]
    assert deployment["kind"] == "Deployment"
    assert deployment["spec"]["template"]["spec"]["imagePullSecrets"] == [{"name": "regcred"}]


@pytest.mark.parametrize(
    ("chart_labels", "expected_extra"),
    [
        ({}, {}),
        ({"release": "kube-prometheus-stack"}, {"release": "kube-prometheus-stack"}),
        # Ours win: the operator finds its children by these.
        ({"app.kubernetes.io/managed-by": "helm", "team": "ml"}, {"team": "ml"}),
    ],
)
def test_pod_monitors_carry_the_charts_selector_labels(
    chart_labels: dict[str, str], expected_extra: dict[str, str]
) -> None:
    mdep, _ = mdep_for()
    plain = build_pod_monitor(mdep)["metadata"]["labels"]
    for monitor in (
        build_pod_monitor(mdep, chart_labels),
        build_router_pod_monitor(mdep, chart_labels),
    ):
        labels = monitor["metadata"]["labels"]
        assert labels["app.kubernetes.io/managed-by"] == plain["app.kubernetes.io/managed-by"]
        assert {k: v for k, v in labels.items() if k in chart_labels and k not in plain} == expected_extra
        assert monitor["metadata"]["namespace"] == mdep["metadata"]["namespace"]
