"""Typed API models → CustomResourceDefinitions (`make manifests`).

pydantic emits JSON Schema 2020-12; Kubernetes wants a structural OpenAPI v3.0
schema. The post-processing here inlines $refs, unwraps Optional, drops titles
and `additionalProperties: false`, converts exclusive bounds to OpenAPI 3.0
booleans and replaces object defaults with `{}` so nested defaults apply.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from kubetune.api import finetunejob, finetuneschedule, modeldeployment
from kubetune.api.common import GROUP, VERSION

CATEGORY = "kubetune"

Schema = dict[str, Any]


def _resolve(node: Any, defs: dict[str, Schema]) -> Any:
    if isinstance(node, list):
        return [_resolve(n, defs) for n in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = _resolve(defs[node["$ref"].rsplit("/", 1)[-1]], defs)
        siblings = {k: v for k, v in node.items() if k != "$ref"}
        # The field's own rules (e.g. immutability) add to the model's rules rather than replace them.
        return _merge(_resolve(siblings, defs), target)
    return {k: _resolve(v, defs) for k, v in node.items()}


def _merge(outer: Schema, inner: Schema) -> Schema:
    """Fold a wrapper (description/default/extensions) onto the schema it wraps."""
    merged = dict(inner)
    for key, value in outer.items():
        if key == "x-kubernetes-validations" and key in merged:
            merged[key] = [*merged[key], *value]
        else:
            merged[key] = value
    return merged


def _defaults_for_nested_objects(node: Schema) -> None:
    """Give optional, non-nullable object properties `default: {}` (pydantic omits default_factory)."""
    required = set(node.get("required", []))
    for key, child in node.get("properties", {}).items():
        nullable = any(o.get("type") == "null" for o in child.get("anyOf", []))
        if key not in required and not nullable and "properties" in child and "default" not in child:
            child["default"] = {}


def _structural(node: Any) -> Any:
    if isinstance(node, list):
        return [_structural(n) for n in node]
    if not isinstance(node, dict):
        return node
    node = dict(node)
    if "properties" in node:
        node["properties"] = {k: dict(v) for k, v in node["properties"].items()}
        _defaults_for_nested_objects(node)
    for variant_key in ("anyOf", "oneOf"):
        options = node.get(variant_key)
        if options is None:
            continue
        non_null = [o for o in options if o.get("type") != "null"]
        if len(non_null) == 1:
            node.pop(variant_key)
            node = _merge(node, non_null[0])
    if "allOf" in node and len(node["allOf"]) == 1:
        node = _merge({k: v for k, v in node.items() if k != "allOf"}, node["allOf"][0])
    node.pop("title", None)
    if "properties" in node:
        node.pop("additionalProperties", None)
        node["type"] = "object"
    if node.get("x-kubernetes-int-or-string"):
        node.pop("type", None)
        node.pop("anyOf", None)
    for bound, base in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if isinstance(node.get(bound), int | float) and not isinstance(node.get(bound), bool):
            node[base] = node[bound]
            node[bound] = True
    if "default" in node and node["default"] is None:
        node.pop("default")
    if node.get("type") == "object" and "properties" in node and "default" in node:
        # Nested defaults only apply when the object exists; `{}` makes them apply.
        node["default"] = {}
    if node.get("type") == "object" and "properties" not in node and "additionalProperties" not in node:
        node["x-kubernetes-preserve-unknown-fields"] = True
    return {
        k: _structural(v) if k not in ("default", "enum", "x-kubernetes-validations") else v
        for k, v in node.items()
    }


def openapi_schema(model: type[BaseModel]) -> Schema:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    schema: Schema = _structural(_resolve(raw, defs))
    return schema


def without_transition_rules(node: Any) -> Any:
    """The schema with every CEL rule that reads `oldSelf` removed.

    A FineTuneJob's spec is immutable once created, but the same spec as a schedule's job template is
    edited freely: each run gets a copy, and the copy is what must not change.
    """
    if isinstance(node, list):
        return [without_transition_rules(n) for n in node]
    if not isinstance(node, dict):
        return node
    result = {}
    for key, value in node.items():
        if key == "x-kubernetes-validations":
            kept = [rule for rule in value if "oldSelf" not in rule["rule"]]
            if kept:
                result[key] = kept
        elif key in ("default", "enum"):
            result[key] = value
        else:
            result[key] = without_transition_rules(value)
    return result


def _object_schema(
    model: type[BaseModel], *, spec: type[BaseModel], status: type[BaseModel], description: str
) -> Schema:
    # Rules on the whole object (e.g. on metadata.name) come from the object model's own config.
    extra = model.model_config.get("json_schema_extra")
    rules = extra.get("x-kubernetes-validations") if isinstance(extra, dict) else None
    return {
        "type": "object",
        "description": description,
        **({"x-kubernetes-validations": rules} if rules else {}),
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string", "description": "kubetune.io/v1alpha1."},
            "kind": {"type": "string", "description": model.__name__ + "."},
            # The API server rejects anything but `type` here: metadata is implicitly specified.
            "metadata": {"type": "object"},
            "spec": {**openapi_schema(spec), "description": (spec.__doc__ or "").strip()},
            "status": {**openapi_schema(status), "description": (status.__doc__ or "").strip()},
        },
    }


def crd(
    *,
    kind: str,
    plural: str,
    short_names: list[str],
    model: type[BaseModel],
    spec: type[BaseModel],
    status: type[BaseModel],
    columns: list[dict[str, Any]],
    description: str,
) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.{GROUP}",
            "labels": {"app.kubernetes.io/name": "kubetune", "app.kubernetes.io/part-of": "kubetune"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": short_names,
                "categories": [CATEGORY],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                    "schema": {
                        "openAPIV3Schema": _object_schema(
                            model, spec=spec, status=status, description=description
                        )
                    },
                }
            ],
        },
    }


def all_crds() -> dict[str, dict[str, Any]]:
    """File name → CRD, in a stable order."""
    age = {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}
    # The Ready condition's reason and message say what the object waits for or why it is stuck.
    why: list[dict[str, Any]] = [
        {
            "name": "Reason",
            "type": "string",
            "jsonPath": '.status.conditions[?(@.type=="Ready")].reason',
            "description": "Why the object is (not) Ready: what it waits for, or what blocks it.",
        },
        {
            "name": "Message",
            "type": "string",
            "jsonPath": '.status.conditions[?(@.type=="Ready")].message',
            "priority": 1,
        },
    ]
    return {
        f"{GROUP}_{finetunejob.PLURAL}.yaml": crd(
            kind=finetunejob.KIND,
            plural=finetunejob.PLURAL,
            short_names=["ftj"],
            model=finetunejob.FineTuneJob,
            spec=finetunejob.FineTuneJobSpec,
            status=finetunejob.FineTuneJobStatus,
            description="A supervised fine-tuning run: dataset and base model in, evaluated artifact out.",
            columns=[*finetunejob.PRINTER_COLUMNS, *why, age],
        ),
        f"{GROUP}_{modeldeployment.PLURAL}.yaml": crd(
            kind=modeldeployment.KIND,
            plural=modeldeployment.PLURAL,
            short_names=["mdep"],
            model=modeldeployment.ModelDeployment,
            spec=modeldeployment.ModelDeploymentSpec,
            status=modeldeployment.ModelDeploymentStatus,
            description="Model variants served by vLLM, weighted traffic and a metric-gated canary.",
            columns=[
                {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
                {
                    "name": "Ready",
                    "type": "string",
                    "jsonPath": ".status.readyVariants",
                    "description": "Ready variants / variants.",
                },
                {"name": "Weights", "type": "string", "jsonPath": ".status.weights"},
                {"name": "Canary-Step", "type": "integer", "jsonPath": ".status.canary.step", "priority": 1},
                {"name": "Endpoint", "type": "string", "jsonPath": ".status.endpoint", "priority": 1},
                *why,
                age,
            ],
        ),
        f"{GROUP}_{finetuneschedule.PLURAL}.yaml": schedule_crd(age, why),
    }


def schedule_crd(age: dict[str, Any], why: list[dict[str, Any]]) -> dict[str, Any]:
    definition = crd(
        kind=finetuneschedule.KIND,
        plural=finetuneschedule.PLURAL,
        short_names=["fts"],
        model=finetuneschedule.FineTuneSchedule,
        spec=finetuneschedule.FineTuneScheduleSpec,
        status=finetuneschedule.FineTuneScheduleStatus,
        description="FineTuneJobs on a cron schedule (CronJob semantics), each run's outcome in status.",
        columns=[
            {"name": "Schedule", "type": "string", "jsonPath": ".spec.schedule"},
            {"name": "Suspend", "type": "boolean", "jsonPath": ".spec.suspend"},
            {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
            {"name": "Last-Schedule", "type": "date", "jsonPath": ".status.lastScheduleTime"},
            {"name": "Last-Success", "type": "date", "jsonPath": ".status.lastSuccessfulTime", "priority": 1},
            {
                "name": "Latest-Good",
                "type": "string",
                "jsonPath": ".status.latestGoodRun",
                "description": "The newest run that succeeded and passed its gate.",
                "priority": 1,
            },
            *why,
            age,
        ],
    )
    version = definition["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    template = version["properties"]["spec"]["properties"]["jobTemplate"]
    version["properties"]["spec"]["properties"]["jobTemplate"] = without_transition_rules(template)
    return definition


def render(crd_obj: dict[str, Any]) -> str:
    header = "# Generated by `make manifests` from operator/kubetune/api; do not edit.\n"
    return header + yaml.safe_dump(crd_obj, sort_keys=False, width=120)


def write(out_dirs: list[Path]) -> list[Path]:
    written = []
    for out in out_dirs:
        out.mkdir(parents=True, exist_ok=True)
        for name, obj in all_crds().items():
            path = out / name
            path.write_text(render(obj))
            written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", nargs="+", type=Path, help="directories to write the CRDs into")
    args = parser.parse_args(argv)
    for path in write(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
