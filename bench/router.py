"""Router overhead benchmark: direct vs kubetune router (Go binary) vs nginx vs vllm-router, on loopback.

Backends: two fake OpenAI servers with a fixed latency, served by nginx's echo module (C, nearly free of CPU,
so the proxies are what is measured): `/v1/chat/completions` answers JSON after `--backend-delay-ms`,
`/v1/completions` streams 8 SSE events 5 ms apart, `/v1/fast/chat/completions` answers at once (for max
req/s). Load: `wrk` (C, its own process). Everything shares this machine's cores, as a sidecar would.

Scenarios, each against every target:
  plain   closed loop, `--latency-connections` connections on the delayed path (about 500 req/s)
  stream  the same on the streaming path
  max     `--max-connections` connections on the instant path: the highest sustained req/s

nginx does a 70/30 weighted split (`upstream` weights, generated here), one worker process; the kubetune
router (router/, built by router/build.sh) does the same split on one core like it (GOMAXPROCS=1;
`--router-procs 0` keeps Go's default, one per core); vllm-router (PyPI, Rust) round-robins (it has no
weights) with its default threads.

Run: .venv/bin/python bench/router.py [--duration 10] [--profile]
Last line: `router: added_p99_ms=<x> rps_vs_nginx=<ratio> rps_vs_vllm_router=<ratio>`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from kubetune.devcluster.controlplane import free_port, terminate

REPO = Path(__file__).resolve().parent.parent
VLLM_ROUTER = Path.home() / ".cache/kubetune/bench-venv/bin/vllm-router"
ECHO_MODULE = "/usr/lib/nginx/modules/ngx_http_echo_module.so"

CHAT_BODY = json.dumps(
    {"model": "m", "messages": [{"role": "user", "content": "Say hello in five words."}], "max_tokens": 16}
)
STREAM_BODY = json.dumps(
    {"model": "m", "prompt": "Say hello in five words.", "max_tokens": 8, "stream": True}
)
CHAT_RESPONSE = json.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 0,
        "model": "m",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello there, how are you?"},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19},
    }
)


VLLM_ROUTER_VERSION = "0.1.17"


def router_binary() -> str:
    """The Go router for the current sources (cached by source hash: a no-op when already built)."""
    built = subprocess.run([str(REPO / "router/build.sh")], capture_output=True, text=True, check=True)
    return built.stdout.strip().splitlines()[-1]


def ensure_vllm_router() -> str | None:
    """Install vllm-router into its own venv on first use; the error text when that is impossible."""
    if VLLM_ROUTER.exists():
        return None
    venv = VLLM_ROUTER.parent.parent
    steps = [
        ["python3", "-m", "venv", str(venv)],
        [str(venv / "bin/pip"), "install", "-q", f"vllm-router=={VLLM_ROUTER_VERSION}"],
    ]
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            return f"{' '.join(step)} failed: {(done.stderr or done.stdout)[-2000:]}"
    return None if VLLM_ROUTER.exists() else f"vllm-router=={VLLM_ROUTER_VERSION} installed no {VLLM_ROUTER}"


def nginx_quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def backend_conf(workdir: Path, ports: list[int], delay_ms: float) -> str:
    events = []
    for i in range(8):
        chunk = {
            "id": "cmpl-bench",
            "object": "text_completion",
            "model": "m",
            "choices": [{"index": 0, "text": f"t{i}"}],
        }
        events.append(
            f"echo {nginx_quote('data: ' + json.dumps(chunk))}; echo; echo_flush; echo_sleep 0.005;"
        )
    stream = "\n".join(events) + " echo 'data: [DONE]'; echo;"
    servers = "\n".join(
        f"""
    server {{
        listen 127.0.0.1:{port} reuseport backlog=4096;
        keepalive_requests 1000000;
        location = /health {{ return 200 "ok"; }}
        location = /v1/models {{
            default_type application/json;
            return 200 '{{"object":"list","data":[{{"id":"m","object":"model","owned_by":"bench"}}]}}';
        }}
        location = /v1/chat/completions {{
            echo_read_request_body;
            echo_sleep {delay_ms / 1000:.3f};
            echo_exec /answer;
        }}
        location = /v1/fast/chat/completions {{
            default_type application/json;
            return 200 {nginx_quote(CHAT_RESPONSE)};
        }}
        location = /answer {{
            internal;
            default_type application/json;
            return 200 {nginx_quote(CHAT_RESPONSE)};
        }}
        location = /v1/completions {{
            default_type text/event-stream;
            echo_read_request_body;
            {stream}
        }}
    }}"""
        for port in ports
    )
    return _nginx_main(workdir, "backend", servers)


def proxy_conf(workdir: Path, port: int, upstreams: list[tuple[int, int]]) -> str:
    members = "\n".join(f"        server 127.0.0.1:{p} weight={w};" for p, w in upstreams)
    server = f"""
    upstream variants {{
{members}
        keepalive 256;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        keepalive_requests 1000000;
        client_max_body_size 8m;
        location / {{
            proxy_pass http://variants;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_read_timeout 300s;
        }}
    }}"""
    return _nginx_main(workdir, "proxy", server)


def _nginx_main(workdir: Path, name: str, servers: str) -> str:
    temp = workdir / f"nginx-{name}"
    temp.mkdir(exist_ok=True)
    return f"""
load_module {ECHO_MODULE};
worker_processes 1;
daemon off;
pid {temp}/nginx.pid;
error_log {temp}/error.log warn;
events {{ worker_connections 8192; multi_accept on; }}
http {{
    access_log off;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    {servers}
}}
"""


@dataclass
class Service:
    name: str
    process: subprocess.Popen[bytes]
    log: Path


def wait_http(url: str, process: subprocess.Popen[bytes], log: Path, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: process exited {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} not ready within {timeout_s}s:\n{log.read_text()[-3000:]}")


@contextlib.contextmanager
def started(
    name: str, argv: list[str], workdir: Path, ready_url: str, env: dict[str, str] | None = None
) -> Iterator[Service]:
    log = workdir / f"{name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env={**os.environ, **(env or {})}
        )
    try:
        wait_http(ready_url, process, log)
        yield Service(name, process, log)
    finally:
        terminate(process)


@dataclass
class WrkResult:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    requests: int
    cpu_us_per_request: float | None = None


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of a process and its live children (nginx workers); all threads included."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        own, parent = int(stat.parent.name), int(fields[1])
        if own == pid or parent == pid:
            total += (int(fields[11]) + int(fields[12])) / ticks
    return total


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([0-9.]+)(us|ms|s)", text)
    if match is None:
        raise ValueError(text)
    return float(match.group(1)) * _UNITS[match.group(2)]


def run_wrk(url: str, body: str, connections: int, duration_s: int, workdir: Path) -> WrkResult:
    script = workdir / f"post-{abs(hash(body))}.lua"
    script.write_text(
        'wrk.method = "POST"\n'
        f"wrk.body = {json.dumps(body)}\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
    )
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{duration_s}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    percentiles = dict(re.findall(r"^\s+(50|99)%\s+(\S+)$", out, re.MULTILINE))
    rps = float(re.search(r"Requests/sec:\s+([0-9.]+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = int(non2xx.group(1)) if non2xx else 0
    if socket_errors:
        errors += sum(int(g) for g in socket_errors.groups())
    return WrkResult(rps, _ms(percentiles["50"]), _ms(percentiles["99"]), errors, total)


SCENARIOS = {
    "plain": ("/v1/chat/completions", CHAT_BODY),
    "stream": ("/v1/completions", STREAM_BODY),
    "max": ("/v1/fast/chat/completions", CHAT_BODY),
}


def router_config(ports: list[int]) -> dict[str, object]:
    return {
        "variants": [
            {"name": "stable", "weight": 70, "endpoints": [f"http://127.0.0.1:{ports[0]}"]},
            {"name": "canary", "weight": 30, "endpoints": [f"http://127.0.0.1:{ports[1]}"]},
        ],
        "stickyHeader": "x-user-id",
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=int, default=10, help="Seconds per measurement.")
    parser.add_argument("--backend-delay-ms", type=float, default=20.0, help="Fixed backend latency.")
    parser.add_argument("--latency-connections", type=int, default=10, help="Connections for plain/stream.")
    parser.add_argument("--max-connections", type=int, default=64, help="Connections for max req/s.")
    parser.add_argument(
        "--router-procs", type=int, default=1, help="GOMAXPROCS of the router (0: Go's default, all cores)."
    )
    parser.add_argument(
        "--profile", action="store_true", help="Also profile the router (pprof) under max load."
    )
    args = parser.parse_args()

    for tool in ("wrk", "nginx"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is missing: apt-get install -y wrk nginx-light")
    workdir = Path(tempfile.mkdtemp(prefix="kubetune-bench-router-"))
    backends = [free_port(), free_port()]
    ports = {"nginx": free_port(), "router": free_port(), "vllm-router": free_port()}
    (workdir / "backend.conf").write_text(backend_conf(workdir, backends, args.backend_delay_ms))
    (workdir / "proxy.conf").write_text(
        proxy_conf(workdir, ports["nginx"], [(backends[0], 7), (backends[1], 3)])
    )
    (workdir / "router.json").write_text(json.dumps(router_config(backends)))
    router = router_binary()
    router_env = {"GOMAXPROCS": str(args.router_procs)} if args.router_procs > 0 else {}
    notes: list[str] = []

    with contextlib.ExitStack() as stack:
        stack.enter_context(
            started(
                "backend",
                ["nginx", "-c", str(workdir / "backend.conf")],
                workdir,
                f"http://127.0.0.1:{backends[1]}/health",
            )
        )
        targets: dict[str, str] = {"direct": f"http://127.0.0.1:{backends[0]}"}
        pids: dict[str, int] = {}
        pids["nginx"] = stack.enter_context(
            started(
                "nginx",
                ["nginx", "-c", str(workdir / "proxy.conf")],
                workdir,
                f"http://127.0.0.1:{ports['nginx']}/health",
            )
        ).process.pid
        router_argv = [
            router,
            "--config",
            str(workdir / "router.json"),
            "--host",
            "127.0.0.1",
            "--port",
            str(ports["router"]),
            "--log-level",
            "WARNING",
        ]
        pids["kubetune-router"] = stack.enter_context(
            started("router", router_argv, workdir, f"http://127.0.0.1:{ports['router']}/readyz", router_env)
        ).process.pid
        targets["kubetune-router"] = f"http://127.0.0.1:{ports['router']}"
        targets["nginx"] = f"http://127.0.0.1:{ports['nginx']}"
        install_error = ensure_vllm_router()
        if install_error is None:
            argv = [
                str(VLLM_ROUTER),
                "--host",
                "127.0.0.1",
                "--port",
                str(ports["vllm-router"]),
                "--worker-urls",
                *(f"http://127.0.0.1:{p}" for p in backends),
                "--policy",
                "round_robin",
                "--log-level",
                "error",
                "--disable-retries",
            ]
            try:
                pids["vllm-router"] = stack.enter_context(
                    started("vllm-router", argv, workdir, f"http://127.0.0.1:{ports['vllm-router']}/health")
                ).process.pid
                targets["vllm-router"] = f"http://127.0.0.1:{ports['vllm-router']}"
            except RuntimeError as exc:
                notes.append(f"vllm-router did not start: {exc}")
        else:
            notes.append(f"vllm-router not measured: {install_error}")

        results: dict[tuple[str, str], WrkResult] = {}
        for scenario, (path, body) in SCENARIOS.items():
            connections = args.max_connections if scenario == "max" else args.latency_connections
            for name, base in targets.items():
                run_wrk(base + path, body, connections, 2, workdir)  # warm-up: connections, caches
                pid = pids.get(name)
                before = cpu_seconds(pid) if pid else 0.0
                r = run_wrk(base + path, body, connections, args.duration, workdir)
                if pid and r.requests:
                    r.cpu_us_per_request = (cpu_seconds(pid) - before) / r.requests * 1e6
                results[(scenario, name)] = r
                print(
                    f"  {scenario:6} {name:16} {r.rps:9.0f} req/s  p50 {r.p50_ms:7.2f} ms  "
                    f"p99 {r.p99_ms:7.2f} ms  errors {r.errors}",
                    file=sys.stderr,
                    flush=True,
                )
        print_table(results, targets, args)
        for note in notes:
            print("note:", note)
        if args.profile:
            profile_router(workdir, args, router, router_env)

    plain_direct, plain_router = results[("plain", "direct")], results[("plain", "kubetune-router")]
    added_p99 = plain_router.p99_ms - plain_direct.p99_ms
    router_max = results[("max", "kubetune-router")].rps

    router_cpu = results[("max", "kubetune-router")].cpu_us_per_request
    for other in ("nginx", "vllm-router"):
        found = results.get(("max", other))
        if router_cpu and found and found.cpu_us_per_request:
            print(
                f"cpu-normalised throughput vs {other}: {found.cpu_us_per_request / router_cpu:.2f} "
                f"(router {router_cpu:.0f} us/req, {other} {found.cpu_us_per_request:.0f} us/req)"
            )

    def ratio(other: str) -> str:
        found = results.get(("max", other))
        return f"{router_max / found.rps:.2f}" if found and found.rps else "n/a"

    print(
        f"router: added_p99_ms={added_p99:.2f} rps_vs_nginx={ratio('nginx')} "
        f"rps_vs_vllm_router={ratio('vllm-router')}"
    )


def print_table(
    results: dict[tuple[str, str], WrkResult], targets: dict[str, str], args: argparse.Namespace
) -> None:
    print(
        f"\nloopback, {os.cpu_count()} cores shared by wrk, backend, proxy; {args.duration}s per cell; "
        f"backend delay {args.backend_delay_ms:g} ms (plain), 8 events x 5 ms (stream); "
        f"router GOMAXPROCS {args.router_procs or 'default'}; "
        f"load average {Path('/proc/loadavg').read_text().split()[0]} (other work on the machine skews "
        "wall times; cpu us/req is the proxy's own CPU per request, all threads and workers)"
    )
    header = (
        f"{'scenario':8} {'target':16} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'+p50 ms':>8} {'+p99 ms':>8} {'errors':>7} {'cpu us/req':>10}"
    )
    print(header)
    print("-" * len(header))
    for scenario in SCENARIOS:
        direct = results[(scenario, "direct")]
        for name in targets:
            r = results[(scenario, name)]
            print(
                f"{scenario:8} {name:16} {r.rps:9.0f} {r.p50_ms:8.2f} {r.p99_ms:8.2f} "
                f"{r.p50_ms - direct.p50_ms:8.2f} {r.p99_ms - direct.p99_ms:8.2f} {r.errors:7d} "
                f"{'-' if r.cpu_us_per_request is None else f'{r.cpu_us_per_request:.0f}':>10}"
            )


def profile_router(workdir: Path, args: argparse.Namespace, router: str, env: dict[str, str]) -> None:
    """Run the router with pprof on, take a CPU profile under max load and print where its time goes."""
    port, debug = free_port(), free_port()
    argv = [
        router,
        "--config",
        str(workdir / "router.json"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "WARNING",
        "--debug-addr",
        f"127.0.0.1:{debug}",
    ]
    profile = workdir / "router.pprof"
    seconds = max(1, args.duration - 2)
    with started("router-profiled", argv, workdir, f"http://127.0.0.1:{port}/readyz", env):
        fetch = subprocess.Popen(
            [
                "curl",
                "-s",
                "-o",
                str(profile),
                f"http://127.0.0.1:{debug}/debug/pprof/profile?seconds={seconds}",
            ]
        )
        run_wrk(
            f"http://127.0.0.1:{port}/v1/fast/chat/completions",
            CHAT_BODY,
            args.max_connections,
            args.duration,
            workdir,
        )
        fetch.wait(timeout=60)
    top = subprocess.run(
        ["go", "tool", "pprof", "-top", "-nodecount=25", router, str(profile)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "GOTOOLCHAIN": "local"},
    )
    print("\nrouter CPU profile under max load (pprof -top):")
    print(top.stdout or top.stderr)
    groups = subprocess.run(
        ["go", "tool", "pprof", "-top", "-cum", "-nodecount=40", router, str(profile)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "GOTOOLCHAIN": "local"},
    )
    print("cumulative:")
    print(groups.stdout or groups.stderr)


if __name__ == "__main__":
    main()
