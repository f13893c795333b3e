"""Loading the rendered TrainingConfig and the process topology."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from kubetune.api.trainingconfig import TERMINATION_LOG, TrainingConfig
from kubetune.trainer.errors import ConfigError

TERMINATION_LOG_ENV = "KUBETUNE_TERMINATION_LOG"


def load_config(path: Path) -> TrainingConfig:
    try:
        raw = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
    try:
        return TrainingConfig.model_validate_json(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc']) or 'config'}: {error['msg']}" for error in exc.errors()
        )
        raise ConfigError(f"invalid config {path}: {problems}") from None


def config_hash(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def load_deepspeed_config(path: str) -> dict[str, object]:
    """Read the DeepSpeed JSON up front so that a broken one fails fast with exit 40, not mid-run."""
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read DeepSpeed config {path}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"invalid DeepSpeed config {path}:{exc.lineno}: {exc.msg}") from None
    if not isinstance(value, dict):
        raise ConfigError(f"invalid DeepSpeed config {path}: expected a JSON object")
    return value


def termination_log_path() -> Path:
    return Path(os.environ.get(TERMINATION_LOG_ENV, TERMINATION_LOG))


@dataclass(frozen=True)
class Topology:
    """Where this process sits in the torchrun gang (single process when not launched by torchrun)."""

    rank: int
    local_rank: int
    world_size: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_local_main(self) -> bool:
        return self.local_rank == 0

    @classmethod
    def from_env(cls) -> Topology:
        return cls(
            rank=int(os.environ.get("RANK", "0")),
            local_rank=int(os.environ.get("LOCAL_RANK", "0")),
            world_size=int(os.environ.get("WORLD_SIZE", "1")),
        )
