"""One real node for every real-node e2e module: its start, the image import and `helm install` cost
minutes, and the node can exist only once per machine."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.realnode import real_node_cluster
from tests.support.realstack import RealStack

from kubetune.devcluster import stack


@pytest.fixture(scope="package")
def real() -> Iterator[RealStack]:
    with real_node_cluster(Path(tempfile.mkdtemp(prefix="kubetune-e2e-node-"))) as (kube, node):
        node.start_prometheus()
        images = stack.local_images(node)
        result = RealStack(kube, node, images)
        with result.explained():
            stack.install_operator(kube.kubeconfig, images, prometheus_url=node.prometheus_url)
        yield result
