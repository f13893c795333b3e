"""The operator's outbound HTTP (Prometheus, smoke tests, synthetic traffic): the rules every call keeps.

The operator runs with a cluster-wide identity and its network position; the URLs it calls come from
users' specs (`analysis.prometheusUrl`) or answer with users' images (vLLM, the router). So:
- redirects are never followed: a user's server could otherwise send the operator anywhere (and turn
  a POST into a GET on an internal endpoint);
- bodies are read as a stream and given up past a cap: an endless response cannot exhaust the memory
  of the process that reconciles every tenant;
- each call has a short total timeout;
- Prometheus URLs must match the operator's allowlist (the chart's `analysis.prometheusUrls`);
- errors say what failed (`OutboundError`), never what a remote server answered.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp

MAX_BODY_BYTES = 1 << 20
"""1 MiB: a Prometheus instant query for one number or a chat completion is a few KiB."""
STREAM_MAX_BYTES = 4 << 20
"""A streamed completion (synthetic traffic) is read to its end, up to this much."""


class OutboundError(Exception):
    """An outbound call failed; the message names the failure, never the remote body."""


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes


async def read_capped(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """The body, read chunk by chunk; OutboundError as soon as it exceeds `limit` bytes."""
    declared = response.content_length
    if declared is not None and declared > limit:
        raise OutboundError(f"response of {declared} bytes exceeds the {limit}-byte cap")
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_any():
        size += len(chunk)
        if size > limit:
            raise OutboundError(f"response exceeds the {limit}-byte cap")
        chunks.append(chunk)
    return b"".join(chunks)


async def post(
    session: aiohttp.ClientSession,
    url: str,
    *,
    timeout_s: float | None,
    limit: int = MAX_BODY_BYTES,
    **kwargs: Any,
) -> Response:
    """POST without following redirects, with a capped body; a 3xx answer is an OutboundError.

    `timeout_s` None keeps the session's timeout (a caller that bounds a whole batch).
    """
    timeout = aiohttp.ClientTimeout(total=timeout_s) if timeout_s is not None else None
    try:
        async with session.post(url, allow_redirects=False, timeout=timeout, **kwargs) as response:
            if 300 <= response.status < 400:
                raise OutboundError(f"HTTP {response.status}: redirect not followed")
            return Response(response.status, await read_capped(response, limit))
    except TimeoutError as exc:
        raise OutboundError("timed out") from exc
    except aiohttp.ClientError as exc:
        raise OutboundError(f"request failed: {type(exc).__name__}") from exc


def _origin(url: str) -> tuple[str, str, int | None, str]:
    parts = urlsplit(url)
    default_port = {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower(), parts.port or default_port, parts.path.rstrip("/")


def url_allowed(url: str, allowlist: Sequence[str]) -> bool:
    """Whether `url` is one of `allowlist` (same scheme, host and port; the path under the entry's).

    No user info, query or fragment is accepted: they only serve to disguise where a URL points.
    """
    parts = urlsplit(url)
    if parts.username is not None or parts.password is not None or parts.query or parts.fragment:
        return False
    scheme, host, port, path = _origin(url)
    for entry in allowlist:
        e_scheme, e_host, e_port, e_path = _origin(entry)
        if (scheme, host, port) == (e_scheme, e_host, e_port) and (
            path == e_path or path.startswith(e_path + "/")
        ):
            return True
    return False
