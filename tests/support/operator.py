"""Run the real operator in-process (kopf's KopfRunner) against the test API server."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from kopf.testing import KopfRunner
from tests.support.cluster import Kube


@contextmanager
def running_operator(
    kube: Kube, namespace: str, *, resync_seconds: float = 2.0, extra_env: dict[str, str] | None = None
) -> Iterator[KopfRunner]:
    """The operator, watching one namespace, with short resync so tests see timers act."""
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
    os.environ.update(env)
    try:
        with _reloaded_handlers():
            runner = KopfRunner(
                ["run", "--standalone", "--namespace", namespace, "-m", "kubetune.handlers"],
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


@contextmanager
def _reloaded_handlers() -> Iterator[None]:
    """kopf registers handlers at import; a fresh registry per run reads the env above."""
    import importlib
    import sys

    import kopf

    previous = kopf.get_default_registry()
    kopf.set_default_registry(kopf.OperatorRegistry())
    for module in [m for m in sys.modules if m.startswith("kubetune.handlers")]:
        del sys.modules[module]
    importlib.import_module("kubetune.handlers")
    try:
        yield
    finally:
        kopf.set_default_registry(previous)
