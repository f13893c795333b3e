"""Every validator error class, with the exact `file:line: field: problem` message."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _pytest.mark import ParameterSet

from kubetune.api.finetunejob import DatasetFormat
from kubetune.trainer.data import Conversation, DataValidationError, prepare_dataset

GOOD = {"instruction": "Say hi.", "input": "", "output": "Hi."}


def _write(tmp_path: Path, lines: list[str], name: str = "train.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _messages(*pairs: tuple[str, str]) -> str:
    return json.dumps({"messages": [{"role": role, "content": content} for role, content in pairs]})


ALPACA, MESSAGES, SHAREGPT = DatasetFormat.ALPACA, DatasetFormat.MESSAGES, DatasetFormat.SHAREGPT


def bad(id_: str, fmt: DatasetFormat, line: str, problem: str) -> ParameterSet:
    """`line` as line 2 of train.jsonl in `fmt`: reported as `train.jsonl:2: <problem>`."""
    return pytest.param(line, fmt, f"train.jsonl:2: {problem}", id=id_)


def turns(id_: str, problem: str, *pairs: tuple[str, str]) -> ParameterSet:
    """A `messages` record of (role, content) `pairs`."""
    return bad(id_, MESSAGES, _messages(*pairs), problem)


@pytest.mark.parametrize(
    ("bad_line", "fmt", "expected"),
    [
        bad(
            "bad-json",
            ALPACA,
            '{"instruction": "Say hi.", "output": "Hi."',
            "record: invalid JSON: Expecting ',' delimiter (column 43)",
        ),
        bad("missing-field", ALPACA, '{"instruction": "Say hi."}', "output: missing field"),
        bad("empty-output", ALPACA, '{"instruction": "Say hi.", "output": "  \\u0007 "}', "output: empty"),
        bad(
            "wrong-type",
            DatasetFormat.INSTRUCTION_RESPONSE,
            '{"instruction": "Say hi.", "response": 3}',
            "response: expected a string, got int",
        ),
        bad("not-an-object", ALPACA, '["not", "an", "object"]', "record: expected a JSON object, got list"),
        turns(
            "wrong-role-order",
            "messages[1]: expected assistant after user, got user",
            ("user", "a"),
            ("user", "b"),
            ("assistant", "c"),
        ),
        turns(
            "assistant-first",
            "messages[0]: expected user after start, got assistant",
            ("assistant", "a"),
            ("user", "b"),
        ),
        turns(
            "no-final-answer",
            "messages: must end with an assistant message, ends with user",
            ("system", "s"),
            ("user", "b"),
        ),
        turns(
            "late-system",
            "messages[2]: a system message is only allowed first",
            ("user", "a"),
            ("assistant", "b"),
            ("system", "late"),
            ("user", "c"),
            ("assistant", "d"),
        ),
        turns(
            "unknown-role",
            "messages[1].role: unknown role 'robot' (expected one of assistant, system, user)",
            ("user", "a"),
            ("robot", "b"),
        ),
        turns("empty-assistant", "messages[1].content: empty", ("user", "a"), ("assistant", "")),
        bad(
            "sharegpt-role-order",
            SHAREGPT,
            json.dumps({"conversations": [{"from": "human", "value": "a"}, {"from": "human", "value": "b"}]}),
            "conversations[1]: expected assistant after user, got user",
        ),
        bad("sharegpt-empty", SHAREGPT, json.dumps({"conversations": []}), "conversations: empty"),
    ],
)
def test_each_error_class_names_file_line_and_field(
    tmp_path: Path, bad_line: str, fmt: DatasetFormat, expected: str
) -> None:
    good = (
        _messages(("user", "hi"), ("assistant", "hello"))
        if fmt is DatasetFormat.MESSAGES
        else json.dumps(GOOD)
    )
    if fmt is DatasetFormat.SHAREGPT:
        good = json.dumps(
            {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}]}
        )
    if fmt is DatasetFormat.INSTRUCTION_RESPONSE:
        good = json.dumps({"instruction": "Say hi.", "response": "Hi."})
    path = _write(tmp_path, [good, bad_line, good.replace("hi", "hey").replace("Hi", "Hey")])

    with pytest.raises(DataValidationError) as caught:
        prepare_dataset(path, fmt=fmt)

    assert [str(issue) for issue in caught.value.report.issues] == [expected]
    assert str(caught.value).splitlines() == [
        "train.jsonl: 1 of 3 records invalid (33.3% > maxInvalidFraction 0.0%)",
        expected,
    ]


def test_over_length_after_tokenisation_is_reported_with_the_count(tmp_path: Path) -> None:
    path = _write(tmp_path, [json.dumps(GOOD), json.dumps({**GOOD, "output": "word " * 50})])

    def words(conversation: Conversation) -> int:
        return sum(len(m.content.split()) for m in conversation.messages)

    with pytest.raises(DataValidationError) as caught:
        prepare_dataset(path, max_seq_length=20, token_counter=words)

    assert [str(i) for i in caught.value.report.issues] == [
        "train.jsonl:2: record: 52 tokens after the chat template, above maxSeqLength 20"
    ]


def test_every_bad_record_is_reported_not_only_the_first(tmp_path: Path) -> None:
    lines = [
        json.dumps(GOOD),
        "{oops",
        json.dumps({"instruction": "x"}),
        json.dumps({"instruction": "", "output": ""}),
    ]
    with pytest.raises(DataValidationError) as caught:
        prepare_dataset(_write(tmp_path, lines))

    assert [str(i) for i in caught.value.report.issues] == [
        "train.jsonl:2: record: invalid JSON: Expecting property name enclosed in double quotes (column 2)",
        "train.jsonl:3: output: missing field",
        "train.jsonl:4: instruction: empty",
        "train.jsonl:4: output: empty",
    ]
    assert caught.value.report.invalid == 3


@pytest.mark.parametrize(
    ("tolerated", "fails"),
    [(0.0, True), (0.24, True), (0.25, False), (1.0, False)],
)
def test_max_invalid_fraction_drops_and_reports_instead_of_failing(
    tmp_path: Path, tolerated: float, fails: bool
) -> None:
    records = [json.dumps({**GOOD, "output": f"Hi {i}."}) for i in range(3)] + ['{"instruction": "x"}']
    path = _write(tmp_path, records)
    if fails:
        with pytest.raises(DataValidationError):
            prepare_dataset(path, max_invalid_fraction=tolerated, validation_split=0, test_split=0)
        return
    prepared = prepare_dataset(path, max_invalid_fraction=tolerated, validation_split=0, test_split=0)
    assert prepared.report.valid == 3
    assert [str(i) for i in prepared.report.issues] == ["train.jsonl:4: output: missing field"]
    assert len(prepared.splits.train) == 3


def test_json_array_records_keep_their_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "data.json"
    path.write_text(
        '[\n  {"instruction": "a", "output": "b"},\n  {"instruction": "c"}\n]\n', encoding="utf-8"
    )
    with pytest.raises(DataValidationError) as caught:
        prepare_dataset(path)
    assert [str(i) for i in caught.value.report.issues] == ["data.json:3: output: missing field"]


def test_undetectable_format_is_one_clear_error(tmp_path: Path) -> None:
    path = _write(tmp_path, [json.dumps({"prompt": "a", "completion": "b"})])
    with pytest.raises(DataValidationError) as caught:
        prepare_dataset(path)
    assert str(caught.value.report.issues[0]) == (
        "train.jsonl:1: record: cannot detect the format: expected 'messages', 'conversations', "
        "'instruction'+'output' or 'instruction'+'response'"
    )


def test_not_utf8_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    path.write_bytes(json.dumps(GOOD).encode() + b"\n" + b'{"instruction": "\xff"}\n')
    with pytest.raises(DataValidationError) as caught:
        prepare_dataset(path)
    assert str(caught.value.report.issues[0]) == "train.jsonl:2: record: not UTF-8 (invalid start byte)"
