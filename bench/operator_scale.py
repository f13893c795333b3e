"""Create N FineTuneJobs at once on the simulated cluster; measure how fast the operator makes their Jobs.

Reports time until every FineTuneJob has a Job child, p50/p99 of create→child latency,
the operator's peak RSS, API requests per object (from the API server's audit log:
everything sent by kopf and by our client), and duplicate children.

    .venv/bin/python bench/operator_scale.py [--objects 1000] [--controllers]

Last line: operator_scale: objects=<n> all_children_s=<x> p99_s=<y> rss_mib=<z> duplicates=<n>
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from simcluster import SimCluster, children_by_parent, create_all, percentile, watch_jobs


async def run(objects: int, controllers: bool, timeout: float) -> int:
    cluster = SimCluster(controllers=controllers)
    cluster.start()
    client = await cluster.client()
    try:
        cluster.start_operator()
        await asyncio.sleep(3)
        cpu_before = (
            cluster.cpu_seconds()
        )  # operator start-up (imports, login, initial listing): not part of the figure
        names = [f"ftj-{i:04d}" for i in range(objects)]
        seen: dict[str, float] = {}
        stop = asyncio.Event()
        watcher = asyncio.create_task(watch_jobs(client, seen, stop))
        began = time.monotonic()
        created = await create_all(client, names)
        create_s = time.monotonic() - began
        peak_rss = 0.0
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not all(n in seen for n in names):
            peak_rss = max(peak_rss, cluster.operator_rss_mib())
            await asyncio.sleep(0.25)
        peak_rss = max(peak_rss, cluster.operator_rss_mib())
        cpu = {k: v - cpu_before.get(k, 0.0) for k, v in cluster.cpu_seconds().items()}
        all_children = max((seen[n] for n in names if n in seen), default=float("nan")) - began
        latencies = [seen[n] - created[n] for n in names if n in seen]
        await asyncio.sleep(5)  # let in-flight passes finish before counting duplicates and requests
        stop.set()
        watcher.cancel()
        children = await children_by_parent(client)
        duplicates = sum(max(0, c.get("validate", 0) - 1) for c in children.values())
        missing = sum(1 for n in names if n not in seen)
        requests = cluster.operator_requests()
        total_requests = sum(requests.values())

        print(f"{'objects':<34}{objects}")
        print(f"{'cluster':<34}{'apiserver+etcd+kcm+scheduler+kwok' if controllers else 'apiserver+etcd'}")
        print(f"{'create all (client side) s':<34}{create_s:.2f}")
        print(f"{'all children exist after s':<34}{all_children:.2f}")
        print(f"{'create→child p50 s':<34}{percentile(latencies, 50):.3f}")
        print(f"{'create→child p99 s':<34}{percentile(latencies, 99):.3f}")
        print(f"{'create→child max s':<34}{max(latencies, default=float('nan')):.3f}")
        print(f"{'operator peak RSS MiB':<34}{peak_rss:.0f}")
        cpu_text = ", ".join(f"{k} {v:.1f}" for k, v in sorted(cpu.items(), key=lambda kv: -kv[1]))
        print(f"{'CPU s until all children':<34}{cpu_text}")
        print(f"{'operator API requests':<34}{total_requests} ({dict(requests.most_common())})")
        print(f"{'API requests per object':<34}{total_requests / objects:.1f}")
        print(f"{'missing children':<34}{missing}")
        print(f"{'duplicate children':<34}{duplicates}")
        print(
            f"operator_scale: objects={objects} all_children_s={all_children:.2f} "
            f"p99_s={percentile(latencies, 99):.2f} rss_mib={peak_rss:.0f} duplicates={duplicates}"
        )
        return 0 if missing == 0 and duplicates == 0 else 1
    finally:
        await client.close()
        cluster.stop()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--objects", type=int, default=1000)
    parser.add_argument(
        "--controllers",
        action="store_true",
        help="also run controller-manager, scheduler and kwok GPU nodes (pods get scheduled)",
    )
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args()
    return asyncio.run(run(args.objects, args.controllers, args.timeout))


if __name__ == "__main__":
    sys.exit(main())
