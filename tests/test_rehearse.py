"""Rehearsals: every shipped recipe runs end to end on a CPU with tiny stand-ins (``llmrank run --rehearse``).

Each rehearsal goes through the recipe's own stages (teach → distill → refine where present → eval → export),
and must leave a report that says REHEARSAL at its top and an exported student that scores a query. The vLLM
test job (``.venv-vllm``) rehearses the GPU recipes with their vLLM teacher kept.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "recipes").glob("*.yaml"))
GPU_RECIPES = ["instruction-distill-7b", "listwise-margin-mse", "reasoning-grpo", "dpo"]
DATA = os.environ.get("LLMRANK_DATA") or str(ROOT.parent / "shared" / "data")


def _env(tmp_path: Path) -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "LLMRANK_DATA": DATA, "OMP_NUM_THREADS": "2",
            "CUDA_VISIBLE_DEVICES": ""}


@pytest.mark.parametrize("name", GPU_RECIPES)
def test_the_rehearsal_replaces_every_model_and_keeps_the_methods(name):
    from llmrank.recipe import load_recipe, recipe_models
    from llmrank.rehearse import SUFFIX, rehearsal_recipe

    os.environ.setdefault("LLMRANK_DATA", DATA)
    real = load_recipe(ROOT / "recipes" / f"{name}.yaml")
    stand_in = "/nonexistent/stand-in"  # only named here: nothing loads
    fake, said = rehearsal_recipe(real, stand_in)
    assert fake.name == name + SUFFIX
    assert [m for _, m, _ in recipe_models(fake)] == [stand_in] * len(recipe_models(real))
    assert any(line.startswith("teacher.model: ") and stand_in in line for line in said)
    assert (fake.teacher.method, fake.teacher.prompt) == (real.teacher.method, real.teacher.prompt)
    assert fake.distill.kind == real.distill.kind and fake.distill.prompt == real.distill.prompt
    assert getattr(fake.distill, "loss", None) == getattr(real.distill, "loss", None)
    assert fake.distill.lora == real.distill.lora
    if real.refine:
        assert fake.refine.method == real.refine.method and fake.refine.rewards == real.refine.rewards
        assert fake.refine.training["max_steps"] == 1 and not fake.refine.training.get("use_vllm")
    assert fake.distill.training["max_steps"] == 1 and fake.data.queries <= 3
    assert fake.eval.suite is None and all(d.queries <= 2 for d in fake.eval.datasets)
    assert fake.eval.note.startswith("REHEARSAL")
    assert fake.export == real.export


def _rehearse(python: str, recipe: Path, out: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([python, "-m", "llmrank", "run", str(recipe), "--rehearse", "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=1800, cwd=ROOT)


def _check_rehearsal(proc, recipe: Path, out: Path) -> Path:
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert f"REHEARSAL of {recipe}" in proc.stderr
    from llmrank.rehearse import SUFFIX

    root = out / (recipe.stem + SUFFIX)
    assert not (out / recipe.stem).exists()  # nothing where the real run writes
    report = (root / "report.md").read_text()
    assert report.startswith("# REHEARSAL of ")
    stages = ["teach", "distill", "eval", "export"]
    import yaml

    raw = yaml.safe_load(recipe.read_text())
    if "refine" in raw:
        stages.insert(2, "refine")
    if "generate" in raw:
        stages.insert(0, "generate")
    for stage in stages:
        assert (root / stage / "manifest.json").is_file(), stage
    if (raw.get("teacher") or {}).get("method") == "rationale":  # the stand-in's explanations reached the student
        import json

        records = [json.loads(line) for line in (root / "teach" / "teacher.jsonl").read_text().splitlines()]
        texts = [t for r in records for t in (r.get("rationales") or {}).values()]
        assert texts and all(t == "The document matches the query." for t in texts), texts[:3]
    return root


def _scores_a_query(export: Path) -> None:
    """The exported student, loaded as the Reranker it was trained to be, ranks a query's documents."""
    from llmrank.data.types import Doc, Query
    from llmrank.students import load_student

    reranker = load_student(export, dtype="float32")
    docs = [Doc("a", "Water boils at 100 degrees Celsius at sea level."), Doc("b", "Cats sleep most of the day.")]
    ranking = reranker.rerank(Query("q", "what is the boiling point of water"), docs)
    assert sorted(ranking.docids) == ["a", "b"]
    assert all(math.isfinite(s) for s in ranking.scores)


@pytest.mark.slow
@pytest.mark.parametrize("recipe", RECIPES, ids=[r.stem for r in RECIPES])
def test_every_shipped_recipe_rehearses_end_to_end(recipe, tmp_path):
    import yaml

    raw = yaml.safe_load(recipe.read_text())
    if "distill" not in raw:
        pytest.skip(f"{recipe.name} has no pipeline to run (a compare recipe: llmrank compare)")
    proc = _rehearse(sys.executable, recipe, tmp_path, _env(tmp_path))
    root = _check_rehearsal(proc, recipe, tmp_path)
    _scores_a_query(root / "export" / "model")


@pytest.mark.vllm
@pytest.mark.parametrize("name", ["instruction-distill-7b", "reasoning-grpo"])
def test_gpu_recipes_rehearse_with_their_vllm_teacher(name, tmp_path):
    """In ``.venv-vllm`` (llmrank and its dependencies beside vLLM's CPU build) the rehearsal keeps the vLLM
    teacher: one environment runs a vLLM-backend recipe end to end."""
    from llmrank.serve.launch import VENV_PYTHON

    python = os.environ.get("LLMRANK_VLLM_PYTHON") or str(VENV_PYTHON)
    if not Path(python).exists():
        pytest.skip(f"needs the vLLM virtualenv {VENV_PYTHON} (run `make vllm`)")
    recipe = ROOT / "recipes" / f"{name}.yaml"
    env = _env(tmp_path)
    proc = _rehearse(python, recipe, tmp_path, env)
    root = _check_rehearsal(proc, recipe, tmp_path)
    assert "teacher.backend:" not in proc.stderr  # kept: vLLM is installed there
    import json

    teach = json.loads((root / "teach" / "manifest.json").read_text())
    assert teach["teacher"]["queries"] >= 1
    _scores_a_query(root / "export" / "model")


def test_the_stand_in_writes_a_rationale_the_parser_reads(tmp_path):
    """The rehearsal's LLM stand-in answers any chat prompt with a rationale and a verdict, generated by the
    hf backend (a random model writes nothing a rationale teacher can teach), and its yes/no scores still
    differ by document."""
    from llmrank.backends.hf import HFBackend
    from llmrank.data.types import Doc, Query
    from llmrank.rehearse import JUDGEMENT, stand_in_model
    from llmrank.rerankers.pointwise import PointwiseReranker
    from llmrank.rerankers.rationale import RationaleReranker

    path = stand_in_model(tmp_path / "cache")
    assert stand_in_model(tmp_path / "cache") == path  # built once
    backend = HFBackend(str(path), dtype="float32")
    docs = [Doc("a", "Water boils at 100 degrees Celsius at sea level."), Doc("b", "Cats sleep most of the day.")]
    ranking = RationaleReranker(backend, max_tokens=16).rerank(Query("q", "boiling point of water"), docs)
    assert ranking.rationales == {"a": "The document matches the query.", "b": "The document matches the query."}
    assert ranking.extra["verdicts"] == {"a": 1.0, "b": 1.0} and ranking.cost["parse_failures"] == 0
    assert JUDGEMENT.endswith("Verdict: yes")
    scores = PointwiseReranker(backend).rerank(Query("q", "boiling point of water"), docs).scores
    assert len(set(scores)) == 2 and all(math.isfinite(x) for x in scores)


def test_the_encoder_stand_in_loads_as_both_encoder_students(tmp_path):
    """The encoder stand-in is a sentence-transformers folder: a bi-encoder as it is, and a cross-encoder's
    base under a new one-logit head."""
    import torch
    from sentence_transformers import SentenceTransformer

    from llmrank.rehearse import stand_in_encoder
    from llmrank.students.cross_encoder import load_classifier

    path = stand_in_encoder(tmp_path / "cache")
    st = SentenceTransformer(str(path), device="cpu", local_files_only=True)
    emb = st.encode(["boiling point of water", "cats sleep"], convert_to_tensor=True)
    assert emb.shape == (2, 32) and torch.allclose(emb.norm(dim=1), torch.ones(2), atol=1e-5)
    model, tok = load_classifier(str(path))
    assert model.config.num_labels == 1 and model.config.hidden_size == 32
    with torch.no_grad():
        logits = model(**tok(["q", "q"], ["a doc", "another doc"], return_tensors="pt", padding=True)).logits
    assert logits.shape == (2, 1) and torch.isfinite(logits).all()


@pytest.mark.parametrize("name", ["encoder-cpu", "biencoder-cpu", "corpus-only-cpu", "reasoning-cpu"])
def test_the_rehearsal_of_a_cpu_recipe_keeps_its_stages(name):
    """Encoder students get the encoder stand-in (their own length keys cut), a recipe that does not export
    exports in its rehearsal, other runs' eval students are dropped, the generator writes for a few documents."""
    from llmrank.recipe import load_recipe
    from llmrank.rehearse import GENERATE_DOCS, rehearsal_recipe

    os.environ.setdefault("LLMRANK_DATA", DATA)
    real = load_recipe(ROOT / "recipes" / f"{name}.yaml")
    fake, said = rehearsal_recipe(real, "/nonexistent/llm", "/nonexistent/encoder")
    assert fake.distill.kind == real.distill.kind
    assert getattr(fake.distill, "loss", None) == getattr(real.distill, "loss", None)
    encoder = real.distill.kind in ("cross-encoder", "bi-encoder")
    assert fake.distill.model == ("/nonexistent/encoder" if encoder else "/nonexistent/llm")
    if real.distill.kind == "bi-encoder":
        assert fake.distill.max_seq_length == 32 and "distill.max_seq_length: 256 -> 32" in said
    assert fake.export.enabled and fake.eval.students == {}
    if not real.export.enabled:
        assert "export.enabled: False -> 'True (a rehearsal runs the export stage too)'" in said
    if real.eval.students:
        assert any(line.startswith("eval.students: ") for line in said)
    if real.generate is not None:
        assert fake.generate.docs == GENERATE_DOCS and fake.generate.model == real.generate.model
        assert (fake.generate.keep_likelihood, fake.generate.round_trip_k) == (real.generate.keep_likelihood,
                                                                               real.generate.round_trip_k)


@pytest.mark.vllm
def test_the_vllm_cpu_engine_starts_after_numba_is_imported():
    """bm25s imports numba (llvmlite); vLLM's CPU platform then scans every module at engine start and met
    llvmlite's lazy library object (AttributeError: '_lib_fn_wrapper' object has no attribute 'get'). The
    vLLM backend's import guards it: the kernel overrides register in a process that imported bm25s first."""
    from llmrank.serve.launch import VENV_PYTHON

    python = os.environ.get("LLMRANK_VLLM_PYTHON") or str(VENV_PYTHON)
    if not Path(python).exists():
        pytest.skip(f"needs the vLLM virtualenv {VENV_PYTHON} (run `make vllm`)")
    code = ("import bm25s, sys; assert 'llvmlite.binding.ffi' in sys.modules\n"
            "from llmrank.backends.vllm import _import_vllm; _import_vllm()\n"
            "from vllm.platforms.cpu import CpuPlatform; CpuPlatform.register_triton_kernel_overrides()\n"
            "from vllm.triton_utils import dispatcher; assert dispatcher._registry\n"
            "print('registered', len(dispatcher._registry))")
    proc = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=600, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0 and "registered" in proc.stdout, proc.stderr[-3000:]
