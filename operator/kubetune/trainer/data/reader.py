"""Read JSONL or a JSON array, keeping the line number of each record."""

from __future__ import annotations

import bisect
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class RawRecord:
    line: int
    value: Any = None
    error: str | None = None  # a JSON syntax problem; value is None then


def _json_error(exc: json.JSONDecodeError) -> str:
    return f"invalid JSON: {exc.msg} (column {exc.colno})"


def _read_jsonl(text: str) -> Iterator[RawRecord]:
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield RawRecord(number, json.loads(line))
        except json.JSONDecodeError as exc:
            yield RawRecord(number, error=_json_error(exc))


def _read_json_array(text: str) -> Iterator[RawRecord]:
    """Decode the array element by element so that each record keeps the line it starts on."""
    newlines = [i for i, char in enumerate(text) if char == "\n"]

    def line_of(offset: int) -> int:
        return bisect.bisect_left(newlines, offset) + 1

    decoder = json.JSONDecoder()
    index = text.index("[") + 1
    expect_value = True
    while True:
        while index < len(text) and text[index] in " \t\r\n":
            index += 1
        if index >= len(text):
            yield RawRecord(line_of(index), error="invalid JSON: unterminated array")
            return
        if text[index] == "]":
            return
        if text[index] == "," and not expect_value:
            index += 1
            expect_value = True
            continue
        try:
            value, end = decoder.raw_decode(text, index)
        except json.JSONDecodeError as exc:
            # Past a syntax error inside an array there is no reliable way to resynchronise.
            yield RawRecord(line_of(exc.pos), error=_json_error(exc))
            return
        if not expect_value:
            yield RawRecord(line_of(index), error="invalid JSON: missing ',' between records")
            return
        yield RawRecord(line_of(index), value)
        index = end
        expect_value = False


def read_records(text: str) -> Iterator[RawRecord]:
    """JSON array if the first non-blank character is `[`, else JSON Lines."""
    if text.lstrip().startswith("["):
        return _read_json_array(text)
    return _read_jsonl(text)
