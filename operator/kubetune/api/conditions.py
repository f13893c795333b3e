"""Condition types and reasons: the only place these strings are spelled."""

from __future__ import annotations

from enum import StrEnum


class ConditionType(StrEnum):
    ACCEPTED = "Accepted"
    # Every kind: the summary GitOps tools read (kstatus: Ready, and the abnormal-true pair).
    READY = "Ready"
    RECONCILING = "Reconciling"
    STALLED = "Stalled"
    # FineTuneSchedule (also Suspended and Running)
    LAST_RUN_SUCCEEDED = "LastRunSucceeded"
    MISSED_SCHEDULE = "MissedSchedule"
    # FineTuneJob
    DATA_VALIDATED = "DataValidated"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    SUSPENDED = "Suspended"
    TRAINER_REPORT_VALID = "TrainerReportValid"
    """The trainer's last report (progress, final result) passed validation; False names the field."""
    # ModelDeployment
    MODEL_READY = "ModelReady"
    EVAL_GATE_PASSED = "EvalGatePassed"
    SMOKE_TEST_PASSED = "SmokeTestPassed"
    AVAILABLE = "Available"
    PROGRESSING = "Progressing"
    PROMOTED = "Promoted"
    PROGRESS_DEADLINE_EXCEEDED = "ProgressDeadlineExceeded"
    TRAFFIC_NOT_APPLIED = "TrafficNotApplied"
    CANARY_ROLLED_BACK = "CanaryRolledBack"
    ROUTE_ACCEPTED = "RouteAccepted"
    """gateway-api / inference-pool providers: the Gateways accepted the HTTPRoute, refs resolved."""
    # Make-before-break: True once the split is the one planned and every router serves it.
    TRAFFIC_SHIFTED = "TrafficShifted"


class Reason(StrEnum):
    ACCEPTED = "Accepted"
    INVALID_SPEC = "InvalidSpec"
    # FineTuneSchedule
    INVALID_SCHEDULE = "InvalidSchedule"
    INVALID_TIME_ZONE = "InvalidTimeZone"
    SCHEDULED = "Scheduled"
    RUN_ACTIVE = "RunActive"
    RUN_WAITING = "RunWaiting"
    NO_ACTIVE_RUN = "NoActiveRun"
    NO_RUNS_YET = "NoRunsYet"
    ON_SCHEDULE = "OnSchedule"
    TOO_MANY_MISSED_START_TIMES = "TooManyMissedStartTimes"
    STARTING_DEADLINE_EXCEEDED = "StartingDeadlineExceeded"
    DATASET_UNCHANGED = "DatasetUnchanged"
    REPLACED = "Replaced"
    RUN_DELETED = "RunDeleted"
    # FineTuneSchedule champion-challenger gate (a run's gate.reason; GatePassed and GateFailed too)
    NO_CHAMPION = "NoChampion"
    FROZEN_SET_NOT_SCORED = "FrozenSetNotScored"
    CHAMPION_NOT_SCORED = "ChampionNotScored"
    NAME_CONFLICT = "NameConflict"
    """A child's name is taken by an object this one does not control (never adopted)."""
    PENDING = "Pending"
    VALIDATING = "Validating"
    INVALID_DATA = "InvalidData"
    DATA_VALID = "DataValid"
    TRAINING = "Training"
    EVALUATING = "Evaluating"
    COMPLETED = "Completed"
    BACKOFF_LIMIT_EXCEEDED = "BackoffLimitExceeded"
    DEADLINE_EXCEEDED = "DeadlineExceeded"
    CONFIG_ERROR = "ConfigError"
    GANG_RESTART = "GangRestart"
    REPORT_VALID = "ReportValid"
    INVALID_REPORT = "InvalidReport"
    UNSCHEDULABLE = "Unschedulable"
    # A container that cannot start, under the kubelet's own reason (what `kubectl get pods` shows).
    ERR_IMAGE_PULL = "ErrImagePull"
    IMAGE_PULL_BACK_OFF = "ImagePullBackOff"
    ERR_IMAGE_NEVER_PULL = "ErrImageNeverPull"
    INVALID_IMAGE_NAME = "InvalidImageName"
    CREATE_CONTAINER_CONFIG_ERROR = "CreateContainerConfigError"
    CREATE_CONTAINER_ERROR = "CreateContainerError"
    CRASH_LOOP_BACK_OFF = "CrashLoopBackOff"
    OOM_KILLED = "OOMKilled"
    SUSPENDED = "Suspended"
    WAITING_FOR_FINETUNE_JOB = "WaitingForFineTuneJob"
    FINETUNE_JOB_FAILED = "FineTuneJobFailed"
    FINETUNE_JOB_NOT_FOUND = "FineTuneJobNotFound"
    MODEL_RESOLVED = "ModelResolved"
    # A variant following a FineTuneSchedule (planning/revisions.py)
    WAITING_FOR_GOOD_RUN = "WaitingForGoodRun"
    FINETUNE_SCHEDULE_NOT_FOUND = "FineTuneScheduleNotFound"
    FIRST_REVISION = "FirstRevision"
    REVISION_CANARY = "RevisionCanary"
    REVISION_SERVING = "RevisionServing"
    REVISION_SUPERSEDED = "RevisionSuperseded"
    REVISION_ROLLED_BACK = "RevisionRolledBack"
    ADAPTER_NOT_LOADED = "AdapterNotLoaded"
    GATE_PASSED = "GatePassed"
    GATE_FAILED = "GateFailed"
    SMOKE_PASSED = "SmokeTestPassed"
    SMOKE_FAILED = "SmokeTestFailed"
    MINIMUM_REPLICAS_AVAILABLE = "MinimumReplicasAvailable"
    MINIMUM_REPLICAS_UNAVAILABLE = "MinimumReplicasUnavailable"
    ROLLING_OUT = "RollingOut"
    ROLLOUT_COMPLETE = "RolloutComplete"
    CANARY_STEP = "CanaryStep"
    CANARY_PAUSED = "CanaryPaused"
    CANARY_ABORTED = "CanaryAborted"
    ANALYSIS_FAILED = "AnalysisFailed"
    PROMOTED = "Promoted"
    PROGRESS_DEADLINE_EXCEEDED = "ProgressDeadlineExceeded"
    TRAFFIC_NOT_APPLIED = "TrafficNotApplied"
    ROUTE_PENDING = "RoutePending"
    NO_PARENT_REFS = "NoParentRefs"
    # Ready=True on a ModelDeployment: everything in the spec is rolled out and serving.
    RECONCILED = "Reconciled"
    # The canary holds its weight: its analysis gave no verdict for noVerdictLimit intervals (a GitOps
    # tool maps it to Stalled: it needs someone to fix Prometheus or the traffic, not more time).
    ANALYSIS_STALLED = "AnalysisStalled"
    # TrafficShifted: what the shift waits on, or that it is done.
    WAITING_FOR_CAPACITY = "WaitingForCapacity"
    WAITING_FOR_ROUTERS = "WaitingForRouters"
    TRAFFIC_SETTLED = "TrafficSettled"


# What makes an object Stalled (kstatus: blocked until someone changes the spec or an input), read by
# kubetune.status.summary over every condition but the summary's own. A new blocked-for-good reason is
# one entry here; the conditions that carry it need no change.
STALLED_WHEN_TRUE: frozenset[ConditionType] = frozenset(
    {ConditionType.FAILED, ConditionType.CANARY_ROLLED_BACK}
)
"""Abnormal-true conditions: True means the run failed or the rollout was undone."""
STALLED_REASONS: frozenset[Reason] = frozenset(
    {
        Reason.INVALID_SPEC,
        Reason.INVALID_SCHEDULE,
        Reason.INVALID_TIME_ZONE,
        Reason.INVALID_DATA,
        Reason.CONFIG_ERROR,
        Reason.BACKOFF_LIMIT_EXCEEDED,
        Reason.DEADLINE_EXCEEDED,
        Reason.FINETUNE_JOB_FAILED,
        Reason.GATE_FAILED,
        Reason.SMOKE_FAILED,
        Reason.PROGRESS_DEADLINE_EXCEEDED,
        Reason.ANALYSIS_STALLED,
    }
)
"""Reasons that, on a condition whose status is False, mean nothing moves on by itself."""
