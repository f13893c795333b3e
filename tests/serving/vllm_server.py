"""Run the real vLLM OpenAI server (CPU build, its own venv) with the command our builder renders.

The only changes from the pod's container: the interpreter is the venv's, the pod paths (/models,
/cache) point at local folders, the server listens on loopback at a free port, and the KV cache
is sized for CPU (VLLM_CPU_KVCACHE_SPACE).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
VLLM_ENV_SCRIPT = REPO / ".ci" / "vllm-env.sh"
STARTUP_TIMEOUT_S = 900.0


def vllm_venv() -> Path:
    """Where .ci/vllm-env.sh puts the venv (same variables, same default)."""
    override = os.environ.get("KUBETUNE_VLLM_VENV")
    if override:
        return Path(override)
    cache = os.environ.get("KUBETUNE_CACHE") or str(Path.home() / ".cache" / "kubetune")
    return Path(cache) / "vllm-venv"


def _swap(value: str, paths: Mapping[str, Path]) -> str:
    """A pod path (or `name=path`) under one of `paths` made local; the first matching entry wins."""
    for pod_path, local in paths.items():
        if value == pod_path or value.startswith(pod_path + "/"):
            return str(local) + value[len(pod_path) :]
        if "=" in value:
            name, _, path = value.partition("=")
            if path == pod_path or path.startswith(pod_path + "/"):
                return f"{name}={local}{path[len(pod_path) :]}"
    return value


def local_path(pod_path: str, paths: Mapping[str, Path]) -> str:
    """Where a path inside the pod is on this machine (what the operator's paths become in tests)."""
    return _swap(pod_path, paths)


def local_command(
    container: Mapping[str, Any], *, python: Path, paths: Mapping[str, Path], port: int
) -> tuple[list[str], dict[str, str]]:
    """The container's command + args and plain env, made runnable on this machine."""
    command = list(container["command"])
    assert command[0] == "python3", command
    argv = [str(python), *command[1:]]
    args = list(container["args"])
    for i, arg in enumerate(args):
        if i and args[i - 1] == "--host":
            arg = "127.0.0.1"
        elif i and args[i - 1] == "--port":
            arg = str(port)
        argv.append(_swap(arg, paths))
    env = {e["name"]: _swap(e["value"], paths) for e in container.get("env", []) if "value" in e}
    return argv, env


@dataclass
class VllmServer:
    process: subprocess.Popen[bytes]
    base_url: str  # http://127.0.0.1:PORT
    log: Path
    startup_s: float

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=60)
        # The server runs its engine in child processes of its own session: end that group (ours).
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/health", timeout=5) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def start_server(argv: list[str], env: Mapping[str, str], *, port: int, log: Path) -> VllmServer:
    """Start and poll /health until it answers; fail with the log tail if the process exits first."""
    full_env = {**os.environ, **env}
    start = time.monotonic()
    with log.open("wb") as sink:
        process = subprocess.Popen(
            argv, stdout=sink, stderr=subprocess.STDOUT, env=full_env, start_new_session=True
        )
    server = VllmServer(process, f"http://127.0.0.1:{port}", log, 0.0)
    deadline = start + STARTUP_TIMEOUT_S
    try:
        while not _healthy(server.base_url):
            if process.poll() is not None:
                raise AssertionError(
                    f"vLLM exited with {process.returncode} before /health answered:\n{server.log_tail()}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"vLLM not healthy within {STARTUP_TIMEOUT_S:.0f}s:\n{server.log_tail()}"
                )
            time.sleep(1.0)
    except BaseException:
        # Whatever ends the wait (our deadline, pytest-timeout, Ctrl-C): no server outlives it, since the
        # caller's teardown never gets a server to stop.
        server.stop()
        raise
    server.startup_s = time.monotonic() - start
    return server
