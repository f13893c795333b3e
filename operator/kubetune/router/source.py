"""Where the router's config comes from: a file mounted from the operator's ConfigMap, polled."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from kubetune.api.routerconfig import RouterConfig, parse_router_config

log = logging.getLogger(__name__)


def _read(path: Path) -> bytes:
    # ConfigMap volumes swap a `..data` symlink atomically, so a read sees the old or the new file whole;
    # comparing content (not mtime) also catches updates within the mtime's resolution.
    return path.read_bytes()


@dataclass
class FileConfigSource:
    """Polls `path` every `interval_s`; invalid files are reported and the previous config stays."""

    path: Path
    interval_s: float = 1.0

    def __post_init__(self) -> None:
        self._digest: str | None = None

    def load(self) -> RouterConfig:
        """Read the file now (blocking): for startup, before the loop runs."""
        data = _read(self.path)
        self._digest = hashlib.sha256(data).hexdigest()
        return parse_router_config(data)

    async def poll(self, apply: Callable[[RouterConfig], None], report: Callable[[str], None]) -> None:
        """Run until cancelled; `apply` gets each new valid config, `report` each result ("ok" or "error")."""
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                data = await asyncio.to_thread(_read, self.path)
            except OSError as exc:
                log.warning("router config %s unreadable: %s", self.path, exc)
                continue
            digest = hashlib.sha256(data).hexdigest()
            if digest == self._digest:
                continue
            self._digest = digest
            try:
                config = parse_router_config(data)
            except (ValidationError, ValueError) as exc:
                log.error("router config %s rejected, keeping the previous one: %s", self.path, exc)
                report("error")
                continue
            apply(config)
            report("ok")
            log.info("router config reloaded: weights %s", config.weights())
