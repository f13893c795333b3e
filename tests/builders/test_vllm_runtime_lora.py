"""The vLLM pod for adapters that follow a FineTuneSchedule: runtime LoRA updating on, room for two
revisions each, their storage root mounted whole, and in-pod paths for each revision (tables)."""

from __future__ import annotations

from typing import Any

import pytest
from tests.serving.objects import model_deployment, variant

from kubetune.api.conditions import Reason
from kubetune.builders.common import ANNOTATION_SPEC_HASH
from kubetune.builders.modeldeployment import build_deployment
from kubetune.builders.vllm import (
    RUNTIME_LORA_ENV,
    followed_root_problem,
    runtime_adapter_path,
    vllm_args,
    vllm_env,
)
from kubetune.serving.resolution import FollowedAdapter, LoraModule, Resolution, ResolutionState

FOLLOWED_A = FollowedAdapter("a", "pvc://runs/sched-a", rank=16)
FOLLOWED_B = FollowedAdapter("b", "pvc://runs/sched-b", rank=32)
STATIC = LoraModule("sft", "pvc://adapters/sft", rank=8)


def ready(*, static: tuple[LoraModule, ...] = (), followed: tuple[FollowedAdapter, ...] = ()) -> Resolution:
    return Resolution(
        ResolutionState.READY,
        Reason.MODEL_RESOLVED,
        "ok",
        model_uri="pvc://models/base",
        lora_modules=static,
        followed_adapters=followed,
    )


def lora_flags(args: list[str]) -> dict[str, str | None]:
    """The LoRA flags and their values (None for a switch)."""
    flags: dict[str, str | None] = {}
    for i, arg in enumerate(args):
        if arg in ("--max-loras", "--max-lora-rank", "--lora-modules"):
            flags[arg] = args[i + 1]
        elif arg == "--enable-lora":
            flags[arg] = None
    return flags


@pytest.mark.parametrize(
    ("static", "followed", "spec", "expected"),
    [
        pytest.param((), (), {}, {}, id="no-adapters"),
        pytest.param(
            (STATIC,),
            (),
            {},
            {
                "--enable-lora": None,
                "--max-loras": "1",
                "--max-lora-rank": "8",
                "--lora-modules": "sft=/models/adapters/sft",
            },
            id="static-only-unchanged",
        ),
        pytest.param(
            (),
            (FOLLOWED_A,),
            {},
            {"--enable-lora": None, "--max-loras": "2", "--max-lora-rank": "16"},
            id="followed-only: two revisions, no --lora-modules",
        ),
        pytest.param(
            (STATIC,),
            (FOLLOWED_A, FOLLOWED_B),
            {},
            {
                "--enable-lora": None,
                "--max-loras": "5",
                "--max-lora-rank": "32",
                "--lora-modules": "sft=/models/adapters/sft",
            },
            id="static-plus-two-followed",
        ),
        pytest.param(
            (),
            (FollowedAdapter("a", "pvc://runs/s", rank=20),),
            {},
            {"--enable-lora": None, "--max-loras": "2", "--max-lora-rank": "32"},
            id="followed-rank-rounded-up",
        ),
        pytest.param(
            (),
            (FollowedAdapter("a", "pvc://runs/s"),),
            {},
            {"--enable-lora": None, "--max-loras": "2"},
            id="unknown-rank-left-to-vllm",
        ),
        pytest.param(
            (),
            (FOLLOWED_A, FOLLOWED_B),
            {"maxLoras": 3, "maxLoraRank": 64},
            {"--enable-lora": None, "--max-loras": "3", "--max-lora-rank": "64"},
            id="spec-wins",
        ),
    ],
)
def test_lora_flags(
    static: tuple[LoraModule, ...],
    followed: tuple[FollowedAdapter, ...],
    spec: dict[str, Any],
    expected: dict[str, str | None],
) -> None:
    resolution = ready(static=static, followed=followed)
    args = vllm_args(variant("a", vllm=spec), resolution)
    assert lora_flags(args) == expected
    assert (vllm_env(resolution) == [{"name": RUNTIME_LORA_ENV, "value": "True"}]) is bool(followed)


def pod_of(resolution: Resolution) -> dict[str, Any]:
    v = variant("a")
    mdep = model_deployment([{**v.to_wire(), "weight": 100}])
    pod: dict[str, Any] = build_deployment(mdep, v, resolution)["spec"]["template"]
    return pod


@pytest.mark.parametrize(
    ("followed", "claims", "mounts"),
    [
        pytest.param(
            (FOLLOWED_A,),
            ["models", "runs"],
            [("/models/base", "base", "models"), ("/models/followed/a", "sched-a", "runs")],
            id="schedule-output-mounted-whole",
        ),
        pytest.param(
            (FOLLOWED_A, FOLLOWED_B),
            ["models", "runs"],
            [
                ("/models/base", "base", "models"),
                ("/models/followed/a", "sched-a", "runs"),
                ("/models/followed/b", "sched-b", "runs"),
            ],
            id="one-volume-per-claim",
        ),
        pytest.param(
            (FollowedAdapter("a", "pvc://models/out"),),
            ["models"],
            [("/models/base", "base", "models"), ("/models/followed/a", "out", "models")],
            id="same-claim-as-the-base",
        ),
        pytest.param(
            (FollowedAdapter("a", "pvc://runs"),),
            ["models", "runs"],
            [("/models/base", "base", "models"), ("/models/followed/a", None, "runs")],
            id="whole-claim",
        ),
    ],
)
def test_followed_storage(
    followed: tuple[FollowedAdapter, ...], claims: list[str], mounts: list[tuple[str, str | None, str]]
) -> None:
    pod = pod_of(ready(followed=followed))["spec"]
    volumes = {v["name"]: v["persistentVolumeClaim"] for v in pod["volumes"] if "persistentVolumeClaim" in v}
    assert sorted(c["claimName"] for c in volumes.values()) == claims
    assert all(c["readOnly"] for c in volumes.values())
    model_mounts = [m for m in pod["containers"][0]["volumeMounts"] if m["mountPath"].startswith("/models")]
    assert [
        (m["mountPath"], m.get("subPath"), volumes[m["name"]]["claimName"]) for m in model_mounts
    ] == mounts
    assert all(m["readOnly"] for m in model_mounts)
    assert "initContainers" not in pod
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env[RUNTIME_LORA_ENV] == "True"


@pytest.mark.parametrize("root", ["s3://bucket/runs", "hf://org/adapters"])
def test_followed_roots_off_a_pvc_are_refused(root: str) -> None:
    assert followed_root_problem(root) is not None
    with pytest.raises(ValueError, match=r"adapter a: .*runtime LoRA loading needs .* pvc://"):
        pod_of(ready(followed=(FollowedAdapter("a", root),)))


def test_pods_roll_for_a_new_root_or_rank_never_for_a_revision() -> None:
    def pod_hash(*followed: FollowedAdapter) -> str:
        return str(pod_of(ready(followed=followed))["metadata"]["annotations"][ANNOTATION_SPEC_HASH])

    base = pod_hash(FOLLOWED_A)
    assert pod_hash(FOLLOWED_A) == base
    assert pod_hash(FollowedAdapter("a", "pvc://runs/other", rank=16)) != base
    assert pod_hash(FollowedAdapter("a", "pvc://runs/sched-a", rank=32)) != base
    assert pod_hash() != base
    # Which revision serves is not in the pod template at all: a Resolution has no revision to hash.


@pytest.mark.parametrize(
    ("root", "adapter", "expected"),
    [
        (
            "pvc://runs/sched",
            "pvc://runs/sched/sched-29000000/adapter",
            "/models/followed/a/sched-29000000/adapter",
        ),
        ("pvc://runs/sched/", "pvc://runs/sched/r1", "/models/followed/a/r1"),
        ("pvc://runs", "pvc://runs/sched/r1/adapter", "/models/followed/a/sched/r1/adapter"),
    ],
)
def test_runtime_adapter_path(root: str, adapter: str, expected: str) -> None:
    assert runtime_adapter_path(FollowedAdapter("a", root), adapter) == expected


@pytest.mark.parametrize(
    "adapter",
    [
        pytest.param("pvc://other/sched/r1/adapter", id="another-claim"),
        pytest.param("pvc://runs/elsewhere/r1", id="outside-the-root"),
        pytest.param("pvc://runs/sched2/r1", id="a-sibling-with-the-same-prefix"),
        pytest.param("pvc://runs/sched/../secrets", id="dot-dot"),
        pytest.param("pvc://runs/sched/r1/../../x", id="dot-dot-inside"),
        pytest.param("pvc://runs/sched", id="the-root-itself"),
        pytest.param("s3://runs/sched/r1", id="another-scheme"),
    ],
)
def test_runtime_adapter_path_stays_under_the_root(adapter: str) -> None:
    with pytest.raises(ValueError, match="is not a folder under pvc://runs/sched"):
        runtime_adapter_path(FollowedAdapter("a", "pvc://runs/sched"), adapter)


def test_runtime_adapter_path_needs_a_pvc_root() -> None:
    with pytest.raises(ValueError, match="pvc://"):
        runtime_adapter_path(FollowedAdapter("a", "s3://b/runs"), "s3://b/runs/r1")
