"""Tokenised training examples, packing without cross-contamination, and the collator.

Packing puts whole records side by side in one sequence of at most `max_length` tokens (best-fit
decreasing, so a record is never cut) and gives every record its own position ids starting at 0. The
collator then leaves `attention_mask` out: transformers derives a block-diagonal causal mask from the
position ids (sdpa, eager, flex) or passes the record boundaries to varlen kernels (flash_attention_2),
so no token attends to another record. The first label of each record is ignored, so no token is
trained to predict the start of the next record either.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from kubetune.trainer.chat import IGNORE_INDEX, Encoded, encode
from kubetune.trainer.data.records import Conversation

Features = dict[str, list[int]]


@dataclass(frozen=True)
class Packed:
    """One training sequence made of whole records; `position_ids` restart at 0 for each."""

    input_ids: list[int]
    labels: list[int]
    position_ids: list[int]


class TokenDataset(torch.utils.data.Dataset[Features]):
    """Encoded records (or packed sequences) and a count of the tokens handed out.

    `tokens_served` is read by the progress callback for tokens/s: counting here, on the host and in the
    main process (dataloader_num_workers=0), costs no device sync, unlike counting the batch on the GPU.
    """

    def __init__(self, examples: Sequence[Encoded | Packed]) -> None:
        self._examples = list(examples)
        self.tokens_served = 0

    def __len__(self) -> int:
        return len(self._examples)

    def __getitem__(self, index: int) -> Features:
        example = self._examples[index]
        self.tokens_served += len(example.input_ids)
        if isinstance(example, Packed):
            return {
                "input_ids": example.input_ids,
                "labels": example.labels,
                "position_ids": example.position_ids,
            }
        return {"input_ids": example.input_ids, "labels": example.labels}

    def token_count(self) -> int:
        return sum(len(example.input_ids) for example in self._examples)

    def mean_length(self) -> float:
        return self.token_count() / len(self._examples) if self._examples else 0.0


def pack(examples: Sequence[Encoded], block_size: int) -> list[Packed]:
    """Best-fit decreasing: each record, longest first, goes into the fullest block that still has room.

    Deterministic for a given input order (ties keep it); records longer than `block_size` must have
    been truncated by the caller.
    """
    order = sorted(range(len(examples)), key=lambda i: -len(examples[i].input_ids))
    blocks: list[list[int]] = []
    # (room left, block index), sorted: bisect finds the smallest room that fits.
    rooms: list[tuple[int, int]] = []
    for index in order:
        length = len(examples[index].input_ids)
        if length == 0:
            continue
        slot = bisect.bisect_left(rooms, (length, -1))
        if slot == len(rooms):
            blocks.append([index])
            room, block = block_size - length, len(blocks) - 1
        else:
            room, block = rooms.pop(slot)
            blocks[block].append(index)
            room -= length
        if room > 0:
            bisect.insort(rooms, (room, block))
    return [_concatenate([examples[i] for i in members]) for members in blocks]


def _concatenate(members: Sequence[Encoded]) -> Packed:
    ids: list[int] = []
    labels: list[int] = []
    positions: list[int] = []
    for example in members:
        ids.extend(example.input_ids)
        # The previous record's last token would otherwise learn to predict this record's first.
        labels.append(IGNORE_INDEX)
        labels.extend(example.labels[1:])
        positions.extend(range(len(example.input_ids)))
    return Packed(ids, labels, positions)


def build_dataset(
    tokenizer: Any, conversations: Sequence[Conversation], *, max_length: int, packing: bool
) -> TokenDataset:
    encoded = [encode(tokenizer, conversation) for conversation in conversations]
    # The validator already rejected over-long records; truncation only guards templates that grow.
    encoded = [Encoded(e.input_ids[:max_length], e.labels[:max_length]) for e in encoded]
    return TokenDataset(pack(encoded, max_length) if packing else encoded)


class PaddingCollator:
    """Right-pads a batch to its longest example; padded positions carry no label.

    Unpacked batches get an attention mask. Packed batches get position ids instead (no mask: that is
    what makes transformers build the per-record mask), and the padding tail becomes one more
    "record" of its own that no real token can attend to.
    """

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = pad_token_id

    def __call__(self, features: list[Features]) -> dict[str, torch.Tensor]:
        # Padded Python lists and one tensor per field: a per-row tensor and slice copy was the largest
        # item of our code in the training loop's profile (docs/benchmarks.md).
        longest = max(len(f["input_ids"]) for f in features)
        tails = [longest - len(f["input_ids"]) for f in features]
        input_ids = [
            f["input_ids"] + [self.pad_token_id] * tail for f, tail in zip(features, tails, strict=True)
        ]
        labels = [f["labels"] + [IGNORE_INDEX] * tail for f, tail in zip(features, tails, strict=True)]
        batch = {
            "input_ids": torch.tensor(input_ids, dtype=torch.long),
            "labels": torch.tensor(labels, dtype=torch.long),
        }
        if "position_ids" in features[0]:
            positions = [
                f["position_ids"] + list(range(tail)) for f, tail in zip(features, tails, strict=True)
            ]
            batch["position_ids"] = torch.tensor(positions, dtype=torch.long)
        else:
            mask = [[1] * (longest - tail) + [0] * tail for tail in tails]
            batch["attention_mask"] = torch.tensor(mask, dtype=torch.long)
        return batch
