"""The background generators that send synthetic canary traffic, one per ModelDeployment.

A restarted operator starts a generator again on its first pass (the load is planned each pass:
`kubetune.planning.synthetic.desired_load`).
"""

from __future__ import annotations

import asyncio

from kubetune.serving.synthetic import SyntheticLoad, generate


class SyntheticTraffic:
    """The running generators, one per ModelDeployment (by uid)."""

    def __init__(self) -> None:
        self._generators: dict[str, tuple[SyntheticLoad, asyncio.Task[None]]] = {}

    def ensure(self, uid: str, load: SyntheticLoad | None) -> None:
        """Run exactly `load` for this object (nothing when None)."""
        current = self._generators.get(uid)
        if current is not None and current[0] == load and not current[1].done():
            return
        if current is not None:
            current[1].cancel()
            del self._generators[uid]
        if load is not None:
            self._generators[uid] = (load, asyncio.get_running_loop().create_task(generate(load)))

    def active(self, uid: str) -> SyntheticLoad | None:
        current = self._generators.get(uid)
        return current[0] if current is not None and not current[1].done() else None

    def stop(self, uid: str) -> None:
        self.ensure(uid, None)
