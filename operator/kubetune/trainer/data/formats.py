"""The supported record formats, their detection, and their conversion to `Conversation`."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, cast

from kubetune.api.finetunejob import DatasetFormat
from kubetune.trainer.data.clean import clean_text
from kubetune.trainer.data.records import Conversation, Message, Role

# A converter returns the conversation, or (field, problem) pairs for everything wrong with the record.
Problems = list[tuple[str, str]]
Converter = Callable[[Mapping[str, Any], int], "Conversation | Problems"]

SHAREGPT_ROLES: dict[str, Role] = {
    "system": "system",
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
}


def _text(record: Mapping[str, Any], field: str, problems: Problems, *, required: bool = True) -> str:
    """Fetch a cleaned string field, recording what is wrong with it."""
    if field not in record or record[field] is None:
        if required:
            problems.append((field, "missing field"))
        return ""
    value = record[field]
    if not isinstance(value, str):
        problems.append((field, f"expected a string, got {type(value).__name__}"))
        return ""
    text = clean_text(value)
    if required and not text.strip():
        problems.append((field, "empty"))
    return text


def _join(*parts: str) -> str:
    return "\n\n".join(p for p in parts if p.strip())


def _alpaca(record: Mapping[str, Any], line: int) -> Conversation | Problems:
    problems: Problems = []
    instruction = _text(record, "instruction", problems)
    extra_input = _text(record, "input", problems, required=False)
    output = _text(record, "output", problems)
    if problems:
        return problems
    return Conversation(
        (Message("user", _join(instruction, extra_input)), Message("assistant", output)), line
    )


def _instruction_response(record: Mapping[str, Any], line: int) -> Conversation | Problems:
    problems: Problems = []
    instruction = _text(record, "instruction", problems)
    context = _text(record, "context", problems, required=False)
    _text(record, "category", problems, required=False)
    response = _text(record, "response", problems)
    if problems:
        return problems
    return Conversation((Message("user", _join(instruction, context)), Message("assistant", response)), line)


def _check_turns(roles: list[Role], field: str) -> Problems:
    """An optional leading system message, then user/assistant alternating, ending with assistant."""
    problems: Problems = []
    expected: Role = "user"
    for index, role in enumerate(roles):
        if role == "system":
            if index != 0:
                problems.append((f"{field}[{index}]", "a system message is only allowed first"))
            continue
        if role != expected:
            previous = roles[index - 1] if index else "start"
            problems.append((f"{field}[{index}]", f"expected {expected} after {previous}, got {role}"))
            return problems
        expected = "assistant" if role == "user" else "user"
    if not problems and (not roles or roles[-1] != "assistant"):
        last = roles[-1] if roles else "nothing"
        problems.append((field, f"must end with an assistant message, ends with {last}"))
    return problems


def _turns(
    record: Mapping[str, Any],
    line: int,
    field: str,
    role_key: str,
    content_key: str,
    roles: Mapping[str, Role],
) -> Conversation | Problems:
    problems: Problems = []
    raw = record.get(field)
    if raw is None:
        return [(field, "missing field")]
    if not isinstance(raw, list):
        return [(field, f"expected a list, got {type(raw).__name__}")]
    if not raw:
        return [(field, "empty")]
    messages: list[Message] = []
    for index, item in enumerate(raw):
        where = f"{field}[{index}]"
        if not isinstance(item, dict):
            problems.append((where, f"expected an object, got {type(item).__name__}"))
            continue
        role_value = item.get(role_key)
        if not isinstance(role_value, str) or role_value not in roles:
            allowed = ", ".join(sorted(roles))
            problems.append(
                (f"{where}.{role_key}", f"unknown role {role_value!r} (expected one of {allowed})")
            )
            continue
        item_problems: Problems = []
        content = _text(item, content_key, item_problems)
        problems.extend((f"{where}.{name}", problem) for name, problem in item_problems)
        messages.append(Message(roles[role_value], content))
    if problems:
        return problems
    problems = _check_turns([m.role for m in messages], field)
    return problems or Conversation(tuple(messages), line)


def _messages(record: Mapping[str, Any], line: int) -> Conversation | Problems:
    roles: dict[str, Role] = {"system": "system", "user": "user", "assistant": "assistant"}
    return _turns(record, line, "messages", "role", "content", roles)


def _sharegpt(record: Mapping[str, Any], line: int) -> Conversation | Problems:
    return _turns(record, line, "conversations", "from", "value", SHAREGPT_ROLES)


CONVERTERS: dict[DatasetFormat, Converter] = {
    DatasetFormat.ALPACA: _alpaca,
    DatasetFormat.INSTRUCTION_RESPONSE: _instruction_response,
    DatasetFormat.MESSAGES: _messages,
    DatasetFormat.SHAREGPT: _sharegpt,
}

# Checked in order: the first format whose keys a record has wins.
_SIGNATURES: list[tuple[DatasetFormat, frozenset[str]]] = [
    (DatasetFormat.MESSAGES, frozenset({"messages"})),
    (DatasetFormat.SHAREGPT, frozenset({"conversations"})),
    (DatasetFormat.ALPACA, frozenset({"instruction", "output"})),
    (DatasetFormat.INSTRUCTION_RESPONSE, frozenset({"instruction", "response"})),
]


def detect_format(record: object) -> DatasetFormat | None:
    if not isinstance(record, dict):
        return None
    keys = set(cast(dict[str, Any], record))
    for fmt, required in _SIGNATURES:
        if required <= keys:
            return fmt
    return None


def convert(record: object, line: int, fmt: DatasetFormat) -> Conversation | Problems:
    if not isinstance(record, dict):
        return [("record", f"expected a JSON object, got {type(record).__name__}")]
    return CONVERTERS[fmt](cast(dict[str, Any], record), line)
