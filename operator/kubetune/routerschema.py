"""`RouterConfig` → the JSON Schema the Go router validates its config file with (`make manifests`).

The pydantic model stays the source of truth: the router (router/, Go) embeds this file and checks every
config it loads against it before decoding, so both sides reject the same documents. Cross-field rules a
schema cannot state (unique variant names) are checked by the router's code and covered by the
conformance corpus in tests/router/test_config_contract.py.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from kubetune.api.routerconfig import RouterConfig

SCHEMA_PATH = Path("router/internal/config/routerconfig.schema.json")
"""Relative to the repository root; the Go package embeds it from there."""


def router_config_schema() -> dict[str, Any]:
    schema = RouterConfig.model_json_schema(by_alias=True, mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("output", type=Path, nargs="?", default=SCHEMA_PATH, help="Where to write it.")
    args = parser.parse_args(argv)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(render(router_config_schema()))


if __name__ == "__main__":
    main()
