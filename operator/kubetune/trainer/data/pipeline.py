"""Read → convert → clean → validate → de-duplicate → length-check → split, with one report."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubetune.api.finetunejob import DatasetFormat
from kubetune.trainer.data.formats import convert, detect_format
from kubetune.trainer.data.reader import read_records
from kubetune.trainer.data.records import Conversation, Issue
from kubetune.trainer.data.split import Splits, split_records

TokenCounter = Callable[[Conversation], int]

# How many issues a failure message quotes; the full list is in the report.
QUOTED_ISSUES = 20


@dataclass
class DataReport:
    file: str
    sha256: str
    format: DatasetFormat | None = None
    records: int = 0
    valid: int = 0
    duplicates_removed: int = 0
    issues: list[Issue] = field(default_factory=list)
    train: int = 0
    validation: int = 0
    test: int = 0

    @property
    def invalid(self) -> int:
        return len({issue.line for issue in self.issues})

    def summary(self) -> str:
        return (
            f"{self.file}: {self.records} records ({self.format or 'unknown format'}), "
            f"{self.invalid} invalid, "
            f"{self.duplicates_removed} duplicates removed; split {self.train}/{self.validation}/{self.test} "
            "train/validation/test"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "sha256": self.sha256,
            "format": str(self.format) if self.format else None,
            "records": self.records,
            "valid": self.valid,
            "invalid": self.invalid,
            "duplicatesRemoved": self.duplicates_removed,
            "split": {"train": self.train, "validation": self.validation, "test": self.test},
            "issues": [str(issue) for issue in self.issues],
        }


class DataValidationError(Exception):
    """The dataset is unusable; the message names every quoted problem as file:line: field: problem."""

    def __init__(self, report: DataReport, headline: str) -> None:
        self.report = report
        quoted = [str(issue) for issue in report.issues[:QUOTED_ISSUES]]
        more = len(report.issues) - len(quoted)
        lines = [headline, *quoted] + ([f"... and {more} more"] if more > 0 else [])
        super().__init__("\n".join(lines))


@dataclass(frozen=True)
class PreparedData:
    splits: Splits
    report: DataReport


def _convert_all(path: Path, text: str, fmt: DatasetFormat, report: DataReport) -> list[Conversation]:
    raw_records = list(read_records(text))
    report.records = len(raw_records)
    if fmt is DatasetFormat.AUTO:
        detected = next((f for r in raw_records if (f := detect_format(r.value)) is not None), None)
        if detected is None:
            first_line = raw_records[0].line if raw_records else 1
            report.issues.append(
                Issue(
                    report.file,
                    first_line,
                    "record",
                    "cannot detect the format: expected 'messages', 'conversations', 'instruction'+'output' "
                    "or 'instruction'+'response'",
                )
            )
            return []
        fmt = detected
    report.format = fmt
    conversations: list[Conversation] = []
    for raw in raw_records:
        if raw.error is not None:
            report.issues.append(Issue(report.file, raw.line, "record", raw.error))
            continue
        result = convert(raw.value, raw.line, fmt)
        if isinstance(result, Conversation):
            conversations.append(result)
        else:
            report.issues.extend(Issue(report.file, raw.line, name, problem) for name, problem in result)
    return conversations


def prepare_dataset(
    path: Path,
    *,
    fmt: DatasetFormat = DatasetFormat.AUTO,
    validation_split: float = 0.1,
    test_split: float = 0.1,
    seed: int = 42,
    max_seq_length: int | None = None,
    max_invalid_fraction: float = 0.0,
    token_counter: TokenCounter | None = None,
    display_name: str | None = None,
) -> PreparedData:
    """Load and validate `path`; raise DataValidationError unless the invalid fraction is tolerated.

    `token_counter` (the chat-templated token count of a conversation) enables the length check; it
    is passed in so this module never needs a tokenizer library.
    """
    data = path.read_bytes()
    report = DataReport(file=display_name or path.name, sha256=hashlib.sha256(data).hexdigest())
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        report.issues.append(Issue(report.file, line, "record", f"not UTF-8 ({exc.reason})"))
        raise DataValidationError(report, f"{report.file} is not UTF-8 text") from None

    conversations = _convert_all(path, text, fmt, report)

    unique: list[Conversation] = []
    seen: set[str] = set()
    for conversation in conversations:
        identity = conversation.identity()
        if identity in seen:
            report.duplicates_removed += 1
            continue
        seen.add(identity)
        unique.append(conversation)

    if token_counter is not None and max_seq_length is not None:
        within: list[Conversation] = []
        for conversation in unique:
            tokens = token_counter(conversation)
            if tokens > max_seq_length:
                report.issues.append(
                    Issue(
                        report.file,
                        conversation.line,
                        "record",
                        f"{tokens} tokens after the chat template, above maxSeqLength {max_seq_length}",
                    )
                )
            else:
                within.append(conversation)
        unique = within
    report.issues.sort(key=lambda issue: issue.line)
    report.valid = len(unique)

    if report.records == 0:
        raise DataValidationError(report, f"{report.file}: no records")
    fraction = report.invalid / report.records
    if report.issues and fraction > max_invalid_fraction:
        raise DataValidationError(
            report,
            f"{report.file}: {report.invalid} of {report.records} records invalid "
            f"({fraction:.1%} > maxInvalidFraction {max_invalid_fraction:.1%})",
        )
    if not unique:
        raise DataValidationError(report, f"{report.file}: no valid records")

    splits = split_records(unique, validation=validation_split, test=test_split, seed=seed)
    report.train, report.validation, report.test = len(splits.train), len(splits.validation), len(splits.test)
    return PreparedData(splits, report)
