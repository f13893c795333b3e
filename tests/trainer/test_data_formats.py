"""Loading each format into conversations, cleaning, de-duplication and the seeded split."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kubetune.api.finetunejob import DatasetFormat
from kubetune.trainer.data import prepare_dataset
from kubetune.trainer.data.clean import clean_text
from kubetune.trainer.data.split import split_records

SYSTEM_USER_ASSISTANT = [
    ("system", "Be brief."),
    ("user", "Q1"),
    ("assistant", "A1"),
    ("user", "Q2"),
    ("assistant", "A2"),
]


@pytest.mark.parametrize(
    ("record", "fmt", "expected"),
    [
        pytest.param(
            {"instruction": "Translate.", "input": "hola", "output": "hello"},
            DatasetFormat.ALPACA,
            [("user", "Translate.\n\nhola"), ("assistant", "hello")],
            id="alpaca-with-input",
        ),
        pytest.param(
            {"instruction": "Say hi.", "input": "", "output": "Hi."},
            DatasetFormat.ALPACA,
            [("user", "Say hi."), ("assistant", "Hi.")],
            id="alpaca-empty-input",
        ),
        pytest.param(
            {
                "instruction": "Summarise.",
                "context": "Long text.",
                "response": "Short.",
                "category": "summarization",
            },
            DatasetFormat.INSTRUCTION_RESPONSE,
            [("user", "Summarise.\n\nLong text."), ("assistant", "Short.")],
            id="instruction-response",
        ),
        pytest.param(
            {"messages": [{"role": r, "content": c} for r, c in SYSTEM_USER_ASSISTANT]},
            DatasetFormat.MESSAGES,
            SYSTEM_USER_ASSISTANT,
            id="openai-messages-multi-turn",
        ),
        pytest.param(
            {
                "conversations": [
                    {"from": "system", "value": "Be brief."},
                    {"from": "human", "value": "Q1"},
                    {"from": "gpt", "value": "A1"},
                ]
            },
            DatasetFormat.SHAREGPT,
            [("system", "Be brief."), ("user", "Q1"), ("assistant", "A1")],
            id="sharegpt",
        ),
    ],
)
@pytest.mark.parametrize("declared", [True, False], ids=["declared", "auto"])
def test_formats_convert_to_conversations(
    tmp_path: Path,
    record: dict[str, object],
    fmt: DatasetFormat,
    expected: list[tuple[str, str]],
    declared: bool,
) -> None:
    path = tmp_path / "data.jsonl"
    path.write_text(json.dumps(record) + "\n", encoding="utf-8")

    prepared = prepare_dataset(
        path, fmt=fmt if declared else DatasetFormat.AUTO, validation_split=0, test_split=0
    )

    assert prepared.report.format is fmt
    [conversation] = prepared.splits.train
    assert [(m.role, m.content) for m in conversation.messages] == expected
    assert conversation.line == 1


@pytest.mark.parametrize(
    ("raw", "cleaned"),
    [
        (
            "\uff46\uff55\uff4c\uff4c\u3000width",
            "full width",
        ),  # NFKC folds full-width letters and the ideographic space
        ("e\u0301", "é"),  # combining accent composed
        ("\ufb01ne", "fine"),  # ligature
        ("a\x00b\x1bc\x7fd\x85e", "abcde"),  # C0, DEL and C1 controls removed
        ("keep\ttabs\nand lines\r\n", "keep\ttabs\nand lines\n"),
    ],
)
def test_clean_text(raw: str, cleaned: str) -> None:
    assert clean_text(raw) == cleaned


def test_exact_duplicates_after_cleaning_are_removed_and_counted(tmp_path: Path) -> None:
    records = [
        {"instruction": "Say hi.", "output": "Hi."},
        {"instruction": "Say hi.", "output": "Hi."},
        {"instruction": "\uff33\uff41\uff59 hi.\x07", "output": "Hi."},  # same after NFKC + control removal
        {"instruction": "Say hi!", "output": "Hi."},
    ]
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")

    prepared = prepare_dataset(path, validation_split=0, test_split=0)

    assert prepared.report.duplicates_removed == 2
    assert [c.line for c in prepared.splits.train] == [1, 4]
    assert "2 duplicates removed" in prepared.report.summary()


def _dataset(tmp_path: Path, count: int, name: str = "data.jsonl", reverse: bool = False) -> Path:
    records = [{"instruction": f"Question {i}?", "output": f"Answer {i}."} for i in range(count)]
    if reverse:
        records.reverse()
    path = tmp_path / name
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def _contents(conversations: list) -> set[str]:  # type: ignore[type-arg]
    return {c.messages[0].content for c in conversations}


def test_split_defaults_are_80_10_10_and_disjoint(tmp_path: Path) -> None:
    splits = prepare_dataset(_dataset(tmp_path, 200)).splits
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (160, 20, 20)
    train, validation, test = _contents(splits.train), _contents(splits.validation), _contents(splits.test)
    assert not (train & validation)
    assert not (train & test)
    assert not (validation & test)
    assert len(train | validation | test) == 200


def test_split_is_stable_across_runs_and_file_order(tmp_path: Path) -> None:
    first = prepare_dataset(_dataset(tmp_path, 100, "a.jsonl"), seed=7).splits
    again = prepare_dataset(_dataset(tmp_path, 100, "a.jsonl"), seed=7).splits
    reordered = prepare_dataset(_dataset(tmp_path, 100, "b.jsonl", reverse=True), seed=7).splits
    other_seed = prepare_dataset(_dataset(tmp_path, 100, "a.jsonl"), seed=8).splits

    assert _contents(first.test) == _contents(again.test) == _contents(reordered.test)
    assert _contents(first.validation) == _contents(reordered.validation)
    assert _contents(first.test) != _contents(other_seed.test)


@pytest.mark.parametrize(
    ("count", "validation", "test", "expected"),
    [
        (10, 0.1, 0.1, (8, 1, 1)),
        (10, 0.0, 0.2, (8, 0, 2)),
        (4, 0.1, 0.1, (2, 1, 1)),  # a requested split gets at least one record
        (2, 0.1, 0.1, (2, 0, 0)),  # too few to hold any out
        (1, 0.5, 0.3, (1, 0, 0)),
    ],
)
def test_split_sizes(
    tmp_path: Path, count: int, validation: float, test: float, expected: tuple[int, int, int]
) -> None:
    records = prepare_dataset(_dataset(tmp_path, count), validation_split=0, test_split=0).splits.train
    splits = split_records(records, validation=validation, test=test, seed=42)
    assert (len(splits.train), len(splits.validation), len(splits.test)) == expected
