"""A real local control plane: etcd + kube-apiserver (+ controller-manager, scheduler).

Started the way controller-runtime's envtest does, from binaries compiled from pinned
Go modules (`make cluster-binaries`). Used by the test suite and by `make dev`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

BINARIES = ("etcd", "kube-apiserver")
CONTROLLERS = ("kube-controller-manager", "kube-scheduler")


class ControlPlaneError(RuntimeError):
    pass


def binary_dir() -> Path:
    explicit = os.environ.get("KUBETUNE_BIN")
    if explicit:
        return Path(explicit)
    cache = os.environ.get("KUBETUNE_CACHE", str(Path.home() / ".cache" / "kubetune"))
    return Path(cache) / "bin"


SERVICE_CIDR = "10.0.0.0/24"
"""ClusterIPs of every control plane made here (the node's NetworkPolicy controller needs it too)."""


def find_binary(name: str) -> Path:
    path = binary_dir() / name
    if not path.is_file():
        raise ControlPlaneError(
            f"{path} is missing: run `make cluster-binaries` (builds it from pinned Go modules)"
        )
    return path


def run_kubectl(
    kubeconfig: Path, *args: str, input: str | None = None, capture: bool = True, timeout: float = 120.0
) -> subprocess.CompletedProcess[str]:
    """The Go-built kubectl against `kubeconfig`; the caller decides what a non-zero exit means."""
    return subprocess.run(
        [str(find_binary("kubectl")), *args],
        input=input,
        capture_output=capture,
        text=True,
        env={**os.environ, "KUBECONFIG": str(kubeconfig)},
        timeout=timeout,
        check=False,
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def terminate(process: subprocess.Popen[Any], timeout: float = 20.0) -> None:
    """SIGTERM, then SIGKILL if it has not exited within `timeout` seconds."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def stop_group(
    process: subprocess.Popen[Any] | None, sig: int = signal.SIGTERM, timeout: float = 15.0
) -> None:
    """Signal a process started in its own session (and its children); SIGKILL after `timeout`."""
    if process is None or process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=timeout)


def operator_command(namespace: str | None = None, liveness_port: int = 0) -> list[str]:
    """`kubetune operator` as shipped, in this interpreter, with metrics off (dev, tests, benchmarks)."""
    command = [sys.executable, "-m", "kubetune.cli", "operator"]
    if namespace is not None:
        command += ["--namespace", namespace]
    return [*command, "--metrics-port", "0", "--liveness", f"http://127.0.0.1:{liveness_port}/healthz"]


def _pem_key(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def _pem_cert(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@dataclass
class Certificates:
    ca_cert: bytes
    serving_cert: bytes
    serving_key: bytes
    admin_cert: bytes
    admin_key: bytes
    sa_public: bytes
    sa_private: bytes
    kubelet_cert: bytes = b""
    kubelet_key: bytes = b""

    @classmethod
    def generate(cls, node_ip: str | None = None) -> Certificates:
        """One CA for everything; with `node_ip`, the API server's and the kubelet's certs name it too."""
        now = dt.datetime.now(dt.UTC)
        validity = (now - dt.timedelta(hours=1), now + dt.timedelta(days=365))
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kubetune-dev-ca")])
        ca_cert = (
            x509.CertificateBuilder()
            .subject_name(ca_name)
            .issuer_name(ca_name)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(validity[0])
            .not_valid_after(validity[1])
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(ca_key, hashes.SHA256())
        )

        def leaf(subject: x509.Name, *, server: bool, names: list[x509.GeneralName]) -> tuple[bytes, bytes]:
            key = ec.generate_private_key(ec.SECP256R1())
            builder = (
                x509.CertificateBuilder()
                .subject_name(subject)
                .issuer_name(ca_name)
                .public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(validity[0])
                .not_valid_after(validity[1])
                .add_extension(
                    x509.ExtendedKeyUsage(
                        [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
                    ),
                    critical=False,
                )
            )
            if server:
                builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
            return _pem_cert(builder.sign(ca_key, hashes.SHA256())), _pem_key(key)

        node_names: list[x509.GeneralName] = (
            [x509.IPAddress(ipaddress.ip_address(node_ip))] if node_ip is not None else []
        )
        serving_cert, serving_key = leaf(
            x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]),
            server=True,
            names=[
                x509.DNSName("localhost"),
                x509.DNSName("kubernetes"),
                x509.DNSName("kubernetes.default"),
                x509.DNSName("kubernetes.default.svc"),
                x509.DNSName("kubernetes.default.svc.cluster.local"),
                x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                x509.IPAddress(ipaddress.ip_address("10.0.0.1")),
                *node_names,
            ],
        )
        kubelet_cert, kubelet_key = leaf(
            x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kubelet")]),
            server=True,
            names=[x509.DNSName("localhost"), *node_names],
        )
        admin_cert, admin_key = leaf(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:masters"),
                    x509.NameAttribute(NameOID.COMMON_NAME, "admin"),
                ]
            ),
            server=False,
            names=[],
        )
        sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return cls(
            ca_cert=_pem_cert(ca_cert),
            serving_cert=serving_cert,
            serving_key=serving_key,
            admin_cert=admin_cert,
            admin_key=admin_key,
            sa_public=sa_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
            sa_private=_pem_key(sa_key),
            kubelet_cert=kubelet_cert,
            kubelet_key=kubelet_key,
        )


def kubeconfig_document(
    server: str, ca: bytes, cert: bytes, key: bytes, user: str = "admin"
) -> dict[str, object]:
    import base64

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "kubetune", "cluster": {"server": server, "certificate-authority-data": b64(ca)}}
        ],
        "users": [
            {"name": user, "user": {"client-certificate-data": b64(cert), "client-key-data": b64(key)}}
        ],
        "contexts": [{"name": "kubetune", "context": {"cluster": "kubetune", "user": user}}],
        "current-context": "kubetune",
    }


@dataclass
class ControlPlane:
    """etcd + kube-apiserver (+ optional controllers) in `workdir`, on free loopback ports."""

    workdir: Path
    with_controllers: bool = False
    audit: bool = False  # log every request's user agent (the scale benchmark counts them)
    etcd_port: int = field(default_factory=free_port)
    etcd_peer_port: int = field(default_factory=free_port)
    api_port: int = field(default_factory=free_port)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    certs: Certificates | None = None
    # With a real node: the API server binds and advertises this address (the node's bridge), so
    # pods reach it through the `kubernetes` Service, and it admits pods with service-account tokens.
    node_ip: str | None = None

    @property
    def host(self) -> str:
        return self.node_ip or "127.0.0.1"

    @property
    def server(self) -> str:
        return f"https://{self.host}:{self.api_port}"

    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "kubeconfig"

    @property
    def pki(self) -> Path:
        return self.workdir / "pki"

    def _write_pki(self) -> None:
        certs = self.certs = Certificates.generate(self.node_ip)
        self.pki.mkdir(parents=True, exist_ok=True)
        for name, data in {
            "ca.crt": certs.ca_cert,
            "apiserver.crt": certs.serving_cert,
            "apiserver.key": certs.serving_key,
            "admin.crt": certs.admin_cert,
            "admin.key": certs.admin_key,
            "sa.pub": certs.sa_public,
            "sa.key": certs.sa_private,
            "kubelet.crt": certs.kubelet_cert,
            "kubelet.key": certs.kubelet_key,
        }.items():
            (self.pki / name).write_bytes(data)
            (self.pki / name).chmod(0o600)
        self.kubeconfig.write_text(
            json.dumps(
                kubeconfig_document(self.server, certs.ca_cert, certs.admin_cert, certs.admin_key), indent=2
            )
        )
        self.kubeconfig.chmod(0o600)

    def _spawn(self, name: str, args: list[str]) -> None:
        log = (self.workdir / f"{name}.log").open("ab")
        self.processes[name] = subprocess.Popen(
            [str(find_binary(name)), *args], stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def start_etcd(self) -> None:
        data = self.workdir / "etcd"
        data.mkdir(parents=True, exist_ok=True)
        self._spawn(
            "etcd",
            [
                f"--data-dir={data}",
                f"--listen-client-urls=http://127.0.0.1:{self.etcd_port}",
                f"--advertise-client-urls=http://127.0.0.1:{self.etcd_port}",
                f"--listen-peer-urls=http://127.0.0.1:{self.etcd_peer_port}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{self.etcd_peer_port}",
                f"--initial-cluster=default=http://127.0.0.1:{self.etcd_peer_port}",
                "--unsafe-no-fsync",
                "--quota-backend-bytes=8589934592",
                "--log-level=warn",
            ],
        )

    @property
    def audit_log(self) -> Path:
        return self.workdir / "audit.log"

    def _audit_args(self) -> list[str]:
        if not self.audit:
            return []
        policy = self.workdir / "audit-policy.yaml"
        policy.write_text(
            "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\n"
            "rules:\n- level: Metadata\n"
        )
        return [
            f"--audit-policy-file={policy}",
            f"--audit-log-path={self.audit_log}",
            "--audit-log-maxsize=0",
        ]

    def _node_args(self) -> list[str]:
        if self.node_ip is None:
            # No kubelet runs pods: nothing would mount a token, and no controller creates accounts.
            return ["--disable-admission-plugins=ServiceAccount"]
        pki = self.pki
        return [
            # kwok GPU nodes are tainted nvidia.com/gpu like real ones; pods asking for GPUs tolerate it.
            "--enable-admission-plugins=ExtendedResourceToleration",
            # Without it `kubectl logs/exec` resolves the node's name, which no DNS here knows.
            "--kubelet-preferred-address-types=InternalIP",
            f"--kubelet-client-certificate={pki / 'admin.crt'}",
            f"--kubelet-client-key={pki / 'admin.key'}",
            f"--kubelet-certificate-authority={pki / 'ca.crt'}",
        ]

    def start_apiserver(self) -> None:
        pki = self.pki
        self._spawn(
            "kube-apiserver",
            [
                *self._audit_args(),
                f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
                f"--bind-address={self.host}",
                f"--advertise-address={self.host}",
                f"--secure-port={self.api_port}",
                f"--cert-dir={self.workdir / 'apiserver-certs'}",
                f"--tls-cert-file={pki / 'apiserver.crt'}",
                f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--client-ca-file={pki / 'ca.crt'}",
                "--authorization-mode=RBAC",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                f"--service-account-issuer=https://{self.host}:{self.api_port}/",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                *self._node_args(),
                "--allow-privileged=true",
                "--max-requests-inflight=2000",
                "--max-mutating-requests-inflight=1000",
                "--enable-priority-and-fairness=false",
                "--v=0",
            ],
        )

    def start_controllers(self) -> None:
        self._spawn(
            "kube-controller-manager",
            [
                f"--kubeconfig={self.kubeconfig}",
                "--controllers=*",
                "--use-service-account-credentials=false",
                f"--service-account-private-key-file={self.pki / 'sa.key'}",
                f"--root-ca-file={self.pki / 'ca.crt'}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                "--secure-port=0",
                "--kube-api-qps=500",
                "--kube-api-burst=1000",
                "--concurrent-job-syncs=50",
                "--concurrent-gc-syncs=50",
            ],
        )
        self._spawn(
            "kube-scheduler",
            [
                f"--kubeconfig={self.kubeconfig}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                "--secure-port=0",
                "--kube-api-qps=500",
                "--kube-api-burst=1000",
            ],
        )

    def _ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        ctx.load_cert_chain(str(self.pki / "admin.crt"), str(self.pki / "admin.key"))
        return ctx

    def get(self, path: str, timeout: float = 5.0) -> bytes:
        url = self.server + path  # always https://<loopback or node bridge>:<port>/...
        with urllib.request.urlopen(url, context=self._ssl_context(), timeout=timeout) as resp:  # noqa: S310
            body: bytes = resp.read()
            return body

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        last = "not started"
        while time.monotonic() < deadline:
            for name, proc in self.processes.items():
                if proc.poll() is not None:
                    tail = (self.workdir / f"{name}.log").read_text(errors="replace")[-3000:]
                    raise ControlPlaneError(f"{name} exited with {proc.returncode}:\n{tail}")
            try:
                if self.get("/readyz", timeout=2.0) == b"ok":
                    return
            except (urllib.error.URLError, ConnectionError, TimeoutError, ssl.SSLError) as exc:
                last = str(exc)
            time.sleep(0.25)
        raise ControlPlaneError(f"kube-apiserver not ready after {timeout}s: {last}")

    def start(self) -> ControlPlane:
        for name in (*BINARIES, *(CONTROLLERS if self.with_controllers else ())):
            find_binary(name)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._write_pki()
        self.start_etcd()
        self.start_apiserver()
        self.wait_ready()
        if self.with_controllers:
            self.start_controllers()
        return self

    def stop_process(self, name: str, sig: int = signal.SIGTERM, timeout: float = 15.0) -> None:
        stop_group(self.processes.pop(name, None), sig, timeout)

    def restart_apiserver(self) -> None:
        self.stop_process("kube-apiserver")
        self.start_apiserver()
        self.wait_ready()

    def stop(self, *, remove: bool = True) -> None:
        for name in reversed(list(self.processes)):
            self.stop_process(name)
        if remove:
            shutil.rmtree(self.workdir, ignore_errors=True)
