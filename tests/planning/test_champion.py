"""Champion-challenger, pure: the gate verdict, which champion a run meets, who serves what."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from _pytest.mark import ParameterSet

from kubetune.api.finetunejob import EvalMetrics, FrozenSetScores
from kubetune.api.finetuneschedule import NoWorseThanChampion, RunPhase, RunTrigger, ScheduledRun
from kubetune.planning.champion import choose_champion, gate_verdict, serving_revisions

T0 = datetime(2026, 5, 1, tzinfo=UTC)


def tolerances(**wire: Any) -> NoWorseThanChampion:
    return NoWorseThanChampion.model_validate(wire)


def scores(
    ours: dict[str, float] | None, theirs: dict[str, float] | None, message: str = ""
) -> FrozenSetScores:
    return FrozenSetScores(
        metrics=EvalMetrics.model_validate(ours) if ours is not None else None,
        champion_metrics=EvalMetrics.model_validate(theirs) if theirs is not None else None,
        message=message,
    )


LOSS = {"evalLoss": {"maxIncrease": 0.05}}
ALL = {"evalLoss": {"maxIncrease": 0.05}, "rougeL": {"maxDecrease": 0.02}, "bleu": {"maxDecrease": 1.0}}
CHAMPION = {"evalLoss": 1.0, "rougeL": 0.40, "bleu": 20.0}


PASSED, FAILED = (True, "GatePassed"), (False, "GateFailed")


def against_w1(
    id_: str, gate: dict[str, Any], ours: dict[str, float], verdict: tuple[bool, str], in_message: str
) -> ParameterSet:
    """The run scored `ours`, champion w-1 scored CHAMPION on the same frozen set."""
    return pytest.param(gate, scores(ours, CHAMPION), "w-1", *verdict, in_message, id=id_)


@pytest.mark.parametrize(
    ("gate", "scored", "champion", "passed", "reason", "in_message"),
    [
        pytest.param(
            LOSS, scores({"evalLoss": 0.9}, None), None, True, "NoChampion", "no champion", id="first"
        ),
        against_w1("better", LOSS, {"evalLoss": 0.9}, PASSED, "evalLoss 0.9 vs 1"),
        against_w1("at-the-limit", LOSS, {"evalLoss": 1.05}, PASSED, "+0.05"),
        against_w1("loss-regressed", LOSS, {"evalLoss": 1.06}, FAILED, "worse"),
        against_w1(
            "rouge-regressed-loss-better",
            ALL,
            {"evalLoss": 0.9, "rougeL": 0.37, "bleu": 21.0},
            FAILED,
            "rougeL 0.37 vs 0.4 (-0.03, maxDecrease 0.02): worse",
        ),
        against_w1(
            "all-within-tolerance",
            ALL,
            {"evalLoss": 1.02, "rougeL": 0.39, "bleu": 19.5},
            PASSED,
            "bleu 19.5 vs 20 (-0.5, maxDecrease 1): ok",
        ),
        against_w1(
            "only-gated-metrics-count",
            {"bleu": {"maxDecrease": 0}},
            {"evalLoss": 5.0, "bleu": 20.0},
            PASSED,
            "bleu",
        ),
        against_w1(
            "gated-metric-missing", ALL, {"evalLoss": 0.9}, FAILED, "rougeL not reported for this run"
        ),
        pytest.param(
            LOSS,
            scores({"evalLoss": 0.9}, None, "champion w-1 could not be loaded"),
            "w-1",
            False,
            "ChampionNotScored",
            "could not be loaded",
            id="champion-not-scored",
        ),
        pytest.param(
            LOSS,
            scores(None, None, "frozen set not scored: x.jsonl:3"),
            "w-1",
            False,
            "FrozenSetNotScored",
            "x.jsonl:3",
            id="frozen-set-unreadable",
        ),
        pytest.param(LOSS, None, None, False, "FrozenSetNotScored", "no scores", id="no-report-at-all"),
    ],
)
def test_gate_verdict(
    gate: dict[str, Any],
    scored: FrozenSetScores | None,
    champion: str | None,
    passed: bool,
    reason: str,
    in_message: str,
) -> None:
    verdict = gate_verdict(tolerances(**gate), scored, champion)
    assert (verdict.passed, verdict.reason) == (passed, reason), verdict.message
    assert in_message in verdict.message
    assert verdict.champion == champion
    # Both metric sets travel with the verdict, whatever it is.
    assert verdict.challenger_metrics == (scored.metrics if scored else None)
    assert verdict.champion_metrics == (scored.champion_metrics if scored else None)


def run(
    name: str, hours: int, phase: RunPhase = RunPhase.SUCCEEDED, adapter: str | None = "a"
) -> ScheduledRun:
    artifacts = {"adapterUri": f"pvc://out/{name}/adapter"} if adapter == "a" else None
    if adapter == "m":
        artifacts = {"mergedModelUri": f"pvc://out/{name}/model"}
    return ScheduledRun.model_validate(
        {
            "name": name,
            "scheduledTime": (T0 + timedelta(hours=hours)).isoformat(),
            "trigger": RunTrigger.SCHEDULE.value,
            "phase": phase.value,
            **({"artifacts": artifacts} if artifacts else {}),
        }
    )


HISTORY = [run("w-1", 1), run("w-2", 2, adapter="m"), run("w-3", 3), run("w-4", 4, RunPhase.FAILED)]


@pytest.mark.parametrize(
    ("serving", "latest_good", "name", "adapter", "model"),
    [
        pytest.param([], None, None, None, None, id="first-run-none"),
        pytest.param([], "w-3", "w-3", "pvc://out/w-3/adapter", None, id="latest-good"),
        pytest.param(["w-1"], "w-3", "w-1", "pvc://out/w-1/adapter", None, id="serving-beats-latest-good"),
        pytest.param(["w-1", "w-2"], "w-3", "w-2", None, "pvc://out/w-2/model", id="newest-serving"),
        pytest.param(["other-9"], "w-1", "w-1", "pvc://out/w-1/adapter", None, id="not-our-run-ignored"),
        pytest.param(["w-4"], None, None, None, None, id="failed-run-has-no-artifact"),
    ],
)
def test_choose_champion(
    serving: list[str], latest_good: str | None, name: str | None, adapter: str | None, model: str | None
) -> None:
    choice = choose_champion(HISTORY, [], serving, latest_good)
    champion = choice.champion
    if name is None:
        assert champion is None
        assert "no champion" in choice.why
        return
    assert champion is not None
    assert (champion.name, champion.adapter_uri, champion.model_uri) == (name, adapter, model)
    assert name in choice.why


def test_a_champion_pruned_from_the_history_is_found_on_its_finetunejob() -> None:
    job = {
        "metadata": {"name": "w-0"},
        "status": {"phase": "Succeeded", "artifacts": {"adapterUri": "pvc://out/w-0/adapter"}},
    }
    history = [run("w-0", 0, RunPhase.SKIPPED, adapter=None), *HISTORY]
    champion = choose_champion(history, [job], ["w-0"], "w-3").champion
    assert champion is not None
    assert (champion.name, champion.adapter_uri) == ("w-0", "pvc://out/w-0/adapter")


def deployment(name: str, variants: list[dict[str, Any]], serving: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "kubetune.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": "ns"},
        "spec": {"variants": variants},
        "status": {"variants": [{"name": v, "servingRevision": r} for v, r in serving.items()]},
    }


BASE = {"uri": "Qwen/Qwen2.5-0.5B"}


def test_serving_revisions_come_from_variants_that_follow_the_schedule() -> None:
    deployments = [
        # The model follows the schedule.
        deployment(
            "a", [{"name": "main", "model": {"finetuneScheduleRef": {"name": "weekly"}}}], {"main": "w-2"}
        ),
        # An adapter follows it; the other variant follows another schedule.
        deployment(
            "b",
            [
                {
                    "name": "chat",
                    "model": BASE,
                    "adapters": [{"name": "support", "finetuneScheduleRef": {"name": "weekly"}}],
                },
                {"name": "other", "model": {"finetuneScheduleRef": {"name": "daily"}}},
            ],
            {"chat": "w-3", "other": "d-7"},
        ),
        # Follows nothing: a servingRevision there is not ours.
        deployment("c", [{"name": "plain", "model": BASE}], {"plain": "w-1"}),
        # Does not parse: nobody can rely on it.
        {"metadata": {"name": "broken"}, "spec": {"variants": "no"}},
    ]
    assert serving_revisions("weekly", deployments) == ["w-2", "w-3"]
    assert serving_revisions("daily", deployments) == ["d-7"]
    assert serving_revisions("monthly", deployments) == []
