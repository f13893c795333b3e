"""Final evaluation on the test split: loss, perplexity, and ROUGE-L/BLEU of greedy generations."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import torch

from kubetune.api.finetunejob import EvalMetrics
from kubetune.trainer.chat import prompt_and_reference, render
from kubetune.trainer.data.records import Conversation
from kubetune.trainer.scoring import bleu, rouge_l

log = logging.getLogger(__name__)

MAX_NEW_TOKENS = 256


def perplexity(loss: float) -> float:
    # exp overflows past ~709; an untrained model can get there, and the API wants a number.
    return math.exp(min(loss, 700.0))


@torch.no_grad()
def generate_answers(
    model: Any, tokenizer: Any, conversations: Sequence[Conversation], *, synced_gpus: bool = False
) -> list[tuple[str, str]]:
    """Greedy answers for each conversation's last user turn, paired with the reference answer."""
    was_training = model.training
    model.eval()  # dropout off, or greedy decoding is not greedy
    device = next(model.parameters()).device
    pairs: list[tuple[str, str]] = []
    try:
        for conversation in conversations:
            prompt_messages, reference = prompt_and_reference(conversation)
            prompt = render(tokenizer, prompt_messages, generation_prompt=True)
            inputs = tokenizer(prompt, add_special_tokens=False, return_tensors="pt").to(device)
            reference_tokens = len(tokenizer(reference, add_special_tokens=False)["input_ids"])
            output = model.generate(
                **inputs,
                max_new_tokens=min(MAX_NEW_TOKENS, reference_tokens + 16),
                do_sample=False,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
                synced_gpus=synced_gpus,
            )
            answer = tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
            pairs.append((answer.strip(), reference))
    finally:
        model.train(was_training)
    return pairs


def evaluation_metrics(
    wanted: Sequence[str], loss: float | None, pairs: Sequence[tuple[str, str]]
) -> EvalMetrics:
    predictions = [p for p, _ in pairs]
    references = [r for _, r in pairs]
    return EvalMetrics(
        eval_loss=loss if "loss" in wanted else None,
        perplexity=perplexity(loss) if "loss" in wanted and loss is not None else None,
        rouge_l=rouge_l(predictions, references) if "rouge" in wanted and pairs else None,
        bleu=bleu(predictions, references) if "bleu" in wanted and pairs else None,
        samples=len(pairs) if pairs else None,
    )
