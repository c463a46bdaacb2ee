"""The student a refinement (GRPO, DPO) starts from, and the refined student it saves.

A refinement trains a NEW LoRA adapter on top of the distilled student with its own adapter merged in: the
merged distilled model is the base, and the reference policy (DPO's, and GRPO's KL term when ``beta > 0``)
is that base with the new adapter switched off — the distilled student itself, as DPO and GRPO assume, not
the model before distillation. The refined student is saved in the layout of a distilled one::

    <out>/adapter/   new LoRA adapter + tokenizer + llmrank_student.json (base_model = the merged distilled model)
    <out>/merged/    the fully merged refined model + tokenizer + llmrank_student.json
    <out>/adapter/trainer_log.json   the trainer's logged rows (reward, or DPO reward accuracy/margin, per step)

so evaluation and export load it unchanged. Its ``llmrank_student.json`` is the distilled student's (same
``kind``, prompt and scoring) with ``base_model`` pointing at the merged distilled model and a ``refined``
entry saying how it was refined.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from llmrank.errors import LlmrankError
from llmrank.students import STUDENT_FILE, get_student, load_student_model

log = logging.getLogger(__name__)



def student_meta(student_dir: str | Path) -> tuple[Path, dict]:
    """``(folder, metadata)`` of a saved student: the folder holding ``llmrank_student.json`` — the given one,
    or its ``merged/`` or ``adapter/`` (a distill run's output folder)."""
    p = Path(student_dir)
    for cand in (p, p / "merged", p / "adapter"):
        f = cand / STUDENT_FILE
        if f.is_file():
            return cand, json.loads(f.read_text())
    raise LlmrankError(f"{p}: not an llmrank student (no {STUDENT_FILE} in it, nor in its merged/ or adapter/); "
                       "give the output folder of a distill run")


def check_method(method: str, kind: str, where: str = "refine.method") -> None:
    """A refine method that does not fit the student kind is an error naming the key."""
    fits = get_student(kind).refine_methods  # GRPO rewards generated text: a yes/no scorer generates none
    if method not in fits:
        why = (" (a pointwise yes/no scorer generates nothing for GRPO to reward; refine it with 'dpo' on the "
               "document pairs the teacher orders and it misorders)" if kind == "pointwise" and method == "grpo" else "")
        raise LlmrankError(f"{where}: '{method}' does not fit a {kind} student{why}; methods for a {kind} student: "
                           f"{', '.join(fits)}")


def start_model(student_dir: str | Path, out: Path, dtype: str = "float32"):
    """``(model, tokenizer, meta, base_path)``: the distilled student as a plain model with its adapter merged
    in (its ``merged/`` folder; an adapter-only student is merged here and saved once to ``<out>/base``)."""
    folder, meta = student_meta(student_dir)
    if (folder / "adapter_config.json").is_file():
        merged = Path(student_dir) / "merged"
        if (merged / STUDENT_FILE).is_file() and not (merged / "adapter_config.json").is_file():
            folder = merged
    if (folder / "adapter_config.json").is_file():
        base = out / "base"
        if not (base / STUDENT_FILE).is_file():
            model, tok, meta = load_student_model(folder, dtype)
            model = model.merge_and_unload()
            model.save_pretrained(base)
            tok.save_pretrained(base)
            (base / STUDENT_FILE).write_text(json.dumps(meta, indent=1))
        folder = base
    model, tok, meta = load_student_model(folder, dtype)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return model, tok, meta, str(folder.resolve())


def lora_config(lora: dict | None):
    from peft import LoraConfig

    lora = {"r": 16, "alpha": 32, "dropout": 0.05, "target_modules": "all-linear", **(lora or {})}
    return LoraConfig(r=lora["r"], lora_alpha=lora["alpha"], lora_dropout=lora["dropout"],
                      target_modules=lora["target_modules"], task_type="CAUSAL_LM")


def save_refined(trainer, tokenizer, meta: dict, base_path: str, out: Path, method: str, info: dict,
                 log_keys: tuple[str, ...]) -> None:
    """Write ``adapter/`` and ``merged/`` (each with the student metadata) and ``adapter/trainer_log.json``
    (the trainer's rows with a ``step`` and any of ``log_keys``)."""
    refined = {**meta, "base_model": base_path,
               "refined": {"method": method, "from": str(meta.get("base_model")), **info}}
    text = json.dumps(refined, indent=1)
    adapter = out / "adapter"
    trainer.model.save_pretrained(adapter)
    tokenizer.save_pretrained(adapter)
    (adapter / STUDENT_FILE).write_text(text)
    rows = [{"step": e["step"], **{k: e[k] for k in log_keys if k in e}} for e in trainer.state.log_history
            if "step" in e and any(k in e for k in log_keys)]
    (adapter / "trainer_log.json").write_text(json.dumps(rows))
    train_info = {"world_size": trainer.accelerator.num_processes, "global_step": trainer.state.global_step, **info}
    (adapter / "training_info.json").write_text(json.dumps(train_info))
    merged = trainer.model.merge_and_unload()
    merged.save_pretrained(out / "merged")
    tokenizer.save_pretrained(out / "merged")
    (out / "merged" / STUDENT_FILE).write_text(text)


def read_trainer_log(student_dir: str | Path) -> list[dict]:
    """The rows of a refined (or distilled) student's ``adapter/trainer_log.json``, or [] when it has none."""
    f = Path(student_dir) / "adapter" / "trainer_log.json"
    return json.loads(f.read_text()) if f.is_file() else []
