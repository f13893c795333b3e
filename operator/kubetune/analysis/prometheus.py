"""A small client for Prometheus' HTTP API (instant queries only).

Outbound rules (`kubetune.outbound`): the URL must be on the operator's allowlist, no redirects, a
capped body, a short timeout; errors name the URL and what failed, never Prometheus' answer.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import aiohttp

from kubetune.outbound import OutboundError, post, url_allowed

TIMEOUT_S = 5.0


class PrometheusError(Exception):
    """Prometheus could not be reached or rejected the query."""


class PrometheusClient:
    def __init__(
        self,
        base_url: str,
        session: aiohttp.ClientSession,
        timeout_s: float = TIMEOUT_S,
        *,
        allowed: Sequence[str] | None = None,
    ) -> None:
        """`allowed`: the URLs the operator may query (None: any, for tests that start their own)."""
        if allowed is not None and not url_allowed(base_url, allowed):
            raise PrometheusError(
                f"prometheusUrl {base_url} is not on the operator's allowlist "
                "(chart value analysis.prometheusUrls)"
            )
        self._base = base_url.rstrip("/")
        self._url = self._base + "/api/v1/query"
        self._session = session
        self._timeout_s = timeout_s

    async def query(self, promql: str) -> float | None:
        """Evaluate an instant query expected to give one number; None for no data or NaN."""
        try:
            response = await post(self._session, self._url, timeout_s=self._timeout_s, data={"query": promql})
            document: Any = json.loads(response.body)
        except OutboundError as exc:
            raise PrometheusError(f"{self._base}: {exc}") from exc
        except ValueError as exc:
            raise PrometheusError(f"{self._base}: HTTP {response.status}, not a JSON document") from exc
        if not isinstance(document, dict) or document.get("status") != "success":
            # Prometheus' own error text is not repeated: say which query failed, not what it said.
            raise PrometheusError(f"{self._base}: HTTP {response.status}, query rejected: {promql}")
        try:
            return scalar_of(document["data"])
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise PrometheusError(f"{self._base}: malformed result for query: {promql}") from exc


def scalar_of(data: dict[str, Any]) -> float | None:
    """The single value of an instant-query result (vector of one sample, or scalar).

    NaN (0/0: no requests in the window) is no data; +Inf (a quantile above the top bucket) is kept.
    """
    result_type = data.get("resultType")
    result = data.get("result")
    if result_type == "scalar" and isinstance(result, list):
        raw = result[1]
    elif result_type == "vector" and isinstance(result, list):
        if not result:
            return None
        if len(result) > 1:
            raise PrometheusError(f"expected one series, got {len(result)}")
        raw = result[0]["value"][1]
    else:
        raise PrometheusError(f"unexpected result type {str(result_type)[:32]!r}")
    value = float(raw)
    return None if math.isnan(value) else value
