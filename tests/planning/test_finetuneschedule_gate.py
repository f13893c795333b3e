"""plan_schedule() with spec.evaluation: what each run is told to score, the verdict when it ends, the
pinned frozen set, what latestGoodRun and pruning make of a failed gate."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from tests.planning.test_finetuneschedule import at, iso, spec_of, status_of
from tests.planning.test_finetuneschedule import plan as a_plan
from tests.planning.test_finetuneschedule import schedule as a_schedule

from kubetune.api.conditions import ConditionType, Reason
from kubetune.api.finetunejob import FineTuneJobSpec
from kubetune.api.finetuneschedule import FineTuneScheduleSpec, RunPhase, RunTrigger
from kubetune.builders.finetuneschedule import run_manifest, run_name
from kubetune.planning.finetuneschedule import SchedulePlan
from kubetune.status.conditions import find_condition

FROM_FIRST_RUN = {"fromFirstRun": True, "noWorseThanChampion": {"evalLoss": {"maxIncrease": 0.05}}}
GATED_TEMPLATE = {
    "dataset": {"uri": "pvc://data/train.jsonl"},
    "output": {"uri": "pvc://models/weekly"},
    "evaluation": {"maxSamples": 50},
}


def schedule(
    status: dict[str, Any] | None = None, evaluation: dict[str, Any] | None = None, **spec: Any
) -> dict[str, Any]:
    """The shared schedule with a gate (FROM_FIRST_RUN unless told), pvc:// data, every run trained."""
    gate = evaluation if evaluation is not None else FROM_FIRST_RUN
    return a_schedule(status, GATED_TEMPLATE, skipUnchangedData=False, evaluation=gate, **spec)


def plan(
    obj: dict[str, Any],
    now: datetime,
    jobs: list[dict[str, Any]] | None = None,
    followers: list[dict[str, Any]] | None = None,
) -> SchedulePlan:
    spec_of(obj)  # every schedule here is valid: say why not, before the plan says it less plainly
    return a_plan(obj, now, jobs, followers=followers)


def created_spec(result: SchedulePlan) -> FineTuneJobSpec:
    (manifest,) = result.create
    return FineTuneJobSpec.model_validate(manifest["spec"])


def finished(job: dict[str, Any], loss: float, champion_loss: float | None = None) -> dict[str, Any]:
    """The run's FineTuneJob once the trainer reported its frozen-set scores (as the operator copies them)."""
    name = job["metadata"]["name"]
    spec = FineTuneJobSpec.model_validate(job["spec"])
    uri = (
        spec.evaluation.frozen_set.uri
        if spec.evaluation.frozen_set
        else f"pvc://models/weekly/{name}/frozen-eval.jsonl"
    )
    frozen: dict[str, Any] = {"uri": uri, "metrics": {"evalLoss": loss}}
    if spec.evaluation.champion is not None:
        frozen["champion"] = spec.evaluation.champion.name
        if champion_loss is not None:
            frozen["championMetrics"] = {"evalLoss": champion_loss}
    return {
        **job,
        "metadata": {**job["metadata"], "uid": f"uid-{name}"},
        "status": {
            "phase": "Succeeded",
            "completionTime": iso(at(100)),
            "artifacts": {"adapterUri": f"pvc://models/weekly/{name}/adapter"},
            "frozenSet": frozen,
        },
    }


def condition(result: SchedulePlan, kind: ConditionType) -> tuple[str, str, str]:
    found = find_condition(status_of(result).conditions, kind)
    assert found is not None
    return found.status, found.reason, found.message


def test_first_run_exports_its_test_split_and_meets_no_champion() -> None:
    result = plan(schedule(), at(1) + timedelta(seconds=5))
    evaluation = created_spec(result).evaluation
    assert evaluation.export_test_split is True
    assert evaluation.frozen_set is None
    assert evaluation.champion is None
    assert evaluation.max_samples == 50  # the template's evaluation is kept
    assert "no champion yet" in " ".join(e.message for e in result.events)


def test_a_passing_run_pins_the_frozen_set_and_the_next_run_meets_it_as_champion() -> None:
    first = plan(schedule(), at(1) + timedelta(seconds=5))
    run1 = run_name("weekly", at(1))
    job1 = finished(first.create[0], loss=1.0)
    second = plan(schedule(first.status), at(1.5), [job1])
    status = status_of(second)
    assert status.latest_good_run == run1
    assert status.frozen_set is not None
    assert (status.frozen_set.uri, status.frozen_set.run) == (
        f"pvc://models/weekly/{run1}/frozen-eval.jsonl",
        run1,
    )
    (record,) = status.runs
    assert record.gate is not None
    assert (record.gate.passed, record.gate.reason) == (True, Reason.NO_CHAMPION)
    assert [e.reason for e in second.events] == ["RunSucceeded", "GatePassed", "FrozenSetPinned"]

    third = plan(schedule(second.status), at(2) + timedelta(seconds=5), [job1])
    evaluation = created_spec(third).evaluation
    assert evaluation.export_test_split is None
    assert evaluation.frozen_set is not None
    assert evaluation.frozen_set.uri == status.frozen_set.uri
    assert evaluation.champion is not None
    assert (evaluation.champion.name, evaluation.champion.adapter_uri) == (
        run1,
        f"pvc://models/weekly/{run1}/adapter",
    )


def test_a_regression_fails_the_gate_and_is_not_the_latest_good_run() -> None:
    first = plan(schedule(), at(1) + timedelta(seconds=5))
    job1 = finished(first.create[0], loss=1.0)
    second = plan(
        schedule(plan(schedule(first.status), at(1.5), [job1]).status), at(2) + timedelta(seconds=5), [job1]
    )
    run1, run2 = run_name("weekly", at(1)), run_name("weekly", at(2))
    job2 = finished(second.create[0], loss=1.3, champion_loss=1.0)
    third = plan(schedule(second.status), at(2.5), [job1, job2])
    status = status_of(third)
    assert status.latest_good_run == run1
    record = next(r for r in status.runs if r.name == run2)
    assert record.phase is RunPhase.SUCCEEDED
    assert not record.is_good()
    assert record.gate is not None
    assert (record.gate.passed, record.gate.reason, record.gate.champion) == (False, Reason.GATE_FAILED, run1)
    assert "evalLoss 1.3 vs 1 (+0.3, maxIncrease 0.05): worse" in record.gate.message
    assert record.gate.champion_metrics is not None
    assert record.gate.champion_metrics.eval_loss == 1.0
    warnings = [e for e in third.events if e.type == "Warning"]
    assert [e.reason for e in warnings] == ["GateFailed"]
    assert run2 in warnings[0].message
    assert condition(third, ConditionType.LAST_RUN_SUCCEEDED)[:2] == ("False", Reason.GATE_FAILED)
    # One run's regression does not block the schedule: the next run is due on its own.
    ready = condition(third, ConditionType.READY)
    assert ready[:2] == ("True", Reason.SCHEDULED)
    assert "failed the gate" in ready[2]
    assert condition(third, ConditionType.STALLED)[0] == "False"
    # The next run still meets the last good run, not the regression.
    fourth = plan(schedule(third.status), at(3) + timedelta(seconds=5), [job1, job2])
    champion = created_spec(fourth).evaluation.champion
    assert champion is not None
    assert champion.name == run1


def test_the_serving_revision_is_the_champion_and_pruning_keeps_it_and_the_latest_good_run() -> None:
    frozen = {
        "frozenSet": {"uri": "pvc://eval/frozen.jsonl"},
        "noWorseThanChampion": {"evalLoss": {"maxIncrease": 0}},
    }
    names = [run_name("weekly", at(h)) for h in (1, 2, 3, 4)]
    runs = [
        {
            "name": n,
            "scheduledTime": iso(at(h)),
            "trigger": "Schedule",
            "phase": "Succeeded",
            "artifacts": {"adapterUri": f"pvc://models/weekly/{n}/adapter"},
        }
        for n, h in zip(names, (1, 2, 3, 4), strict=True)
    ]
    # w1 serves in production, w2 is the latest good run, w3 and w4 failed their gates.
    for failed in runs[2:]:
        failed["gate"] = {"passed": False, "reason": "GateFailed"}
    obj = schedule(
        {"lastScheduleTime": iso(at(4)), "latestGoodRun": names[1], "runs": runs},
        evaluation=frozen,
        successfulRunsHistoryLimit=1,
    )
    jobs = [
        {
            **run_manifest(
                obj,
                FineTuneScheduleSpec.model_validate(obj["spec"]),
                name=n,
                scheduled_time=at(h),
                trigger=RunTrigger.SCHEDULE,
                dataset_digest=None,
            ),
            "status": {"phase": "Succeeded"},
        }
        for n, h in zip(names, (1, 2, 3, 4), strict=True)
    ]
    for job in jobs:
        job["metadata"]["uid"] = f"uid-{job['metadata']['name']}"
    follower = {
        "apiVersion": "kubetune.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "chat", "namespace": "ns"},
        "spec": {"variants": [{"name": "main", "model": {"finetuneScheduleRef": {"name": "weekly"}}}]},
        "status": {"variants": [{"name": "main", "servingRevision": names[0]}]},
    }
    result = plan(obj, at(5) + timedelta(seconds=5), jobs, followers=[follower])
    status = status_of(result)
    kept = [r.name for r in status.runs if r.phase is not RunPhase.ACTIVE]
    assert kept == [names[0], names[1], names[3]]
    assert [d.name for d in result.delete] == [names[2]]
    evaluation = created_spec(result).evaluation
    assert evaluation.frozen_set is not None
    assert evaluation.frozen_set.uri == "pvc://eval/frozen.jsonl"
    assert evaluation.champion is not None
    assert evaluation.champion.name == names[0]
    assert status.frozen_set is not None
    assert (status.frozen_set.uri, status.frozen_set.run) == ("pvc://eval/frozen.jsonl", None)


def test_a_schedule_without_a_gate_leaves_the_template_evaluation_alone() -> None:
    obj = schedule()
    del obj["spec"]["evaluation"]
    result = plan(obj, at(1) + timedelta(seconds=5))
    evaluation = created_spec(result).evaluation
    assert (evaluation.frozen_set, evaluation.export_test_split, evaluation.champion) == (None, None, None)
    assert status_of(result).frozen_set is None
