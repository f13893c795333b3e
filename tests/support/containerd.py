"""A throwaway containerd (its own root, state and socket under /tmp) to import and run images in.

Never the machine's /run/containerd or /var/lib/containerd: a real node may be using those. The
CRI plugin is off (only `ctr` talks to it), so no CNI or kubelet settings are needed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from kubetune.devcluster.controlplane import terminate

# Prints the uid and gid a Python program starts as (PYTHONPATH=/kt-probe): every image's program is
# Python, and this shows the uid of the program itself, not only the image's USER field.
PROBE = 'import os, sys\nprint(f"kt-probe uid={os.getuid()} gid={os.getgid()}", file=sys.stderr)\n'

CONFIG = """version = 2
root = "{dir}/root"
state = "{dir}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "{dir}/containerd.sock"
[ttrpc]
  address = "{dir}/containerd.sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
"""


@dataclass(frozen=True)
class Containerd:
    dir: Path
    namespace: str = "kubetune-test"

    @property
    def address(self) -> str:
        return str(self.dir / "containerd.sock")

    def ctr(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ctr", "--address", self.address, "--namespace", self.namespace, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def process_user(self, ref: str) -> tuple[int, int]:
        """uid and gid of the process containerd's runtime spec gives a container of `ref`."""
        name = f"kt-{time.monotonic_ns()}"
        created = self.ctr("containers", "create", ref, name)
        assert created.returncode == 0, created.stderr
        try:
            info = json.loads(self.ctr("containers", "info", name).stdout)
        finally:
            self.ctr("containers", "delete", name)
        user = info["Spec"]["process"]["user"]
        return int(user["uid"]), int(user["gid"])

    def run_probed(self, ref: str, *argv: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """`ctr run --rm` of `argv` (ctr replaces entrypoint and command) as the image's USER,
        with a read-only root, a tmpfs /tmp and the uid probe mounted."""
        probe = self.dir / "probe"
        probe.mkdir(exist_ok=True)
        (probe / "sitecustomize.py").write_text(PROBE)
        name = f"kt-{time.monotonic_ns()}"
        return self.ctr(
            "run",
            "--rm",
            "--read-only",
            "--mount",
            f"type=bind,src={probe},dst=/kt-probe,options=rbind:ro",
            "--mount",
            "type=tmpfs,src=tmpfs,dst=/tmp,options=rw:nosuid:nodev",
            "--env",
            "PYTHONPATH=/kt-probe",
            ref,
            name,
            *argv,
            timeout=timeout,
        )


@contextmanager
def throwaway_containerd() -> Iterator[Containerd]:
    # Short path: a unix socket's path must stay under 108 bytes.
    workdir = Path(tempfile.mkdtemp(prefix="kt-ctrd-", dir="/tmp"))
    config = workdir / "config.toml"
    config.write_text(CONFIG.format(dir=workdir))
    log = open(workdir / "containerd.log", "w")  # noqa: SIM115 (closed below, after the process)
    process = subprocess.Popen(["containerd", "--config", str(config)], stdout=log, stderr=subprocess.STDOUT)
    daemon = Containerd(workdir)
    try:
        deadline = time.monotonic() + 30
        while daemon.ctr("version", timeout=10).returncode != 0:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"containerd did not start: {(workdir / 'containerd.log').read_text()[-2000:]}"
                )
            time.sleep(0.2)
        yield daemon
    finally:
        terminate(process)
        log.close()
        # Snapshots are plain directories once containerd is gone; any leftover mount would make
        # rmtree fail loudly rather than delete through it.
        subprocess.run(["umount", "-R", str(workdir / "root")], capture_output=True, check=False)
        shutil.rmtree(workdir, ignore_errors=True)
