"""Where a FineTuneJob's model, dataset and output live inside its pods. Pure.

pvc:// URIs are mounted (one volume per claim, one subPath mount per use), configMap:// datasets
are mounted from the ConfigMap, s3:// and hf:// inputs are downloaded by the staging init
container into a per-pod emptyDir. Credentials reach containers only as secretKeyRef env vars.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kubetune.api.common import SecretKeyRef
from kubetune.api.finetunejob import FineTuneJobSpec
from kubetune.api.trainingconfig import TrainingPaths
from kubetune.api.uris import Scheme, StorageUri, parse_uri

MOUNT_ROOT = "/mnt/kubetune"
STAGING_VOLUME = "staging"
OUTPUT_SCRATCH_VOLUME = "output-scratch"
DATASET_CONFIGMAP_VOLUME = "dataset"
STAGED_HF_DATASET_FILE = "data.jsonl"

# Keys read from the Secret of an s3:// URI (its `key` field names the HF token only); the env
# names are the ones boto3 and huggingface_hub read, which is what the trainer's `stage` uses.
S3_SECRET_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
S3_OPTIONAL_SECRET_KEYS = ("AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION")


@dataclass(frozen=True)
class InitSource:
    """spec.initFrom resolved against the earlier FineTuneJob (kubetune.planning.init_from)."""

    finetune_job: str
    output_uri: str
    """The earlier job's output folder: its adapter and training records live under it."""
    adapter_uri: str
    secret_ref: SecretKeyRef | None
    """The earlier job's output credentials (an s3:// output)."""
    replay_fraction: float
    learning_rate_scale: float


@dataclass(frozen=True)
class _Mount:
    volume: str
    mount_path: str
    sub_path: str
    read_only: bool


@dataclass
class StorageLayout:
    """Volumes, mounts and paths for one FineTuneJob's pods."""

    paths: TrainingPaths
    volumes: list[dict[str, Any]] = field(default_factory=list)
    input_mounts: list[dict[str, Any]] = field(default_factory=list)  # model + dataset (read-only)
    output_mounts: list[dict[str, Any]] = field(default_factory=list)
    needs_staging: bool = False
    staging_env: list[dict[str, Any]] = field(default_factory=list)  # credentials of staged inputs
    output_env: list[dict[str, Any]] = field(default_factory=list)  # credentials of an s3:// output
    init_dir: str | None = None  # the earlier job's output folder (spec.initFrom), mounted or staged


def credential_env(uri: StorageUri, ref: SecretKeyRef | None) -> list[dict[str, Any]]:
    """`HF_TOKEN` or `AWS_*` env vars from the referenced Secret, by secretKeyRef only."""
    if ref is None or uri.scheme not in (Scheme.HF, Scheme.S3):
        return []
    if uri.scheme is Scheme.HF:
        return [_secret_env("HF_TOKEN", ref.name, ref.key, optional=False)]
    return [_secret_env(key, ref.name, key, optional=False) for key in S3_SECRET_KEYS] + [
        _secret_env(key, ref.name, key, optional=True) for key in S3_OPTIONAL_SECRET_KEYS
    ]


def _merge_env(*groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    # Model and dataset of the same scheme share one set of variables; preflight rejects two
    # different Secrets for them, so the first occurrence is the only one.
    seen: set[str] = set()
    merged = []
    for env in (e for group in groups for e in group):
        if env["name"] not in seen:
            seen.add(env["name"])
            merged.append(env)
    return merged


def _secret_env(name: str, secret: str, key: str, *, optional: bool) -> dict[str, Any]:
    ref: dict[str, Any] = {"name": secret, "key": key}
    if optional:
        ref["optional"] = True
    return {"name": name, "valueFrom": {"secretKeyRef": ref}}


def _mount_manifest(m: _Mount) -> dict[str, Any]:
    out: dict[str, Any] = {"name": m.volume, "mountPath": m.mount_path}
    if m.sub_path:
        out["subPath"] = m.sub_path
    if m.read_only:
        out["readOnly"] = True
    return out


def storage_layout(spec: FineTuneJobSpec, init: InitSource | None = None) -> StorageLayout:
    """`init`: the resolved spec.initFrom, whose output folder is an input too (read-only)."""
    model = parse_uri(spec.base_model.uri)
    dataset = parse_uri(spec.dataset.uri)
    output = parse_uri(spec.output.uri)

    claims: dict[str, str] = {}  # claim -> volume name, in order of first use

    def claim_volume(claim: str) -> str:
        return claims.setdefault(claim, f"pvc-{len(claims)}")

    inputs: list[_Mount] = []
    outputs: list[_Mount] = []
    staging_root = f"{MOUNT_ROOT}/staging"

    if model.scheme is Scheme.PVC:
        model_path = f"{MOUNT_ROOT}/model"
        inputs.append(_Mount(claim_volume(model.authority), model_path, model.path, True))
    else:
        model_path = f"{staging_root}/model"

    dataset_file = posixpath.basename(dataset.path) or STAGED_HF_DATASET_FILE
    if dataset.scheme is Scheme.PVC:
        dataset_dir = f"{MOUNT_ROOT}/dataset"
        inputs.append(
            _Mount(claim_volume(dataset.authority), dataset_dir, posixpath.dirname(dataset.path), True)
        )
    elif dataset.scheme is Scheme.CONFIGMAP:
        dataset_dir = f"{MOUNT_ROOT}/dataset"
        inputs.append(_Mount(DATASET_CONFIGMAP_VOLUME, dataset_dir, "", True))
    else:
        dataset_dir = f"{staging_root}/dataset"
    dataset_path = f"{dataset_dir}/{dataset_file}"

    frozen_set_path, champion_path = _evaluation_inputs(spec, claim_volume, inputs)
    init_uri = parse_uri(init.output_uri) if init is not None else None
    init_dir: str | None = None
    if init_uri is not None and init_uri.scheme is Scheme.PVC:
        init_dir = f"{MOUNT_ROOT}/init"
        inputs.append(_Mount(claim_volume(init_uri.authority), init_dir, init_uri.path, True))
    elif init_uri is not None:
        init_dir = f"{staging_root}/init"

    output_dir = f"{MOUNT_ROOT}/output"
    if output.scheme is Scheme.PVC:
        outputs.append(_Mount(claim_volume(output.authority), output_dir, output.path, False))
    else:
        # s3:// output: the trainer writes locally and uploads; checkpoints survive a gang restart
        # only through what it uploaded.
        outputs.append(_Mount(OUTPUT_SCRATCH_VOLUME, output_dir, "", False))

    volumes = _claim_volumes(claims, {m.volume for m in outputs})
    if dataset.scheme is Scheme.CONFIGMAP:
        volumes.append(_dataset_config_map_volume(dataset, dataset_file))
    needs_staging = (
        model.needs_staging or dataset.needs_staging or (init_uri is not None and init_uri.needs_staging)
    )
    if needs_staging:
        volumes.append({"name": STAGING_VOLUME, "emptyDir": {}})
    if output.scheme is not Scheme.PVC:
        volumes.append({"name": OUTPUT_SCRATCH_VOLUME, "emptyDir": {}})

    input_mounts = [_mount_manifest(m) for m in inputs]
    if needs_staging:
        input_mounts.append({"name": STAGING_VOLUME, "mountPath": staging_root})

    return StorageLayout(
        paths=TrainingPaths(
            base_model=model_path,
            dataset=dataset_path,
            output_dir=output_dir,
            frozen_set=frozen_set_path,
            champion=champion_path,
        ),
        volumes=volumes,
        input_mounts=input_mounts,
        output_mounts=[_mount_manifest(m) for m in outputs],
        needs_staging=needs_staging,
        staging_env=_merge_env(
            credential_env(model, spec.base_model.secret_ref),
            credential_env(dataset, spec.dataset.secret_ref),
            credential_env(init_uri, init.secret_ref) if init is not None and init_uri is not None else [],
        ),
        output_env=credential_env(output, spec.output.secret_ref),
        init_dir=init_dir,
    )


def _claim_volumes(claims: dict[str, str], written: set[str]) -> list[dict[str, Any]]:
    """One volume per claim, in order of first use; read-only unless an output is written to it."""
    return [
        {
            "name": volume,
            "persistentVolumeClaim": {
                "claimName": claim,
                **({} if volume in written else {"readOnly": True}),
            },
        }
        for claim, volume in claims.items()
    ]


def _dataset_config_map_volume(dataset: StorageUri, dataset_file: str) -> dict[str, Any]:
    return {
        "name": DATASET_CONFIGMAP_VOLUME,
        "configMap": {"name": dataset.authority, "items": [{"key": dataset.path, "path": dataset_file}]},
    }


def _evaluation_inputs(
    spec: FineTuneJobSpec, claim_volume: Callable[[str], str], inputs: list[_Mount]
) -> tuple[str | None, str | None]:
    """Mount the frozen evaluation set and the champion (both pvc://, admission says so) read-only."""
    evaluation = spec.evaluation
    frozen_set_path = champion_path = None
    if evaluation.frozen_set is not None:
        uri = parse_uri(evaluation.frozen_set.uri)
        directory = f"{MOUNT_ROOT}/frozen-set"
        inputs.append(_Mount(claim_volume(uri.authority), directory, posixpath.dirname(uri.path), True))
        frozen_set_path = f"{directory}/{posixpath.basename(uri.path)}"
    champion = evaluation.champion
    if champion is not None:
        uri = parse_uri(champion.adapter_uri or champion.model_uri or "")
        champion_path = f"{MOUNT_ROOT}/champion"
        inputs.append(_Mount(claim_volume(uri.authority), champion_path, uri.path, True))
    return frozen_set_path, champion_path
