"""`python -m kubetune.trainer launch -- torchrun ...`: run the launcher, keep our exit codes.

torchrun reports any failed worker as exit code 1, which would hide the contract codes
(40 config error, 41 data error) from the Job's podFailurePolicy and turn a fatal error
into gang restarts. The worker that failed wrote its TrainerResult to the termination log;
its `reason` maps back to the code. SIGTERM/SIGINT are forwarded so torchrun can stop its
workers (which checkpoint on SIGTERM) within the pod's grace period.
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Sequence
from types import FrameType

from kubetune.api.conditions import Reason
from kubetune.api.trainingconfig import EXIT_CONFIG_ERROR, EXIT_DATA_ERROR, TrainerResult
from kubetune.trainer.config import termination_log_path

EXIT_BY_REASON = {Reason.CONFIG_ERROR.value: EXIT_CONFIG_ERROR, Reason.INVALID_DATA.value: EXIT_DATA_ERROR}


def exit_code_for(returncode: int, termination_message: str | None) -> int:
    """The launcher's exit code, or the contract code of the failure the worker recorded."""
    if returncode == 0 or not termination_message:
        return returncode
    try:
        result = TrainerResult.model_validate_json(termination_message)
    except ValueError:
        return returncode
    return EXIT_BY_REASON.get(result.reason, returncode)


def launch(command: Sequence[str]) -> int:
    if not command:
        raise SystemExit("launch: give the launcher command after --")
    child = subprocess.Popen(list(command))

    def forward(signum: int, _frame: FrameType | None) -> None:
        child.send_signal(signum)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, forward)
    returncode = child.wait()
    try:
        message: str | None = termination_log_path().read_text(encoding="utf-8")
    except OSError:
        message = None
    return exit_code_for(returncode, message)
