"""The one module that talks HTTP to the Kubernetes API.

A thin aiohttp client: server-side apply with one field manager, merge-patches of
status, reads, deletes. Resource paths come from a fixed table of the kinds we
touch, so no discovery round-trips are needed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlencode

import aiohttp

from kubetune.builders.common import FIELD_MANAGER
from kubetune.kube.config import Credentials, load_credentials

__all__ = ["RESOURCES", "ApiError", "Credentials", "KubeClient", "load_credentials"]

USER_AGENT = "kubetune-operator/0.1"

# (apiVersion, kind) → (plural, namespaced)
RESOURCES: dict[tuple[str, str], tuple[str, bool]] = {
    ("v1", "ConfigMap"): ("configmaps", True),
    ("v1", "Service"): ("services", True),
    ("v1", "ServiceAccount"): ("serviceaccounts", True),
    ("v1", "Pod"): ("pods", True),
    ("v1", "Event"): ("events", True),
    ("v1", "Secret"): ("secrets", True),
    ("v1", "Namespace"): ("namespaces", False),
    ("v1", "Node"): ("nodes", False),
    ("batch/v1", "Job"): ("jobs", True),
    ("apps/v1", "Deployment"): ("deployments", True),
    ("policy/v1", "PodDisruptionBudget"): ("poddisruptionbudgets", True),
    ("networking.k8s.io/v1", "NetworkPolicy"): ("networkpolicies", True),
    ("autoscaling/v2", "HorizontalPodAutoscaler"): ("horizontalpodautoscalers", True),
    ("rbac.authorization.k8s.io/v1", "Role"): ("roles", True),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): ("rolebindings", True),
    ("monitoring.coreos.com/v1", "PodMonitor"): ("podmonitors", True),
    ("monitoring.coreos.com/v1", "ServiceMonitor"): ("servicemonitors", True),
    ("gateway.networking.k8s.io/v1", "HTTPRoute"): ("httproutes", True),
    ("gateway.networking.k8s.io/v1", "Gateway"): ("gateways", True),
    ("inference.networking.k8s.io/v1", "InferencePool"): ("inferencepools", True),
    ("keda.sh/v1alpha1", "ScaledObject"): ("scaledobjects", True),
    ("kubetune.io/v1alpha1", "FineTuneJob"): ("finetunejobs", True),
    ("kubetune.io/v1alpha1", "ModelDeployment"): ("modeldeployments", True),
    ("kubetune.io/v1alpha1", "FineTuneSchedule"): ("finetuneschedules", True),
    ("apiextensions.k8s.io/v1", "CustomResourceDefinition"): ("customresourcedefinitions", False),
}


class ApiError(Exception):
    """A non-2xx answer from the API server, with its Status reason and message."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def conflict(self) -> bool:
        return self.status == 409

    @property
    def retryable(self) -> bool:
        return self.status in (409, 429) or self.status >= 500


def resource_path(
    api_version: str,
    kind: str,
    namespace: str | None,
    name: str | None = None,
    subresource: str | None = None,
) -> str:
    try:
        plural, namespaced = RESOURCES[(api_version, kind)]
    except KeyError:
        raise ValueError(f"kubetune does not manage {api_version} {kind}") from None
    base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    if namespaced:
        if not namespace:
            raise ValueError(f"{kind} is namespaced: a namespace is required")
        base += f"/namespaces/{namespace}"
    path = f"{base}/{plural}"
    if name:
        path += f"/{name}"
    if subresource:
        path += f"/{subresource}"
    return path


def object_path(obj: Mapping[str, Any], subresource: str | None = None) -> str:
    meta = obj["metadata"]
    return resource_path(obj["apiVersion"], obj["kind"], meta.get("namespace"), meta["name"], subresource)


class KubeClient:
    """Async client for the handful of verbs the operator uses."""

    def __init__(
        self, credentials: Credentials, *, timeout: float = 30.0, user_agent: str = USER_AGENT
    ) -> None:
        self.user_agent = user_agent
        self.credentials = credentials
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None
        self.requests = 0  # counted for the scale benchmark (API requests per object)

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(ssl=self.credentials.ssl_context, limit=64)
            self._session = aiohttp.ClientSession(
                base_url=self.credentials.server, connector=connector, timeout=self._timeout
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        content_type: str = "application/json",
        params: Mapping[str, str] | None = None,
    ) -> Any:
        data = json.dumps(body) if body is not None else None
        url = path + ("?" + urlencode(params) if params else "")
        renew = False
        while True:
            headers = {
                **await self.credentials.headers(renew=renew),
                "Accept": "application/json",
                "User-Agent": self.user_agent,
            }
            if data is not None:
                headers["Content-Type"] = content_type
            self.requests += 1
            async with self.session.request(method, url, data=data, headers=headers) as resp:
                text = await resp.text()
                # A rejected token is renewed once (an exec plugin runs again) before the 401 counts.
                if resp.status == 401 and self.credentials.renewable and not renew:
                    renew = True
                    continue
                payload = json.loads(text) if text and resp.content_type == "application/json" else text
                if resp.status >= 400:
                    if isinstance(payload, dict):
                        raise ApiError(
                            resp.status, str(payload.get("reason", "")), str(payload.get("message", text))
                        )
                    raise ApiError(resp.status, resp.reason or "", text)
                return payload

    async def get(
        self, api_version: str, kind: str, namespace: str | None, name: str
    ) -> dict[str, Any] | None:
        try:
            obj: dict[str, Any] = await self.request("GET", resource_path(api_version, kind, namespace, name))
        except ApiError as exc:
            if exc.not_found:
                return None
            raise
        return obj

    async def list(
        self, api_version: str, kind: str, namespace: str | None, *, label_selector: str | None = None
    ) -> list[dict[str, Any]]:
        params = {"labelSelector": label_selector} if label_selector else None
        result = await self.request("GET", resource_path(api_version, kind, namespace), params=params)
        items: list[dict[str, Any]] = result.get("items", [])
        for item in items:
            item.setdefault("apiVersion", api_version)
            item.setdefault("kind", kind)
        return items

    async def apply(
        self,
        manifest: Mapping[str, Any],
        *,
        field_manager: str = FIELD_MANAGER,
        subresource: str | None = None,
    ) -> dict[str, Any]:
        """Server-side apply (create or update), forcing ownership of the fields we set."""
        obj: dict[str, Any] = await self.request(
            "PATCH",
            object_path(manifest, subresource),
            body=manifest,
            content_type="application/apply-patch+yaml",
            params={"fieldManager": field_manager, "force": "true"},
        )
        return obj

    async def ensure(self, manifest: Mapping[str, Any]) -> None:
        """Create if absent (a POST is cheaper for the API server than an apply); else server-side apply.

        Both end with the object owned by our field manager, so later applies converge it.
        """
        try:
            await self.create(manifest)
        except ApiError as exc:
            if exc.status != 409:
                raise
            await self.apply(manifest)

    async def patch_merge(
        self,
        api_version: str,
        kind: str,
        namespace: str | None,
        name: str,
        patch: Any,
        *,
        subresource: str | None = None,
    ) -> dict[str, Any]:
        obj: dict[str, Any] = await self.request(
            "PATCH",
            resource_path(api_version, kind, namespace, name, subresource),
            body=patch,
            content_type="application/merge-patch+json",
            params={"fieldManager": FIELD_MANAGER},
        )
        return obj

    async def patch_json(
        self, obj: Mapping[str, Any], operations: Sequence[Mapping[str, Any]]
    ) -> dict[str, Any]:
        """A JSON patch (RFC 6902; `test` operations make it conditional) of `obj`'s path."""
        stored: dict[str, Any] = await self.request(
            "PATCH",
            object_path(obj),
            body=operations,
            content_type="application/json-patch+json",
            params={"fieldManager": FIELD_MANAGER},
        )
        return stored

    async def create(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        meta = manifest["metadata"]
        obj: dict[str, Any] = await self.request(
            "POST",
            resource_path(manifest["apiVersion"], manifest["kind"], meta.get("namespace")),
            body=manifest,
            params={"fieldManager": FIELD_MANAGER},
        )
        return obj

    async def delete(
        self,
        api_version: str,
        kind: str,
        namespace: str | None,
        name: str,
        *,
        propagation: str = "Background",
        uid: str | None = None,
    ) -> bool:
        """Delete (optionally only if the uid still matches); False when already gone."""
        body: dict[str, Any] = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": propagation}
        if uid:
            body["preconditions"] = {"uid": uid}
        try:
            await self.request("DELETE", resource_path(api_version, kind, namespace, name), body=body)
        except ApiError as exc:
            if exc.not_found:
                return False
            raise
        return True

    async def crd_exists(self, name: str) -> bool:
        return await self.get("apiextensions.k8s.io/v1", "CustomResourceDefinition", None, name) is not None
