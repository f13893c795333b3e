"""FineTuneJob against the real control plane, the operator in-process, the test as kubelet."""

from __future__ import annotations

import asyncio
import copy
import json
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY
from tests.support.cluster import Kube
from tests.support.kubelet import (
    FakeKubelet,
    disrupt_pod,
    finish_pod,
    job_pods,
    run_container,
    run_pods,
    scheduled_pods,
)
from tests.support.operator import running_operator
from tests.support.polling import aeventually

from kubetune.api.finetunejob import Artifacts, EvalMetrics, FineTuneJobSpec, Lineage
from kubetune.api.trainingconfig import TrainerResult
from kubetune.kube.client import ApiError, Credentials, KubeClient
from kubetune.trainer.config import load_config
from kubetune.trainer.progress import KubeCredentials, KubeReportReporter, ProgressUpdate
from kubetune.trainer.result import encode_result

API = "kubetune.io/v1alpha1"
KIND = "FineTuneJob"
GPU_TYPE = "NVIDIA-H100-80GB-HBM3"
DATASET_CM = "ft-data"
GOOD_DATA = "".join(f'{{"instruction": "Add {i} and {i}.", "output": "{2 * i}"}}\n' for i in range(1, 21))
# Line 3 has an empty output: the validator must name it.
BAD_DATA = (
    '{"instruction": "Say hi", "output": "hi"}\n'
    '{"instruction": "Say bye", "output": "bye"}\n'
    '{"instruction": "Say nothing", "output": ""}\n'
    '{"instruction": "Count", "output": "1 2 3"}\n'
)
OWNED_KINDS = [
    ("v1", "ConfigMap"),
    ("v1", "Service"),
    ("v1", "ServiceAccount"),
    ("rbac.authorization.k8s.io/v1", "Role"),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"),
    ("batch/v1", "Job"),
]


def ftj_manifest(name: str, *, nodes: int = 2, gpus: int = 4, **run_policy: Any) -> dict[str, Any]:
    return {
        "apiVersion": API,
        "kind": KIND,
        "metadata": {"name": name},
        "spec": {
            "baseModel": {"uri": "Qwen/Qwen2.5-0.5B"},
            "dataset": {"uri": f"configMap://{DATASET_CM}/data.jsonl", "format": "alpaca"},
            "output": {"uri": "s3://models/out"},
            "resources": {"nodes": nodes, "gpusPerNode": gpus, "gpuType": GPU_TYPE},
            "runPolicy": {"backoffLimit": 3, **run_policy},
        },
    }


def dataset_config_map(data: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": DATASET_CM},
        "data": {"data.jsonl": data},
    }


@contextmanager
def two_gpu_nodes(kube: Kube, prefix: str = "") -> Iterator[FakeKubelet]:
    """Two 8-GPU nodes for the scheduler to bind pods to; their kubelet is the test."""
    with FakeKubelet(str(kube.kubeconfig)) as fake:
        fake.add_node(f"{prefix}gpu-a", gpus=8, product=GPU_TYPE)
        fake.add_node(f"{prefix}gpu-b", gpus=8, product=GPU_TYPE)
        yield fake
    assert not fake.errors, fake.errors


@pytest.fixture(scope="module")
def kubelet(kube: Kube) -> Iterator[FakeKubelet]:
    with two_gpu_nodes(kube) as fake:
        yield fake


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    conditions: list[dict[str, Any]] = (obj.get("status") or {}).get("conditions") or []
    found = next((c for c in conditions if c["type"] == type_), None)
    assert found is not None, f"no {type_} condition in {obj.get('status')}"
    return found


async def get_ftj(client: KubeClient, namespace: str, name: str) -> dict[str, Any]:
    obj = await client.get(API, KIND, namespace, name)
    assert obj is not None, f"FineTuneJob {name} is gone"
    return obj


async def wait_phase(
    client: KubeClient, namespace: str, name: str, phase: str, *, timeout: float = 60.0
) -> dict[str, Any]:
    async def reached() -> dict[str, Any]:
        obj = await get_ftj(client, namespace, name)
        status = obj.get("status") or {}
        assert status.get("phase") == phase, f"phase {status.get('phase')}: {status.get('conditions')}"
        return obj

    result: dict[str, Any] = await aeventually(reached, timeout=timeout, message=f"{name} {phase}")
    return result


async def wait_job(client: KubeClient, namespace: str, name: str, *, timeout: float = 60.0) -> dict[str, Any]:
    async def exists() -> dict[str, Any]:
        job = await client.get("batch/v1", "Job", namespace, name)
        assert job is not None, f"no Job {name} yet"
        return job

    job: dict[str, Any] = await aeventually(exists, timeout=timeout, message=f"Job {name}")
    return job


async def start_gang(client: KubeClient, namespace: str, job: str, nodes: int) -> list[dict[str, Any]]:
    """Wait until the scheduler bound every rank, then start them."""

    async def bound() -> list[dict[str, Any]]:
        return await scheduled_pods(client, namespace, job, nodes)

    pods = await aeventually(bound, timeout=60, message=f"{nodes} pods of {job} scheduled")
    await run_pods(client, pods)
    return pods


async def validate_for_real(client: KubeClient, namespace: str, ftj_name: str, root: Path) -> tuple[int, str]:
    """Run the validation pod's `validate` container (the real validator) and report its exit."""
    job = f"{ftj_name}-validate"
    [pod] = await start_gang(client, namespace, job, 1)
    code, message = await run_container(client, pod, "validate", root)
    await finish_pod(client, pod, code, message)
    return code, message


async def pass_validation(client: KubeClient, namespace: str, ftj_name: str) -> None:
    [pod] = await start_gang(client, namespace, f"{ftj_name}-validate", 1)
    await finish_pod(client, pod, 0, '{"outcome":"Succeeded","message":"20 records valid"}')


async def train_to_running(
    client: KubeClient, namespace: str, name: str
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Validation passes and attempt 0's two pods start: the FineTuneJob `name` once Running, and the pods."""
    await pass_validation(client, namespace, name)
    await wait_job(client, namespace, f"{name}-train-r0")
    pods = await start_gang(client, namespace, f"{name}-train-r0", 2)
    return await wait_phase(client, namespace, name, "Running"), pods


async def events(client: KubeClient, namespace: str, name: str) -> list[dict[str, Any]]:
    listed = await client.request(
        "GET",
        f"/api/v1/namespaces/{namespace}/events",
        params={"fieldSelector": f"involvedObject.name={name},involvedObject.kind={KIND}"},
    )
    return list(listed.get("items", []))


async def children(client: KubeClient, namespace: str, ftj_name: str) -> list[dict[str, Any]]:
    selector = f"kubetune.io/job-name={ftj_name}"
    found: list[dict[str, Any]] = []
    for api_version, kind in [*OWNED_KINDS, ("v1", "Pod")]:
        found += await client.list(api_version, kind, namespace, label_selector=selector)
    return found


def with_run_policy(manifest: dict[str, Any], **fields: Any) -> dict[str, Any]:
    changed = copy.deepcopy(manifest)
    changed["spec"]["runPolicy"].update(fields)
    return changed


async def trainer_client(kube: Kube, client: KubeClient, namespace: str, service_account: str) -> KubeClient:
    """A client holding the training pods' service-account token (what rank 0 authenticates with)."""
    review = await client.request(
        "POST",
        f"/api/v1/namespaces/{namespace}/serviceaccounts/{service_account}/token",
        body={
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"expirationSeconds": 600},
        },
    )
    context = ssl.create_default_context(cafile=str(kube.plane.pki / "ca.crt"))
    return KubeClient(Credentials(kube.plane.server, context, token=review["status"]["token"]))


async def report_progress(
    kube: Kube, token_client: KubeClient, namespace: str, name: str, update: ProgressUpdate
) -> None:
    """Rank 0's reporter, pointed at the test API server with the pod's token."""
    token = token_client.credentials.token
    context = ssl.create_default_context(cafile=str(kube.plane.pki / "ca.crt"))
    credentials = KubeCredentials(kube.plane.server, token, context)
    reporter = KubeReportReporter(credentials, namespace, f"{name}-progress", attempt=0)
    await asyncio.to_thread(reporter.report, update)


def owner_of(obj: dict[str, Any]) -> list[dict[str, Any]]:
    return list(obj["metadata"].get("ownerReferences") or [])


pytestmark = pytest.mark.cluster


async def test_children_progress_and_success(
    kube: Kube, namespace: str, client: KubeClient, kubelet: FakeKubelet, tmp_path: Path
) -> None:
    kube.apply(dataset_config_map(GOOD_DATA), namespace)
    kube.apply(ftj_manifest("llama"), namespace)
    kube.apply(ftj_manifest("other", nodes=1, gpus=1), namespace)
    with running_operator(kube, namespace, resync_seconds=1.0):
        obj = await wait_phase(client, namespace, "llama", "Validating")
        uid = obj["metadata"]["uid"]
        expected_owner = {
            "apiVersion": API,
            "kind": KIND,
            "name": "llama",
            "uid": uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }

        config_map = await client.get("v1", "ConfigMap", namespace, "llama-config")
        assert config_map is not None
        config_file = tmp_path / "config.json"
        config_file.write_text(config_map["data"]["config.json"])
        config = load_config(config_file)  # what the trainer does first
        assert (config.job_name, config.namespace) == ("llama", namespace)
        assert config.spec == FineTuneJobSpec.model_validate(obj["spec"])
        assert (config.progress.namespace, config.progress.report) == (namespace, "llama-progress")

        owned = [c for c in await children(client, namespace, "llama") if c["kind"] != "Pod"]
        assert sorted((c["kind"], c["metadata"]["name"]) for c in owned) == [
            ("ConfigMap", "llama-config"),
            ("Job", "llama-validate"),
            ("ServiceAccount", "llama-trainer"),
        ], "the training Job, its rendezvous Service, its report ConfigMap and its RBAC wait for validation"
        for child in owned:
            assert owner_of(child) == [expected_owner], child["metadata"]["name"]
            labels = child["metadata"]["labels"]
            assert labels["app.kubernetes.io/managed-by"] == "kubetune-operator", child["metadata"]["name"]
            assert labels["kubetune.io/job-name"] == "llama", child["metadata"]["name"]

        # The validation pod runs the real validator on the real dataset ConfigMap.
        code, message = await validate_for_real(client, namespace, "llama", tmp_path / "validate")
        assert code == 0, message

        train = await wait_job(client, namespace, "llama-train-r0")
        assert owner_of(train) == [expected_owner]
        service = await client.get("v1", "Service", namespace, "llama-workers")
        assert service is not None
        assert service["spec"]["clusterIP"] == "None"
        assert service["spec"]["publishNotReadyAddresses"] is True
        assert service["spec"]["selector"] == {"kubetune.io/job-name": "llama", "kubetune.io/role": "train"}
        role = await client.get("rbac.authorization.k8s.io/v1", "Role", namespace, "llama-trainer")
        assert role is not None
        assert role["rules"] == [
            {
                "apiGroups": [""],
                "resources": ["configmaps"],
                "resourceNames": ["llama-progress"],
                "verbs": ["patch"],
            }
        ]
        binding = await client.get("rbac.authorization.k8s.io/v1", "RoleBinding", namespace, "llama-trainer")
        assert binding is not None
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "llama-trainer", "namespace": namespace}
        ]
        assert await client.get("v1", "ServiceAccount", namespace, "llama-trainer") is not None

        for kind, api, child in (
            ("ConfigMap", "v1", "llama-progress"),
            ("Service", "v1", "llama-workers"),
            ("Role", "rbac.authorization.k8s.io/v1", "llama-trainer"),
            ("RoleBinding", "rbac.authorization.k8s.io/v1", "llama-trainer"),
        ):
            stored = await client.get(api, kind, namespace, child)
            assert stored is not None
            assert owner_of(stored) == [expected_owner], child
        assert train["metadata"]["labels"]["kubetune.io/job-name"] == "llama"
        assert train["spec"]["completionMode"] == "Indexed"
        assert train["spec"]["parallelism"] == train["spec"]["completions"] == 2
        pod_spec = train["spec"]["template"]["spec"]
        assert pod_spec["subdomain"] == "llama-workers"
        trainer = next(c for c in pod_spec["containers"] if c["name"] == "trainer")
        command = trainer["command"] + trainer.get("args", [])
        for flag in (
            "--nnodes=2",
            "--nproc-per-node=4",
            "--node-rank=$(JOB_COMPLETION_INDEX)",
            "--master-addr=llama-train-r0-0.llama-workers",
            "--master-port=29500",
        ):
            assert flag in command, (flag, command)
        assert trainer["resources"]["limits"]["nvidia.com/gpu"] == "4"
        obj = await get_ftj(client, namespace, "llama")
        assert condition(obj, "DataValidated")["status"] == "True"

        pods = await start_gang(client, namespace, "llama-train-r0", 2)
        await wait_phase(client, namespace, "llama", "Running")

        # Rank 0 reports progress with its own token; the operator adds percent and eta only.
        rank0_client = await trainer_client(kube, client, namespace, "llama-trainer")
        try:
            reported_at = datetime.now(UTC).replace(microsecond=0)
            update = ProgressUpdate(
                step=25,
                total_steps=100,
                epoch=0.75,
                loss=1.25,
                learning_rate=0.0001,
                tokens_per_second=4321.5,
                updated_at=reported_at,
            )
            await report_progress(kube, rank0_client, namespace, "llama", update)

            async def progressed() -> dict[str, Any]:
                progress = (await get_ftj(client, namespace, "llama"))["status"].get("progress") or {}
                assert progress.get("percent") == 25, progress
                assert progress.get("eta"), progress
                return dict(progress)

            progress = await aeventually(progressed, timeout=30, message="percent and eta")
            assert {k: progress[k] for k in update.to_report()} == update.to_report(), (
                "trainer fields clobbered"
            )

            # The token is good for this one ConfigMap, nothing else: no status, its own included.
            for target, subresource in (("llama", "status"), ("other", "status"), ("llama", None)):
                with pytest.raises(ApiError) as denied:
                    await rank0_client.patch_merge(
                        API,
                        KIND,
                        namespace,
                        target,
                        {"status": {"metrics": {"evalLoss": 0.01}}},
                        subresource=subresource,
                    )
                assert denied.value.status == 403, (target, subresource)
            for config_map in ("llama-config", "other-progress"):
                with pytest.raises(ApiError) as denied:
                    await rank0_client.patch_merge(
                        "v1", "ConfigMap", namespace, config_map, {"data": {"x": "y"}}
                    )
                assert denied.value.status == 403, config_map
            with pytest.raises(ApiError) as denied:
                await rank0_client.get("v1", "ConfigMap", namespace, "llama-progress")
            assert denied.value.status == 403, "patch only: the token cannot read"

            # A forged report (the run done, with an out-of-range figure) reaches nothing but a condition.
            forged = {"attempt": 0, "progress": {"step": 100, "totalSteps": 100, "mfu": 7.5}}
            await rank0_client.patch_merge(
                "v1", "ConfigMap", namespace, "llama-progress", {"data": {"report.json": json.dumps(forged)}}
            )

            async def refused() -> dict[str, Any]:
                obj = await get_ftj(client, namespace, "llama")
                valid = condition(obj, "TrainerReportValid")
                assert valid["status"] == "False", valid
                return obj

            obj = await aeventually(refused, timeout=30, message="the forged report refused")
            assert condition(obj, "TrainerReportValid")["reason"] == "InvalidReport"
            assert "progress.mfu" in condition(obj, "TrainerReportValid")["message"]
            assert obj["status"]["phase"] == "Running"
            assert obj["status"]["progress"]["step"] == 25
            assert "mfu" not in obj["status"]["progress"]

            async def reported() -> bool:
                # The event is posted after the status write the condition rode on.
                return any(
                    e["reason"] == "InvalidReport" and "progress.mfu" in e["message"]
                    for e in await events(client, namespace, "llama")
                )

            await aeventually(reported, timeout=30, message="an InvalidReport event naming progress.mfu")

            finished = ProgressUpdate(step=100, total_steps=100, loss=0.5, updated_at=datetime.now(UTC))
            await report_progress(kube, rank0_client, namespace, "llama", finished)
        finally:
            await rank0_client.close()
        await wait_phase(client, namespace, "llama", "Evaluating")

        result = TrainerResult(
            outcome="Succeeded",
            metrics=EvalMetrics(eval_loss=0.5, perplexity=1.6487),
            artifacts=Artifacts(adapter_uri="s3://models/out/adapter", base_model_uri="Qwen/Qwen2.5-0.5B"),
            lineage=Lineage(dataset_digest="sha256:" + "a" * 64, checkpoint="s3://models/out/checkpoint-100"),
            final_step=100,
        )
        await finish_pod(client, pods[0], 0, encode_result(result))
        await finish_pod(client, pods[1], 0)
        done = await wait_phase(client, namespace, "llama", "Succeeded")

        status = done["status"]
        assert condition(done, "Succeeded")["reason"] == "Completed"
        assert status["metrics"] == {"evalLoss": 0.5, "perplexity": 1.6487}
        assert status["artifacts"] == {
            "adapterUri": "s3://models/out/adapter",
            "baseModelUri": "Qwen/Qwen2.5-0.5B",
        }
        assert status["lineage"]["checkpoint"] == "s3://models/out/checkpoint-100"
        assert status["lineage"]["configHash"] == train["metadata"]["annotations"]["kubetune.io/spec-hash"]
        assert status["progress"]["percent"] == 100
        assert status["completionTime"]
        assert status["restarts"] == 0

        async def announced() -> list[str]:
            messages = [e["message"] for e in await events(client, namespace, "llama")]
            for phase in ("Validating", "Pending", "Running", "Evaluating", "Succeeded"):
                assert any(m.startswith(f"{phase}:") for m in messages), (phase, messages)
            return messages

        await aeventually(announced, timeout=30, message="an Event per phase")

        # Deleting the FineTuneJob garbage-collects every child. The operator must be running: its
        # timer keeps kopf's finalizer on the object, which only a running operator removes.
        kube.kubectl("delete", "finetunejob", "llama", "-n", namespace, "--wait=false")

        async def collected() -> bool:
            left = await children(client, namespace, "llama")
            assert not left, sorted(f"{c['kind']}/{c['metadata']['name']}" for c in left)
            return True

        await aeventually(collected, timeout=120, interval=1.0, message="children garbage-collected")


async def training_jobs(client: KubeClient, namespace: str, ftj_name: str) -> list[str]:
    jobs = await client.list(
        "batch/v1", "Job", namespace, label_selector=f"kubetune.io/job-name={ftj_name},kubetune.io/role=train"
    )
    return sorted(j["metadata"]["name"] for j in jobs if not j["metadata"].get("deletionTimestamp"))


async def gang_restart_events(client: KubeClient, namespace: str, name: str) -> list[str]:
    """The restart announcements (Warning); the Pending phase change that follows is a Normal Event."""
    found = await events(client, namespace, name)
    return [e["message"] for e in found if (e["type"], e["reason"]) == ("Warning", "GangRestart")]


async def test_gang_restarts_until_the_backoff_limit(
    kube: Kube, namespace: str, client: KubeClient, kubelet: FakeKubelet
) -> None:
    kube.apply(dataset_config_map(GOOD_DATA), namespace)
    kube.apply(ftj_manifest("gang", backoffLimit=1), namespace)
    with running_operator(kube, namespace, resync_seconds=1.0):
        await pass_validation(client, namespace, "gang")

        # Attempt 0: rank 1 is preempted. The whole gang restarts, not counted against backoffLimit.
        await wait_job(client, namespace, "gang-train-r0")
        pods = await start_gang(client, namespace, "gang-train-r0", 2)
        await wait_phase(client, namespace, "gang", "Running")
        await disrupt_pod(client, pods[1])
        await wait_job(client, namespace, "gang-train-r1")
        assert (await get_ftj(client, namespace, "gang"))["status"]["restarts"] == 0

        # Attempt 1: rank 1 crashes with a retryable error. Restart, counted.
        pods = await start_gang(client, namespace, "gang-train-r1", 2)
        await wait_phase(client, namespace, "gang", "Running")
        await finish_pod(client, pods[1], 1, "RuntimeError: NCCL error: unhandled system error")
        r2 = await wait_job(client, namespace, "gang-train-r2")
        assert r2["metadata"]["annotations"]["kubetune.io/restarts"] == "1"

        async def counted() -> bool:
            assert (await get_ftj(client, namespace, "gang"))["status"]["restarts"] == 1
            assert await training_jobs(client, namespace, "gang") == ["gang-train-r2"], "failed gangs deleted"
            return True

        await aeventually(counted, timeout=60, message="one counted restart")

        # Attempt 2: rank 0 is OOM-killed. The limit is spent: Failed, and no further attempt.
        pods = await start_gang(client, namespace, "gang-train-r2", 2)
        await wait_phase(client, namespace, "gang", "Running")
        await finish_pod(client, pods[0], 137)
        failed = await wait_phase(client, namespace, "gang", "Failed")
        cond = condition(failed, "Failed")
        assert cond["reason"] == "BackoffLimitExceeded"
        assert "backoffLimit 1" in cond["message"], cond["message"]
        assert "exit code 137" in cond["message"], cond["message"]
        assert failed["status"]["restarts"] == 1
        assert condition(failed, "Running")["status"] == "False"

        restarts = await gang_restart_events(client, namespace, "gang")
        assert len(restarts) == 2, restarts
        assert any("not counted" in m for m in restarts), restarts
        assert any("NCCL error" in m for m in restarts), restarts

        # More passes over the Failed object must not start anything or announce anything. The
        # Failed event is posted after the status write, so the count starts once it is there.
        async def failure_announced() -> int:
            found = await events(client, namespace, "gang")
            assert any(e["message"].startswith("Failed:") for e in found), found
            return len(found)

        events_before = await aeventually(failure_announced, timeout=30, message="the Failed event")
        passes = reconciles()
        await aeventually(
            lambda: _at_least(reconciles(), passes + 3), timeout=30, message="three more passes"
        )
        assert await training_jobs(client, namespace, "gang") == ["gang-train-r2"]
        assert len(await events(client, namespace, "gang")) == events_before


def reconciles() -> float:
    return REGISTRY.get_sample_value("kubetune_reconcile_total", {"kind": KIND, "result": "ok"}) or 0.0


async def _at_least(value: float, minimum: float) -> bool:
    return value >= minimum


async def test_invalid_dataset_fails_with_the_validators_message(
    kube: Kube, namespace: str, client: KubeClient, kubelet: FakeKubelet, tmp_path: Path
) -> None:
    kube.apply(dataset_config_map(BAD_DATA), namespace)
    kube.apply(ftj_manifest("bad-data"), namespace)
    with running_operator(kube, namespace, resync_seconds=1.0):
        await wait_phase(client, namespace, "bad-data", "Validating")
        code, _ = await validate_for_real(client, namespace, "bad-data", tmp_path)
        assert code == 41, "the validator's exit code for invalid data"
        failed = await wait_phase(client, namespace, "bad-data", "Failed")

        cond = condition(failed, "Failed")
        assert cond["reason"] == "InvalidData"
        assert "data.jsonl:3: output: empty" in cond["message"], cond["message"]
        validated = condition(failed, "DataValidated")
        assert (validated["status"], validated["reason"]) == ("False", "InvalidData")
        assert await training_jobs(client, namespace, "bad-data") == []

        async def warned() -> bool:
            found = [e for e in await events(client, namespace, "bad-data") if e["type"] == "Warning"]
            assert any("data.jsonl:3: output: empty" in e["message"] for e in found), found
            return True

        await aeventually(warned, timeout=30, message="a Warning Event naming the line")


@pytest.mark.parametrize(
    ("exit_code", "reason", "message"),
    [
        (41, "InvalidData", "data.jsonl:3: output: empty"),
        (40, "ConfigError", "invalid DeepSpeed config /etc/kubetune/deepspeed.json:1: Expecting value"),
    ],
    ids=["invalid-data", "config-error"],
)
async def test_fatal_exit_code_fails_without_restart(
    kube: Kube,
    namespace: str,
    client: KubeClient,
    kubelet: FakeKubelet,
    exit_code: int,
    reason: str,
    message: str,
) -> None:
    kube.apply(dataset_config_map(GOOD_DATA), namespace)
    kube.apply(ftj_manifest("fatal"), namespace)
    with running_operator(kube, namespace, resync_seconds=1.0):
        _, pods = await train_to_running(client, namespace, "fatal")
        result = TrainerResult(outcome="Failed", reason=reason, message=message)
        await finish_pod(client, pods[0], exit_code, encode_result(result))

        failed = await wait_phase(client, namespace, "fatal", "Failed")
        cond = condition(failed, "Failed")
        assert cond["reason"] == reason
        assert message in cond["message"], cond["message"]
        assert failed["status"]["restarts"] == 0
        assert await training_jobs(client, namespace, "fatal") == ["fatal-train-r0"], "no gang restart"
        assert await gang_restart_events(client, namespace, "fatal") == []


async def test_suspend_and_resume(
    kube: Kube, namespace: str, client: KubeClient, kubelet: FakeKubelet
) -> None:
    manifest = ftj_manifest("pause")
    kube.apply(dataset_config_map(GOOD_DATA), namespace)
    kube.apply(manifest, namespace)
    with running_operator(kube, namespace, resync_seconds=1.0):
        await train_to_running(client, namespace, "pause")

        kube.apply(with_run_policy(manifest, suspend=True), namespace)
        suspended = await wait_phase(client, namespace, "pause", "Suspended")
        assert condition(suspended, "Suspended")["status"] == "True"

        async def pods_stopped() -> bool:
            job = await client.get("batch/v1", "Job", namespace, "pause-train-r0")
            assert job is not None, "a suspended run keeps its training Job"
            assert job["spec"].get("suspend") is True, job["spec"].get("suspend")
            assert await job_pods(client, namespace, "pause-train-r0") == []
            return True

        await aeventually(pods_stopped, timeout=60, message="training pods stopped")

        kube.apply(with_run_policy(manifest, suspend=False), namespace)
        await start_gang(client, namespace, "pause-train-r0", 2)
        resumed = await wait_phase(client, namespace, "pause", "Running")
        assert condition(resumed, "Suspended")["status"] == "False"
        assert resumed["status"]["restarts"] == 0
        assert await training_jobs(client, namespace, "pause") == ["pause-train-r0"]


async def test_child_status_changes_reconcile_the_parent_without_waiting_for_resync(
    kube: Kube, namespace: str, client: KubeClient, kubelet: FakeKubelet
) -> None:
    """With a 10-minute resync, only the Job watch can move the FineTuneJob along this quickly."""
    kube.apply(dataset_config_map(GOOD_DATA), namespace)
    kube.apply(ftj_manifest("prompt"), namespace)
    with running_operator(kube, namespace, resync_seconds=600.0):
        running, _ = await train_to_running(client, namespace, "prompt")
        assert condition(running, "DataValidated")["status"] == "True"
