"""ModelDeployment children: per variant a vLLM Deployment, Service, PodDisruptionBudget and
autoscaler; per ModelDeployment a PodMonitor. Pure: the full object as read from the API in,
manifests out (applied by the reconciler with server-side apply).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from kubetune.api.common import GROUP
from kubetune.api.modeldeployment import ModelDeploymentSpec, Variant
from kubetune.api.uris import Scheme, StorageUri, parse_uri
from kubetune.builders.common import (
    ANNOTATION_SPEC_HASH,
    GPU_PRODUCT_LABEL,
    LABEL_DEPLOYMENT,
    LABEL_ROLE,
    LABEL_VARIANT,
    RESTRICTED_CONTAINER_SECURITY,
    Manifest,
    child_name,
    metadata,
    stable_hash,
    standard_labels,
    with_image_pull_secrets,
)
from kubetune.builders.finetunejob import DEFAULT_TRAINER_IMAGE
from kubetune.builders.storage import S3_OPTIONAL_SECRET_KEYS, S3_SECRET_KEYS
from kubetune.builders.training_pod import SHM_SIZE_LIMIT
from kubetune.builders.vllm import (
    BASE_MODEL_PATH,
    MODEL_ROOT,
    VLLM_COMMAND,
    VLLM_PORT,
    adapter_path,
    followed_root_path,
    followed_root_problem,
    vllm_args,
    vllm_env,
)
from kubetune.builders.writable import (
    VLLM_CACHE_ENV,
    cache_env,
    writable_mounts,
    writable_volumes,
)
from kubetune.serving.metrics import NUM_REQUESTS_WAITING
from kubetune.serving.resolution import Resolution

# Pinned to the vLLM release whose CPU build the serving tests run (flags and metric names proven).
DEFAULT_VLLM_IMAGE = "vllm/vllm-openai:v0.32.0"
ROLE_SERVING = "vllm"
ANNOTATION_MODEL_URI = f"{GROUP}/model-uri"
PORT_NAME = "http"
HEALTH_PATH = "/health"
METRICS_PATH = "/metrics"
GPU_RESOURCE = "nvidia.com/gpu"
STAGING_VOLUME = "staged-models"
STAGING_MOUNT = "/staging"
SERVING_UID = 1000
# Loading a 70B model from a network volume takes many minutes; the startup probe gives 30 min
# before the kubelet restarts the pod, and liveness only starts counting after that.
STARTUP_BUDGET_S = 1800
STARTUP_PERIOD_S = 10
PROGRESS_DEADLINE_S = STARTUP_BUDGET_S + 600
# prometheus-adapter cannot expose names with colons: its rule renames the series (docs/serving.md).
HPA_QUEUE_METRIC = "vllm_num_requests_waiting"

Autoscaler = Literal["hpa", "keda"]


def _name(mdep: Mapping[str, Any]) -> str:
    return str(mdep["metadata"]["name"])


def _namespace(mdep: Mapping[str, Any]) -> str:
    return str(mdep["metadata"]["namespace"])


def _spec(mdep: Mapping[str, Any]) -> ModelDeploymentSpec:
    return ModelDeploymentSpec.model_validate(mdep["spec"])


def variant_resource_name(deployment_name: str, variant_name: str) -> str:
    """Name of the variant's Deployment, Service, PDB and autoscaler (`<md>-vllm-<variant>`)."""
    return child_name(deployment_name, ROLE_SERVING, variant_name)


def variant_endpoint(mdep: Mapping[str, Any], variant_name: str) -> str:
    """Cluster DNS URL of the variant's OpenAI API."""
    service = variant_resource_name(_name(mdep), variant_name)
    return f"http://{service}.{_namespace(mdep)}.svc:{VLLM_PORT}/v1"


def selector_labels(deployment_name: str, variant_name: str) -> dict[str, str]:
    return {LABEL_DEPLOYMENT: deployment_name, LABEL_VARIANT: variant_name, LABEL_ROLE: ROLE_SERVING}


def _labels(mdep: Mapping[str, Any], variant: Variant) -> dict[str, str]:
    return {
        **standard_labels(name="vllm", component="serving", instance=_name(mdep)),
        **selector_labels(_name(mdep), variant.name),
    }


def _meta(
    mdep: Mapping[str, Any], variant: Variant, annotations: Mapping[str, str] | None = None
) -> Manifest:
    return metadata(
        name=variant_resource_name(_name(mdep), variant.name),
        namespace=_namespace(mdep),
        owner=mdep,
        labels=_labels(mdep, variant),
        annotations=annotations,
    )


def served_uri(variant: Variant, resolution: Resolution) -> str:
    """The artifact clients reach under the variant's name: its own adapter, else the base model."""
    for module in resolution.lora_modules:
        if module.name == variant.name:
            return module.uri
    assert resolution.model_uri is not None
    return resolution.model_uri


# --- storage ---------------------------------------------------------------------------------------


def _pvc_volume_name(claim: str) -> str:
    return f"pvc-{stable_hash(claim, 10)}"


def _secret_env(name: str, secret: str, key: str, *, optional: bool = False) -> dict[str, Any]:
    ref: dict[str, Any] = {"name": secret, "key": key}
    if optional:
        ref["optional"] = True
    return {"name": name, "valueFrom": {"secretKeyRef": ref}}


def _credential_env(variant: Variant, uris: list[StorageUri]) -> list[dict[str, Any]]:
    """HF token or AWS keys from variant.model.secretRef (the Secret conventions of FineTuneJob)."""
    ref = variant.model.secret_ref if variant.model is not None else None
    if ref is None:
        return []
    env: list[dict[str, Any]] = []
    if any(u.scheme is Scheme.HF for u in uris):
        env.append(_secret_env("HF_TOKEN", ref.name, ref.key))
    if any(u.scheme is Scheme.S3 for u in uris):
        env += [_secret_env(key, ref.name, key) for key in S3_SECRET_KEYS]
        env += [_secret_env(key, ref.name, key, optional=True) for key in S3_OPTIONAL_SECRET_KEYS]
    return env


class _Storage:
    """Volumes and mounts that put every model at the path vllm_args names."""

    def __init__(self, variant: Variant, resolution: Resolution, stager_image: str) -> None:
        assert resolution.model_uri is not None
        targets = [("model", resolution.model_uri, BASE_MODEL_PATH)]
        targets += [(f"adapter-{m.name}", m.uri, adapter_path(m.name)) for m in resolution.lora_modules]
        for followed in resolution.followed_adapters:
            # Mounted whole (same claim volume as the static adapters): runs written after the pod
            # started appear under it, ready for /v1/load_lora_adapter.
            problem = followed_root_problem(followed.root_uri)
            if problem is not None:
                raise ValueError(f"adapter {followed.name}: {problem}")
            root = followed_root_path(followed.name)
            targets.append((f"followed-{followed.name}", followed.root_uri, root))
        self.volumes: list[dict[str, Any]] = []
        self.mounts: list[dict[str, Any]] = []
        self.init_containers: list[dict[str, Any]] = []
        staged: list[StorageUri] = []
        claims: list[str] = []
        for role, text, path in targets:
            uri = parse_uri(text)
            if uri.scheme is Scheme.PVC:
                if uri.authority not in claims:
                    claims.append(uri.authority)
                mount: dict[str, Any] = {
                    "name": _pvc_volume_name(uri.authority),
                    "mountPath": path,
                    "readOnly": True,
                }
                if uri.path:
                    mount["subPath"] = uri.path
                self.mounts.append(mount)
            elif uri.needs_staging:
                staged.append(uri)
                sub_path = path.removeprefix(f"{MODEL_ROOT}/")
                self.mounts.append(
                    {"name": STAGING_VOLUME, "mountPath": path, "subPath": sub_path, "readOnly": True}
                )
                self.init_containers.append(
                    self._stager(role, text, f"{STAGING_MOUNT}/{sub_path}", stager_image)
                )
            else:
                raise ValueError(f"{text}: a served model must be pvc://, s3://, hf:// or an org/name id")
        self.credential_env = _credential_env(variant, staged)
        for container in self.init_containers:
            container["env"] = [*cache_env(), *self.credential_env]
        self.volumes += [
            {"name": _pvc_volume_name(c), "persistentVolumeClaim": {"claimName": c, "readOnly": True}}
            for c in claims
        ]
        if staged:
            self.volumes.append({"name": STAGING_VOLUME, "emptyDir": {}})

    @staticmethod
    def _stager(role: str, uri: str, dest: str, image: str) -> dict[str, Any]:
        return {
            "name": f"stage-{role}"[:63],
            "image": image,
            "command": ["python", "-m", "kubetune.serving.stage", uri, dest],
            "volumeMounts": [*writable_mounts(), {"name": STAGING_VOLUME, "mountPath": STAGING_MOUNT}],
            "securityContext": dict(RESTRICTED_CONTAINER_SECURITY),
        }


# --- the Deployment -----------------------------------------------------------------------------------


def _probe(period: int, failures: int, timeout: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": HEALTH_PATH, "port": PORT_NAME},
        "periodSeconds": period,
        "timeoutSeconds": timeout,
        "failureThreshold": failures,
    }


def _resources(variant: Variant) -> dict[str, Any]:
    gpus = variant.vllm.tensor_parallel_size if variant.resources.gpus is None else variant.resources.gpus
    amounts: dict[str, Any] = {GPU_RESOURCE: gpus} if gpus else {}
    if variant.resources.cpu is not None:
        amounts["cpu"] = variant.resources.cpu
    if variant.resources.memory is not None:
        amounts["memory"] = variant.resources.memory
    return {"limits": dict(sorted(amounts.items())), "requests": dict(sorted(amounts.items()))}


def _serving_env(resolution: Resolution) -> list[dict[str, Any]]:
    # No credentials here: only the staging init container downloads.
    env: list[dict[str, Any]] = [
        # Models are mounted or staged: vLLM must never reach for the hub at start-up.
        {"name": "HF_HUB_OFFLINE", "value": "1"},
        {"name": "VLLM_NO_USAGE_STATS", "value": "1"},
        {"name": "DO_NOT_TRACK", "value": "1"},
        # The root filesystem is read-only: HOME and every cache point into emptyDirs.
        *cache_env(VLLM_CACHE_ENV),
        *vllm_env(resolution),
    ]
    return env


def pod_spec_hash(variant: Variant, resolution: Resolution) -> str:
    """Changes when the served artifacts or their lineage change, even at an unchanged URI
    (a re-run FineTuneJob writing to the same output folder), so the pods roll."""
    pod: dict[str, Any] = {
        "model": resolution.model_uri,
        "adapters": [(m.name, m.uri) for m in resolution.lora_modules],
        "lineage": dict(resolution.lineage),
    }
    if resolution.followed_adapters:
        # Where revisions come from and how big they may be, never which revision serves: a new
        # revision is loaded into the running pods, not rolled out as new pods. (Absent when there are
        # none, so that the hash of every other variant stays what it was.)
        pod["followed"] = [(f.name, f.root_uri, f.rank) for f in resolution.followed_adapters]
    return stable_hash(pod)


def build_deployment(
    mdep: Mapping[str, Any],
    variant: Variant,
    resolution: Resolution,
    *,
    scrape_annotations: bool = True,
    stager_image: str = DEFAULT_TRAINER_IMAGE,
    default_image: str = DEFAULT_VLLM_IMAGE,
    spec: ModelDeploymentSpec | None = None,
) -> Manifest:
    if not resolution.ready:
        raise ValueError(f"variant {variant.name}: model not resolved ({resolution.message})")
    spec = spec or _spec(mdep)
    storage = _Storage(variant, resolution, stager_image)
    container = _vllm_container(spec, variant, resolution, storage, default_image)
    deployment_spec: dict[str, Any] = {
        "selector": {"matchLabels": selector_labels(_name(mdep), variant.name)},
        # A new pod must be Ready before an old one goes: no capacity dip for a one-replica variant.
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
        "revisionHistoryLimit": 3,
        "progressDeadlineSeconds": PROGRESS_DEADLINE_S,
        "template": {
            "metadata": {
                "labels": dict(sorted(_labels(mdep, variant).items())),
                "annotations": dict(
                    sorted(_pod_annotations(variant, resolution, scrape_annotations).items())
                ),
            },
            "spec": _serving_pod(variant, container, storage),
        },
    }
    if variant.autoscaling is None:
        # With an autoscaler the replica count is its field: applying ours would fight it.
        deployment_spec = {"replicas": variant.replicas, **deployment_spec}
    manifest = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(mdep, variant, {ANNOTATION_MODEL_URI: served_uri(variant, resolution)}),
        "spec": deployment_spec,
    }
    # A tree without shared sub-dicts (deepcopy would keep the sharing): editing one place of the
    # manifest must not change another, and YAML renders without anchors.
    result: Manifest = json.loads(json.dumps(manifest))
    return result


def _vllm_container(
    spec: ModelDeploymentSpec, variant: Variant, resolution: Resolution, storage: _Storage, default_image: str
) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": "vllm",
        "image": (spec.image.image if spec.image else None) or default_image,
        "command": list(VLLM_COMMAND),
        "args": vllm_args(variant, resolution),
        "env": _serving_env(resolution),
        "ports": [{"name": PORT_NAME, "containerPort": VLLM_PORT, "protocol": "TCP"}],
        "resources": _resources(variant),
        "volumeMounts": [
            {"name": "dshm", "mountPath": "/dev/shm"},
            *writable_mounts(),
            *storage.mounts,
        ],
        "startupProbe": _probe(STARTUP_PERIOD_S, STARTUP_BUDGET_S // STARTUP_PERIOD_S, 5),
        "readinessProbe": _probe(5, 3, 5),
        "livenessProbe": _probe(10, 6, 10),
        "securityContext": dict(RESTRICTED_CONTAINER_SECURITY),
    }
    if spec.image and spec.image.pull_policy:
        container["imagePullPolicy"] = spec.image.pull_policy
    return container


def _pod_annotations(variant: Variant, resolution: Resolution, scrape: bool) -> dict[str, str]:
    annotations = {ANNOTATION_SPEC_HASH: pod_spec_hash(variant, resolution)}
    if scrape:
        annotations |= {
            "prometheus.io/scrape": "true",
            "prometheus.io/port": str(VLLM_PORT),
            "prometheus.io/path": METRICS_PATH,
        }
    return annotations


def _serving_pod(variant: Variant, container: dict[str, Any], storage: _Storage) -> dict[str, Any]:
    pod: dict[str, Any] = {
        # Service links would inject VLLM_PORT=tcp://... for a Service named "vllm": vLLM reads that
        # variable as its own setting and fails to start.
        "enableServiceLinks": False,
        "automountServiceAccountToken": False,
        "terminationGracePeriodSeconds": 60,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": SERVING_UID,
            "runAsGroup": SERVING_UID,
            "fsGroup": SERVING_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": [
            # Bounded like the trainer's: tensor-parallel workers exchange through it, a few GiB at most.
            {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": SHM_SIZE_LIMIT}},
            *writable_volumes(),
            *storage.volumes,
        ],
    }
    if storage.init_containers:
        pod["initContainers"] = storage.init_containers
    if variant.resources.gpu_type:
        pod["nodeSelector"] = {GPU_PRODUCT_LABEL: variant.resources.gpu_type}
    if variant.resources.tolerations:
        pod["tolerations"] = [t.to_wire() for t in variant.resources.tolerations]
    return pod


def build_service(mdep: Mapping[str, Any], variant: Variant) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(mdep, variant),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(_name(mdep), variant.name),
            "ports": [{"name": PORT_NAME, "port": VLLM_PORT, "targetPort": PORT_NAME, "protocol": "TCP"}],
        },
    }


def build_pdb(mdep: Mapping[str, Any], variant: Variant) -> Manifest | None:
    """One pod at a time through voluntary disruptions, when there is more than one to lose."""
    most = variant.autoscaling.max_replicas if variant.autoscaling else variant.replicas
    if most <= 1:
        return None
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _meta(mdep, variant),
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": selector_labels(_name(mdep), variant.name)},
        },
    }


def queue_depth_query(mdep: Mapping[str, Any], variant_name: str) -> str:
    """PromQL of the variant's total queue, with the labels the PodMonitor attaches."""
    return (
        f'sum({NUM_REQUESTS_WAITING}{{namespace="{_namespace(mdep)}",'
        f'model_deployment="{_name(mdep)}",variant="{variant_name}"}})'
    )


def build_hpa(mdep: Mapping[str, Any], variant: Variant) -> Manifest | None:
    """HPA on the per-pod queue depth served by prometheus-adapter (custom.metrics.k8s.io)."""
    scaling = variant.autoscaling
    if scaling is None:
        return None
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _meta(mdep, variant),
        "spec": {
            "scaleTargetRef": {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": variant_resource_name(_name(mdep), variant.name),
            },
            # The HPA cannot scale to zero without a feature gate; KEDA can.
            "minReplicas": max(1, scaling.min_replicas),
            "maxReplicas": scaling.max_replicas,
            "metrics": [
                {
                    "type": "Pods",
                    "pods": {
                        "metric": {"name": HPA_QUEUE_METRIC},
                        "target": {"type": "AverageValue", "averageValue": str(scaling.target_queue_depth)},
                    },
                }
            ],
        },
    }


def build_scaled_object(mdep: Mapping[str, Any], variant: Variant, prometheus_url: str) -> Manifest | None:
    """KEDA ScaledObject on the same signal, read straight from Prometheus."""
    scaling = variant.autoscaling
    if scaling is None:
        return None
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": _meta(mdep, variant),
        "spec": {
            "scaleTargetRef": {"name": variant_resource_name(_name(mdep), variant.name)},
            "minReplicaCount": scaling.min_replicas,
            "maxReplicaCount": scaling.max_replicas,
            "pollingInterval": 15,
            # Model loads are slow: do not drop a pod that took minutes to start on a short lull.
            "cooldownPeriod": 600,
            "triggers": [
                {
                    "type": "prometheus",
                    "metadata": {
                        "serverAddress": prometheus_url,
                        "query": queue_depth_query(mdep, variant.name),
                        "threshold": str(scaling.target_queue_depth),
                    },
                }
            ],
        },
    }


def build_variant_children(
    mdep: Mapping[str, Any],
    variant: Variant,
    resolution: Resolution,
    *,
    scrape_annotations: bool = True,
    autoscaler: Autoscaler = "hpa",
    prometheus_url: str | None = None,
    stager_image: str = DEFAULT_TRAINER_IMAGE,
    default_image: str = DEFAULT_VLLM_IMAGE,
    spec: ModelDeploymentSpec | None = None,
    image_pull_secrets: Sequence[str] = (),
) -> list[Manifest]:
    """Deployment, Service, then PDB and autoscaler when they apply, for a resolved variant.

    `scrape_annotations`: False when a PodMonitor scrapes the pods (no double scrape).
    `autoscaler`: "keda" when KEDA's CRD exists; its Prometheus is `prometheus_url`, else the
    canary analysis' URL of the spec. `spec`: `mdep`'s spec, already parsed (else parsed here).
    """
    spec = spec or _spec(mdep)
    children = [
        with_image_pull_secrets(
            build_deployment(
                mdep,
                variant,
                resolution,
                scrape_annotations=scrape_annotations,
                stager_image=stager_image,
                default_image=default_image,
                spec=spec,
            ),
            image_pull_secrets,
        ),
        build_service(mdep, variant),
    ]
    pdb = build_pdb(mdep, variant)
    if pdb is not None:
        children.append(pdb)
    if variant.autoscaling is not None:
        if autoscaler == "keda":
            url = prometheus_url or _spec_prometheus_url(spec)
            if url is None:
                raise ValueError(
                    f"variant {variant.name}: KEDA autoscaling needs a Prometheus URL "
                    "(operator setting or traffic.canary.analysis.prometheusUrl)"
                )
            scaler = build_scaled_object(mdep, variant, url)
        else:
            scaler = build_hpa(mdep, variant)
        assert scaler is not None
        children.append(scaler)
    return children


def _spec_prometheus_url(spec: ModelDeploymentSpec) -> str | None:
    canary = spec.traffic.canary
    return canary.analysis.prometheus_url if canary and canary.analysis else None


def build_pod_monitor(mdep: Mapping[str, Any], monitor_labels: Mapping[str, str] | None = None) -> Manifest:
    """monitoring.coreos.com/v1 PodMonitor over every variant's vLLM pods.

    The pods' `kubetune.io/variant` label becomes the `variant` series label dashboards and the
    canary analysis group by; `model_deployment` keeps two ModelDeployments apart. `monitor_labels`
    (the chart's `metrics.podMonitorLabels`) are what a Prometheus' podMonitorSelector matches.
    """
    name = _name(mdep)
    labels = {
        **(monitor_labels or {}),
        **standard_labels(name="vllm", component="serving", instance=name),
        LABEL_DEPLOYMENT: name,
        LABEL_ROLE: ROLE_SERVING,
    }
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PodMonitor",
        "metadata": metadata(
            name=child_name(name, ROLE_SERVING), namespace=_namespace(mdep), owner=mdep, labels=labels
        ),
        "spec": {
            "selector": {"matchLabels": {LABEL_DEPLOYMENT: name, LABEL_ROLE: ROLE_SERVING}},
            "podMetricsEndpoints": [
                {
                    "port": PORT_NAME,
                    "path": METRICS_PATH,
                    "interval": "15s",
                    "relabelings": [
                        {
                            "sourceLabels": [_meta_label(LABEL_VARIANT)],
                            "targetLabel": "variant",
                            "action": "replace",
                        },
                        {
                            "sourceLabels": [_meta_label(LABEL_DEPLOYMENT)],
                            "targetLabel": "model_deployment",
                            "action": "replace",
                        },
                    ],
                }
            ],
        },
    }


def _meta_label(label: str) -> str:
    """Prometheus' service-discovery name of a pod label (non-alphanumerics become `_`)."""
    return "__meta_kubernetes_pod_label_" + "".join(c if c.isalnum() else "_" for c in label)
