"""Packing: whole records per sequence, and neither attention nor loss crosses a record boundary."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest

from kubetune.trainer.chat import IGNORE_INDEX, Encoded
from kubetune.trainer.dataset import PaddingCollator, TokenDataset, pack


def _records(lengths: list[int]) -> list[Encoded]:
    """Record i holds tokens 100*i+1, 100*i+2, ...; labels equal the tokens (all trained)."""
    records = []
    for i, length in enumerate(lengths):
        ids = [100 * i + j + 1 for j in range(length)]
        records.append(Encoded(ids, list(ids)))
    return records


@pytest.mark.parametrize(
    ("lengths", "block", "expected_blocks"),
    [
        ([5, 3, 2], 10, [[5, 3, 2]]),  # all fit in one block
        ([6, 5, 4, 3], 10, [[6, 4], [5, 3]]),  # best fit: 4 goes with 6, 3 with 5
        ([10, 10], 10, [[10], [10]]),  # exact fits, one record each
        ([7, 7, 7], 10, [[7], [7], [7]]),  # nothing pairs up
        ([9, 1, 1], 10, [[9, 1], [1]]),
    ],
)
def test_pack_keeps_whole_records_and_fills_blocks_best_fit(
    lengths: list[int], block: int, expected_blocks: list[list[int]]
) -> None:
    records = _records(lengths)
    packed = pack(records, block)

    members = []
    for sequence in packed:
        starts = [i for i, position in enumerate(sequence.position_ids) if position == 0]
        bounds = [*starts, len(sequence.input_ids)]
        members.append([bounds[k + 1] - bounds[k] for k in range(len(starts))])
        assert len(sequence.input_ids) <= block
        for start, end in itertools.pairwise(bounds):
            record = next(r for r in records if r.input_ids == sequence.input_ids[start:end])
            assert sequence.position_ids[start:end] == list(range(end - start))
            # The record's first label is ignored (it would be the previous record's target), the rest kept.
            assert sequence.labels[start:end] == [IGNORE_INDEX, *record.labels[1:]]
    assert members == expected_blocks
    all_tokens = sorted(t for s in packed for t in s.input_ids)
    assert all_tokens == sorted(t for r in records for t in r.input_ids)


def test_collator_gives_packed_batches_position_ids_and_no_attention_mask() -> None:
    features = [
        {"input_ids": [1, 2, 3, 4], "labels": [-100, 2, -100, 4], "position_ids": [0, 1, 0, 1]},
        {"input_ids": [5, 6], "labels": [-100, 6], "position_ids": [0, 1]},
    ]
    batch = PaddingCollator(pad_token_id=9)(features)

    assert set(batch) == {"input_ids", "labels", "position_ids"}
    assert batch["input_ids"].tolist() == [[1, 2, 3, 4], [5, 6, 9, 9]]
    assert batch["labels"].tolist() == [[-100, 2, -100, 4], [-100, 6, -100, -100]]
    # The padding tail restarts at 0: a record of its own, invisible to the real tokens before it.
    assert batch["position_ids"].tolist() == [[0, 1, 0, 1], [0, 1, 0, 1]]


def test_dataset_counts_the_tokens_it_serves() -> None:
    dataset = TokenDataset(pack(_records([4, 3, 2]), 16))
    assert dataset.tokens_served == 0
    dataset[0]
    dataset[0]
    assert dataset.tokens_served == 18
    assert dataset.token_count() == 9
    assert dataset.mean_length() == 9


def _conversation_records(tokenizer: Any) -> list[Encoded]:
    from kubetune.trainer.chat import encode
    from kubetune.trainer.data import Conversation, Message

    texts = [("Capital of Xland?", "Yburg."), ("Name a colour.", "Blue, like the sea."), ("Two?", "2")]
    return [
        encode(tokenizer, Conversation((Message("user", q), Message("assistant", a)), line=i))
        for i, (q, a) in enumerate(texts)
    ]


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_model: Path) -> tuple[Any, Any]:
    from transformers import AutoTokenizer

    from kubetune.trainer.chat import prepare_tokenizer

    return tiny_model, prepare_tokenizer(AutoTokenizer.from_pretrained(tiny_model))


def _segments(position_ids: list[int], length: int) -> list[tuple[int, int]]:
    starts = [i for i, position in enumerate(position_ids[:length]) if position == 0]
    return list(zip(starts, [*starts[1:], length], strict=True))


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_a_packed_record_gets_the_logits_and_loss_it_gets_alone(
    model_and_tokenizer: tuple[Any, Any], attn: str
) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    path, tokenizer = model_and_tokenizer
    model = AutoModelForCausalLM.from_pretrained(path, attn_implementation=attn, dtype=torch.float32).eval()
    records = _conversation_records(tokenizer)
    # Row 0 packs all three records; row 1 holds one record and padding, as in a real batch.
    rows = [pack(records, 512)[0], pack(records[:1], 512)[0]]
    batch = PaddingCollator(tokenizer.pad_token_id)([TokenDataset(rows)[0], TokenDataset(rows)[1]])

    with torch.no_grad():
        # use_cache=False as in training (the Trainer sets it): with a KV cache transformers assumes
        # generation and does not look for packed records.
        packed = model(**batch, use_cache=False)
        loss_sum, targets = 0.0, 0
        for row, sequence in enumerate(rows):
            for start, end in _segments(sequence.position_ids, len(sequence.input_ids)):
                ids = torch.tensor([sequence.input_ids[start:end]])
                labels = torch.tensor([sequence.labels[start:end]])
                alone = model(input_ids=ids, labels=labels)
                torch.testing.assert_close(
                    packed.logits[row, start:end], alone.logits[0], rtol=1e-4, atol=1e-4
                )
                count = int((labels[0, 1:] != IGNORE_INDEX).sum())
                loss_sum, targets = loss_sum + float(alone.loss) * count, targets + count
    # The batch loss is the mean over its targets: the same targets, each predicted as when alone.
    assert targets == int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
    assert float(packed.loss) == pytest.approx(loss_sum / targets, rel=1e-4)


def test_without_position_ids_records_would_see_each_other(model_and_tokenizer: tuple[Any, Any]) -> None:
    """The control: plain concatenation (one causal sequence) changes the later records' logits."""
    import torch
    from transformers import AutoModelForCausalLM

    path, tokenizer = model_and_tokenizer
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    [sequence] = pack(_conversation_records(tokenizer), 512)
    start, end = _segments(sequence.position_ids, len(sequence.input_ids))[1]
    with torch.no_grad():
        concatenated = model(input_ids=torch.tensor([sequence.input_ids]), use_cache=False).logits
        alone = model(input_ids=torch.tensor([sequence.input_ids[start:end]])).logits
    assert not torch.allclose(concatenated[0, start:end], alone[0], atol=1e-3)
