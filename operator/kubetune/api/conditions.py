"""Condition types and reasons: the only place these strings are spelled."""

from __future__ import annotations

from enum import StrEnum


class ConditionType(StrEnum):
    ACCEPTED = "Accepted"
    # FineTuneJob
    DATA_VALIDATED = "DataValidated"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    SUSPENDED = "Suspended"
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
    # Make-before-break: True once the split is the one planned and every router serves it.
    TRAFFIC_SHIFTED = "TrafficShifted"


class Reason(StrEnum):
    ACCEPTED = "Accepted"
    INVALID_SPEC = "InvalidSpec"
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
    # The canary holds its weight: its analysis gave no verdict for noVerdictLimit intervals (a GitOps
    # tool maps it to Stalled: it needs someone to fix Prometheus or the traffic, not more time).
    ANALYSIS_STALLED = "AnalysisStalled"
    # TrafficShifted: what the shift waits on, or that it is done.
    WAITING_FOR_CAPACITY = "WaitingForCapacity"
    WAITING_FOR_ROUTERS = "WaitingForRouters"
    TRAFFIC_SETTLED = "TrafficSettled"
