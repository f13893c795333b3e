"""Containers and pod specs of a FineTuneJob's validation and training pods. Pure."""

from __future__ import annotations

from typing import Any

from kubetune.api.common import GROUP
from kubetune.api.finetunejob import FineTuneJobSpec
from kubetune.api.trainerreport import ATTEMPT_ENV
from kubetune.api.trainingconfig import CONFIG_DIR, CONFIG_FILE, FATAL_EXIT_CODES
from kubetune.builders.common import GPU_PRODUCT_LABEL, RESTRICTED_CONTAINER_SECURITY
from kubetune.builders.storage import StorageLayout
from kubetune.builders.writable import cache_env, writable_mounts, writable_volumes

TRAINER_CONTAINER = "trainer"
VALIDATOR_CONTAINER = "validate"
STAGING_CONTAINER = "stage"
WAIT_CONTAINER = "wait-for-master"
MASTER_PORT = 29500
RENDEZVOUS_PORT_NAME = "rendezvous"
CONFIG_VOLUME = "config"
SHM_VOLUME = "dshm"
# The projected API token of the trainer container (a volume name and a path, not secrets).
TOKEN_VOLUME = "api-token"  # noqa: S105
TOKEN_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"  # noqa: S105
# The kubelet's own value for automounted tokens: the API server extends it to a year (legacy clients
# read the token once), while it still expires with the pod.
TOKEN_EXPIRATION_SECONDS = 3607
SHM_SIZE_LIMIT = "8Gi"
"""/dev/shm is memory: bounded, so a runaway writer is evicted instead of filling the node's RAM."""
GPU_RESOURCE = "nvidia.com/gpu"
COMPLETION_INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"
POD_UID = 1000
MASTER_WAIT_TIMEOUT_SECONDS = 1800
TERMINATION_GRACE_SECONDS = 120
VALIDATOR_RESOURCES = {"requests": {"cpu": "1", "memory": "2Gi"}}

# Defaults only: NCCL picks transports itself; these make failures loud and bounded instead of
# hanging a gang until the collective timeout.
NCCL_ENV = {
    "NCCL_DEBUG": "WARN",
    "TORCH_NCCL_ASYNC_ERROR_HANDLING": "1",
    "TORCH_NCCL_DUMP_ON_TIMEOUT": "0",
}

# Rank 0 starts its TCPStore only once its own init containers are done, so ranks > 0 wait for a
# TCP connect (DNS alone resolves as soon as the pod has an IP, long before anything listens).
WAIT_FOR_MASTER_SCRIPT = """\
import os, socket, sys, time
if os.environ["JOB_COMPLETION_INDEX"] == "0":
    sys.exit(0)
host, port = os.environ["PET_MASTER_ADDR"], int(os.environ["PET_MASTER_PORT"])
deadline = time.monotonic() + int(os.environ["KUBETUNE_MASTER_WAIT_SECONDS"])
while True:
    try:
        socket.create_connection((host, port), timeout=5).close()
        print(f"rank 0 reachable at {host}:{port}", flush=True)
        sys.exit(0)
    except OSError as err:
        if time.monotonic() > deadline:
            print(f"rank 0 not reachable at {host}:{port}: {err}", file=sys.stderr, flush=True)
            sys.exit(1)
        time.sleep(2)
"""


def config_path() -> str:
    return f"{CONFIG_DIR}/{CONFIG_FILE}"


def trainer_command(subcommand: str) -> list[str]:
    return ["python", "-m", "kubetune.trainer", subcommand, "--config", config_path()]


def torchrun_command(*, nodes: int, procs_per_node: int, master_addr: str) -> list[str]:
    # $(JOB_COMPLETION_INDEX) is expanded by the kubelet from the env the Job controller injects.
    # `launch` wraps torchrun, which would report a worker's exit 40/41 as 1 (see trainer/launch.py).
    # torchrun as a module of the interpreter that has kubetune: the `torchrun` script on PATH belongs
    # to wherever torch was installed (the base image's python), which cannot import kubetune.
    return [
        "python",
        "-m",
        "kubetune.trainer",
        "launch",
        "--",
        "python",
        "-m",
        "torch.distributed.run",
        f"--nnodes={nodes}",
        f"--nproc-per-node={procs_per_node}",
        "--node-rank=$(JOB_COMPLETION_INDEX)",
        f"--master-addr={master_addr}",
        f"--master-port={MASTER_PORT}",
        # A failed worker fails the pod; the operator restarts the whole gang from a checkpoint.
        "--max-restarts=0",
        "-m",
        "kubetune.trainer",
        "train",
        "--config",
        config_path(),
    ]


def _env(values: dict[str, str]) -> list[dict[str, Any]]:
    return [{"name": k, "value": v} for k, v in values.items()]


def _container(
    name: str,
    image: str,
    pull_policy: str | None,
    command: list[str],
    env: list[dict[str, Any]],
    mounts: list[dict[str, Any]],
    resources: dict[str, Any] | None = None,
) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": name,
        "image": image,
        "command": command,
        "env": [*cache_env(), *env],
        "volumeMounts": [*writable_mounts(), *mounts],
        "securityContext": dict(RESTRICTED_CONTAINER_SECURITY),
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if pull_policy:
        container["imagePullPolicy"] = pull_policy
    if resources:
        container["resources"] = resources
    return container


def _config_mount() -> dict[str, Any]:
    return {"name": CONFIG_VOLUME, "mountPath": CONFIG_DIR, "readOnly": True}


def _config_volume(config_map: str) -> dict[str, Any]:
    return {"name": CONFIG_VOLUME, "configMap": {"name": config_map}}


def _common_env() -> dict[str, str]:
    return {"PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "KUBETUNE_CONFIG": config_path()}


def staging_container(layout: StorageLayout, image: str, pull_policy: str | None) -> dict[str, Any]:
    env = _env({"PYTHONUNBUFFERED": "1", "KUBETUNE_CONFIG": config_path()}) + layout.staging_env
    return _container(
        STAGING_CONTAINER,
        image,
        pull_policy,
        trainer_command("stage"),
        env,
        [_config_mount(), *layout.input_mounts],
    )


def _pod_security() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": POD_UID,
        "runAsGroup": POD_UID,
        "fsGroup": POD_UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _trainer_resources(spec: FineTuneJobSpec) -> dict[str, Any]:
    res = spec.resources
    requests: dict[str, Any] = {}
    if res.cpu is not None:
        requests["cpu"] = res.cpu
    if res.memory is not None:
        requests["memory"] = res.memory
    limits: dict[str, Any] = dict(requests)
    if res.gpus_per_node:
        limits[GPU_RESOURCE] = res.gpus_per_node
    out: dict[str, Any] = {}
    if limits:
        out["limits"] = limits
    if requests:
        out["requests"] = requests
    return out


def validation_pod_spec(
    spec: FineTuneJobSpec,
    layout: StorageLayout,
    *,
    image: str,
    pull_policy: str | None,
    config_map: str,
    service_account: str,
) -> dict[str, Any]:
    init = [staging_container(layout, image, pull_policy)] if layout.needs_staging else []
    container = _container(
        VALIDATOR_CONTAINER,
        image,
        pull_policy,
        trainer_command("validate"),
        _env(_common_env()),
        [_config_mount(), *layout.input_mounts],
        VALIDATOR_RESOURCES,
    )
    volumes = [
        _config_volume(config_map),
        *(v for v in layout.volumes if _is_input_volume(v, layout)),
        *writable_volumes(),
    ]
    pod: dict[str, Any] = {
        "restartPolicy": "Never",
        "serviceAccountName": service_account,
        # The validator talks to no API; only rank 0 of training reports progress.
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": _pod_security(),
        "initContainers": init,
        "containers": [container],
        "volumes": volumes,
    }
    _scheduling(pod, spec, gpu=False)
    return _prune(pod)


def _is_input_volume(volume: dict[str, Any], layout: StorageLayout) -> bool:
    mounted = {m["name"] for m in layout.input_mounts}
    return volume["name"] in mounted


def training_pod_spec(
    spec: FineTuneJobSpec,
    layout: StorageLayout,
    *,
    image: str,
    pull_policy: str | None,
    config_map: str,
    service_account: str,
    service: str,
    master_addr: str,
) -> dict[str, Any]:
    res = spec.resources
    procs = max(res.gpus_per_node, 1)
    pet = {
        "PET_NNODES": str(res.nodes),
        "PET_NPROC_PER_NODE": str(procs),
        "PET_MASTER_ADDR": master_addr,
        "PET_MASTER_PORT": str(MASTER_PORT),
    }
    rank_env = {
        "name": "PET_NODE_RANK",
        "valueFrom": {"fieldRef": {"fieldPath": f"metadata.annotations['{COMPLETION_INDEX_ANNOTATION}']"}},
    }
    # The attempt goes into rank 0's progress reports, so a previous gang's last report is told apart.
    attempt_env = {
        "name": ATTEMPT_ENV,
        "valueFrom": {"fieldRef": {"fieldPath": f"metadata.labels['{GROUP}/attempt']"}},
    }
    trainer_env = [
        *_env(_common_env() | pet),
        rank_env,
        attempt_env,
        *_env(NCCL_ENV),
        *layout.output_env,
    ]
    trainer = _container(
        TRAINER_CONTAINER,
        image,
        pull_policy,
        torchrun_command(nodes=res.nodes, procs_per_node=procs, master_addr=master_addr),
        trainer_env,
        [
            _config_mount(),
            *layout.input_mounts,
            *layout.output_mounts,
            {"name": SHM_VOLUME, "mountPath": "/dev/shm"},
            {"name": TOKEN_VOLUME, "mountPath": TOKEN_DIR, "readOnly": True},
        ],
        _trainer_resources(spec),
    )
    trainer["ports"] = [{"name": RENDEZVOUS_PORT_NAME, "containerPort": MASTER_PORT, "protocol": "TCP"}]
    init: list[dict[str, Any]] = []
    if layout.needs_staging:
        init.append(staging_container(layout, image, pull_policy))
    if res.nodes > 1:
        wait_env = _env(pet | {"KUBETUNE_MASTER_WAIT_SECONDS": str(MASTER_WAIT_TIMEOUT_SECONDS)})
        init.append(
            _container(
                WAIT_CONTAINER, image, pull_policy, ["python", "-c", WAIT_FOR_MASTER_SCRIPT], wait_env, []
            )
        )
    pod: dict[str, Any] = {
        "restartPolicy": "Never",
        "subdomain": service,
        "serviceAccountName": service_account,
        # Rank 0 reports progress with the pod's token, so the trainer container alone mounts it (below,
        # as the kubelet's automount would): the stager and the rendezvous wait never see it.
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": TERMINATION_GRACE_SECONDS,
        "securityContext": _pod_security(),
        "initContainers": init,
        "containers": [trainer],
        "volumes": [
            _config_volume(config_map),
            *layout.volumes,
            {"name": SHM_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": SHM_SIZE_LIMIT}},
            *writable_volumes(),
            _token_volume(),
        ],
    }
    _scheduling(pod, spec, gpu=True)
    return _prune(pod)


def _token_volume() -> dict[str, Any]:
    """What `automountServiceAccountToken` would mount: a bound, expiring token, the cluster CA and the
    namespace, in the layout in-cluster clients read."""
    return {
        "name": TOKEN_VOLUME,
        "projected": {
            "sources": [
                {"serviceAccountToken": {"path": "token", "expirationSeconds": TOKEN_EXPIRATION_SECONDS}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {
                    "downwardAPI": {
                        "items": [{"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}]
                    }
                },
            ],
        },
    }


def _scheduling(pod: dict[str, Any], spec: FineTuneJobSpec, *, gpu: bool) -> None:
    res = spec.resources
    if gpu and res.gpu_type:
        pod["nodeSelector"] = {GPU_PRODUCT_LABEL: res.gpu_type}
    if gpu and res.tolerations:
        pod["tolerations"] = [t.to_wire() for t in res.tolerations]
    if res.priority_class_name:
        pod["priorityClassName"] = res.priority_class_name


def _prune(pod: dict[str, Any]) -> dict[str, Any]:
    """Drop empty lists so manifests match what the API server returns."""
    for container in [*pod.get("initContainers", []), *pod["containers"]]:
        for key in ("env", "volumeMounts"):
            if not container.get(key):
                container.pop(key, None)
    return {k: v for k, v in pod.items() if v != []}


def fatal_exit_codes() -> list[int]:
    return list(FATAL_EXIT_CODES)
