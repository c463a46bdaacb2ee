"""Backends: ``hf`` (transformers), ``vllm`` (offline engine), ``openai`` (any OpenAI-compatible server)."""

from __future__ import annotations

import importlib

from llmrank.backends.base import Backend, Generation, GenerationParams, label_token_ids
from llmrank.errors import LlmrankError

BACKENDS = {"hf": "llmrank.backends.hf:HFBackend", "vllm": "llmrank.backends.vllm:VLLMBackend",
            "openai": "llmrank.backends.openai:OpenAIBackend"}

__all__ = ["BACKENDS", "Backend", "Generation", "GenerationParams", "label_token_ids", "make_backend"]


def make_backend(name: str, model: str, **options) -> Backend:
    """A backend by name; ``http(s)://…`` as the name means ``openai`` at that base URL."""
    if name.startswith(("http://", "https://")):
        options["base_url"] = name
        name = "openai"
    if name not in BACKENDS:
        raise LlmrankError(f"unknown backend '{name}' (one of {', '.join(BACKENDS)}, or an http:// URL)")
    module, cls = BACKENDS[name].split(":")
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as e:
        raise LlmrankError(f"backend '{name}' needs {e.name}, which is not installed") from None
    return getattr(mod, cls)(model, **options)
