"""Where the API server is and how to authenticate to it, from kubernetes_asyncio's config loaders.

kubeconfig parsing (several files merged like kubectl does, exec credential plugins, the gcp and oidc
auth providers, token files, client certificates) and the in-cluster service account are the
library's; this module only keeps the Authorization header fresh between requests:

- an exec plugin's token is reused until its `expirationTimestamp` (less the library's 5-minute skew),
  then the plugin runs again; one without an expiry is reused until the API server answers 401;
- token files and auth-provider tokens are re-read every minute (kubelet and cloud SDKs rotate them);
- a 401 makes the client renew once and retry (what client-go does for exec plugins).
"""

from __future__ import annotations

import datetime
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from kubernetes_asyncio.client import Configuration
from kubernetes_asyncio.config.incluster_config import InClusterConfigLoader
from kubernetes_asyncio.config.kube_config import (
    EXPIRY_SKEW_PREVENTION_DELAY,
    KubeConfigLoader,
    load_kube_config,
)

__all__ = [
    "EXPIRY_SKEW_PREVENTION_DELAY",
    "Credentials",
    "KubeconfigTokens",
    "ServiceAccountTokens",
    "TokenSource",
    "load_credentials",
]

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
RELOAD_SECONDS = 60.0  # how often a token file or auth-provider token is looked at again


class TokenSource(Protocol):
    """A rotating Authorization header value ("Bearer …" or "Basic …")."""

    @property
    def expiry(self) -> datetime.datetime | None: ...

    async def authorization(self, *, renew: bool = False) -> str | None: ...


@dataclass
class Credentials:
    """An API server address, its TLS settings and either a fixed bearer token or a TokenSource.

    The file paths are kept for kopf's own connection (its login handler gets the same identity).
    """

    server: str
    ssl_context: ssl.SSLContext | bool
    token: str | None = None
    source: TokenSource | None = None
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None

    @property
    def renewable(self) -> bool:
        return self.source is not None

    async def authorization(self, *, renew: bool = False) -> str | None:
        if self.source is not None:
            return await self.source.authorization(renew=renew)
        return f"Bearer {self.token}" if self.token else None

    async def headers(self, *, renew: bool = False) -> dict[str, str]:
        value = await self.authorization(renew=renew)
        return {"Authorization": value} if value else {}


class KubeconfigTokens:
    """The kubeconfig loader's token, re-obtained when it expires, goes stale or is rejected."""

    def __init__(self, loader: KubeConfigLoader, configuration: Configuration, *, clock: float) -> None:
        self._loader = loader
        self._configuration = configuration
        self._loaded_at = clock
        self._exec = bool(loader._user is not None and "exec" in loader._user)

    @property
    def expiry(self) -> datetime.datetime | None:
        expiry: datetime.datetime | None = self._loader.__dict__.get("exec_plugin_expiry")
        return expiry

    def _stale(self) -> bool:
        if self._exec:
            # Without an expiry a plugin's token is good until the server says otherwise (client-go).
            expiry = self.expiry
            return expiry is not None and expiry - EXPIRY_SKEW_PREVENTION_DELAY <= datetime.datetime.now(
                datetime.UTC
            )
        return time.monotonic() - self._loaded_at >= RELOAD_SECONDS

    async def authorization(self, *, renew: bool = False) -> str | None:
        if renew or self._stale():
            if renew:
                # The loader skips the plugin while its last expiry holds; a 401 says it does not.
                self._loader.__dict__.pop("exec_plugin_expiry", None)
            await self._loader.load_and_set(self._configuration)
            self._loaded_at = time.monotonic()
        value: str | None = self._configuration.api_key.get("BearerToken")
        return value


class ServiceAccountTokens:
    """The mounted service-account token, which the library re-reads every minute (kubelet rotates it)."""

    def __init__(self, configuration: Configuration) -> None:
        self._configuration = configuration

    @property
    def expiry(self) -> datetime.datetime | None:
        return None

    async def authorization(self, *, renew: bool = False) -> str | None:
        value: str | None = await self._configuration.get_api_key_with_prefix("BearerToken")
        return value


def _ssl_context(configuration: Configuration) -> ssl.SSLContext | bool:
    if not configuration.verify_ssl:
        return False
    context = ssl.create_default_context(cafile=configuration.ssl_ca_cert)
    if configuration.cert_file and configuration.key_file:
        context.load_cert_chain(configuration.cert_file, configuration.key_file)
    return context


def _credentials(configuration: Configuration, source: TokenSource) -> Credentials:
    return Credentials(
        server=str(configuration.host),
        ssl_context=_ssl_context(configuration),
        source=source,
        ca_file=configuration.ssl_ca_cert,
        cert_file=configuration.cert_file,
        key_file=configuration.key_file,
    )


async def load_credentials(
    kubeconfig: str | None = None,
    *,
    service_host: str | None = None,
    service_port: str = "443",
    default_kubeconfig: str | None = None,
    service_account_dir: Path = SERVICE_ACCOUNT_DIR,
) -> Credentials:
    """`kubeconfig` if given, else the in-cluster service account (at `service_host`) when present,
    else `default_kubeconfig` ($KUBECONFIG: several paths are merged) or ~/.kube/config."""
    configuration = Configuration()
    token_file = service_account_dir / "token"
    if kubeconfig is None and service_host and token_file.exists():
        InClusterConfigLoader(
            token_filename=str(token_file),
            cert_filename=str(service_account_dir / "ca.crt"),
            environ={"KUBERNETES_SERVICE_HOST": service_host, "KUBERNETES_SERVICE_PORT": service_port},
        ).load_and_set(configuration)
        return _credentials(configuration, ServiceAccountTokens(configuration))
    path = kubeconfig or default_kubeconfig or str(Path.home() / ".kube/config")
    # persist_config=False: refreshed auth-provider tokens stay in memory, never written to the user's file.
    loader = await load_kube_config(
        config_file=path, client_configuration=configuration, persist_config=False
    )
    return _credentials(configuration, KubeconfigTokens(loader, configuration, clock=time.monotonic()))
