"""Run the real operator in-process (kopf's KopfRunner) against the test API server."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from kopf.testing import KopfRunner
from tests.support.cluster import Kube

from kubetune.controller.controller import Controller
from kubetune.handlers import operator_registry
from kubetune.reconcile import reconcilers
from kubetune.reconcile.finetuneschedule import Clock
from kubetune.settings import OperatorSettings


@contextmanager
def running_operator(
    kube: Kube,
    namespace: str,
    *,
    resync_seconds: float = 2.0,
    extra_env: dict[str, str] | None = None,
    schedule_clock: Clock | None = None,
) -> Iterator[KopfRunner]:
    """The operator, watching one namespace, with short resync so tests see timers act.

    `schedule_clock` replaces the clock FineTuneSchedules are planned with (a test moves it forward).

    Each run gets its own Controller and registry: nothing carries over between runs.
    """
    env = {
        "KUBECONFIG": str(kube.kubeconfig),
        "KUBETUNE_KUBECONFIG": str(kube.kubeconfig),
        "KUBETUNE_RESYNC_SECONDS": str(resync_seconds),
        "KUBETUNE_METRICS_PORT": "",
        # Lets tests point a variant's smoke test at a local fake server (annotation override).
        "KUBETUNE_SMOKE_URL_OVERRIDE": "allow",
        **(extra_env or {}),
    }
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)  # kopf's own login reads KUBECONFIG
    try:
        settings = OperatorSettings.from_env({**os.environ, **env}, namespaces=(namespace,))
        controller = Controller(settings, reconcilers(settings, schedule_clock=schedule_clock))
        runner = KopfRunner(
            ["run", "--standalone", "--namespace", namespace],
            registry=operator_registry(controller),
            timeout=60,
        )
        with runner:
            yield runner
        assert runner.exception is None, runner.exception
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
