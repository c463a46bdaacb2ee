"""The pointwise student trainer on a tiny random model: the loss falls, LoRA weights move, the saved
adapter and merged model score identically, and the training code path scores exactly like the
PointwiseReranker (one prompt builder, one token pair)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from llmrank.students import STUDENT_FILE, load_student
from llmrank.students.pointwise import GroupCollator, PointwiseStudent, answer_token_ids


def make_groups(n_queries: int = 4, size: int = 4) -> list[dict]:
    groups = []
    for q in range(n_queries):
        docs = [("the answer: " if j == 0 else "") + f"passage {j} on topic {q}" for j in range(size)]
        groups.append({"qid": str(q), "query": f"question {q}", "docids": [f"{q}-{j}" for j in range(size)], "docs": docs,
                       "teacher_scores": [float(size - j) for j in range(size)], "teacher_ranks": list(range(size)),
                       "labels": [1.0] + [0.0] * (size - 1)})
    return groups


def student_config(out: Path, steps: int, lr: float = 5e-3, **fields):
    """One config: the student's fields and the TrainingArguments fields together."""
    return PointwiseStudent.config_class()(output_dir=str(out), max_steps=steps, per_device_train_batch_size=2,
                                           learning_rate=lr, logging_steps=1, save_strategy="no", report_to=[],
                                           use_cpu=True, seed=0, **fields)


@pytest.fixture(scope="module")
def trained(tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("distill")
    cfg = student_config(out, steps=24, model=str(tiny_model_dir), loss="listnet", group_size=4, max_doc_tokens=32,
                         lora_r=8, lora_alpha=16, lora_dropout=0.0, merge=True)
    PointwiseStudent.train(cfg, make_groups(2))
    return out, cfg


def test_loss_falls_and_lora_weights_move(trained, tiny_model_dir):
    out, _ = trained
    losses = [e["loss"] for e in json.loads((out / "adapter" / "trainer_log.json").read_text())]
    assert len(losses) >= 20
    assert np.mean(losses[-4:]) < 0.5 * np.mean(losses[:4]), losses
    weights = load_file(out / "adapter" / "adapter_model.safetensors")
    b = [t for k, t in weights.items() if "lora_B" in k]
    assert b and all(t.abs().sum() > 0 for t in b)  # peft starts lora_B at zero: every one was trained


def test_adapter_reloads_and_scores_like_merged_and_like_training(trained):
    out, cfg = trained
    adapter, merged = load_student(out / "adapter"), load_student(out / "merged")
    meta = json.loads((out / "adapter" / STUDENT_FILE).read_text())
    assert meta["variants"] is False and meta["answers"] == {"yes": "yes", "no": "no"}
    group = make_groups(2)[0]
    s_adapter = adapter.score(group["query"], group["docs"])
    s_merged = merged.score(group["query"], group["docs"])
    np.testing.assert_allclose(s_adapter, s_merged, atol=1e-5)
    # the training code path (collator + DistillTrainer.student_scores) gives the same scores
    tok, prompt = adapter.backend.tokenizer, adapter.prompt
    batch = GroupCollator(tok, prompt, cfg.max_doc_tokens, cfg.group_size)([group])
    from llmrank.students.pointwise import DistillTrainer

    trainer = DistillTrainer.__new__(DistillTrainer)
    trainer.answer_ids = torch.tensor(answer_token_ids(tok, prompt))
    with torch.no_grad():
        s_train = torch.sigmoid(trainer.student_scores(adapter.backend.lm, batch))[0].numpy()
    np.testing.assert_allclose(s_train, s_adapter, atol=1e-5)
    assert s_adapter[0] == max(s_adapter)  # it learnt the teacher's top document


def test_full_finetuning_moves_every_layer_and_saves_a_plain_model(tiny_model_dir, tmp_path):
    """``finetune: full``: no adapter, every layer's weights change, the saved model (``merged/``) scores as
    the model did at the end of training, and ``adapter/`` (logs only) is refused with the folder to use."""
    from transformers import AutoModelForCausalLM

    from llmrank.errors import LlmrankError

    cfg = student_config(tmp_path, steps=12, lr=1e-3, model=str(tiny_model_dir), loss="listnet", group_size=4,
                         max_doc_tokens=32, finetune="full")
    PointwiseStudent.train(cfg, make_groups(2))
    merged = tmp_path / "merged"
    assert not (merged / "adapter_config.json").exists() and not (tmp_path / "adapter" / "adapter_config.json").exists()
    losses = [e["loss"] for e in json.loads((tmp_path / "adapter" / "trainer_log.json").read_text())]
    assert np.mean(losses[-3:]) < np.mean(losses[:3]), losses
    before = AutoModelForCausalLM.from_pretrained(tiny_model_dir).state_dict()
    after = AutoModelForCausalLM.from_pretrained(merged).state_dict()
    layers = {k.split(".")[2] for k in before if k.startswith("model.layers.")}
    moved = {k.split(".")[2] for k in before if k.startswith("model.layers.") and not torch.equal(before[k], after[k])}
    assert layers and moved == layers
    assert torch.equal(before["model.embed_tokens.weight"], after["model.embed_tokens.weight"])  # kept frozen
    meta = json.loads((merged / STUDENT_FILE).read_text())
    assert meta["config"]["finetune"] == "full"
    student = load_student(merged)
    group = make_groups(2)[0]
    scores = student.score(group["query"], group["docs"])
    assert scores[0] == max(scores)
    with pytest.raises(LlmrankError, match="fully fine-tuned.*merged"):
        load_student(tmp_path / "adapter")


def test_recipe_refuses_full_finetuning_of_a_4bit_base(tmp_path):
    from llmrank.recipe import Recipe, recipe_problems

    problems = recipe_problems(Recipe.model_validate({"name": "x", "data": {"dataset": str(tmp_path)},
                                                 "teacher": {"method": "first_stage"},
                                                 "distill": {"finetune": "full", "qlora": True}}))
    assert any(key == ("distill", "qlora") and "finetune: lora" in msg for key, msg in problems), problems
    problems = recipe_problems(Recipe.model_validate({"name": "x", "data": {"dataset": str(tmp_path)},
                                                 "teacher": {"method": "first_stage"},
                                                 "distill": {"finetune": "partial"}}))
    assert any(key == ("distill", "finetune") and "'partial'" in msg for key, msg in problems), problems


def test_global_batch_size_sets_the_accumulation_for_the_number_of_processes(tmp_path, monkeypatch):
    from llmrank.errors import LlmrankError
    from llmrank.recipe import Recipe
    from llmrank.students.base import accumulation_steps

    assert [accumulation_steps(8, 2, n) for n in (1, 2, 4)] == [4, 2, 1]
    with pytest.raises(LlmrankError, match=r"global_batch_size: 3 is not a multiple of .* \(1\) x processes \(2\)"):
        accumulation_steps(3, 1, 2)
    section = Recipe.model_validate({"name": "x", "data": {"dataset": str(tmp_path)}, "teacher": {"method": "first_stage"},
                                     "distill": {"global_batch_size": 4, "training": {"per_device_train_batch_size": 2}}}).distill
    monkeypatch.delenv("WORLD_SIZE", raising=False)  # one process (2 processes: the accelerate test below)
    assert PointwiseStudent.make_config(section, tmp_path).gradient_accumulation_steps == 2


def test_qlora_nf4_trains_a_few_steps(tiny_model_dir, tmp_path):
    pytest.importorskip("bitsandbytes")
    cfg = student_config(tmp_path, steps=2, lr=1e-2, model=str(tiny_model_dir), loss="ranknet", group_size=4,
                         max_doc_tokens=32, lora_r=4, lora_alpha=8, qlora=True)
    PointwiseStudent.train(cfg, make_groups(2))
    cfg_json = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert cfg_json["r"] == 4
    weights = load_file(tmp_path / "adapter" / "adapter_model.safetensors")
    assert any(t.abs().sum() > 0 for k, t in weights.items() if "lora_B" in k)


def test_accelerate_two_cpu_processes_train_the_same_kind_of_checkpoint(tiny_model_dir, tmp_path):
    """``accelerate launch --multi_gpu --num_processes 2`` (``--cpu`` alone starts one process) runs the
    distill trainer on a gloo group of 2; only the main process writes the student."""
    import socket
    import subprocess
    import sys

    rows = [{"qid": f"q{q}", "query": f"question {q}",
             "docs": [{"docid": f"q{q}-{j}", "text": ("the answer: " if j == 0 else "") + f"passage {j} on {q}",
                       "label": int(j == 0)} for j in range(4)]} for q in range(4)]
    data = tmp_path / "train.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "student"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(port),
           "-m", "llmrank", "distill", "--dataset", str(data), "--oracle", "--top-k", "4", "--group-size", "4",
           "--model", str(tiny_model_dir), "--max-steps", "2", "--max-doc-tokens", "16", "--global-batch-size", "2",
           "-o", str(out)]
    env = {**__import__("os").environ, "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    info = json.loads((out / "adapter" / "training_info.json").read_text())
    assert info["world_size"] == 2 and info["global_step"] == 2
    # 2 groups per optimizer step over all processes: 1 per process, no accumulation (one process: 2 steps)
    assert info["per_device_train_batch_size"] == 1 and info["gradient_accumulation_steps"] == 1
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    assert json.loads((out / "adapter" / STUDENT_FILE).read_text())["kind"] == "pointwise"
