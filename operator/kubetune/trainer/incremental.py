"""Incremental training (spec.initFrom): continue an earlier job's adapter, replay some of its data.

The operator resolved the earlier job (kubetune.planning.init_from) into `TrainingConfig.init_from`;
here the adapter is loaded trainable after checking it has the shape the spec asks for, and a seeded
sample of the earlier job's training records (its TRAIN_RECORDS_FILE) joins the new training split.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from kubetune.api.finetunejob import DatasetFormat, InitFromLineage, LoraConfig
from kubetune.api.trainingconfig import InitFromConfig
from kubetune.trainer.data import Conversation, DataValidationError, prepare_dataset
from kubetune.trainer.errors import ConfigError, DataError

log = logging.getLogger(__name__)

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")


def _read_adapter_config(path: Path) -> dict[str, Any]:
    try:
        value = json.loads((path / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"spec.initFrom: no readable {ADAPTER_CONFIG} in {path}: {exc}") from None
    if not isinstance(value, dict):
        raise ConfigError(f"spec.initFrom: {path / ADAPTER_CONFIG} is not a JSON object")
    return value


def check_adapter(path: Path, lora: LoraConfig) -> None:
    """The saved adapter has the spec's LoRA shape (r, alpha, target modules), or ConfigError."""
    saved = _read_adapter_config(path)
    targets = saved.get("target_modules")
    saved_targets = sorted([targets] if isinstance(targets, str) else targets or [])
    checks: list[tuple[str, object, object]] = [
        ("r", saved.get("r"), lora.r),
        ("alpha", saved.get("lora_alpha"), lora.alpha),
    ]
    # PEFT saves 'all-linear' expanded to this model's module paths: the operator compared the two
    # specs' targetModules; here only explicit names can be compared.
    if lora.target_modules != ["all-linear"]:
        checks.append(("targetModules", saved_targets, sorted(lora.target_modules)))
    for field, theirs, mine in checks:
        if theirs != mine:
            raise ConfigError(
                f"spec.initFrom: the adapter in {path} has lora.{field} {theirs}, the spec {mine}"
            )


def adapter_digest(path: Path) -> str | None:
    """sha256 of the adapter's weights file (None when there is none to hash)."""
    for name in ADAPTER_WEIGHTS:
        weights = path / name
        if weights.is_file():
            digest = hashlib.sha256()
            with weights.open("rb") as handle:
                for chunk in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(chunk)
            return "sha256:" + digest.hexdigest()
    return None


def load_trainable_adapter(model: Any, init: InitFromConfig, lora: LoraConfig) -> Any:
    """`model` wrapped with the earlier adapter, its LoRA weights trainable."""
    from peft import PeftModel

    path = Path(init.adapter_path)
    check_adapter(path, lora)
    try:
        peft_model = PeftModel.from_pretrained(model, str(path), is_trainable=True)
    except (OSError, ValueError, RuntimeError) as exc:
        raise ConfigError(f"spec.initFrom: cannot load the adapter in {path}: {exc}") from None
    log.info("continuing adapter %s of FineTuneJob %s", init.adapter_uri, init.finetune_job)
    return peft_model


def replay_count(fraction: float, new_records: int) -> int:
    """How many earlier records join `new_records` new training records."""
    return round(fraction * new_records)


def replay_sample(
    earlier: Sequence[Conversation], *, count: int, exclude: Sequence[Conversation], seed: int
) -> list[Conversation]:
    """`count` earlier records (fewer if there are not as many), the same ones for the same inputs.

    Records whose content is in `exclude` (the new data, every split) are never drawn: they would train
    twice or leak the new validation and test splits into training. Ranked by sha256(seed, content), like
    the split, so neither file order nor the run changes the sample.
    """
    if count <= 0:
        return []
    taken = {record.identity() for record in exclude}
    candidates = [record for record in earlier if record.identity() not in taken]

    def rank(record: Conversation) -> str:
        return hashlib.sha256(f"replay\0{seed}\0{record.identity()}".encode()).hexdigest()

    chosen = sorted(candidates, key=rank)[:count]
    if len(chosen) < count:
        log.info("replay: %d earlier records wanted, %d available", count, len(chosen))
    return sorted(chosen, key=lambda r: r.line)


def load_replay_records(
    init: InitFromConfig, *, max_seq_length: int, token_counter: Callable[[Conversation], int] | None
) -> list[Conversation]:
    """The earlier job's training records; those over this job's maxSeqLength are left out."""
    if init.replay_records_path is None:
        return []
    path = Path(init.replay_records_path)
    if not path.is_file():
        raise DataError(
            f"spec.initFrom.replayFraction: {path} not found: FineTuneJob {init.finetune_job} recorded "
            "no training records to replay"
        )
    try:
        prepared = prepare_dataset(
            path,
            fmt=DatasetFormat.MESSAGES,
            validation_split=0.0,
            test_split=0.0,
            max_seq_length=max_seq_length,
            max_invalid_fraction=1.0,
            token_counter=token_counter,
            display_name=f"{init.finetune_job}/{path.name}",
        )
    except DataValidationError as exc:
        raise DataError(str(exc)) from None
    for issue in prepared.report.issues:
        log.info("replay: left out %s", issue)
    return prepared.splits.train


def write_train_records(path: Path, records: Sequence[Conversation]) -> None:
    """What this run trained on, as `messages` JSONL: the replay source of a run that continues it."""
    lines = (json.dumps({"messages": r.as_dicts()}, ensure_ascii=False) + "\n" for r in records)
    scratch = path.with_name(path.name + ".partial")
    scratch.write_text("".join(lines), encoding="utf-8")
    scratch.replace(path)


def lineage(init: InitFromConfig, replayed: int) -> InitFromLineage:
    return InitFromLineage(
        finetune_job=init.finetune_job,
        adapter_uri=init.adapter_uri,
        adapter_digest=adapter_digest(Path(init.adapter_path)),
        replayed_records=replayed,
    )
