"""crds/ is generated from the typed models and must be structural and documented."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubetune import crdgen

REPO = Path(__file__).resolve().parents[2]
GENERATED = crdgen.all_crds()


@pytest.mark.parametrize("directory", ["crds", "charts/kubetune/crds"])
@pytest.mark.parametrize("name", sorted(GENERATED))
def test_committed_crds_match_the_models(directory: str, name: str) -> None:
    path = REPO / directory / name
    assert path.exists(), f"{path} missing: run `make manifests`"
    assert path.read_text() == crdgen.render(GENERATED[name]), f"{path} is stale: run `make manifests`"


def walk(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, schema
    for key, sub in schema.get("properties", {}).items():
        yield from walk(sub, f"{path}.{key}")
    if "items" in schema:
        yield from walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from walk(schema["additionalProperties"], f"{path}{{}}")


def schemas() -> Iterator[tuple[str, str, dict[str, Any]]]:
    for name, crd in GENERATED.items():
        root = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        for path, node in walk(root):
            yield name, path, node


ALL_NODES = list(schemas())


def test_every_field_has_a_description() -> None:
    missing = [
        f"{crd}:{path}"
        for crd, path, node in ALL_NODES
        if path not in ("", ".metadata") and not path.endswith(("[]", "{}")) and not node.get("description")
    ]
    assert not missing, missing


@pytest.mark.parametrize("forbidden", ["$ref", "anyOf", "oneOf", "allOf", "title", "$defs", "const"])
def test_schema_is_structural(forbidden: str) -> None:
    offenders = [f"{crd}:{path}" for crd, path, node in ALL_NODES if forbidden in node]
    assert not offenders, offenders


def test_every_node_has_a_type() -> None:
    untyped = [
        f"{crd}:{path}"
        for crd, path, node in ALL_NODES
        if "type" not in node and not node.get("x-kubernetes-int-or-string")
    ]
    assert not untyped, untyped


def test_objects_do_not_mix_properties_and_additional_properties() -> None:
    mixed = [
        f"{crd}:{path}"
        for crd, path, node in ALL_NODES
        if "properties" in node and "additionalProperties" in node
    ]
    assert not mixed, mixed


def test_exclusive_bounds_are_openapi_v3_booleans() -> None:
    lr = GENERATED["kubetune.io_finetunejobs.yaml"]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    node = lr["properties"]["spec"]["properties"]["hyperparameters"]["properties"]["learningRate"]
    assert node["minimum"] == 0
    assert node["exclusiveMinimum"] is True


@pytest.mark.parametrize(
    ("crd", "short", "columns"),
    [
        ("kubetune.io_finetunejobs.yaml", "ftj", {"Phase", "Progress", "Loss", "Age"}),
        ("kubetune.io_modeldeployments.yaml", "mdep", {"Phase", "Ready", "Weights", "Age"}),
    ],
)
def test_names_and_printer_columns(crd: str, short: str, columns: set[str]) -> None:
    spec = GENERATED[crd]["spec"]
    assert spec["names"]["shortNames"] == [short]
    assert spec["names"]["categories"] == ["kubetune"]
    version = spec["versions"][0]
    assert version["subresources"] == {"status": {}}
    assert columns <= {c["name"] for c in version["additionalPrinterColumns"]}


def test_conditions_are_a_map_keyed_by_type() -> None:
    for crd, path, node in ALL_NODES:
        if path.endswith(".conditions"):
            assert node["x-kubernetes-list-type"] == "map", (crd, path)
            assert node["x-kubernetes-list-map-keys"] == ["type"], (crd, path)


def test_object_defaults_let_nested_defaults_apply() -> None:
    for crd, path, node in ALL_NODES:
        if node.get("type") == "object" and "default" in node:
            assert node["default"] == {}, (crd, path)
            assert not node.get("required"), f"{crd}:{path} defaults to {{}} but has required fields"


def test_rendered_yaml_round_trips() -> None:
    for name, crd in GENERATED.items():
        assert yaml.safe_load(crdgen.render(crd)) == crd, name
