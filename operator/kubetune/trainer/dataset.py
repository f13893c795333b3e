"""Tokenised training examples, optional packing, and the padding collator."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from kubetune.trainer.chat import IGNORE_INDEX, Encoded, encode
from kubetune.trainer.data.records import Conversation


class TokenDataset(torch.utils.data.Dataset[dict[str, list[int]]]):
    def __init__(self, examples: Sequence[Encoded]) -> None:
        self._examples = list(examples)

    def __len__(self) -> int:
        return len(self._examples)

    def __getitem__(self, index: int) -> dict[str, list[int]]:
        example = self._examples[index]
        return {"input_ids": example.input_ids, "labels": example.labels}

    def token_count(self) -> int:
        return sum(len(example.input_ids) for example in self._examples)


def pack(examples: Sequence[Encoded], block_size: int) -> list[Encoded]:
    """Concatenate examples and cut blocks of `block_size` tokens (the last, shorter block is kept).

    Attention is not reset at record boundaries: records see earlier records of their block, the usual
    trade-off of simple packing for fewer padding tokens.
    """
    ids: list[int] = []
    labels: list[int] = []
    for example in examples:
        ids.extend(example.input_ids)
        labels.extend(example.labels)
    return [
        Encoded(ids[i : i + block_size], labels[i : i + block_size]) for i in range(0, len(ids), block_size)
    ]


def build_dataset(
    tokenizer: Any, conversations: Sequence[Conversation], *, max_length: int, packing: bool
) -> TokenDataset:
    encoded = [encode(tokenizer, conversation) for conversation in conversations]
    # The validator already rejected over-long records; truncation only guards templates that grow.
    encoded = [Encoded(e.input_ids[:max_length], e.labels[:max_length]) for e in encoded]
    return TokenDataset(pack(encoded, max_length) if packing else encoded)


class PaddingCollator:
    """Right-pads a batch to its longest example; padded positions are masked and ignored by the loss."""

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = pad_token_id

    def __call__(self, features: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        longest = max(len(f["input_ids"]) for f in features)
        input_ids = torch.full((len(features), longest), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(features), longest), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((len(features), longest), dtype=torch.long)
        for row, feature in enumerate(features):
            length = len(feature["input_ids"])
            input_ids[row, :length] = torch.tensor(feature["input_ids"], dtype=torch.long)
            labels[row, :length] = torch.tensor(feature["labels"], dtype=torch.long)
            attention_mask[row, :length] = 1
        return {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}
