"""Property: every spec the API server accepts renders children the API server accepts, and every spec
it rejects is rejected naming a field.

Specs are generated from the typed models' own schema (`kubetune.crdgen.openapi_schema`): a valid base
object with one to three leaves replaced by values drawn from the leaf's schema (its pattern, bounds
and enum, one step past the bounds, and a few values known to hurt: spaces, `../`, `0s`, negative
quantities, reserved vLLM flags). An accepted spec is parsed by the operator's models, rendered by the
builders the reconcilers use, and every child is created with `dryRun=All` and strict field
validation. Failures are collected, not raised one by one, so a run reports how many generated specs
found a bug; `KUBETUNE_PROPERTY_EXAMPLES` raises the count for a deeper run (CI keeps it modest, with a
derandomized, fixed sequence).
"""

from __future__ import annotations

import asyncio
import copy
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from tests.support.cluster import Kube
from tests.support.manifests import minimal_ftj

from kubetune.api.finetunejob import FineTuneJobSpec
from kubetune.api.modeldeployment import ModelDeploymentSpec
from kubetune.builders.finetunejob import build_children
from kubetune.builders.modeldeployment import build_variant_children
from kubetune.builders.networkpolicy import Peers, build_vllm_network_policy
from kubetune.builders.router import build_router_children, build_router_config, build_router_token_secret
from kubetune.crdgen import openapi_schema
from kubetune.kube.client import ApiError, KubeClient, load_credentials, resource_path
from kubetune.reconcile.traffic import router_settings
from kubetune.serving.resolution import resolve_variant_model
from kubetune.settings import RouterDefaults

pytestmark = pytest.mark.cluster

EXAMPLES = int(os.environ.get("KUBETUNE_PROPERTY_EXAMPLES", "100"))
API = "kubetune.io/v1alpha1"
TRICKY_STRINGS = ["", " ", "a b", "x\ty", "../../etc", "-1", "0", "0s", "Ab", "1a", "a.b", "a-vllm", "é"]
TRICKY_ARGS = ["--port", "--host=0.0.0.0", "--trust-remote-code", "--served-model-name", "--model", "8001"]
TRICKY_QUANTITIES: list[Any] = ["-1", "-2Gi", "0", 0, -1, "1e3", "100Mi", "+1"]

BASE_MDEP: dict[str, Any] = {
    "apiVersion": API,
    "kind": "ModelDeployment",
    "metadata": {"name": "prop"},
    "spec": {
        "variants": [{"name": "a", "model": {"uri": "Qwen/Qwen2.5-0.5B"}, "weight": 100, "replicas": 1}],
    },
}
BASE_FTJ = minimal_ftj("prop")
# Leaves that reference other objects or variants: they are checked by the reconciler, not rendering.
SKIP = ("model", "servedBy", "adapters", "gate", "canary", "finetuneJobRef", "configRef", "secretRef")


def _leaves(
    schema: dict[str, Any], path: tuple[str | int, ...] = ()
) -> list[tuple[tuple[str | int, ...], Any]]:
    """(path, schema) of every leaf, arrays of scalars and objects-in-arrays counting as leaves."""
    if schema.get("type") == "object" and "properties" in schema:
        found: list[tuple[tuple[str | int, ...], Any]] = []
        for name, sub in schema["properties"].items():
            if name in SKIP:
                continue
            if name == "variants":
                found += _leaves(sub["items"], (*path, name, 0))
            else:
                found += _leaves(sub, (*path, name))
        return found
    return [(path, schema)]


def _string(schema: dict[str, Any]) -> st.SearchStrategy[str]:
    tricky = st.sampled_from(TRICKY_STRINGS)
    if "pattern" in schema:
        drawn = st.from_regex(schema["pattern"], fullmatch=True).filter(lambda s: len(s) <= 80)
        return st.one_of(drawn, tricky)
    return st.one_of(
        st.text(st.characters(codec="ascii", categories=["L", "N", "P", "Zs"]), max_size=20), tricky
    )


def value_for(schema: dict[str, Any], path: tuple[str | int, ...]) -> st.SearchStrategy[Any]:
    """Values of one leaf: in its schema, one step past it, or known-bad."""
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    if schema.get("x-kubernetes-int-or-string"):
        return st.one_of(st.sampled_from(TRICKY_QUANTITIES), st.from_regex(schema["pattern"], fullmatch=True))
    kind = schema.get("type")
    if kind == "boolean":
        return st.booleans()
    if kind == "integer":
        low, high = schema.get("minimum", -2), schema.get("maximum", 100)
        return st.integers(low - 1, min(high, low + 50) + 1) | st.sampled_from([low, high])
    if kind == "number":
        low, high = schema.get("minimum", -1.0), schema.get("maximum", 10.0)
        return st.floats(low - 0.5, high + 0.5, allow_nan=False, allow_infinity=False)
    if kind == "string":
        return _string(schema)
    if kind == "array":
        items = schema.get("items", {})
        if path and path[-1] == "extraArgs":
            return st.lists(st.one_of(st.sampled_from(TRICKY_ARGS), _string(items)), max_size=3)
        if items.get("type") == "object":
            return st.lists(_object(items), max_size=2)
        return st.lists(value_for(items, (*path, 0)), max_size=3)
    if kind == "object":
        return _object(schema)
    return st.none()


def _object(schema: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    properties = {k: v for k, v in schema.get("properties", {}).items() if k not in SKIP}
    required = [k for k in schema.get("required", []) if k in properties]
    optional = [k for k in properties if k not in required]
    return st.fixed_dictionaries(
        {k: value_for(properties[k], (k,)) for k in required},
        optional={k: value_for(properties[k], (k,)) for k in optional},
    )


def _set(obj: dict[str, Any], path: tuple[str | int, ...], value: Any) -> None:
    node: Any = obj
    for key in path[:-1]:
        node = node[key] if isinstance(key, int) else node.setdefault(key, {})
    node[path[-1]] = value


def specs(base: dict[str, Any], spec_model: type[Any]) -> st.SearchStrategy[dict[str, Any]]:
    leaves = _leaves(openapi_schema(spec_model))
    names = st.one_of(
        st.sampled_from(["prop", "p1", "a-vllm", "1prop", "prop.v2", "x" * 45]), st.just("prop")
    )

    @st.composite
    def build(draw: Callable[..., Any]) -> dict[str, Any]:
        obj = copy.deepcopy(base)
        obj["metadata"]["name"] = draw(names)
        for path, schema in draw(st.lists(st.sampled_from(leaves), min_size=1, max_size=3, unique_by=str)):
            _set(obj["spec"], path, draw(value_for(schema, path)))
        return obj

    return build()


@dataclass
class Tally:
    accepted: int = 0
    rejected: int = 0
    bugs: list[str] = field(default_factory=list)


def _collection(manifest: dict[str, Any], namespace: str) -> str:
    return resource_path(manifest["apiVersion"], manifest["kind"], namespace)


def render_modeldeployment(stored: dict[str, Any]) -> list[dict[str, Any]]:
    spec = ModelDeploymentSpec.model_validate(stored["spec"])
    children: list[dict[str, Any]] = []
    for variant in spec.variants:
        resolution = resolve_variant_model(variant, {})
        children += build_variant_children(stored, variant, resolution, spec=spec)
    weights = {v.name: v.weight for v in spec.variants}
    config = build_router_config(stored, weights, dict.fromkeys(weights, True), spec=spec)
    settings_ = router_settings(stored, spec, RouterDefaults(), pod_monitor=False)
    children += build_router_children(stored, config, settings_)
    children.append(build_router_token_secret(stored, "t" * 43))
    children.append(
        build_vllm_network_policy(
            stored, router_role="router", serving_role="vllm", port=8000, peers=Peers("kubetune-system")
        )
    )
    return children


def render_finetunejob(stored: dict[str, Any]) -> list[dict[str, Any]]:
    spec = FineTuneJobSpec.model_validate(stored["spec"])
    return list(build_children(stored, restart=0, spec=spec).all())


async def check(
    client: KubeClient, namespace: str, manifest: dict[str, Any], render: Callable[..., Any], tally: Tally
) -> None:
    manifest = copy.deepcopy(manifest)
    manifest["metadata"]["namespace"] = namespace
    params = {"dryRun": "All", "fieldValidation": "Strict"}
    try:
        stored = await client.request("POST", _collection(manifest, namespace), body=manifest, params=params)
    except ApiError as exc:
        tally.rejected += 1
        if "spec." not in exc.message and "metadata.name" not in exc.message:
            tally.bugs.append(f"rejected without naming a field: {exc.message}")
        return
    tally.accepted += 1
    stored["metadata"].setdefault("uid", "00000000-0000-0000-0000-000000000001")
    try:
        children = render(stored)
    except Exception as exc:  # the operator's own models or builders refuse what admission let through
        tally.bugs.append(f"accepted, then the operator failed to render it: {type(exc).__name__}: {exc}")
        return
    for child in children:
        if child["kind"] in ("PodMonitor", "ScaledObject", "HTTPRoute"):
            continue  # CRDs this test cluster does not have
        try:
            await client.request("POST", _collection(child, namespace), body=child, params=params)
        except ApiError as exc:
            spec = manifest["spec"]
            resources = spec.get("resources") or spec["variants"][0].get("resources")
            rejected = f"accepted, but its {child['kind']} was rejected: {exc.message[:300]}"
            tally.bugs.append(f"{rejected} (resources: {resources})")
            return


def run_property(
    kube: Kube,
    namespace: str,
    strategy: st.SearchStrategy[dict[str, Any]],
    render: Callable[..., Any],
    label: str,
) -> Tally:
    tally = Tally()
    loop = asyncio.new_event_loop()
    client = KubeClient(loop.run_until_complete(load_credentials(str(kube.kubeconfig))))

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        # Bugs are collected, not raised: shrinking would only re-run slow API calls on an error.
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    @given(strategy)
    def one(manifest: dict[str, Any]) -> None:
        loop.run_until_complete(check(client, namespace, manifest, render, tally))

    try:
        one()
    finally:
        loop.run_until_complete(client.close())
        loop.close()
    print(
        f"\n{label}: {tally.accepted + tally.rejected} specs, {tally.accepted} accepted, "
        f"{tally.rejected} rejected, {len(tally.bugs)} found a bug"
    )
    for bug in sorted(set(tally.bugs)):
        print("  -", bug)
    return tally


@pytest.mark.parametrize(
    ("base", "model", "render"),
    [
        (BASE_MDEP, ModelDeploymentSpec, render_modeldeployment),
        (BASE_FTJ, FineTuneJobSpec, render_finetunejob),
    ],
    ids=["ModelDeployment", "FineTuneJob"],
)
def test_accepted_specs_render_valid_children_and_rejections_name_a_field(
    kube: Kube, namespace: str, base: dict[str, Any], model: type[Any], render: Callable[..., Any]
) -> None:
    tally = run_property(kube, namespace, specs(base, model), render, base["kind"])
    assert tally.accepted > 0, "the generator explores accepted specs"
    assert tally.rejected > 0, "and rejected ones"
    assert tally.bugs == [], f"{len(tally.bugs)} of {tally.accepted + tally.rejected} specs found a bug"
