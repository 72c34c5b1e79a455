"""A tiny, randomly initialised Llama written to disk in Hugging Face layout, with no download.

The vLLM tests and ``loadtests/bench_vllm.py`` serve it with vLLM's CPU engine. The tokenizer is
a byte-level BPE trained here, in milliseconds, on a few lines of built-in text. Its alphabet is
printable ASCII (other characters map to ``<unk>``), so every token decodes to clean text, which
keeps stop-string tests exact; it carries a small chat template. The weights are random (fixed seed),
so the output is gibberish, but the whole vLLM path runs for real: tokenizer, chat template,
paged attention, sampling, logprobs, stop strings, detokenisation and metrics.

Head dimension 64: vLLM's CPU attention does not support head size 16.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}{{ eos_token }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)

_CORPUS = (
    "The quick brown fox jumps over the lazy dog.",
    "Model serving gateways route each request to a model that meets its latency, quality and cost budget.",
    "Small quantized models answer quickly; large models answer better. The router picks one per request.",
    "Tokens stream back to the client as they are generated, and usage is counted at the end.",
    "user assistant system: What is two plus two? Four. Hello, how are you today?",
    string.printable,
)
SPECIAL_TOKENS = ("<s>", "</s>", "<unk>", "<|user|>", "<|assistant|>", "<|system|>")


def _tokenizer(vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
                                  show_progress=False)
    tok.train_from_iterator(list(_CORPUS) * 4, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   chat_template=CHAT_TEMPLATE, model_max_length=2048)


def write_tiny_llama(target: str | Path, *, vocab_size: int = 512, hidden_size: int = 128, layers: int = 2,
                     heads: int = 2, max_positions: int = 2048, seed: int = 0) -> Path:
    """Write config, tokenizer and safetensors weights of a tiny random Llama to ``target``.

    Idempotent: a directory that already holds a complete model is returned as it is.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    out = Path(target)
    marker = out / "tiny-llama.json"
    if marker.exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = _tokenizer(vocab_size)
    tokenizer.save_pretrained(out)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=hidden_size * 2,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
        head_dim=hidden_size // heads, max_position_embeddings=max_positions,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False, torch_dtype="float32",
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.save_pretrained(out, safe_serialization=True)
    marker.write_text(json.dumps({"seed": seed, "vocab_size": len(tokenizer), "head_dim": config.head_dim}))
    return out


if __name__ == "__main__":  # pragma: no cover - manual use: python -m tests.vllm_tiny DIR
    import sys

    print(write_tiny_llama(sys.argv[1] if len(sys.argv) > 1 else "/tmp/tiny-llama"))
