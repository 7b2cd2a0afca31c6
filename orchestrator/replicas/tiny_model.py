"""Build a tiny, randomly initialised Llama model and tokenizer on local disk.

Model weights cannot be downloaded on CI machines, yet the real vLLM engine must run
in tests and in the default `inflection run`. A 2-layer Llama with a byte-level BPE
tokenizer trained on a few sentences is enough for vLLM's CPU build: it exercises the
real scheduler, prefix cache and sampling, and generates quickly. The weights are seeded,
so the same directory is produced on every machine.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

# Bumped whenever the recipe changes, so a cached copy built by an older recipe is rebuilt.
RECIPE_VERSION = 2
_MARKER = "inflection-tiny-model.json"

_CORPUS = [
    "An agent plans the task, runs the steps in parallel, reflects and answers.",
    "The planner writes a numbered list of steps; each worker executes one step.",
    "Step 1: search the documents. Step 2: summarise the findings. Step 3: check the facts.",
    "The synthesizer reads every result and writes the final answer for the user.",
    "Tokens are the unit of cost: prompt tokens, cached tokens and output tokens.",
    "Replicas host the model engine; the orchestrator routes calls between them.",
    "FINAL ANSWER: the task is complete and the answer is correct.",
    "The quick brown fox jumps over the lazy dog 0123456789 times.",
]

CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>{{ message['content'] }}\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def default_tiny_model_dir() -> Path:
    """Where `inflection run` and the tests keep the generated model (override with
    INFLECTION_CACHE_DIR)."""
    base = os.environ.get("INFLECTION_CACHE_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "inflection"
    )
    return Path(base) / f"tiny-llama-v{RECIPE_VERSION}"


def is_built(model_dir: Path) -> bool:
    marker = model_dir / _MARKER
    if not marker.is_file():
        return False
    try:
        return bool(json.loads(marker.read_text())["recipe"] == RECIPE_VERSION)
    except (ValueError, KeyError):
        return False


def build_tiny_model(model_dir: Path | None = None, *, seed: int = 0) -> Path:
    """Build the tiny model into `model_dir` (idempotent) and return the directory.

    The build happens in a sibling temporary directory that is renamed into place, so an
    interrupted build never leaves a half-written model that later runs would trust.
    """
    # Heavy imports stay local: importing this module must stay cheap.
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    target = model_dir or default_tiny_model_dir()
    if is_built(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f"{target.name}.tmp-{os.getpid()}")

    bpe = Tokenizer(models.BPE(unk_token=None))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512,
        special_tokens=["<s>", "</s>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_CORPUS, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )
    tokenizer.chat_template = CHAT_TEMPLATE

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=2,
        num_attention_heads=4,  # head_dim 64: the CPU attention backend rejects 16
        num_key_value_heads=2,
        # Long enough for the coding agent's growing context (~15k tokens).
        max_position_embeddings=16384,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config).to(torch.bfloat16)  # type: ignore[no-untyped-call,arg-type]
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    (staging / _MARKER).write_text(json.dumps({"recipe": RECIPE_VERSION, "seed": seed}))
    try:
        staging.rename(target)
    except OSError:
        # Another process finished first; its copy is identical, keep it.
        import shutil

        shutil.rmtree(staging, ignore_errors=True)
    return target
