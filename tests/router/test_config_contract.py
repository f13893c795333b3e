"""One contract: the Go router accepts exactly the RouterConfig documents the pydantic model accepts.

The model is the source of truth; its JSON Schema (generated, checked in under router/, embedded in the
binary) must be current, and a corpus of valid and invalid documents (every example ModelDeployment's
rendered config among them) must get the same verdict from both, with the same defaults applied.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError
from tests.router.fakes import REPO, router_binary

from kubetune import routerschema
from kubetune.api.routerconfig import RouterConfig, parse_router_config
from kubetune.builders.router import build_router_config

V = {"name": "a", "weight": 100, "endpoints": ["http://a:8000/"]}


def doc(**fields: Any) -> dict[str, Any]:
    return {"variants": [V], **fields}


def variant(**fields: Any) -> dict[str, Any]:
    return {"variants": [{**V, **fields}]}


def example_configs() -> list[dict[str, Any]]:
    """The router config the operator renders for every ModelDeployment in examples/."""
    out = []
    for path in sorted((REPO / "examples").glob("*.yaml")):
        for manifest in yaml.safe_load_all(path.read_text()):
            if not manifest or manifest.get("kind") != "ModelDeployment":
                continue
            manifest["metadata"].setdefault("namespace", "default")
            names = [v["name"] for v in manifest["spec"]["variants"]]
            weights = {n: (100 if i == 0 else 0) for i, n in enumerate(names)}
            config = build_router_config(manifest, weights, {n: True for n in names})
            out.append(json.loads(config.to_json()))
    return out


DOCS_EXAMPLE = {
    "variants": [
        {"name": "stable", "weight": 90, "endpoints": ["http://chat-stable.ml.svc:8000"]},
        {
            "name": "canary",
            "weight": 10,
            "endpoints": ["http://chat-base.ml.svc:8000"],
            "servedModel": "support-lora-v2",
            "ready": True,
        },
    ],
    "stickyHeader": "x-user-id",
    "overrideHeader": "x-kubetune-variant",
    "syntheticHeader": "x-kubetune-synthetic",
    "maxBodyBytes": 8388608,
    "maxAttempts": 3,
    "endpointCooldownS": 5,
    "timeouts": {"connectS": 5, "readS": 300, "totalS": None},
}

VALID: list[Any] = [
    DOCS_EXAMPLE,
    doc(),
    {"variants": [{"name": "a", "weight": 0}]},
    doc(stickyHeader=None),
    doc(modelDeployment="chat", maxBodyBytes=1024, maxAttempts=10, endpointCooldownS=0),
    doc(timeouts={"connectS": 0.5, "readS": 3600, "totalS": 86400}),
    doc(timeouts={}),
    doc(modelDeployment=None),
    variant(servedModel=None, ready=False, endpoints=[]),
    variant(endpoints=["https://x", "http://y:1/v/"]),
    variant(name="a" * 40),
    doc(stickyHeader="X-Api_Key.v2~!#$%&'*+^`|"),
    {"variants": [{"name": f"v{i}", "weight": 6} for i in range(16)]},
    *example_configs(),
]

INVALID: list[Any] = [
    {"variants": []},
    {},
    [1, 2],
    "variants",
    None,
    {"variants": [{"name": "a", "weight": 101}]},
    {"variants": [{"name": "a", "weight": -1}]},
    {"variants": [{"name": "a", "weight": 50}, {"name": "a", "weight": 50}]},
    {"variants": [{"name": "a", "weight": 1, "endpoints": ["ftp://x"]}]},
    {"variants": [{"name": "a", "weight": 1, "endpoints": ["HTTP://x"]}]},
    {"variants": [{"name": "a", "weight": 1}], "stickyHeader": "bad header"},
    {"variants": [{"name": "a", "weight": 1}], "stickyHeader": ""},
    {"variants": [{"name": "a", "weight": 1}], "overrideHeader": None},
    {"variants": [{"name": "a", "weight": 1}], "typo": 1},
    {"variants": [{"name": "a", "weight": 1}], "max_attempts": 2},
    {"variants": [{"name": "a", "weight": 1}], "MaxAttempts": 2},
    {"variants": [{"name": "a", "weight": "1"}]},
    {"variants": [{"name": "a", "weight": 1.0}]},
    {"variants": [{"name": "a", "weight": True}]},
    {"variants": [{"name": "a", "weight": 1, "ready": "true"}]},
    {"variants": [{"name": "a", "weight": 1, "ready": 1}]},
    {"variants": [{"name": "A", "weight": 1}]},
    {"variants": [{"name": "a-", "weight": 1}]},
    {"variants": [{"name": "a\n", "weight": 1}]},
    {"variants": [{"name": "a" * 41, "weight": 1}]},
    {"variants": [{"name": "a", "weight": 1, "endpoints": "http://a"}]},
    {"variants": [{"name": "a", "weight": 1, "servedModel": "m" * 257}]},
    {"variants": [{"name": "a", "weight": 1, "extra": 1}]},
    {"variants": [{"weight": 1}]},
    {"variants": [{"name": f"v{i}", "weight": 6} for i in range(17)]},
    doc(maxBodyBytes=1023),
    doc(maxBodyBytes="8388608"),
    doc(maxAttempts=0),
    doc(maxAttempts=11),
    doc(endpointCooldownS=-1),
    doc(endpointCooldownS="5"),
    doc(timeouts={"connectS": 0}),
    doc(timeouts={"readS": 3601}),
    doc(timeouts={"totalS": 0}),
    doc(timeouts={"connectS": True}),
    doc(timeouts={"typo": 1}),
    doc(timeouts=None),
    doc(modelDeployment="m" * 254),
    doc(modelDeployment=5),
]


def go_verdict(tmp_path: Path, document: Any) -> tuple[bool, Any]:
    path = tmp_path / "router.json"
    path.write_text(json.dumps(document))
    done = subprocess.run(
        [str(router_binary()), "--config", str(path), "--check-config"],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert done.returncode in (0, 1), done.stderr
    return done.returncode == 0, json.loads(done.stdout) if done.returncode == 0 else done.stderr


def test_schema_is_current() -> None:
    path = REPO / routerschema.SCHEMA_PATH
    assert path.read_text() == routerschema.render(routerschema.router_config_schema()), (
        f"{path} is stale: run `make manifests`"
    )


def test_every_example_modeldeployment_is_in_the_corpus() -> None:
    assert len(example_configs()) >= 4


@pytest.mark.parametrize("document", VALID, ids=lambda d: json.dumps(d)[:60])
def test_valid_documents_are_accepted_with_the_same_defaults(tmp_path: Path, document: Any) -> None:
    model = parse_router_config(json.dumps(document))
    accepted, normalised = go_verdict(tmp_path, document)
    assert accepted, normalised
    assert normalised == json.loads(model.to_json())


@pytest.mark.parametrize("document", INVALID, ids=lambda d: json.dumps(d)[:60])
def test_invalid_documents_are_rejected_by_both(tmp_path: Path, document: Any) -> None:
    with pytest.raises((ValidationError, ValueError)):
        parse_router_config(json.dumps(document))
    accepted, output = go_verdict(tmp_path, document)
    assert not accepted, f"the router accepted what the model rejects: {output}"


def test_the_model_round_trips_and_is_byte_stable() -> None:
    config = parse_router_config(json.dumps(doc()))
    assert config.variants[0].endpoints == ("http://a:8000",)
    again = parse_router_config(config.to_json())
    assert again == config
    assert again.to_json() == config.to_json()
    assert isinstance(RouterConfig.model_validate(doc()), RouterConfig)
