"""A variant that follows a FineTuneSchedule: which runs serve it, and the canary between two. PURE.

A followed variant `V` (`model: {finetuneScheduleRef}`) never reaches the rest of the pass as itself: the
pass works on an *effective spec* in which `V` is replaced by one internal variant per revision in play,
named `<V>-r<hash of the run>` (a DNS label: it names the revision's Deployment and Service, and it is
the router's variant and metric label), each serving its run's FineTuneJob (`finetuneJobRef`). While a
newer good run is rolled out, the effective spec carries two of them and a `traffic.canary` between them,
so the one canary machinery (`plan_canary`, the analysis, make-before-break in `traffic_shift`, the
smoke tests, the pruning of what the spec no longer renders) moves the weight, exactly as between two
variants a user wrote. The user's spec is never written.

A variant `H` whose *adapter* follows a schedule keeps its pods; each revision in play is an internal
`servedBy` variant (same name rule) served by `H`'s pods under the adapter's versioned name `<A>-<run>`,
loaded into them at runtime (the reconciler syncs the pods before a revision may take weight), and the
revision canary between two of them moves weight only. The history is `H`'s, with `adapter: A`.

The state of the rollout lives in the status: `status.variants[V].revisions` (the history, the run in
flight with outcome Canary) and `servingRevision`; the canary's step in `status.canary` as for any
canary. A pass restarted at any point reads them back and resumes.

Rules (docs/continuous.md):
- the candidate is the schedule's latest good run (`status.latestGoodRun`, else the newest run with
  `is_good()`), unless V has already tried it (any outcome) or it is older than the serving run;
- one revision canary per ModelDeployment at a time (the one `status.canary`); a variant whose canary
  is in flight goes first, the other followed variants keep serving what they serve;
- the first good run of a variant with nothing serving takes its traffic at once (nothing to canary
  from), unless `traffic.canary` names V as its canaryVariant: then it is canaried from stableVariant;
- steps, interval, analysis, failureLimit, maxSurge, pause and abort come from `spec.traffic.canary`
  when it names V as canaryVariant; without one, a new revision takes all of V's weight once its pods
  are ready and smoke-tested (steps [100]);
- an outcome is recorded once the plan is terminal and the split is settled (routers serve it and
  the losing revision scaled down): only then does the losing revision leave the effective spec, so its
  Deployment is pruned after its pods stopped taking traffic.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from kubetune.api.conditions import Reason
from kubetune.api.finetunejob import EvalMetrics, LoraConfig
from kubetune.api.finetuneschedule import FineTuneScheduleStatus, ScheduledRun
from kubetune.api.modeldeployment import (
    Canary,
    CanaryStatus,
    FineTuneJobRef,
    ModelDeploymentSpec,
    ModelSource,
    Revision,
    RevisionOutcome,
    ServedBy,
    Variant,
    VariantStatus,
)
from kubetune.builders.common import stable_hash
from kubetune.planning.canary import CanaryOutcome
from kubetune.planning.plan import Event
from kubetune.serving.lora_runtime import revision_adapters, versioned_adapter_name
from kubetune.serving.resolution import FollowedAdapter, Resolution, ResolutionState, host_not_ready

HISTORY_LIMIT = 20
"""Revisions kept per variant (the newest, oldest first): the status' maxItems."""
_STRAIGHT = [100]
"""Steps of a revision rollout without `traffic.canary`: all of V's weight once ready and smoke-tested."""


def revision_variant_name(variant: str, run: str) -> str:
    """The internal variant serving `run` for `variant`: at most 40 characters, a DNS label."""
    return f"{variant[:30]}-r{stable_hash(run, length=8)}"


def followed_schedules(spec: ModelDeploymentSpec) -> dict[str, str]:
    """Variant name -> the FineTuneSchedule its model follows."""
    return {
        v.name: v.model.finetune_schedule_ref.name
        for v in spec.variants
        if v.model is not None and v.model.finetune_schedule_ref is not None
    }


def followed_adapters(spec: ModelDeploymentSpec) -> dict[str, tuple[str, str]]:
    """Host variant -> (its adapter that follows a FineTuneSchedule, that schedule)."""
    return {
        v.name: (a.name, a.finetune_schedule_ref.name)
        for v in spec.variants
        for a in v.adapters
        if a.finetune_schedule_ref is not None
    }


def _adapter_problem(spec: ModelDeploymentSpec) -> str:
    hosts = followed_adapters(spec)
    for i, variant in enumerate(spec.variants):
        followed = [j for j, a in enumerate(variant.adapters) if a.finetune_schedule_ref is not None]
        field = f"spec.variants[{i}].adapters[{followed[-1]}].finetuneScheduleRef" if followed else ""
        if len(followed) > 1:
            return f"{field}: a variant may have one adapter that follows a FineTuneSchedule"
        if followed and variant.model is not None and variant.model.finetune_schedule_ref is not None:
            return (
                f"{field}: a variant whose model follows a FineTuneSchedule cannot also follow one "
                "with an adapter"
            )
        if followed and spec.traffic.provider != "router":
            return f"{field}: adapters that follow a FineTuneSchedule need traffic.provider router"
        served = variant.served_by
        if served is not None and hosts.get(served.variant, ("", ""))[0] == served.adapter:
            return (
                f"spec.variants[{i}].servedBy: adapter {served.adapter} follows a FineTuneSchedule; its "
                f"revisions take variant {served.variant}'s weight on their own"
            )
    return ""


def following_problem(spec: ModelDeploymentSpec) -> str:
    """What the schema cannot say about followed variants ("" when fine)."""
    if problem := _adapter_problem(spec):
        return problem
    followed = followed_schedules(spec) | {h: s for h, (_, s) in followed_adapters(spec).items()}
    canary = spec.traffic.canary
    if not followed or canary is None:
        return ""
    if canary.stable_variant in followed:
        return (
            f"spec.traffic.canary.stableVariant: {canary.stable_variant} follows a FineTuneSchedule; "
            "a followed variant can only be the canaryVariant (its new revisions canary in on their own)"
        )
    others = sorted(set(followed) - {canary.canary_variant})
    if others:
        return (
            f"spec.variants: {', '.join(others)} follow a FineTuneSchedule but traffic.canary rolls out "
            f"{canary.canary_variant}: with traffic.canary, only its canaryVariant may follow a schedule"
        )
    return ""


# --- one followed variant ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Track:
    """One followed variant in this pass: what serves it, what is canaried in, and its history."""

    variant: str
    schedule: str
    serving: str | None
    """The run serving all of V's traffic before this pass."""
    candidate: str | None = None
    """The run being rolled out (a Canary in the history), if any."""
    first: bool = False
    """The candidate is V's first revision and takes its traffic at once (no canary)."""
    history: tuple[Revision, ...] = ()
    runs: Mapping[str, ScheduledRun] = field(default_factory=dict)
    waiting: tuple[Reason, str] | None = None
    """Why nothing serves V yet (no good run, no schedule)."""
    adapter: str | None = None
    """The followed adapter of V (its revisions are loaded into V's pods), or None: V's model."""

    @property
    def in_play(self) -> tuple[str, ...]:
        """Runs whose pods the effective spec renders."""
        return tuple(run for run in (self.serving, self.candidate) if run is not None)


def _good_runs(status: FineTuneScheduleStatus) -> tuple[list[ScheduledRun], ScheduledRun | None]:
    runs = list(status.runs)
    latest = None
    if status.latest_good_run is not None:
        latest = next((r for r in runs if r.name == status.latest_good_run and r.is_good()), None)
    if latest is None:
        latest = next((r for r in reversed(runs) if r.is_good()), None)
    return runs, latest


def _new_candidate(runs: Sequence[ScheduledRun], latest: ScheduledRun | None, track: Track) -> str | None:
    if latest is None or latest.name == track.serving:
        return None
    if any(r.revision == latest.name for r in track.history):
        return None  # tried already: a rolled-back run is never retried
    names = [r.name for r in runs]
    if track.serving in names and names.index(latest.name) < names.index(track.serving):
        return None
    return latest.name


def plan_track(
    variant: str,
    schedule_name: str,
    schedule: FineTuneScheduleStatus | None,
    previous: VariantStatus | None,
    *,
    slot_free: bool,
    user_stable: str | None,
) -> Track:
    """Which runs serve `variant` this pass. `slot_free`: no other revision canary is in flight;
    `user_stable`: traffic.canary's stableVariant when it names `variant` as canaryVariant."""
    history = tuple(previous.revisions) if previous is not None else ()
    serving = previous.serving_revision if previous is not None else None
    in_flight = next((r.revision for r in history if r.outcome is RevisionOutcome.CANARY), None)
    runs: list[ScheduledRun] = []
    latest = None
    if schedule is not None:
        runs, latest = _good_runs(schedule)
    by_name = {r.name: r for r in runs}
    track = Track(variant, schedule_name, serving, history=history, runs=by_name)
    if in_flight is not None:
        first = serving is None and user_stable is None
        return Track(variant, schedule_name, serving, in_flight, first, history, by_name)
    candidate = _new_candidate(runs, latest, track) if schedule is not None else None
    if candidate is not None and serving is None and user_stable is None:
        return Track(variant, schedule_name, serving, candidate, True, history, by_name)
    if candidate is not None and slot_free:
        return Track(variant, schedule_name, serving, candidate, False, history, by_name)
    if serving is None:
        waiting = (
            (Reason.FINETUNE_SCHEDULE_NOT_FOUND, f"FineTuneSchedule {schedule_name} does not exist")
            if schedule is None
            else (
                Reason.WAITING_FOR_GOOD_RUN,
                f"FineTuneSchedule {schedule_name} has no good run yet (succeeded and passed its gate)",
            )
        )
        return Track(variant, schedule_name, None, history=history, runs=by_name, waiting=waiting)
    return track


def plan_tracks(
    spec: ModelDeploymentSpec,
    schedules: Mapping[str, FineTuneScheduleStatus | None],
    previous: Mapping[str, VariantStatus],
) -> dict[str, Track]:
    """Every followed variant's track; the one revision canary goes to a variant already canarying,
    else to the first (in spec order) with a new good run."""
    adapters = followed_adapters(spec)
    followed = followed_schedules(spec) | {host: schedule for host, (_, schedule) in adapters.items()}
    followed = {v.name: followed[v.name] for v in spec.variants if v.name in followed}
    canary = spec.traffic.canary
    user_stable = canary.stable_variant if canary is not None else None
    in_flight = [
        name
        for name in followed
        if name in previous and any(r.outcome is RevisionOutcome.CANARY for r in previous[name].revisions)
    ]
    tracks: dict[str, Track] = {}
    slot_free = not in_flight
    for name in [*in_flight, *(n for n in followed if n not in in_flight)]:
        track = plan_track(
            name,
            followed[name],
            schedules.get(followed[name]),
            previous.get(name),
            slot_free=slot_free,
            user_stable=user_stable if canary is not None and canary.canary_variant == name else None,
        )
        if track.candidate is not None and not track.first:
            slot_free = False
        tracks[name] = dataclasses.replace(track, adapter=adapters[name][0]) if name in adapters else track
    return {name: tracks[name] for name in followed}


# --- the effective spec ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Effective:
    """The spec the rest of the pass works on, and how its revision canary relates to V."""

    spec: ModelDeploymentSpec
    public: dict[str, str]
    """Internal variant name -> the followed variant it serves."""
    canary_of: str | None = None
    """The followed variant whose revisions the effective canary moves between."""
    share: int | None = None
    """V's weight, spread over its two revisions (None: the canary drives all traffic)."""
    settled_canary: bool = False
    """The effective canary is the user's, its rollout long promoted: resume it at 100%."""


def _revision_variant(variant: Variant, run: str, weight: int) -> Variant:
    return variant.model_copy(
        update={
            "name": revision_variant_name(variant.name, run),
            "model": ModelSource(
                finetune_job_ref=FineTuneJobRef(name=run),
                secret_ref=variant.model.secret_ref if variant.model is not None else None,
            ),
            "weight": weight,
        }
    )


def _adapter_revision(host: Variant, adapter: str, run: str, weight: int) -> Variant:
    """The internal variant serving `run` of the host's followed adapter: in the host's pods, under the
    versioned name the router rewrites `model` to (clients keep sending one name)."""
    return Variant(
        name=revision_variant_name(host.name, run),
        served_by=ServedBy(variant=host.name, adapter=versioned_adapter_name(adapter, run)),
        weight=weight,
    )


def _revision_of(variant: Variant, track: Track, run: str, weight: int) -> Variant:
    if track.adapter is not None:
        return _adapter_revision(variant, track.adapter, run, weight)
    return _revision_variant(variant, run, weight)


def effective_spec(spec: ModelDeploymentSpec, tracks: Mapping[str, Track]) -> Effective:
    """Replace each followed variant by its revisions in play; add the revision canary, if any."""
    public: dict[str, str] = {}
    variants: list[Variant] = []
    canary = spec.traffic.canary
    new_canary: Canary | None = canary
    canary_of: str | None = None
    share: int | None = None
    settled = False
    for variant in spec.variants:
        track = tracks.get(variant.name)
        if track is None:
            variants.append(variant)
            continue
        if not track.in_play:
            variants.append(variant)  # resolves to WaitingForGoodRun: no pods
            continue
        if track.adapter is not None:
            # The host keeps its pods; its share of the traffic goes to its adapter's revisions.
            variants.append(variant.model_copy(update={"weight": 0}))
        serving_run = track.candidate if track.first else track.serving
        if serving_run is not None:
            variants.append(_revision_of(variant, track, serving_run, variant.weight))
            public[variants[-1].name] = variant.name
        user = canary is not None and canary.canary_variant == variant.name
        if track.candidate is not None and not track.first:
            candidate = _revision_of(variant, track, track.candidate, 0)
            variants.append(candidate)
            public[candidate.name] = variant.name
            stable = (
                revision_variant_name(variant.name, track.serving)
                if track.serving is not None
                else (canary.stable_variant if canary is not None else variant.name)
            )
            new_canary = _revision_canary(canary if user else None, stable, candidate.name)
            canary_of, share = variant.name, None if user else variant.weight
        elif user and canary is not None and serving_run is not None:
            # The user's rollout onto V was promoted long ago: V's serving revision keeps all of it.
            new_canary = canary.model_copy(
                update={
                    "canary_variant": revision_variant_name(variant.name, serving_run),
                    "pause": False,
                    "abort": False,
                }
            )
            settled = True
    if (
        canary is not None
        and canary_of is not None
        and share is None
        and tracks[canary_of].serving is not None
    ):
        # The user's rollout onto V was promoted (its stable scaled to zero); a revision canary of V
        # must not give the stable its spec's replicas back while the slot is V's.
        variants = [
            v.model_copy(update={"replicas": 0}) if v.name == canary.stable_variant else v for v in variants
        ]
    traffic = spec.traffic.model_copy(update={"canary": new_canary})
    effective = spec.model_copy(update={"variants": variants, "traffic": traffic})
    return Effective(effective, public, canary_of, share, settled)


def _revision_canary(user: Canary | None, stable: str, candidate: str) -> Canary:
    if user is not None:
        return user.model_copy(update={"stable_variant": stable, "canary_variant": candidate})
    return Canary(stable_variant=stable, canary_variant=candidate, steps=_STRAIGHT)


def settled_status(canary: Canary) -> CanaryStatus:
    """The status of a promoted rollout at its last step (the settled user canary resumes from it)."""
    return CanaryStatus(step=len(canary.steps), weight=100)


def spread_weights(
    planned: Mapping[str, int], effective: Effective, fixed: Mapping[str, int]
) -> dict[str, int]:
    """A revision canary without traffic.canary moves V's share only: the pair's split scaled to V's
    weight, every other variant at its fixed weight."""
    if effective.share is None:
        return dict(planned)
    weights = {name: w for name, w in fixed.items() if name not in planned}
    names = list(planned)
    stable, candidate = names[0], names[1]
    moved = planned[candidate] * effective.share // 100
    weights[candidate] = moved
    weights[stable] = effective.share - moved
    return weights


# --- recording the outcome ---------------------------------------------------------------------------


def _metrics(run: ScheduledRun | None) -> EvalMetrics | None:
    if run is None:
        return None
    if run.gate is not None and run.gate.challenger_metrics is not None:
        return run.gate.challenger_metrics
    return run.metrics


def _artifact(run: ScheduledRun | None) -> str | None:
    if run is None or run.artifacts is None:
        return None
    return run.artifacts.merged_model_uri or run.artifacts.adapter_uri


@dataclass(frozen=True)
class Recorded:
    serving_revision: str | None
    revisions: list[Revision]
    events: list[Event]


def _entry(track: Track, run: str, now: datetime) -> Revision:
    record = track.runs.get(run)
    adapter = track.adapter
    return Revision(
        revision=run,
        adapter=adapter,
        served_model_name=(
            versioned_adapter_name(adapter, run) if adapter else revision_variant_name(track.variant, run)
        ),
        artifact_uri=(record.artifacts.adapter_uri if record and record.artifacts else None)
        if adapter
        else _artifact(record),
        metrics=_metrics(record),
        outcome=RevisionOutcome.CANARY,
        started_at=now,
    )


_EVENT_REASON = {
    RevisionOutcome.CANARY: Reason.REVISION_CANARY,
    RevisionOutcome.SERVING: Reason.REVISION_SERVING,
    RevisionOutcome.SUPERSEDED: Reason.REVISION_SUPERSEDED,
    RevisionOutcome.ROLLED_BACK: Reason.REVISION_ROLLED_BACK,
}


def record_revisions(
    track: Track,
    outcome: CanaryOutcome | None,
    *,
    reason: str,
    message: str,
    settled: bool,
    now: datetime,
) -> Recorded:
    """The history after this pass. `outcome`: the revision canary's, when this track holds it;
    `settled`: the split is the planned one and the losing pods scaled down."""
    history = {r.revision: r for r in track.history}
    order = [r.revision for r in track.history]
    serving = track.serving
    changed: list[Revision] = []

    def put(revision: Revision) -> None:
        if revision.revision not in history:
            order.append(revision.revision)
        before = history.get(revision.revision)
        history[revision.revision] = revision
        if before is None or before.outcome is not revision.outcome:
            changed.append(revision)

    candidate = track.candidate
    if candidate is not None:
        entry = history.get(candidate) or _entry(track, candidate, now)
        if track.first:
            put(entry.model_copy(update=_ended(RevisionOutcome.SERVING, Reason.FIRST_REVISION, "", now)))
            serving = candidate
        elif outcome is CanaryOutcome.PROMOTED and settled:
            put(entry.model_copy(update=_ended(RevisionOutcome.SERVING, reason, message, now)))
            if track.serving is not None and track.serving in history:
                put(
                    history[track.serving].model_copy(
                        update=_ended(
                            RevisionOutcome.SUPERSEDED, Reason.PROMOTED, f"superseded by {candidate}", now
                        )
                    )
                )
            serving = candidate
        elif outcome is CanaryOutcome.ROLLED_BACK and settled:
            put(entry.model_copy(update=_ended(RevisionOutcome.ROLLED_BACK, reason, message, now)))
        else:
            put(entry.model_copy(update={"reason": reason, "message": message[:1024]}))
    revisions = [history[name] for name in order][-HISTORY_LIMIT:]
    events = [
        Event(
            "Warning" if r.outcome is RevisionOutcome.ROLLED_BACK else "Normal",
            _EVENT_REASON[r.outcome],
            f"variant {track.variant}: revision {r.revision} {r.outcome}"
            + (f": {r.message}" if r.message else ""),
        )
        for r in changed
    ]
    return Recorded(serving, revisions, events)


def _ended(outcome: RevisionOutcome, reason: str, message: str, now: datetime) -> dict[str, object]:
    return {"outcome": outcome, "reason": reason, "message": message[:1024], "ended_at": now}


# --- one pass ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Following:
    """The followed variants of one pass: the user's spec, each variant's track, the effective spec."""

    user_spec: ModelDeploymentSpec
    tracks: Mapping[str, Track]
    effective: Effective
    outputs: Mapping[str, FollowedOutput] = field(default_factory=dict)
    """By schedule: where its runs write (a followed adapter's pods mount it whole)."""


@dataclass(frozen=True)
class FollowedOutput:
    """A schedule's `jobTemplate.spec.output.uri` and LoRA rank (None when not set or unreadable)."""

    uri: str | None = None
    rank: int | None = None


def followed_output(body: Mapping[str, Any]) -> FollowedOutput:
    """A FineTuneSchedule's output root and LoRA rank, as read from the API (not validated)."""
    spec = body.get("spec")
    template = spec.get("jobTemplate") if isinstance(spec, Mapping) else None
    job = template.get("spec") if isinstance(template, Mapping) else None
    if not isinstance(job, Mapping):
        return FollowedOutput()
    output, lora = job.get("output"), job.get("lora")
    uri = output.get("uri") if isinstance(output, Mapping) else None
    rank = lora.get("r", LoraConfig().r) if isinstance(lora, Mapping) else LoraConfig().r
    return FollowedOutput(
        uri if isinstance(uri, str) else None, rank if isinstance(rank, int) else LoraConfig().r
    )


def follow(
    spec: ModelDeploymentSpec,
    schedules: Mapping[str, FineTuneScheduleStatus | None],
    previous: Sequence[VariantStatus],
    outputs: Mapping[str, FollowedOutput] | None = None,
) -> Following | None:
    """None when no variant follows a schedule (the pass works on the user's spec as it is)."""
    if not followed_schedules(spec) and not followed_adapters(spec):
        return None
    tracks = plan_tracks(spec, schedules, {s.name: s for s in previous})
    return Following(spec, tracks, effective_spec(spec, tracks), dict(outputs or {}))


# --- followed adapters: what the host's pods load -------------------------------------------------------


@dataclass(frozen=True)
class AdapterDesire:
    """One revision of a followed adapter that the host's pods must have loaded before it takes weight."""

    host: str
    variant: str
    """The internal servedBy variant that routes to it."""
    name: str
    """The versioned name (`<adapter>-<run>`)."""
    path: str
    """The in-pod path /v1/load_lora_adapter reads."""


def adapter_resolutions(
    following: Following, resolutions: Mapping[str, Resolution]
) -> tuple[dict[str, Resolution], list[AdapterDesire]]:
    """The resolutions of the hosts (with their followed adapter, so their pods mount the schedule's
    output) and of the internal revision variants; and what each host's pods must load."""
    result = dict(resolutions)
    desires: list[AdapterDesire] = []
    for host, track in following.tracks.items():
        if track.adapter is None or host not in resolutions:
            continue
        output = following.outputs.get(track.schedule, FollowedOutput())
        host_resolution = resolutions[host]
        internal = [(n, p) for n, p in following.effective.public.items() if p == host]
        if output.uri is None:
            problem = Resolution(
                ResolutionState.FAILED,
                Reason.INVALID_SPEC,
                f"adapter {track.adapter}: FineTuneSchedule {track.schedule} has no jobTemplate output.uri",
            )
            result.update({name: problem for name, _ in internal})
            continue
        followed = FollowedAdapter(track.adapter, output.uri, output.rank)
        if host_resolution.ready:
            result[host] = dataclasses.replace(host_resolution, followed_adapters=(followed,))
        for name, _ in internal:
            run = next(r for r in track.in_play if revision_variant_name(host, r) == name)
            result[name] = _adapter_revision_resolution(track, followed, run, host_resolution, desires)
    return result, desires


def _adapter_revision_resolution(
    track: Track,
    followed: FollowedAdapter,
    run: str,
    host_resolution: Resolution,
    desires: list[AdapterDesire],
) -> Resolution:
    assert track.adapter is not None
    versioned = versioned_adapter_name(track.adapter, run)
    if not host_resolution.ready:
        return host_not_ready(track.variant, host_resolution)
    record = track.runs.get(run)
    uri = record.artifacts.adapter_uri if record is not None and record.artifacts is not None else None
    if not uri:
        return Resolution(
            ResolutionState.FAILED,
            Reason.FINETUNE_JOB_FAILED,
            f"adapter {versioned}: run {run} published no adapter",
        )
    try:
        path = revision_adapters(followed, {run: uri})[versioned]
    except ValueError as exc:
        return Resolution(ResolutionState.FAILED, Reason.INVALID_SPEC, f"adapter {versioned}: {exc}")
    desires.append(AdapterDesire(track.variant, revision_variant_name(track.variant, run), versioned, path))
    return Resolution(
        ResolutionState.READY,
        Reason.MODEL_RESOLVED,
        f"serving adapter {versioned}={uri} in variant {track.variant}'s pods",
        model_uri=uri,
        metrics=_metrics(record),
    )


def adapter_move_pending(following: Following | None) -> bool:
    """A revision canary of a followed adapter is in flight: its old revision is unloaded only once
    every router serves the final split, so the routers are read back before it is recorded."""
    if following is None or following.effective.canary_of is None:
        return False
    track = following.tracks[following.effective.canary_of]
    return track.adapter is not None and track.candidate is not None and not track.first


def fold_statuses(
    following: Following,
    statuses: Sequence[VariantStatus],
    outcome: tuple[CanaryOutcome, str, str] | None,
    *,
    settled: bool,
    now: datetime,
) -> tuple[list[VariantStatus], list[Event]]:
    """The status entries of the effective spec, plus one entry per followed variant under its own name:
    the state of the revision serving it (weight: all its revisions'), `servingRevision` and the history.

    The revisions' own entries stay (named like their Deployments): their conditions carry the smoke-test
    verdicts the next pass reads back.
    """
    by_name = {s.name: s for s in statuses}
    result = [s for s in statuses if s.name not in following.tracks]
    events: list[Event] = []
    for name, track in following.tracks.items():
        mine = outcome if following.effective.canary_of == name else None
        recorded = record_revisions(
            track,
            mine[0] if mine else None,
            reason=mine[1] if mine else "",
            message=mine[2] if mine else "",
            settled=settled,
            now=now,
        )
        events.extend(recorded.events)
        internal = [by_name[n] for n, public in following.effective.public.items() if public == name]
        shown = by_name.get(name)
        if shown is None:
            serving = recorded.serving_revision or track.candidate
            key = revision_variant_name(name, serving) if serving is not None else None
            shown = next((s for s in internal if s.name == key), internal[0] if internal else None)
        base = shown or VariantStatus(name=name)
        result.append(
            base.model_copy(
                update={
                    "name": name,
                    "weight": sum(s.weight for s in internal) if internal else base.weight,
                    "serving_revision": recorded.serving_revision,
                    "revisions": recorded.revisions,
                }
            )
        )
    return result, events


# --- watching the schedules ----------------------------------------------------------------------------


def schedule_summary(body: Mapping[str, object]) -> object:
    """What followers read of a FineTuneSchedule (its runs' names, phases and gate verdicts, the latest
    good run): a change of it re-runs them; other status writes (next schedule time) do not."""
    status = body.get("status")
    if not isinstance(status, Mapping):
        return ()
    runs = status.get("runs")
    summary = [str(status.get("latestGoodRun"))]
    for run in runs if isinstance(runs, list) else []:
        if isinstance(run, Mapping):
            gate = run.get("gate")
            passed = gate.get("passed") if isinstance(gate, Mapping) else None
            summary.append(f"{run.get('name')}:{run.get('phase')}:{passed}")
    return tuple(summary)


def follows_schedule(md: Mapping[str, object], schedule: str) -> bool:
    """Whether a ModelDeployment (as read from the API, not validated) follows the named schedule."""
    spec = md.get("spec")
    variants = spec.get("variants") if isinstance(spec, Mapping) else None
    for variant in variants if isinstance(variants, list) else []:
        if not isinstance(variant, Mapping):
            continue
        model = variant.get("model")
        sources = [model, *(variant.get("adapters") or [])] if isinstance(model, Mapping) else []
        for source in sources:
            ref = source.get("finetuneScheduleRef") if isinstance(source, Mapping) else None
            if isinstance(ref, Mapping) and ref.get("name") == schedule:
                return True
    return False
