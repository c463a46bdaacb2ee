"""The shipped accelerate configs (recipes/accelerate/) on 2 CPU processes in a gloo group, on the tiny student.

With the global batch fixed (``--global-batch-size 2``: one process accumulates 2 groups, two processes take
one each), DDP and FSDP give the same loss at every step as one process. LoRA dropout is off: its masks come
from each process's own random stream, so with it on the runs differ from the second step (the adapter's B
matrices start at zero, so the first step's loss matches either way). DeepSpeed is not exercised: it does
not install on this CPU-only CI (it builds against a CUDA toolchain). The encoder students (cross-encoder,
bi-encoder) train on the same ``transformers.Trainer`` path: under DDP they give the loss of one process too
(a tiny BERT with dropout off, for the same reason as LoRA dropout).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STEPS = 3


def _data(tmp_path: Path) -> Path:
    rows = [{"qid": f"q{q}", "query": f"question {q}",
             "docs": [{"docid": f"q{q}-{j}", "text": ("the answer: " if j == 0 else "") + f"passage {j} on {q}",
                       "label": int(j == 0)} for j in range(4)]} for q in range(2 * STEPS)]
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    return path


def _distill(tiny_model_dir, data: Path, out: Path, launch: list[str], kind: str = "pointwise") -> list[dict]:
    args = ["-m", "llmrank", "distill", "--kind", kind, "--dataset", str(data), "--oracle", "--top-k", "4",
            "--group-size", "4", "--model", str(tiny_model_dir), "--max-steps", str(STEPS),
            "--global-batch-size", "2", "--logging-steps", "1", "-o", str(out)]
    encoder = ["--per-device-train-batch-size", "1", "--learning-rate", "1e-2"]
    args += {"pointwise": ["--max-doc-tokens", "16", "--lora-dropout", "0"],
             "cross-encoder": ["--max-doc-tokens", "16", *encoder],
             "bi-encoder": ["--max-seq-length", "32", *encoder]}[kind]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, *launch, *args], env=env, capture_output=True, text=True, timeout=900,
                          cwd=ROOT)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    info = json.loads((out / "adapter" / "training_info.json").read_text())
    log = json.loads((out / "adapter" / "trainer_log.json").read_text())
    return info, log


def _launch(config: str) -> list[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return ["-m", "accelerate.commands.launch", "--config_file", str(ROOT / "recipes" / "accelerate" / config),
            "--num_processes", "2", "--mixed_precision", "no", "--main_process_port", str(port)]


@pytest.fixture(scope="module")
def one_process(tiny_model_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("one")
    return _distill(tiny_model_dir, _data(tmp), tmp / "student", [])


@pytest.mark.parametrize("config", ["ddp.yaml", "fsdp.yaml"])
def test_two_processes_give_the_loss_of_one_per_step(config, one_process, tiny_model_dir, tmp_path):
    info1, log1 = one_process
    info2, log2 = _distill(tiny_model_dir, _data(tmp_path), tmp_path / "student", _launch(config))
    assert info1["world_size"] == 1 and info2["world_size"] == 2
    assert info1["gradient_accumulation_steps"] == 2 and info2["gradient_accumulation_steps"] == 1
    assert [r["step"] for r in log2] == [r["step"] for r in log1] == list(range(1, STEPS + 1))
    for a, b in zip(log1, log2):
        assert abs(a["loss"] - b["loss"]) < 1e-4, (config, log1, log2)
    assert (tmp_path / "student" / "adapter" / "adapter_model.safetensors").is_file()


@pytest.fixture(scope="module")
def tiny_bert_dir(tmp_path_factory) -> Path:
    from tests._tiny import build_tiny_bert

    return build_tiny_bert(tmp_path_factory.mktemp("bert") / "bert", dropout=0.0)


@pytest.mark.parametrize("kind", ["cross-encoder", "bi-encoder"])
def test_encoder_students_under_ddp_give_the_loss_of_one_process(kind, tiny_bert_dir, tmp_path):
    info1, log1 = _distill(tiny_bert_dir, _data(tmp_path), tmp_path / "one", [], kind)
    info2, log2 = _distill(tiny_bert_dir, _data(tmp_path), tmp_path / "two", _launch("ddp.yaml"), kind)
    assert (info1["world_size"], info1["gradient_accumulation_steps"]) == (1, 2)
    assert (info2["world_size"], info2["gradient_accumulation_steps"]) == (2, 1)
    assert [r["step"] for r in log2] == [r["step"] for r in log1] == list(range(1, STEPS + 1))
    assert len({round(r["loss"], 3) for r in log1}) > 1  # the weights move: the runs compare step by step
    for a, b in zip(log1, log2):
        assert abs(a["loss"] - b["loss"]) < 1e-4, (kind, log1, log2)


def test_the_gpu_recipes_name_the_configs():
    for name in ("instruction-distill-7b", "listwise-margin-mse", "reasoning-grpo", "dpo"):
        head = (ROOT / "recipes" / f"{name}.yaml").read_text().split("\nname:")[0]
        for config in ("ddp.yaml", "fsdp.yaml", "deepspeed-zero2.yaml", "deepspeed-zero3.yaml"):
            assert config in head, (name, config)
        assert all((ROOT / "recipes" / "accelerate" / c).is_file() for c in ("ddp.yaml", "fsdp.yaml"))
