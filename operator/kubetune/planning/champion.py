"""Champion-challenger for a FineTuneSchedule: which model a run is compared with, and the verdict. Pure.

The champion is the model in production: the serving revision of the ModelDeployments that follow the
schedule (`finetuneScheduleRef`), else the schedule's latest good run; the first run has none. Each run
scores itself and its champion on the schedule's frozen set in the same trainer process (same code,
same file, same base), and `gate_verdict` compares the two score sets with the spec's tolerances.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from kubetune.api.conditions import Reason
from kubetune.api.finetunejob import Artifacts, Champion, FineTuneJobStatus, FrozenSetScores
from kubetune.api.finetuneschedule import NoWorseThanChampion, RunGate, RunPhase, ScheduledRun
from kubetune.api.modeldeployment import ModelDeployment

Manifest = dict[str, Any]


def serving_revisions(schedule: str, deployments: Iterable[Mapping[str, Any]]) -> list[str]:
    """The runs of `schedule` serving all traffic of a variant that follows it, in every deployment given
    (deployments that do not parse are not followers anyone can rely on: skipped)."""
    revisions: list[str] = []
    for obj in deployments:
        try:
            deployment = ModelDeployment.model_validate(dict(obj))
        except ValidationError:
            continue
        following = set()
        for variant in deployment.spec.variants:
            refs = [variant.model.finetune_schedule_ref if variant.model else None]
            refs += [adapter.finetune_schedule_ref for adapter in variant.adapters]
            if any(ref is not None and ref.name == schedule for ref in refs):
                following.add(variant.name)
        for status in deployment.status.variants if deployment.status else []:
            revision = status.serving_revision
            if status.name in following and revision and revision not in revisions:
                revisions.append(revision)
    return revisions


@dataclass(frozen=True)
class ChampionChoice:
    champion: Champion | None
    why: str
    """For the run's Event: where the champion came from, or why there is none."""


def choose_champion(
    history: Sequence[ScheduledRun],
    jobs: Sequence[Mapping[str, Any]],
    serving: Sequence[str],
    latest_good_run: str | None,
) -> ChampionChoice:
    """The serving revision (the newest of the schedule's runs among them, when followers disagree),
    else the latest good run; a candidate without a recorded artifact is passed over."""
    order = {run.name: index for index, run in enumerate(history)}
    ranked = sorted((name for name in serving if name in order), key=lambda name: -order[name])
    for name in ranked:
        champion = _champion(name, history, jobs)
        if champion is not None:
            return ChampionChoice(champion, f"champion {name}: serving in production")
    if latest_good_run is not None:
        champion = _champion(latest_good_run, history, jobs)
        if champion is not None:
            return ChampionChoice(champion, f"champion {latest_good_run}: the latest good run")
    return ChampionChoice(None, "no champion yet: no run is serving or good")


def _champion(
    name: str, history: Sequence[ScheduledRun], jobs: Sequence[Mapping[str, Any]]
) -> Champion | None:
    artifacts = _artifacts(name, history, jobs)
    if artifacts is None:
        return None
    if artifacts.adapter_uri:
        return Champion(name=name, adapter_uri=artifacts.adapter_uri)
    if artifacts.merged_model_uri:
        return Champion(name=name, model_uri=artifacts.merged_model_uri)
    return None


def _artifacts(
    name: str, history: Sequence[ScheduledRun], jobs: Sequence[Mapping[str, Any]]
) -> Artifacts | None:
    for run in history:
        if run.name == name and run.phase is RunPhase.SUCCEEDED and run.artifacts is not None:
            return run.artifacts
    for job in jobs:
        if job["metadata"]["name"] == name:
            return FineTuneJobStatus.model_validate(job.get("status") or {}).artifacts
    return None


def gate_verdict(
    tolerances: NoWorseThanChampion, scores: FrozenSetScores | None, champion: str | None
) -> RunGate:
    """Passed when every metric with a tolerance is no worse than the champion's by more than it.

    `champion`: the run the job was told to compare with (None: the first run, nothing to beat). Fails
    closed: a frozen set or a champion that was not scored, or a gated metric either side lacks, fails.
    """
    challenger = scores.metrics if scores is not None else None
    champion_metrics = scores.champion_metrics if scores is not None else None
    record = {"champion": champion, "challenger_metrics": challenger, "champion_metrics": champion_metrics}
    detail = f": {scores.message}" if scores is not None and scores.message else ""
    if challenger is None:
        return RunGate(
            passed=False,
            reason=Reason.FROZEN_SET_NOT_SCORED.value,
            message=f"the run reported no scores on the frozen set{detail}",
            **record,
        )
    if champion is None:
        return RunGate(
            passed=True, reason=Reason.NO_CHAMPION.value, message="no champion to compare with", **record
        )
    if champion_metrics is None:
        return RunGate(
            passed=False,
            reason=Reason.CHAMPION_NOT_SCORED.value,
            message=f"champion {champion} was not scored on the frozen set{detail}",
            **record,
        )
    checks = [
        _check("evalLoss", challenger.eval_loss, champion_metrics.eval_loss, tolerance, lower_is_better=True)
        for tolerance in ([tolerances.eval_loss.max_increase] if tolerances.eval_loss else [])
    ]
    checks += [
        _check(name, ours, theirs, limit.max_decrease, lower_is_better=False)
        for name, ours, theirs, limit in (
            ("rougeL", challenger.rouge_l, champion_metrics.rouge_l, tolerances.rouge_l),
            ("bleu", challenger.bleu, champion_metrics.bleu, tolerances.bleu),
        )
        if limit is not None
    ]
    passed = all(ok for ok, _ in checks)
    message = f"vs champion {champion}: " + "; ".join(text for _, text in checks)
    reason = Reason.GATE_PASSED if passed else Reason.GATE_FAILED
    return RunGate(passed=passed, reason=reason.value, message=message[:1024], **record)


def _check(
    name: str, ours: float | None, theirs: float | None, tolerance: float, *, lower_is_better: bool
) -> tuple[bool, str]:
    if ours is None or theirs is None:
        missing = "this run" if ours is None else "the champion"
        return False, f"{name} not reported for {missing}"
    change = ours - theirs
    worse_by = change if lower_is_better else -change
    limit = f"max{'Increase' if lower_is_better else 'Decrease'} {tolerance:g}"
    verdict = "ok" if worse_by <= tolerance + 1e-12 else "worse"
    return verdict == "ok", f"{name} {ours:.4g} vs {theirs:.4g} ({change:+.4g}, {limit}): {verdict}"
