"""plan_schedule(): which run is due, concurrency, skips, triggers and history (the clock injected)."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from kubetune.api.conditions import ConditionType, Reason
from kubetune.api.finetuneschedule import FineTuneScheduleSpec, FineTuneScheduleStatus, RunPhase, RunTrigger
from kubetune.builders.finetuneschedule import (
    ANNOTATION_SCHEDULED_TIME,
    manual_run_name,
    probe_children,
    run_manifest,
    run_name,
    template_hash,
)
from kubetune.planning.admission import parse_spec
from kubetune.planning.finetuneschedule import ScheduleContext, SchedulePlan, plan_schedule
from kubetune.status.conditions import find_condition

CREATED = datetime(2026, 5, 1, 0, 0, 30, tzinfo=UTC)
HOURLY = "0 * * * *"


def iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def at(hours: float) -> datetime:
    """A time `hours` after midnight of the creation day."""
    return datetime(2026, 5, 1, tzinfo=UTC) + timedelta(hours=hours)


def schedule(
    status: dict[str, Any] | None = None, template: dict[str, Any] | None = None, **spec: Any
) -> dict[str, Any]:
    """A FineTuneSchedule as the API server shows it: hourly, `template` put over its job template's spec."""
    obj: dict[str, Any] = {
        "apiVersion": "kubetune.io/v1alpha1",
        "kind": "FineTuneSchedule",
        "metadata": {
            "name": "weekly",
            "namespace": "ns",
            "uid": "s-1",
            "generation": 1,
            "creationTimestamp": iso(CREATED),
        },
        "spec": {
            "schedule": HOURLY,
            "jobTemplate": {
                "spec": {
                    "baseModel": {"uri": "Qwen/Qwen2.5-0.5B"},
                    "dataset": {"uri": "configMap://data/train.jsonl"},
                    "output": {"uri": "s3://models/weekly"},
                    # a copy: tests edit the object they get
                    **copy.deepcopy(template or {}),
                }
            },
            **spec,
        },
    }
    # The first pass of a schedule has no observedGeneration; later passes do.
    obj["status"] = {"observedGeneration": 1, **(status or {})}
    return obj


def spec_of(obj: dict[str, Any]) -> FineTuneScheduleSpec:
    spec, problem = parse_spec(FineTuneScheduleSpec, obj)
    assert spec is not None, problem
    return spec


def job(
    obj: dict[str, Any], name: str, scheduled: datetime, phase: str | None = None, **status: Any
) -> dict[str, Any]:
    """A run's FineTuneJob as the API server would show it."""
    manifest = run_manifest(
        obj,
        spec_of(obj),
        name=name,
        scheduled_time=scheduled,
        trigger=RunTrigger.SCHEDULE,
        dataset_digest=None,
    )
    manifest["metadata"]["uid"] = f"uid-{name}"
    manifest["metadata"]["creationTimestamp"] = iso(scheduled)
    if phase is not None:
        manifest["status"] = {"phase": phase, **status}
    return manifest


def recorded(name: str, scheduled: datetime, phase: str = "Active", **extra: Any) -> dict[str, Any]:
    return {"name": name, "scheduledTime": iso(scheduled), "trigger": "Schedule", "phase": phase, **extra}


def plan(
    obj: dict[str, Any],
    now: datetime,
    jobs: list[dict[str, Any]] | None = None,
    digest: str | None = None,
    followers: list[dict[str, Any]] | None = None,
) -> SchedulePlan:
    spec, problem = parse_spec(FineTuneScheduleSpec, obj)
    ctx = ScheduleContext(
        obj, spec, problem, now, jobs=jobs or [], dataset_digest=digest, followers=followers or []
    )
    return plan_schedule(ctx)


def status_of(result: SchedulePlan) -> FineTuneScheduleStatus:
    return FineTuneScheduleStatus.model_validate(result.status)


def condition(result: SchedulePlan, type_: ConditionType) -> tuple[str, str]:
    found = find_condition(status_of(result).conditions, type_)
    assert found is not None
    return found.status, found.reason


@dataclass
class Case:
    id: str
    now: datetime
    spec: dict[str, Any] = field(default_factory=dict)
    status: dict[str, Any] = field(default_factory=dict)
    created: list[str] = field(default_factory=list)
    last_schedule: datetime | None = None
    missed: tuple[str, str] = ("False", Reason.ON_SCHEDULE)


NAME_01 = run_name("weekly", at(1))
TIMING = [
    Case("nothing due before the first cron time", at(0.5)),
    Case(
        "the first cron time creates its run",
        at(1) + timedelta(seconds=5),
        created=[NAME_01],
        last_schedule=at(1),
    ),
    Case(
        "operator down for 30 hours: one catch-up run, the latest",
        at(31.5),
        status={"lastScheduleTime": iso(at(1))},
        created=[run_name("weekly", at(31))],
        last_schedule=at(31),
    ),
    Case(
        "more than 100 missed start times: the latest runs and it is reported",
        at(150.2),
        status={"lastScheduleTime": iso(at(1))},
        created=[run_name("weekly", at(150))],
        last_schedule=at(150),
        missed=("True", Reason.TOO_MANY_MISSED_START_TIMES),
    ),
    Case(
        "a start time older than startingDeadlineSeconds is not run",
        at(5) + timedelta(minutes=10),
        spec={"startingDeadlineSeconds": 60},
        status={"lastScheduleTime": iso(at(4))},
        missed=("True", Reason.STARTING_DEADLINE_EXCEEDED),
    ),
    Case(
        "a start time within startingDeadlineSeconds runs",
        at(5) + timedelta(seconds=30),
        spec={"startingDeadlineSeconds": 60},
        status={"lastScheduleTime": iso(at(4))},
        created=[run_name("weekly", at(5))],
        last_schedule=at(5),
    ),
    Case(
        "a handled start time is not run twice",
        at(1) + timedelta(minutes=20),
        status={"lastScheduleTime": iso(at(1))},
    ),
    Case(
        "suspended: nothing starts and the start time stays unhandled",
        at(1) + timedelta(minutes=1),
        spec={"suspend": True},
    ),
    Case(
        "the time zone moves the firing: 03:00 in New York is 07:00 UTC in May",
        at(7) + timedelta(seconds=1),
        spec={"schedule": "0 3 * * *", "timeZone": "America/New_York"},
        created=[run_name("weekly", at(7))],
        last_schedule=at(7),
    ),
    Case(
        "@daily is CronJob's macro",
        at(24) + timedelta(seconds=1),
        spec={"schedule": "@daily"},
        created=[run_name("weekly", at(24))],
        last_schedule=at(24),
    ),
]


@pytest.mark.parametrize("case", TIMING, ids=[c.id for c in TIMING])
def test_which_run_is_due(case: Case) -> None:
    result = plan(schedule(case.status, **case.spec), case.now)
    assert [m["metadata"]["name"] for m in result.create] == case.created
    status = status_of(result)
    expected_last = case.last_schedule or (
        datetime.fromisoformat(case.status["lastScheduleTime"].replace("Z", "+00:00"))
        if "lastScheduleTime" in case.status
        else None
    )
    assert status.last_schedule_time == expected_last
    assert condition(result, ConditionType.MISSED_SCHEDULE) == case.missed
    assert status.active == case.created


def test_a_run_is_a_finetunejob_of_the_template_in_its_own_output_folder() -> None:
    obj = schedule()
    obj["spec"]["jobTemplate"]["metadata"] = {"labels": {"team": "nlp"}}
    result = plan(obj, at(1) + timedelta(seconds=5))
    (run,) = result.create
    assert run["kind"] == "FineTuneJob"
    assert run["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "kubetune.io/v1alpha1",
            "kind": "FineTuneSchedule",
            "name": "weekly",
            "uid": "s-1",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert run["metadata"]["labels"]["team"] == "nlp"
    assert run["metadata"]["annotations"][ANNOTATION_SCHEDULED_TIME] == "2026-05-01T01:00:00Z"
    assert run["spec"]["output"]["uri"] == f"s3://models/weekly/{NAME_01}"
    assert run["spec"]["baseModel"] == {"uri": "Qwen/Qwen2.5-0.5B", "trustRemoteCode": False}
    assert f"weekly-{int(at(1).timestamp()) // 60}" == NAME_01
    assert result.requeue_after_s == pytest.approx(3600 - 5 + 1)


def test_run_names_fit_in_a_label_and_stay_distinct() -> None:
    long = "a" * 200
    names = {run_name(long, at(h)) for h in range(5)} | {manual_run_name(long, 7)}
    assert len(names) == 6
    assert all(len(n) <= 63 for n in names)


@pytest.mark.parametrize(
    ("policy", "created", "deleted", "old_phase"),
    [
        ("Forbid", [], [], "Active"),
        ("Replace", [run_name("weekly", at(2))], [("weekly-old", "uid-weekly-old")], "Failed"),
    ],
)
def test_concurrency(policy: str, created: list[str], deleted: list[tuple[str, str]], old_phase: str) -> None:
    obj = schedule(
        {"lastScheduleTime": iso(at(1)), "runs": [recorded("weekly-old", at(1))]}, concurrencyPolicy=policy
    )
    result = plan(obj, at(2) + timedelta(seconds=5), [job(obj, "weekly-old", at(1), "Running")])
    assert [m["metadata"]["name"] for m in result.create] == created
    assert [(d.name, d.uid) for d in result.delete] == deleted
    runs = {r.name: r for r in status_of(result).runs}
    assert runs["weekly-old"].phase == old_phase
    if policy == "Forbid":
        # The start time stays unhandled: it runs when the active run ends (CronJob's Forbid).
        assert status_of(result).last_schedule_time == at(1)
        assert condition(result, ConditionType.RUNNING) == ("True", Reason.RUN_ACTIVE)
        later = schedule(result.status, concurrencyPolicy=policy)
        done = plan(later, at(2) + timedelta(minutes=30), [job(obj, "weekly-old", at(1), "Succeeded")])
        assert [m["metadata"]["name"] for m in done.create] == [run_name("weekly", at(2))]
    else:
        assert runs["weekly-old"].reason == Reason.REPLACED


SKIPS = [
    # (id, digest now, last successful digest, template changed, skipUnchangedData, skipped)
    ("same data and template: skipped", "sha256:a", "sha256:a", False, True, True),
    ("new data: trained", "sha256:b", "sha256:a", False, True, False),
    ("same data, changed template: trained", "sha256:a", "sha256:a", True, True, False),
    ("skipping turned off: trained", "sha256:a", "sha256:a", False, False, False),
    ("no earlier success to compare with: trained", "sha256:a", None, False, True, False),
]


@pytest.mark.parametrize(
    ("digest", "last", "template_changed", "enabled", "skipped"),
    [s[1:] for s in SKIPS],
    ids=[s[0] for s in SKIPS],
)
def test_skip_when_unchanged(
    digest: str | None, last: str | None, template_changed: bool, enabled: bool, skipped: bool
) -> None:
    obj = schedule(skipUnchangedData=enabled)
    last_hash = template_hash(spec_of(obj))
    if template_changed:
        obj["spec"]["jobTemplate"]["spec"]["method"] = "full"
    obj["status"].update(
        lastScheduleTime=iso(at(1)),
        lastSuccessfulDatasetDigest=last,
        lastSuccessfulTemplateHash=last_hash,
    )
    result = plan(obj, at(2) + timedelta(seconds=5), digest=digest)
    status = status_of(result)
    name = run_name("weekly", at(2))
    assert status.last_schedule_time == at(2)
    if skipped:
        assert result.create == []
        (run,) = status.runs
        assert (run.name, run.phase, run.reason) == (name, RunPhase.SKIPPED, Reason.DATASET_UNCHANGED)
        assert condition(result, ConditionType.LAST_RUN_SUCCEEDED) == ("True", Reason.DATASET_UNCHANGED)
    else:
        assert [m["metadata"]["name"] for m in result.create] == [name]


@pytest.mark.parametrize(
    ("status", "trigger", "active", "created", "last_trigger"),
    [
        ({}, 3, False, [manual_run_name("weekly", 3)], 3),
        ({"lastTrigger": 2}, 3, False, [manual_run_name("weekly", 3)], 3),
        ({"lastTrigger": 3}, 3, False, [], 3),
        # Forbid: the trigger waits for the active run and is not marked done.
        ({"lastTrigger": 2}, 3, True, [], 2),
    ],
    ids=["first trigger", "bumped", "unchanged", "waits for the active run"],
)
def test_manual_trigger(
    status: dict[str, Any], trigger: int, active: bool, created: list[str], last_trigger: int
) -> None:
    runs = [recorded("weekly-old", at(0.9))] if active else []
    obj = schedule({"lastScheduleTime": iso(at(1)), "runs": runs, **status}, trigger=trigger)
    jobs = [job(obj, "weekly-old", at(0.9), "Running")] if active else []
    result = plan(obj, at(1.5), jobs)
    assert [m["metadata"]["name"] for m in result.create] == created
    assert status_of(result).last_trigger == last_trigger
    for manifest in result.create:
        assert manifest["metadata"]["annotations"]["kubetune.io/trigger"] == "Manual"


@pytest.mark.parametrize("policy", ["Forbid", "Replace"])
def test_a_trigger_and_a_due_time_in_one_pass_start_one_run(policy: str) -> None:
    obj = schedule({"lastScheduleTime": iso(at(1)), "lastTrigger": 1}, trigger=2, concurrencyPolicy=policy)
    result = plan(obj, at(2) + timedelta(seconds=5))
    assert [m["metadata"]["name"] for m in result.create] == [manual_run_name("weekly", 2)]
    assert result.delete == []
    status = status_of(result)
    assert status.active == [manual_run_name("weekly", 2)]
    assert status.last_schedule_time == at(2)
    assert status.last_trigger == 2


def test_a_new_schedule_adopts_its_trigger_without_running() -> None:
    obj = schedule(trigger=5)
    del obj["status"]
    result = plan(obj, at(0.5))
    assert result.create == []
    assert status_of(result).last_trigger == 5


def test_finished_runs_are_recorded_and_pruned_to_the_limits() -> None:
    names = [f"weekly-{i}" for i in range(6)]
    runs = [recorded(n, at(i), "Succeeded") for i, n in enumerate(names[:3])]
    runs += [
        recorded(names[3], at(3), "Failed"),
        recorded(names[4], at(4), "Failed"),
        recorded(names[5], at(5)),
    ]
    obj = schedule(
        {"lastScheduleTime": iso(at(5)), "runs": runs},
        successfulRunsHistoryLimit=2,
        failedRunsHistoryLimit=1,
    )
    metrics = {"evalLoss": 0.5}
    lineage = {"datasetDigest": "sha256:trained"}
    jobs = [job(obj, n, at(i), "Succeeded" if i < 3 else "Failed") for i, n in enumerate(names[:5])]
    jobs.append(
        job(obj, names[5], at(5), "Succeeded", metrics=metrics, lineage=lineage, completionTime=iso(at(5.5)))
    )
    result = plan(obj, at(5.6), jobs)
    status = status_of(result)
    assert [(r.name, r.phase) for r in status.runs] == [
        (names[2], RunPhase.SUCCEEDED),
        (names[4], RunPhase.FAILED),
        (names[5], RunPhase.SUCCEEDED),
    ]
    assert sorted((d.name, d.uid) for d in result.delete) == [(n, f"uid-{n}") for n in [*names[:2], names[3]]]
    assert status.runs[-1].metrics is not None
    assert status.runs[-1].metrics.eval_loss == 0.5
    assert status.last_successful_time == at(5.5)
    assert status.last_successful_dataset_digest == "sha256:trained"
    assert [e.reason for e in result.events] == ["RunSucceeded"]
    assert condition(result, ConditionType.LAST_RUN_SUCCEEDED) == ("True", Reason.COMPLETED)


def test_an_active_run_deleted_by_hand_is_recorded_as_failed() -> None:
    obj = schedule({"lastScheduleTime": iso(at(1)), "runs": [recorded("weekly-old", at(1))]})
    result = plan(obj, at(1.5))
    (run,) = status_of(result).runs
    assert (run.phase, run.reason) == (RunPhase.FAILED, Reason.RUN_DELETED)
    assert condition(result, ConditionType.LAST_RUN_SUCCEEDED) == ("False", Reason.RUN_DELETED)


def test_a_run_missing_from_the_status_is_adopted() -> None:
    obj = schedule({"lastScheduleTime": iso(at(1))})
    result = plan(obj, at(1.5), [job(obj, NAME_01, at(1), "Running")])
    assert status_of(result).active == [NAME_01]
    assert status_of(result).runs[0].scheduled_time == at(1)


@pytest.mark.parametrize(
    ("spec", "reason", "field"),
    [
        ({"schedule": "0 0 30 2 *"}, Reason.INVALID_SCHEDULE, "spec.schedule"),
        ({"timeZone": "Mars/Olympus_Mons"}, Reason.INVALID_TIME_ZONE, "spec.timeZone"),
    ],
)
def test_what_the_schema_cannot_see_is_a_condition_naming_the_field(
    spec: dict[str, Any], reason: Reason, field: str
) -> None:
    result = plan(schedule(**spec), at(1) + timedelta(seconds=5))
    assert result.create == []
    found = find_condition(status_of(result).conditions, ConditionType.ACCEPTED)
    assert found is not None
    assert (found.status, found.reason) == ("False", reason)
    assert found.message.startswith(field + ":")
    assert [e.reason for e in result.events] == [reason.value]
    # The same problem on the next pass is not announced again.
    again = plan(schedule(result.status, **spec), at(1) + timedelta(seconds=10))
    assert again.events == []


def test_a_pass_over_its_own_status_changes_nothing() -> None:
    first = plan(schedule(), at(1) + timedelta(seconds=5))
    obj = schedule(first.status)
    second = plan(obj, at(1) + timedelta(seconds=30), [job(obj, NAME_01, at(1), "Running")])
    assert second.create == []
    assert second.delete == []
    assert second.status == first.status


def probe_job(obj: dict[str, Any], run: str, state: str | None) -> list[dict[str, Any]]:
    """The probe's Job (with its pod when finished) as the API server shows it."""
    job = next(m for m in probe_children(obj, spec_of(obj), run=run) if m["kind"] == "Job")
    job["metadata"]["uid"] = "uid-probe"
    objects = [job]
    if state is not None:
        job["status"] = {
            "conditions": [{"type": "Complete" if state != "failed" else "Failed", "status": "True"}]
        }
    if state not in (None, "failed"):
        result = {"outcome": "Succeeded", "lineage": {"datasetDigest": state}} if state != "no-digest" else {}
        objects.append(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": "probe-pod",
                    "labels": {"batch.kubernetes.io/job-name": job["metadata"]["name"]},
                },
                "status": {
                    "containerStatuses": [
                        {
                            "name": "validate",
                            "state": {"terminated": {"exitCode": 0, "message": json.dumps(result)}},
                        }
                    ]
                },
            }
        )
    return objects


PROBES = [
    # (id, probe state, created run, skipped, probe kept)
    ("no probe yet: created, the run waits", "absent", False, False, True),
    ("probe running: the run waits", None, False, False, True),
    ("probe saw the same data: skipped", "sha256:a", False, True, False),
    ("probe saw new data: trained", "sha256:b", True, False, False),
    ("probe failed: the run validates and reports", "failed", True, False, False),
    ("probe reported no digest (an older trainer): trained", "no-digest", True, False, False),
]


@pytest.mark.parametrize(
    ("state", "created", "skipped", "kept"), [p[1:] for p in PROBES], ids=[p[0] for p in PROBES]
)
def test_data_the_operator_cannot_read_is_probed(
    state: str | None, created: bool, skipped: bool, kept: bool
) -> None:
    obj = schedule()
    obj["spec"]["jobTemplate"]["spec"]["dataset"]["uri"] = "s3://bucket/data.jsonl"
    obj["status"].update(
        lastScheduleTime=iso(at(1)),
        lastSuccessfulDatasetDigest="sha256:a",
        lastSuccessfulTemplateHash=template_hash(spec_of(obj)),
    )
    name = run_name("weekly", at(2))
    objects = [] if state == "absent" else probe_job(obj, name, state)
    jobs = [o for o in objects if o["kind"] == "Job"]
    pods = [o for o in objects if o["kind"] == "Pod"]
    spec, problem = parse_spec(FineTuneScheduleSpec, obj)
    result = plan_schedule(
        ScheduleContext(
            obj, spec, problem, at(2) + timedelta(seconds=5), jobs=[], probe_jobs=jobs, probe_pods=pods
        )
    )
    status = status_of(result)
    assert [m["metadata"]["name"] for m in result.create] == ([name] if created else [])
    assert [r.phase for r in status.runs] == (
        [RunPhase.SKIPPED] if skipped else [RunPhase.ACTIVE] if created else []
    )
    if state == "absent":
        assert [m["kind"] for m in result.probe] == ["ConfigMap", "ServiceAccount", "Job"]
        assert result.probe[2]["metadata"]["ownerReferences"][0]["kind"] == "FineTuneSchedule"
    else:
        assert result.probe == []
    deleted = [(d.kind, d.name) for d in result.delete]
    if kept:
        assert deleted == []
        assert status.last_schedule_time == at(1)
        running = find_condition(status.conditions, ConditionType.RUNNING)
        assert running is not None
        assert "is hashing the dataset" in running.message
    else:
        assert deleted == [
            ("Job", f"{name}-probe-validate"),
            ("ConfigMap", f"{name}-probe-config"),
            ("ServiceAccount", f"{name}-probe-trainer"),
        ]
        assert status.last_schedule_time == at(2)
    if created and state.startswith("sha256"):
        assert result.create[0]["metadata"]["annotations"]["kubetune.io/dataset-digest"] == state
