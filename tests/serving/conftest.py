"""Session fixtures of the real-vLLM tests: the tiny model, a LoRA adapter, one vLLM server.

The server is started once per session with exactly the container command that
build_variant_children renders for a variant serving the tiny model plus the adapter.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.serving.lora_adapter import train_memorising_adapter
from tests.serving.objects import model_deployment
from tests.serving.vllm_server import (
    VLLM_ENV_SCRIPT,
    VllmServer,
    local_command,
    start_server,
    vllm_venv,
)

from kubetune.api.modeldeployment import ModelDeploymentSpec
from kubetune.builders.modeldeployment import build_variant_children
from kubetune.devcluster.controlplane import free_port
from kubetune.devcluster.tinymodel import create_tiny_model
from kubetune.serving.resolution import resolve_variant_model

BASE_NAME = "tiny"
ADAPTER_NAME = "sft"
SERVED_VARIANT: dict[str, Any] = {
    "name": BASE_NAME,
    "model": {"uri": "pvc://models/tiny"},
    "adapters": [{"name": ADAPTER_NAME, "uri": "pvc://adapters/sft"}],
    "weight": 100,
    # The tiny model's context; vLLM's CPU engine ignores the GPU memory fraction.
    "vllm": {"maxModelLen": 512, "dtype": "float32", "maxNumSeqs": 16},
}


@pytest.fixture(scope="session")
def vllm_python() -> Path:
    """The vLLM CPU venv's interpreter. Missing venv = failure, never a skip."""
    python = vllm_venv() / "bin" / "python"
    if not python.exists():
        pytest.fail(
            f"vLLM CPU venv missing ({python}): run {VLLM_ENV_SCRIPT} (`make test` does)", pytrace=False
        )
    return python


@pytest.fixture(scope="session")
def model_layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder laid out like the pod's /models: base/ and adapters/sft/."""
    root = tmp_path_factory.mktemp("models")
    create_tiny_model(root / "base")
    train_memorising_adapter(root / "base", root / "adapters" / ADAPTER_NAME)
    return root


@pytest.fixture(scope="session")
def rendered_container() -> dict[str, Any]:
    mdep = model_deployment([SERVED_VARIANT])
    variant = ModelDeploymentSpec.model_validate(mdep["spec"]).variants[0]
    resolution = resolve_variant_model(variant, {})
    deployment = build_variant_children(mdep, variant, resolution)[0]
    container: dict[str, Any] = deployment["spec"]["template"]["spec"]["containers"][0]
    return container


@pytest.fixture(scope="session")
def vllm_server(
    request: pytest.FixtureRequest,
    vllm_python: Path,
    model_layout: Path,
    rendered_container: dict[str, Any],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[VllmServer]:
    work = tmp_path_factory.mktemp("vllm")
    port = free_port()
    argv, env = local_command(
        rendered_container,
        python=vllm_python,
        paths={"/models": model_layout, "/cache": work / "cache"},
        port=port,
    )
    env["VLLM_CPU_KVCACHE_SPACE"] = "1"  # GiB; the CPU build's stand-in for --gpu-memory-utilization
    server = start_server(argv, env, port=port, log=work / "vllm.log")
    # The figure the CI log should show: capture is suspended so the line reaches the terminal.
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line(
                f"\nvLLM CPU server healthy {server.startup_s:.0f} s after start: {' '.join(argv[1:])}"
            )
    try:
        yield server
    finally:
        server.stop()
