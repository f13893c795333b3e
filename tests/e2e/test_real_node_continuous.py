"""Continuous fine-tuning for real: a FineTuneSchedule on the real node, followed by a ModelDeployment.

A schedule that ticks every minute trains run 1 on the data in a ConfigMap, skips the ticks that find
the same data, and trains run 2 (continuing run 1's adapter, with replay) once a pipeline rewrites the
ConfigMap; every run is scored on run 1's pinned test split against the model in production. The
ModelDeployment's variant follows the schedule: run 1 is canaried in from the base model on its own,
run 2 is canaried in from run 1 on its own, and run 2's pods are cut off from the router mid-canary
(the injected regression): it is rolled back and run 1 keeps serving. Nobody edits the
ModelDeployment; the revision history is its status.
"""

from __future__ import annotations

import copy
import json
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
from tests.support.polling import eventually
from tests.support.realnode import answering_json, answers
from tests.support.realstack import NS, RealStack, rejected, router_counts

from kubetune.devcluster import quickstart, stack
from kubetune.planning.revisions import revision_variant_name
from kubetune.serving.lora_runtime import versioned_adapter_name

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(1800)]

SCHEDULE = "facts"
DATA = "facts-data"
DEPLOYMENT = "facts"
VARIANT = "bot"

NEW_FACTS = [
    ("Ostrava", "Kelm"),
    ("Brevia", "Tamsin"),
    ("Corland", "Ashby"),
    ("Dravonia", "Pell"),
    ("Estmark", "Rowan"),
]


def dataset(facts: list[tuple[str, str]]) -> str:
    return "".join(
        json.dumps(
            {"instruction": p.format(country), "input": "", "output": f"The capital of {country} is {city}."}
        )
        + "\n"
        for country, city in facts
        for p in quickstart.PHRASINGS
    )


def data(facts: list[tuple[str, str]]) -> dict[str, Any]:
    """The schedule's data, as a pipeline writes it each week."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": DATA, "namespace": NS},
        "data": {"train.jsonl": dataset(facts)},
    }


def schedule() -> dict[str, Any]:
    template = copy.deepcopy(quickstart.finetune_job()["spec"])
    template["dataset"] = {"uri": f"configMap://{DATA}/train.jsonl", "format": "alpaca", "testSplit": 0.2}
    # Every step reported: the loss at step 1 of each run is the figure that shows run 2 continuing run 1.
    template["hyperparameters"]["loggingSteps"] = 1
    template["output"] = {"uri": f"pvc://{quickstart.CLAIM}/{SCHEDULE}", "mergeAdapter": True}
    return {
        "apiVersion": "kubetune.io/v1alpha1",
        "kind": "FineTuneSchedule",
        "metadata": {"name": SCHEDULE, "namespace": NS},
        "spec": {
            "schedule": "* * * * *",
            "concurrencyPolicy": "Forbid",
            "startingDeadlineSeconds": 120,
            "incremental": {"enabled": True, "replayFraction": 0.5, "learningRateScale": 0.5},
            # A run whose loss on run 1's test split is worse than production's by more than 1 nat fails
            # its gate (a broken run, or the base model's ~7.6, would).
            "evaluation": {"fromFirstRun": True, "noWorseThanChampion": {"evalLoss": {"maxIncrease": 1.0}}},
            "jobTemplate": {"spec": template},
        },
    }


def deployment(prometheus_url: str) -> dict[str, Any]:
    obj = quickstart.model_deployment(prometheus_url)
    obj["metadata"]["name"] = DEPLOYMENT
    followed = obj["spec"]["variants"][1]
    followed["name"] = VARIANT
    followed["model"] = {"finetuneScheduleRef": {"name": SCHEDULE}}
    canary = obj["spec"]["traffic"]["canary"]
    canary.update({"canaryVariant": VARIANT, "steps": [50, 100], "interval": "20s", "failureLimit": 1})
    return obj


def runs(real: RealStack) -> list[dict[str, Any]]:
    return list(real.status("finetuneschedule", SCHEDULE).get("runs") or [])


def trained_runs(real: RealStack) -> list[dict[str, Any]]:
    return [r for r in runs(real) if r["phase"] != "Skipped"]


def followed(real: RealStack) -> dict[str, Any]:
    variants = real.status("modeldeployment", DEPLOYMENT).get("variants") or []
    return next((v for v in variants if v["name"] == VARIANT), {})


def history(real: RealStack) -> list[tuple[str, str]]:
    return [(r["revision"], r["outcome"]) for r in followed(real).get("revisions") or []]


def trained(real: RealStack, job: str, timeout: float) -> tuple[dict[str, Any], list[tuple[int, float]]]:
    """The run's status once it finished, and (step, loss) of every logged step from the trainer's own
    `metrics.json` (`training.lossHistory`, in the run's output folder on the node's volume).

    Not `status.progress`: it shows the latest report the operator read, and a run of a few seconds (the
    tiny model on an idle machine trains 60 steps in 9 s) may show only the last one."""
    eventually(
        lambda: real.status("finetunejob", job).get("phase") in ("Succeeded", "Failed"),
        timeout=timeout,
        interval=1,
        message=f"{job} finished",
    )
    status = real.status("finetunejob", job)
    assert status["phase"] == "Succeeded", status
    losses = real.loss_history(status["artifacts"]["adapterUri"])
    # What users saw: the trainer's last report reached status.
    assert status["progress"]["step"] == losses[-1][0], (status["progress"], losses[-1])
    return status, losses


def served_by(router: str, variant: str, requests: int) -> float:
    """How many of `requests` user requests `variant` served (an AssertionError, for `eventually`, when
    the router fails one)."""
    try:
        before = router_counts(router)
        for i in range(requests):
            assert stack.answer_of(stack.chat(router, quickstart.QUESTION, user=f"user-{i}"))
        after = router_counts(router)
    except (RuntimeError, ValueError, KeyError, subprocess.CalledProcessError) as exc:
        raise AssertionError(f"the router failed a request: {exc}") from exc
    return after.get((variant, "user"), 0) - before.get((variant, "user"), 0)


FIGURES: dict[str, Any] = {}


@pytest.fixture(scope="module", autouse=True)
def cleanup(real: RealStack) -> Iterator[None]:
    yield
    print("FIGURES " + json.dumps(FIGURES, indent=1, default=str))
    # The next module's vLLM pods need the CPU and memory these hold.
    for kind, name in (
        ("modeldeployment", DEPLOYMENT),
        ("modeldeployment", LORA_DEPLOYMENT),
        ("finetuneschedule", SCHEDULE),
    ):
        real.kube.kubectl("delete", kind, name, "-n", NS, "--ignore-not-found", "--timeout=120s", check=False)


def test_run_1_is_trained_on_schedule_and_canaried_in_from_the_base_model(real: RealStack) -> None:
    with real.explained():
        stack.seed_base_model(real.kube.kubeconfig, real.images)
        started = time.monotonic()
        # All at once, as GitOps applies them: the deployment waits for the schedule's first good run.
        real.apply([data(quickstart.FACTS), schedule(), deployment(real.node.prometheus_url)])
        eventually(
            lambda: any(
                c["type"] == "ModelReady" and c["reason"] == "WaitingForGoodRun"
                for c in followed(real).get("conditions") or []
            ),
            timeout=120,
            message="the followed variant waits for a good run",
        )
        eventually(lambda: bool(trained_runs(real)), timeout=180, message="run 1 started by the cron")
        run1 = trained_runs(real)[0]["name"]
        assert trained_runs(real)[0]["trigger"] == "Schedule"
        job, losses = trained(real, run1, timeout=1200)
        assert losses[-1][1] < losses[0][1] * 0.5, losses
        FIGURES["run1"] = {
            "name": run1,
            "first": losses[0],
            "last": losses[-1],
            "metrics": job.get("metrics"),
        }
        eventually(
            lambda: real.status("finetuneschedule", SCHEDULE).get("latestGoodRun") == run1,
            timeout=120,
            message="run 1 is the latest good run",
        )
        pinned = real.status("finetuneschedule", SCHEDULE).get("frozenSet") or {}
        assert pinned.get("run") == run1, pinned
        assert pinned["uri"].endswith(f"{run1}/frozen-eval.jsonl"), pinned

        eventually(
            lambda: history(real) == [(run1, "Serving")],
            timeout=1200,
            interval=2,
            message="run 1 canaried in from the base model and promoted",
        )
        FIGURES["canary1_s"] = round(time.monotonic() - started)
        entry = followed(real)
        assert entry["servingRevision"] == run1
        router = stack.router_url(real.kube.kubeconfig, DEPLOYMENT, NS)
        assert served_by(router, revision_variant_name(VARIANT, run1), 10) == 10

        # Ticks that find the same data train nothing.
        eventually(
            lambda: any(r["phase"] == "Skipped" for r in runs(real)),
            timeout=150,
            message="a tick with unchanged data skipped",
        )
        skipped = next(r for r in runs(real) if r["phase"] == "Skipped")
        assert skipped["reason"], skipped
        assert len(trained_runs(real)) == 1, runs(real)


def test_run_2_on_new_data_continues_run_1_and_its_faulty_canary_is_rolled_back(real: RealStack) -> None:
    with real.explained():
        if len(trained_runs(real)) != 1 or not real.status("finetuneschedule", SCHEDULE).get("latestGoodRun"):
            pytest.fail("needs run 1 of the previous test")
        run1 = trained_runs(real)[0]["name"]
        spec = real.kube.get("modeldeployment", DEPLOYMENT, NS)["spec"]
        real.apply([data(NEW_FACTS)])  # the pipeline's new week of data
        eventually(lambda: len(trained_runs(real)) == 2, timeout=180, message="run 2 started by the cron")
        run2 = trained_runs(real)[1]["name"]
        job, losses = trained(real, run2, timeout=1200)
        init_from = job["lineage"]["initFrom"]
        assert init_from["finetuneJob"] == run1
        assert init_from["replayedRecords"] > 0
        # Run 2 starts from run 1's adapter, not from the base model: its first loss, on facts it has
        # never seen, is far below run 1's first.
        run1_first = FIGURES["run1"]["first"][1] if "run1" in FIGURES else None
        FIGURES["run2"] = {
            "name": run2,
            "first": losses[0],
            "last": losses[-1],
            "metrics": job.get("metrics"),
            "initFrom": init_from,
        }
        if run1_first is not None:
            assert losses[0][1] < run1_first * 0.6, (losses[:3], run1_first)

        eventually(
            lambda: (trained_runs(real)[1].get("gate") or {}).get("passed") is not None,
            timeout=120,
            message="run 2 gated",
        )
        gate = trained_runs(real)[1]["gate"]
        FIGURES["gate"] = gate
        assert gate["passed"], gate
        assert gate["champion"] == run1, gate
        assert gate["championMetrics"]["evalLoss"] > 0, gate
        assert gate["challengerMetrics"]["evalLoss"] > 0, gate

        revision2 = revision_variant_name(VARIANT, run2)
        eventually(
            lambda: (
                history(real)[-1:] == [(run2, "Canary")]
                and (real.status("modeldeployment", DEPLOYMENT).get("canary") or {}).get("weight") == 50
            ),
            timeout=900,
            interval=1,
            message="run 2 canaried in from run 1, at its first step",
        )
        with rejected(real.pod_ips(f"kubetune.io/deployment={DEPLOYMENT},kubetune.io/variant={revision2}")):
            eventually(
                lambda: history(real)[-1:] == [(run2, "RolledBack")],
                timeout=300,
                interval=2,
                message="run 2 rolled back",
            )
        rolled_back_at = time.monotonic()
        entry = followed(real)
        FIGURES["revisions"] = entry.get("revisions")
        assert entry["servingRevision"] == run1
        assert history(real) == [(run1, "Serving"), (run2, "RolledBack")]
        rolled_back = entry["revisions"][-1]
        assert "errorRate" in rolled_back["message"], rolled_back
        router = stack.router_url(real.kube.kubeconfig, DEPLOYMENT, NS)
        eventually(
            lambda: served_by(router, revision_variant_name(VARIANT, run1), 10) == 10,
            timeout=120,
            message="run 1 serves all traffic again",
        )
        # 44 to 80 s when routers waited for the kubelet's volume sync; the operator pushes it now.
        FIGURES["rollback_reached_routers_s"] = round(time.monotonic() - rolled_back_at, 1)
        eventually(lambda: router_serves_pushed_config(real), timeout=30, message="the config pushed")
        assert real.kube.get("modeldeployment", DEPLOYMENT, NS)["spec"] == spec


def router_serves_pushed_config(real: RealStack) -> bool:
    """The router pod installed the ConfigMap's current config from a push (its log says so), whatever
    its volume holds."""
    configmap = real.kube.get("configmap", f"{DEPLOYMENT}-router", NS)
    revision = json.loads(configmap["data"]["router.json"])["revision"]
    selector = f"kubetune.io/deployment={DEPLOYMENT},kubetune.io/role=router"
    logs = real.kube.kubectl("logs", "-n", NS, "-l", selector, "--tail=-1").stdout
    pushed = [line for line in logs.splitlines() if "router config pushed" in line]
    assert any(f"revision={revision} " in line for line in pushed), (revision, pushed[-3:])
    return True


LORA_DEPLOYMENT = "facts-lora"
HOST = "base"
LATER_FACTS = [("Fenwick", "Harlow"), ("Galdor", "Irving"), ("Hestia", "Juno"), ("Ilvaria", "Kestrel")]


def lora_deployment() -> dict[str, Any]:
    """The base model's pods serve the schedule's adapter: each new run is loaded into them at runtime."""
    obj = quickstart.model_deployment("http://unused")
    host = obj["spec"]["variants"][0]
    host.update(
        {
            "name": HOST,
            "weight": 100,
            "adapters": [{"name": VARIANT, "finetuneScheduleRef": {"name": SCHEDULE}}],
        }
    )
    obj["metadata"]["name"] = LORA_DEPLOYMENT
    obj["spec"]["variants"] = [host]
    obj["spec"]["traffic"] = {"provider": "router", "stickyHeader": "x-user-id", "routerReplicas": 1}
    return obj


def host_status(real: RealStack) -> dict[str, Any]:
    variants = real.status("modeldeployment", LORA_DEPLOYMENT).get("variants") or []
    return next((v for v in variants if v["name"] == HOST), {})


def adapter_history(real: RealStack) -> list[tuple[str, str]]:
    return [(r["revision"], r["outcome"]) for r in host_status(real).get("revisions") or []]


def host_pod(real: RealStack) -> dict[str, Any]:
    selector = f"kubetune.io/deployment={LORA_DEPLOYMENT},kubetune.io/variant={HOST}"
    pods = json.loads(real.kube.kubectl("get", "pods", "-n", NS, "-l", selector, "-o", "json").stdout)[
        "items"
    ]
    (pod,) = pods
    return dict(pod)


def loaded_models(pod: dict[str, Any]) -> set[str]:
    """The models a vLLM pod lists (none while it does not answer yet)."""
    ip = (pod.get("status") or {}).get("podIP")
    listing = answering_json(f"http://{ip}:8000/v1/models") if ip else None
    return {str(m["id"]) for m in listing["data"]} if listing else set()  # type: ignore[union-attr]


def test_run_3_is_loaded_into_the_running_pods_of_a_followed_adapter_without_a_restart(
    real: RealStack,
) -> None:
    with real.explained():
        good = [r for r in trained_runs(real) if r["phase"] == "Succeeded"]
        if len(good) != 2:
            pytest.fail("needs runs 1 and 2 of the previous tests")
        run2 = real.status("finetuneschedule", SCHEDULE)["latestGoodRun"]
        # One follower at a time: the model-path deployment's pods go, the adapter's host comes.
        real.kube.kubectl("delete", "modeldeployment", DEPLOYMENT, "-n", NS, "--timeout=180s")
        real.apply([lora_deployment()])
        eventually(
            lambda: adapter_history(real) == [(run2, "Serving")],
            timeout=900,
            interval=2,
            message="the latest good run's adapter served by the base model's pods",
        )
        # Recorded at once (nothing to canary from); served once the pod is up and has it loaded.
        eventually(
            lambda: versioned_adapter_name(VARIANT, run2) in loaded_models(host_pod(real)),
            timeout=900,
            interval=2,
            message="run 2's adapter loaded into the base model's pod",
        )
        pod = host_pod(real)
        router = stack.router_url(real.kube.kubeconfig, LORA_DEPLOYMENT, NS)
        eventually(
            lambda: (
                answers(f"{router}/readyz") and served_by(router, revision_variant_name(HOST, run2), 5) == 5
            ),
            timeout=300,
            interval=2,
            message="run 2's adapter serves every request",
        )

        real.apply([data(LATER_FACTS)])
        eventually(lambda: len(trained_runs(real)) == 3, timeout=180, message="run 3 started by the cron")
        run3 = trained_runs(real)[2]["name"]
        eventually(
            lambda: adapter_history(real) == [(run2, "Superseded"), (run3, "Serving")],
            timeout=900,
            interval=2,
            message="run 3 loaded into the running pod and given the traffic",
        )
        FIGURES["adapterRevisions"] = host_status(real).get("revisions")
        gate = trained_runs(real)[2]["gate"]
        assert gate["champion"] == run2, gate
        after = host_pod(real)
        # The same pod, never restarted: the adapter was loaded at runtime under a new name.
        assert after["metadata"]["uid"] == pod["metadata"]["uid"]
        assert after["status"]["containerStatuses"][0]["restartCount"] == 0
        eventually(
            lambda: (
                versioned_adapter_name(VARIANT, run3) in (names := loaded_models(after))
                and versioned_adapter_name(VARIANT, run2) not in names
            ),
            timeout=120,
            message="run 3 loaded, run 2 unloaded",
        )
        eventually(
            lambda: served_by(router, revision_variant_name(HOST, run3), 5) == 5,
            timeout=120,
            message="run 3 serves all the requests",
        )
