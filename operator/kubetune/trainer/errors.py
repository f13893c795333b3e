"""Failures that end the program with a contract exit code (see kubetune.api.trainingconfig)."""

from __future__ import annotations

from kubetune.api.conditions import Reason
from kubetune.api.trainingconfig import EXIT_CONFIG_ERROR, EXIT_DATA_ERROR


class TrainerError(Exception):
    """A failure that retrying cannot fix."""

    exit_code: int = 1
    reason: str = "TrainingFailed"


class ConfigError(TrainerError):
    """The rendered config, the DeepSpeed JSON or the requested method is unusable here."""

    exit_code = EXIT_CONFIG_ERROR
    reason = Reason.CONFIG_ERROR.value


class DataError(TrainerError):
    """The dataset failed validation; the message names file:line: field: problem."""

    exit_code = EXIT_DATA_ERROR
    reason = Reason.INVALID_DATA.value
