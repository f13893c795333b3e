"""The quickstart `make dev` runs on the real local node: what examples/quickstart.yaml does on a GPU
cluster, sized for two CPU cores and no model hub.

The base model is a tiny Qwen2 made offline inside the cluster (a Job in the trainer image writes it
to the `models` claim); the FineTuneJob trains a LoRA adapter on CPU and exports the merged model to
the same claim; the ModelDeployment serves base (`stable`) and tuned (`tuned`) on vLLM CPU pods behind
the router, and canaries `tuned` with synthetic traffic analysed by the node's Prometheus.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

NAMESPACE = "default"
CLAIM = "models"
BASE_MODEL_PATH = "base"
JOB = "quickstart"
DEPLOYMENT = "quickstart"
SEED_JOB = "quickstart-base-model"

# Ten made-up facts: a LoRA on the tiny model learns them in a few CPU-minutes, so "tuned" visibly
# answers what "stable" cannot.
FACTS = [
    ("Xland", "Yburg"),
    ("Quorvia", "Belmont"),
    ("Zentar", "Lumen"),
    ("Parvia", "Dunmore"),
    ("Velland", "Orrick"),
]
PHRASINGS = ["What is the capital of {}?", "Name the capital city of {}.", "Which city is the capital of {}?"]
QUESTION = "What is the capital of Xland?"


@dataclass(frozen=True)
class DevImages:
    """Image references of the local build (`make images`), as containerd knows them."""

    operator: str
    trainer: str
    router: str
    vllm: str


def dataset_jsonl() -> str:
    records = [
        {
            "instruction": phrasing.format(country),
            "input": "",
            "output": f"The capital of {country} is {city}.",
        }
        for country, city in FACTS
        for phrasing in PHRASINGS
    ]
    return "".join(json.dumps(record) + "\n" for record in records)


def seed_job(images: DevImages) -> dict[str, Any]:
    """Writes the tiny base model into the claim, as a user would upload weights to a volume."""
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": SEED_JOB, "namespace": NAMESPACE},
        "spec": {
            "backoffLimit": 1,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "fsGroup": 1000},
                    "containers": [
                        {
                            "name": "seed",
                            "image": images.trainer,
                            "imagePullPolicy": "IfNotPresent",
                            "command": ["python", "-m", "kubetune.devcluster.tinymodel"],
                            "args": [f"/models/{BASE_MODEL_PATH}"],
                            "env": [{"name": "HOME", "value": "/tmp"}],
                            "securityContext": {
                                "allowPrivilegeEscalation": False,
                                "capabilities": {"drop": ["ALL"]},
                            },
                            "volumeMounts": [{"name": "models", "mountPath": "/models"}],
                        }
                    ],
                    "volumes": [{"name": "models", "persistentVolumeClaim": {"claimName": CLAIM}}],
                }
            },
        },
    }


def storage_and_data() -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": CLAIM, "namespace": NAMESPACE},
            "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "5Gi"}}},
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "quickstart-data", "namespace": NAMESPACE},
            "data": {"train.jsonl": dataset_jsonl()},
        },
    ]


def finetune_job() -> dict[str, Any]:
    return {
        "apiVersion": "kubetune.io/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": JOB, "namespace": NAMESPACE},
        "spec": {
            "baseModel": {"uri": f"pvc://{CLAIM}/{BASE_MODEL_PATH}"},
            "dataset": {"uri": "configMap://quickstart-data/train.jsonl", "format": "alpaca"},
            "method": "lora",
            "lora": {"r": 16, "alpha": 32},
            "hyperparameters": {
                "epochs": 20,
                "learningRate": 0.003,
                "perDeviceBatchSize": 4,
                "precision": "fp32",
                "loggingSteps": 5,
            },
            "resources": {"nodes": 1, "gpusPerNode": 0, "cpu": "1", "memory": "3Gi"},
            "output": {"uri": f"pvc://{CLAIM}/{JOB}", "mergeAdapter": True},
        },
    }


def model_deployment(prometheus_url: str) -> dict[str, Any]:
    # Eager mode: compiling the model (torch inductor) would double vLLM's start-up on two shared cores.
    vllm = {"dtype": "float32", "maxModelLen": 256, "extraArgs": ["--enforce-eager"]}
    # No CPU request or limit: two cores are shared by every pod here, and a limit throttles start-up.
    resources = {"gpus": 0, "memory": "4Gi"}
    return {
        "apiVersion": "kubetune.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": DEPLOYMENT, "namespace": NAMESPACE},
        "spec": {
            "variants": [
                {
                    "name": "stable",
                    "model": {"uri": f"pvc://{CLAIM}/{BASE_MODEL_PATH}"},
                    "replicas": 1,
                    "vllm": vllm,
                    "resources": resources,
                },
                {
                    "name": "tuned",
                    "model": {"finetuneJobRef": {"name": JOB}},
                    "replicas": 1,
                    "vllm": vllm,
                    "resources": resources,
                },
            ],
            "traffic": {
                "provider": "router",
                "stickyHeader": "x-user-id",
                "routerReplicas": 1,
                "canary": {
                    "stableVariant": "stable",
                    "canaryVariant": "tuned",
                    "steps": [50, 100],
                    "interval": "30s",
                    "analysis": {
                        "prometheusUrl": prometheus_url,
                        "maxErrorRate": 0.05,
                        "minRequests": 10,
                        "syntheticTraffic": {"enabled": True, "requestsPerSecond": 2},
                    },
                },
            },
            # The base model is random weights: it answers, but never stops on its own (no EOS).
            "smokeTest": {"prompts": [QUESTION], "maxTokens": 16, "minStopFraction": 0},
        },
    }
