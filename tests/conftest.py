"""Shared fixtures: a real etcd + kube-apiserver per test session, a namespace per test."""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from tests.support.cluster import Kube, start_plane

from kubetune.kube.client import KubeClient, load_credentials


@pytest.fixture(scope="session")
def kube() -> Iterator[Kube]:
    """etcd + kube-apiserver + controller-manager + scheduler, with our CRDs Established.

    Fails (never skips) when the Go-built binaries are missing.
    """
    workdir = Path(tempfile.mkdtemp(prefix="kubetune-plane-"))
    kube = start_plane(workdir, with_controllers=True)
    try:
        yield kube
    finally:
        kube.plane.stop()


@pytest.fixture
def namespace(kube: Kube) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:10]}"
    kube.kubectl("create", "namespace", name)
    yield name
    kube.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
async def client(kube: Kube) -> AsyncIterator[KubeClient]:
    api = KubeClient(await load_credentials(str(kube.kubeconfig)))
    try:
        yield api
    finally:
        await api.close()
