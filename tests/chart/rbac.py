"""RBAC rules as the set of (apiGroup, resource, verb) they grant, to compare rule lists however split."""

from __future__ import annotations

from typing import Any

Triple = tuple[str, str, str]


def triples(rules: list[dict[str, Any]]) -> set[Triple]:
    return {
        (g, r, v)
        for rule in rules
        for g in rule["apiGroups"]
        for r in rule["resources"]
        for v in rule["verbs"]
    }
