"""Champion-challenger on the tiny model: one trainer run scores its own model and a champion adapter on
one frozen file, and reports both; it also exports its test split (a schedule's `fromFirstRun`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.trainer.conftest import FACTS, render_config, run_trainer, write_jsonl

from kubetune.api.finetunejob import DatasetFormat
from kubetune.api.trainingconfig import FROZEN_EVAL_FILE, TrainerResult
from kubetune.trainer.data import prepare_dataset

pytestmark = pytest.mark.slow

LORA = {"r": 16, "alpha": 32, "dropout": 0.0, "targetModules": ["all-linear"]}
HYPERPARAMETERS = {
    "precision": "fp32",
    "epochs": 15,
    "learningRate": 5e-3,
    "perDeviceBatchSize": 8,
    "warmupRatio": 0.05,
    "loggingSteps": 5,
}


def untrained_adapter(base: Path, target: Path) -> Path:
    """A LoRA adapter as PEFT initialises it (B = 0): the champion is then exactly the base model."""
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base)
    config = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type=TaskType.CAUSAL_LM)
    get_peft_model(model, config).save_pretrained(target)
    return target


def frozen_records() -> list[dict[str, str]]:
    # A phrasing the training data never uses: the frozen set is held out from every run.
    return [
        {
            "instruction": f"Could you tell me what the capital of {country} is?",
            "output": f"The capital of {country} is {city}.",
        }
        for country, city in FACTS
    ]


def test_one_run_scores_itself_and_the_champion_on_the_frozen_set_and_exports_its_test_split(
    tmp_path: Path, tiny_model: Path, facts_dataset: Path
) -> None:
    frozen = write_jsonl(tmp_path / "frozen.jsonl", frozen_records())
    champion = untrained_adapter(tiny_model, tmp_path / "champion-adapter")
    spec = {
        "lora": LORA,
        "hyperparameters": HYPERPARAMETERS,
        "evaluation": {
            "maxSamples": 4,
            "frozenSet": {"uri": "pvc://models/frozen.jsonl"},
            "exportTestSplit": True,
            "champion": {"name": "weekly-1", "adapterUri": "pvc://output/weekly-1/adapter"},
        },
    }
    config = render_config(tmp_path, model=tiny_model, dataset=facts_dataset, spec=spec)
    # render_config writes the operator's paths; the mounts of frozenSet and champion are these folders.
    rendered = json.loads(config.read_text())
    rendered["paths"].update({"frozenSet": str(frozen), "champion": str(champion)})
    config.write_text(json.dumps(rendered))

    done = run_trainer(["train", "--config", str(config)], tmp_path)

    assert done.returncode == 0, done.stderr[-4000:]
    result = TrainerResult.model_validate_json((tmp_path / "termination-log").read_text())
    scores = result.frozen_set
    assert scores is not None, result
    assert scores.champion == "weekly-1"
    assert scores.message == ""
    ours, theirs = scores.metrics, scores.champion_metrics
    assert ours is not None
    assert theirs is not None
    assert ours.samples == theirs.samples == 4
    assert ours.eval_loss is not None
    assert theirs.eval_loss is not None
    # The run learnt the facts; the champion (the base model, its adapter being zero) did not.
    assert ours.eval_loss < 0.5 * theirs.eval_loss, (ours, theirs)
    # The champion was scored on this run's base, with this run's tokenizer, by the same function.
    assert theirs.eval_loss == pytest.approx(base_model_loss(tiny_model, frozen), rel=1e-4)
    # The test-split metrics are those of the test split, not of the frozen set.
    assert result.metrics is not None
    assert result.metrics.eval_loss != ours.eval_loss

    exported = tmp_path / "output" / FROZEN_EVAL_FILE
    test_split = prepare_dataset(facts_dataset, fmt=DatasetFormat.AUTO, seed=42).splits.test
    pinned = prepare_dataset(exported, validation_split=0, test_split=0).splits.train
    assert [c.messages for c in pinned] == [c.messages for c in test_split]


def base_model_loss(base: Path, frozen: Path) -> float:
    """The base model's token loss on the frozen set, computed here in-process."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from kubetune.api.finetunejob import FineTuneJobSpec
    from kubetune.trainer.chat import prepare_tokenizer
    from kubetune.trainer.frozen import load_frozen_set, token_loss

    spec = FineTuneJobSpec.model_validate(
        {
            "baseModel": {"uri": "pvc://models/tiny"},
            "dataset": {"uri": "pvc://data/facts.jsonl", "maxSeqLength": 128},
            "output": {"uri": "pvc://output/run"},
        }
    )
    tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(base))
    model = AutoModelForCausalLM.from_pretrained(base).eval()
    loss = token_loss(
        model, tokenizer, load_frozen_set(frozen, spec, tokenizer), max_length=128, batch_size=8
    )
    assert loss is not None
    return loss
