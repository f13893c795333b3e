"""Admission-time checks the schema cannot express, shared by both kinds."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from kubetune.api.common import Condition
from kubetune.api.conditions import ConditionType, Reason
from kubetune.status.conditions import set_condition

M = TypeVar("M", bound=BaseModel)


def parse_spec(model: type[M], obj: Mapping[str, Any]) -> tuple[M | None, str]:
    """The typed spec, or None and a message naming each offending field."""
    try:
        return model.model_validate(obj.get("spec") or {}), ""
    except ValidationError as exc:
        problems = [
            f"spec.{'.'.join(str(p) for p in err['loc'])}: {err['msg']}"
            for err in exc.errors(include_url=False)
        ]
        return None, "; ".join(problems)


def accepted(
    conditions: list[Condition], generation: int | None, now: datetime, *, problem: str = ""
) -> list[Condition]:
    if problem:
        return set_condition(
            conditions, ConditionType.ACCEPTED, "False", Reason.INVALID_SPEC, problem, generation, now
        )
    return set_condition(
        conditions, ConditionType.ACCEPTED, "True", Reason.ACCEPTED, "spec is valid", generation, now
    )
