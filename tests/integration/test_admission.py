"""The real API server accepts every example and rejects bad specs, naming the field."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.support.cluster import Kube

pytestmark = pytest.mark.cluster

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))

VALID_FTJ: dict[str, Any] = {
    "apiVersion": "kubetune.io/v1alpha1",
    "kind": "FineTuneJob",
    "metadata": {"name": "bad"},
    "spec": {
        "baseModel": {"uri": "Qwen/Qwen2.5-0.5B"},
        "dataset": {"uri": "pvc://data/train.jsonl"},
        "output": {"uri": "pvc://models/out"},
    },
}
VALID_MDEP: dict[str, Any] = {
    "apiVersion": "kubetune.io/v1alpha1",
    "kind": "ModelDeployment",
    "metadata": {"name": "bad"},
    "spec": {
        "variants": [
            {"name": "a", "model": {"uri": "Qwen/Qwen2.5-0.5B"}, "weight": 70},
            {"name": "b", "model": {"uri": "Qwen/Qwen2.5-0.5B-Instruct"}, "weight": 30},
        ]
    },
}
CANARY = {"stableVariant": "a", "canaryVariant": "b", "steps": [10, 50, 100]}
VALID_SHARED_BASE: dict[str, Any] = {
    **VALID_MDEP,
    "spec": {
        "variants": [
            {
                "name": "base",
                "model": {"uri": "Qwen/Qwen2.5-0.5B"},
                "adapters": [{"name": "x", "uri": "pvc://a/x"}],
            },
            {"name": "a", "servedBy": {"variant": "base", "adapter": "x"}, "weight": 100},
        ]
    },
}


def mutate(base: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """Set (or with value=DELETE remove) a dotted path; list indexes are numbers."""
    obj = copy.deepcopy(base)
    keys = path.split(".")
    node: Any = obj
    for key in keys[:-1]:
        node = node[int(key)] if isinstance(node, list) else node.setdefault(key, {})
    last = keys[-1]
    if value is DELETE:
        del node[last]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return obj


DELETE = object()

INIT_FROM = {"finetuneJobRef": {"name": "week-1"}}
INVALID: list[tuple[str, dict[str, Any], str]] = [
    (
        "initFrom with method full",
        mutate(mutate(VALID_FTJ, "spec.method", "full"), "spec.initFrom", INIT_FROM),
        "spec.initFrom",
    ),
    (
        "initFrom replayFraction above 1",
        mutate(VALID_FTJ, "spec.initFrom", {**INIT_FROM, "replayFraction": 1.5}),
        "spec.initFrom.replayFraction",
    ),
    (
        "initFrom learningRateScale zero",
        mutate(VALID_FTJ, "spec.initFrom", {**INIT_FROM, "learningRateScale": 0}),
        "spec.initFrom.learningRateScale",
    ),
    (
        "initFrom without a job name",
        mutate(VALID_FTJ, "spec.initFrom", {"finetuneJobRef": {"name": "Not_A_Name"}}),
        "spec.initFrom.finetuneJobRef.name",
    ),
    ("bad method enum", mutate(VALID_FTJ, "spec.method", "prefix-tuning"), "spec.method"),
    ("lora rank out of range", mutate(VALID_FTJ, "spec.lora", {"r": 0}), "spec.lora.r"),
    ("missing baseModel", mutate(VALID_FTJ, "spec.baseModel", DELETE), "spec.baseModel"),
    ("missing output", mutate(VALID_FTJ, "spec.output", DELETE), "spec.output"),
    ("bad dataset format", mutate(VALID_FTJ, "spec.dataset.format", "csv"), "spec.dataset.format"),
    (
        "dataset uri scheme",
        mutate(VALID_FTJ, "spec.dataset.uri", "ftp://host/data.jsonl"),
        "spec.dataset.uri",
    ),
    ("lora with full", mutate(mutate(VALID_FTJ, "spec.method", "full"), "spec.lora", {"r": 8}), "spec.lora"),
    (
        "qlora without gpu",
        mutate(mutate(VALID_FTJ, "spec.method", "qlora"), "spec.resources", {"gpusPerNode": 0}),
        "spec.resources.gpusPerNode",
    ),
    (
        "qlora with zero-3",
        mutate(mutate(VALID_FTJ, "spec.method", "qlora"), "spec.deepspeed", {"zeroStage": 3}),
        "spec.deepspeed.zeroStage",
    ),
    (
        "flash attention without gpu",
        mutate(
            mutate(VALID_FTJ, "spec.hyperparameters", {"attnImplementation": "flash_attention_2"}),
            "spec.resources",
            {"gpusPerNode": 0},
        ),
        "spec.hyperparameters.attnImplementation",
    ),
    (
        "unknown attention kernel",
        mutate(VALID_FTJ, "spec.hyperparameters", {"attnImplementation": "flash_attention_9"}),
        "spec.hyperparameters.attnImplementation",
    ),
    (
        "liger kernels without gpu",
        mutate(
            mutate(VALID_FTJ, "spec.hyperparameters", {"ligerKernels": True}),
            "spec.resources",
            {"gpusPerNode": 0},
        ),
        "spec.hyperparameters.ligerKernels",
    ),
    (
        "splits leave no training data",
        mutate(mutate(VALID_FTJ, "spec.dataset.validationSplit", 0.5), "spec.dataset.testSplit", 0.45),
        "spec.dataset.testSplit",
    ),
    (
        "offloadParams needs zero-3",
        mutate(VALID_FTJ, "spec.deepspeed", {"zeroStage": 2, "offloadParams": True}),
        "spec.deepspeed.offloadParams",
    ),
    (
        "zero stage out of range",
        mutate(VALID_FTJ, "spec.deepspeed", {"zeroStage": 4}),
        "spec.deepspeed.zeroStage",
    ),
    (
        "learning rate zero",
        mutate(VALID_FTJ, "spec.hyperparameters", {"learningRate": 0}),
        "spec.hyperparameters.learningRate",
    ),
    (
        "bad precision",
        mutate(VALID_FTJ, "spec.hyperparameters", {"precision": "int8"}),
        "spec.hyperparameters.precision",
    ),
    ("unknown field", mutate(VALID_FTJ, "spec.learningRate", 0.1), "spec.learningRate"),
    ("too many nodes", mutate(VALID_FTJ, "spec.resources", {"nodes": 1000}), "spec.resources.nodes"),
    ("weights not summing to 100", mutate(VALID_MDEP, "spec.variants.1.weight", 20), "spec.variants"),
    ("duplicate variant names", mutate(VALID_MDEP, "spec.variants.1.name", "a"), "spec.variants[1]"),
    (
        "model with uri and job ref",
        mutate(VALID_MDEP, "spec.variants.0.model", {"uri": "a/b", "finetuneJobRef": {"name": "x"}}),
        "spec.variants[0].model",
    ),
    ("model with neither", mutate(VALID_MDEP, "spec.variants.0.model", {}), "spec.variants[0].model"),
    (
        "variant name not a DNS label",
        mutate(VALID_MDEP, "spec.variants.0.name", "Bad_Name"),
        "spec.variants[0].name",
    ),
    ("weight above 100", mutate(VALID_MDEP, "spec.variants.0.weight", 150), "spec.variants[0].weight"),
    (
        "canary steps decreasing",
        mutate(VALID_MDEP, "spec.traffic", {"canary": {**CANARY, "steps": [50, 25, 100]}}),
        "spec.traffic.canary.steps",
    ),
    (
        "canary not ending at 100",
        mutate(VALID_MDEP, "spec.traffic", {"canary": {**CANARY, "steps": [10, 50]}}),
        "spec.traffic.canary.steps",
    ),
    (
        "canary names unknown variant",
        mutate(VALID_MDEP, "spec.traffic", {"canary": {**CANARY, "canaryVariant": "zzz"}}),
        "spec.traffic.canary",
    ),
    (
        "gate without threshold",
        mutate(VALID_MDEP, "spec.variants.0.gate", {"metric": "bleu"}),
        "spec.variants[0].gate",
    ),
    (
        "tensor parallel zero",
        mutate(VALID_MDEP, "spec.variants.0.vllm", {"tensorParallelSize": 0}),
        "spec.variants[0].vllm.tensorParallelSize",
    ),
    (
        "CPU serving with tensor parallelism",
        mutate(
            mutate(VALID_MDEP, "spec.variants.0.resources", {"gpus": 0}),
            "spec.variants.0.vllm",
            {"tensorParallelSize": 2},
        ),
        "spec.variants[0].resources.gpus",
    ),
    (
        "negative GPUs",
        mutate(VALID_MDEP, "spec.variants.0.resources", {"gpus": -1}),
        "spec.variants[0].resources.gpus",
    ),
    (
        "bad traffic provider",
        mutate(VALID_MDEP, "spec.traffic", {"provider": "istio"}),
        "spec.traffic.provider",
    ),
    (
        "servedBy with a model too",
        mutate(VALID_SHARED_BASE, "spec.variants.1.model", {"uri": "a/b"}),
        'spec.variants[1]: Invalid value: "object": set exactly one of model or servedBy',
    ),
    (
        "variant with neither model nor servedBy",
        mutate(VALID_SHARED_BASE, "spec.variants.1.servedBy", DELETE),
        "set exactly one of model or servedBy",
    ),
    (
        "servedBy with adapters of its own",
        mutate(VALID_SHARED_BASE, "spec.variants.1.adapters", [{"name": "y", "uri": "pvc://a/y"}]),
        "spec.variants[1].adapters",
    ),
    (
        "servedBy names an unknown adapter",
        mutate(VALID_SHARED_BASE, "spec.variants.1.servedBy.adapter", "nope"),
        "spec.variants: Invalid value",
    ),
    (
        "servedBy names a variant without pods",
        mutate(VALID_SHARED_BASE, "spec.variants.1.servedBy.variant", "a"),
        "servedBy must name a variant with its own model",
    ),
    (
        "servedBy behind an HTTPRoute",
        mutate(
            VALID_SHARED_BASE,
            "spec.traffic",
            {"provider": "gateway-api", "gatewayParentRefs": [{"name": "g"}]},
        ),
        "spec.traffic.provider",
    ),
    (
        "servedBy behind InferencePools",
        mutate(VALID_SHARED_BASE, "spec.traffic", {"provider": "inference-pool"}),
        "spec.traffic.provider",
    ),
    (
        "backend timeout longer than the request's",
        mutate(VALID_MDEP, "spec.traffic", {"timeouts": {"request": "60s", "backendRequest": "10m"}}),
        "spec.traffic.timeouts.backendRequest",
    ),
    (
        "timeout not a Gateway API duration",
        mutate(VALID_MDEP, "spec.traffic", {"timeouts": {"request": "1.5h"}}),
        "spec.traffic.timeouts.request",
    ),
    (
        "hostname with a scheme",
        mutate(VALID_MDEP, "spec.traffic", {"hostnames": ["https://llm.example.com"]}),
        "spec.traffic.hostnames[0]",
    ),
    # Issue #17: specs that were accepted, then failed when rendered or served.
    (
        "sticky header with a space",
        mutate(VALID_MDEP, "spec.traffic", {"stickyHeader": "x user"}),
        "spec.traffic.stickyHeader",
    ),
    (
        "empty sticky header",
        mutate(VALID_MDEP, "spec.traffic", {"stickyHeader": ""}),
        "spec.traffic.stickyHeader",
    ),
    ("name with a leading digit", mutate(VALID_MDEP, "metadata.name", "1chat"), "metadata.name"),
    ("name with a dot", mutate(VALID_MDEP, "metadata.name", "chat.v2"), "metadata.name"),
    ("name too long for child names", mutate(VALID_MDEP, "metadata.name", "c" * 41), "metadata.name"),
    ("name colliding with children", mutate(VALID_MDEP, "metadata.name", "a-vllm"), "metadata.name"),
    ("name containing -vllm-", mutate(VALID_MDEP, "metadata.name", "a-vllm-b"), "metadata.name"),
    (
        "negative memory",
        mutate(VALID_MDEP, "spec.variants.0.resources", {"memory": "-1Gi"}),
        "spec.variants[0].resources.memory",
    ),
    (
        "negative integer cpu",
        mutate(VALID_MDEP, "spec.variants.0.resources", {"cpu": -2}),
        "spec.variants[0].resources.cpu",
    ),
    (
        "negative training memory",
        mutate(VALID_FTJ, "spec.resources", {"memory": "-8Gi"}),
        "spec.resources.memory",
    ),
    (
        "autoscaling min above max",
        mutate(VALID_MDEP, "spec.variants.0.autoscaling", {"minReplicas": 5, "maxReplicas": 2}),
        "spec.variants[0].autoscaling.minReplicas",
    ),
    (
        "canary interval zero",
        mutate(VALID_MDEP, "spec.traffic", {"canary": {**CANARY, "interval": "0s"}}),
        "spec.traffic.canary.interval",
    ),
    *[
        (
            f"extraArgs {arg}",
            mutate(VALID_MDEP, "spec.variants.0.vllm", {"extraArgs": [arg, "1"]}),
            "spec.variants[0].vllm.extraArgs",
        )
        for arg in (
            "--port",
            "--host=0.0.0.0",
            "--trust-remote-code",
            "--trust_remote_code",
            "--po",
            "--model",
        )
    ],
    (
        "gateway-api without parentRefs",
        mutate(VALID_MDEP, "spec.traffic", {"provider": "gateway-api"}),
        "spec.traffic.gatewayParentRefs",
    ),
    ("empty baseModel uri", mutate(VALID_FTJ, "spec.baseModel.uri", ""), "spec.baseModel.uri"),
    # Found by the property test (test_admission_property.py): accepted, then the pods were rejected.
    (
        "toleration without key or Exists",
        mutate(VALID_MDEP, "spec.variants.0.resources", {"tolerations": [{"effect": "NoSchedule"}]}),
        "spec.variants[0].resources.tolerations[0].operator",
    ),
    (
        "toleration key not a label key",
        mutate(VALID_FTJ, "spec.resources", {"tolerations": [{"key": "a b", "operator": "Exists"}]}),
        "spec.resources.tolerations[0].key",
    ),
    (
        "tolerationSeconds without NoExecute",
        mutate(VALID_FTJ, "spec.resources", {"tolerations": [{"key": "k", "tolerationSeconds": 5}]}),
        "spec.resources.tolerations[0].tolerationSeconds",
    ),
    (
        "gpuType not a label value",
        mutate(VALID_MDEP, "spec.variants.0.resources", {"gpuType": "H100 80GB"}),
        "spec.variants[0].resources.gpuType",
    ),
    (
        "priority class not a DNS name",
        mutate(VALID_FTJ, "spec.resources", {"priorityClassName": "High"}),
        "spec.resources.priorityClassName",
    ),
    (
        "quantity with a fractional exponent",
        mutate(VALID_MDEP, "spec.variants.0.resources", {"memory": "1e1.5"}),
        "spec.variants[0].resources.memory",
    ),
    (
        "quantity with a huge exponent",
        mutate(VALID_MDEP, "spec.variants.0.resources", {"cpu": ".1E+102266867"}),
        "spec.variants[0].resources.cpu",
    ),
    (
        "queue name not a label value",
        mutate(VALID_FTJ, "spec.resources", {"queueName": "a/b"}),
        "spec.resources.queueName",
    ),
]


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_examples_are_accepted(kube: Kube, namespace: str, path: Path) -> None:
    kube.kubectl("create", "--dry-run=server", "-n", namespace, "-f", str(path))


@pytest.mark.parametrize(
    ("manifest", "field"), [(m, f) for _, m, f in INVALID], ids=[c for c, _, _ in INVALID]
)
def test_invalid_specs_are_rejected_naming_the_field(
    kube: Kube, namespace: str, manifest: dict[str, Any], field: str
) -> None:
    proc = kube.kubectl(
        "create", "--dry-run=server", "-n", namespace, "-f", "-", input=yaml.safe_dump(manifest), check=False
    )
    assert proc.returncode != 0, f"accepted an invalid manifest:\n{yaml.safe_dump(manifest)}"
    assert field in proc.stderr, proc.stderr


def test_valid_base_manifests_are_accepted(kube: Kube, namespace: str) -> None:
    """Guards the table above: each case fails for its mutation, not for a broken base."""
    with_canary = mutate(VALID_MDEP, "spec.traffic", {"canary": CANARY})
    for manifest in (VALID_FTJ, VALID_MDEP, with_canary, VALID_SHARED_BASE):
        kube.kubectl("create", "--dry-run=server", "-n", namespace, "-f", "-", input=yaml.safe_dump(manifest))


def test_defaults_are_applied(kube: Kube, namespace: str) -> None:
    kube.apply(mutate(VALID_FTJ, "metadata.name", "defaults"), namespace)
    spec = kube.get("finetunejob", "defaults", namespace)["spec"]
    assert spec["method"] == "lora"
    assert spec["dataset"]["validationSplit"] == 0.1
    assert spec["dataset"]["testSplit"] == 0.1
    assert spec["dataset"]["format"] == "auto"
    assert spec["hyperparameters"]["precision"] == "bf16"
    assert spec["resources"] == {"nodes": 1, "gpusPerNode": 1}
    assert spec["runPolicy"]["backoffLimit"] == 3


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        ("spec.method", "full", "spec.method"),
        ("spec.dataset.uri", "pvc://data/other.jsonl", "spec.dataset"),
        ("spec.hyperparameters", {"learningRate": 0.1}, "spec.hyperparameters"),
        ("spec.initFrom", {"finetuneJobRef": {"name": "week-2"}}, "spec.initFrom"),
    ],
)
def test_training_fields_are_immutable(kube: Kube, namespace: str, path: str, value: Any, field: str) -> None:
    name = f"immutable-{abs(hash(path)) % 10000}"
    original = mutate(mutate(VALID_FTJ, "metadata.name", name), "spec.initFrom", INIT_FROM)
    kube.apply(original, namespace)
    changed = mutate(original, path, value)
    proc = kube.kubectl(
        "apply",
        "--server-side",
        "--field-manager=test",
        "-n",
        namespace,
        "-f",
        "-",
        input=yaml.safe_dump(changed),
        check=False,
    )
    assert proc.returncode != 0
    assert field in proc.stderr, proc.stderr
    assert "immutable" in proc.stderr, proc.stderr


@pytest.mark.parametrize(
    ("field", "before", "after"),
    [
        ("lora", None, {"r": 8}),
        ("lora", {"r": 8}, None),
        ("deepspeed", None, {"zeroStage": 2}),
        ("deepspeed", {"zeroStage": 2}, None),
        ("initFrom", None, INIT_FROM),
        ("initFrom", INIT_FROM, None),
    ],
    ids=["add lora", "remove lora", "add deepspeed", "remove deepspeed", "add initFrom", "remove initFrom"],
)
def test_optional_training_fields_cannot_be_added_or_removed(
    kube: Kube, namespace: str, field: str, before: Any, after: Any
) -> None:
    name = f"optional-{field.lower()}-{'add' if before is None else 'remove'}"
    original = mutate(VALID_FTJ, "metadata.name", name)
    if before is not None:
        original = mutate(original, f"spec.{field}", before)
    kube.kubectl("create", "-n", namespace, "-f", "-", input=yaml.safe_dump(original))
    changed = mutate(original, f"spec.{field}", after if after is not None else DELETE)
    proc = kube.kubectl("replace", "-n", namespace, "-f", "-", input=yaml.safe_dump(changed), check=False)
    assert proc.returncode != 0, f"{field} changed from {before} to {after}"
    assert f"spec.{field}" in proc.stderr, proc.stderr
    assert "immutable" in proc.stderr, proc.stderr


@pytest.mark.parametrize(
    "extra_args",
    [["--enable-prefix-caching"], ["--max-model-len=4096"], ["--portion", "1"], ["--p", "1"], ["-O3"]],
)
def test_harmless_extra_args_are_accepted(kube: Kube, namespace: str, extra_args: list[str]) -> None:
    manifest = mutate(VALID_MDEP, "spec.variants.0.vllm", {"extraArgs": extra_args})
    kube.kubectl("create", "--dry-run=server", "-n", namespace, "-f", "-", input=yaml.safe_dump(manifest))


def test_run_policy_stays_mutable(kube: Kube, namespace: str) -> None:
    kube.apply(mutate(VALID_FTJ, "metadata.name", "suspendable"), namespace)
    kube.apply(
        mutate(mutate(VALID_FTJ, "metadata.name", "suspendable"), "spec.runPolicy", {"suspend": True}),
        namespace,
    )
    assert kube.get("finetunejob", "suspendable", namespace)["spec"]["runPolicy"]["suspend"] is True
