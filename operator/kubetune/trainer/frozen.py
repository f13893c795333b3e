"""Champion-challenger scoring on a frozen evaluation set (rank 0, after training and export).

The run's own model and its champion (the model in production, named by `evaluation.champion`) are each
loaded from disk onto the same base, in the dtype they are served in, and scored on the same file by
the same function: like with like, whatever the test split of either run was. The champion's scores
come from this run, not from its own record, so a change of library, tokenizer or scoring code moves
both sides alike. `evaluation.exportTestSplit` writes the test split first (the file a schedule pins
with `fromFirstRun`) and scores on it when no frozen set is given.
"""

from __future__ import annotations

import gc
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from kubetune.api.finetunejob import EvalMetrics, FineTuneJobSpec, FrozenSetScores
from kubetune.api.trainingconfig import FROZEN_EVAL_FILE, TrainingConfig
from kubetune.trainer.chat import IGNORE_INDEX, count_tokens
from kubetune.trainer.data import Conversation, DataValidationError, prepare_dataset
from kubetune.trainer.dataset import PaddingCollator, build_dataset
from kubetune.trainer.evaluation import evaluation_metrics, generate_answers

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Scoring:
    """Where and how the models are run for scoring: the serving dtype of the device."""

    device: str
    dtype: torch.dtype

    @classmethod
    def for_hardware(cls, *, cuda: bool, bf16_supported: bool) -> Scoring:
        if not cuda:
            return cls("cpu", torch.float32)
        return cls("cuda", torch.bfloat16 if bf16_supported else torch.float16)


def export_test_split(test: Sequence[Conversation], directory: Path) -> Path:
    """The test split as `messages` JSONL (the format every reader detects), written whole or not at all."""
    path = directory / FROZEN_EVAL_FILE
    lines = [json.dumps({"messages": c.as_dicts()}, ensure_ascii=False) + "\n" for c in test]
    temporary = path.with_suffix(".tmp")
    temporary.write_text("".join(lines), encoding="utf-8")
    temporary.replace(path)
    log.info("exported the test split (%d records) to %s", len(test), path)
    return path


def load_frozen_set(path: Path, spec: FineTuneJobSpec, tokenizer: Any) -> list[Conversation]:
    """Every valid record of the file (no split: all of it is evaluation data)."""
    prepared = prepare_dataset(
        path,
        validation_split=0.0,
        test_split=0.0,
        seed=spec.dataset.seed,
        max_seq_length=spec.dataset.max_seq_length,
        max_invalid_fraction=spec.dataset.max_invalid_fraction,
        token_counter=lambda c: count_tokens(tokenizer, c),
    )
    return prepared.splits.train


def load_model(
    base_model: str, *, adapter: Path | None, model: Path | None, trust_remote_code: bool, scoring: Scoring
) -> Any:
    """A whole model folder, or `adapter` on the base: what vLLM would serve, for scoring only."""
    from transformers import AutoModelForCausalLM

    folder = str(model) if model is not None else base_model
    loaded: Any = AutoModelForCausalLM.from_pretrained(
        folder, dtype=scoring.dtype, trust_remote_code=trust_remote_code
    )
    if adapter is not None:
        from peft import PeftModel

        loaded = PeftModel.from_pretrained(loaded, str(adapter))
    return loaded.to(scoring.device).eval()


@torch.no_grad()
def token_loss(
    model: Any, tokenizer: Any, conversations: Sequence[Conversation], *, max_length: int, batch_size: int
) -> float | None:
    """Mean loss over every answer token of the set (each token weighs the same, whatever its batch)."""
    dataset = build_dataset(tokenizer, conversations, max_length=max_length, packing=False)
    collate = PaddingCollator(tokenizer.pad_token_id)
    device = next(model.parameters()).device
    total, tokens = 0.0, 0
    for start in range(0, len(dataset), batch_size):
        batch = collate([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])
        batch = {key: value.to(device) for key, value in batch.items()}
        labels = batch.pop("labels")
        logits = model(**batch).logits.float()
        targets = labels[:, 1:]
        loss = torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]),
            targets.reshape(-1),
            ignore_index=IGNORE_INDEX,
            reduction="sum",
        )
        total += float(loss)
        tokens += int((targets != IGNORE_INDEX).sum())
    return total / tokens if tokens else None


def score(
    model: Any, tokenizer: Any, conversations: Sequence[Conversation], spec: FineTuneJobSpec
) -> EvalMetrics:
    """The spec's metrics of one model on the frozen set: the one code path for challenger and champion."""
    wanted = spec.evaluation.metrics
    loss = None
    if "loss" in wanted:
        loss = token_loss(
            model,
            tokenizer,
            conversations,
            max_length=spec.dataset.max_seq_length,
            batch_size=spec.hyperparameters.per_device_batch_size,
        )
    pairs: list[tuple[str, str]] = []
    if {"rouge", "bleu"} & set(wanted):
        pairs = generate_answers(model, tokenizer, conversations[: spec.evaluation.max_samples])
    return evaluation_metrics(wanted, loss, pairs)


def score_frozen_set(
    config: TrainingConfig, output: Path, test: Sequence[Conversation], tokenizer: Any, scoring: Scoring
) -> FrozenSetScores | None:
    """Export the test split if asked; score this run's model and its champion on the frozen set.

    What cannot be scored (an unreadable frozen set, a champion that does not load) is reported in the
    scores' message, not raised: the training succeeded, and the schedule's gate fails closed on it.
    """
    spec = config.spec
    evaluation = spec.evaluation
    exported = export_test_split(test, output) if evaluation.export_test_split else None
    path = Path(config.paths.frozen_set) if config.paths.frozen_set else exported
    if path is None:
        return None
    try:
        conversations = load_frozen_set(path, spec, tokenizer)
    except (OSError, DataValidationError) as exc:
        log.warning("frozen set %s not scored: %s", path, exc)
        return FrozenSetScores(message=f"frozen set not scored: {exc}"[:1024])
    is_lora = spec.effective_lora() is not None
    ours = _scored(
        config,
        tokenizer,
        conversations,
        scoring,
        adapter=output / "adapter" if is_lora else None,
        model=None if is_lora else output / "model",
    )
    log.info("frozen set %s (%d records): this run %s", path, len(conversations), ours.to_wire())
    champion = evaluation.champion
    if champion is None:
        return FrozenSetScores(metrics=ours)
    folder = Path(config.paths.champion) if config.paths.champion else None
    try:
        theirs = _scored(
            config,
            tokenizer,
            conversations,
            scoring,
            adapter=folder if champion.adapter_uri else None,
            model=folder if champion.model_uri else None,
        )
    except (OSError, ValueError, RuntimeError) as exc:
        log.warning("champion %s not scored: %s", champion.name, exc)
        message = f"champion {champion.name} could not be loaded from {folder}: {exc}"
        return FrozenSetScores(metrics=ours, champion=champion.name, message=message[:1024])
    log.info("frozen set %s: champion %s %s", path, champion.name, theirs.to_wire())
    return FrozenSetScores(metrics=ours, champion=champion.name, champion_metrics=theirs)


def _scored(
    config: TrainingConfig,
    tokenizer: Any,
    conversations: Sequence[Conversation],
    scoring: Scoring,
    *,
    adapter: Path | None,
    model: Path | None,
) -> EvalMetrics:
    loaded = load_model(
        config.paths.base_model,
        adapter=adapter,
        model=model,
        trust_remote_code=config.spec.base_model.trust_remote_code,
        scoring=scoring,
    )
    try:
        return score(loaded, tokenizer, conversations, config.spec)
    finally:
        # One model at a time: the champion loads after the run's own is gone.
        del loaded
        gc.collect()
        if scoring.device == "cuda":
            torch.cuda.empty_cache()
