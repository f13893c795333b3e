"""Every API permission the operator uses, in one place.

The Helm chart's ClusterRole is rendered from this list, and a test checks that the
installed chart grants exactly these verbs (SubjectAccessReview against the real
API server); another (tests/unit/test_rbac_usage.py) records the operator's calls and
fails on a verb nothing calls as on a call nothing grants. Add a rule here in the same
change that adds the API call.
"""

from __future__ import annotations

from dataclasses import dataclass

READ = ("get", "list", "watch")
# Children, create-or-own: read by name (is it ours?), created (POST), then server-side applied (PATCH).
OWN = ("get", "create", "patch")
# Children a ModelDeployment prunes: listed by its label, deleted by uid.
PRUNED = (*OWN, "list", "delete")
# Children whose status drives a pass: kopf watches them too.
WATCHED = (*PRUNED, "watch")


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
        ("patch",),
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
    Rule("", ("pods",), ("list",), "training pods (termination messages, scheduling) and serving pods"),
    Rule(
        "",
        ("configmaps", "services"),
        PRUNED,
        "training config, the trainer's report ConfigMap (read each pass; patch is also what its Role"
        " grants), rendezvous and variant Services, router config",
    ),
    Rule("", ("serviceaccounts",), OWN, "trainer identity (deleted by garbage collection only)"),
    Rule(
        "",
        ("secrets",),
        ("get", "create"),
        "the router's token Secret: created once per ModelDeployment, read back by name; no list or watch"
        " (no enumerating Secrets) and no patch/update/delete (an existing one is never rewritten)",
    ),
    Rule("batch", ("jobs",), WATCHED, "validation and training Jobs; gang restart recreates them"),
    Rule(
        "rbac.authorization.k8s.io",
        ("roles", "rolebindings"),
        OWN,
        "per-job Role letting rank 0 patch only its report ConfigMap (deleted by garbage collection)",
    ),
    Rule("apps", ("deployments",), WATCHED, "vLLM variants and the router"),
    Rule("policy", ("poddisruptionbudgets",), PRUNED, "PDB per multi-replica variant"),
    Rule(
        "networking.k8s.io",
        ("networkpolicies",),
        PRUNED,
        "who may reach vLLM pods (router, operator, Prometheus) and a training gang (its members)",
    ),
    Rule("autoscaling", ("horizontalpodautoscalers",), PRUNED, "queue-depth autoscaling"),
    Rule("monitoring.coreos.com", ("podmonitors",), PRUNED, "scrape vLLM and router pods (CRD present)"),
    Rule("gateway.networking.k8s.io", ("httproutes",), PRUNED, "gateway-api traffic provider"),
    Rule(
        "gateway.networking.k8s.io",
        ("gateways",),
        ("get",),
        "the route's Gateway: its address is status.endpoint",
    ),
    Rule("inference.networking.k8s.io", ("inferencepools",), PRUNED, "inference-pool traffic provider"),
    Rule("keda.sh", ("scaledobjects",), PRUNED, "KEDA autoscaling when the CRD exists"),
)

# What a training pod's ServiceAccount may do (bound per job by a Role with resourceNames): write its
# report, which the operator validates; never the FineTuneJob or its status.
TRAINER_RULES: tuple[Rule, ...] = (
    Rule("", ("configmaps",), ("patch",), "rank 0 merge-patches its report ConfigMap (<job>-progress)"),
)


def cluster_role_rules() -> list[dict[str, list[str]]]:
    return [rule.to_manifest() for rule in OPERATOR_RULES]
