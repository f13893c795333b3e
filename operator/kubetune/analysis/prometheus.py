"""A small client for Prometheus' HTTP API (instant queries only)."""

from __future__ import annotations

import math
from typing import Any

import aiohttp


class PrometheusError(Exception):
    """Prometheus could not be reached or rejected the query."""


class PrometheusClient:
    def __init__(self, base_url: str, session: aiohttp.ClientSession, timeout_s: float = 10.0) -> None:
        self._url = base_url.rstrip("/") + "/api/v1/query"
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)

    async def query(self, promql: str) -> float | None:
        """Evaluate an instant query expected to give one number; None for no data or NaN."""
        try:
            async with self._session.post(
                self._url, data={"query": promql}, timeout=self._timeout
            ) as response:
                document: Any = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise PrometheusError(f"{self._url}: {exc!r}") from exc
        if not isinstance(document, dict) or document.get("status") != "success":
            detail = document.get("error") if isinstance(document, dict) else document
            raise PrometheusError(f"query failed: {detail}; query: {promql}")
        return scalar_of(document["data"])


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
        raise PrometheusError(f"unexpected result type {result_type!r}")
    value = float(raw)
    return None if math.isnan(value) else value
