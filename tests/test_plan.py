"""``llmrank plan``: the arithmetic behind its estimates, checked against the things it estimates."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from llmrank.plan import _shape_from_config, model_shape, teacher_prompts

ROOT = Path(__file__).resolve().parents[1]
GPU_RECIPES = ["instruction-distill-7b", "listwise-margin-mse", "reasoning-grpo", "dpo"]


def test_parameters_from_a_config_equal_the_models_own_count(tiny_model_dir):
    """The parameter count from config.json is the model's: tied embeddings counted once."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    shape = model_shape(str(tiny_model_dir))
    assert shape.params == sum(p.numel() for p in model.parameters())
    assert shape.source.startswith("config.json")


def test_lora_parameters_equal_what_peft_adds(tiny_model_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    peft_model = get_peft_model(model, LoraConfig(r=4, target_modules="all-linear", task_type="CAUSAL_LM"))
    added = sum(p.numel() for n, p in peft_model.named_parameters() if "lora_" in n)
    assert model_shape(str(tiny_model_dir)).lora_params(4) == added


def test_a_published_shape_gives_the_published_size():
    """Qwen2.5-7B: 7.62B parameters (untied embeddings), Qwen2.5-1.5B: 1.54B (tied); the name alone gives a size."""
    assert round(model_shape("Qwen/Qwen2.5-7B-Instruct").params / 1e9, 2) == 7.62
    assert round(model_shape("Qwen/Qwen2.5-1.5B-Instruct").params / 1e9, 2) == 1.54
    named = model_shape("someorg/Mystery-13B-Chat")
    assert named.params == 13e9 and named.layers is None


def test_teacher_prompt_counts_by_method():
    assert teacher_prompts("pointwise", {}, 20) == (20, 1, 0)
    assert teacher_prompts("rationale", {"max_tokens": 256}, 20) == (20, 1, 256)
    assert teacher_prompts("pairwise", {"strategy": "allpair"}, 4) == (12, 2, 1)  # 6 pairs, both orders
    # RankGPT window 20 step 10 over 30 candidates: windows at 10-30 and 0-20
    assert teacher_prompts("listwise", {"window": 20, "step": 10}, 30) == (2, 20, 80)
    # heapsort for the top 10 of 20 asks fewer pairs than all of them, and at least the k-1 a heap needs
    per_query, per_prompt, gen = teacher_prompts("pairwise", {"strategy": "heapsort", "top_k": 10}, 20)
    assert 2 * 19 <= per_query < 20 * 19 and per_prompt == 2 and gen == 1


@pytest.mark.parametrize("name", GPU_RECIPES + ["quickstart-cpu"])
def test_plan_prints_memory_prompts_and_time_for_each_shipped_recipe(name):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1",
           "LLMRANK_DATA": os.environ.get("LLMRANK_DATA") or str(ROOT.parent / "shared" / "data")}
    p = subprocess.run([sys.executable, "-m", "llmrank", "plan", f"recipes/{name}.yaml"], capture_output=True,
                       text=True, env=env, timeout=300, cwd=ROOT)
    out = p.stdout
    if name in GPU_RECIPES:  # offline, the hub ids are not in the cache: named with their keys, exit 2
        assert p.returncode == 2
        assert "llmrank plan: error: recipes/" in p.stderr and "key 'teacher.model'" in p.stderr
        assert "memory, per GPU (80 GiB), GiB:" in out
        assert "\nteacher prompts (" in out and " prompts, " in out and "prompt tokens" in out
        assert "\n  teach: " in out.split("\ntime:")[1]
    else:
        assert p.returncode == 0, p.stderr
        assert "memory, CPU RAM, GiB:" in out and "\n  distill: " in out.split("\ntime:")[1]
        assert "peak of the run: " in out
    assert f"runs/{name}/export/model/" in out
