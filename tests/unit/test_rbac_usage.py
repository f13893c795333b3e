"""rbac.OPERATOR_RULES is exactly what the operator calls: no verb missing, and no verb unused; the
trainer's per-job Role, likewise, is exactly what rank 0 calls.

The calls are recorded: reconcile passes that exercise every child kind (creation, a repeated pass,
an operator restart, suspension, a removed variant pruned, every optional CRD present) run on the
in-memory API, and the status write and Event post of the controller are added. What kopf itself
needs (its watches and scans) is listed with the reason. A rule granting a verb nothing calls fails
here, as does a call no rule grants.
"""

from __future__ import annotations

import re
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

from tests.serving.objects import model_deployment
from tests.support.fake_kube import FakeKube
from tests.support.manifests import ftj, fts

from kubetune.builders.finetunejob import build_children, build_training_config
from kubetune.controller.events import post_event
from kubetune.kube.client import RESOURCES
from kubetune.kube.status import write_status
from kubetune.planning.plan import Event
from kubetune.rbac import OPERATOR_RULES
from kubetune.reconcile.finetunejob import FineTuneJobReconciler
from kubetune.reconcile.finetuneschedule import FineTuneScheduleReconciler
from kubetune.reconcile.modeldeployment import ModelDeploymentReconciler
from kubetune.settings import OperatorSettings
from kubetune.trainer.progress import KubeCredentials, KubeReportReporter, ProgressUpdate

NOW = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)
Triple = tuple[str, str, str]

# kopf's watch streams (handlers/__init__.py) and its cluster scans: calls made by the framework.
FRAMEWORK: dict[Triple, str] = {
    **{
        ("kubetune.io", plural, verb): "kopf watches our kinds"
        for plural in ("finetunejobs", "modeldeployments", "finetuneschedules")
        for verb in ("list", "watch")
    },
    **{("batch", "jobs", verb): "kopf watches the Jobs (child status)" for verb in ("list", "watch")},
    **{("apps", "deployments", verb): "kopf watches the Deployments" for verb in ("list", "watch")},
    **{
        ("apiextensions.k8s.io", "customresourcedefinitions", verb): "kopf scans CRDs"
        for verb in ("list", "watch")
    },
    **{("", "namespaces", verb): "kopf's cluster-wide namespace scan" for verb in ("get", "list", "watch")},
    ("", "events", "patch"): "kopf posts and updates core/v1 Events",
    **{
        ("events.k8s.io", "events", verb): "Events through the events.k8s.io API"
        for verb in ("create", "patch")
    },
}
# A status write is a PATCH of the status subresource; the resource's own get is the fresh read.
SUBRESOURCE_GET_UNUSED: set[Triple] = set()


class JobsUnlisted(FakeKube):
    """Lists no Jobs: the pass believes its Job absent and creates it again."""

    async def list(
        self, api_version: str, kind: str, namespace: str | None, *, label_selector: str | None = None
    ) -> list[dict[str, Any]]:
        if kind == "Job":
            self._record("list", kind, "")
            return []
        return await super().list(api_version, kind, namespace, label_selector=label_selector)


def triples(kube: FakeKube) -> set[Triple]:
    verb_of = {"apply": "patch", "patch/json": "patch", "patch": "patch", "create": "create", "get": "get"}
    by_kind = {kind: (api_version, plural) for (api_version, kind), (plural, _) in RESOURCES.items()}
    found: set[Triple] = set()
    for verb, kind, _ in kube.calls:
        api_version, plural = by_kind[kind]
        group = api_version.rpartition("/")[0]
        if verb == "patch/status":
            found.add((group, f"{plural}/status", "patch"))
        else:
            found.add((group, plural, verb_of.get(verb, verb)))
    return found


async def recorded_calls() -> set[Triple]:
    crds = {
        "podmonitors.monitoring.coreos.com",
        "scaledobjects.keda.sh",
        "httproutes.gateway.networking.k8s.io",
        "inferencepools.inference.networking.k8s.io",
    }
    calls: set[Triple] = set()
    # FineTuneJob: validation, training, a restarted operator's full apply, a running Job's limit
    # patched, suspension (under Kueue: the gang is deleted).
    for queue in (None, "team"):
        jobs = FineTuneJobReconciler(OperatorSettings())
        obj = ftj(resources={"nodes": 2, "gpusPerNode": 1, **({"queueName": queue} if queue else {})})
        obj["metadata"]["uid"] = f"u-{queue}"
        kube = FakeKube(crds=crds)
        await jobs.reconcile(kube, obj, NOW, resync=False)  # type: ignore[arg-type]
        validate = kube.find("batch/v1", "Job", "ns", "demo-validate")
        assert validate is not None
        validate["status"] = {"conditions": [{"type": "Complete", "status": "True"}]}
        await jobs.reconcile(kube, obj, NOW, resync=False)  # type: ignore[arg-type]
        jobs.forget(obj["metadata"]["uid"])
        await jobs.reconcile(kube, obj, NOW, resync=True)  # type: ignore[arg-type]
        # A Job created by another pass between this one's listing and its create: read, found ours.
        racing = JobsUnlisted(crds=crds)
        racing.objects = kube.objects
        await FineTuneJobReconciler(OperatorSettings()).reconcile(racing, obj, NOW, resync=False)  # type: ignore[arg-type]
        calls |= triples(racing)
        obj["spec"]["runPolicy"] = {"activeDeadlineSeconds": 3600}
        await jobs.reconcile(kube, obj, NOW, resync=False)  # type: ignore[arg-type]
        obj["spec"]["runPolicy"] = {"suspend": True}
        await jobs.reconcile(kube, obj, NOW, resync=False)  # type: ignore[arg-type]
        calls |= triples(kube)
    # ModelDeployment, with every optional CRD and without KEDA (HPA): autoscaled and multi-replica
    # variants applied twice (created, then applied), one removed (pruned), then an HTTPRoute applied
    # twice and removed again by switching back to the router.
    variants = [
        {"name": "a", "model": {"uri": "pvc://models/a"}, "weight": 70, "replicas": 2},
        {
            "name": "b",
            "model": {"uri": "pvc://models/b"},
            "weight": 30,
            "autoscaling": {"minReplicas": 1, "maxReplicas": 3},
        },
    ]
    alone = [{**variants[0], "weight": 100}]
    gateway = {"provider": "gateway-api", "gatewayParentRefs": [{"name": "g"}]}
    for cluster in (FakeKube(crds=crds), FakeKube(crds=crds - {"scaledobjects.keda.sh"})):
        serving = ModelDeploymentReconciler(OperatorSettings(prometheus_url="http://prometheus:9090"))
        for spec in (
            model_deployment(variants),
            model_deployment(variants),
            model_deployment(alone),
            model_deployment(alone, traffic=gateway),
            model_deployment(alone, traffic=gateway),
            model_deployment(alone),
        ):
            await serving.reconcile(cluster, spec, NOW, resync=False)  # type: ignore[arg-type]
        # A restarted operator: its children exist, unknown to it (create answers 409, then a read).
        for _ in range(2):  # the first restart recreates the pruned variant, the second finds it
            restarted = ModelDeploymentReconciler(OperatorSettings(prometheus_url="http://prometheus:9090"))
            await restarted.reconcile(cluster, model_deployment(variants), NOW, resync=False)  # type: ignore[arg-type]
        calls |= triples(cluster)
    calls |= await inference_pool_calls(crds, alone)
    # A variant following a FineTuneSchedule: the schedule is read (get), never written.
    following = FakeKube(crds=crds)
    followed = [{"name": "f", "model": {"finetuneScheduleRef": {"name": "weekly"}}, "weight": 100}]
    await ModelDeploymentReconciler(OperatorSettings()).reconcile(
        following, model_deployment(followed), NOW, resync=False
    )  # type: ignore[arg-type]
    assert ("kubetune.io", "finetuneschedules", "get") in triples(following)
    calls |= triples(following)
    calls |= await schedule_calls()
    mdep = model_deployment(variants)
    kube = FakeKube()
    # The controller: the fresh read, the status write, an Event.
    for parent in (obj, mdep, schedule()):
        await kube.get(parent["apiVersion"], parent["kind"], "ns", parent["metadata"]["name"])
        kube.put(parent)
        await write_status(kube, parent, {"phase": "Pending"})  # type: ignore[arg-type]
        await post_event(kube, parent, Event("Normal", "Accepted", "accepted"), NOW, "test")  # type: ignore[arg-type]
    return calls | triples(kube)


def accepted_by_gateway(route: dict[str, Any]) -> None:
    """What a Gateway controller writes when it takes the route (Accepted, ResolvedRefs)."""
    generation = route["metadata"]["generation"]
    route["status"] = {
        "parents": [
            {
                "parentRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "g"},
                "controllerName": "example.com/gateway",
                "conditions": [
                    {"type": kind, "status": "True", "observedGeneration": generation}
                    for kind in ("Accepted", "ResolvedRefs")
                ],
            }
        ]
    }


async def inference_pool_calls(crds: set[str], variants: list[dict[str, Any]]) -> set[Triple]:
    """InferencePools applied, the route accepted (its Gateway read for the endpoint), then pruned."""
    cluster = FakeKube(crds=crds)
    serving = ModelDeploymentReconciler(OperatorSettings(prometheus_url="http://prometheus:9090"))
    pools = {"provider": "inference-pool", "gatewayParentRefs": [{"name": "g"}]}
    await serving.reconcile(cluster, model_deployment(variants, traffic=pools), NOW, resync=False)  # type: ignore[arg-type]
    route = next(o for o in cluster.objects.values() if o["kind"] == "HTTPRoute")
    accepted_by_gateway(route)
    await serving.reconcile(cluster, model_deployment(variants, traffic=pools), NOW, resync=False)  # type: ignore[arg-type]
    # A restarted operator finds its pools (create answers 409, then a read).
    restarted = ModelDeploymentReconciler(OperatorSettings(prometheus_url="http://prometheus:9090"))
    await restarted.reconcile(cluster, model_deployment(variants, traffic=pools), NOW, resync=False)  # type: ignore[arg-type]
    await restarted.reconcile(cluster, model_deployment(variants), NOW, resync=False)  # type: ignore[arg-type]
    return triples(cluster)


def schedule() -> dict[str, Any]:
    return fts("2026-05-01T11:00:30Z", ftj()["spec"], concurrencyPolicy="Replace")


async def schedule_calls() -> set[Triple]:
    """A due run created, then replaced by the next one (Replace deletes the active run)."""
    kube = FakeKube()
    obj = schedule()
    for hour in (12, 13):
        when = NOW.replace(hour=hour, minute=0, second=5)
        outcome = await FineTuneScheduleReconciler(OperatorSettings(), clock=lambda w=when: w).reconcile(  # type: ignore[misc]
            kube,  # type: ignore[arg-type]
            obj,
            when,
            resync=False,
        )
        obj["status"] = outcome.status
    assert any(verb == "delete" and kind == "FineTuneJob" for verb, kind, _ in kube.calls)
    return triples(kube)


async def test_every_granted_verb_is_used_and_every_used_verb_granted() -> None:
    granted = {
        (rule.api_group, resource, verb)
        for rule in OPERATOR_RULES
        for resource in rule.resources
        for verb in rule.verbs
    }
    used = await recorded_calls() | set(FRAMEWORK)
    assert sorted(used - granted) == [], "calls no rule grants"
    assert sorted(granted - used) == [], "granted verbs nothing calls: remove them from rbac.py"


class _Recorder(BaseHTTPRequestHandler):
    calls: ClassVar[list[tuple[str, str]]] = []

    def do_PATCH(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        type(self).calls.append(("PATCH", self.path))
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: object) -> None:
        pass


def test_the_trainer_role_grants_exactly_what_rank_zero_calls() -> None:
    """The training pods' Role against the trainer's recorded requests: patch of its report, nothing else."""
    children = build_children(ftj(), restart=0)
    granted = {
        (group, resource, verb, name)
        for rule in children.role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
        for name in rule["resourceNames"]
    }
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        credentials = KubeCredentials(f"http://127.0.0.1:{server.server_address[1]}")
        config = build_training_config(ftj())
        assert config.progress.report is not None
        reporter = KubeReportReporter(credentials, config.progress.namespace, config.progress.report, 0)
        reporter.report(ProgressUpdate(step=1, total_steps=10))
    finally:
        server.shutdown()
        server.server_close()
    used = set()
    for method, path in _Recorder.calls:
        match = re.fullmatch(r"/api/v1/namespaces/ns/(?P<resource>[a-z]+)/(?P<name>[^/]+)", path)
        assert match is not None, path
        used.add(("", match["resource"], method.lower(), match["name"]))
    assert used == granted == {("", "configmaps", "patch", "demo-progress")}
