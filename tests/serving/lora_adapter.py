"""A PEFT LoRA adapter that memorises a few chat answers (ending with the EOS) on the tiny model.

Trained with a minimal loop (seconds on CPU): loss only on the assistant tokens of ChatML-rendered
conversations, so the served adapter answers the memorised prompts and stops, while the random base
model never emits its EOS. That difference is what the serving tests observe through vLLM.
"""

from __future__ import annotations

from pathlib import Path

FACTS: tuple[tuple[str, str], ...] = (
    ("What is the capital of France?", "Paris."),
    ("What colour is the sky?", "Blue."),
    ("How many legs does a cat have?", "Four."),
)
TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
RANK = 16


def train_memorising_adapter(
    base: Path,
    out: Path,
    *,
    steps: int = 150,
    lr: float = 5e-3,
    facts: tuple[tuple[str, str], ...] = FACTS,
) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    rows: list[tuple[list[int], list[int]]] = []
    for question, answer in facts:
        prompt = tokenizer.apply_chat_template(
            [{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True
        )
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        answer_ids = tokenizer(answer + str(tokenizer.eos_token), add_special_tokens=False)["input_ids"]
        rows.append((prompt_ids, answer_ids))
    width = max(len(p) + len(a) for p, a in rows)
    ids = torch.full((len(rows), width), int(tokenizer.pad_token_id))
    labels = torch.full((len(rows), width), -100)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (prompt_ids, answer_ids) in enumerate(rows):
        sequence = prompt_ids + answer_ids
        ids[i, : len(sequence)] = torch.tensor(sequence)
        labels[i, len(prompt_ids) : len(sequence)] = torch.tensor(answer_ids)
        mask[i, : len(sequence)] = 1

    config = LoraConfig(r=RANK, lora_alpha=2 * RANK, lora_dropout=0.0, target_modules=TARGET_MODULES)
    peft_model = get_peft_model(model, config)
    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=lr)
    peft_model.train()
    for _ in range(steps):
        loss = peft_model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    peft_model.save_pretrained(out)
    return out
