"""The quickstart for real: our images, a kubelet, containerd, the chart, training and serving on CPU.

What `make dev` runs, with assertions: the operator installed by `helm install` runs as a pod; a
FineTuneJob trains a LoRA on the tiny model in a trainer pod (the loss falls) and exports it to a PVC;
a ModelDeployment serves base and tuned on vLLM CPU pods behind the router; user requests split by
the canary's weight (the router's own per-variant counters); Prometheus scrapes the router; the
canary promotes. A second canary, whose pods are cut off from the router mid-rollout (an injected
fault), is rolled back by its error rate.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from tests.support.cluster import Kube
from tests.support.polling import eventually
from tests.support.realnode import answering_json, answers
from tests.support.realstack import RealStack, rejected, router_counts

from kubetune.devcluster import quickstart, stack

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

NS = quickstart.NAMESPACE


def pause_canary(kube: Kube, *, paused: bool) -> None:
    """`traffic.canary.pause`, as a user sets it (the operator never writes spec)."""
    patch = {"spec": {"traffic": {"canary": {"pause": paused}}}}
    kube.kubectl(
        "patch", "modeldeployment", quickstart.DEPLOYMENT, "-n", NS, "--type=merge", "-p", json.dumps(patch)
    )


def routed_split(router: str) -> dict[str, int]:
    """The split the router behind `router` serves (its `/kubetune/config`), routable variants only."""
    document: Any = answering_json(f"{router}/kubetune/config")
    assert document is not None, "the router does not answer yet"
    routable = document["routable"]
    return {v["name"]: v["weight"] for v in document["config"]["variants"] if routable.get(v["name"])}


def test_quickstart_trains_serves_splits_and_promotes(real: RealStack) -> None:
    kube = real.kube
    with real.explained():
        operator_pods = json.loads(
            kube.kubectl("get", "pods", "-n", stack.RELEASE_NAMESPACE, "-o", "json").stdout
        )["items"]
        assert [p["spec"]["nodeName"] for p in operator_pods] == [real.node.layout.name]

        stack.seed_base_model(kube.kubeconfig, real.images)

        real.apply([quickstart.finetune_job()])

        def finished() -> bool:
            return real.status("finetunejob", quickstart.JOB).get("phase") in ("Succeeded", "Failed")

        eventually(finished, timeout=900, interval=0.5, message="FineTuneJob finished")
        status = real.status("finetunejob", quickstart.JOB)
        assert status["phase"] == "Succeeded", status
        # Every logged step, from the trainer's metrics.json: status.progress may show only the last.
        history = real.loss_history(status["artifacts"]["mergedModelUri"])
        losses = [loss for _, loss in history]
        assert len(losses) >= 2, losses
        assert losses[-1] < losses[0] * 0.8, losses
        assert status["progress"]["step"] == history[-1][0], (status["progress"], history[-1])
        assert status["metrics"]["evalLoss"] > 0
        assert status["artifacts"]["mergedModelUri"].startswith(f"pvc://{quickstart.CLAIM}/{quickstart.JOB}")

        deployment = quickstart.model_deployment(real.node.prometheus_url)
        real.apply([deployment])
        eventually(
            lambda: (
                (real.status("modeldeployment", quickstart.DEPLOYMENT).get("canary") or {}).get("weight")
                == 50
            ),
            timeout=600,
            interval=1,
            message="canary at its first step (50%)",
        )
        # Hold the step so that the split can be measured (a user's `canary.pause`, never the operator's).
        pause_canary(kube, paused=True)
        router = stack.router_url(kube.kubeconfig, quickstart.DEPLOYMENT, NS)
        # Measured once the router (one replica) serves the step, not when status says it was written.
        eventually(
            lambda: routed_split(router) == {"stable": 50, "tuned": 50},
            timeout=180,
            interval=1,
            message="the router serves the 50% step",
        )
        # The router turns Ready once it has read a config with a routable variant; until then the
        # Service has no endpoint.
        eventually(
            lambda: answers(f"{router}/readyz"), timeout=120, message="router Ready behind its Service"
        )
        before = router_counts(router)
        with ThreadPoolExecutor(max_workers=4) as pool:
            replies = list(
                pool.map(lambda i: stack.chat(router, quickstart.QUESTION, user=f"user-{i}"), range(120))
            )
        assert all(stack.answer_of(reply) for reply in replies)
        after = router_counts(router)
        served = {v: after.get((v, "user"), 0) - before.get((v, "user"), 0) for v in ("stable", "tuned")}
        assert sum(served.values()) == 120, served
        # 50/50 by sticky hash of 120 distinct users: well inside 30..90 unless the split is wrong.
        assert 30 <= served["tuned"] <= 90, served

        pause_canary(kube, paused=False)
        eventually(
            lambda: (
                (real.condition("modeldeployment", quickstart.DEPLOYMENT, "Promoted") or {}).get("status")
                == "True"
            ),
            timeout=600,
            interval=2,
            message="canary promoted",
        )
        assert stack.answer_of(stack.chat(router, quickstart.QUESTION))


def test_a_canary_cut_off_from_the_router_is_rolled_back(real: RealStack) -> None:
    name = "faulty"
    deployment = quickstart.model_deployment(real.node.prometheus_url)
    deployment["metadata"]["name"] = name
    canary = deployment["spec"]["traffic"]["canary"]
    canary["steps"] = [25, 100]
    canary["interval"] = "20s"
    canary["failureLimit"] = 1
    with real.explained():
        if real.status("finetunejob", quickstart.JOB).get("phase") != "Succeeded":
            pytest.fail("needs the quickstart FineTuneJob of the previous test")
        real.apply([deployment])
        eventually(
            lambda: (real.status("modeldeployment", name).get("canary") or {}).get("weight") == 25,
            timeout=600,
            interval=1,
            message="canary at 25%",
        )
        canary_ips = real.pod_ips(f"kubetune.io/deployment={name},kubetune.io/variant=tuned")
        assert canary_ips
        with rejected(canary_ips):
            eventually(
                lambda: (
                    (real.condition("modeldeployment", name, "CanaryRolledBack") or {}).get("status")
                    == "True"
                ),
                timeout=300,
                interval=2,
                message="canary rolled back",
            )
        status = real.status("modeldeployment", name)
        assert (status.get("canary") or {}).get("weight", 0) == 0, status
