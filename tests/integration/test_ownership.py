"""Create-or-own against the real API server: a child's name held by someone else is never adopted."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from tests.support.cluster import Kube
from tests.support.polling import aeventually

from kubetune.kube.client import KubeClient
from kubetune.reconcile.finetunejob import FineTuneJobReconciler
from kubetune.reconcile.modeldeployment import ModelDeploymentReconciler
from kubetune.settings import OperatorSettings

pytestmark = pytest.mark.cluster

API = "kubetune.io/v1alpha1"
NOW = datetime(2026, 5, 1, tzinfo=UTC)


def ftj(name: str) -> dict[str, Any]:
    return {
        "apiVersion": API,
        "kind": "FineTuneJob",
        "metadata": {"name": name},
        "spec": {
            "baseModel": {"uri": "pvc://models/base"},
            "dataset": {"uri": "pvc://data/train.jsonl"},
            "output": {"uri": "pvc://models/out"},
        },
    }


def foreign(kind: str, name: str) -> dict[str, Any]:
    body: dict[str, Any] = {"apiVersion": "v1", "kind": kind, "metadata": {"name": name}}
    if kind == "ConfigMap":
        body["data"] = {"mine": "yes"}
    if kind == "Secret":
        body["stringData"] = {"token": "someone-elses-token"}
    return body


async def read(client: KubeClient, kind: str, name: str, namespace: str) -> dict[str, Any]:
    api = API if kind in ("FineTuneJob", "ModelDeployment") else "v1"
    found = await client.get(api, kind, namespace, name)
    assert found is not None, f"{kind} {name} is gone"
    return found


@pytest.mark.parametrize(("kind", "child"), [("ServiceAccount", "x-trainer"), ("ConfigMap", "x-config")])
async def test_a_finetunejob_never_adopts_a_child_name_held_by_another_object(
    kube: Kube, namespace: str, client: KubeClient, kind: str, child: str
) -> None:
    kube.apply(foreign(kind, child), namespace)
    before = await read(client, kind, child, namespace)
    kube.apply(ftj("x"), namespace)
    reconciler = FineTuneJobReconciler(OperatorSettings())
    outcome = await reconciler.reconcile(
        client, await read(client, "FineTuneJob", "x", namespace), NOW, resync=False
    )

    (accepted,) = [c for c in outcome.status["conditions"] if c["type"] == "Accepted"]
    assert (accepted["status"], accepted["reason"]) == ("False", "NameConflict")
    assert f"{kind} {child} already exists" in accepted["message"]
    assert [e.reason for e in outcome.events] == ["NameConflict"]
    after = await read(client, kind, child, namespace)
    assert after["metadata"].get("ownerReferences") is None, "adopted"
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"], "rewritten"

    # Deleting the FineTuneJob garbage-collects what it created, never the object it found.
    kube.kubectl("delete", "finetunejob", "x", "-n", namespace, "--wait=true")
    created = "x-config" if kind == "ServiceAccount" else "x-trainer"
    created_kind = "ConfigMap" if kind == "ServiceAccount" else "ServiceAccount"

    async def collected() -> bool:
        return await client.get("v1", created_kind, namespace, created) is None

    await aeventually(collected, timeout=60, message=f"{created_kind} {created} garbage-collected")
    assert (await read(client, kind, child, namespace))["metadata"]["uid"] == before["metadata"]["uid"]


async def test_a_child_replaced_by_someone_else_is_not_taken_over(
    kube: Kube, namespace: str, client: KubeClient
) -> None:
    kube.apply(ftj("yy"), namespace)
    reconciler = FineTuneJobReconciler(OperatorSettings())
    obj = await read(client, "FineTuneJob", "yy", namespace)
    first = await reconciler.reconcile(client, obj, NOW, resync=False)
    assert all(c["reason"] != "NameConflict" for c in first.status["conditions"])
    ours = await read(client, "ConfigMap", "yy-config", namespace)
    assert ours["metadata"]["ownerReferences"][0]["uid"] == obj["metadata"]["uid"]

    # Deleted: recreated on the next full apply (the remembered uid no longer matches anything).
    kube.kubectl("delete", "configmap", "yy-config", "-n", namespace)
    reconciler.forget(obj["metadata"]["uid"])
    reconciler.owned.remember(
        obj["metadata"]["uid"], ("v1", "ConfigMap", namespace, "yy-config"), ours["metadata"]["uid"]
    )
    await reconciler.reconcile(client, obj, NOW, resync=True)
    recreated = await read(client, "ConfigMap", "yy-config", namespace)
    assert recreated["metadata"]["uid"] != ours["metadata"]["uid"]

    # Replaced by someone else's: the remembered uid fails the apply, and the newcomer is left alone.
    kube.kubectl("delete", "configmap", "yy-config", "-n", namespace)
    kube.apply(foreign("ConfigMap", "yy-config"), namespace)
    reconciler.forget(obj["metadata"]["uid"])
    reconciler.owned.remember(
        obj["metadata"]["uid"], ("v1", "ConfigMap", namespace, "yy-config"), recreated["metadata"]["uid"]
    )
    outcome = await reconciler.reconcile(client, obj, NOW, resync=True)
    (accepted,) = [c for c in outcome.status["conditions"] if c["type"] == "Accepted"]
    assert accepted["reason"] == "NameConflict"
    assert (await read(client, "ConfigMap", "yy-config", namespace))["data"] == {"mine": "yes"}


async def test_a_modeldeployment_never_reads_a_token_secret_it_does_not_own(
    kube: Kube, namespace: str, client: KubeClient
) -> None:
    kube.apply(foreign("Secret", "chat-router-token"), namespace)
    kube.apply(
        {
            "apiVersion": API,
            "kind": "ModelDeployment",
            "metadata": {"name": "chat"},
            "spec": {"variants": [{"name": "a", "model": {"uri": "Qwen/Qwen2.5-0.5B"}, "weight": 100}]},
        },
        namespace,
    )
    reconciler = ModelDeploymentReconciler(OperatorSettings())
    obj = await read(client, "ModelDeployment", "chat", namespace)
    outcome = await reconciler.reconcile(client, obj, NOW, resync=False)
    (accepted,) = [c for c in outcome.status["conditions"] if c["type"] == "Accepted"]
    assert (accepted["status"], accepted["reason"]) == ("False", "NameConflict")
    assert "Secret chat-router-token" in accepted["message"]
    assert "someone-elses-token" not in str(outcome.status)
    assert await client.get("apps/v1", "Deployment", namespace, "chat-router") is None
