"""Which runs of a followed FineTuneSchedule serve a variant, and what the history records. Pure."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from kubetune.api.finetuneschedule import FineTuneScheduleStatus
from kubetune.api.modeldeployment import ModelDeploymentSpec, RevisionOutcome, VariantStatus
from kubetune.planning.canary import CanaryOutcome
from kubetune.planning.revisions import (
    HISTORY_LIMIT,
    fold_statuses,
    follow,
    following_problem,
    record_revisions,
    revision_variant_name,
    spread_weights,
)

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def run(name: str, *, phase: str = "Succeeded", gate: bool | None = None) -> dict[str, Any]:
    record: dict[str, Any] = {
        "name": name,
        "scheduledTime": "2026-05-01T00:00:00Z",
        "trigger": "Schedule",
        "phase": phase,
        "metrics": {"evalLoss": 1.0},
        "artifacts": {"mergedModelUri": f"pvc://out/{name}/merged"},
    }
    if gate is not None:
        record["gate"] = {"passed": gate, "challengerMetrics": {"evalLoss": 0.5}}
    return record


def schedule(*runs: dict[str, Any], latest: str | None = None) -> FineTuneScheduleStatus:
    status: dict[str, Any] = {"runs": list(runs)}
    if latest is not None:
        status["latestGoodRun"] = latest
    return FineTuneScheduleStatus.model_validate(status)


def spec(*, canary: dict[str, Any] | None = None, other: bool = False) -> ModelDeploymentSpec:
    variants: list[dict[str, Any]] = [
        {
            "name": "tuned",
            "model": {"finetuneScheduleRef": {"name": "weekly"}},
            "weight": 80 if other else 100,
        }
    ]
    if other or canary is not None:
        variants.insert(0, {"name": "base", "model": {"uri": "pvc://m/b"}, "weight": 20 if other else 0})
    traffic: dict[str, Any] = {"canary": canary} if canary is not None else {}
    return ModelDeploymentSpec.model_validate({"variants": variants, "traffic": traffic})


def previous(serving: str | None, *revisions: tuple[str, str]) -> list[VariantStatus]:
    return [
        VariantStatus.model_validate(
            {
                "name": "tuned",
                "servingRevision": serving,
                "revisions": [{"revision": r, "outcome": o} for r, o in revisions],
            }
        )
    ]


def names(s: ModelDeploymentSpec) -> list[str]:
    return [v.name for v in s.variants]


R1, R2, R3 = (revision_variant_name("tuned", r) for r in ("weekly-1", "weekly-2", "weekly-3"))


@pytest.mark.parametrize(
    ("runs", "prev", "variants", "canary"),
    [
        # No good run yet: the variant stays as written and resolves to WaitingForGoodRun.
        ((run("weekly-1", phase="Active"),), previous(None), ["tuned"], None),
        # A failed gate is not a good run.
        ((run("weekly-1", gate=False),), previous(None), ["tuned"], None),
        # The first good run serves at once: nothing to canary from.
        ((run("weekly-1"),), previous(None), [R1], None),
        # A newer good run: canary from the serving revision.
        (
            (run("weekly-1"), run("weekly-2", gate=True)),
            previous("weekly-1", ("weekly-1", "Serving")),
            [R1, R2],
            (R1, R2),
        ),
        # A newer run that failed its gate is ignored.
        (
            (run("weekly-1"), run("weekly-2", gate=False)),
            previous("weekly-1", ("weekly-1", "Serving")),
            [R1],
            None,
        ),
        # A rolled-back run is never retried...
        (
            (run("weekly-1"), run("weekly-2")),
            previous("weekly-1", ("weekly-1", "Serving"), ("weekly-2", "RolledBack")),
            [R1],
            None,
        ),
        # ...but a later good run is tried.
        (
            (run("weekly-1"), run("weekly-2"), run("weekly-3")),
            previous("weekly-1", ("weekly-1", "Serving"), ("weekly-2", "RolledBack")),
            [R1, R3],
            (R1, R3),
        ),
        # Mid-canary (a restart): the run in flight resumes even though a newer one appeared.
        (
            (run("weekly-1"), run("weekly-2"), run("weekly-3")),
            previous("weekly-1", ("weekly-1", "Serving"), ("weekly-2", "Canary")),
            [R1, R2],
            (R1, R2),
        ),
        # An older good run than the serving one is never canaried (latestGoodRun points back).
        ((run("weekly-1"), run("weekly-2")), previous("weekly-2", ("weekly-2", "Serving")), [R2], None),
    ],
)
def test_tracks_and_effective_spec(
    runs: tuple[dict[str, Any], ...],
    prev: list[VariantStatus],
    variants: list[str],
    canary: tuple[str, str] | None,
) -> None:
    following = follow(spec(), {"weekly": schedule(*runs)}, prev)
    assert following is not None
    effective = following.effective.spec
    assert names(effective) == variants
    got = effective.traffic.canary
    assert ((got.stable_variant, got.canary_variant) if got else None) == canary
    if canary is not None:
        assert got is not None
        assert got.steps == [100], "no traffic.canary: straight after smoke + ready"
        revision = next(v for v in effective.variants if v.name == canary[1])
        assert revision.model is not None
        assert revision.model.finetune_job_ref is not None


def test_latest_good_run_of_the_schedule_wins_over_position() -> None:
    runs = (run("weekly-1"), run("weekly-2"), run("weekly-3"))
    following = follow(
        spec(), {"weekly": schedule(*runs, latest="weekly-2")}, previous("weekly-1", ("weekly-1", "Serving"))
    )
    assert following is not None
    assert names(following.effective.spec) == [R1, R2]


def test_missing_schedule_waits_with_its_own_reason() -> None:
    following = follow(spec(), {"weekly": None}, [])
    assert following is not None
    assert following.tracks["tuned"].waiting is not None
    assert following.tracks["tuned"].waiting[0] == "FineTuneScheduleNotFound"


def test_user_canary_settings_drive_revision_canaries_and_the_first_run_is_canaried_from_stable() -> None:
    user = {"stableVariant": "base", "canaryVariant": "tuned", "steps": [25, 100], "interval": "1m"}
    following = follow(spec(canary=user), {"weekly": schedule(run("weekly-1"))}, previous(None))
    assert following is not None
    got = following.effective.spec.traffic.canary
    assert got is not None
    assert (got.stable_variant, got.canary_variant, got.steps) == ("base", R1, [25, 100])
    assert following.effective.share is None
    # Promoted and settled: the user's canary resumes promoted onto the serving revision.
    settled = follow(
        spec(canary=user),
        {"weekly": schedule(run("weekly-1"))},
        previous("weekly-1", ("weekly-1", "Serving")),
    )
    assert settled is not None
    assert settled.effective.settled_canary
    canary = settled.effective.spec.traffic.canary
    assert canary is not None
    assert (canary.stable_variant, canary.canary_variant) == ("base", R1)


@pytest.mark.parametrize(
    ("canary", "problem"),
    [
        ({"stableVariant": "tuned", "canaryVariant": "base"}, "stableVariant"),
        ({"stableVariant": "base", "canaryVariant": "tuned"}, ""),
    ],
)
def test_a_followed_variant_may_only_be_the_canary_variant(canary: dict[str, Any], problem: str) -> None:
    got = following_problem(spec(canary=canary))
    assert (problem in got and got != "") if problem else got == ""


def test_weights_of_a_revision_canary_move_only_the_followed_variants_share() -> None:
    following = follow(
        spec(other=True),
        {"weekly": schedule(run("weekly-1"), run("weekly-2"))},
        previous("weekly-1", ("weekly-1", "Serving")),
    )
    assert following is not None
    fixed = {v.name: v.weight for v in following.effective.spec.variants}
    assert spread_weights({R1: 50, R2: 50}, following.effective, fixed) == {"base": 20, R1: 40, R2: 40}
    assert spread_weights({R1: 0, R2: 100}, following.effective, fixed) == {"base": 20, R1: 0, R2: 80}


def _track(*runs: dict[str, Any], prev: list[VariantStatus]) -> Any:
    following = follow(spec(), {"weekly": schedule(*runs)}, prev)
    assert following is not None
    return following.tracks["tuned"]


@pytest.mark.parametrize(
    ("outcome", "settled", "serving", "outcomes", "event"),
    [
        (CanaryOutcome.PROGRESSING, True, "weekly-1", ["Serving", "Canary"], ("Normal", "RevisionCanary")),
        # Promoted but the routers do not serve it yet: still a canary, the old pods stay.
        (CanaryOutcome.PROMOTED, False, "weekly-1", ["Serving", "Canary"], ("Normal", "RevisionCanary")),
        (CanaryOutcome.PROMOTED, True, "weekly-2", ["Superseded", "Serving"], ("Normal", "RevisionServing")),
        (
            CanaryOutcome.ROLLED_BACK,
            True,
            "weekly-1",
            ["Serving", "RolledBack"],
            ("Warning", "RevisionRolledBack"),
        ),
    ],
)
def test_record_revisions(
    outcome: CanaryOutcome, settled: bool, serving: str, outcomes: list[str], event: tuple[str, str]
) -> None:
    track = _track(run("weekly-1"), run("weekly-2"), prev=previous("weekly-1", ("weekly-1", "Serving")))
    recorded = record_revisions(track, outcome, reason="R", message="m", settled=settled, now=NOW)
    assert recorded.serving_revision == serving
    assert [r.outcome for r in recorded.revisions] == outcomes
    assert event in [(e.type, e.reason) for e in recorded.events]
    new = recorded.revisions[-1]
    assert new.artifact_uri == "pvc://out/weekly-2/merged"
    assert new.served_model_name == R2


def test_recording_is_idempotent_and_resumes_from_status() -> None:
    prev = previous("weekly-1", ("weekly-1", "Serving"), ("weekly-2", "Canary"))
    track = _track(run("weekly-1"), run("weekly-2"), prev=prev)
    recorded = record_revisions(
        track, CanaryOutcome.PROGRESSING, reason="R", message="m", settled=True, now=NOW
    )
    assert [r.outcome for r in recorded.revisions] == [RevisionOutcome.SERVING, RevisionOutcome.CANARY]
    assert recorded.events == [], "no new outcome, no Event"


def test_history_is_capped_oldest_first() -> None:
    old = [(f"weekly-{i}", "RolledBack") for i in range(HISTORY_LIMIT - 1)]
    prev = previous("weekly-x", ("weekly-x", "Serving"), *old)
    track = _track(run("weekly-x"), run("weekly-new"), prev=prev)
    recorded = record_revisions(
        track, CanaryOutcome.PROGRESSING, reason="", message="", settled=True, now=NOW
    )
    assert len(recorded.revisions) == HISTORY_LIMIT
    assert recorded.revisions[-1].revision == "weekly-new"
    assert recorded.revisions[0].revision == "weekly-0", "the oldest went"


def test_fold_adds_the_public_entry_with_the_serving_revisions_state() -> None:
    following = follow(
        spec(),
        {"weekly": schedule(run("weekly-1"), run("weekly-2"))},
        previous("weekly-1", ("weekly-1", "Serving")),
    )
    assert following is not None
    statuses = [VariantStatus(name=R1, weight=70, ready_replicas=1), VariantStatus(name=R2, weight=30)]
    folded, events = fold_statuses(
        following, statuses, (CanaryOutcome.PROGRESSING, "CanaryStep", "s"), settled=True, now=NOW
    )
    public = next(s for s in folded if s.name == "tuned")
    assert (public.weight, public.ready_replicas, public.serving_revision) == (100, 1, "weekly-1")
    assert [r.revision for r in public.revisions] == ["weekly-1", "weekly-2"]
    assert {s.name for s in folded} == {"tuned", R1, R2}
    assert [e.reason for e in events] == ["RevisionCanary"]
