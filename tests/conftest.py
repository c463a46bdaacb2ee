"""Shared fixtures: the tiny random model every unit test uses, and the real embedded SmolLM2.

No test may reach a model hub, so both offline switches are set before transformers is imported.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer random Llama with the SmolLM2 tokenizer (``build_tiny_llama``), built once per session."""
    from _tiny import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama") / "model", seed=0)


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """The prepared SmolLM2-135M-Instruct checkpoint (prepared into the llmrank cache on first use, about
    a minute). Tests that use it are marked ``@pytest.mark.slow``."""
    from llmrank.models import resolve_model

    return Path(resolve_model("smollm2-135m"))


def make_pointwise_student(model_dir, out, max_doc_tokens: int, lora_r: int = 8, lora_alpha: int = 16,
                           b_scale: float = 0.02, merge: bool = False):
    """A pointwise student saved by the student layer, with seeded random LoRA B matrices (so that it
    differs from its base, as a trained one does): ``out/adapter`` (and ``out/merged`` with ``merge``)."""
    import torch

    from llmrank.prompts import load_prompt
    from llmrank.students.pointwise import PointwiseFields, PointwiseStudent, load_base, student_meta

    cfg = PointwiseFields(model=str(model_dir), max_doc_tokens=max_doc_tokens, lora_r=lora_r, lora_alpha=lora_alpha,
                          lora_dropout=0.0)
    torch.manual_seed(0)  # lora_A's initialisation
    tok, model, base_path = load_base(cfg)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * b_scale)
    PointwiseStudent.save(model, tok, Path(out), student_meta(cfg, base_path, load_prompt(cfg.prompt)), merge=merge)
    return Path(out)
