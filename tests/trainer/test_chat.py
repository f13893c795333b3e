"""Chat templating and the loss mask: only assistant tokens are trained on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kubetune.trainer.chat import DEFAULT_CHAT_TEMPLATE, IGNORE_INDEX, count_tokens, encode, prepare_tokenizer
from kubetune.trainer.data import Conversation, Message

MULTI_TURN = Conversation(
    (
        Message("system", "Be brief."),
        Message("user", "Capital of Xland?"),
        Message("assistant", "Yburg."),
        Message("user", "And of Quorvia?"),
        Message("assistant", "Belmont."),
    ),
    line=1,
)


@pytest.fixture(scope="module")
def tokenizer(tiny_model: Path) -> Any:
    from transformers import AutoTokenizer

    return prepare_tokenizer(AutoTokenizer.from_pretrained(tiny_model))


def _trained_text(tokenizer: Any, conversation: Conversation) -> list[str]:
    """The label runs, decoded: consecutive non-ignored tokens joined."""
    encoded = encode(tokenizer, conversation)
    runs: list[list[int]] = [[]]
    for label in encoded.labels:
        if label == IGNORE_INDEX:
            if runs[-1]:
                runs.append([])
        else:
            runs[-1].append(label)
    return [tokenizer.decode(run) for run in runs if run]


def test_only_assistant_turns_and_their_end_marker_carry_labels(tokenizer: Any) -> None:
    assert _trained_text(tokenizer, MULTI_TURN) == ["Yburg.<|im_end|>\n", "Belmont.<|im_end|>\n"]


def test_labels_equal_inputs_where_trained(tokenizer: Any) -> None:
    encoded = encode(tokenizer, MULTI_TURN)
    assert len(encoded.labels) == len(encoded.input_ids) == count_tokens(tokenizer, MULTI_TURN)
    assert all(
        label in (IGNORE_INDEX, token) for label, token in zip(encoded.labels, encoded.input_ids, strict=True)
    )


def test_tokenizer_without_template_gets_chatml_and_a_pad_token(tiny_model: Path) -> None:
    from transformers import AutoTokenizer

    bare = AutoTokenizer.from_pretrained(tiny_model)
    bare.chat_template = None
    bare.pad_token = None
    prepared = prepare_tokenizer(bare)
    assert prepared.chat_template == DEFAULT_CHAT_TEMPLATE
    assert prepared.pad_token == prepared.eos_token == "<|im_end|>"
    assert _trained_text(prepared, MULTI_TURN) == ["Yburg.<|im_end|>\n", "Belmont.<|im_end|>\n"]


def test_packing_keeps_every_token_and_the_assistant_mask(tokenizer: Any) -> None:
    from kubetune.trainer.dataset import build_dataset

    conversations = [
        Conversation((Message("user", f"Question {i}?"), Message("assistant", f"Answer {i}.")), line=i)
        for i in range(6)
    ]
    plain = build_dataset(tokenizer, conversations, max_length=64, packing=False)
    packed = build_dataset(tokenizer, conversations, max_length=64, packing=True)

    lengths = [len(packed[i]["input_ids"]) for i in range(len(packed))]
    assert all(0 < length <= 64 for length in lengths)
    assert len(packed) < len(plain)
    assert packed.token_count() == plain.token_count()
    trained = sum(sum(1 for x in packed[i]["labels"] if x != IGNORE_INDEX) for i in range(len(packed)))
    assert trained == sum(sum(1 for x in plain[i]["labels"] if x != IGNORE_INDEX) for i in range(len(plain)))


def test_collator_pads_right_and_masks_padding() -> None:
    from kubetune.trainer.dataset import PaddingCollator

    batch = PaddingCollator(pad_token_id=9)(
        [
            {"input_ids": [1, 2, 3], "labels": [-100, 2, 3]},
            {"input_ids": [4], "labels": [4]},
        ]
    )
    assert batch["input_ids"].tolist() == [[1, 2, 3], [4, 9, 9]]
    assert batch["labels"].tolist() == [[-100, 2, 3], [4, -100, -100]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
