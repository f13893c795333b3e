"""The `train` command: validate data, fine-tune with the HF Trainer, evaluate, export."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, EarlyStoppingCallback, Trainer, TrainingArguments

from kubetune.api.finetunejob import Artifacts, EvalMetrics, Lineage, Method
from kubetune.api.trainingconfig import MANIFEST_FILE, TRAIN_RECORDS_FILE, TrainerResult, TrainingConfig
from kubetune.trainer import incremental
from kubetune.trainer.callbacks import ProgressCallback, Throughput
from kubetune.trainer.checkpoints import latest_checkpoint
from kubetune.trainer.config import Topology, config_hash, load_deepspeed_config
from kubetune.trainer.data import Conversation, DataReport
from kubetune.trainer.data.prompts import held_out_prompts
from kubetune.trainer.data.split import Splits
from kubetune.trainer.dataset import PaddingCollator, build_dataset
from kubetune.trainer.errors import ConfigError
from kubetune.trainer.evaluation import evaluation_metrics, generate_answers
from kubetune.trainer.export import (
    DATA_REPORT_FILE,
    METRICS_FILE,
    Layout,
    artifacts_for,
    manifest,
    merge_adapter,
    write_json,
)
from kubetune.trainer.frozen import Scoring, score_frozen_set
from kubetune.trainer.kernels import KernelChoice, choose_kernels
from kubetune.trainer.ownership import CheckpointOwnerCallback, Owner, claim_output, resumable_checkpoint
from kubetune.trainer.precision import Precision, resolve_precision
from kubetune.trainer.progress import ProgressReporter
from kubetune.trainer.throughput import ModelShape, flops_per_token, gpu_peak, peak_flops
from kubetune.trainer.validate import load_tokenizer, prepare_data

log = logging.getLogger(__name__)

# Kept checkpoints: the newest for resuming, one more in case the newest was being rotated out.
SAVE_TOTAL_LIMIT = 2


@dataclass(frozen=True)
class Hardware:
    cuda: bool
    bf16_supported: bool
    device_name: str | None = None  # CUDA's name of GPU 0, for the peak-FLOPs table

    @classmethod
    def detect(cls) -> Hardware:
        cuda = torch.cuda.is_available()
        return cls(
            cuda=cuda,
            bf16_supported=cuda and torch.cuda.is_bf16_supported(),
            device_name=torch.cuda.get_device_name(0) if cuda else None,
        )


def model_shape(model: Any) -> ModelShape:
    """N, L and d of the FLOPs formula (kubetune.trainer.throughput), read before LoRA wraps the model."""
    config = model.config.get_text_config()
    embedding = model.get_input_embeddings().weight
    if hasattr(embedding, "ds_numel"):
        # ZeRO-3 partitions weights at load time: each local tensor is a placeholder of the full one.
        embeddings = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
        matmul = sum(p.ds_numel for p in model.parameters() if id(p) not in embeddings)
        table = embedding.ds_numel
    else:
        # num_parameters counts 4-bit weights at their real size.
        matmul, table = model.num_parameters(exclude_embeddings=True), embedding.numel()
    # Embeddings are lookups, not matmuls, but a tied table is also the output projection, which is one.
    if getattr(config, "tie_word_embeddings", False):
        matmul += table
    return ModelShape(
        matmul_parameters=int(matmul),
        layers=int(config.num_hidden_layers),
        hidden_size=int(config.hidden_size),
    )


def load_model(
    config: TrainingConfig, hardware: Hardware, precision: str, kernels: KernelChoice | None = None
) -> tuple[Any, ModelShape]:
    spec = config.spec
    kwargs: dict[str, Any] = {"trust_remote_code": spec.base_model.trust_remote_code}
    if kernels is not None and kernels.attn_implementation is not None:
        kwargs["attn_implementation"] = kernels.attn_implementation
    if spec.method is Method.QLORA:
        if not hardware.cuda:
            raise ConfigError("method qlora needs a CUDA GPU: bitsandbytes 4-bit kernels do not run on CPU")
        try:
            from transformers import BitsAndBytesConfig
        except ImportError as exc:
            raise ConfigError(f"method qlora needs bitsandbytes: {exc}") from None
        compute = torch.bfloat16 if precision == "bf16" else torch.float16
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute,
        )
        kwargs["dtype"] = compute
    else:
        # Master weights in fp32; the Trainer's autocast gives bf16/fp16 compute.
        kwargs["dtype"] = torch.float32
    try:
        model = AutoModelForCausalLM.from_pretrained(config.paths.base_model, **kwargs)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot load the base model from {config.paths.base_model}: {exc}") from None
    shape = model_shape(model)
    lora = spec.effective_lora()
    if lora is None:
        return model, shape
    from peft import LoraConfig, TaskType, get_peft_model, prepare_model_for_kbit_training

    if spec.method is Method.QLORA:
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=spec.hyperparameters.gradient_checkpointing
        )
    if config.init_from is not None:
        from kubetune.trainer.incremental import load_trainable_adapter

        return load_trainable_adapter(model, config.init_from, lora), shape
    targets: list[str] | str = "all-linear" if lora.target_modules == ["all-linear"] else lora.target_modules
    peft_config = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=targets,
        task_type=TaskType.CAUSAL_LM,
    )
    try:
        return get_peft_model(model, peft_config), shape
    except ValueError as exc:
        raise ConfigError(f"LoRA config does not fit the model: {exc}") from None


def training_arguments(
    config: TrainingConfig,
    layout: Layout,
    precision: str,
    hardware: Hardware,
    has_validation: bool,
    kernels: KernelChoice | None = None,
) -> TrainingArguments:
    spec = config.spec
    hp = spec.hyperparameters
    if hp.early_stopping_patience is not None and not has_validation:
        raise ConfigError("earlyStoppingPatience needs a validation split (dataset.validationSplit > 0)")
    eval_strategy = ("steps" if hp.eval_steps else "epoch") if has_validation else "no"
    save_strategy = "steps" if hp.save_steps else "epoch"
    save_steps = hp.save_steps
    early = hp.early_stopping_patience is not None
    if early:
        # The best checkpoint can only be restored if checkpoints and evaluations line up.
        save_strategy = eval_strategy
        if hp.eval_steps and (save_steps is None or save_steps % hp.eval_steps):
            log.info("early stopping: checkpointing every %d steps to match evaluations", hp.eval_steps)
            save_steps = hp.eval_steps
    deepspeed = config.paths.deepspeed_config
    if deepspeed is not None:
        zero = load_deepspeed_config(deepspeed).get("zero_optimization") or {}
        stage = zero.get("stage", 0) if isinstance(zero, dict) else 0
        log.info("DeepSpeed enabled with %s (ZeRO stage %s)", deepspeed, stage)
    return TrainingArguments(
        output_dir=str(layout.checkpoints),
        num_train_epochs=hp.epochs,
        learning_rate=hp.learning_rate * (config.init_from.learning_rate_scale if config.init_from else 1.0),
        per_device_train_batch_size=hp.per_device_batch_size,
        per_device_eval_batch_size=hp.per_device_batch_size,
        gradient_accumulation_steps=hp.gradient_accumulation_steps,
        warmup_steps=hp.warmup_ratio if hp.warmup_ratio < 1 else 0.999,
        weight_decay=hp.weight_decay,
        max_grad_norm=hp.max_grad_norm,
        lr_scheduler_type=hp.lr_scheduler,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=not hardware.cuda,
        activation_checkpointing=hp.gradient_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False} if hp.gradient_checkpointing else None,
        eval_strategy=eval_strategy,
        eval_steps=hp.eval_steps,
        save_strategy=save_strategy,
        save_steps=save_steps or 500,
        save_total_limit=SAVE_TOTAL_LIMIT,
        load_best_model_at_end=early,
        metric_for_best_model="eval_loss" if early else None,
        greater_is_better=False if early else None,
        logging_steps=hp.logging_steps,
        logging_first_step=True,
        # Counted by ProgressCallback from the dataset instead: the Trainer's count reads the batch back
        # from the GPU (a device sync) and gathers it across ranks on every micro-step.
        include_num_input_tokens_seen="no",
        report_to="none",
        disable_tqdm=True,
        seed=spec.dataset.seed,
        data_seed=spec.dataset.seed,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        ddp_find_unused_parameters=False if spec.method is not Method.FULL else None,
        deepspeed=deepspeed,
        use_liger_kernel=kernels is not None and kernels.liger,
    )


def throughput_model(
    shape: ModelShape,
    *,
    sequence_length: float,
    full_weights: bool,
    hardware: Hardware,
    precision: Precision,
    gpus: int,
) -> Throughput:
    """FLOPs per token always (logged); the cluster's peak only on a GPU the table knows."""
    per_token = flops_per_token(shape, sequence_length, full_weights=full_weights)
    peak = gpu_peak(hardware.device_name) if hardware.device_name else None
    if hardware.device_name and peak is None:
        log.info("GPU %r is not in the peak-FLOPs table: no MFU in the progress", hardware.device_name)
    total_peak = peak_flops(peak, precision) * gpus if peak is not None else None
    log.info(
        "model FLOPs per token %.3g (N=%d, L=%d, d=%d, T=%.0f)%s",
        per_token,
        shape.matmul_parameters,
        shape.layers,
        shape.hidden_size,
        sequence_length,
        f"; peak {total_peak:.3g} FLOP/s over {gpus} {peak.name}" if peak and total_peak else "",
    )
    return Throughput(flops_per_token=per_token, peak_flops=total_peak)


def _evaluate(
    trainer: Trainer, config: TrainingConfig, test: list[Any], tokenizer: Any, topology: Topology
) -> tuple[EvalMetrics, list[tuple[str, str]]]:
    """Loss on the test split and ROUGE-L/BLEU of generated answers, as the spec asks (with the answers)."""
    spec = config.spec
    test_loss: float | None = None
    if test and "loss" in spec.evaluation.metrics:
        max_length = spec.dataset.max_seq_length
        test_dataset = build_dataset(tokenizer, test, max_length=max_length, packing=False)
        test_loss = float(trainer.evaluate(eval_dataset=test_dataset, metric_key_prefix="test")["test_loss"])
    pairs: list[tuple[str, str]] = []
    wants_generations = bool({"rouge", "bleu"} & set(spec.evaluation.metrics)) and bool(test)
    samples = test[: spec.evaluation.max_samples]
    zero3 = _zero3_enabled()
    if wants_generations and (topology.is_main or zero3):
        # Partitioned ZeRO-3 weights need every rank in each forward pass: all ranks generate in step.
        pairs = generate_answers(
            trainer.model, tokenizer, samples, synced_gpus=zero3 and topology.world_size > 1
        )
    return evaluation_metrics(spec.evaluation.metrics, test_loss, pairs), pairs


def run_training(config: TrainingConfig, config_path: Path, reporter: ProgressReporter) -> TrainerResult:
    """Everything between the config and the result; raises TrainerError for fatal failures."""
    topology = Topology.from_env()
    hardware = Hardware.detect()
    spec = config.spec
    hp = spec.hyperparameters
    layout = Layout(Path(config.paths.output_dir))
    owner = Owner.of(config)
    claim_output(layout.root, owner)  # before anything is written: never into another job's folder

    tokenizer = load_tokenizer(config)
    prepared = prepare_data(config, tokenizer)
    splits = prepared.splits
    precision = resolve_precision(hp.precision, cuda=hardware.cuda, bf16_supported=hardware.bf16_supported)
    kernels = choose_kernels(hp, cuda=hardware.cuda)
    args = training_arguments(
        config, layout, precision, hardware, has_validation=bool(splits.validation), kernels=kernels
    )
    model, shape = load_model(config, hardware, precision, kernels)
    if hp.gradient_checkpointing and spec.effective_lora() is not None:
        model.enable_input_require_grads()

    train_records, replayed = _with_replay(config, tokenizer, splits)
    trainer, progress = _wire_trainer(
        config,
        model,
        shape,
        args,
        tokenizer,
        train_records,
        splits.validation,
        reporter,
        owner,
        layout,
        hardware=hardware,
        precision=precision,
        gpus=topology.world_size,
    )

    resume_from = resumable_checkpoint(layout.checkpoints, owner)
    if resume_from is not None:
        log.info("resuming from checkpoint %s", resume_from)
    started = time.monotonic()
    train_output = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    train_seconds = time.monotonic() - started
    log.info(
        "training done: %d steps in %.1f s, loss %.4f",
        trainer.state.global_step,
        train_seconds,
        train_output.training_loss,
    )

    is_lora = spec.effective_lora() is not None
    save_dir = layout.adapter if is_lora else layout.model
    trainer.save_model(str(save_dir))  # every rank: ZeRO-3 gathers the partitioned weights here

    metrics, pairs = _evaluate(trainer, config, splits.test, tokenizer, topology)

    if not topology.is_main:
        return TrainerResult(outcome="Succeeded", final_step=trainer.state.global_step)

    tokenizer.save_pretrained(save_dir)
    merged = is_lora and spec.output.merge_adapter
    if merged:
        merge_adapter(
            config.paths.base_model,
            layout.adapter,
            layout.merged,
            tokenizer,
            spec.base_model.trust_remote_code,
        )
    artifacts = artifacts_for(config, adapter=is_lora, merged=merged, full=not is_lora)
    lineage = _lineage(config, config_path, prepared.report.sha256, layout)
    if config.init_from is not None:
        lineage.init_from = incremental.lineage(config.init_from, replayed)
    incremental.write_train_records(layout.root / TRAIN_RECORDS_FILE, train_records)
    training = _training_record(
        trainer, train_output, train_seconds, resume_from, precision, progress, topology
    )
    _write_reports(config, layout, prepared.report, metrics, pairs, training, artifacts, lineage)
    frozen = score_frozen_set(
        config,
        layout.root,
        splits.test,
        tokenizer,
        Scoring.for_hardware(cuda=hardware.cuda, bf16_supported=hardware.bf16_supported),
    )
    return TrainerResult(
        outcome="Succeeded",
        message=prepared.report.summary(),
        metrics=metrics if metrics.to_wire() else EvalMetrics(),
        artifacts=artifacts,
        lineage=lineage,
        frozen_set=frozen,
        final_step=trainer.state.global_step,
        test_prompts=held_out_prompts(splits.test) or None,
    )


def _wire_trainer(
    config: TrainingConfig,
    model: Any,
    shape: Any,
    args: Any,
    tokenizer: Any,
    train_records: Any,
    validation: Any,
    reporter: ProgressReporter,
    owner: Owner,
    layout: Layout,
    *,
    hardware: Hardware,
    precision: Any,
    gpus: int,
) -> tuple[Trainer, ProgressCallback]:
    """The datasets, throughput model and callbacks around the loaded model, as a Trainer."""
    spec = config.spec
    hp = spec.hyperparameters
    train_dataset, eval_dataset = _datasets(config, tokenizer, train_records, validation)
    throughput = throughput_model(
        shape,
        sequence_length=train_dataset.mean_length(),
        full_weights=spec.effective_lora() is None,
        hardware=hardware,
        precision=precision,
        gpus=gpus,
    )
    progress = ProgressCallback(
        reporter, tokens_served=lambda: train_dataset.tokens_served, throughput=throughput
    )
    callbacks: list[Any] = [progress, CheckpointOwnerCallback(layout.checkpoints, owner)]
    if hp.early_stopping_patience is not None:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=hp.early_stopping_patience))
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        data_collator=PaddingCollator(tokenizer.pad_token_id),
        processing_class=tokenizer,
        callbacks=callbacks,
    )

    return trainer, progress


def _write_reports(
    config: TrainingConfig,
    layout: Layout,
    report: DataReport,
    metrics: EvalMetrics,
    pairs: list[tuple[str, str]],
    training: dict[str, Any],
    artifacts: Artifacts,
    lineage: Lineage,
) -> None:
    """The data report, the metrics (with sample generations) and the manifest beside the artifacts."""
    write_json(layout.root / DATA_REPORT_FILE, report.to_dict())
    generations = [{"prediction": p, "reference": r} for p, r in pairs[:20]]
    write_json(
        layout.root / METRICS_FILE, {**metrics.to_wire(), "training": training, "generations": generations}
    )
    record = manifest(
        config, report=report, metrics=metrics, artifacts=artifacts, lineage=lineage, training=training
    )
    write_json(layout.root / MANIFEST_FILE, record)


def _with_replay(config: TrainingConfig, tokenizer: Any, splits: Splits) -> tuple[list[Conversation], int]:
    """The training records: the new split plus the replayed sample of the earlier job's (spec.initFrom)."""
    init = config.init_from
    if init is None or init.replay_fraction <= 0:
        return list(splits.train), 0
    from kubetune.trainer.chat import count_tokens

    earlier = incremental.load_replay_records(
        init,
        max_seq_length=config.spec.dataset.max_seq_length,
        token_counter=lambda c: count_tokens(tokenizer, c),
    )
    sample = incremental.replay_sample(
        earlier,
        count=incremental.replay_count(init.replay_fraction, len(splits.train)),
        exclude=[*splits.train, *splits.validation, *splits.test],
        seed=config.spec.dataset.seed,
    )
    log.info(
        "replay: %d of %d earlier records join %d new ones", len(sample), len(earlier), len(splits.train)
    )
    return [*splits.train, *sample], len(sample)


def _datasets(
    config: TrainingConfig, tokenizer: Any, train: list[Any], validation: list[Any]
) -> tuple[Any, Any | None]:
    """The training set (packed if the spec asks) and the validation set (never packed), if any."""
    spec = config.spec
    max_length = spec.dataset.max_seq_length
    train_dataset = build_dataset(
        tokenizer, train, max_length=max_length, packing=spec.hyperparameters.packing
    )
    if not validation:
        return train_dataset, None
    return train_dataset, build_dataset(tokenizer, validation, max_length=max_length, packing=False)


def _training_record(
    trainer: Trainer,
    train_output: Any,
    train_seconds: float,
    resume_from: Path | None,
    precision: Precision,
    progress: ProgressCallback,
    topology: Topology,
) -> dict[str, Any]:
    """How the run went, for metrics.json and the manifest."""
    return {
        "steps": trainer.state.global_step,
        "resumedFrom": str(resume_from) if resume_from else None,
        "precision": precision,
        "trainLoss": train_output.training_loss,
        "lossHistory": [{"step": step, "loss": loss} for step, loss in progress.loss_history],
        "trainSeconds": round(train_seconds, 3),
        "tokensSeen": trainer.state.num_input_tokens_seen,
        "worldSize": topology.world_size,
    }


def _lineage(config: TrainingConfig, config_path: Path, dataset_sha256: str, layout: Layout) -> Lineage:
    """What the artifact was made from: data, base revision, config and the last checkpoint."""
    checkpoint = latest_checkpoint(layout.checkpoints)
    return Lineage(
        dataset_digest="sha256:" + dataset_sha256,
        base_model_revision=config.spec.base_model.revision,
        config_hash=config_hash(config_path),
        checkpoint=str(checkpoint) if checkpoint else None,
    )


def _zero3_enabled() -> bool:
    from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled

    return bool(is_deepspeed_zero3_enabled())
