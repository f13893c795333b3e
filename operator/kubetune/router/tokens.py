"""Output token counting from OpenAI responses, as pure functions over bytes."""

from __future__ import annotations

import json
from typing import Any


def usage_completion_tokens(document: Any) -> int | None:
    """`usage.completion_tokens` of a parsed OpenAI response or stream chunk, if present."""
    if not isinstance(document, dict):
        return None
    usage = document.get("usage")
    if not isinstance(usage, dict):
        return None
    tokens = usage.get("completion_tokens")
    return tokens if isinstance(tokens, int) and tokens >= 0 else None


def completion_tokens_of_body(body: bytes) -> int | None:
    """Tokens reported by a non-streaming response body; None when it says nothing usable."""
    if b'"usage"' not in body:
        return None
    try:
        return usage_completion_tokens(json.loads(body))
    except ValueError:
        return None


class SseTokenCounter:
    """Counts output tokens of an SSE stream fed in arbitrary chunks.

    The usage field (sent last when the client asked for `stream_options.include_usage`) wins; otherwise each
    `data:` event carrying choices counts as one token, which is what vLLM emits per decoding step.
    """

    __slots__ = ("_chunks", "_tail", "_usage")

    def __init__(self) -> None:
        self._tail = b""
        self._chunks = 0
        self._usage: int | None = None

    def feed(self, chunk: bytes) -> None:
        data = self._tail + chunk
        lines = data.split(b"\n")
        self._tail = lines.pop()
        for line in lines:
            self._line(line.rstrip(b"\r"))

    def _line(self, line: bytes) -> None:
        if not line.startswith(b"data:"):
            return
        payload = line[5:].strip()
        if not payload or payload == b"[DONE]":
            return
        if b'"usage"' in payload:
            try:
                tokens = usage_completion_tokens(json.loads(payload))
            except ValueError:
                tokens = None
            if tokens is not None:
                self._usage = tokens
        if b'"choices":[]' not in payload.replace(b" ", b"") and b'"choices"' in payload:
            self._chunks += 1

    @property
    def tokens(self) -> int:
        if self._tail:
            self._line(self._tail.rstrip(b"\r"))
            self._tail = b""
        return self._usage if self._usage is not None else self._chunks
