"""The `stage` command: make the base model and dataset local before training.

pvc:// and configMap:// inputs are mounted by the operator and only checked here; hf:// inputs are
downloaded with huggingface_hub and s3:// inputs with boto3 (installed in the image when needed).
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from kubetune.api.trainingconfig import TrainingConfig
from kubetune.api.uris import Scheme, StorageUri, join, parse_uri
from kubetune.staging import download_hf, download_s3_object, download_s3_prefix, s3_client
from kubetune.trainer.errors import ConfigError

log = logging.getLogger(__name__)

DATA_SUFFIXES = (".jsonl", ".json")


def _download_s3(uri: StorageUri, target: Path, *, directory: bool) -> None:
    try:
        client = s3_client(os.environ.get("AWS_ENDPOINT_URL") or None)
    except ImportError:
        raise ConfigError(f"s3://{uri.authority}/{uri.path}: boto3 is not installed in this image") from None
    if directory:
        download_s3_prefix(client, uri, target)
    else:
        download_s3_object(client, uri, target)


def _download_hf(repo: str, target: Path, *, revision: str | None, repo_type: str) -> Path:
    token = os.environ.get("HF_TOKEN") or None
    return download_hf(repo, target, token=token, revision=revision, repo_type=repo_type)


def stage_model(config: TrainingConfig) -> None:
    target = Path(config.paths.base_model)
    if (target / "config.json").is_file():
        log.info("base model present at %s", target)
        return
    uri = parse_uri(config.spec.base_model.uri)
    if uri.scheme is Scheme.HF:
        _download_hf(uri.authority, target, revision=config.spec.base_model.revision, repo_type="model")
    elif uri.scheme is Scheme.S3:
        _download_s3(uri, target, directory=True)
    else:
        raise ConfigError(
            f"base model {config.spec.base_model.uri} is not mounted at {target} (no config.json)"
        )
    log.info("staged %s into %s", config.spec.base_model.uri, target)


def stage_dataset(config: TrainingConfig) -> None:
    target = Path(config.paths.dataset)
    if target.is_file():
        log.info("dataset present at %s", target)
        return
    uri = parse_uri(config.spec.dataset.uri)
    if uri.scheme is Scheme.S3:
        _download_s3(uri, target, directory=False)
    elif uri.scheme is Scheme.HF:
        snapshot = _download_hf(
            uri.authority, target.parent / "hf-dataset", revision=None, repo_type="dataset"
        )
        files = sorted(p for p in snapshot.rglob("*") if p.suffix in DATA_SUFFIXES and p.is_file())
        if len(files) != 1:
            names = ", ".join(str(p.relative_to(snapshot)) for p in files) or "none"
            raise ConfigError(
                f"{config.spec.dataset.uri}: expected exactly one .jsonl/.json file, found {names}"
            )
        shutil.copyfile(files[0], target)
    else:
        raise ConfigError(f"dataset {config.spec.dataset.uri} is not mounted at {target}")
    log.info("staged %s into %s", config.spec.dataset.uri, target)


def stage_init(config: TrainingConfig) -> None:
    """The earlier job's adapter (and training records, to replay) of spec.initFrom."""
    init = config.init_from
    if init is None:
        return
    adapter = Path(init.adapter_path)
    uri = parse_uri(init.output_uri)
    if uri.scheme is not Scheme.S3:
        if not adapter.is_dir():
            raise ConfigError(f"spec.initFrom: adapter {init.adapter_uri} is not mounted at {adapter}")
        return
    _download_s3(parse_uri(init.adapter_uri), adapter, directory=True)
    if init.replay_records_path is not None:
        records = Path(init.replay_records_path)
        _download_s3(parse_uri(join(init.output_uri, records.name)), records, directory=False)
    log.info("staged %s into %s", init.output_uri, adapter.parent)


def stage(config: TrainingConfig) -> None:
    stage_model(config)
    stage_dataset(config)
    stage_init(config)
