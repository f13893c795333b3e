"""FineTuneJob states as GitOps tools see them: recorded from the real API server, judged by kstatus,
Argo CD's Lua and Flux's CEL (tests/support/gitops.py). The test plays the kubelet, as in
test_finetunejob_lifecycle.py. `KUBETUNE_RECORD_GITOPS_STATES=1` rewrites tests/gitops/states/.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.integration.test_finetunejob_lifecycle import (
    GOOD_DATA,
    dataset_config_map,
    ftj_manifest,
    start_gang,
    train_to_running,
    two_gpu_nodes,
    wait_phase,
    with_run_policy,
)
from tests.support.cluster import Kube
from tests.support.gitops import assert_verdicts, condition, record
from tests.support.kubelet import FakeKubelet, finish_pod
from tests.support.operator import running_operator

from kubetune.api.finetunejob import Artifacts, EvalMetrics
from kubetune.api.trainingconfig import TrainerResult
from kubetune.kube.client import KubeClient
from kubetune.trainer.result import encode_result

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def kubelet(kube: Kube) -> Iterator[FakeKubelet]:
    with two_gpu_nodes(kube, "gitops-") as fake:
        yield fake


async def test_training_suspended_succeeded(
    kube: Kube, namespace: str, client: KubeClient, kubelet: FakeKubelet, tmp_path: Path
) -> None:
    manifest = ftj_manifest("run")
    kube.apply(dataset_config_map(GOOD_DATA), namespace)
    kube.apply(manifest, namespace)
    recorded = []
    with running_operator(kube, namespace, resync_seconds=1.0):
        training, _ = await train_to_running(client, namespace, "run")
        recorded.append(record("finetunejob-training", training, tmp_path))

        kube.apply(with_run_policy(manifest, suspend=True), namespace)
        suspended = await wait_phase(client, namespace, "run", "Suspended")
        recorded.append(record("finetunejob-suspended", suspended, tmp_path))

        kube.apply(with_run_policy(manifest, suspend=False), namespace)
        pods = await start_gang(client, namespace, "run-train-r0", 2)
        await wait_phase(client, namespace, "run", "Running")
        result = TrainerResult(
            outcome="Succeeded",
            metrics=EvalMetrics(eval_loss=0.5),
            artifacts=Artifacts(adapter_uri="s3://models/out/adapter", base_model_uri="Qwen/Qwen2.5-0.5B"),
        )
        await finish_pod(client, pods[0], 0, encode_result(result))
        await finish_pod(client, pods[1], 0)
        done = await wait_phase(client, namespace, "run", "Succeeded")
        recorded.append(record("finetunejob-succeeded", done, tmp_path))
        table = kube.kubectl("get", "finetunejob", "run", "-n", namespace).stdout
    header, row = table.splitlines()[:2]
    assert header.split()[-2:] == ["REASON", "AGE"], header
    assert "Completed" in row.split(), row
    assert condition(training, "Reconciling")["reason"] == "Training"
    assert condition(suspended, "Ready")["reason"] == "Suspended"
    assert condition(done, "Ready")["reason"] == "Completed"
    assert_verdicts(recorded)


async def test_backoff_exhausted_and_invalid_spec_settle_as_stalled(
    kube: Kube, namespace: str, client: KubeClient, kubelet: FakeKubelet, tmp_path: Path
) -> None:
    kube.apply(dataset_config_map(GOOD_DATA), namespace)
    kube.apply(ftj_manifest("crash", backoffLimit=0), namespace)
    # The nodes offer 8 GPUs: preflight rejects 16 per pod (a spec the schema cannot judge).
    kube.apply(ftj_manifest("toobig", nodes=1, gpus=16), namespace)
    with running_operator(kube, namespace, resync_seconds=1.0):
        invalid = await wait_phase(client, namespace, "toobig", "Failed")
        _, pods = await train_to_running(client, namespace, "crash")
        await finish_pod(client, pods[1], 1, "RuntimeError: NCCL error: unhandled system error")
        crashed = await wait_phase(client, namespace, "crash", "Failed")
    stalled = condition(crashed, "Stalled")
    assert (stalled["status"], stalled["reason"]) == ("True", "BackoffLimitExceeded")
    assert condition(invalid, "Stalled")["reason"] == "InvalidSpec"
    assert "spec.resources.gpusPerNode" in condition(invalid, "Stalled")["message"]
    assert all(
        c["observedGeneration"] == obj["metadata"]["generation"]
        for obj in (crashed, invalid)
        for c in obj["status"]["conditions"]
    )
    assert_verdicts(
        [
            record("finetunejob-backoff-exhausted", crashed, tmp_path),
            record("finetunejob-invalid-spec", invalid, tmp_path),
        ]
    )
