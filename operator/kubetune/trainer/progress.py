"""Rank 0's live progress: merge-patches of its job's report ConfigMap (`kubetune.api.trainerreport`).

The pod's token may patch that one ConfigMap and nothing else; the operator validates the report and
copies what passes into `status.progress`. Reporters are an interface so that tests capture reports
without an API server. A failed report is logged and dropped: progress is informational and must
never stop a training run.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import os
import ssl
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

import yaml
from pydantic import ValidationError

from kubetune.api.trainerreport import (
    ATTEMPT_ENV,
    MAX_STEPS,
    REPORT_KEY,
    ReportedProgress,
    TrainerReport,
)
from kubetune.api.trainingconfig import ProgressTarget

log = logging.getLogger(__name__)

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
PROGRESS_FILE_ENV = "KUBETUNE_PROGRESS_FILE"
REQUEST_TIMEOUT_SECONDS = 5.0


@dataclass(frozen=True)
class ProgressUpdate:
    step: int
    total_steps: int | None = None
    epoch: float | None = None
    loss: float | None = None
    eval_loss: float | None = None
    learning_rate: float | None = None
    tokens_per_second: float | None = None
    mfu: float | None = None
    updated_at: datetime | None = None

    def progress(self) -> ReportedProgress:
        """The report's progress. A value the operator would refuse (a NaN loss after a divergence, a
        figure out of range) is left out rather than costing the whole report."""
        fields: dict[str, Any] = {
            "step": self.step,
            "total_steps": self.total_steps,
            "epoch": self.epoch,
            "loss": self.loss,
            "eval_loss": self.eval_loss,
            "learning_rate": self.learning_rate,
            "tokens_per_second": self.tokens_per_second,
            "mfu": self.mfu,
            "updated_at": self.updated_at,
        }
        fields = {k: v for k, v in fields.items() if not (isinstance(v, float) and not math.isfinite(v))}
        try:
            return ReportedProgress.model_validate(fields)
        except ValidationError as exc:
            refused = {str(error["loc"][0]) for error in exc.errors()}
            log.warning("progress fields out of range, not reported: %s", ", ".join(sorted(refused)))
            kept = {k: v for k, v in fields.items() if k not in refused or k == "step"}
            kept["step"] = max(0, min(int(kept["step"]), MAX_STEPS))
            return ReportedProgress.model_validate(kept)

    def to_report(self) -> dict[str, Any]:
        """The report's `progress` object, camelCase; percent and eta are the operator's."""
        return self.progress().to_wire()


class ProgressReporter(Protocol):
    def report(self, update: ProgressUpdate) -> None: ...

    def close(self) -> None: ...


class NoopReporter:
    def report(self, update: ProgressUpdate) -> None:
        pass

    def close(self) -> None:
        pass


class RecordingReporter:
    """Keeps every update; for tests and for in-process callers."""

    def __init__(self) -> None:
        self.updates: list[ProgressUpdate] = []

    def report(self, update: ProgressUpdate) -> None:
        self.updates.append(update)

    def close(self) -> None:
        pass


class FileReporter:
    """Appends one JSON line per update (with the reporting rank), for local runs without a cluster."""

    def __init__(self, path: Path, rank: int) -> None:
        self._path = path
        self._rank = rank

    def report(self, update: ProgressUpdate) -> None:
        with self._path.open("a", encoding="utf-8") as stream:
            stream.write(json.dumps({"rank": self._rank, **update.to_report()}) + "\n")

    def close(self) -> None:
        pass


class ThrottledReporter:
    """At most one report per interval; `flush` sends the last held-back update (end of training)."""

    def __init__(
        self, inner: ProgressReporter, min_interval: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._inner = inner
        self._min_interval = min_interval
        self._clock = clock
        self._last_sent: float | None = None
        self._pending: ProgressUpdate | None = None

    def report(self, update: ProgressUpdate) -> None:
        now = self._clock()
        if self._last_sent is not None and now - self._last_sent < self._min_interval:
            self._pending = update
            return
        self._send(update, now)

    def flush(self) -> None:
        if self._pending is not None:
            self._send(self._pending, self._clock())

    def _send(self, update: ProgressUpdate, now: float) -> None:
        self._pending = None
        self._last_sent = now
        self._inner.report(update)

    def close(self) -> None:
        self.flush()
        self._inner.close()


class BackgroundReporter:
    """Sends from its own thread, so that a slow or unreachable API server never stalls a training step
    (a report is an HTTPS request with a 5 s timeout); only the newest unsent update is kept."""

    def __init__(self, inner: ProgressReporter, join_timeout: float = 2 * REQUEST_TIMEOUT_SECONDS) -> None:
        self._inner = inner
        self._join_timeout = join_timeout
        self._ready = threading.Condition()
        self._pending: ProgressUpdate | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._send_loop, name="kubetune-progress", daemon=True)
        self._thread.start()

    def report(self, update: ProgressUpdate) -> None:
        with self._ready:
            self._pending = update
            self._ready.notify()

    def _send_loop(self) -> None:
        while True:
            with self._ready:
                while self._pending is None and not self._closed:
                    self._ready.wait()
                if self._pending is None:
                    return
                update, self._pending = self._pending, None
            try:
                self._inner.report(update)
            except Exception:  # progress is informational: never let it end the run
                log.exception("progress report failed")

    def close(self) -> None:
        """Send what is pending (waiting at most `join_timeout`), then close the inner reporter."""
        with self._ready:
            self._closed = True
            self._ready.notify()
        self._thread.join(self._join_timeout)
        self._inner.close()


@dataclass(frozen=True)
class KubeCredentials:
    server: str
    token: str | None = None
    ssl_context: ssl.SSLContext | None = None


def _materialise(data_b64: str | None, path: str | None, directory: Path, name: str) -> str | None:
    """ssl wants files; kubeconfig may inline certificates as base64 `*-data`."""
    if data_b64:
        target = directory / name
        target.write_bytes(base64.b64decode(data_b64))
        return str(target)
    return path


def _context(ca_file: str | None, cert: str | None, key: str | None, insecure: bool) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=ca_file)
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if cert:
        context.load_cert_chain(cert, key)
    return context


def in_cluster_credentials(directory: Path = SERVICE_ACCOUNT_DIR) -> KubeCredentials | None:
    host = os.environ.get("KUBERNETES_SERVICE_HOST")
    token_file = directory / "token"
    if not host or not token_file.exists():
        return None
    port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    host = f"[{host}]" if ":" in host else host
    return KubeCredentials(
        server=f"https://{host}:{port}",
        token=token_file.read_text().strip(),
        ssl_context=_context(str(directory / "ca.crt"), None, None, insecure=False),
    )


def kubeconfig_credentials(path: Path) -> KubeCredentials:
    """The current context of a kubeconfig: server, CA, and token or client certificate."""
    document = yaml.safe_load(path.read_text()) or {}
    current = document.get("current-context")
    contexts = {c["name"]: c["context"] for c in document.get("contexts") or []}
    if current not in contexts:
        raise ValueError(f"{path}: current-context {current!r} not found")
    context = contexts[current]
    cluster = next(c["cluster"] for c in document.get("clusters") or [] if c["name"] == context["cluster"])
    user = next(
        (u.get("user") or {} for u in document.get("users") or [] if u["name"] == context.get("user")), {}
    )
    server: str = cluster["server"]
    if not server.startswith("https://"):
        return KubeCredentials(server=server, token=user.get("token"))
    files = Path(tempfile.mkdtemp(prefix="kubetune-kubeconfig-"))
    ssl_context = _context(
        _materialise(
            cluster.get("certificate-authority-data"), cluster.get("certificate-authority"), files, "ca"
        ),
        _materialise(user.get("client-certificate-data"), user.get("client-certificate"), files, "cert"),
        _materialise(user.get("client-key-data"), user.get("client-key"), files, "key"),
        insecure=bool(cluster.get("insecure-skip-tls-verify")),
    )
    return KubeCredentials(server=server, token=user.get("token"), ssl_context=ssl_context)


def discover_credentials() -> KubeCredentials | None:
    """The pod's service account when present, else $KUBECONFIG or ~/.kube/config."""
    credentials = in_cluster_credentials()
    if credentials is not None:
        return credentials
    path = Path(os.environ.get("KUBECONFIG", str(Path.home() / ".kube" / "config"))).expanduser()
    return kubeconfig_credentials(path) if path.exists() else None


class KubeReportReporter:
    """Merge-patches REPORT_KEY of the job's report ConfigMap (the newest report replaces the last)."""

    def __init__(self, credentials: KubeCredentials, namespace: str, config_map: str, attempt: int) -> None:
        self._credentials = credentials
        self._url = (
            f"{credentials.server.rstrip('/')}/api/v1/namespaces/{quote(namespace)}/"
            f"configmaps/{quote(config_map)}"
        )
        self._attempt = attempt
        self._lock = threading.Lock()

    def report(self, update: ProgressUpdate) -> None:
        report = TrainerReport(attempt=self._attempt, progress=update.progress())
        body = json.dumps({"data": {REPORT_KEY: report.model_dump_json(by_alias=True, exclude_none=True)}})
        headers = {"Content-Type": "application/merge-patch+json", "Accept": "application/json"}
        if self._credentials.token:
            headers["Authorization"] = f"Bearer {self._credentials.token}"
        request = urllib.request.Request(  # noqa: S310 -- the URL is the API server's
            self._url, data=body.encode(), method="PATCH", headers=headers
        )
        try:
            with (
                self._lock,
                urllib.request.urlopen(  # noqa: S310 -- the URL is the API server's
                    request, timeout=REQUEST_TIMEOUT_SECONDS, context=self._credentials.ssl_context
                ) as response,
            ):
                response.read()
        except (urllib.error.URLError, OSError) as exc:
            log.warning("progress report to %s failed: %s", self._url, exc)

    def close(self) -> None:
        pass


def _attempt_from_env() -> int:
    """The training Job's attempt (downward API); 0 outside a training Job."""
    value = os.environ.get(ATTEMPT_ENV, "0")
    return int(value) if value.isdigit() else 0


def build_reporter(target: ProgressTarget, rank: int) -> ProgressReporter:
    """Rank 0 only; a no-op elsewhere, when disabled, or when no credentials can be found."""
    if rank != 0 or not target.enabled:
        return NoopReporter()
    file_path = os.environ.get(PROGRESS_FILE_ENV)
    inner: ProgressReporter
    if file_path:
        inner = FileReporter(Path(file_path), rank)
    else:
        if target.report is None:
            log.warning("progress reporting enabled but the config names no report ConfigMap; not reporting")
            return NoopReporter()
        credentials = discover_credentials()
        if credentials is None:
            log.warning(
                "progress reporting enabled but no service account or kubeconfig found; not reporting"
            )
            return NoopReporter()
        reporter = KubeReportReporter(credentials, target.namespace, target.report, _attempt_from_env())
        inner = BackgroundReporter(reporter)
    return ThrottledReporter(inner, target.min_interval_seconds)


def now_utc() -> datetime:
    return datetime.now(UTC)
