"""Finding the checkpoint to resume from after a restart (the Job's retry path)."""

from __future__ import annotations

import re
from pathlib import Path

CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
# HF Trainer writes trainer_state.json after the weights and optimizer: its presence marks a
# checkpoint that was completely written before the pod died.
COMPLETE_MARKER = "trainer_state.json"


def latest_checkpoint(directory: Path) -> Path | None:
    if not directory.is_dir():
        return None
    complete = [
        (int(match.group(1)), path)
        for path in directory.iterdir()
        if (match := CHECKPOINT.match(path.name)) and (path / COMPLETE_MARKER).is_file()
    ]
    return max(complete)[1] if complete else None
