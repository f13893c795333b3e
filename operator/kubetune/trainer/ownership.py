"""Who owns an output folder and its checkpoints: a job never writes into, or resumes from, another's.

Before this, a FineTuneJob whose `output.uri` another job had used resumed that job's checkpoint and
overwrote the adapter it had exported (which vLLM pods may still mount). Now:
- the output folder carries `kubetune-owner.json` (the job's uid, namespace/name), created by the first
  rank to start (O_EXCL); a job finding another owner's marker, or files without any marker, stops
  with a config error (exit 40, no retries) naming the folder and its owner;
- every checkpoint carries `kubetune-checkpoint.json` (the job's uid and a hash of the training
  settings, runPolicy and image left out), written after the HF Trainer saved it; a restart resumes
  only from a checkpoint whose record matches, so a checkpoint from other settings is never resumed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from kubetune.api.trainingconfig import TrainingConfig
from kubetune.trainer.checkpoints import CHECKPOINT, COMPLETE_MARKER
from kubetune.trainer.errors import ConfigError

log = logging.getLogger(__name__)

OWNER_FILE = "kubetune-owner.json"
CHECKPOINT_FILE = "kubetune-checkpoint.json"


class OutputOwnedError(ConfigError):
    """The output folder belongs to another job: writing there would destroy its results."""


@dataclass(frozen=True)
class Owner:
    job: str
    """The FineTuneJob's uid (namespace/name for configs rendered without one: local runs)."""
    name: str
    training_hash: str

    @classmethod
    def of(cls, config: TrainingConfig) -> Owner:
        return cls(
            job=config.job_uid or f"{config.namespace}/{config.job_name}",
            name=f"{config.namespace}/{config.job_name}",
            training_hash=training_hash(config),
        )


def training_hash(config: TrainingConfig) -> str:
    """Hash of what shapes the weights: the spec without runPolicy (suspend, deadlines) and image."""
    settings = config.spec.model_dump(mode="json", by_alias=True, exclude={"run_policy", "image"})
    blob = json.dumps(settings, sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(blob.encode()).hexdigest()


def claim_output(root: Path, owner: Owner) -> None:
    """Make `root` this job's, or raise OutputOwnedError if it is someone else's."""
    root.mkdir(parents=True, exist_ok=True)
    marker = root / OWNER_FILE
    record = json.dumps({"jobUid": owner.job, "job": owner.name})
    if not marker.exists():
        strangers = sorted(
            p.name
            for p in root.iterdir()
            if p.name != OWNER_FILE and not p.name.startswith(f".{OWNER_FILE}.")
        )
        if strangers:
            raise OutputOwnedError(
                f"output folder {root} already holds {', '.join(strangers[:5])} and no {OWNER_FILE}: "
                "another job (or a person) wrote there; give this job its own output.uri"
            )
        # Written aside, then linked into place: the marker appears whole or not at all, so another rank
        # of this gang never reads it half-written (and takes it for a stranger's).
        draft = root / f".{OWNER_FILE}.{os.getpid()}"
        draft.write_text(record, encoding="utf-8")
        try:
            os.link(draft, marker)
        except FileExistsError:
            pass  # another rank of this gang, or another job, claimed it first: checked below
        else:
            return
        finally:
            draft.unlink(missing_ok=True)
    current = _read(marker)
    if current.get("jobUid") != owner.job:
        raise OutputOwnedError(
            f"output folder {root} belongs to FineTuneJob {current.get('job', '?')} "
            f"(uid {current.get('jobUid', '?')}): a job never writes into another's output; "
            "give this job its own output.uri"
        )


def record_checkpoint(checkpoint: Path, owner: Owner) -> None:
    (checkpoint / CHECKPOINT_FILE).write_text(
        json.dumps({"jobUid": owner.job, "trainingHash": owner.training_hash}), encoding="utf-8"
    )


def resumable_checkpoint(directory: Path, owner: Owner) -> Path | None:
    """The newest complete checkpoint this job wrote with these settings (None: start afresh)."""
    if not directory.is_dir():
        return None
    candidates = sorted(
        (
            (int(match.group(1)), path)
            for path in directory.iterdir()
            if (match := CHECKPOINT.match(path.name))
        ),
        reverse=True,
    )
    for _, path in candidates:
        if not (path / COMPLETE_MARKER).is_file():
            continue
        record = _read(path / CHECKPOINT_FILE)
        if record.get("jobUid") == owner.job and record.get("trainingHash") == owner.training_hash:
            return path
        log.warning("not resuming from %s: written by another job or with other settings (%s)", path, record)
    return None


def _read(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return value if isinstance(value, dict) else {}


class CheckpointOwnerCallback(TrainerCallback):
    """Records the owner in each checkpoint once the HF Trainer has written it (rank 0)."""

    def __init__(self, checkpoints: Path, owner: Owner) -> None:
        self.checkpoints = checkpoints
        self.owner = owner

    def on_save(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if state.is_world_process_zero:
            path = self.checkpoints / f"checkpoint-{state.global_step}"
            if path.is_dir():
                record_checkpoint(path, self.owner)
