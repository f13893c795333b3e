"""The normalised form every input format is converted into."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True)
class Message:
    role: Role
    content: str


@dataclass(frozen=True)
class Conversation:
    """One training example: a chat that ends with an assistant turn."""

    messages: tuple[Message, ...]
    line: int  # 1-based line of the record in its file, for messages and reports

    def as_dicts(self) -> list[dict[str, str]]:
        """The shape `tokenizer.apply_chat_template` takes."""
        return [{"role": m.role, "content": m.content} for m in self.messages]

    def identity(self) -> str:
        """Canonical text of the content, used for duplicate detection and the seeded split."""
        return json.dumps(
            [[m.role, m.content] for m in self.messages], ensure_ascii=False, separators=(",", ":")
        )


@dataclass(frozen=True)
class Issue:
    """One problem with one record, printed as `file:line: field: problem`."""

    file: str
    line: int
    field: str
    problem: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.field}: {self.problem}"
