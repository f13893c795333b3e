"""The frozen-set scoring functions in-process on the tiny model: the loss is the per-token mean, whatever
the batching, and what cannot be scored is reported rather than raised."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tests.trainer.conftest import fact_records, render_config, write_jsonl

from kubetune.api.finetunejob import FineTuneJobSpec
from kubetune.api.trainingconfig import FROZEN_EVAL_FILE
from kubetune.trainer.chat import IGNORE_INDEX, encode, prepare_tokenizer
from kubetune.trainer.config import load_config
from kubetune.trainer.data import prepare_dataset
from kubetune.trainer.frozen import Scoring, export_test_split, load_frozen_set, score_frozen_set, token_loss

SPEC = FineTuneJobSpec.model_validate(
    {
        "baseModel": {"uri": "pvc://models/tiny"},
        "dataset": {"uri": "pvc://data/facts.jsonl", "maxSeqLength": 128},
        "output": {"uri": "pvc://output/run"},
    }
)


@pytest.fixture(scope="module")
def loaded(tiny_model: Path) -> tuple[object, object]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(tiny_model))
    return AutoModelForCausalLM.from_pretrained(tiny_model).eval(), tokenizer


def test_the_loss_is_the_mean_over_every_answer_token_whatever_the_batch(
    tmp_path: Path, loaded: tuple[object, object]
) -> None:
    model, tokenizer = loaded
    path = write_jsonl(tmp_path / "frozen.jsonl", fact_records()[:6])
    conversations = load_frozen_set(path, SPEC, tokenizer)
    # Reference: each record's summed token loss from the model's own loss (a mean over its tokens).
    total, tokens = 0.0, 0
    with torch.no_grad():
        for conversation in conversations:
            encoded = encode(tokenizer, conversation)
            labels = torch.tensor([encoded.labels])
            count = int((labels[:, 1:] != IGNORE_INDEX).sum())
            loss = model(input_ids=torch.tensor([encoded.input_ids]), labels=labels).loss
            total += float(loss) * count
            tokens += count
    one_by_one = token_loss(model, tokenizer, conversations, max_length=128, batch_size=1)
    padded = token_loss(model, tokenizer, conversations, max_length=128, batch_size=4)
    assert one_by_one == pytest.approx(total / tokens, rel=1e-5)
    assert padded == pytest.approx(total / tokens, rel=1e-4)


def test_an_exported_test_split_reads_back_as_the_same_records(tmp_path: Path, facts_dataset: Path) -> None:
    test = prepare_dataset(facts_dataset, seed=42).splits.test
    path = export_test_split(test, tmp_path)
    assert path == tmp_path / FROZEN_EVAL_FILE
    assert all("messages" in json.loads(line) for line in path.read_text().splitlines())
    again = prepare_dataset(path, validation_split=0, test_split=0).splits.train
    assert [c.messages for c in again] == [c.messages for c in test]


def test_an_unreadable_frozen_set_is_reported_not_raised(
    tmp_path: Path, tiny_model: Path, facts_dataset: Path
) -> None:
    config_path = render_config(
        tmp_path,
        model=tiny_model,
        dataset=facts_dataset,
        spec={"evaluation": {"frozenSet": {"uri": "pvc://eval/frozen.jsonl"}}},
    )
    broken = tmp_path / "frozen.jsonl"
    broken.write_text('{"instruction": "no answer"}\n', encoding="utf-8")
    config = load_config(config_path)
    config = config.model_copy(update={"paths": config.paths.model_copy(update={"frozen_set": str(broken)})})
    from transformers import AutoTokenizer

    tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(tiny_model))
    scores = score_frozen_set(
        config, tmp_path, [], tokenizer, Scoring.for_hardware(cuda=False, bf16_supported=False)
    )
    assert scores is not None
    assert scores.metrics is None
    assert "frozen set not scored" in scores.message
    assert "frozen.jsonl:1" in scores.message


def test_without_a_frozen_set_nothing_is_scored(
    tmp_path: Path, tiny_model: Path, facts_dataset: Path
) -> None:
    config = load_config(render_config(tmp_path, model=tiny_model, dataset=facts_dataset))
    scoring = Scoring.for_hardware(cuda=False, bf16_supported=False)
    assert score_frozen_set(config, tmp_path, [], None, scoring) is None
    assert not (tmp_path / FROZEN_EVAL_FILE).exists()
