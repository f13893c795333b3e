"""Tokens per second of kubetune's trainer against a bare HF Trainer script: same model, data and batches.

Both sides train the same offline-built Qwen2 model with the same LoRA shape, batch size, schedule and
data order (file order, sampler seed 42) on CPU. What is timed is `Trainer.train()` only (model loading,
tokenisation, evaluation and export are excluded for both); throughput counts non-padding tokens.

Scenarios:
  tiny   the tiny test model (2 layers, d=128), chat records of 20-110 tokens, batch 8, no packing. Runs are
         interleaved in pairs (ours, plain; then plain, ours; ...) after one warm-up each; the epoch count
         is calibrated from the warm-ups so that every timed run lasts >= --min-seconds.
  long   a larger model (4 layers, d=256), records of 100-1000 tokens, maxSeqLength 1024, batch 4, in four
         variants: packing off/on x gradient checkpointing off/on; one interleaved pair per variant by
         default. The bare script packs the same way (whole records, position ids reset, no mask).

The ratio is the median over pairs of (ours / plain) in tokens per CPU-second of the training loop, with
a 95% bootstrap interval over pairs (seeded); wall-clock figures are printed beside it. On a machine with
other load, CPU time moves less than wall time, but both move: take figures from a quiet machine.

    .venv/bin/python bench/trainer_cpu.py                 # both scenarios, ~10-12 min on 2 quiet cores
    .venv/bin/python bench/trainer_cpu.py --long-run      # 10 pairs of >= 60 s, 3 pairs per variant
    .venv/bin/python bench/trainer_cpu.py --quick         # seconds-long runs: checks the script only
    py-spy record -o ours.txt -f raw -- .venv/bin/python bench/trainer_cpu.py --only kubetune

Last line: `trainer: tokens_per_s_ratio=<median of ours / plain, tiny scenario>` (goal >= 0.98).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "operator"))

from kubetune.devcluster.tinymodel import create_tiny_model

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]
LORA = {"r": 16, "alpha": 32, "dropout": 0.0, "targetModules": TARGETS}
SIDES = ("kubetune", "plain HF Trainer")
WORDS = ["alpha", "beta", "gamma", "delta", "epsilon", "model", "token", "answer", "question", "capital"]


@dataclass(frozen=True)
class Variant:
    name: str
    model: str  # "tiny" or "long"
    max_seq: int
    batch: int
    packing: bool = False
    checkpointing: bool = False
    gpu: bool = False  # bf16 on CUDA (bench/trainer_gpu.py) instead of fp32 on CPU
    targets: tuple[str, ...] = tuple(TARGETS)


@dataclass
class Run:
    wall: float
    cpu: float
    tokens: int
    checkpoint_wall: float = 0.0  # of `wall`: saving checkpoints inside train()

    @property
    def per_cpu(self) -> float:
        return self.tokens / self.cpu

    @property
    def per_wall(self) -> float:
        return self.tokens / self.wall


@dataclass
class Result:
    variant: Variant
    epochs: float
    runs: dict[str, list[Run]] = field(default_factory=lambda: {side: [] for side in SIDES})


class TrainTimer:
    """Times every `Trainer.train()` call (wall, process CPU) and the checkpoint saves inside it (wall),
    identically for both sides."""

    def __init__(self) -> None:
        self.last: tuple[float, float, float] = (0.0, 0.0, 0.0)
        self._saving = 0.0

    def install(self) -> None:
        from transformers import Trainer

        train, save = Trainer.train, Trainer._save_checkpoint
        timer = self

        def timed_train(trainer: Any, *args: Any, **kwargs: Any) -> Any:
            timer._saving = 0.0
            wall, cpu = time.monotonic(), time.process_time()
            try:
                return train(trainer, *args, **kwargs)
            finally:
                timer.last = (time.monotonic() - wall, time.process_time() - cpu, timer._saving)

        def timed_save(trainer: Any, *args: Any, **kwargs: Any) -> Any:
            started = time.monotonic()
            try:
                return save(trainer, *args, **kwargs)
            finally:
                timer._saving += time.monotonic() - started

        Trainer.train = timed_train  # type: ignore[method-assign]
        Trainer._save_checkpoint = timed_save  # type: ignore[method-assign]

    def run(self, tokens: int) -> Run:
        wall, cpu, saving = self.last
        return Run(wall, cpu, tokens, saving)


TIMER = TrainTimer()


def create_long_model(directory: Path) -> Path:
    """The tiny model's tokenizer with a larger Qwen2 (4 layers, d=256, GQA) that takes 1024+ tokens."""
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    create_tiny_model(directory)
    tokenizer = AutoTokenizer.from_pretrained(directory)
    tokenizer.model_max_length = 4096
    tokenizer.save_pretrained(directory)
    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=256,
        intermediate_size=688,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
    )
    Qwen2ForCausalLM(config).save_pretrained(directory, safe_serialization=True)
    return directory


def make_dataset(path: Path, records: int, answer_words: tuple[int, int], seed: int = 0) -> Path:
    rng = random.Random(seed)
    lines = []
    for i in range(records):
        question = " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 20)))
        answer = " ".join(rng.choice(WORDS) for _ in range(rng.randint(*answer_words)))
        lines.append(json.dumps({"instruction": f"{i}: {question}?", "output": answer}))
    path.write_text("\n".join(lines) + "\n")
    return path


def write_config(work: Path, model: Path, data: Path, variant: Variant, epochs: float) -> Path:
    from kubetune.api.trainingconfig import TrainingConfig

    config = TrainingConfig.model_validate(
        {
            "jobName": "bench",
            "namespace": "default",
            "spec": {
                "baseModel": {"uri": "pvc://models/bench"},
                "dataset": {
                    "uri": "pvc://data/d.jsonl",
                    "validationSplit": 0,
                    "testSplit": 0,
                    "maxSeqLength": variant.max_seq,
                },
                "output": {"uri": "pvc://output/bench"},
                "lora": {**LORA, "targetModules": list(variant.targets)},
                "hyperparameters": {
                    "epochs": epochs,
                    "perDeviceBatchSize": variant.batch,
                    "learningRate": 1e-3,
                    "precision": "bf16" if variant.gpu else "fp32",
                    "loggingSteps": 10,
                    "saveSteps": 100000,
                    "packing": variant.packing,
                    "gradientCheckpointing": variant.checkpointing,
                },
                "evaluation": {"metrics": []},
            },
            "paths": {"baseModel": str(model), "dataset": str(data), "outputDir": str(work / "out")},
            "progress": {"enabled": False, "namespace": "default", "name": "bench"},
            "outputUri": "pvc://output/bench",
        }
    )
    path = work / "config.json"
    path.write_text(config.model_dump_json(by_alias=True))
    return path


def run_ours(config_path: Path) -> Run:
    from kubetune.trainer.config import load_config
    from kubetune.trainer.progress import NoopReporter
    from kubetune.trainer.train import run_training

    config = load_config(config_path)
    shutil.rmtree(config.paths.output_dir, ignore_errors=True)  # no resume between repeats
    run_training(config, config_path, NoopReporter())
    metrics = json.loads((Path(config.paths.output_dir) / "metrics.json").read_text())
    return TIMER.run(metrics["training"]["tokensSeen"])


def plain_examples(model_dir: Path, data: Path, variant: Variant) -> list[dict[str, list[int]]]:
    """What a user writes by hand: the chat template, labels = inputs; packing as transformers'
    padding-free collators expect it (position ids restart per record, no attention mask)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    examples = []
    for line in data.read_text().splitlines():
        row = json.loads(line)
        messages = [
            {"role": "user", "content": row["instruction"]},
            {"role": "assistant", "content": row["output"]},
        ]
        text = tokenizer.apply_chat_template(messages, tokenize=False)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"][: variant.max_seq]
        examples.append({"input_ids": ids, "labels": [-100, *ids[1:]]})
    if not variant.packing:
        return examples
    blocks: list[list[dict[str, list[int]]]] = []
    for example in sorted(examples, key=lambda e: -len(e["input_ids"])):  # first-fit decreasing
        size = len(example["input_ids"])
        home = next(
            (b for b in blocks if sum(len(e["input_ids"]) for e in b) + size <= variant.max_seq), None
        )
        if home is None:
            blocks.append([example])
        else:
            home.append(example)
    return [
        {
            "input_ids": [t for e in block for t in e["input_ids"]],
            "labels": [t for e in block for t in e["labels"]],
            "position_ids": [p for e in block for p in range(len(e["input_ids"]))],
        }
        for block in blocks
    ]


def run_plain(model_dir: Path, data: Path, work: Path, variant: Variant, epochs: float) -> Run:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments

    examples = plain_examples(model_dir, data, variant)
    pad = AutoTokenizer.from_pretrained(model_dir).pad_token_id

    def collate(rows: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        longest = max(len(r["input_ids"]) for r in rows)
        ids = torch.tensor([r["input_ids"] + [pad] * (longest - len(r["input_ids"])) for r in rows])
        labels = torch.tensor([r["labels"] + [-100] * (longest - len(r["labels"])) for r in rows])
        if variant.packing:
            positions = [r["position_ids"] + list(range(longest - len(r["input_ids"]))) for r in rows]
            return {"input_ids": ids, "labels": labels, "position_ids": torch.tensor(positions)}
        mask = torch.tensor([[1] * len(r["input_ids"]) + [0] * (longest - len(r["input_ids"])) for r in rows])
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}

    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model = get_peft_model(
        base,
        LoraConfig(
            r=16, lora_alpha=32, lora_dropout=0.0, target_modules=list(variant.targets), task_type="CAUSAL_LM"
        ),
    )
    if variant.checkpointing:
        model.enable_input_require_grads()
    args = TrainingArguments(
        output_dir=str(work / "plain"),
        num_train_epochs=epochs,
        per_device_train_batch_size=variant.batch,
        learning_rate=1e-3,
        logging_steps=10,
        # HF's default strategy, like ours: a checkpoint at the end of train() (never in between here).
        save_strategy="steps",
        save_steps=100000,
        report_to="none",
        use_cpu=not variant.gpu,
        bf16=variant.gpu,
        disable_tqdm=True,
        remove_unused_columns=False,
        gradient_checkpointing=variant.checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False} if variant.checkpointing else None,
        seed=42,
    )
    trainer = Trainer(model=model, args=args, train_dataset=examples, data_collator=collate)
    trainer.train()
    # Whole epochs (the calibration only asks for whole ones): every token of the data, `epochs` times.
    return TIMER.run(round(epochs) * sum(len(e["input_ids"]) for e in examples))


def bootstrap_median(values: list[float], rounds: int = 10000, seed: int = 0) -> tuple[float, float]:
    """95% percentile-bootstrap interval of the median, resampling whole pairs (seeded)."""
    rng = random.Random(seed)
    medians = sorted(statistics.median(rng.choices(values, k=len(values))) for _ in range(rounds))
    return medians[int(0.025 * rounds)], medians[int(0.975 * rounds) - 1]


def summarise(result: Result) -> float:
    ours, plain = result.runs[SIDES[0]], result.runs[SIDES[1]]
    print(f"\n== {result.variant.name}: {len(ours)} pairs, {result.epochs:g} epochs per run")
    print(
        f"{'side':<18} {'tokens':>8} {'train() s min/med/max':>23} {'tok/cpu-s min/med/max':>24} "
        f"{'tok/s med':>9} {'ckpt s med':>10}"
    )
    for side, runs in result.runs.items():
        walls = [r.wall for r in runs]
        cpu = [r.per_cpu for r in runs]
        print(
            f"{side:<18} {runs[0].tokens:>8} {min(walls):>7.1f} {statistics.median(walls):>7.1f} "
            f"{max(walls):>7.1f} {min(cpu):>8.0f} {statistics.median(cpu):>7.0f} {max(cpu):>7.0f} "
            f"{statistics.median(r.per_wall for r in runs):>9.0f} "
            f"{statistics.median(r.checkpoint_wall for r in runs):>10.2f}"
        )
    if any(o.tokens != p.tokens for o, p in zip(ours, plain, strict=True)):
        print("WARNING: the two sides trained on different token counts")
    ratios = [o.per_cpu / p.per_cpu for o, p in zip(ours, plain, strict=True)]
    walls = [o.per_wall / p.per_wall for o, p in zip(ours, plain, strict=True)]
    loops = [
        (o.tokens / (o.wall - o.checkpoint_wall)) / (p.tokens / (p.wall - p.checkpoint_wall))
        for o, p in zip(ours, plain, strict=True)
    ]
    low, high = bootstrap_median(ratios)
    print(
        f"ratio ours/plain, tokens per CPU-second: median {statistics.median(ratios):.3f} "
        f"(min {min(ratios):.3f}, max {max(ratios):.3f}, 95% bootstrap CI {low:.3f}-{high:.3f}); "
        f"wall-clock median {statistics.median(walls):.3f}, "
        f"wall-clock without checkpoint saving {statistics.median(loops):.3f}",
        flush=True,
    )
    return statistics.median(ratios)


class Bench:
    def __init__(self, work: Path, options: argparse.Namespace) -> None:
        self.work = work
        self.options = options
        self.models: dict[str, Path] = {}

    def model(self, name: str) -> Path:
        if name not in self.models:
            create = create_tiny_model if name == "tiny" else create_long_model
            self.models[name] = create(self.work / f"model-{name}")
        return self.models[name]

    def runners(self, variant: Variant, data: Path, epochs: float) -> dict[str, Callable[[], Run]]:
        work = self.work / variant.name
        work.mkdir(exist_ok=True)
        model = self.model(variant.model)
        config = write_config(work, model, data, variant, epochs)
        return {
            SIDES[0]: lambda: run_ours(config),
            SIDES[1]: lambda: run_plain(model, data, work, variant, epochs),
        }

    def measure(self, variant: Variant, data: Path, epochs: float, pairs: int) -> Result:
        result = Result(variant, epochs)
        runners = self.runners(variant, data, epochs)
        for pair in range(pairs):
            # Swap who goes first each pair, so neither side always inherits the other's leftovers.
            order = list(SIDES) if pair % 2 == 0 else list(reversed(SIDES))
            for side in order:
                gc.collect()
                run = runners[side]()
                result.runs[side].append(run)
                print(
                    f"  {variant.name} pair {pair + 1} {side}: {run.wall:.1f} s, {run.per_cpu:.0f} tok/cpu-s",
                    flush=True,
                )
        return result

    def tiny(self) -> float:
        options = self.options
        variant = Variant("tiny", "tiny", max_seq=256, batch=8)
        data = make_dataset(self.work / "tiny.jsonl", 320, (4, 30))
        # Warm-ups (first-use costs go to neither side) double as the calibration of the run length.
        warm = self.runners(variant, data, 1)
        # The faster warm-up, with a margin: a warm-up also pays first-use costs a timed run does not.
        seconds = min(warm[side]().wall for side in SIDES)
        epochs = max(1, math.ceil(1.25 * options.min_seconds / seconds))
        print(f"calibration: one epoch {seconds:.1f} s -> {epochs} epochs per run", flush=True)
        return summarise(self.measure(variant, data, epochs, options.pairs))

    def long(self) -> None:
        options = self.options
        data = make_dataset(self.work / "long.jsonl", options.long_records, (25, 330), seed=1)
        for packing in (False, True):
            for checkpointing in (False, True):
                switches = {"packing": packing, "checkpointing": checkpointing}
                name = "long " + " ".join(f"{k}={'on' if v else 'off'}" for k, v in switches.items())
                variant = Variant(
                    name, "long", max_seq=1024, batch=4, packing=packing, checkpointing=checkpointing
                )
                summarise(self.measure(variant, data, 1, options.long_pairs))


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--scenario", choices=["all", "tiny", "long"], default="all")
    parser.add_argument("--pairs", type=int, default=5, help="timed pairs, tiny scenario")
    parser.add_argument("--min-seconds", type=float, default=30, help="minimum train() time per run, tiny")
    parser.add_argument("--long-pairs", type=int, default=1, help="timed pairs per long variant")
    parser.add_argument("--long-records", type=int, default=48, help="records in the long scenario")
    parser.add_argument(
        "--long-run", action="store_true", help="10 pairs of >= 60 s; 3 pairs per long variant"
    )
    parser.add_argument(
        "--quick", action="store_true", help="seconds-long runs: checks the script, not a figure"
    )
    parser.add_argument(
        "--threads", type=int, help="torch threads (default: one per core); 1 copes better with other load"
    )
    parser.add_argument("--only", choices=["kubetune", "plain"], help="one run of one side (for a profiler)")
    options = parser.parse_args()
    if options.long_run:
        options.pairs, options.min_seconds, options.long_pairs, options.long_records = 10, 60, 3, 96
    if options.quick:
        options.pairs, options.min_seconds, options.long_pairs, options.long_records = 2, 1, 1, 8

    import logging

    import torch

    logging.basicConfig(level=logging.WARNING)
    if options.threads:
        torch.set_num_threads(options.threads)
    print(
        f"torch {torch.__version__}, threads: {torch.get_num_threads()}, cpus: {os.cpu_count()}", flush=True
    )
    TIMER.install()
    with tempfile.TemporaryDirectory(prefix="kubetune-bench-") as temporary:
        bench = Bench(Path(temporary), options)
        if options.only:
            variant = Variant("tiny", "tiny", max_seq=256, batch=8)
            data = make_dataset(Path(temporary) / "tiny.jsonl", 320, (4, 30))
            side = SIDES[0] if options.only == "kubetune" else SIDES[1]
            run = bench.runners(variant, data, 4)[side]()
            print(f"{side}: {run.tokens} tokens, {run.wall:.1f} s, {run.per_cpu:.0f} tok/cpu-s")
            return
        ratio = None
        if options.scenario in ("all", "long"):
            bench.long()
        if options.scenario in ("all", "tiny"):
            ratio = bench.tiny()
    if ratio is not None:
        print(f"trainer: tokens_per_s_ratio={ratio:.3f}")


if __name__ == "__main__":
    main()
