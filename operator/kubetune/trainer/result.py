"""The termination message: the TrainerResult the operator reads from the pod status."""

from __future__ import annotations

import logging
from pathlib import Path

from kubetune.api.trainingconfig import TrainerResult

log = logging.getLogger(__name__)

# The kubelet keeps at most 4096 bytes of a termination message.
MAX_BYTES = 4096


def encode_result(result: TrainerResult) -> str:
    """JSON under MAX_BYTES: the message is shortened first, since the structured fields matter more."""
    text = result.model_dump_json(by_alias=True, exclude_none=True)
    if len(text.encode()) <= MAX_BYTES:
        return text
    overflow = len(text.encode()) - MAX_BYTES
    message = result.message.encode()[: max(0, len(result.message.encode()) - overflow - 64)]
    shortened = result.model_copy(update={"message": message.decode(errors="ignore") + " [truncated]"})
    return shortened.model_dump_json(by_alias=True, exclude_none=True)


def write_result(path: Path, result: TrainerResult) -> None:
    try:
        path.write_text(encode_result(result), encoding="utf-8")
    except OSError as exc:
        # Outside Kubernetes there is no /dev/termination-log; the log line still has the outcome.
        log.warning("cannot write the termination message to %s: %s", path, exc)
