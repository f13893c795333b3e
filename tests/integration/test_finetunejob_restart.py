"""The operator stopped in the middle of reconciling many FineTuneJobs converges without duplicates."""

from __future__ import annotations

import os
import signal
import subprocess
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.integration.test_finetunejob_lifecycle import (
    API,
    GOOD_DATA,
    KIND,
    OWNED_KINDS,
    _at_least,
    dataset_config_map,
    events,
    ftj_manifest,
    kubelet,
    reconciles,
)
from tests.support.cluster import Kube
from tests.support.kubelet import FakeKubelet
from tests.support.operator import running_operator
from tests.support.polling import aeventually

from kubetune.devcluster.controlplane import free_port, operator_command
from kubetune.kube.client import KubeClient

pytestmark = pytest.mark.cluster

COUNT = 50
NAMES = [f"job-{i:02d}" for i in range(COUNT)]
__all__ = ["kubelet"]  # the fixture, shared with the lifecycle tests


@contextmanager
def operator_process(kube: Kube, namespace: str, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """The operator as shipped (`kubetune operator`), in its own process so that it can be killed."""
    env = {
        **os.environ,
        "KUBECONFIG": str(kube.kubeconfig),
        "KUBETUNE_KUBECONFIG": str(kube.kubeconfig),
        "KUBETUNE_RESYNC_SECONDS": "10",
    }
    command = operator_command(namespace, liveness_port=free_port())
    with log.open("wb") as out:
        proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)


async def validation_jobs(client: KubeClient, namespace: str) -> list[dict[str, Any]]:
    return await client.list("batch/v1", "Job", namespace, label_selector="kubetune.io/role=validate")


async def test_operator_killed_mid_reconcile_converges(
    kube: Kube, namespace: str, client: KubeClient, kubelet: FakeKubelet, tmp_path: Path
) -> None:
    kube.apply(dataset_config_map(GOOD_DATA), namespace)
    kube.apply("\n---\n".join(yaml.safe_dump(ftj_manifest(n, nodes=1, gpus=1)) for n in NAMES), namespace)

    async def some_created() -> int:
        return len(await validation_jobs(client, namespace)) >= 3

    log = tmp_path / "operator.log"
    with operator_process(kube, namespace, log) as proc:
        await aeventually(some_created, timeout=120, interval=0.05, message="first validation Jobs")
        proc.kill()  # SIGKILL, with passes in flight: no clean-up of any kind
        assert proc.wait(timeout=30) == -signal.SIGKILL, log.read_text()[-3000:]
    interrupted = len(await validation_jobs(client, namespace))
    assert interrupted < COUNT, "the operator finished before it was killed: nothing was interrupted"

    async def all_validating() -> bool:
        listed = await client.list(API, KIND, namespace)
        phases = Counter((o.get("status") or {}).get("phase") for o in listed)
        assert phases == {"Validating": COUNT}, phases
        return True

    with running_operator(kube, namespace, resync_seconds=10.0):
        await aeventually(all_validating, timeout=180, interval=1.0, message="every FineTuneJob Validating")
        # Resync passes over the converged objects must not add anything either.
        passes = reconciles()
        await aeventually(
            lambda: _at_least(reconciles(), passes + COUNT), timeout=60, interval=1.0, message="resync passes"
        )
    ftjs = {o["metadata"]["name"]: o for o in await client.list(API, KIND, namespace)}

    uids = {name: obj["metadata"]["uid"] for name, obj in ftjs.items()}
    jobs = await client.list("batch/v1", "Job", namespace)
    assert sorted(j["metadata"]["name"] for j in jobs) == sorted(f"{n}-validate" for n in NAMES)
    # Validating: one config, ServiceAccount and validation Job each; the rendezvous Service, the
    # report ConfigMap and its RBAC come with training.
    training_only = {"Service", "Role", "RoleBinding"}
    for api_version, kind in OWNED_KINDS:
        items = await client.list(api_version, kind, namespace, label_selector="kubetune.io/job-name")
        per_job = Counter(i["metadata"]["labels"]["kubetune.io/job-name"] for i in items)
        expected = {} if kind in training_only else dict.fromkeys(NAMES, 1)
        assert per_job == expected, f"{kind}: {per_job}"
        for item in items:
            owner = item["metadata"]["labels"]["kubetune.io/job-name"]
            refs = [(r["kind"], r["uid"], r.get("controller")) for r in item["metadata"]["ownerReferences"]]
            assert refs == [(KIND, uids[owner], True)], f"{kind} {item['metadata']['name']} is an orphan"
    pods = await client.list("v1", "Pod", namespace, label_selector="kubetune.io/role=validate")
    assert Counter(p["metadata"]["labels"]["kubetune.io/job-name"] for p in pods) == dict.fromkeys(NAMES, 1)

    for name in NAMES:
        announced = [e["message"] for e in await events(client, namespace, name)]
        validating = [m for m in announced if m.startswith("Validating:")]
        assert len(validating) <= 1, f"{name}: {announced}"
