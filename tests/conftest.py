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
