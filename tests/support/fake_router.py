"""A stand-in for the router pods' `GET /kubetune/config` read-back, driven by the test."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web
from tests.support.fake_kube import FakeKube

from kubetune.api.routerconfig import CONFIG_FILE_NAME


class FakeRouter:
    """`GET /kubetune/config` answering the split the test says the router has loaded."""

    def __init__(self) -> None:
        self.loaded: dict[str, Any] | None = None

    async def handle(self, request: web.Request) -> web.Response:
        if self.loaded is None:
            return web.Response(status=503)
        return web.json_response({"config": self.loaded, "routable": {}})

    def reload_from(self, kube: FakeKube) -> None:
        configmap = kube.find("v1", "ConfigMap", "ml", "chat-router")
        assert configmap is not None
        self.loaded = json.loads(configmap["data"][CONFIG_FILE_NAME])
