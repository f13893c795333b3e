"""A stand-in for Prometheus' instant-query API: each PromQL query is answered by a function."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs

from tests.support.local_http import send_json, threaded


@contextmanager
def serve_prometheus(answer: Callable[[str], str]) -> Iterator[str]:
    """Serve `answer(query)` as a one-sample vector; yields the base URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            form = parse_qs(self.rfile.read(int(self.headers["Content-Length"])).decode())
            value = answer(form["query"][0])
            result = [{"metric": {}, "value": [0, value]}]
            send_json(self, {"status": "success", "data": {"resultType": "vector", "result": result}})

        def log_message(self, format: str, *args: Any) -> None:
            pass

    with threaded(Handler) as url:
        yield url
