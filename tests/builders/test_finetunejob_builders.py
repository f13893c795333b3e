"""FineTuneJob builders: the children's shape, table by table."""

from __future__ import annotations

import copy
import json
import os
import re
import socket
import subprocess
import sys
from typing import Any

import kubernetes_asyncio.client as k8s
import pytest

from kubetune.api.finetunejob import FineTuneJobSpec
from kubetune.api.trainingconfig import CONFIG_DIR, TrainingConfig
from kubetune.builders.common import ANNOTATION_SPEC_HASH, LABEL_JOB
from kubetune.builders.deepspeed import build_deepspeed_config
from kubetune.builders.finetunejob import (
    ANNOTATION_RESTARTS,
    KUEUE_QUEUE_LABEL,
    RULE_DISRUPTION,
    RULE_FATAL_EXIT,
    build_children,
    build_training_config,
    child_names,
    training_job_patch,
)
from kubetune.rbac import OPERATOR_RULES

UID = "0f0f0f0f-0000-4000-8000-000000000000"


def ftj(name: str = "demo", **spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "baseModel": {"uri": "pvc://models/tiny"},
        "dataset": {"uri": "pvc://data/sft/train.jsonl"},
        "output": {"uri": "pvc://out/run1"},
    }
    for key, value in spec.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = {**base[key], **value}
        else:
            base[key] = value
    return {
        "apiVersion": "kubetune.io/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": name, "namespace": "ns", "uid": UID, "generation": 1},
        "spec": base,
    }


def job_of(obj: dict[str, Any], restart: int = 0) -> dict[str, Any]:
    return build_children(obj, restart=restart).training_job


def pod_of(job: dict[str, Any]) -> dict[str, Any]:
    pod: dict[str, Any] = job["spec"]["template"]["spec"]
    return pod


def container(pod: dict[str, Any], name: str, init: bool = False) -> dict[str, Any]:
    found: dict[str, Any] = next(
        c for c in pod["initContainers" if init else "containers"] if c["name"] == name
    )
    return found


def env_of(c: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in c.get("env", [])}


def init_names(pod: dict[str, Any]) -> list[str]:
    return [c["name"] for c in pod.get("initContainers", [])]


@pytest.mark.parametrize(
    ("nodes", "gpus", "procs", "inits", "gpu_limit"),
    [
        (1, 1, 1, [], 1),
        (2, 8, 8, ["wait-for-master"], 8),
        (4, 0, 1, ["wait-for-master"], None),
        (256, 4, 4, ["wait-for-master"], 4),
    ],
)
def test_indexed_job_topology(
    nodes: int, gpus: int, procs: int, inits: list[str], gpu_limit: int | None
) -> None:
    job = job_of(ftj(resources={"nodes": nodes, "gpusPerNode": gpus}))
    spec = job["spec"]
    assert (spec["completionMode"], spec["completions"], spec["parallelism"], spec["backoffLimit"]) == (
        "Indexed",
        nodes,
        nodes,
        0,
    )
    pod = pod_of(job)
    names = child_names("demo")
    assert pod["subdomain"] == names.service
    assert pod["restartPolicy"] == "Never"
    assert init_names(pod) == inits
    trainer = container(pod, "trainer")
    master = f"{job['metadata']['name']}-0.{names.service}"
    assert trainer["command"] == [
        "python",
        "-m",
        "kubetune.trainer",
        "launch",
        "--",
        "python",
        "-m",
        "torch.distributed.run",
        f"--nnodes={nodes}",
        f"--nproc-per-node={procs}",
        "--node-rank=$(JOB_COMPLETION_INDEX)",
        f"--master-addr={master}",
        "--master-port=29500",
        "--max-restarts=0",
        "-m",
        "kubetune.trainer",
        "train",
        "--config",
        f"{CONFIG_DIR}/config.json",
    ]
    env = env_of(trainer)
    assert (env["PET_NNODES"], env["PET_NPROC_PER_NODE"], env["PET_MASTER_ADDR"], env["PET_MASTER_PORT"]) == (
        str(nodes),
        str(procs),
        master,
        "29500",
    )
    assert env["PET_NODE_RANK"] == {
        "fieldRef": {"fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}
    }
    assert env["TORCH_NCCL_ASYNC_ERROR_HANDLING"] == "1"
    assert trainer.get("resources", {}).get("limits", {}).get("nvidia.com/gpu") == gpu_limit
    assert {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "8Gi"}} in pod["volumes"]
    assert {"name": "dshm", "mountPath": "/dev/shm"} in trainer["volumeMounts"]
    assert trainer["terminationMessagePolicy"] == "FallbackToLogsOnError"


def test_wait_for_master_checks_tcp_of_rank_zero_and_skips_rank_zero() -> None:
    pod = pod_of(job_of(ftj(resources={"nodes": 3, "gpusPerNode": 2})))
    wait = container(pod, "wait-for-master", init=True)
    script = wait["command"][-1]
    assert wait["command"][:2] == ["python", "-c"]
    assert "socket.create_connection" in script
    assert 'os.environ["JOB_COMPLETION_INDEX"] == "0"' in script
    compile(script, "wait-for-master", "exec")
    env = env_of(wait)
    assert env["PET_MASTER_ADDR"] == env_of(container(pod, "trainer"))["PET_MASTER_ADDR"]
    assert int(env["KUBETUNE_MASTER_WAIT_SECONDS"]) > 0


@pytest.mark.parametrize(
    ("name", "restart"),
    [
        ("demo", 0),
        ("a" * 63, 12),
        ("a" * 200, 3),
        ("7b-run", 0),
        ("team.v2.run", 1),
    ],
)
def test_names_are_valid_hostnames_and_dns1035_services(name: str, restart: int) -> None:
    children = build_children(ftj(name=name, resources={"nodes": 256, "gpusPerNode": 1}), restart=restart)
    job_name = children.training_job["metadata"]["name"]
    dns_label = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    # The Indexed Job's pod hostname is `<job>-<index>`: it must stay a DNS label for index 255.
    assert dns_label.match(f"{job_name}-255")
    assert len(f"{job_name}-255") <= 63
    assert f"-r{restart}" in job_name or len(name) > 40
    service = children.service["metadata"]["name"]
    assert re.match(r"^[a-z]([-a-z0-9]*[a-z0-9])?$", service)
    assert len(service) <= 63
    for manifest in children.all():
        assert len(manifest["metadata"]["labels"][LABEL_JOB]) <= 63
    assert build_children(ftj(name=name), restart=restart + 1).training_job["metadata"]["name"] != job_name


def test_gang_restarts_get_distinct_job_names_and_hostnames() -> None:
    obj = ftj(resources={"nodes": 2, "gpusPerNode": 1})
    first, second = job_of(obj, 0), job_of(obj, 1)
    assert first["metadata"]["name"] == "demo-train-r0"
    assert second["metadata"]["name"] == "demo-train-r1"
    assert env_of(container(pod_of(second), "trainer"))["PET_MASTER_ADDR"].startswith("demo-train-r1-0.")
    assert second["metadata"]["labels"]["kubetune.io/attempt"] == "1"


@pytest.mark.parametrize(
    ("counted", "expected"),
    [(None, "2"), (0, "0"), (1, "1")],
)
def test_counted_restarts_are_recorded_on_the_job(counted: int | None, expected: str) -> None:
    job = build_children(ftj(), restart=2, counted_restarts=counted).training_job
    assert job["metadata"]["annotations"][ANNOTATION_RESTARTS] == expected


def mounts_by_path(c: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["mountPath"]: m for m in c.get("volumeMounts", [])}


@pytest.mark.parametrize(
    ("spec", "paths", "mounts", "staging"),
    [
        (
            {},
            ("/mnt/kubetune/model", "/mnt/kubetune/dataset/train.jsonl", "/mnt/kubetune/output"),
            {
                "/mnt/kubetune/model": {"name": "pvc-0", "subPath": "tiny", "readOnly": True},
                "/mnt/kubetune/dataset": {"name": "pvc-1", "subPath": "sft", "readOnly": True},
                "/mnt/kubetune/output": {"name": "pvc-2", "subPath": "run1"},
            },
            False,
        ),
        (
            {
                "baseModel": {"uri": "pvc://shared/models/x"},
                "dataset": {"uri": "pvc://shared/d.jsonl"},
                "output": {"uri": "pvc://shared/"},
            },
            ("/mnt/kubetune/model", "/mnt/kubetune/dataset/d.jsonl", "/mnt/kubetune/output"),
            {
                "/mnt/kubetune/model": {"name": "pvc-0", "subPath": "models/x", "readOnly": True},
                "/mnt/kubetune/dataset": {"name": "pvc-0", "readOnly": True},
                "/mnt/kubetune/output": {"name": "pvc-0"},
            },
            False,
        ),
        (
            {"baseModel": {"uri": "org/model"}, "dataset": {"uri": "configMap://my-data/records.jsonl"}},
            ("/mnt/kubetune/staging/model", "/mnt/kubetune/dataset/records.jsonl", "/mnt/kubetune/output"),
            {
                "/mnt/kubetune/staging": {"name": "staging"},
                "/mnt/kubetune/dataset": {"name": "dataset", "readOnly": True},
                "/mnt/kubetune/output": {"name": "pvc-0", "subPath": "run1"},
            },
            True,
        ),
        (
            {"dataset": {"uri": "s3://bucket/a/b/c.jsonl"}, "output": {"uri": "s3://bucket/out"}},
            ("/mnt/kubetune/model", "/mnt/kubetune/staging/dataset/c.jsonl", "/mnt/kubetune/output"),
            {
                "/mnt/kubetune/staging": {"name": "staging"},
                "/mnt/kubetune/model": {"name": "pvc-0", "subPath": "tiny", "readOnly": True},
                "/mnt/kubetune/output": {"name": "output-scratch"},
            },
            True,
        ),
        (
            {"dataset": {"uri": "hf://org/dataset"}},
            ("/mnt/kubetune/model", "/mnt/kubetune/staging/dataset/data.jsonl", "/mnt/kubetune/output"),
            {"/mnt/kubetune/staging": {"name": "staging"}},
            True,
        ),
    ],
)
def test_storage_uris_become_mounts_and_paths(
    spec: dict[str, Any], paths: tuple[str, str, str], mounts: dict[str, dict[str, Any]], staging: bool
) -> None:
    obj = ftj(**spec)
    config = build_training_config(obj)
    assert (config.paths.base_model, config.paths.dataset, config.paths.output_dir) == paths
    pod = pod_of(job_of(obj))
    trainer_mounts = mounts_by_path(container(pod, "trainer"))
    for path, expected in mounts.items():
        assert trainer_mounts[path] == {"mountPath": path, **expected}
    assert ("stage" in init_names(pod)) is staging
    volume_names = {v["name"] for v in pod["volumes"]}
    assert {m["name"] for m in trainer_mounts.values()} <= volume_names


def test_shared_claim_volume_is_writable_only_when_output_uses_it() -> None:
    pod = pod_of(job_of(ftj(baseModel={"uri": "pvc://ro/m"}, output={"uri": "pvc://rw/o"})))
    claims = {
        v["persistentVolumeClaim"]["claimName"]: v["persistentVolumeClaim"]
        for v in pod["volumes"]
        if "persistentVolumeClaim" in v
    }
    assert claims["ro"].get("readOnly") is True
    assert "readOnly" not in claims["rw"]


def test_configmap_dataset_mounts_only_that_key() -> None:
    pod = pod_of(job_of(ftj(dataset={"uri": "configMap://my-data/records.jsonl"})))
    volume = next(v for v in pod["volumes"] if v["name"] == "dataset")
    assert volume == {
        "name": "dataset",
        "configMap": {"name": "my-data", "items": [{"key": "records.jsonl", "path": "records.jsonl"}]},
    }


S3_ENV = {
    "AWS_ACCESS_KEY_ID": ("s3", "AWS_ACCESS_KEY_ID", False),
    "AWS_SECRET_ACCESS_KEY": ("s3", "AWS_SECRET_ACCESS_KEY", False),
    "AWS_SESSION_TOKEN": ("s3", "AWS_SESSION_TOKEN", True),
    "AWS_ENDPOINT_URL": ("s3", "AWS_ENDPOINT_URL", True),
    "AWS_DEFAULT_REGION": ("s3", "AWS_DEFAULT_REGION", True),
}


@pytest.mark.parametrize(
    ("spec", "stage_env", "trainer_env"),
    [
        (
            {"baseModel": {"uri": "hf://org/m", "secretRef": {"name": "hf"}}},
            {"HF_TOKEN": ("hf", "token", False)},
            {},
        ),
        (
            {"dataset": {"uri": "s3://b/k.jsonl", "secretRef": {"name": "s3", "key": "ignored"}}},
            S3_ENV,
            {},
        ),
        (
            {
                "baseModel": {"uri": "hf://org/m", "secretRef": {"name": "hf", "key": "hf-token"}},
                "dataset": {"uri": "s3://b/k.jsonl", "secretRef": {"name": "s3"}},
            },
            {"HF_TOKEN": ("hf", "hf-token", False), **S3_ENV},
            {},
        ),
        (
            # the same Secret for both s3:// inputs: one set of variables
            {
                "baseModel": {"uri": "s3://b/model", "secretRef": {"name": "s3"}},
                "dataset": {"uri": "s3://b/k.jsonl", "secretRef": {"name": "s3"}},
            },
            S3_ENV,
            {},
        ),
        (
            {"output": {"uri": "s3://b/out", "secretRef": {"name": "out"}}},
            None,
            {"AWS_ACCESS_KEY_ID": ("out", "AWS_ACCESS_KEY_ID", False)},
        ),
        ({"baseModel": {"uri": "org/public-model"}}, {}, {}),
    ],
)
def test_credentials_only_by_secret_key_ref(
    spec: dict[str, Any],
    stage_env: dict[str, tuple[str, str, bool]] | None,
    trainer_env: dict[str, tuple[str, str, bool]],
) -> None:
    pod = pod_of(job_of(ftj(**spec)))
    if stage_env is None:
        assert "stage" not in init_names(pod)
    else:
        stage = container(pod, "stage", init=True)
        assert stage["command"] == [
            "python",
            "-m",
            "kubetune.trainer",
            "stage",
            "--config",
            f"{CONFIG_DIR}/config.json",
        ]
        secrets = {k: v for k, v in env_of(stage).items() if isinstance(v, dict)}
        assert {
            k: (v["secretKeyRef"]["name"], v["secretKeyRef"]["key"], v["secretKeyRef"].get("optional", False))
            for k, v in secrets.items()
        } == stage_env
    trainer = env_of(container(pod, "trainer"))
    for name, (secret, key, _) in trainer_env.items():
        assert trainer[name]["secretKeyRef"] == {"name": secret, "key": key}
    if not trainer_env:
        assert not any(k.startswith(("AWS_", "HF_TOKEN")) for k in trainer)
    # No container carries a literal credential value.
    for c in [*pod.get("initContainers", []), *pod["containers"]]:
        for e in c.get("env", []):
            if re.search("TOKEN|SECRET|ACCESS_KEY", e["name"]):
                assert "value" not in e


@pytest.mark.parametrize(
    ("resources", "node_selector", "tolerations", "priority", "queue", "suspend"),
    [
        ({}, None, None, None, None, False),
        (
            {"gpuType": "NVIDIA-H100-80GB-HBM3"},
            {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
            None,
            None,
            None,
            False,
        ),
        (
            {
                "tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
                "priorityClassName": "p",
            },
            None,
            [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
            "p",
            None,
            False,
        ),
        ({"queueName": "lq"}, None, None, None, "lq", True),
    ],
)
def test_scheduling_fields(
    resources: dict[str, Any],
    node_selector: dict[str, str] | None,
    tolerations: list[dict[str, str]] | None,
    priority: str | None,
    queue: str | None,
    suspend: bool,
) -> None:
    job = job_of(ftj(resources=resources))
    pod = pod_of(job)
    assert pod.get("nodeSelector") == node_selector
    assert pod.get("tolerations") == tolerations
    assert pod.get("priorityClassName") == priority
    assert job["metadata"]["labels"].get(KUEUE_QUEUE_LABEL) == queue
    assert job["spec"]["suspend"] is suspend


@pytest.mark.parametrize(
    ("run_policy", "queue", "job_fields", "patch"),
    [
        ({}, None, {"suspend": False}, {"suspend": False}),
        ({"suspend": True}, None, {"suspend": True}, {"suspend": True}),
        (
            {"activeDeadlineSeconds": 60, "ttlSecondsAfterFinished": 0},
            None,
            {"activeDeadlineSeconds": 60, "ttlSecondsAfterFinished": 0, "suspend": False},
            {"activeDeadlineSeconds": 60, "ttlSecondsAfterFinished": 0, "suspend": False},
        ),
        # Kueue owns `suspend` once the Job exists: created suspended, never patched by us.
        ({"suspend": False}, "lq", {"suspend": True}, {}),
        (
            {"activeDeadlineSeconds": 5},
            "lq",
            {"activeDeadlineSeconds": 5, "suspend": True},
            {"activeDeadlineSeconds": 5},
        ),
    ],
)
def test_run_policy_passthrough(
    run_policy: dict[str, Any], queue: str | None, job_fields: dict[str, Any], patch: dict[str, Any]
) -> None:
    resources = {"queueName": queue} if queue else {}
    obj = ftj(runPolicy=run_policy, resources=resources)
    spec = build_children(obj, restart=0).training_job["spec"]
    assert {
        k: spec[k] for k in ("activeDeadlineSeconds", "ttlSecondsAfterFinished", "suspend") if k in spec
    } == (job_fields)
    assert training_job_patch(FineTuneJobSpec.model_validate(obj["spec"])) == {"spec": patch}


@pytest.mark.parametrize(
    ("which", "container_name", "disruption_action"),
    [("training_job", "trainer", "FailJob"), ("validation_job", "validate", "Ignore")],
)
def test_pod_failure_policy_fails_fast_on_fatal_codes_and_disruptions(
    which: str, container_name: str, disruption_action: str
) -> None:
    job = getattr(build_children(ftj(), restart=0), which)
    rules = job["spec"]["podFailurePolicy"]["rules"]
    assert rules[RULE_FATAL_EXIT] == {
        "action": "FailJob",
        "onExitCodes": {"containerName": container_name, "operator": "In", "values": [40, 41]},
    }
    assert rules[RULE_DISRUPTION] == {
        "action": disruption_action,
        "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
    }
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"


def test_validation_job_runs_the_validator_without_gpus_or_token() -> None:
    children = build_children(
        ftj(
            baseModel={"uri": "hf://org/m"},
            resources={"gpusPerNode": 8, "gpuType": "X"},
            runPolicy={"backoffLimit": 5},
        ),
        restart=0,
    )
    job = children.validation_job
    pod = job["spec"]["template"]["spec"]
    validate = container(pod, "validate")
    assert validate["command"] == [
        "python",
        "-m",
        "kubetune.trainer",
        "validate",
        "--config",
        f"{CONFIG_DIR}/config.json",
    ]
    assert "nvidia.com/gpu" not in json.dumps(pod)
    assert "nodeSelector" not in pod
    assert pod["automountServiceAccountToken"] is False
    assert init_names(pod) == ["stage"]
    assert job["spec"]["backoffLimit"] == 5
    assert "completionMode" not in job["spec"]


@pytest.mark.parametrize(
    "spec",
    [{}, {"deepspeed": {"zeroStage": 3}, "method": "full", "resources": {"nodes": 2, "gpusPerNode": 8}}],
)
def test_every_child_is_owned_and_labelled(spec: dict[str, Any]) -> None:
    children = build_children(ftj(**spec), restart=0)
    for manifest in children.all():
        meta = manifest["metadata"]
        assert meta["namespace"] == "ns"
        assert meta["ownerReferences"] == [
            {
                "apiVersion": "kubetune.io/v1alpha1",
                "kind": "FineTuneJob",
                "name": "demo",
                "uid": UID,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
        assert meta["labels"][LABEL_JOB] == "demo"
        assert meta["labels"]["app.kubernetes.io/managed-by"] == "kubetune-operator"
        assert meta["labels"]["app.kubernetes.io/part-of"] == "kubetune"
    for job in (children.training_job, children.validation_job):
        assert job["spec"]["template"]["metadata"]["labels"][LABEL_JOB] == "demo"


def test_service_is_headless_and_selects_training_pods() -> None:
    children = build_children(ftj(), restart=0)
    spec = children.service["spec"]
    assert spec["clusterIP"] == "None"
    assert spec["publishNotReadyAddresses"] is True
    assert spec["ports"] == [{"name": "rendezvous", "port": 29500, "targetPort": 29500, "protocol": "TCP"}]
    pod_labels = children.training_job["spec"]["template"]["metadata"]["labels"]
    assert spec["selector"].items() <= pod_labels.items()
    assert (
        not spec["selector"].items()
        <= children.validation_job["spec"]["template"]["metadata"]["labels"].items()
    )


def test_rbac_lets_the_pods_patch_only_their_report_config_map() -> None:
    children = build_children(ftj(name="run-7"), restart=0)
    assert children.role["rules"] == [
        {
            "apiGroups": [""],
            "resources": ["configmaps"],
            "resourceNames": ["run-7-progress"],
            "verbs": ["patch"],
        }
    ]
    assert children.report["metadata"]["name"] == "run-7-progress"
    # Created without data: the report key is rank 0's, and the operator's apply never owns it.
    assert "data" not in children.report
    assert children.report in children.shared()
    assert children.report not in children.for_validation()
    config = TrainingConfig.model_validate_json(children.config_map["data"]["config.json"])
    assert (config.progress.namespace, config.progress.report) == ("ns", "run-7-progress")
    assert children.role_binding["roleRef"]["name"] == children.role["metadata"]["name"]
    assert children.role_binding["subjects"] == [
        {"kind": "ServiceAccount", "name": children.service_account["metadata"]["name"], "namespace": "ns"}
    ]
    for job in (children.training_job, children.validation_job):
        assert (
            job["spec"]["template"]["spec"]["serviceAccountName"]
            == children.service_account["metadata"]["name"]
        )


def test_rank_zero_reports_the_attempt_of_its_pod() -> None:
    job = build_children(ftj(name="run-7"), restart=3).training_job
    template = job["spec"]["template"]
    trainer = next(c for c in template["spec"]["containers"] if c["name"] == "trainer")
    [attempt] = [e for e in trainer["env"] if e["name"] == "KUBETUNE_ATTEMPT"]
    field = attempt["valueFrom"]["fieldRef"]["fieldPath"]
    label = re.fullmatch(r"metadata\.labels\['(.+)'\]", field)
    assert label is not None
    assert template["metadata"]["labels"][label.group(1)] == "3"


@pytest.mark.parametrize(
    ("spec", "has_deepspeed"),
    [({}, False), ({"deepspeed": {"zeroStage": 2}}, True)],
)
def test_configmap_holds_the_trainer_contract(spec: dict[str, Any], has_deepspeed: bool) -> None:
    obj = ftj(**spec)
    data = build_children(obj, restart=0).config_map["data"]
    parsed = TrainingConfig.model_validate_json(data["config.json"])
    assert parsed == build_training_config(obj)
    assert (parsed.job_name, parsed.namespace, parsed.progress.name, parsed.progress.namespace) == (
        "demo",
        "ns",
        "demo",
        "ns",
    )
    assert ("deepspeed.json" in data) is has_deepspeed
    assert (parsed.paths.deepspeed_config == f"{CONFIG_DIR}/deepspeed.json") is has_deepspeed
    if has_deepspeed:
        assert json.loads(data["deepspeed.json"]) == build_deepspeed_config(parsed.spec, None)


def test_deepspeed_from_config_ref_is_required_and_used() -> None:
    obj = ftj(deepspeed={"configRef": {"name": "ds", "key": "z.json"}})
    with pytest.raises(ValueError, match=re.escape("ConfigMap ds key z.json was not found")):
        build_children(obj, restart=0)
    children = build_children(obj, restart=0, deepspeed_from_ref='{"zero_optimization": {"stage": 1}}')
    assert json.loads(children.config_map["data"]["deepspeed.json"]) == {"zero_optimization": {"stage": 1}}


@pytest.mark.parametrize(
    ("change", "hash_changes"),
    [
        ({"runPolicy": {"backoffLimit": 9, "suspend": True, "activeDeadlineSeconds": 10}}, False),
        ({"image": {"image": "other:1"}}, True),
        ({"hyperparameters": {"epochs": 1}}, True),
        ({"resources": {"nodes": 2}}, True),
    ],
)
def test_spec_hash_covers_the_pod_template_inputs_not_run_policy(
    change: dict[str, Any], hash_changes: bool
) -> None:
    before = build_children(ftj(), restart=0)
    after = build_children(ftj(**change), restart=0)
    assert (before.spec_hash != after.spec_hash) is hash_changes
    assert after.training_job["metadata"]["annotations"][ANNOTATION_SPEC_HASH] == after.spec_hash


def test_deepspeed_config_ref_content_is_part_of_the_hash() -> None:
    obj = ftj(deepspeed={"configRef": {"name": "ds", "key": "z.json"}})
    one = build_children(obj, restart=0, deepspeed_from_ref='{"a": 1}').spec_hash
    two = build_children(obj, restart=0, deepspeed_from_ref='{"a": 2}').spec_hash
    assert one != two


def test_builders_are_deterministic_and_do_not_mutate_input() -> None:
    obj = ftj(resources={"nodes": 2, "gpusPerNode": 4}, deepspeed={"zeroStage": 3}, method="full")
    frozen = copy.deepcopy(obj)
    assert build_children(obj, restart=1) == build_children(obj, restart=1)
    assert obj == frozen


@pytest.mark.parametrize(
    ("image", "expected", "policy"),
    [
        (None, "ghcr.io/kubetune/trainer:0.1.0", None),
        ({"image": "r/t:2", "pullPolicy": "Always"}, "r/t:2", "Always"),
    ],
)
def test_image_override(image: dict[str, str] | None, expected: str, policy: str | None) -> None:
    extra: dict[str, Any] = {"image": image} if image else {}
    obj = ftj(baseModel={"uri": "org/m"}, **extra)
    pod = pod_of(job_of(obj))
    for c in [*pod["initContainers"], *pod["containers"]]:
        assert c["image"] == expected
        assert c.get("imagePullPolicy") == policy


def test_pods_are_restricted_compatible() -> None:
    obj = ftj(baseModel={"uri": "org/m"}, resources={"nodes": 2})
    children = build_children(obj, restart=0)
    for job in (children.training_job, children.validation_job):
        pod = job["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for c in [*pod.get("initContainers", []), *pod["containers"]]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"] == {"drop": ["ALL"]}


# --- every field we emit exists in the Kubernetes API (catches misspelt keys) ---

_KINDS = {
    "ConfigMap": "V1ConfigMap",
    "Service": "V1Service",
    "ServiceAccount": "V1ServiceAccount",
    "Role": "V1Role",
    "RoleBinding": "V1RoleBinding",
    "Job": "V1Job",
    "NetworkPolicy": "V1NetworkPolicy",
}
_SCALARS = {"str", "int", "bool", "float", "object", "datetime"}


def unknown_fields(value: Any, type_name: str, path: str) -> list[str]:
    if type_name in _SCALARS:
        return []
    if type_name.startswith("list["):
        return [
            e for i, item in enumerate(value) for e in unknown_fields(item, type_name[5:-1], f"{path}[{i}]")
        ]
    if type_name.startswith("dict("):
        inner = type_name[5:-1].split(", ", 1)[1]
        return [e for k, item in value.items() for e in unknown_fields(item, inner, f"{path}.{k}")]
    model = getattr(k8s, type_name)
    by_wire = {wire: attr for attr, wire in model.attribute_map.items()}
    errors: list[str] = []
    for key, item in value.items():
        if key not in by_wire:
            errors.append(f"{path}.{key}")
        else:
            errors.extend(unknown_fields(item, model.openapi_types[by_wire[key]], f"{path}.{key}"))
    return errors


@pytest.mark.parametrize(
    "spec",
    [
        {},
        {
            "baseModel": {"uri": "hf://o/m", "secretRef": {"name": "s"}},
            "dataset": {"uri": "configMap://c/k"},
            "output": {"uri": "s3://b/o", "secretRef": {"name": "s"}},
            "deepspeed": {"zeroStage": 3},
            "method": "full",
            "resources": {
                "nodes": 2,
                "gpusPerNode": 8,
                "gpuType": "G",
                "cpu": "8",
                "memory": "64Gi",
                "tolerations": [{"key": "k", "operator": "Exists"}],
                "priorityClassName": "p",
                "queueName": "q",
            },
            "runPolicy": {"activeDeadlineSeconds": 5, "ttlSecondsAfterFinished": 5},
        },
    ],
)
def test_manifests_use_only_known_kubernetes_fields(spec: dict[str, Any]) -> None:
    for manifest in build_children(ftj(**spec), restart=0).all():
        assert unknown_fields(manifest, _KINDS[manifest["kind"]], manifest["kind"]) == []


def test_manifests_share_no_mutable_parts() -> None:
    children = build_children(ftj(baseModel={"uri": "org/m"}, resources={"nodes": 2}), restart=0)
    pod = pod_of(children.training_job)
    pod["initContainers"][0]["securityContext"]["capabilities"]["drop"].append("X")
    pod["initContainers"][0]["volumeMounts"][1]["readOnly"] = True
    again = build_children(ftj(baseModel={"uri": "org/m"}, resources={"nodes": 2}), restart=0)
    assert pod_of(children.training_job)["containers"][0] == pod_of(again.training_job)["containers"][0]
    assert children.validation_job == again.validation_job


@pytest.mark.parametrize(("index", "listening", "rc"), [("0", False, 0), ("1", True, 0), ("2", False, 1)])
def test_wait_for_master_script_runs(index: str, listening: bool, rc: int) -> None:
    script = container(pod_of(job_of(ftj(resources={"nodes": 3}))), "wait-for-master", init=True)["command"][
        -1
    ]
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        if listening:
            server.listen()
        env = {
            **os.environ,
            "JOB_COMPLETION_INDEX": index,
            "PET_MASTER_ADDR": "127.0.0.1",
            "PET_MASTER_PORT": str(server.getsockname()[1]),
            "KUBETUNE_MASTER_WAIT_SECONDS": "0",
        }
        proc = subprocess.run(
            [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
        )
    assert proc.returncode == rc, proc.stderr
    if rc:
        assert "rank 0 not reachable at 127.0.0.1" in proc.stderr


@pytest.mark.parametrize(("names", "expected"), [((), None), (("regcred",), [{"name": "regcred"}])])
def test_both_jobs_pull_with_the_charts_image_pull_secrets(
    names: tuple[str, ...], expected: list[dict[str, str]] | None
) -> None:
    children = build_children(ftj(), restart=0, image_pull_secrets=names)
    for job in (children.validation_job, children.training_job):
        assert job["spec"]["template"]["spec"].get("imagePullSecrets") == expected


def test_the_operator_holds_every_permission_it_grants() -> None:
    """RBAC escalation prevention: creating a Role needs every permission in it (the chart grants no
    `escalate`), so the trainer's Role must stay within the operator's own rules."""
    held = {
        (rule.api_group, resource, verb)
        for rule in OPERATOR_RULES
        for resource in rule.resources
        for verb in rule.verbs
    }
    role = build_children(ftj(name="run-7"), restart=0).role
    granted = {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    assert granted <= held
