"""kopf wiring: decorators only, each a few lines handing over to the Controller.

`operator_registry(controller)` registers the handlers on a fresh registry (nothing registers as an
import side effect): `kubetune operator` runs it, the tests run one per operator they start.
"""

from __future__ import annotations

from typing import Any

import kopf

from kubetune.api.common import GROUP, VERSION
from kubetune.api.finetunejob import KIND as FINETUNEJOB
from kubetune.api.finetunejob import PLURAL as FINETUNEJOBS
from kubetune.api.finetuneschedule import KIND as FINETUNESCHEDULE
from kubetune.api.finetuneschedule import PLURAL as FINETUNESCHEDULES
from kubetune.api.modeldeployment import KIND as MODELDEPLOYMENT
from kubetune.api.modeldeployment import PLURAL as MODELDEPLOYMENTS
from kubetune.builders.common import MANAGED_BY
from kubetune.controller.controller import Controller
from kubetune.kube.config import EXPIRY_SKEW_PREVENTION_DELAY, Credentials
from kubetune.planning.revisions import follows_schedule, schedule_summary
from kubetune.reconcile.finetuneschedule import run_summary

MANAGED = {"app.kubernetes.io/managed-by": MANAGED_BY}


def configure(settings: kopf.OperatorSettings, worker_limit: int) -> None:
    """kopf settings: no log-to-Event spam, long watches, bounded concurrency."""
    settings.posting.enabled = False
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.batching.worker_limit = worker_limit
    settings.networking.request_timeout = 60


async def connection_info(credentials: Credentials, *, renew: bool) -> kopf.ConnectionInfo:
    scheme, _, token = (await credentials.authorization(renew=renew) or "").partition(" ")
    expiry = credentials.source.expiry if credentials.source is not None else None
    return kopf.ConnectionInfo(
        server=credentials.server,
        ca_path=credentials.ca_file,
        insecure=credentials.ssl_context is False,
        scheme=scheme or None,
        token=token or None,
        certificate_path=credentials.cert_file,
        private_key_path=credentials.key_file,
        # Less the loader's skew, so kopf asks again just when our client would renew too.
        expiration=expiry - EXPIRY_SKEW_PREVENTION_DELAY if expiry is not None else None,
    )


def operator_registry(controller: Controller) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()

    @kopf.on.startup(registry=registry)
    async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
        configure(settings, controller.settings.worker_limit)
        await controller.start()

    @kopf.on.cleanup(registry=registry)
    async def cleanup(**_: Any) -> None:
        await controller.stop()

    logins = 0

    @kopf.on.login(registry=registry)
    async def login(**_: Any) -> kopf.ConnectionInfo:
        """kopf's watches use our credentials (exec plugins, auth providers, the service account).

        kopf logs in again when the token it has expires or is rejected: then the token is renewed.
        """
        nonlocal logins
        logins += 1
        return await connection_info(await controller.credentials(), renew=logins > 1)

    @kopf.on.event(GROUP, VERSION, FINETUNEJOBS, registry=registry)
    async def finetunejob_event(event: kopf.RawEvent, body: kopf.Body, **_: Any) -> None:
        await controller.on_event(FINETUNEJOB, event.get("type"), body)
        # A schedule's run: its schedule moves when the run's phase does.
        await controller.on_child_event(event.get("type"), run_summary(body))

    @kopf.on.event(GROUP, VERSION, MODELDEPLOYMENTS, registry=registry)
    async def modeldeployment_event(event: kopf.RawEvent, body: kopf.Body, **_: Any) -> None:
        await controller.on_event(MODELDEPLOYMENT, event.get("type"), body)

    @kopf.on.event(GROUP, VERSION, FINETUNESCHEDULES, registry=registry)
    async def finetuneschedule_event(event: kopf.RawEvent, body: kopf.Body, **_: Any) -> None:
        await controller.on_event(FINETUNESCHEDULE, event.get("type"), body)
        # A new good run (or a verdict) moves the ModelDeployments that follow the schedule at once.
        await controller.on_followed_event(
            event.get("type"), body, schedule_summary(body), MODELDEPLOYMENT, follows_schedule
        )

    @kopf.on.event("batch", "v1", "jobs", labels=MANAGED, registry=registry)
    async def job_changed(event: kopf.RawEvent, body: kopf.Body, **_: Any) -> None:
        await controller.on_child_event(event.get("type"), body)

    @kopf.on.event("apps", "v1", "deployments", labels=MANAGED, registry=registry)
    async def deployment_changed(event: kopf.RawEvent, body: kopf.Body, **_: Any) -> None:
        await controller.on_child_event(event.get("type"), body)

    return registry
