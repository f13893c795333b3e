"""Every API permission the operator uses, in one place.

The Helm chart's ClusterRole is rendered from this list, and a test checks that the
installed chart grants exactly these verbs (SubjectAccessReview against the real
API server). Add a rule here in the same change that adds the API call.
"""

from __future__ import annotations

from dataclasses import dataclass

READ = ("get", "list", "watch")
OWN = (*READ, "create", "patch", "delete")  # children: server-side apply is PATCH


@dataclass(frozen=True)
class Rule:
    api_group: str
    resources: tuple[str, ...]
    verbs: tuple[str, ...]
    why: str

    def to_manifest(self) -> dict[str, list[str]]:
        return {"apiGroups": [self.api_group], "resources": list(self.resources), "verbs": list(self.verbs)}


OPERATOR_RULES: tuple[Rule, ...] = (
    Rule(
        "kubetune.io",
        ("finetunejobs", "modeldeployments", "finetuneschedules"),
        READ,
        "watch our resources (never written: no annotations, no finalizers, no spec)",
    ),
    Rule(
        "kubetune.io",
        ("finetunejobs",),
        ("create", "delete"),
        "a FineTuneSchedule's runs: created once (no patch: a run's spec is never rewritten), deleted by"
        " the history limits and concurrencyPolicy Replace",
    ),
    Rule(
        "kubetune.io",
        ("finetunejobs/status", "modeldeployments/status", "finetuneschedules/status"),
        ("get", "patch"),
        "write status (the operator never writes spec)",
    ),
    Rule("", ("events",), ("create", "patch"), "Events on phase transitions (kopf posts core/v1 events)"),
    Rule("events.k8s.io", ("events",), ("create", "patch"), "Events through the events.k8s.io API"),
    Rule(
        "apiextensions.k8s.io",
        ("customresourcedefinitions",),
        READ,
        "kopf scans CRDs; detect optional Prometheus Operator / Gateway API / KEDA CRDs",
    ),
    Rule("", ("namespaces",), READ, "kopf cluster-wide namespace scanning"),
    Rule("", ("nodes",), ("list",), "preflight: GPUs per node by nvidia.com/gpu.product"),
    Rule("", ("pods",), READ, "observe training pods (termination messages, scheduling) and serving pods"),
    Rule(
        "",
        ("configmaps", "services", "serviceaccounts"),
        OWN,
        "training config, rendezvous and variant Services, router config, trainer identity",
    ),
    Rule(
        "",
        ("secrets",),
        ("get", "create"),
        "the router's token Secret: created once per ModelDeployment, read back by name; no list or watch"
        " (no enumerating Secrets) and no patch/update/delete (an existing one is never rewritten)",
    ),
    Rule("batch", ("jobs",), OWN, "validation and training Jobs; gang restart recreates them"),
    Rule(
        "rbac.authorization.k8s.io",
        ("roles", "rolebindings"),
        OWN,
        "per-job Role letting rank 0 patch only its FineTuneJob's status",
    ),
    Rule("apps", ("deployments",), OWN, "vLLM variants and the router"),
    Rule("policy", ("poddisruptionbudgets",), OWN, "PDB per multi-replica variant"),
    Rule("autoscaling", ("horizontalpodautoscalers",), OWN, "queue-depth autoscaling"),
    Rule("monitoring.coreos.com", ("podmonitors",), OWN, "scrape vLLM and router pods when the CRD exists"),
    Rule("gateway.networking.k8s.io", ("httproutes",), OWN, "gateway-api traffic provider"),
    Rule(
        "gateway.networking.k8s.io",
        ("gateways",),
        ("get",),
        "the route's Gateway: its address is status.endpoint",
    ),
    Rule("inference.networking.k8s.io", ("inferencepools",), OWN, "inference-pool traffic provider"),
    Rule("keda.sh", ("scaledobjects",), OWN, "KEDA autoscaling when the CRD exists"),
)

# What a training pod's ServiceAccount may do (bound per job by a Role with resourceNames).
TRAINER_RULES: tuple[Rule, ...] = (
    Rule("kubetune.io", ("finetunejobs/status",), ("get", "patch"), "rank 0 reports status.progress"),
)


def cluster_role_rules() -> list[dict[str, list[str]]]:
    return [rule.to_manifest() for rule in OPERATOR_RULES]
