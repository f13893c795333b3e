"""Chaos: kill -9 the operator every few seconds while N FineTuneJobs are created, restart the
kube-apiserver once mid-run, then check that nothing was lost or duplicated.

Checks after recovery: every FineTuneJob has exactly one validation Job (and at most one
training Job of each attempt), every status is consistent with its children (Accepted,
observedGeneration current, phase Validating while its validation Job runs), and no child
is orphaned (every Job's owner exists).

    .venv/bin/python bench/chaos.py [--objects 1000] [--kill-every 5]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from kubetune.kube.client import ApiError
from simcluster import NAMESPACE, SimCluster, children_by_parent, create_all


async def chaos_loop(cluster: SimCluster, kill_every: float, stop: asyncio.Event, log: list[str]) -> None:
    restarted_apiserver = False
    started = time.monotonic()
    while not stop.is_set():
        await asyncio.sleep(kill_every)
        if stop.is_set():
            return
        cluster.kill_operator()
        log.append(f"{time.monotonic() - started:6.1f}s kill -9 operator")
        if not restarted_apiserver and time.monotonic() - started > 2.5 * kill_every:
            assert cluster.plane is not None
            await asyncio.to_thread(cluster.plane.restart_apiserver)
            restarted_apiserver = True
            log.append(f"{time.monotonic() - started:6.1f}s kube-apiserver stopped and restarted")
        cluster.start_operator()
        log.append(f"{time.monotonic() - started:6.1f}s operator restarted")


async def converged(cluster: SimCluster, names: list[str]) -> tuple[bool, list[str]]:
    client = await cluster.client()
    try:
        children = await children_by_parent(client)
        ftjs = {
            o["metadata"]["name"]: o
            for o in await client.list("kubetune.io/v1alpha1", "FineTuneJob", NAMESPACE)
        }
    finally:
        await client.close()
    problems: list[str] = []
    for name in names:
        obj = ftjs.get(name)
        if obj is None:
            problems.append(f"{name}: FineTuneJob lost")
            continue
        kids = children.get(name, Counter())
        if kids.get("validate", 0) != 1:
            problems.append(f"{name}: {kids.get('validate', 0)} validation Jobs")
        status = obj.get("status") or {}
        if status.get("observedGeneration") != obj["metadata"]["generation"]:
            problems.append(f"{name}: observedGeneration {status.get('observedGeneration')}")
        accepted = [
            c for c in status.get("conditions", []) if c["type"] == "Accepted" and c["status"] == "True"
        ]
        if not accepted:
            problems.append(f"{name}: not Accepted")
        if kids.get("validate") and status.get("phase") not in (
            "Validating",
            "Pending",
            "Running",
            "Succeeded",
        ):
            problems.append(f"{name}: phase {status.get('phase')} with a validation Job")
    orphans = [parent for parent in children if parent not in ftjs]
    problems.extend(f"orphan Jobs of {p}" for p in orphans)
    return not problems, problems


async def run(objects: int, kill_every: float, chaos_seconds: float, timeout: float) -> int:
    cluster = SimCluster(controllers=False)
    cluster.start()
    log: list[str] = []
    try:
        cluster.start_operator()
        client = await cluster.client()
        names = [f"ftj-{i:04d}" for i in range(objects)]
        stop = asyncio.Event()
        chaos = asyncio.create_task(chaos_loop(cluster, kill_every, stop, log))
        began = time.monotonic()
        await create_all(client, names)
        await client.close()
        log.append(f"{time.monotonic() - began:6.1f}s all {objects} FineTuneJobs created")
        # Keep killing while the operator works through the backlog, then let the last one converge.
        await asyncio.sleep(max(0.0, chaos_seconds - (time.monotonic() - began)))
        stop.set()
        await chaos
        if cluster.operator is None or cluster.operator.poll() is not None:
            cluster.start_operator()
        deadline = time.monotonic() + timeout
        ok, problems = False, ["not checked"]
        while time.monotonic() < deadline:
            try:
                ok, problems = await converged(cluster, names)
            except ApiError as exc:  # e.g. 429 while the restarted apiserver's storage initialises
                problems = [str(exc)]
            if ok:
                break
            await asyncio.sleep(2)
        recovered = time.monotonic() - began
        children = await _children(cluster)
        validations = sum(c.get("validate", 0) for c in children.values())
        print("\n".join(log))
        print(f"{'objects':<40}{objects}")
        print(f"{'operator starts (kills + 1)':<40}{cluster.operator_starts}")
        print(f"{'validation Jobs (expect one each)':<40}{validations}")
        print(
            f"{'FineTuneJobs with exactly one':<40}{sum(c.get('validate') == 1 for c in children.values())}"
        )
        print(f"{'converged after s':<40}{recovered:.1f}")
        print(f"{'problems':<40}{len(problems) if not ok else 0}")
        for problem in (problems if not ok else [])[:20]:
            print("  -", problem)
        checked = (
            "one validation Job each, status consistent (Accepted, observedGeneration, phase), no orphans"
        )
        print(
            f"chaos: objects={objects} kills={cluster.operator_starts - 1} apiserver_restarts=1 "
            f"ok={ok} checked='{checked}'"
        )
        return 0 if ok else 1
    finally:
        cluster.stop()


async def _children(cluster: SimCluster) -> dict[str, Counter[str]]:
    client = await cluster.client()
    try:
        return await children_by_parent(client)
    finally:
        await client.close()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--objects", type=int, default=1000)
    parser.add_argument("--kill-every", type=float, default=5.0)
    parser.add_argument("--chaos-seconds", type=float, default=40.0, help="how long to keep killing")
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args()
    return asyncio.run(run(args.objects, args.kill_every, args.chaos_seconds, args.timeout))


if __name__ == "__main__":
    sys.exit(main())
