"""Tiny random models built in-process: what the unit tests and the reliability audit run on (scaffolding, not
part of the package)."""

from __future__ import annotations

import os
from pathlib import Path

from llmrank import models


def build_tiny_llama(path: str | os.PathLike[str], seed: int = 0, tokenizer_from: str = "smollm2-135m",
                     cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """A 2-layer random ``LlamaForCausalLM`` with a real tokenizer, saved to ``path`` for tests.

    hidden 64, 4 heads, 2 kv heads, intermediate 128, max_position 2048, tied embeddings, float32; the
    vocabulary is the tokenizer's (``tokenizer_from``: an alias, whose tokenizer is cached by
    :func:`llmrank.models.tokenizer_dir`, or a local folder with a tokenizer). The same ``seed`` gives the same weights.
    """
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    source = models.tokenizer_dir(tokenizer_from, cache_dir) if tokenizer_from in models.REGISTRY else Path(tokenizer_from)
    tokenizer = AutoTokenizer.from_pretrained(str(source))
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval()
    out = Path(path)
    models.save_model(model, tokenizer, out)
    return out


def build_tiny_bert(path: str | os.PathLike[str], seed: int = 0, dropout: float = 0.1) -> Path:
    """A 2-layer random ``BertModel`` (hidden 32, 2 heads, intermediate 64) with the embedded all-MiniLM-L6-v2
    tokenizer (``minilm-l6``), saved to ``path``: a stand-in base for the encoder students' unit tests (a
    cross-encoder student adds its one-logit head on top). The same ``seed`` gives the same weights; ``dropout``
    sets BERT's hidden and attention dropout (0: training steps that do not depend on a random stream)."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from llmrank.rerankers.dense import resolve_dense_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_dense_model("minilm-l6"), local_files_only=True)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=512, type_vocab_size=2,
                        hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
    torch.manual_seed(seed)
    model = BertModel(config).eval()
    out = Path(path)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
