"""A tiny Qwen2 causal LM with a locally trained byte-level BPE tokenizer, built offline.

No model hub is reachable in CI, so every data-plane test (training, serving) starts from this.
The attention head size is 64 because vLLM's CPU attention rejects smaller heads.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>"]
VOCAB_SIZE = 1024

# ChatML, the template Qwen2 models ship with; `{% generation %}` markers are left out on purpose:
# the trainer finds assistant spans itself so that any template works.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_WORDS = re.findall(
    r"\w+",
    "the a of to and in is it that for on with as was by be at this are from or an which have not "
    "capital city river mountain country language colour color answer question what who where when "
    "how model train data token learn fine tune adapter system user assistant blue red green yellow "
    "paris rome berlin madrid lisbon vienna oslo zurich prague dublin one two three four five six "
    "seven eight nine ten hundred thousand please tell me about explain why because number ",
)


def _corpus(lines: int, seed: int) -> list[str]:
    rng = random.Random(seed)  # noqa: S311 (a reproducible corpus, not a secret)
    corpus = [" ".join(rng.choice(_WORDS) for _ in range(rng.randint(4, 16))) for _ in range(lines)]
    # Every printable ASCII character, so that arbitrary test text tokenises without unknowns.
    corpus.append("".join(chr(c) for c in range(32, 127)))
    corpus.extend(f"Question {i}? Answer: {i * 7}." for i in range(200))
    return corpus


def create_tiny_model(directory: Path) -> Path:
    """Save a random-initialised Qwen2ForCausalLM and its tokenizer into `directory`; return it.

    Deterministic for a given library version (seeded tokenizer corpus and weights).
    """
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    directory.mkdir(parents=True, exist_ok=True)

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.post_processor = processors.ByteLevel(trim_offsets=False)
    bpe_trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_corpus(2000, seed=0), trainer=bpe_trainer)

    tokenizer = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=bpe,
        bos_token=None,
        eos_token="<|im_end|>",  # noqa: S106 (a vocabulary token, not a password)
        pad_token="<|pad|>",  # noqa: S106
        unk_token=None,
        additional_special_tokens=["<|endoftext|>", "<|im_start|>"],
        model_max_length=512,
        clean_up_tokenization_spaces=False,
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    tokenizer.save_pretrained(directory)

    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,  # head size 128 / 2 = 64, the smallest vLLM's CPU attention accepts
        max_position_embeddings=512,
        tie_word_embeddings=True,
        # Larger than the 0.02 default: frozen tied embeddings that small cap the logits, and a LoRA
        # adapter could then never push the loss far below ln(vocab).
        initializer_range=0.1,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
    )
    model = Qwen2ForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(directory, safe_serialization=True)
    return directory


def main(argv: list[str] | None = None) -> int:
    """`python -m kubetune.devcluster.tinymodel DIR`: what `make dev` runs in a pod to seed a volume."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m kubetune.devcluster.tinymodel", description=__doc__)
    parser.add_argument("directory", type=Path)
    args = parser.parse_args(argv)
    print(create_tiny_model(args.directory))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
