"""Types shared by both custom resources: the base model, conditions, references."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel
from pydantic.config import JsonDict, JsonValue

GROUP = "kubetune.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

# Kubernetes quantities ("500m", "16Gi", 4) are int-or-string in the API; resources are never negative.
QUANTITY_PATTERN = (
    r"^\+?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    # An integer exponent of at most two digits: the upstream pattern admits "1e1.5", which the quantity
    # parser refuses, and "1e+102266867", which keeps the API server busy past any client's timeout.
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?[0-9]{1,2}))?$"
)
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_1035_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
"""Service names: a DNS label that starts with a letter."""
HEADER_TOKEN_PATTERN = r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$"  # noqa: S105 (a header name pattern)
"""An HTTP header name (RFC 9110 token)."""
LABEL_VALUE_PATTERN = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
"""A label value (nodeSelector values, queue names): at most 63 characters."""
QUALIFIED_NAME_PATTERN = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)
"""A label key or taint key: an optional DNS-subdomain prefix and a name."""
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"


def cel(rule: str, message: str, **extra: str) -> JsonValue:
    """One `x-kubernetes-validations` entry."""
    return {"rule": rule, "message": message, **extra}


def immutable(what: str) -> JsonDict:
    return {"x-kubernetes-validations": [cel("self == oldSelf", f"{what} is immutable")]}


class KubeModel(BaseModel):
    """Base of every API model: camelCase on the wire, unknown fields rejected."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        use_attribute_docstrings=True,
        validate_default=False,
    )

    def to_wire(self) -> dict[str, Any]:
        """Serialise the way the API server stores it (camelCase, no nulls)."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


Quantity = Annotated[
    str | int,
    Field(
        json_schema_extra={
            "x-kubernetes-int-or-string": True,
            "pattern": QUANTITY_PATTERN,
            "maxLength": 32,
            "x-kubernetes-validations": [
                cel("type(self) == string || self >= 0", "must not be negative", reason="FieldValueInvalid")
            ],
        }
    ),
]


class SecretKeyRef(KubeModel):
    """A key in a Secret of the resource's namespace; values never leave the Secret."""

    name: str = Field(min_length=1, max_length=253, description="Name of the Secret.")
    key: str = Field(default="token", min_length=1, max_length=253, description="Key within the Secret.")


class ConfigMapKeyRef(KubeModel):
    """A key in a ConfigMap of the resource's namespace."""

    name: str = Field(min_length=1, max_length=253, description="Name of the ConfigMap.")
    key: str = Field(min_length=1, max_length=253, description="Key within the ConfigMap.")


class Toleration(KubeModel):
    """A pod toleration, as in core/v1 (with its validation: a rendered pod must be accepted)."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "has(self.key) && self.key != '' || has(self.operator) && self.operator == 'Exists'",
                    "a toleration without a key must have operator Exists",
                    fieldPath=".operator",
                ),
                cel(
                    "!has(self.operator) || self.operator != 'Exists' || !has(self.value) "
                    "|| self.value == ''",
                    "a toleration with operator Exists has no value",
                    fieldPath=".value",
                ),
                cel(
                    "!has(self.tolerationSeconds) || has(self.effect) && self.effect == 'NoExecute'",
                    "tolerationSeconds needs effect NoExecute",
                    fieldPath=".tolerationSeconds",
                ),
            ]
        }
    )

    key: str | None = Field(
        default=None,
        max_length=317,
        pattern=QUALIFIED_NAME_PATTERN,
        description="Taint key the toleration applies to.",
    )
    operator: Literal["Exists", "Equal"] | None = Field(default=None, description="Exists or Equal.")
    value: str | None = Field(
        default=None, max_length=63, pattern=LABEL_VALUE_PATTERN, description="Taint value for Equal."
    )
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        default=None, description="Taint effect to tolerate; empty tolerates all."
    )
    toleration_seconds: int | None = Field(
        default=None, ge=0, description="How long a NoExecute taint is tolerated."
    )


ConditionStatus = Literal["True", "False", "Unknown"]


class Condition(KubeModel):
    """A Kubernetes-style condition (metav1.Condition)."""

    type: str = Field(max_length=316, description="CamelCase condition type.")
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: str = Field(max_length=1024, description="CamelCase machine-readable reason.")
    message: str = Field(default="", max_length=32768, description="Human-readable detail.")
    last_transition_time: datetime = Field(description="When status last changed.")
    observed_generation: int | None = Field(
        default=None, ge=0, description="The .metadata.generation this condition was computed from."
    )


CONDITIONS_LIST: JsonDict = {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]}


def conditions_field() -> Any:
    return Field(
        default_factory=list,
        max_length=32,
        description="Current state, one entry per condition type.",
        json_schema_extra=CONDITIONS_LIST,
    )


class ImageOverrides(KubeModel):
    """Container image overrides for this resource's pods."""

    image: str | None = Field(default=None, max_length=512, description="Image reference.")
    pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = Field(
        default=None, description="Image pull policy."
    )
