"""Traffic follows ready capacity, and moves make-before-break (pure).

- A variant is routable with at least one ready pod whose containers passed the smoke test; `Available`
  (every desired replica available) stays a status signal. One pod lost of three, a drain, an HPA
  scaling up: the variant keeps serving on the pods that are there.
- In a canary the weight a variant takes never exceeds what its ready pods can take: a variant sized
  `replicas` pods at 100% takes `100 * ready / replicas` percent at most. What the planned split cannot
  place stays on the variants that served it before (`spill`), so a rollback, an abort or a new rollout
  moves weight onto the stable only as fast as its pods turn ready.
- A variant losing pods keeps them until the split is the planned one AND every router serves it
  (each router pod's `/kubetune/config` read back); only then does it scale down (`shift`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from kubetune.api.conditions import ConditionType, Reason
from kubetune.api.modeldeployment import VariantStatus
from kubetune.status.conditions import find_condition


def routable(status: VariantStatus, was_routed: bool) -> bool:
    """A ready pod and a passed smoke test; a variant already serving keeps serving while its new pods
    are tested (the verdict is Unknown then, and its ready pods are the tested ones)."""
    tested = find_condition(status.conditions, ConditionType.SMOKE_TEST_PASSED)
    if status.ready_replicas < 1 or tested is None:
        return False
    return tested.status == "True" or (tested.status == "Unknown" and was_routed)


@dataclass(frozen=True)
class Capacity:
    """What a variant's pods can take now."""

    ready: int
    """Ready pods that may take traffic (0 when the variant is not routable)."""
    full: int
    """Pods that take 100% of traffic (its `replicas`); 0: one ready pod is enough (autoscaled, or
    adapters sharing their host's pods)."""

    @property
    def share(self) -> int:
        """Percent of traffic the ready pods can take."""
        if self.ready <= 0:
            return 0
        if self.full <= 0:
            return 100
        return min(100, self.ready * 100 // self.full)


def capped_weights(
    target: Mapping[str, int], capacity: Mapping[str, Capacity], routed_before: Mapping[str, int]
) -> dict[str, int]:
    """The planned split, each variant capped at its ready capacity; the rest stays where it was served.

    The remainder goes to variants that had weight before and have room, the largest share first
    (the variant losing weight keeps serving what the gaining one cannot take yet). What nobody can take
    is left out: the router spreads the weights it has over the routable variants.
    """
    weights = {name: min(w, capacity[name].share if name in capacity else 0) for name, w in target.items()}
    rest = sum(target.values()) - sum(weights.values())
    donors = sorted(
        (name for name in weights if routed_before.get(name, 0) > 0),
        key=lambda name: (-routed_before.get(name, 0), name),
    )
    for name in donors:
        if rest <= 0:
            break
        room = capacity[name].share - weights[name] if name in capacity else 0
        take = min(rest, max(0, room))
        weights[name] += take
        rest -= take
    return weights


@dataclass(frozen=True)
class RouterView:
    """Router pods taking traffic, and how many of them serve the split just applied."""

    serving: int
    total: int
    waited_s: float = 0.0
    """How long pods losing weight have waited for the routers (for the bound `confirm_timeout_s`)."""

    @property
    def confirmed(self) -> bool:
        return self.serving >= self.total


@dataclass(frozen=True)
class Shift:
    weights: dict[str, int]
    """Weights to apply now."""
    scale_down: bool
    """Variants may drop to their planned replicas now (the split is settled and served)."""
    reason: Reason
    message: str

    @property
    def settled(self) -> bool:
        return self.reason is Reason.TRAFFIC_SETTLED


def plan_shift(
    target: Mapping[str, int],
    capacity: Mapping[str, Capacity],
    routed_before: Mapping[str, int],
    routers: RouterView | None,
    *,
    confirm_timeout_s: float,
) -> Shift:
    """Make-before-break, one pass: the weights to apply and whether pods may go.

    1. capacity: the planned split capped by ready capacity (`capped_weights`);
    2. routers: once the applied split is the planned one, every router pod must serve it
       (`routers` None: nothing to wait for: a Gateway, or no pod waits to go); after
       `confirm_timeout_s` of waiting the shift goes on without the routers that do not answer (an
       operator outside the pod network);
    3. then, and only then, variants scale down to their planned replicas.
    """
    weights = capped_weights(target, capacity, routed_before)
    short = {name: target[name] - weights[name] for name in target if weights[name] < target[name]}
    if short:
        detail = ", ".join(
            f"{name} takes {weights[name]}% of {target[name]}% "
            f"({capacity[name].ready if name in capacity else 0} ready pods)"
            for name in sorted(short)
        )
        return Shift(
            weights,
            scale_down=False,
            reason=Reason.WAITING_FOR_CAPACITY,
            message=f"waiting for ready, smoke-tested pods: {detail}; "
            "the variants serving the rest keep their pods",
        )
    if routers is not None and not routers.confirmed:
        if routers.waited_s < confirm_timeout_s:
            return Shift(
                weights,
                scale_down=False,
                reason=Reason.WAITING_FOR_ROUTERS,
                message=f"{routers.serving}/{routers.total} router pods serve the new split; "
                "pods losing weight scale down once all do",
            )
        return Shift(
            weights,
            scale_down=True,
            reason=Reason.TRAFFIC_SETTLED,
            message=f"split applied; {routers.total - routers.serving} router pods did not confirm it "
            f"within {confirm_timeout_s:.0f}s",
        )
    served = (
        "split applied" if routers is None else f"split applied and served by all {routers.total} routers"
    )
    return Shift(weights, scale_down=True, reason=Reason.TRAFFIC_SETTLED, message=served)


def held_replicas(planned: Mapping[str, int], current: Mapping[str, int]) -> dict[str, int]:
    """Before the split settles nothing scales down: each variant keeps at least the pods it has."""
    return {name: max(n, current.get(name, 0)) for name, n in planned.items()}
