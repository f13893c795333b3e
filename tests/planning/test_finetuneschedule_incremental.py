"""spec.incremental: each run starts from the latest good run, which history pruning keeps."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from tests.planning.test_finetuneschedule import at, iso, job, plan, recorded, schedule, spec_of, status_of

from kubetune.api.finetunejob import InitFrom, InitFromJobRef
from kubetune.builders.finetuneschedule import run_name
from kubetune.planning.finetuneschedule import run_init_from

INCREMENTAL = {"enabled": True, "replayFraction": 0.2, "learningRateScale": 0.5}


@dataclass
class Case:
    id: str
    incremental: dict[str, Any] | None
    latest_good: str | None
    expected: InitFrom | None


CASES = [
    Case("not incremental", None, "weekly-1", None),
    Case("disabled", {**INCREMENTAL, "enabled": False}, "weekly-1", None),
    Case("first run: no good run yet", INCREMENTAL, None, None),
    Case(
        "from the latest good run",
        INCREMENTAL,
        "weekly-1",
        InitFrom(
            finetune_job_ref=InitFromJobRef(name="weekly-1"), replay_fraction=0.2, learning_rate_scale=0.5
        ),
    ),
    Case(
        "defaults",
        {},
        "weekly-1",
        InitFrom(finetune_job_ref=InitFromJobRef(name="weekly-1")),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_run_init_from(case: Case) -> None:
    extra = {} if case.incremental is None else {"incremental": case.incremental}
    assert run_init_from(spec_of(schedule(**extra)), case.latest_good) == case.expected


def test_the_first_run_trains_from_the_base() -> None:
    result = plan(schedule(incremental=INCREMENTAL), at(1.01))
    (created,) = result.create
    assert "initFrom" not in created["spec"]


def test_a_run_starts_from_the_latest_good_run_recorded_when_it_is_created() -> None:
    run1 = run_name("weekly", at(1))
    obj = schedule(
        {
            "lastScheduleTime": iso(at(1)),
            "latestGoodRun": run1,
            "runs": [recorded(run1, at(1), "Succeeded")],
        },
        incremental=INCREMENTAL,
    )
    result = plan(obj, at(2.01), [job(obj, run1, at(1), "Succeeded")])

    (created,) = result.create
    assert created["metadata"]["name"] == run_name("weekly", at(2))
    assert created["spec"]["initFrom"] == {
        "finetuneJobRef": {"name": run1},
        "replayFraction": 0.2,
        "learningRateScale": 0.5,
    }
    assert f"starting from run {run1}" in result.events[-1].message


def test_a_run_that_finishes_in_the_pass_a_new_one_starts_is_the_new_ones_start() -> None:
    run1 = run_name("weekly", at(1))
    obj = schedule({"lastScheduleTime": iso(at(1)), "runs": [recorded(run1, at(1))]}, incremental=INCREMENTAL)
    finished = job(obj, run1, at(1), "Succeeded", completionTime=iso(at(1.9)))

    result = plan(obj, at(2.01), [finished])

    assert status_of(result).latest_good_run == run1
    (created,) = result.create
    assert created["spec"]["initFrom"]["finetuneJobRef"] == {"name": run1}


def test_pruning_keeps_the_latest_good_run_and_what_an_active_run_starts_from() -> None:
    names = [run_name("weekly", at(i)) for i in range(4)]
    failed_gate = {"gate": {"passed": False, "reason": "WorseThanChampion"}}
    obj = schedule(
        {
            "lastScheduleTime": iso(at(3)),
            "latestGoodRun": names[1],
            "runs": [
                recorded(names[0], at(0), "Succeeded"),
                recorded(names[1], at(1), "Succeeded"),
                recorded(names[2], at(2), "Succeeded", **failed_gate),
                recorded(names[3], at(3)),
            ],
        },
        incremental=INCREMENTAL,
        successfulRunsHistoryLimit=1,
    )
    jobs = [job(obj, n, at(i), "Succeeded") for i, n in enumerate(names[:3])]
    active = job(obj, names[3], at(3), "Running")
    active["spec"]["initFrom"] = {"finetuneJobRef": {"name": names[0]}}
    jobs.append(active)

    result = plan(obj, at(3.5), jobs)

    # The limit alone keeps only names[2]; names[1] is the latest good run, names[0] the active run's start.
    assert [r.name for r in status_of(result).runs] == names
    assert result.delete == []


def test_without_incremental_an_earlier_good_run_is_not_kept_as_a_start() -> None:
    # The latest good run stays for followers whatever the limits (the gate's pruning rule); an earlier
    # run is kept only when some run starts from it.
    names = [run_name("weekly", at(i)) for i in range(2)]
    obj = schedule(
        {
            "lastScheduleTime": iso(at(1)),
            "latestGoodRun": names[1],
            "runs": [recorded(names[0], at(0), "Succeeded"), recorded(names[1], at(1), "Succeeded")],
        },
        successfulRunsHistoryLimit=1,
    )
    jobs = [job(obj, n, at(i), "Succeeded") for i, n in enumerate(names)]

    result = plan(obj, at(1.5), jobs)

    assert [r.name for r in status_of(result).runs] == [names[1]]
    assert [d.name for d in result.delete] == [names[0]]
