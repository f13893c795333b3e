"""Routing policy: split accuracy, stickiness and minimal movement, tested on the pure decision function."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from kubetune.api.routerconfig import RouterConfig, RouterVariant
from kubetune.router.policy import (
    RouteRequest,
    RoutingError,
    RoutingSnapshot,
    Via,
    WeightedStickyPolicy,
)

USERS = [f"user-{i}" for i in range(10_000)]


def snapshot(weights: dict[str, int], ready: dict[str, bool] | None = None) -> RoutingSnapshot:
    ready = ready or {}
    config = RouterConfig(
        variants=tuple(
            RouterVariant(
                name=name, weight=w, endpoints=(f"http://{name}:8000",), ready=ready.get(name, True)
            )
            for name, w in weights.items()
        )
    )
    return RoutingSnapshot.from_config(config)


def assign(snap: RoutingSnapshot, users: list[str]) -> dict[str, str]:
    policy = WeightedStickyPolicy(random.Random(0))
    return {u: policy.decide(snap, RouteRequest(sticky_key=u)).order[0].name for u in users}


@pytest.mark.parametrize(
    "weights",
    [{"a": 70, "b": 30}, {"a": 50, "b": 50}, {"a": 10, "b": 90}, {"a": 60, "b": 25, "c": 15}],
)
@pytest.mark.parametrize("sticky", [True, False])
def test_split_matches_weights_within_3_percent(weights: dict[str, int], sticky: bool) -> None:
    snap = snapshot(weights)
    policy = WeightedStickyPolicy(random.Random(42))
    counts: Counter[str] = Counter(
        policy.decide(snap, RouteRequest(sticky_key=u if sticky else None)).order[0].name for u in USERS
    )
    for name, weight in weights.items():
        assert abs(counts[name] / len(USERS) - weight / 100) <= 0.03, (name, counts)


def test_same_user_always_lands_on_the_same_variant() -> None:
    snap = snapshot({"a": 70, "b": 30})
    first = assign(snap, USERS[:500])
    for _ in range(3):
        assert assign(snap, USERS[:500]) == first


def test_weight_change_moves_only_users_that_must_move() -> None:
    before = assign(snapshot({"a": 70, "b": 30}), USERS)
    after = assign(snapshot({"a": 50, "b": 50}), USERS)
    moved = [u for u in USERS if before[u] != after[u]]
    assert all(before[u] == "a" and after[u] == "b" for u in moved)
    # 20% of users must move from a to b; consistent hashing moves about that many and no more.
    assert abs(len(moved) / len(USERS) - 0.20) <= 0.03


def test_removing_a_variant_moves_only_its_users() -> None:
    before = assign(snapshot({"a": 50, "b": 30, "c": 20}), USERS)
    after = assign(snapshot({"a": 50, "b": 30, "c": 20}, ready={"c": False}), USERS)
    assert all(before[u] == after[u] for u in USERS if before[u] != "c")
    assert {after[u] for u in USERS if before[u] == "c"} == {"a", "b"}


def test_unready_variant_weight_is_redistributed() -> None:
    snap = snapshot({"a": 70, "b": 30}, ready={"b": False})
    assert set(assign(snap, USERS[:1000]).values()) == {"a"}


def test_fallback_order_lists_every_candidate_once() -> None:
    policy = WeightedStickyPolicy(random.Random(1))
    snap = snapshot({"a": 60, "b": 30, "c": 10})
    for sticky in ("u1", None):
        decision = policy.decide(snap, RouteRequest(sticky_key=sticky))
        assert sorted(t.name for t in decision.order) == ["a", "b", "c"]


@pytest.mark.parametrize(
    ("override", "ready", "expected"),
    [
        ("b", True, "b"),
        ("zero", True, "zero"),
        ("b", False, 503),
        ("nope", True, 400),
    ],
)
def test_override_header(override: str, ready: bool, expected: str | int) -> None:
    snap = snapshot({"a": 100, "b": 0, "zero": 0}, ready={"b": ready})
    policy = WeightedStickyPolicy(random.Random(0))
    if isinstance(expected, str):
        decision = policy.decide(snap, RouteRequest(sticky_key="u", override=override))
        assert decision.via == Via.OVERRIDE
        assert [t.name for t in decision.order] == [expected]
    else:
        with pytest.raises(RoutingError) as caught:
            policy.decide(snap, RouteRequest(override=override))
        assert caught.value.status == expected


def test_no_routable_variant_is_a_503() -> None:
    with pytest.raises(RoutingError) as caught:
        WeightedStickyPolicy().decide(snapshot({"a": 100, "b": 0}, ready={"a": False}), RouteRequest())
    assert caught.value.status == 503
