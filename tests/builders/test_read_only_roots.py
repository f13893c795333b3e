"""Every pod the operator makes runs read-only: what its programs write lands in a mounted emptyDir,
and only the trainer container holds an API token (table over trainer, validator, stagers, vLLM, router)."""

from __future__ import annotations

import posixpath
from typing import Any

import pytest
from tests.builders.test_finetunejob_builders import ftj
from tests.builders.test_modeldeployment_builders import mdep_for, ready
from tests.serving.objects import model_deployment

from kubetune.builders.finetunejob import build_children
from kubetune.builders.modeldeployment import build_deployment
from kubetune.builders.router import RouterSettings, build_router_deployment
from kubetune.builders.training_pod import TOKEN_DIR, TRAINER_CONTAINER
from kubetune.builders.writable import CACHE_ENV, VLLM_CACHE_ENV
from kubetune.serving.resolution import LoraModule


def _training_pod(spec: dict[str, Any]) -> dict[str, Any]:
    pod: dict[str, Any] = build_children(ftj(**spec), restart=0).training_job["spec"]["template"]["spec"]
    return pod


def _validation_pod(spec: dict[str, Any]) -> dict[str, Any]:
    pod: dict[str, Any] = build_children(ftj(**spec), restart=0).validation_job["spec"]["template"]["spec"]
    return pod


def _vllm_pod(model: str, *modules: LoraModule) -> dict[str, Any]:
    mdep, v = mdep_for(model={"uri": model, "secretRef": {"name": "tok"}})
    pod: dict[str, Any] = build_deployment(mdep, v, ready(model, *modules))["spec"]["template"]["spec"]
    return pod


def _router_pod() -> dict[str, Any]:
    mdep = model_deployment([{"name": "a", "model": {"uri": "pvc://m/b"}, "weight": 100}])
    pod: dict[str, Any] = build_router_deployment(mdep, RouterSettings())["spec"]["template"]["spec"]
    return pod


STAGED_GANG = {
    "baseModel": {"uri": "hf://org/m"},
    "dataset": {"uri": "s3://b/d.jsonl"},
    "resources": {"nodes": 2},
}
PODS = {
    "training-pvc": lambda: _training_pod({}),
    "training-staged-gang": lambda: _training_pod(STAGED_GANG),
    "training-s3-output-deepspeed": lambda: _training_pod(
        {"output": {"uri": "s3://b/o", "secretRef": {"name": "s"}}, "deepspeed": {"zeroStage": 2}}
    ),
    "validation-pvc": lambda: _validation_pod({}),
    "validation-staged": lambda: _validation_pod(STAGED_GANG),
    "vllm-pvc": lambda: _vllm_pod("pvc://models/base"),
    "vllm-staged-with-adapter": lambda: _vllm_pod("s3://b/m", LoraModule("x", "hf://o/lora-x")),
    "router": _router_pod,
}


def _containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return [*pod.get("initContainers", []), *pod["containers"]]


def _empty_dirs(pod: dict[str, Any]) -> set[str]:
    return {v["name"] for v in pod["volumes"] if "emptyDir" in v}


def _in_mounted_empty_dir(path: str, container: dict[str, Any], empty_dirs: set[str]) -> bool:
    path = posixpath.normpath(path)
    return any(
        m["name"] in empty_dirs
        and not m.get("readOnly")
        and (path == m["mountPath"] or path.startswith(m["mountPath"].rstrip("/") + "/"))
        for m in container.get("volumeMounts", [])
    )


@pytest.mark.parametrize("make_pod", PODS.values(), ids=PODS.keys())
def test_every_container_has_a_read_only_root_and_a_writable_tmp(make_pod: Any) -> None:
    pod = make_pod()
    empty_dirs = _empty_dirs(pod)
    for container in _containers(pod):
        assert container["securityContext"]["readOnlyRootFilesystem"] is True, container["name"]
        assert _in_mounted_empty_dir("/tmp", container, empty_dirs), container["name"]


@pytest.mark.parametrize("make_pod", PODS.values(), ids=PODS.keys())
def test_every_cache_variable_points_into_a_mounted_empty_dir(make_pod: Any) -> None:
    pod = make_pod()
    empty_dirs = _empty_dirs(pod)
    for container in _containers(pod):
        env = {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}
        for name in (*CACHE_ENV, *VLLM_CACHE_ENV):
            if name in env:
                assert _in_mounted_empty_dir(env[name], container, empty_dirs), (container["name"], name)


@pytest.mark.parametrize(
    ("make_pod", "expected"),
    [
        pytest.param(PODS["training-staged-gang"], set(CACHE_ENV), id="trainer-stager-wait"),
        pytest.param(PODS["validation-staged"], set(CACHE_ENV), id="validator-stager"),
        pytest.param(PODS["vllm-staged-with-adapter"], set(CACHE_ENV), id="vllm-stagers"),
    ],
)
def test_python_containers_point_home_and_every_cache_away_from_the_root(
    make_pod: Any, expected: set[str]
) -> None:
    for container in _containers(make_pod()):
        names = {e["name"] for e in container.get("env", [])}
        assert expected <= names, (container["name"], expected - names)


def test_vllm_also_moves_its_own_cache_and_config_roots() -> None:
    env = {e["name"] for e in _vllm_pod("pvc://models/base")["containers"][0]["env"]}
    assert set(VLLM_CACHE_ENV) <= env


def _token_mounts(container: dict[str, Any]) -> list[dict[str, Any]]:
    return [m for m in container.get("volumeMounts", []) if m["mountPath"] == TOKEN_DIR]


@pytest.mark.parametrize("make_pod", PODS.values(), ids=PODS.keys())
def test_no_pod_automounts_the_api_token(make_pod: Any) -> None:
    assert make_pod()["automountServiceAccountToken"] is False


@pytest.mark.parametrize("spec", [{}, STAGED_GANG], ids=["single", "staged-gang"])
def test_only_the_trainer_container_mounts_a_token_and_read_only(spec: dict[str, Any]) -> None:
    pod = _training_pod(spec)
    holders = {c["name"]: _token_mounts(c) for c in _containers(pod) if _token_mounts(c)}
    assert list(holders) == [TRAINER_CONTAINER]
    (mount,) = holders[TRAINER_CONTAINER]
    assert mount["readOnly"] is True
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    sources = volume["projected"]["sources"]
    token = next(s["serviceAccountToken"] for s in sources if "serviceAccountToken" in s)
    assert token["path"] == "token"
    assert any(s.get("configMap", {}).get("name") == "kube-root-ca.crt" for s in sources)
    assert any(i["path"] == "namespace" for s in sources for i in s.get("downwardAPI", {}).get("items", []))


@pytest.mark.parametrize(
    "make_pod",
    [PODS["validation-staged"], PODS["vllm-pvc"], PODS["router"]],
    ids=["validator", "vllm", "router"],
)
def test_pods_that_call_no_api_hold_no_token(make_pod: Any) -> None:
    pod = make_pod()
    assert not any(_token_mounts(c) for c in _containers(pod))
    assert not any("serviceAccountToken" in str(v) for v in pod["volumes"])
