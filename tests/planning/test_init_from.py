"""spec.initFrom against the earlier FineTuneJob: resolved, waited for, or refused naming the field."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from tests.support.fake_kube import FakeKube

from kubetune.api.conditions import Reason
from kubetune.api.finetunejob import FineTuneJobSpec
from kubetune.api.trainingconfig import TrainingConfig
from kubetune.builders.finetunejob import build_children
from kubetune.builders.storage import InitSource
from kubetune.planning.init_from import InitWait, resolve_init_from
from kubetune.preflight import Problem
from kubetune.reconcile.finetunejob import FineTuneJobReconciler
from kubetune.settings import OperatorSettings

NOW = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)
API = "kubetune.io/v1alpha1"
BASE = {"uri": "Qwen/Qwen2.5-0.5B", "revision": "abc123"}
LORA = {"r": 8, "alpha": 16, "targetModules": ["q_proj", "v_proj"]}


def spec(**overrides: Any) -> dict[str, Any]:
    return {
        "baseModel": BASE,
        "dataset": {"uri": "pvc://data/week2.jsonl"},
        "output": {"uri": "pvc://models/weekly/run-2"},
        "lora": LORA,
        "initFrom": {"finetuneJobRef": {"name": "run-1"}, "replayFraction": 0.25, "learningRateScale": 0.5},
        **overrides,
    }


def earlier(phase: str | None = "Succeeded", adapter: bool = True, **overrides: Any) -> dict[str, Any]:
    status: dict[str, Any] = {}
    if phase is not None:
        status["phase"] = phase
    if adapter:
        status["artifacts"] = {"adapterUri": "pvc://models/weekly/run-1/adapter"}
    body = {
        "baseModel": BASE,
        "dataset": {"uri": "pvc://data/week1.jsonl"},
        "output": {"uri": "pvc://models/weekly/run-1"},
        "lora": LORA,
        **overrides,
    }
    return {
        "apiVersion": API,
        "kind": "FineTuneJob",
        "metadata": {"name": "run-1", "namespace": "ns", "uid": "u-run-1"},
        "spec": body,
        "status": status,
    }


@dataclass
class Case:
    id: str
    earlier: dict[str, Any] | None
    spec: dict[str, Any] = field(default_factory=dict)
    wait: Reason | None = None
    problem: str = ""


CASES = [
    Case("not created yet: wait", None, wait=Reason.FINETUNE_JOB_NOT_FOUND),
    Case("still training: wait", earlier("Running"), wait=Reason.WAITING_FOR_FINETUNE_JOB),
    Case("no phase yet: wait", earlier(None, adapter=False), wait=Reason.WAITING_FOR_FINETUNE_JOB),
    Case("failed", earlier("Failed", adapter=False), problem="FineTuneJob run-1 failed"),
    Case("no adapter", earlier(adapter=False), problem="exported no adapter"),
    Case("full fine-tune", earlier(method="full", lora=None), problem="exported no adapter (method full)"),
    Case("another base model", earlier(baseModel={"uri": "Qwen/Qwen2.5-1.5B"}), problem="trained base model"),
    Case("another revision", earlier(baseModel={**BASE, "revision": "def"}), problem="@def, not"),
    Case("another rank", earlier(lora={**LORA, "r": 16}), problem="has lora.r 16, this job 8"),
    Case("another alpha", earlier(lora={**LORA, "alpha": 32}), problem="has lora.alpha 32"),
    Case("other modules", earlier(lora={**LORA, "targetModules": ["o_proj"]}), problem="lora.targetModules"),
    Case("itself", earlier(), spec={"initFrom": {"finetuneJobRef": {"name": "run-2"}}}, problem="itself"),
    Case("usable", earlier()),
    Case(
        "usable, modules in another order",
        earlier(lora={**LORA, "targetModules": ["v_proj", "q_proj"]}),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_resolve_init_from(case: Case) -> None:
    resolved = resolve_init_from(FineTuneJobSpec.model_validate(spec(**case.spec)), "run-2", case.earlier)

    if case.wait is not None:
        assert isinstance(resolved, InitWait)
        assert resolved.reason == case.wait
        assert resolved.message.startswith("spec.initFrom.finetuneJobRef: FineTuneJob run-1")
    elif case.problem:
        assert isinstance(resolved, Problem)
        assert resolved.field == "spec.initFrom.finetuneJobRef"
        assert case.problem in resolved.message
    else:
        assert resolved == InitSource(
            finetune_job="run-1",
            output_uri="pvc://models/weekly/run-1",
            adapter_uri="pvc://models/weekly/run-1/adapter",
            secret_ref=None,
            replay_fraction=0.25,
            learning_rate_scale=0.5,
        )


def test_without_init_from_there_is_nothing_to_resolve() -> None:
    body = spec()
    del body["initFrom"]
    assert resolve_init_from(FineTuneJobSpec.model_validate(body), "run-2", None) is None


def _ftj() -> dict[str, Any]:
    return {
        "apiVersion": API,
        "kind": "FineTuneJob",
        "metadata": {"name": "run-2", "namespace": "ns", "uid": "u-run-2", "generation": 1},
        "spec": spec(),
    }


def test_the_earlier_output_is_mounted_read_only_and_the_config_names_adapter_and_records() -> None:
    source = resolve_init_from(FineTuneJobSpec.model_validate(spec()), "run-2", earlier())
    assert isinstance(source, InitSource)

    children = build_children(_ftj(), restart=0, init=source)

    config = TrainingConfig.model_validate_json(children.config_map["data"]["config.json"])
    assert config.init_from is not None
    assert config.init_from.adapter_path == "/mnt/kubetune/init/adapter"
    assert config.init_from.replay_records_path == "/mnt/kubetune/init/train-records.jsonl"
    assert (config.init_from.finetune_job, config.init_from.learning_rate_scale) == ("run-1", 0.5)
    pod = children.training_job["spec"]["template"]["spec"]
    (trainer,) = pod["containers"]
    init_mount = next(m for m in trainer["volumeMounts"] if m["mountPath"] == "/mnt/kubetune/init")
    output_mount = next(m for m in trainer["volumeMounts"] if m["mountPath"] == "/mnt/kubetune/output")
    # One claim holds both runs' folders: one volume, mounted twice, the earlier folder read-only.
    assert init_mount == {
        "name": output_mount["name"],
        "mountPath": "/mnt/kubetune/init",
        "subPath": "weekly/run-1",
        "readOnly": True,
    }
    assert "readOnly" not in output_mount


def test_an_s3_output_is_staged_with_its_credentials() -> None:
    out = {"uri": "s3://bucket/weekly/run-1", "secretRef": {"name": "s3-creds", "key": "unused"}}
    source = resolve_init_from(FineTuneJobSpec.model_validate(spec()), "run-2", earlier(output=out))
    assert isinstance(source, InitSource)

    children = build_children(_ftj(), restart=0, init=source)

    config = TrainingConfig.model_validate_json(children.config_map["data"]["config.json"])
    assert config.init_from is not None
    assert config.init_from.adapter_path == "/mnt/kubetune/staging/init/adapter"
    pod = children.training_job["spec"]["template"]["spec"]
    (stage,) = pod["initContainers"]
    secrets = {e["valueFrom"]["secretKeyRef"]["name"] for e in stage["env"] if "valueFrom" in e}
    assert secrets == {"s3-creds"}


async def test_the_operator_waits_for_a_running_earlier_job_then_trains_from_it() -> None:
    running = earlier("Running", adapter=False)
    kube = FakeKube(running)
    reconciler = FineTuneJobReconciler(OperatorSettings())

    outcome = await reconciler.reconcile(kube, _ftj(), NOW, resync=False)  # type: ignore[arg-type]

    assert outcome.status["phase"] == "Pending"
    running_condition = next(c for c in outcome.status["conditions"] if c["type"] == "Running")
    assert running_condition["reason"] == "WaitingForFineTuneJob"
    assert running_condition["message"].startswith(
        "spec.initFrom.finetuneJobRef: FineTuneJob run-1 is Running"
    )
    assert outcome.requeue_after_s is not None
    assert kube.writes() == []

    kube.put(earlier())
    outcome = await reconciler.reconcile(kube, _ftj(), NOW, resync=False)  # type: ignore[arg-type]

    assert outcome.status["phase"] == "Pending"
    config_map = kube.find("v1", "ConfigMap", "ns", "run-2-config")
    assert config_map is not None
    assert json.loads(config_map["data"]["config.json"])["initFrom"]["finetuneJob"] == "run-1"


async def test_an_earlier_job_of_another_shape_fails_this_one_naming_the_field() -> None:
    kube = FakeKube(earlier(lora={**LORA, "r": 64}))
    reconciler = FineTuneJobReconciler(OperatorSettings())

    outcome = await reconciler.reconcile(kube, _ftj(), NOW, resync=False)  # type: ignore[arg-type]

    assert outcome.status["phase"] == "Failed"
    failed = next(c for c in outcome.status["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "InvalidSpec"
    assert "spec.initFrom.finetuneJobRef: FineTuneJob run-1 has lora.r 64, this job 8" in failed["message"]
    assert kube.writes() == []
