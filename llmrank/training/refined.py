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

from llmrank.students import get_student, start_model, student_meta  # noqa: F401 - the start of a refinement, importable from here
from llmrank.students.base import write_training_logs

log = logging.getLogger(__name__)


def check_method(method: str, kind: str, where: str = "refine.method") -> None:
    """A refine method that does not fit the student kind is an error naming the key
    (:func:`llmrank.training.refiners.check_fits`)."""
    from llmrank.training.refiners import check_fits

    check_fits(method, get_student(kind), where)


def lora_config(lora: dict | None, kind: str = "pointwise"):
    """The refinement's new adapter: peft's ``LoraConfig`` for the student kind (:meth:`Student.lora_config`)."""
    return get_student(kind).lora_config(lora)


def save_refined(trainer, tokenizer, meta: dict, base_path: str, out: Path, method: str, info: dict,
                 log_keys: tuple[str, ...]) -> None:
    """Write ``adapter/`` and ``merged/`` (each with the student metadata) and ``adapter/trainer_log.json``
    (the trainer's rows with a ``step`` and any of ``log_keys``)."""
    refined = {**meta, "base_model": base_path,
               "refined": {"method": method, "from": str(meta.get("base_model")), **info}}
    student = get_student(meta.get("kind", "pointwise"))
    student.save(trainer.model, tokenizer, out, refined, merge=True)
    write_training_logs(trainer, out, info, log_keys)


def read_trainer_log(student_dir: str | Path) -> list[dict]:
    """The rows of a refined (or distilled) student's ``adapter/trainer_log.json``, or [] when it has none."""
    f = Path(student_dir) / "adapter" / "trainer_log.json"
    return json.loads(f.read_text()) if f.is_file() else []
