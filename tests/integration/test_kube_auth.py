"""Authentication from a kubeconfig with an exec credential plugin, against the real API server.

The plugin prints service-account tokens from TokenRequests bound to Secrets, so deleting a Secret
revokes its token: a request that still succeeds afterwards proves the client ran the plugin again.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import ssl
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.integration.test_admission import VALID_FTJ, mutate
from tests.support.cluster import Kube
from tests.support.operator import running_operator
from tests.support.polling import eventually

from kubetune.kube.client import ApiError, KubeClient
from kubetune.kube.config import Credentials, load_credentials

pytestmark = pytest.mark.cluster

EXEC_API = "client.authentication.k8s.io/v1"
# Prints the Nth prepared ExecCredential status (the last one again once they run out) and counts calls.
PLUGIN = """
import json, os, pathlib, sys
state = pathlib.Path(sys.argv[1])
calls = sorted(state.glob("call-*"))
info = json.loads(os.environ["KUBERNETES_EXEC_INFO"])
(state / f"call-{len(calls):03d}").write_text(json.dumps(info))
statuses = sorted(state.glob("status-*.json"))
status = json.loads(statuses[min(len(calls), len(statuses) - 1)].read_text())
print(json.dumps({"apiVersion": info["apiVersion"], "kind": "ExecCredential", "status": status}))
"""


def rfc3339(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ExecUser:
    """A service account whose tokens an exec plugin hands out, in the order they were added."""

    def __init__(self, kube: Kube, namespace: str, workdir: Path, *, cluster_role: str = "view") -> None:
        self.kube = kube
        self.namespace = namespace
        self.state = workdir / "plugin"
        self.state.mkdir()
        (workdir / "plugin.py").write_text(PLUGIN)
        kube.kubectl("create", "serviceaccount", "exec-user", "-n", namespace)
        kube.kubectl(
            "create",
            "clusterrolebinding",
            f"{namespace}-exec-user",
            f"--clusterrole={cluster_role}",
            f"--serviceaccount={namespace}:exec-user",
        )
        doc = yaml.safe_load(self.kube.kubeconfig.read_text())
        doc["users"] = [
            {
                "name": "exec-user",
                "user": {
                    "exec": {
                        "apiVersion": EXEC_API,
                        "command": sys.executable,
                        "args": [str(workdir / "plugin.py"), str(self.state)],
                        "interactiveMode": "Never",
                    }
                },
            }
        ]
        doc["contexts"][0]["context"]["user"] = "exec-user"
        self.kubeconfig = workdir / "exec-kubeconfig"
        self.kubeconfig.write_text(yaml.safe_dump(doc))
        self.tokens = 0
        self.issued: dict[str, str] = {}  # Secret name → the token bound to it

    def add_token(self, expires: datetime.datetime | None = None) -> str:
        """A token bound to a fresh Secret (named after it); the plugin's next answer after the others."""
        secret = f"token-{self.tokens}"
        self.kube.kubectl("create", "secret", "generic", secret, "-n", self.namespace)
        uid = self.kube.get("secret", secret, self.namespace)["metadata"]["uid"]
        request = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "expirationSeconds": 3600,
                "boundObjectRef": {"apiVersion": "v1", "kind": "Secret", "name": secret, "uid": uid},
            },
        }
        out = self.kube.kubectl(
            "create", "--raw",
            f"/api/v1/namespaces/{self.namespace}/serviceaccounts/exec-user/token",
            "-f", "-",
            input=json.dumps(request),
        ).stdout  # fmt: skip
        self.issued[secret] = json.loads(out)["status"]["token"]
        status: dict[str, Any] = {"token": self.issued[secret]}
        if expires is not None:
            status["expirationTimestamp"] = rfc3339(expires)
        (self.state / f"status-{self.tokens:03d}.json").write_text(json.dumps(status))
        self.tokens += 1
        return secret

    def expire(self, index: int, moment: datetime.datetime) -> None:
        path = self.state / f"status-{index:03d}.json"
        status = json.loads(path.read_text())
        path.write_text(json.dumps({**status, "expirationTimestamp": rfc3339(moment)}))

    async def revoke(self, secret: str) -> None:
        """Delete the Secret, then wait out the API server's token cache (10 s) until the token fails."""
        self.kube.kubectl("delete", "secret", secret, "-n", self.namespace)
        context = ssl.create_default_context(cafile=str(self.kube.plane.pki / "ca.crt"))
        probe = KubeClient(Credentials(self.kube.plane.server, context, token=self.issued[secret]))
        try:
            for _ in range(150):
                try:
                    await probe.list("v1", "ConfigMap", self.namespace)
                except ApiError as exc:
                    if exc.status == 401:
                        return
                    raise
                await asyncio.sleep(0.2)
            raise AssertionError(f"the token bound to {secret} is still accepted")
        finally:
            await probe.close()

    @property
    def calls(self) -> int:
        return len(list(self.state.glob("call-*")))


@pytest.fixture
def exec_user(kube: Kube, namespace: str, tmp_path: Path) -> ExecUser:
    return ExecUser(kube, namespace, tmp_path)


async def list_configmaps(client: KubeClient, namespace: str) -> int:
    return len(await client.list("v1", "ConfigMap", namespace))


async def test_exec_plugin_token_is_cached_until_the_server_rejects_it(
    exec_user: ExecUser, namespace: str
) -> None:
    first = exec_user.add_token()
    exec_user.add_token()
    client = KubeClient(await load_credentials(str(exec_user.kubeconfig)))
    try:
        for _ in range(3):
            await list_configmaps(client, namespace)
        assert exec_user.calls == 1  # no expiry: one run serves every request
        info = json.loads((exec_user.state / "call-000").read_text())
        assert (info["apiVersion"], info["kind"]) == (EXEC_API, "ExecCredential")

        await exec_user.revoke(first)
        # The 401 makes the client run the plugin again and retry with the second token.
        await list_configmaps(client, namespace)
        assert exec_user.calls == 2
        await list_configmaps(client, namespace)
        assert exec_user.calls == 2
    finally:
        await client.close()


async def test_exec_plugin_runs_again_when_its_token_expires(exec_user: ExecUser, namespace: str) -> None:
    first = exec_user.add_token()
    exec_user.add_token(expires=datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1))
    # The loader treats a token as expired 5 minutes early: this one is good for about 5 seconds.
    soon = datetime.datetime.now(datetime.UTC) + datetime.timedelta(minutes=5, seconds=5)
    exec_user.expire(0, soon)
    credentials = await load_credentials(str(exec_user.kubeconfig))
    client = KubeClient(credentials)
    try:
        await list_configmaps(client, namespace)
        assert exec_user.calls == 1
        assert credentials.source is not None
        assert credentials.source.expiry is not None
        assert abs((credentials.source.expiry - soon).total_seconds()) < 1

        await exec_user.revoke(first)
        valid_until = soon - datetime.timedelta(minutes=5)
        await asyncio.sleep((valid_until - datetime.datetime.now(datetime.UTC)).total_seconds() + 0.5)
        requests = client.requests
        await list_configmaps(client, namespace)
        # Renewed before the request (by expiry, not by a 401: one request, no retry).
        assert (exec_user.calls, client.requests - requests) == (2, 1)
    finally:
        await client.close()


async def test_a_rejected_renewal_is_reported_not_retried_forever(
    exec_user: ExecUser, namespace: str
) -> None:
    only = exec_user.add_token()
    client = KubeClient(await load_credentials(str(exec_user.kubeconfig)))
    try:
        await list_configmaps(client, namespace)
        await exec_user.revoke(only)
        with pytest.raises(ApiError) as caught:
            await list_configmaps(client, namespace)
        assert caught.value.status == 401
        assert exec_user.calls == 2  # one renewal, then the 401 is the answer
    finally:
        await client.close()


def test_operator_watches_and_writes_with_an_exec_plugin(kube: Kube, namespace: str, tmp_path: Path) -> None:
    """kopf's watches (its login handler) and our client both authenticate through the plugin."""
    user = ExecUser(kube, namespace, tmp_path, cluster_role="cluster-admin")
    user.add_token()
    kube.apply(mutate(VALID_FTJ, "metadata.name", "exec-auth"), namespace)
    with running_operator(
        kube,
        namespace,
        extra_env={"KUBECONFIG": str(user.kubeconfig), "KUBETUNE_KUBECONFIG": str(user.kubeconfig)},
    ):
        eventually(
            lambda: kube.get("finetunejob", "exec-auth", namespace).get("status", {}).get("conditions"),
            timeout=60,
            message="status written through the exec-plugin identity",
        )
    assert user.calls >= 1
