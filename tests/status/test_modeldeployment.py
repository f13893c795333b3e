"""variant_status and deployment_status: conditions, transition times, phase, readyVariants, weights."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from tests.serving.objects import model_deployment, variant

from kubetune.api.conditions import ConditionType, Reason
from kubetune.api.modeldeployment import Phase, SmokeTest, VariantStatus
from kubetune.serving.gate import GateVerdict
from kubetune.serving.resolution import Resolution, ResolutionState
from kubetune.serving.smoke import SmokeVerdict
from kubetune.status.conditions import find_condition
from kubetune.status.modeldeployment import deployment_status, previous_variant_conditions, variant_status

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
T1 = T0 + timedelta(minutes=1)
T2 = T0 + timedelta(minutes=2)

READY = Resolution(
    ResolutionState.READY,
    Reason.MODEL_RESOLVED,
    "serving pvc://m/x",
    model_uri="pvc://m/x",
    lineage={"configHash": "abc"},
)
WAITING = Resolution(ResolutionState.WAITING, Reason.WAITING_FOR_FINETUNE_JOB, "FineTuneJob sft is Running")
FAILED = Resolution(ResolutionState.FAILED, Reason.FINETUNE_JOB_FAILED, "FineTuneJob sft failed: OOM")
MISSING = Resolution(
    ResolutionState.NOT_FOUND, Reason.FINETUNE_JOB_NOT_FOUND, "FineTuneJob sft does not exist"
)
GATE_OK = GateVerdict("True", Reason.GATE_PASSED, "no eval gate configured")
GATE_BAD = GateVerdict("False", Reason.GATE_FAILED, "evalLoss 1.3 > threshold 1")
SMOKE_OK = SmokeVerdict("True", Reason.SMOKE_PASSED, "3/3 stopped")
SMOKE_BAD = SmokeVerdict(
    "False", Reason.SMOKE_FAILED, 'prompt 1/3 "hi": finish_reason=length', failing_prompt="hi"
)


def deployment(
    desired: int = 2,
    ready: int = 2,
    updated: int = 2,
    available: int | None = None,
    total: int | None = None,
    generation: int = 1,
    observed: int = 1,
    progressing_reason: str = "NewReplicaSetAvailable",
) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "chat-vllm-a",
            "generation": generation,
            "annotations": {"kubetune.io/model-uri": "pvc://m/x"},
        },
        "spec": {"replicas": desired},
        "status": {
            "observedGeneration": observed,
            "replicas": updated if total is None else total,
            "readyReplicas": ready,
            "updatedReplicas": updated,
            "availableReplicas": ready if available is None else available,
            "conditions": [{"type": "Progressing", "status": "True", "reason": progressing_reason}],
        },
    }


def conditions_of(status: VariantStatus) -> dict[str, tuple[str, str]]:
    return {c.type: (c.status, c.reason) for c in status.conditions}


@pytest.mark.parametrize(
    ("observed", "resolution", "gate", "smoke", "expected"),
    [
        pytest.param(
            None,
            WAITING,
            GATE_OK,
            None,
            {
                "ModelReady": ("False", "WaitingForFineTuneJob"),
                "Available": ("False", "MinimumReplicasUnavailable"),
                "Progressing": ("True", "WaitingForFineTuneJob"),
                "SmokeTestPassed": ("Unknown", "Pending"),
            },
            id="waiting-for-job",
        ),
        pytest.param(
            None,
            FAILED,
            GATE_OK,
            None,
            {"ModelReady": ("False", "FineTuneJobFailed"), "Progressing": ("False", "FineTuneJobFailed")},
            id="job-failed-rolls-out-nothing",
        ),
        pytest.param(
            None, MISSING, GATE_OK, None, {"ModelReady": ("False", "FineTuneJobNotFound")}, id="job-missing"
        ),
        pytest.param(
            None,
            READY,
            GATE_BAD,
            None,
            {
                "ModelReady": ("True", "ModelResolved"),
                "EvalGatePassed": ("False", "GateFailed"),
                "Progressing": ("False", "GateFailed"),
                "Available": ("False", "MinimumReplicasUnavailable"),
            },
            id="gate-failed-not-rolled-out",
        ),
        pytest.param(
            deployment(ready=0, updated=1, available=0, total=2),
            READY,
            GATE_OK,
            None,
            {"Available": ("False", "MinimumReplicasUnavailable"), "Progressing": ("True", "RollingOut")},
            id="rolling-out",
        ),
        pytest.param(
            deployment(generation=2, observed=1),
            READY,
            GATE_OK,
            None,
            {"Available": ("True", "MinimumReplicasAvailable"), "Progressing": ("True", "RollingOut")},
            id="spec-change-not-yet-observed",
        ),
        pytest.param(
            deployment(ready=2, updated=2, total=3),
            READY,
            GATE_OK,
            None,
            {"Progressing": ("True", "RollingOut")},
            id="old-pod-still-terminating",
        ),
        pytest.param(
            deployment(),
            READY,
            GATE_OK,
            SMOKE_OK,
            {
                "Available": ("True", "MinimumReplicasAvailable"),
                "Progressing": ("False", "RolloutComplete"),
                "SmokeTestPassed": ("True", "SmokeTestPassed"),
                "EvalGatePassed": ("True", "GatePassed"),
            },
            id="available-and-smoke-passed",
        ),
        pytest.param(
            deployment(),
            READY,
            GATE_OK,
            SMOKE_BAD,
            {"SmokeTestPassed": ("False", "SmokeTestFailed")},
            id="smoke-failed",
        ),
        pytest.param(
            deployment(ready=0, updated=2, available=0, progressing_reason="ProgressDeadlineExceeded"),
            READY,
            GATE_OK,
            None,
            {
                "Progressing": ("False", "ProgressDeadlineExceeded"),
                "Available": ("False", "MinimumReplicasUnavailable"),
            },
            id="stalled-rollout",
        ),
        pytest.param(
            deployment(desired=0, ready=0, updated=0),
            READY,
            GATE_OK,
            None,
            {"Available": ("False", "MinimumReplicasUnavailable")},
            id="scaled-to-zero",
        ),
    ],
)
def test_variant_status(
    observed: dict[str, Any] | None,
    resolution: Resolution,
    gate: GateVerdict,
    smoke: SmokeVerdict | None,
    expected: dict[str, tuple[str, str]],
) -> None:
    status = variant_status(
        variant("a"), observed, resolution, gate, smoke, endpoint="http://e/v1", generation=4, now=T0
    )
    got = conditions_of(status)
    for kind, value in expected.items():
        assert got[kind] == value, kind
    assert set(got) == {"ModelReady", "EvalGatePassed", "Available", "Progressing", "SmokeTestPassed"}
    assert all(c.observed_generation == 4 for c in status.conditions)
    if observed is None:
        assert (status.endpoint, status.model_uri, status.ready_replicas) == (None, None, 0)
    else:
        assert status.endpoint == "http://e/v1"
        assert status.model_uri == "pvc://m/x"
        assert status.ready_replicas == observed["status"]["readyReplicas"]
        assert status.updated_replicas == observed["status"]["updatedReplicas"]


def test_variant_carries_lineage() -> None:
    status = variant_status(variant("a"), deployment(), READY, GATE_OK, None, now=T0)
    assert status.lineage == {"configHash": "abc"}


def test_transition_time_moves_only_on_a_flip() -> None:
    first = variant_status(variant("a"), None, WAITING, GATE_OK, None, now=T0)
    same = variant_status(
        variant("a"), None, WAITING, GATE_OK, None, previous_conditions=first.conditions, now=T1
    )
    assert same == first, "nothing changed: the status must be identical (no patch)"
    flipped = variant_status(
        variant("a"), deployment(), READY, GATE_OK, None, previous_conditions=same.conditions, now=T2
    )
    model_ready = find_condition(flipped.conditions, ConditionType.MODEL_READY)
    gate = find_condition(flipped.conditions, ConditionType.EVAL_GATE_PASSED)
    assert model_ready is not None
    assert model_ready.last_transition_time == T2
    assert gate is not None
    assert gate.last_transition_time == T0


def test_smoke_verdict_is_kept_until_replaced() -> None:
    passed = variant_status(variant("a"), deployment(), READY, GATE_OK, SMOKE_OK, now=T0)
    kept = variant_status(
        variant("a"), deployment(), READY, GATE_OK, None, previous_conditions=passed.conditions, now=T1
    )
    assert conditions_of(kept)["SmokeTestPassed"] == ("True", "SmokeTestPassed")
    reset = variant_status(
        variant("a"),
        deployment(),
        READY,
        GATE_OK,
        SmokeVerdict.pending("new model"),
        previous_conditions=kept.conditions,
        now=T2,
    )
    assert conditions_of(reset)["SmokeTestPassed"] == ("Unknown", "Pending")


def test_disabled_smoke_test_counts_as_passed() -> None:
    status = variant_status(
        variant("a"), deployment(), READY, GATE_OK, None, smoke_test=SmokeTest(enabled=False), now=T0
    )
    assert conditions_of(status)["SmokeTestPassed"] == ("True", "SmokeTestPassed")


def vs(
    name: str,
    observed: dict[str, Any] | None = None,
    resolution: Resolution = READY,
    gate: GateVerdict = GATE_OK,
    smoke: SmokeVerdict | None = SMOKE_OK,
) -> VariantStatus:
    return variant_status(variant(name), observed, resolution, gate, smoke, now=T0)


TWO = [
    {"name": "a", "model": {"uri": "pvc://m/a"}, "weight": 70},
    {"name": "b", "model": {"uri": "pvc://m/b"}, "weight": 30},
]


@pytest.mark.parametrize(
    ("statuses", "weights", "phase", "available", "ready_variants", "weight_text"),
    [
        pytest.param(
            [vs("a", deployment()), vs("b", deployment())],
            {"a": 70, "b": 30},
            Phase.AVAILABLE,
            "True",
            "2/2",
            "a=70,b=30",
            id="all-good",
        ),
        pytest.param(
            [vs("a", None, WAITING, smoke=None), vs("b", None, WAITING, smoke=None)],
            {},
            Phase.PENDING,
            "False",
            "0/2",
            None,
            id="both-waiting-for-jobs",
        ),
        pytest.param(
            [vs("a", deployment()), vs("b", None, WAITING, smoke=None)],
            {"a": 100},
            Phase.PROGRESSING,
            "True",
            "1/2",
            "a=100",
            id="one-up-one-waiting",
        ),
        pytest.param(
            [vs("a", deployment()), vs("b", None, FAILED, smoke=None)],
            {"a": 100},
            Phase.DEGRADED,
            "True",
            "1/2",
            "a=100",
            id="serving-but-one-failed",
        ),
        pytest.param(
            [vs("a", None, FAILED, smoke=None), vs("b", None, FAILED, smoke=None)],
            {},
            Phase.FAILED,
            "False",
            "0/2",
            None,
            id="all-failed",
        ),
        pytest.param(
            [vs("a", deployment()), vs("b", deployment(), smoke=SMOKE_BAD)],
            {"a": 100, "b": 0},
            Phase.DEGRADED,
            "True",
            "2/2",
            "a=100,b=0",
            id="smoke-failed-variant-gets-no-traffic",
        ),
        pytest.param(
            [vs("a", deployment()), vs("b", None, gate=GATE_BAD, smoke=None)],
            {"a": 100},
            Phase.DEGRADED,
            "True",
            "1/2",
            "a=100",
            id="gate-failed",
        ),
        pytest.param(
            [vs("a", deployment(ready=0, available=0)), vs("b", deployment())],
            {"a": 70, "b": 30},
            Phase.PROGRESSING,
            "False",
            "1/2",
            "a=70,b=30",
            id="serving-variant-down",
        ),
        pytest.param(
            [vs("a", deployment(ready=0, available=0)), vs("b", deployment())],
            {"b": 100},
            Phase.PROGRESSING,
            "True",
            "1/2",
            "b=100",
            id="down-variant-without-traffic",
        ),
        pytest.param(
            [vs("a", deployment()), vs("b", deployment(), smoke=None)],
            {},
            Phase.PROGRESSING,
            "True",
            "2/2",
            None,
            id="smoke-pending-and-no-weights-observed-uses-spec-weights",
        ),
    ],
)
def test_deployment_status(
    statuses: list[VariantStatus],
    weights: dict[str, int],
    phase: Phase,
    available: str,
    ready_variants: str,
    weight_text: str | None,
) -> None:
    status = deployment_status(model_deployment(TWO, generation=5), statuses, weights, T0)
    assert status.phase is phase
    condition = find_condition(status.conditions, ConditionType.AVAILABLE)
    assert condition is not None
    assert condition.status == available
    assert status.ready_variants == ready_variants
    assert status.weights == weight_text
    assert status.observed_generation == 5
    assert [v.name for v in status.variants] == ["a", "b"]
    assert [v.weight for v in status.variants] == [weights.get("a", 0), weights.get("b", 0)]


def test_aggregate_conditions_name_the_variant() -> None:
    statuses = [vs("a", deployment()), vs("b", None, FAILED, smoke=None)]
    status = deployment_status(model_deployment(TWO), statuses, {"a": 100}, T0)
    model_ready = find_condition(status.conditions, ConditionType.MODEL_READY)
    assert model_ready is not None
    assert (model_ready.status, model_ready.reason) == ("False", Reason.FINETUNE_JOB_FAILED)
    assert "b: FineTuneJob sft failed: OOM" in model_ready.message
    smoke = find_condition(status.conditions, ConditionType.SMOKE_TEST_PASSED)
    assert smoke is not None
    assert smoke.status == "Unknown"


def test_deployment_status_round_trips_through_the_object() -> None:
    """Written, read back and recomputed at a later time with the same world: identical status."""
    statuses = [vs("a", deployment()), vs("b", deployment())]
    first = deployment_status(model_deployment(TWO), statuses, {"a": 70, "b": 30}, T0)
    obj = model_deployment(TWO, status=first.to_wire())
    again_variants = [
        variant_status(
            variant(n),
            deployment(),
            READY,
            GATE_OK,
            None,
            previous_conditions=previous_variant_conditions(obj, n),
            now=T2,
        )
        for n in ("a", "b")
    ]
    again = deployment_status(obj, again_variants, {"a": 70, "b": 30}, T2)
    assert again == first


def test_canary_status_is_preserved_unless_given() -> None:
    obj = model_deployment(TWO, status={"canary": {"step": 2, "weight": 25}})
    kept = deployment_status(obj, [vs("a", deployment()), vs("b", deployment())], {}, T0)
    assert kept.canary is not None
    assert kept.canary.weight == 25
