"""Artifacts: the adapter, the merged model, metrics.json and kubetune-manifest.json."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from kubetune.api.common import API_VERSION
from kubetune.api.finetunejob import Artifacts, EvalMetrics, Lineage
from kubetune.api.trainingconfig import (
    ADAPTER_DIR,
    CHECKPOINTS_DIR,
    MANIFEST_FILE,
    MERGED_DIR,
    MODEL_DIR,
    TrainingConfig,
)
from kubetune.api.uris import join
from kubetune.trainer.data import DataReport

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
DATA_REPORT_FILE = "data-report.json"


@dataclass(frozen=True)
class Layout:
    """Where everything lives under the output directory (and the matching URIs under output.uri)."""

    root: Path

    @property
    def checkpoints(self) -> Path:
        return self.root / CHECKPOINTS_DIR

    @property
    def adapter(self) -> Path:
        return self.root / ADAPTER_DIR

    @property
    def merged(self) -> Path:
        return self.root / MERGED_DIR

    @property
    def model(self) -> Path:
        return self.root / MODEL_DIR


def merge_adapter(
    base_model: str, adapter: Path, target: Path, tokenizer: Any, trust_remote_code: bool
) -> None:
    """Load the base fresh from disk (never the DeepSpeed-wrapped one), merge, save safetensors."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(base_model, dtype="auto", trust_remote_code=trust_remote_code)
    merged = PeftModel.from_pretrained(base, str(adapter)).merge_and_unload()
    merged.save_pretrained(target, safe_serialization=True)
    tokenizer.save_pretrained(target)
    log.info("merged model saved to %s", target)


def artifacts_for(config: TrainingConfig, *, adapter: bool, merged: bool, full: bool) -> Artifacts:
    uri = config.output_uri
    return Artifacts(
        adapter_uri=join(uri, ADAPTER_DIR) if adapter else None,
        merged_model_uri=join(uri, MODEL_DIR) if full else (join(uri, MERGED_DIR) if merged else None),
        manifest_uri=join(uri, MANIFEST_FILE),
        base_model_uri=config.spec.base_model.uri,
    )


def _versions() -> dict[str, str]:
    found: dict[str, str] = {}
    for package in ("torch", "transformers", "peft", "accelerate", "deepspeed"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            continue
    return found


def write_json(path: Path, value: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(path.suffix + ".tmp")
    temporary.write_text(json.dumps(value, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    temporary.replace(path)


def manifest(
    config: TrainingConfig,
    *,
    report: DataReport,
    metrics: EvalMetrics,
    artifacts: Artifacts,
    lineage: Lineage,
    training: dict[str, Any],
) -> dict[str, Any]:
    spec = config.spec
    lora = spec.effective_lora()
    return {
        "apiVersion": API_VERSION,
        "kind": "FineTuneManifest",
        "createdAt": datetime.now(UTC).isoformat(),
        "job": {"namespace": config.namespace, "name": config.job_name},
        "baseModel": spec.base_model.to_wire(),
        "method": spec.method.value,
        "lora": lora.to_wire() if lora else None,
        "hyperparameters": spec.hyperparameters.to_wire(),
        "deepspeed": spec.deepspeed.to_wire() if spec.deepspeed else None,
        "data": {"uri": spec.dataset.uri, **report.to_dict(), "issues": len(report.issues)},
        "training": training,
        "metrics": metrics.to_wire(),
        "artifacts": artifacts.to_wire(),
        "lineage": lineage.to_wire(),
        "versions": _versions(),
    }
