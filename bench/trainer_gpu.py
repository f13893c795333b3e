"""LoRA on a Qwen2-1.5B-shaped model on one GPU: kubetune's trainer against the bare HF Trainer script.

The model is built offline with random weights and Qwen2-1.5B's real shapes (28 layers, d=1536, 12 heads
with 2 KV heads, MLP 8960, vocabulary 151,936, tied embeddings); the tokenizer is the tiny test one (its
ids are a subset of the vocabulary), so nothing is downloaded. Both sides train the same packed records
(100-1000 tokens, maxSeqLength 1024, batch 8, bf16, sdpa, LoRA r=16 on every linear layer) in interleaved
pairs after one warm-up each, timing `Trainer.train()` only (bench/trainer_cpu.py holds the shared code).
MFU uses the formula of kubetune.trainer.throughput (docs/trainer.md) against the GPU's dense bf16 peak.

    .venv/bin/python bench/trainer_gpu.py [--pairs 2] [--records 2000]

Without CUDA it prints one line and exits 0. Last line: `trainer_gpu: tokens_per_s_ratio=... mfu=...`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "operator"))

ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def create_qwen2_1_5b(directory: Path) -> Path:
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    from kubetune.devcluster.tinymodel import create_tiny_model

    create_tiny_model(directory)  # the tokenizer; the tiny weights are overwritten below
    tokenizer = AutoTokenizer.from_pretrained(directory)
    tokenizer.model_max_length = 32768
    tokenizer.save_pretrained(directory)
    config = Qwen2Config(
        vocab_size=151936,
        hidden_size=1536,
        intermediate_size=8960,
        num_hidden_layers=28,
        num_attention_heads=12,
        num_key_value_heads=2,
        max_position_embeddings=32768,
        rope_theta=1000000.0,
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
    )
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = Qwen2ForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(directory, safe_serialization=True)
    del model
    torch.cuda.empty_cache()
    return directory


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--pairs", type=int, default=2)
    parser.add_argument("--records", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=1)
    options = parser.parse_args()

    import torch

    if not torch.cuda.is_available():
        print("trainer_gpu: skipped: no CUDA device (torch.cuda.is_available() is False)")
        return 0

    import logging

    from transformers import AutoModelForCausalLM

    import trainer_cpu as shared
    from kubetune.trainer.throughput import flops_per_token, gpu_peak, mfu, peak_flops
    from kubetune.trainer.train import model_shape

    logging.basicConfig(level=logging.WARNING)
    name = torch.cuda.get_device_name(0)
    peak = gpu_peak(name)
    print(f"torch {torch.__version__}, {name}, peak bf16 {peak.bf16 if peak else '?'} TFLOP/s", flush=True)
    shared.TIMER.install()
    with tempfile.TemporaryDirectory(prefix="kubetune-bench-gpu-") as temporary:
        work = Path(temporary)
        model_dir = create_qwen2_1_5b(work / "qwen2-1.5b")
        data = shared.make_dataset(work / "data.jsonl", options.records, (25, 330), seed=1)
        variant = shared.Variant(
            "qwen2-1.5b lora bf16 packed",
            "gpu",
            max_seq=1024,
            batch=8,
            packing=True,
            gpu=True,
            targets=ALL_LINEAR,
        )
        bench = shared.Bench(work, argparse.Namespace())
        bench.models["gpu"] = model_dir
        # Warm-up (kernels, allocator, cuBLAS heuristics) for both sides, then the timed pairs.
        for run in bench.runners(variant, data, 1).values():
            run()
        result = bench.measure(variant, data, options.epochs, options.pairs)
        shared.summarise(result)

        shape = model_shape(AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16))
        examples = shared.plain_examples(model_dir, data, variant)
        mean_length = statistics.mean(len(e["input_ids"]) for e in examples)
        per_token = flops_per_token(shape, mean_length, full_weights=False)
        medians = {side: statistics.median(r.per_wall for r in runs) for side, runs in result.runs.items()}
        for side, rate in medians.items():
            utilisation = mfu(rate, per_token, peak_flops(peak, "bf16")) if peak else None
            shown = f"{100 * utilisation:.1f}%" if utilisation is not None else "n/a (GPU not in the table)"
            print(f"{side:<18} {rate:>10.0f} tokens/s  MFU {shown}")
        ratio = medians[shared.SIDES[0]] / medians[shared.SIDES[1]]
        ours_mfu = (
            mfu(medians[shared.SIDES[0]], per_token, peak_flops(peak, "bf16")) if peak else float("nan")
        )
        print(
            f"FLOPs per token {per_token:.3g} (N={shape.matmul_parameters:,}, L={shape.layers}, "
            f"d={shape.hidden_size}, T={mean_length:.0f})"
        )
    print(f"trainer_gpu: tokens_per_s_ratio={ratio:.3f} mfu={ours_mfu:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
