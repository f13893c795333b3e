"""The router's configuration: written by the operator into a ConfigMap, hot-reloaded by the router.

The same model is the contract on both sides, so the operator cannot render a config the router rejects.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from pydantic import ConfigDict, Field, field_validator, model_validator

from kubetune.api.common import DNS_LABEL_PATTERN, KubeModel

CONFIG_FILE_NAME = "router.json"
"""Key in the ConfigMap and file name in the mounted volume."""

OVERRIDE_HEADER = "x-kubetune-variant"
SYNTHETIC_HEADER = "x-kubetune-synthetic"
VARIANT_RESPONSE_HEADER = "x-kubetune-served-by"

TOKEN_HEADER = "x-kubetune-token"  # noqa: S105 (a header name, not a secret)
"""Carries the operator's shared token: without it the override and synthetic headers are ignored."""
METRIC_PREFIX = "kubetune_router_"
"""Prefix of every router series (dashboards, alerts and the canary analysis select on it)."""

_HEADER_NAME_PATTERN = r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$"

# The router (router/, Go) validates the same document against the JSON Schema generated from these models
# (`python -m kubetune.routerschema`), so every constraint lives in a Field, and scalars are strict: a JSON
# decoder takes "50" or 50.0 for neither an integer nor a boolean, so neither may the model.
Endpoint = Annotated[str, Field(pattern=r"^https?://")]


class RouterVariant(KubeModel):
    """One traffic target: a variant's upstream endpoints and its share."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(max_length=40, pattern=DNS_LABEL_PATTERN, description="Variant name (metric label).")
    weight: int = Field(
        ge=0, le=100, strict=True, description="Share of traffic, percent; 0 takes only overridden requests."
    )
    endpoints: tuple[Endpoint, ...] = Field(
        default=(),
        max_length=256,
        description="Upstream OpenAI API base URLs (scheme://host:port), tried round robin.",
    )
    served_model: str | None = Field(
        default=None,
        max_length=256,
        description="Rewrite the request's `model` to this (LoRA adapter name on a shared base).",
    )
    ready: bool = Field(default=True, strict=True, description="False removes the variant from the split.")

    @field_validator("endpoints")
    @classmethod
    def _endpoints_are_base_urls(cls, endpoints: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(url.rstrip("/") for url in endpoints)


class RouterTimeouts(KubeModel):
    """Upstream timeouts, seconds."""

    model_config = ConfigDict(frozen=True)

    connect_s: float = Field(
        default=5.0, gt=0, le=300, strict=True, description="TCP connect to an upstream."
    )
    read_s: float = Field(
        default=300.0,
        gt=0,
        le=3600,
        strict=True,
        description="Longest silence from an upstream, before or between bytes (a prefill can be long).",
    )
    total_s: float | None = Field(
        default=None, gt=0, le=86400, strict=True, description="Whole request; none = unbounded."
    )


class RouterConfig(KubeModel):
    """Everything the router needs; one JSON document."""

    model_config = ConfigDict(frozen=True)

    variants: tuple[RouterVariant, ...] = Field(min_length=1, max_length=16, description="Traffic targets.")
    revision: int = Field(
        default=0,
        ge=0,
        strict=True,
        description=(
            "Orders configs: a router installs one (from its file or pushed by the operator) only when its "
            "revision is at least the one it serves, so a file the kubelet has not synced yet never undoes "
            "a push. Unix milliseconds of the content's first write, above the previous revision."
        ),
    )
    model_deployment: str | None = Field(
        default=None,
        max_length=253,
        description="The ModelDeployment this router fronts: a constant model_deployment label on metrics.",
    )
    sticky_header: str | None = Field(
        default="x-user-id",
        max_length=128,
        pattern=_HEADER_NAME_PATTERN,
        description="Header pinning a user to a variant; the API key's hash when absent; none = random.",
    )
    override_header: str = Field(
        default=OVERRIDE_HEADER, max_length=128, pattern=_HEADER_NAME_PATTERN, description="Forces a variant."
    )
    synthetic_header: str = Field(
        default=SYNTHETIC_HEADER,
        max_length=128,
        pattern=_HEADER_NAME_PATTERN,
        description="Marks analysis traffic: labelled source=synthetic in every metric.",
    )
    max_body_bytes: int = Field(
        default=8 * 1024 * 1024, ge=1024, le=1024**3, strict=True, description="Request body limit."
    )
    max_attempts: int = Field(
        default=3,
        ge=1,
        le=10,
        strict=True,
        description="Upstream attempts per request; retries happen only before any byte.",
    )
    endpoint_cooldown_s: float = Field(
        default=5.0,
        ge=0,
        le=3600,
        strict=True,
        description="How long an endpoint that refused a connection is skipped.",
    )
    timeouts: RouterTimeouts = Field(default_factory=RouterTimeouts, description="Upstream timeouts.")

    @model_validator(mode="after")
    def _unique_names(self) -> RouterConfig:
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise ValueError(f"variant names must be unique: {names}")
        return self

    def weights(self) -> dict[str, int]:
        """Configured weights by variant: what the operator reads back as the observed split."""
        return {v.name: v.weight for v in self.variants}

    def to_json(self) -> str:
        """The ConfigMap payload: stable key order, so an unchanged config is byte-identical."""
        return json.dumps(self.to_wire(), sort_keys=True, indent=2) + "\n"


def parse_router_config(text: str | bytes) -> RouterConfig:
    """Parse a router config (JSON, as the router reads it); raises pydantic.ValidationError or ValueError."""
    data: Any = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError("router config must be a mapping")
    # camelCase only (not the Python field names KubeModel also takes): exactly what the JSON Schema allows.
    return RouterConfig.model_validate(data, by_alias=True, by_name=False)
