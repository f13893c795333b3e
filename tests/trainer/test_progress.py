"""The progress contract: what rank 0 sends, how often, and over which HTTP request (a merge patch of
its report ConfigMap, never of the FineTuneJob)."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubetune.api.trainerreport import ATTEMPT_ENV, TrainerReport
from kubetune.api.trainingconfig import ProgressTarget
from kubetune.status.trainer_report import read_report
from kubetune.trainer.progress import (
    PROGRESS_FILE_ENV,
    BackgroundReporter,
    FileReporter,
    KubeReportReporter,
    NoopReporter,
    ProgressUpdate,
    RecordingReporter,
    ThrottledReporter,
    build_reporter,
    discover_credentials,
    in_cluster_credentials,
    kubeconfig_credentials,
)

UPDATE = ProgressUpdate(
    step=30,
    total_steps=120,
    epoch=0.75,
    loss=1.25,
    eval_loss=1.5,
    learning_rate=2e-4,
    tokens_per_second=812.5,
    updated_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
)
EXPECTED_REPORT = {
    "step": 30,
    "totalSteps": 120,
    "epoch": 0.75,
    "loss": 1.25,
    "evalLoss": 1.5,
    "learningRate": 2e-4,
    "tokensPerSecond": 812.5,
    "updatedAt": "2026-01-02T03:04:05Z",
}


def test_update_serialises_to_the_report_progress_fields() -> None:
    assert UPDATE.to_report() == EXPECTED_REPORT
    # What the operator reads back passes its validation unchanged.
    report = json.dumps({"attempt": 0, "progress": EXPECTED_REPORT})
    now = datetime(2026, 1, 2, 3, 5, tzinfo=UTC)
    reading = read_report({"report.json": report}, attempt=0, previous=None, now=now)
    assert reading.problem is None
    assert reading.progress is not None
    assert reading.progress.step == 30


def test_partial_update_leaves_unknown_fields_out() -> None:
    assert ProgressUpdate(step=1).to_report() == {"step": 1}


@pytest.mark.parametrize(
    ("update", "expected"),
    [
        (ProgressUpdate(step=5, loss=float("nan")), {"step": 5}),  # a diverged run still reports its step
        (ProgressUpdate(step=5, loss=float("inf"), mfu=0.5), {"step": 5, "mfu": 0.5}),
        (ProgressUpdate(step=5, mfu=1.7, learning_rate=3.0), {"step": 5}),  # out of the report's range
    ],
)
def test_values_the_operator_would_refuse_are_left_out(
    update: ProgressUpdate, expected: dict[str, Any]
) -> None:
    assert update.to_report() == expected


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("times", "sent_steps"),
    [
        ([0, 1, 2, 3], [0]),  # within one interval only the first goes out
        ([0, 5, 10], [0, 1, 2]),  # exactly one interval apart: all sent
        ([0, 4.9, 5.0], [0, 2]),
    ],
)
def test_throttle_sends_at_most_one_report_per_interval(times: list[float], sent_steps: list[int]) -> None:
    clock, inner = FakeClock(), RecordingReporter()
    reporter = ThrottledReporter(inner, min_interval=5, clock=clock)
    for step, at in enumerate(times):
        clock.now = at
        reporter.report(ProgressUpdate(step=step))
    assert [u.step for u in inner.updates] == sent_steps


def test_throttle_flush_sends_the_last_held_back_update() -> None:
    clock, inner = FakeClock(), RecordingReporter()
    reporter = ThrottledReporter(inner, min_interval=5, clock=clock)
    for step in range(4):
        reporter.report(ProgressUpdate(step=step))
    reporter.close()
    assert [u.step for u in inner.updates] == [0, 3]


class BlockingReporter(RecordingReporter):
    """Holds every report until released, like an API server that does not answer."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.started = threading.Event()
        self.closed = False

    def report(self, update: ProgressUpdate) -> None:
        self.started.set()
        self.release.wait(timeout=10)
        super().report(update)

    def close(self) -> None:
        self.closed = True


def test_background_reporter_never_blocks_the_caller_and_sends_the_newest_update() -> None:
    inner = BlockingReporter()
    reporter = BackgroundReporter(inner)
    reporter.report(ProgressUpdate(step=1))
    assert inner.started.wait(timeout=5)  # step 1 is being sent and hangs
    for step in (2, 3, 4):
        reporter.report(ProgressUpdate(step=step))  # returns at once: the training loop goes on
    assert inner.updates == []
    inner.release.set()
    reporter.close()
    # Steps 2 and 3 were superseded while step 1 hung; the newest one still went out before close.
    assert [u.step for u in inner.updates] == [1, 4]
    assert inner.closed


def test_background_reporter_close_gives_up_on_a_hung_server() -> None:
    inner = BlockingReporter()
    reporter = BackgroundReporter(inner, join_timeout=0.2)
    reporter.report(ProgressUpdate(step=1))
    assert inner.started.wait(timeout=5)
    reporter.close()  # returns after join_timeout although the report still hangs
    assert inner.closed
    inner.release.set()


@pytest.mark.parametrize(
    ("rank", "enabled", "expected"),
    [
        (0, True, ThrottledReporter),
        (1, True, NoopReporter),
        (3, True, NoopReporter),
        (0, False, NoopReporter),
    ],
)
def test_only_rank_zero_with_progress_enabled_reports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rank: int, enabled: bool, expected: type
) -> None:
    monkeypatch.setenv(PROGRESS_FILE_ENV, str(tmp_path / "progress.jsonl"))
    target = ProgressTarget(enabled=enabled, namespace="ns", name="job")
    assert type(build_reporter(target, rank)) is expected


def test_file_reporter_writes_one_line_per_update_with_the_rank(tmp_path: Path) -> None:
    path = tmp_path / "progress.jsonl"
    reporter = FileReporter(path, rank=0)
    reporter.report(UPDATE)
    reporter.report(ProgressUpdate(step=31))
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines == [{"rank": 0, **EXPECTED_REPORT}, {"rank": 0, "step": 31}]


class FakeApiServer:
    """Records requests like a kube-apiserver's status endpoint would receive them."""

    def __init__(self, status: int = 200) -> None:
        self.requests: list[dict[str, Any]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_PATCH(self) -> None:
                length = int(self.headers["Content-Length"])
                outer.requests.append(
                    {
                        "path": self.path,
                        "content_type": self.headers["Content-Type"],
                        "authorization": self.headers.get("Authorization"),
                        "body": json.loads(self.rfile.read(length)),
                    }
                )
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeApiServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def api_server() -> Iterator[FakeApiServer]:
    with FakeApiServer() as server:
        yield server


def _kubeconfig(tmp_path: Path, server: str, user: dict[str, Any]) -> Path:
    path = tmp_path / "kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "test",
                "contexts": [{"name": "test", "context": {"cluster": "c", "user": "u"}}],
                "clusters": [{"name": "c", "cluster": {"server": server}}],
                "users": [{"name": "u", "user": user}],
            }
        )
    )
    return path


def test_kube_reporter_merge_patches_one_key_of_the_report_config_map(
    tmp_path: Path, api_server: FakeApiServer
) -> None:
    credentials = kubeconfig_credentials(_kubeconfig(tmp_path, api_server.url, {"token": "s3cret"}))
    KubeReportReporter(credentials, "team-a", "sft-1-progress", attempt=2).report(UPDATE)

    [request] = api_server.requests
    assert {k: v for k, v in request.items() if k != "body"} == {
        "path": "/api/v1/namespaces/team-a/configmaps/sft-1-progress",
        "content_type": "application/merge-patch+json",
        "authorization": "Bearer s3cret",
    }
    assert list(request["body"]) == ["data"]
    assert list(request["body"]["data"]) == ["report.json"]
    report = TrainerReport.model_validate_json(request["body"]["data"]["report.json"])
    assert report.attempt == 2
    assert report.progress.to_wire() == EXPECTED_REPORT


@pytest.fixture
def outside_a_pod(
    tmp_path: Path, api_server: FakeApiServer, monkeypatch: pytest.MonkeyPatch
) -> pytest.MonkeyPatch:
    """No progress file, no in-cluster service account: the reporter reaches api_server via KUBECONFIG."""
    monkeypatch.delenv(PROGRESS_FILE_ENV, raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(_kubeconfig(tmp_path, api_server.url, {})))
    return monkeypatch


def test_the_attempt_comes_from_the_pod_label(
    api_server: FakeApiServer, outside_a_pod: pytest.MonkeyPatch
) -> None:
    outside_a_pod.setenv(ATTEMPT_ENV, "3")
    target = ProgressTarget(namespace="ns", name="job", report="job-progress", min_interval_seconds=0)
    reporter = build_reporter(target, 0)
    reporter.report(UPDATE)
    reporter.close()
    [request] = api_server.requests
    assert request["path"] == "/api/v1/namespaces/ns/configmaps/job-progress"
    assert json.loads(request["body"]["data"]["report.json"])["attempt"] == 3


@pytest.mark.usefixtures("outside_a_pod")
def test_without_a_report_config_map_nothing_is_sent() -> None:
    assert type(build_reporter(ProgressTarget(namespace="ns", name="job"), 0)) is NoopReporter


def test_kube_reporter_survives_an_unreachable_or_failing_server(tmp_path: Path) -> None:
    with FakeApiServer(status=403) as forbidden:
        credentials = kubeconfig_credentials(_kubeconfig(tmp_path, forbidden.url, {}))
        KubeReportReporter(credentials, "ns", "job-progress", 0).report(UPDATE)  # logged, not raised
        assert len(forbidden.requests) == 1
    unreachable = kubeconfig_credentials(_kubeconfig(tmp_path, "http://127.0.0.1:9", {}))
    KubeReportReporter(unreachable, "ns", "job-progress", 0).report(UPDATE)


def test_kubeconfig_with_inline_certificates_builds_a_tls_context(tmp_path: Path) -> None:
    from tests.trainer.tls import self_signed  # cryptography: only this test needs it

    cert_pem, key_pem = self_signed()
    user = {
        "client-certificate-data": base64.b64encode(cert_pem).decode(),
        "client-key-data": base64.b64encode(key_pem).decode(),
    }
    path = _kubeconfig(tmp_path, "https://127.0.0.1:6443", user)
    document = yaml.safe_load(path.read_text())
    document["clusters"][0]["cluster"]["certificate-authority-data"] = base64.b64encode(cert_pem).decode()
    path.write_text(yaml.safe_dump(document))

    credentials = kubeconfig_credentials(path)

    assert credentials.server == "https://127.0.0.1:6443"
    assert credentials.ssl_context is not None
    assert credentials.ssl_context.get_ca_certs()[0]["subject"] == ((("commonName", "kubetune-test"),),)


def test_service_account_is_preferred_over_kubeconfig(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.trainer.tls import self_signed

    cert_pem, _ = self_signed()
    (tmp_path / "token").write_text("sa-token\n")
    (tmp_path / "ca.crt").write_bytes(cert_pem)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")

    credentials = in_cluster_credentials(tmp_path)

    assert credentials is not None
    assert (credentials.server, credentials.token) == ("https://10.96.0.1:443", "sa-token")


def test_no_credentials_anywhere_means_no_reporting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.delenv(PROGRESS_FILE_ENV, raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    assert discover_credentials() is None
    target = ProgressTarget(namespace="ns", name="job", report="job-progress")
    assert type(build_reporter(target, 0)) is NoopReporter
