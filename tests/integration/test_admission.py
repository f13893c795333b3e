"""The real API server accepts every example and rejects bad specs, naming the field."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.support.cluster import Kube
from tests.support.manifests import minimal_ftj

pytestmark = pytest.mark.cluster

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))

VALID_FTJ = minimal_ftj("bad")
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
BASES = {"finetunejob": VALID_FTJ, "modeldeployment": VALID_MDEP, "shared-base": VALID_SHARED_BASE}


def invalid_cases(path: Path) -> list[tuple[str, dict[str, Any], str]]:
    """(case, manifest, field) from the table in `path` (its header says how a case is written)."""
    cases: list[tuple[str, dict[str, Any], str]] = []
    for case in yaml.safe_load(path.read_text()):
        manifest = BASES[case["base"]]
        for key, value in case.get("set", {}).items():
            manifest = mutate(manifest, key, value)
        for key in case.get("unset", []):
            manifest = mutate(manifest, key, DELETE)
        cases.append((case["case"], manifest, case["field"]))
    return cases


INVALID = [
    *invalid_cases(Path(__file__).with_name("admission_invalid.yaml")),
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
]


def assert_rejected_naming(kube: Kube, namespace: str, manifest: dict[str, Any], field: str) -> None:
    """The API server refuses to create `manifest` (a dry run) with a message naming `field`."""
    proc = kube.kubectl(
        "create", "--dry-run=server", "-n", namespace, "-f", "-", input=yaml.safe_dump(manifest), check=False
    )
    assert proc.returncode != 0, f"accepted an invalid manifest:\n{yaml.safe_dump(manifest)}"
    assert field in proc.stderr, proc.stderr


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_examples_are_accepted(kube: Kube, namespace: str, path: Path) -> None:
    kube.kubectl("create", "--dry-run=server", "-n", namespace, "-f", str(path))


@pytest.mark.parametrize(
    ("manifest", "field"), [(m, f) for _, m, f in INVALID], ids=[c for c, _, _ in INVALID]
)
def test_invalid_specs_are_rejected_naming_the_field(
    kube: Kube, namespace: str, manifest: dict[str, Any], field: str
) -> None:
    assert_rejected_naming(kube, namespace, manifest, field)


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
