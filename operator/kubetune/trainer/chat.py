"""Rendering conversations with the tokenizer's chat template, and masking everything but the answers."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from kubetune.trainer.data.records import Conversation

log = logging.getLogger(__name__)

IGNORE_INDEX = -100

# Used when the base model's tokenizer ships no chat template: ChatML, as Qwen2 and many others use.
DEFAULT_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def prepare_tokenizer(tokenizer: Any) -> Any:
    """Give the tokenizer a chat template and a pad token if it lacks them (logged, never silent)."""
    if not getattr(tokenizer, "chat_template", None):
        log.info("tokenizer has no chat template; using the default ChatML template")
        tokenizer.chat_template = DEFAULT_CHAT_TEMPLATE
    if tokenizer.pad_token is None:
        log.info("tokenizer has no pad token; padding with the eos token %r", tokenizer.eos_token)
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def render(tokenizer: Any, messages: list[dict[str, str]], *, generation_prompt: bool = False) -> str:
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
    return str(text)


@dataclass(frozen=True)
class Encoded:
    input_ids: list[int]
    labels: list[int]


def assistant_spans(tokenizer: Any, conversation: Conversation) -> tuple[str, list[tuple[int, int]]]:
    """The rendered text and the character spans of each assistant turn (answer + end-of-turn marker).

    A span is the difference between the render up to the assistant turn and the render with the
    generation prompt before it, so it works for any template whose renders of prefixes are prefixes.
    """
    messages = conversation.as_dicts()
    full = render(tokenizer, messages)
    spans: list[tuple[int, int]] = []
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = render(tokenizer, messages[:index], generation_prompt=True)
        through = render(tokenizer, messages[: index + 1])
        if not full.startswith(before) or not full.startswith(through) or len(through) < len(before):
            raise ValueError("the chat template does not render conversation prefixes as prefixes")
        spans.append((len(before), len(through)))
    return full, spans


def encode(tokenizer: Any, conversation: Conversation) -> Encoded:
    """Token ids and labels with every non-assistant token set to IGNORE_INDEX."""
    text, spans = assistant_spans(tokenizer, conversation)
    encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids: list[int] = list(encoding["input_ids"])
    labels = [IGNORE_INDEX] * len(ids)
    span_index = 0
    for position, (start, _end) in enumerate(encoding["offset_mapping"]):
        while span_index < len(spans) and start >= spans[span_index][1]:
            span_index += 1
        if span_index < len(spans) and spans[span_index][0] <= start:
            labels[position] = ids[position]
    return Encoded(ids, labels)


def count_tokens(tokenizer: Any, conversation: Conversation) -> int:
    return len(tokenizer(render(tokenizer, conversation.as_dicts()), add_special_tokens=False)["input_ids"])


def prompt_and_reference(conversation: Conversation) -> tuple[list[dict[str, str]], str]:
    """Everything before the last assistant turn, and that turn's text (the evaluation reference)."""
    messages = conversation.as_dicts()
    return messages[:-1], messages[-1]["content"]
