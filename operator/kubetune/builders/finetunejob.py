"""FineTuneJob → its children: ConfigMaps, headless Service, RBAC, validation Job, Indexed training Job.

Pure: the FineTuneJob (as read from the API) in, manifests out. The layout is documented in
docs/training-topology.md; the reconciler decides which of these to apply and when
(kubetune.planning.finetunejob.observe).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from kubetune.api.common import GROUP
from kubetune.api.finetunejob import FineTuneJobSpec
from kubetune.api.trainingconfig import (
    ADAPTER_DIR,
    CONFIG_DIR,
    CONFIG_FILE,
    DEEPSPEED_FILE,
    FATAL_EXIT_CODES,
    TRAIN_RECORDS_FILE,
    InitFromConfig,
    ProgressTarget,
    TrainingConfig,
)
from kubetune.builders.common import (
    ANNOTATION_SPEC_HASH,
    LABEL_JOB,
    LABEL_ROLE,
    Manifest,
    child_name,
    metadata,
    stable_hash,
    standard_labels,
    with_image_pull_secrets,
)
from kubetune.builders.deepspeed import build_deepspeed_config
from kubetune.builders.networkpolicy import build_gang_network_policy
from kubetune.builders.storage import InitSource, StorageLayout, storage_layout
from kubetune.builders.training_pod import (
    MASTER_PORT,
    RENDEZVOUS_PORT_NAME,
    TRAINER_CONTAINER,
    VALIDATOR_CONTAINER,
    training_pod_spec,
    validation_pod_spec,
)
from kubetune.rbac import TRAINER_RULES

DEFAULT_TRAINER_IMAGE = "ghcr.io/kubetune/trainer:0.1.0"
APP_NAME = "kubetune-trainer"
LABEL_ATTEMPT = f"{GROUP}/attempt"
ANNOTATION_RESTARTS = f"{GROUP}/restarts"
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
ROLE_TRAIN = "train"
ROLE_VALIDATE = "validate"

# An Indexed Job's pod hostname is `<job>-<index>` and must be a DNS label (<= 63): with at most
# 256 nodes the index takes 3 digits and a dash.
MAX_JOB_NAME = 63 - 4

# podFailurePolicy rule order is part of the contract with planning.finetunejob: the Job's Failed
# condition names the matching rule by index.
RULE_FATAL_EXIT = 0
RULE_DISRUPTION = 1


@dataclass(frozen=True)
class ChildNames:
    """Deterministic names of a FineTuneJob's children."""

    parent: str
    config_map: str
    report: str
    """The ConfigMap rank 0 writes its progress report into (the only object its token may write)."""
    service: str
    service_account: str
    role: str
    role_binding: str
    validation_job: str
    network_policy: str

    def training_job(self, attempt: int) -> str:
        return child_name(_dns_label(self.parent), "train", f"r{attempt}", limit=MAX_JOB_NAME)


def _dns_label(name: str) -> str:
    """FineTuneJob names may contain dots; hostnames and Service names may not."""
    label = name.replace(".", "-")
    return label if label == name else f"{label}-{stable_hash(name, 6)}"


def job_label_value(name: str) -> str:
    """The `kubetune.io/job-name` label value (label values are limited to 63 characters)."""
    return child_name(name)


def child_names(ftj_name: str) -> ChildNames:
    base = _dns_label(ftj_name)
    # Service names are DNS-1035 labels: they must start with a letter.
    service_base = base if base[0].isalpha() else f"kt-{base}"
    return ChildNames(
        parent=ftj_name,
        config_map=child_name(ftj_name, "config", limit=253),
        report=child_name(ftj_name, "progress", limit=253),
        service=child_name(service_base, "workers"),
        service_account=child_name(base, "trainer"),
        role=child_name(base, "trainer"),
        role_binding=child_name(base, "trainer"),
        validation_job=child_name(base, "validate"),
        network_policy=child_name(base, "gang"),
    )


def selector_labels(ftj_name: str, role: str | None = None) -> dict[str, str]:
    labels = {LABEL_JOB: job_label_value(ftj_name)}
    if role:
        labels[LABEL_ROLE] = role
    return labels


@dataclass(frozen=True)
class FineTuneJobChildren:
    names: ChildNames
    config_map: Manifest
    report: Manifest
    service: Manifest
    service_account: Manifest
    role: Manifest
    role_binding: Manifest
    validation_job: Manifest
    training_job: Manifest
    network_policy: Manifest
    spec_hash: str

    def shared(self) -> list[Manifest]:
        """Everything but the Jobs, in apply order (apply on every pass; all mutable)."""
        return [
            self.config_map,
            self.report,
            self.service,
            self.service_account,
            self.role,
            self.role_binding,
            self.network_policy,
        ]

    def for_validation(self) -> list[Manifest]:
        """What the validation Job needs: its config and its (token-less) ServiceAccount.

        The rendezvous Service, the report ConfigMap and the Role/RoleBinding that lets rank 0 write it
        wait for training: a job whose data fails validation never gets them, and the first child
        appears after two writes, not six.
        """
        return [self.config_map, self.service_account]

    def all(self) -> list[Manifest]:
        return [*self.shared(), self.validation_job, self.training_job]


def _meta(ftj: dict[str, Any]) -> tuple[str, str]:
    meta = ftj["metadata"]
    return meta["name"], meta["namespace"]


def _spec(ftj: dict[str, Any]) -> FineTuneJobSpec:
    # Only the spec: whatever sits in status must not stop the children from rendering.
    return FineTuneJobSpec.model_validate(ftj["spec"])


def build_training_config(
    ftj: dict[str, Any], spec: FineTuneJobSpec | None = None, init: InitSource | None = None
) -> TrainingConfig:
    """The typed config the trainer parses from CONFIG_DIR/config.json (`spec`: `ftj`'s, parsed;
    `init`: its spec.initFrom, resolved)."""
    name, namespace = _meta(ftj)
    spec = spec or _spec(ftj)
    layout = storage_layout(spec, init)
    paths = layout.paths
    if spec.deepspeed is not None:
        paths = paths.model_copy(update={"deepspeed_config": f"{CONFIG_DIR}/{DEEPSPEED_FILE}"})
    return TrainingConfig(
        job_name=name,
        job_uid=ftj["metadata"].get("uid"),
        namespace=namespace,
        spec=spec,
        paths=paths,
        progress=ProgressTarget(namespace=namespace, name=name, report=child_names(name).report),
        output_uri=spec.output.uri,
        init_from=_init_from_config(init, layout.init_dir),
    )


def _init_from_config(init: InitSource | None, init_dir: str | None) -> InitFromConfig | None:
    if init is None or init_dir is None:
        return None
    return InitFromConfig(
        finetune_job=init.finetune_job,
        output_uri=init.output_uri,
        adapter_uri=init.adapter_uri,
        adapter_path=f"{init_dir}/{ADAPTER_DIR}",
        replay_records_path=f"{init_dir}/{TRAIN_RECORDS_FILE}" if init.replay_fraction > 0 else None,
        replay_fraction=init.replay_fraction,
        learning_rate_scale=init.learning_rate_scale,
    )


def spec_hash(spec: FineTuneJobSpec, deepspeed: dict[str, Any] | None) -> str:
    """Hash over what a running training Job cannot change: everything but runPolicy.

    The image is mutable in the CRD but baked into the pod template, so it is part of the hash:
    changing it recreates the training Job (resuming from the last checkpoint).
    """
    wire = spec.to_wire()
    wire.pop("runPolicy", None)
    return stable_hash({"spec": wire, "deepspeed": deepspeed})


def _labels(ftj_name: str, component: str, role: str | None = None) -> dict[str, str]:
    return standard_labels(
        name=APP_NAME, component=component, instance=job_label_value(ftj_name)
    ) | selector_labels(ftj_name, role)


def _pod_failure_policy(container: str, *, gang: bool) -> dict[str, Any]:
    rules: list[dict[str, Any]] = [
        {
            "action": "FailJob",
            "onExitCodes": {"containerName": container, "operator": "In", "values": list(FATAL_EXIT_CODES)},
        },
        # A gang: fail the Job at once on preemption or drain of one rank, so the operator restarts
        # the gang without waiting for the survivors' NCCL timeout (and without counting it). A
        # single pod: let the Job controller replace it, uncounted.
        {
            "action": "FailJob" if gang else "Ignore",
            "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
        },
    ]
    return {"rules": rules}


@dataclass(frozen=True)
class _Build:
    """What every child of one FineTuneJob is rendered from (parsed and derived once)."""

    ftj: dict[str, Any]
    name: str
    namespace: str
    spec: FineTuneJobSpec
    names: ChildNames
    layout: StorageLayout
    digest: str
    image: str
    pull_policy: str | None

    def metadata(
        self, name: str, labels: dict[str, str], annotations: dict[str, str] | None = None
    ) -> Manifest:
        return metadata(
            name=name, namespace=self.namespace, owner=self.ftj, labels=labels, annotations=annotations
        )


def build_children(
    ftj: dict[str, Any],
    *,
    restart: int,
    deepspeed_from_ref: str | None = None,
    counted_restarts: int | None = None,
    trainer_image: str = DEFAULT_TRAINER_IMAGE,
    spec: FineTuneJobSpec | None = None,
    image_pull_secrets: Sequence[str] = (),
    init: InitSource | None = None,
) -> FineTuneJobChildren:
    """All children of a FineTuneJob.

    restart: the attempt number of the training Job (part of its name; every gang restart,
        counted or not, uses the next one). counted_restarts: the restarts that count against
        runPolicy.backoffLimit (recorded on the Job so a crash between creating the Job and writing
        status.restarts loses nothing); defaults to `restart`.
    deepspeed_from_ref: the content of the ConfigMap key named by spec.deepspeed.configRef.
    spec: `ftj`'s spec, already parsed (parsed here when not given).
    image_pull_secrets: Secrets both Jobs' pods pull with (the chart's `imagePullSecrets`).
    init: spec.initFrom resolved against the earlier job (required when the spec sets initFrom).
    Raises ValueError when a referenced DeepSpeed config is missing or malformed.
    """
    name, namespace = _meta(ftj)
    spec = spec or _spec(ftj)
    deepspeed = build_deepspeed_config(spec, deepspeed_from_ref) if spec.deepspeed is not None else None
    b = _Build(
        ftj=ftj,
        name=name,
        namespace=namespace,
        spec=spec,
        names=child_names(name),
        layout=storage_layout(spec, init),
        digest=spec_hash(spec, deepspeed),
        image=(spec.image.image if spec.image else None) or trainer_image,
        pull_policy=spec.image.pull_policy if spec.image else None,
    )
    # Containers share mount and securityContext dicts while being built; hand out independent
    # trees so a caller editing one manifest cannot change another.
    return FineTuneJobChildren(
        names=b.names,
        config_map=_tree(_config_map(b, build_training_config(ftj, spec, init), deepspeed)),
        report=_tree(_report_config_map(b)),
        service=_tree(_rendezvous_service(b)),
        service_account=_tree(_service_account(b)),
        role=_tree(_role(b)),
        role_binding=_tree(_role_binding(b)),
        validation_job=_tree(with_image_pull_secrets(_validation_job(b), image_pull_secrets)),
        training_job=_tree(
            with_image_pull_secrets(_training_job(b, restart, counted_restarts), image_pull_secrets)
        ),
        network_policy=_tree(
            build_gang_network_policy(
                b.names.network_policy,
                b.namespace,
                b.ftj,
                _labels(b.name, "rendezvous"),
                selector_labels(b.name, ROLE_TRAIN),
            )
        ),
        spec_hash=b.digest,
    )


def _config_map(b: _Build, config: TrainingConfig, deepspeed: dict[str, Any] | None) -> Manifest:
    data = {CONFIG_FILE: json.dumps(config.to_wire(), indent=2, sort_keys=True) + "\n"}
    if deepspeed is not None:
        data[DEEPSPEED_FILE] = json.dumps(deepspeed, indent=2, sort_keys=True) + "\n"
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": b.metadata(
            b.names.config_map, _labels(b.name, "config"), annotations={ANNOTATION_SPEC_HASH: b.digest}
        ),
        "data": data,
    }


def _report_config_map(b: _Build) -> Manifest:
    """Created empty: REPORT_KEY is rank 0's to write. It carries no `data`, so the operator's apply
    never owns, rewrites or removes the report (server-side apply touches only the fields it sets)."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": b.metadata(b.names.report, _labels(b.name, "progress")),
    }


def _rendezvous_service(b: _Build) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": b.metadata(b.names.service, _labels(b.name, "rendezvous")),
        "spec": {
            "clusterIP": "None",
            # Ranks must resolve each other before they are Ready (they never are: no probes).
            "publishNotReadyAddresses": True,
            "selector": selector_labels(b.name, ROLE_TRAIN),
            "ports": [
                {
                    "name": RENDEZVOUS_PORT_NAME,
                    "port": MASTER_PORT,
                    "targetPort": MASTER_PORT,
                    "protocol": "TCP",
                }
            ],
        },
    }


def _service_account(b: _Build) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": b.metadata(b.names.service_account, _labels(b.name, "rbac")),
    }


def _role(b: _Build) -> Manifest:
    """Rank 0 may patch its report ConfigMap, nothing else: no status, no read, no other ConfigMap. The
    operator validates the report before anything of it reaches status (status.trainer_report); and it
    can only grant what it holds itself (RBAC escalation prevention), so `patch`, not `update`."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": b.metadata(b.names.role, _labels(b.name, "rbac")),
        "rules": [{**rule.to_manifest(), "resourceNames": [b.names.report]} for rule in TRAINER_RULES],
    }


def _role_binding(b: _Build) -> Manifest:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": b.metadata(b.names.role_binding, _labels(b.name, "rbac")),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": b.names.role},
        "subjects": [{"kind": "ServiceAccount", "name": b.names.service_account, "namespace": b.namespace}],
    }


def _validation_job(b: _Build) -> Manifest:
    labels = _labels(b.name, "validation", ROLE_VALIDATE)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": b.metadata(b.names.validation_job, labels, annotations={ANNOTATION_SPEC_HASH: b.digest}),
        "spec": {
            "backoffLimit": b.spec.run_policy.backoff_limit,
            "podFailurePolicy": _pod_failure_policy(VALIDATOR_CONTAINER, gang=False),
            "template": {
                "metadata": {"labels": labels},
                "spec": validation_pod_spec(
                    b.spec,
                    b.layout,
                    image=b.image,
                    pull_policy=b.pull_policy,
                    config_map=b.names.config_map,
                    service_account=b.names.service_account,
                ),
            },
        },
    }


def _training_job(b: _Build, restart: int, counted_restarts: int | None) -> Manifest:
    spec = b.spec
    job_name = b.names.training_job(restart)
    train_labels = _labels(b.name, "training", ROLE_TRAIN)
    job_labels = train_labels | {LABEL_ATTEMPT: str(restart)}
    if spec.resources.queue_name:
        job_labels[KUEUE_QUEUE_LABEL] = spec.resources.queue_name
    job_spec: dict[str, Any] = {
        "completionMode": "Indexed",
        "completions": spec.resources.nodes,
        "parallelism": spec.resources.nodes,
        # The operator restarts the whole gang (a new Job); a Job-level retry would restart one rank.
        "backoffLimit": 0,
        "podFailurePolicy": _pod_failure_policy(TRAINER_CONTAINER, gang=True),
        **training_job_mutable_fields(spec),
        "template": {
            "metadata": {"labels": train_labels | {LABEL_ATTEMPT: str(restart)}},
            "spec": training_pod_spec(
                spec,
                b.layout,
                image=b.image,
                pull_policy=b.pull_policy,
                config_map=b.names.config_map,
                service_account=b.names.service_account,
                service=b.names.service,
                master_addr=f"{job_name}-0.{b.names.service}",
            ),
        },
    }
    annotations = {
        ANNOTATION_SPEC_HASH: b.digest,
        ANNOTATION_RESTARTS: str(restart if counted_restarts is None else counted_restarts),
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": b.metadata(job_name, job_labels, annotations=annotations),
        "spec": job_spec,
    }


def _tree(manifest: Manifest) -> Manifest:
    # A JSON round trip, unlike deepcopy, also breaks sharing inside one manifest.
    tree: Manifest = json.loads(json.dumps(manifest))
    return tree


def training_job_mutable_fields(spec: FineTuneJobSpec) -> dict[str, Any]:
    """The training Job's fields that follow runPolicy while it runs (patch these; the rest is fixed).

    With a Kueue queue the Job is created suspended and Kueue owns `suspend` from then on (it
    unsuspends on admission), so it is left out here; runPolicy.suspend of a queued job is carried
    out by deleting the training Job (planning.finetunejob decides).
    """
    run = spec.run_policy
    fields: dict[str, Any] = {}
    if run.active_deadline_seconds is not None:
        fields["activeDeadlineSeconds"] = run.active_deadline_seconds
    if run.ttl_seconds_after_finished is not None:
        fields["ttlSecondsAfterFinished"] = run.ttl_seconds_after_finished
    fields["suspend"] = True if spec.resources.queue_name else run.suspend
    return fields


def training_job_patch(spec: FineTuneJobSpec) -> dict[str, Any]:
    """Merge patch for an existing training Job after a runPolicy change."""
    fields = training_job_mutable_fields(spec)
    if spec.resources.queue_name:
        fields.pop("suspend")
    return {"spec": fields}
