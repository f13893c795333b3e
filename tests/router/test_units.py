"""Pure pieces of the router: config parsing, model rewrite, token counting, the CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from pydantic import ValidationError

from kubetune.api.routerconfig import RouterConfig, parse_router_config
from kubetune.router.proxy import rewrite_model
from kubetune.router.tokens import SseTokenCounter, completion_tokens_of_body

VALID = {"variants": [{"name": "a", "weight": 100, "endpoints": ["http://a:8000/"]}]}


def test_config_round_trips_and_is_byte_stable() -> None:
    config = parse_router_config(json.dumps(VALID))
    assert config.variants[0].endpoints == ("http://a:8000",)
    again = parse_router_config(config.to_json())
    assert again == config
    assert again.to_json() == config.to_json()
    assert parse_router_config("variants:\n- {name: a, weight: 100}\n").variants[0].name == "a"


@pytest.mark.parametrize(
    "document",
    [
        {"variants": []},
        {"variants": [{"name": "a", "weight": 101}]},
        {"variants": [{"name": "a", "weight": 50}, {"name": "a", "weight": 50}]},
        {"variants": [{"name": "a", "weight": 1, "endpoints": ["ftp://x"]}]},
        {"variants": [{"name": "a", "weight": 1}], "stickyHeader": "bad header"},
        {"variants": [{"name": "a", "weight": 1}], "typo": 1},
    ],
)
def test_invalid_configs_are_rejected(document: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        RouterConfig.model_validate(document)


def test_non_mapping_config_is_rejected() -> None:
    with pytest.raises(ValueError, match="mapping"):
        parse_router_config("[1, 2]")


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"model":"base","x":1}', {"model": "lora", "x": 1}),
        (b'{"x":1}', {"model": "lora", "x": 1}),
        (b'{"model":"lora"}', {"model": "lora"}),
    ],
)
def test_rewrite_model(body: bytes, expected: dict[str, object]) -> None:
    assert json.loads(rewrite_model(body, "lora")) == expected


@pytest.mark.parametrize("body", [b"not json", b"[1,2]"])
def test_rewrite_model_leaves_non_objects_alone(body: bytes) -> None:
    assert rewrite_model(body, "lora") == body


def sse(*events: str) -> bytes:
    return "".join(f"data: {e}\n\n" for e in events).encode()


@pytest.mark.parametrize(
    ("stream", "split_every", "tokens"),
    [
        (
            sse(
                '{"choices":[{"delta":{"content":"a"}}]}', '{"choices":[{"delta":{"content":"b"}}]}', "[DONE]"
            ),
            7,
            2,
        ),
        (
            sse(
                '{"choices":[{"delta":{"content":"a"}}]}',
                '{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":9}}',
                "[DONE]",
            ),
            5,
            9,
        ),
        (b": keep-alive\n\n" + sse('{"choices":[{"text":"x"}]}'), 1, 1),
        (b'data: {"choices":[{"text":"x"}]}\r\n\r\ndata: [DONE]\r\n\r\n', 3, 1),
        (b'data: {"choices":[{"text":"x"}]}', 1000, 1),
    ],
)
def test_sse_token_counter_handles_any_chunking(stream: bytes, split_every: int, tokens: int) -> None:
    counter = SseTokenCounter()
    for start in range(0, len(stream), split_every):
        counter.feed(stream[start : start + split_every])
    assert counter.tokens == tokens


@pytest.mark.parametrize(
    ("body", "tokens"),
    [
        (b'{"usage":{"completion_tokens":7}}', 7),
        (b'{"choices":[]}', None),
        (b'{"usage":{"completion_tokens":"x"}}', None),
        (b'{"usage": broken', None),
    ],
)
def test_completion_tokens_of_body(body: bytes, tokens: int | None) -> None:
    assert completion_tokens_of_body(body) == tokens


def test_cli_help_is_fast_and_imports_no_server() -> None:
    code = (
        "import sys; from kubetune.router.__main__ import parse_args\n"
        "try:\n    parse_args(['--help'])\nexcept SystemExit:\n    pass\n"
        "assert 'aiohttp' not in sys.modules, 'help must not import the server'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "--config" in result.stdout
