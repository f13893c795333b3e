"""Credentials from kubernetes_asyncio's loaders: in-cluster, merged kubeconfigs, token-file rotation."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubetune.devcluster.controlplane import Certificates
from kubetune.handlers import connection_info
from kubetune.kube import config
from kubetune.kube.config import EXPIRY_SKEW_PREVENTION_DELAY, Credentials, load_credentials

SERVER = "https://k8s.example:6443"


@pytest.fixture(scope="module")
def certs() -> Certificates:
    return Certificates.generate()


@pytest.fixture
def ca_file(tmp_path: Path, certs: Certificates) -> Path:
    path = tmp_path / "ca.crt"
    path.write_bytes(certs.ca_cert)
    return path


def write_config(path: Path, **sections: Any) -> str:
    path.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "Config", **sections}))
    return str(path)


def cluster_and_user(ca: Path, user: dict[str, Any]) -> dict[str, Any]:
    return {
        "clusters": [{"name": "c", "cluster": {"server": SERVER, "certificate-authority": str(ca)}}],
        "users": [{"name": "u", "user": user}],
    }


CONTEXT = {"contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}], "current-context": "x"}


async def test_kubeconfig_paths_are_merged_like_kubectl(tmp_path: Path, ca_file: Path) -> None:
    first = write_config(tmp_path / "a", **cluster_and_user(ca_file, {"token": "static"}))
    second = write_config(tmp_path / "b", **CONTEXT)

    credentials = await load_credentials(default_kubeconfig=f"{first}:{second}")

    assert (credentials.server, credentials.ca_file) == (SERVER, str(ca_file))
    assert await credentials.headers() == {"Authorization": "Bearer static"}


async def test_an_explicit_kubeconfig_wins_over_the_service_account(tmp_path: Path, ca_file: Path) -> None:
    path = write_config(tmp_path / "k", **cluster_and_user(ca_file, {"token": "mine"}), **CONTEXT)
    account = tmp_path / "sa"
    account.mkdir()
    (account / "token").write_text("pod-token")
    (account / "ca.crt").write_bytes(ca_file.read_bytes())

    explicit = await load_credentials(path, service_host="10.0.0.1", service_account_dir=account)
    in_cluster = await load_credentials(service_host="10.0.0.1", service_account_dir=account)

    assert (explicit.server, await explicit.authorization()) == (SERVER, "Bearer mine")
    assert (in_cluster.server, await in_cluster.authorization()) == (
        "https://10.0.0.1:443",
        "Bearer pod-token",
    )
    assert in_cluster.ca_file == str(account / "ca.crt")


async def test_a_token_file_is_read_again_after_the_reload_period(
    tmp_path: Path, ca_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = tmp_path / "token"
    token.write_text("first")
    path = write_config(tmp_path / "k", **cluster_and_user(ca_file, {"tokenFile": str(token)}), **CONTEXT)
    credentials = await load_credentials(path)
    token.write_text("second")

    assert await credentials.authorization() == "Bearer first"  # within the period: not re-read
    monkeypatch.setattr(config, "RELOAD_SECONDS", 0.0)
    assert await credentials.authorization() == "Bearer second"


async def test_client_certificates_reach_the_tls_context(
    tmp_path: Path, ca_file: Path, certs: Certificates
) -> None:
    cert, key = tmp_path / "admin.crt", tmp_path / "admin.key"
    cert.write_bytes(certs.admin_cert)
    key.write_bytes(certs.admin_key)
    user = {"client-certificate": str(cert), "client-key": str(key)}
    credentials = await load_credentials(
        write_config(tmp_path / "k", **cluster_and_user(ca_file, user), **CONTEXT)
    )

    assert (credentials.cert_file, credentials.key_file) == (str(cert), str(key))
    assert credentials.ssl_context is not False
    assert await credentials.headers() == {}


class FixedSource:
    def __init__(self, value: str, expiry: datetime.datetime | None) -> None:
        self.value = value
        self.expiry = expiry
        self.renewals = 0

    async def authorization(self, *, renew: bool = False) -> str | None:
        self.renewals += renew
        return self.value


@pytest.mark.parametrize("renew", [False, True])
async def test_kopf_logs_in_with_the_same_identity(renew: bool) -> None:
    expiry = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)
    source = FixedSource("Bearer abc", expiry)
    credentials = Credentials(SERVER, False, source=source, ca_file="/ca.crt")

    info = await connection_info(credentials, renew=renew)

    assert (info.server, info.scheme, info.token, info.insecure, info.ca_path) == (
        SERVER,
        "Bearer",
        "abc",
        True,
        "/ca.crt",
    )
    # kopf asks again when our client would renew: the loader's skew before the plugin's expiry.
    assert info.expiration == expiry - EXPIRY_SKEW_PREVENTION_DELAY
    assert source.renewals == int(renew)
