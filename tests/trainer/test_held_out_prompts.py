"""The trainer publishes a few held-out prompts; the smoke test of a variant serving its output uses them."""

from __future__ import annotations

import pytest

from kubetune.trainer.data.prompts import held_out_prompts
from kubetune.trainer.data.records import Conversation, Message


def chat(*turns: tuple[str, str], line: int = 1) -> Conversation:
    return Conversation(messages=tuple(Message(role, content) for role, content in turns), line=line)


@pytest.mark.parametrize(
    ("conversations", "limit", "max_chars", "expected"),
    [
        ([], 4, 256, []),
        ([chat(("user", "What is 2+2?"), ("assistant", "4"))], 4, 256, ["What is 2+2?"]),
        # multi-turn: the last user turn is what the model answered
        (
            [
                chat(
                    ("system", "Be brief."),
                    ("user", "Hi"),
                    ("assistant", "Hello"),
                    ("user", "Bye?"),
                    ("assistant", "Bye."),
                )
            ],
            4,
            256,
            ["Bye?"],
        ),
        ([chat(("user", f"q{i}"), ("assistant", "a")) for i in range(6)], 4, 256, ["q0", "q1", "q2", "q3"]),
        ([chat(("user", "x" * 300), ("assistant", "a"))], 4, 10, ["x" * 10]),
        (
            [chat(("user", "   "), ("assistant", "a")), chat(("user", "real"), ("assistant", "b"))],
            4,
            256,
            ["real"],
        ),
    ],
)
def test_held_out_prompts(
    conversations: list[Conversation], limit: int, max_chars: int, expected: list[str]
) -> None:
    assert held_out_prompts(conversations, limit=limit, max_chars=max_chars) == expected
