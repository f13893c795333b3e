"""An adapter that follows a FineTuneSchedule: its revisions as internal servedBy variants. Pure."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from kubetune.api.finetuneschedule import FineTuneScheduleStatus
from kubetune.api.modeldeployment import ModelDeploymentSpec, RevisionOutcome, VariantStatus
from kubetune.planning.canary import CanaryOutcome
from kubetune.planning.revisions import (
    FollowedOutput,
    adapter_move_pending,
    adapter_resolutions,
    fold_statuses,
    follow,
    followed_output,
    following_problem,
    revision_variant_name,
)
from kubetune.serving.resolution import Resolution, ResolutionState

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
R = {n: revision_variant_name("host", f"weekly-{n}") for n in range(1, 4)}
OUT = {"weekly": FollowedOutput("pvc://out/weekly", 16)}


def run(n: int, *, gate: bool = True, adapter: bool = True) -> dict[str, Any]:
    artifacts = {"adapterUri": f"pvc://out/weekly/weekly-{n}/adapter"} if adapter else {}
    return {
        "name": f"weekly-{n}",
        "scheduledTime": f"2026-05-0{n}T00:00:00Z",
        "trigger": "Schedule",
        "phase": "Succeeded",
        "metrics": {"evalLoss": 1.0 / n},
        "artifacts": artifacts,
        "gate": {"passed": gate},
    }


def schedule(*runs: dict[str, Any]) -> FineTuneScheduleStatus:
    return FineTuneScheduleStatus.model_validate({"runs": list(runs)})


def variant(**extra: Any) -> dict[str, Any]:
    return {
        "name": "host",
        "model": {"uri": "pvc://m/base"},
        "weight": 100,
        "adapters": [{"name": "support", "finetuneScheduleRef": {"name": "weekly"}}],
        **extra,
    }


def spec(*variants: dict[str, Any], traffic: dict[str, Any] | None = None) -> ModelDeploymentSpec:
    return ModelDeploymentSpec.model_validate(
        {"variants": list(variants) or [variant()], "traffic": traffic or {}}
    )


def previous(serving: str | None, *history: tuple[str, str]) -> list[VariantStatus]:
    revisions = [
        {"revision": r, "outcome": o, "adapter": "support", "servedModelName": f"support-{r}"}
        for r, o in history
    ]
    return [
        VariantStatus.model_validate({"name": "host", "servingRevision": serving, "revisions": revisions})
    ]


@pytest.mark.parametrize(
    ("variants", "traffic", "problem"),
    [
        ((variant(),), None, ""),
        (
            (variant(), {"name": "b", "model": {"uri": "pvc://m/b"}, "weight": 0}),
            {"canary": {"stableVariant": "b", "canaryVariant": "host"}},
            "",
        ),
        (
            (
                variant(
                    adapters=[
                        {"name": "a", "finetuneScheduleRef": {"name": "weekly"}},
                        {"name": "b", "finetuneScheduleRef": {"name": "daily"}},
                    ]
                ),
            ),
            None,
            "spec.variants[0].adapters[1].finetuneScheduleRef: a variant may have one adapter",
        ),
        (
            (variant(model={"finetuneScheduleRef": {"name": "other"}}),),
            None,
            "spec.variants[0].adapters[0].finetuneScheduleRef: a variant whose model follows",
        ),
        (
            (variant(),),
            {"provider": "gateway-api"},
            "spec.variants[0].adapters[0].finetuneScheduleRef: adapters that follow a FineTuneSchedule "
            "need traffic.provider router",
        ),
        (
            (variant(), {"name": "x", "servedBy": {"variant": "host", "adapter": "support"}, "weight": 0}),
            None,
            "spec.variants[1].servedBy: adapter support follows a FineTuneSchedule",
        ),
        (
            (variant(), {"name": "b", "model": {"uri": "pvc://m/b"}, "weight": 0}),
            {"canary": {"stableVariant": "host", "canaryVariant": "b"}},
            "spec.traffic.canary.stableVariant: host follows a FineTuneSchedule",
        ),
    ],
)
def test_what_still_cannot_work_is_refused_naming_the_field(
    variants: tuple[dict[str, Any], ...], traffic: dict[str, Any] | None, problem: str
) -> None:
    found = following_problem(spec(*variants, traffic=traffic))
    assert found.startswith(problem) if problem else found == ""


def test_the_first_good_run_is_served_at_once_by_an_internal_served_by_variant() -> None:
    following = follow(spec(), {"weekly": schedule(run(1))}, [], OUT)
    assert following is not None
    variants = {v.name: v for v in following.effective.spec.variants}
    assert set(variants) == {"host", R[1]}
    assert variants["host"].weight == 0, "the host keeps its pods; its share goes to the revision"
    served = variants[R[1]].served_by
    assert served is not None
    assert (served.variant, served.adapter) == ("host", "support-weekly-1")
    assert variants[R[1]].weight == 100
    assert following.effective.spec.traffic.canary is None
    assert following.tracks["host"].first


def test_a_newer_good_run_is_a_weight_only_canary_between_two_served_by_variants() -> None:
    following = follow(
        spec(), {"weekly": schedule(run(1), run(2))}, previous("weekly-1", ("weekly-1", "Serving")), OUT
    )
    assert following is not None
    effective = following.effective
    canary = effective.spec.traffic.canary
    assert canary is not None
    assert (canary.stable_variant, canary.canary_variant, canary.steps) == (R[1], R[2], [100])
    assert (effective.canary_of, effective.share) == ("host", 100)
    assert {v.name: v.weight for v in effective.spec.variants} == {"host": 0, R[1]: 100, R[2]: 0}
    assert adapter_move_pending(following)
    # One Deployment only: the revisions are served by the host's pods.
    assert [v.name for v in effective.spec.variants if v.served_by is None] == ["host"]


@pytest.mark.parametrize(
    ("runs", "history", "candidate"),
    [
        ((run(1), run(2)), (("weekly-1", "Serving"), ("weekly-2", "RolledBack")), None),
        ((run(1), run(2, gate=False)), (("weekly-1", "Serving"),), None),
        ((run(1), run(2), run(3)), (("weekly-1", "Serving"), ("weekly-2", "RolledBack")), "weekly-3"),
        ((run(1), run(2)), (("weekly-1", "Superseded"), ("weekly-2", "Serving")), None),
    ],
)
def test_the_candidate_is_the_latest_good_run_never_a_rolled_back_one(
    runs: tuple[dict[str, Any], ...], history: tuple[tuple[str, str], ...], candidate: str | None
) -> None:
    serving = next(r for r, o in history if o == "Serving")
    following = follow(spec(), {"weekly": schedule(*runs)}, previous(serving, *history), OUT)
    assert following is not None
    assert following.tracks["host"].candidate == candidate
    assert adapter_move_pending(following) is (candidate is not None)


def test_resolutions_and_what_the_host_pods_must_load() -> None:
    following = follow(
        spec(), {"weekly": schedule(run(1), run(2))}, previous("weekly-1", ("weekly-1", "Serving")), OUT
    )
    assert following is not None
    host = Resolution(ResolutionState.READY, "ModelResolved", "serving", model_uri="pvc://m/base")  # type: ignore[arg-type]
    resolved, desires = adapter_resolutions(following, {"host": host})
    assert [f.root_uri for f in resolved["host"].followed_adapters] == ["pvc://out/weekly"]
    assert resolved[R[2]].ready
    assert resolved[R[2]].model_uri == "pvc://out/weekly/weekly-2/adapter"
    assert [(d.variant, d.name, d.path) for d in desires] == [
        (R[1], "support-weekly-1", "/models/followed/support/weekly-1/adapter"),
        (R[2], "support-weekly-2", "/models/followed/support/weekly-2/adapter"),
    ]


def test_a_run_without_an_adapter_or_outside_the_output_fails_naming_the_adapter() -> None:
    following = follow(spec(), {"weekly": schedule(run(1, adapter=False))}, [], OUT)
    assert following is not None
    host = Resolution(ResolutionState.READY, "ModelResolved", "serving", model_uri="pvc://m/base")  # type: ignore[arg-type]
    resolved, desires = adapter_resolutions(following, {"host": host})
    assert resolved[R[1]].state is ResolutionState.FAILED
    assert "support-weekly-1" in resolved[R[1]].message
    assert desires == []
    s3 = {"weekly": FollowedOutput("s3://bucket/weekly", 16)}
    following = follow(spec(), {"weekly": schedule(run(1))}, [], s3)
    assert following is not None
    resolved, desires = adapter_resolutions(following, {"host": host})
    assert resolved[R[1]].state is ResolutionState.FAILED
    assert "pvc://" in resolved[R[1]].message


def test_the_history_is_kept_on_the_host_with_the_adapter_and_versioned_name() -> None:
    following = follow(
        spec(), {"weekly": schedule(run(1), run(2))}, previous("weekly-1", ("weekly-1", "Serving")), OUT
    )
    assert following is not None
    statuses = [VariantStatus(name="host"), VariantStatus(name=R[1], weight=100), VariantStatus(name=R[2])]
    folded, _ = fold_statuses(
        following, statuses, (CanaryOutcome.PROMOTED, "Promoted", "done"), settled=True, now=NOW
    )
    host = next(s for s in folded if s.name == "host")
    assert host.serving_revision == "weekly-2"
    last = host.revisions[-1]
    assert (last.revision, last.adapter, last.served_model_name, last.outcome) == (
        "weekly-2",
        "support",
        "support-weekly-2",
        RevisionOutcome.SERVING,
    )
    assert last.artifact_uri == "pvc://out/weekly/weekly-2/adapter"
    assert host.revisions[0].outcome is RevisionOutcome.SUPERSEDED


def test_the_schedule_output_is_read_from_its_job_template() -> None:
    body = {"spec": {"jobTemplate": {"spec": {"output": {"uri": "pvc://out/w"}, "lora": {"r": 32}}}}}
    assert followed_output(body) == FollowedOutput("pvc://out/w", 32)
    assert followed_output({"spec": {}}) == FollowedOutput()
