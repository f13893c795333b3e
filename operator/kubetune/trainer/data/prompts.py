"""Held-out prompts the operator's serving smoke test sends to a model trained on this data."""

from __future__ import annotations

from collections.abc import Sequence

from kubetune.trainer.data.records import Conversation


def held_out_prompts(
    conversations: Sequence[Conversation], *, limit: int = 4, max_chars: int = 256
) -> list[str]:
    """The last user turn of the first test conversations, short enough for the termination message."""
    prompts: list[str] = []
    for conversation in conversations:
        user_turns = [m.content for m in conversation.messages if m.role == "user" and m.content.strip()]
        if user_turns:
            prompts.append(user_turns[-1][:max_chars])
        if len(prompts) == limit:
            break
    return prompts
