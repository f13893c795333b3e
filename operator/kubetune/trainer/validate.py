"""The `validate` command and the data preparation shared with `train`."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from kubetune.api.trainingconfig import TrainingConfig
from kubetune.trainer.data import DataValidationError, PreparedData, prepare_dataset
from kubetune.trainer.errors import ConfigError, DataError

log = logging.getLogger(__name__)


def load_tokenizer(config: TrainingConfig) -> Any:
    from transformers import AutoTokenizer

    from kubetune.trainer.chat import prepare_tokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(
            config.paths.base_model, trust_remote_code=config.spec.base_model.trust_remote_code
        )
    except OSError as exc:
        raise ConfigError(f"cannot load the tokenizer from {config.paths.base_model}: {exc}") from None
    return prepare_tokenizer(tokenizer)


def prepare_data(config: TrainingConfig, tokenizer: Any | None) -> PreparedData:
    """Validate, clean and split the dataset; the length check runs when a tokenizer is given."""
    from kubetune.trainer.chat import count_tokens

    dataset = config.spec.dataset
    path = Path(config.paths.dataset)
    if not path.is_file():
        raise DataError(f"{path}: dataset file not found")
    try:
        prepared = prepare_dataset(
            path,
            fmt=dataset.format,
            validation_split=dataset.validation_split,
            test_split=dataset.test_split,
            seed=dataset.seed,
            max_seq_length=dataset.max_seq_length,
            max_invalid_fraction=dataset.max_invalid_fraction,
            token_counter=(lambda c: count_tokens(tokenizer, c)) if tokenizer is not None else None,
        )
    except DataValidationError as exc:
        raise DataError(str(exc)) from None
    for issue in prepared.report.issues:
        log.warning("dropped invalid record: %s", issue)
    log.info("%s", prepared.report.summary())
    return prepared


def validate(config: TrainingConfig) -> PreparedData:
    """Check the data as `train` will see it; the tokenizer is used when the base model is already local."""
    tokenizer = load_tokenizer(config) if Path(config.paths.base_model).is_dir() else None
    if tokenizer is None:
        log.info("base model not staged at %s: skipping the token-length check", config.paths.base_model)
    return prepare_data(config, tokenizer)
