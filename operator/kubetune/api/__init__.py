"""Typed models of the kubetune.io/v1alpha1 API: the one source of truth for CRDs and configs."""

from kubetune.api.common import API_VERSION, GROUP, VERSION
from kubetune.api.finetunejob import FineTuneJob, FineTuneJobSpec, FineTuneJobStatus
from kubetune.api.modeldeployment import ModelDeployment, ModelDeploymentSpec, ModelDeploymentStatus

__all__ = [
    "API_VERSION",
    "GROUP",
    "VERSION",
    "FineTuneJob",
    "FineTuneJobSpec",
    "FineTuneJobStatus",
    "ModelDeployment",
    "ModelDeploymentSpec",
    "ModelDeploymentStatus",
]
