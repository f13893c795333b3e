"""Small pure pieces: result encoding, precision fallback, checkpoint discovery, config loading."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kubetune.api.trainingconfig import EXIT_CONFIG_ERROR, EXIT_DATA_ERROR, TrainerResult
from kubetune.trainer.checkpoints import latest_checkpoint
from kubetune.trainer.config import load_config, load_deepspeed_config
from kubetune.trainer.errors import ConfigError, DataError
from kubetune.trainer.precision import resolve_precision
from kubetune.trainer.result import MAX_BYTES, encode_result
from kubetune.trainer.scoring import bleu, rouge_l


def test_result_fits_the_termination_message_limit_by_shortening_the_message() -> None:
    result = TrainerResult(
        outcome="Failed", reason="InvalidData", message="data.jsonl:1: output: empty\n" * 500
    )
    encoded = encode_result(result)
    assert len(encoded.encode()) <= MAX_BYTES
    decoded = TrainerResult.model_validate_json(encoded)
    assert decoded.reason == "InvalidData"
    assert decoded.message.startswith("data.jsonl:1: output: empty\n")
    assert decoded.message.endswith(" [truncated]")


def test_short_result_is_kept_verbatim() -> None:
    result = TrainerResult(outcome="Succeeded", message="ok", final_step=12)
    assert json.loads(encode_result(result)) == {
        "outcome": "Succeeded",
        "reason": "",
        "message": "ok",
        "finalStep": 12,
    }


@pytest.mark.parametrize(
    ("requested", "cuda", "bf16", "expected"),
    [
        ("bf16", False, False, "fp32"),
        ("fp16", False, False, "fp32"),
        ("fp32", False, False, "fp32"),
        ("bf16", True, True, "bf16"),
        ("bf16", True, False, "fp16"),
        ("fp16", True, True, "fp16"),
        ("fp32", True, True, "fp32"),
    ],
)
def test_precision_falls_back_to_what_the_hardware_can_do(
    requested: str, cuda: bool, bf16: bool, expected: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO")
    assert resolve_precision(requested, cuda=cuda, bf16_supported=bf16) == expected  # type: ignore[arg-type]
    assert bool(caplog.records) == (requested != expected)


def _checkpoint(root: Path, step: int, complete: bool = True) -> Path:
    path = root / f"checkpoint-{step}"
    path.mkdir(parents=True)
    if complete:
        (path / "trainer_state.json").write_text("{}")
    return path


def test_latest_checkpoint_is_the_highest_complete_step(tmp_path: Path) -> None:
    _checkpoint(tmp_path, 9)
    expected = _checkpoint(tmp_path, 10)  # numeric, not lexical order
    _checkpoint(tmp_path, 12, complete=False)  # killed while writing
    (tmp_path / "checkpoint-x").mkdir()
    assert latest_checkpoint(tmp_path) == expected


@pytest.mark.parametrize("setup", ["missing", "empty"])
def test_no_checkpoint_means_start_from_zero(tmp_path: Path, setup: str) -> None:
    if setup == "empty":
        (tmp_path / "checkpoints").mkdir()
    assert latest_checkpoint(tmp_path / "checkpoints") is None


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read config"),
        ("{not json", "invalid config"),
        ('{"jobName": "x"}', "namespace: Field required"),
    ],
)
def test_bad_config_is_a_config_error(tmp_path: Path, content: str | None, message: str) -> None:
    path = tmp_path / "config.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError, match=message) as caught:
        load_config(path)
    assert caught.value.exit_code == EXIT_CONFIG_ERROR


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read DeepSpeed config"),
        ('{"a": }', r"ds.json:1: Expecting value"),
        ("[1]", "JSON object"),
    ],
)
def test_bad_deepspeed_json_is_a_config_error(tmp_path: Path, content: str | None, message: str) -> None:
    path = tmp_path / "ds.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError, match=message):
        load_deepspeed_config(str(path))


def test_exit_codes_match_the_contract() -> None:
    assert (ConfigError.exit_code, DataError.exit_code) == (EXIT_CONFIG_ERROR, EXIT_DATA_ERROR)


@pytest.mark.parametrize(
    ("predictions", "references", "expected_rouge", "expected_bleu"),
    [
        (["the capital is paris"], ["the capital is paris"], 1.0, 100.0),
        (["completely different words"], ["the capital is paris"], 0.0, 0.0),
    ],
)
def test_generation_scores(
    predictions: list[str], references: list[str], expected_rouge: float, expected_bleu: float
) -> None:
    assert rouge_l(predictions, references) == pytest.approx(expected_rouge)
    assert bleu(predictions, references) == pytest.approx(expected_bleu, abs=1e-6)


def test_partial_overlap_scores_between_the_extremes() -> None:
    assert 0 < rouge_l(["the capital is rome"], ["the capital is paris"]) < 1
