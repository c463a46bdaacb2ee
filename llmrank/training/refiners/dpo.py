"""DPO as a refine method: preference pairs from the teacher's ranking (:mod:`llmrank.training.dpo`)."""

from __future__ import annotations

from pathlib import Path

from llmrank.training.refiners import Refiner


class DPORefiner(Refiner):
    method = "dpo"
    description = "DPO (trl DPOTrainer) on pairs the teacher orders and the student misorders"
    trainer_config = "DPOConfig"
    rows_file = "pairs.json"  # built once, by the main process (it scores or samples with the student)
    rows_name = "pairs"
    curves = [("rewards/accuracies", "reward accuracy"), ("rewards/margins", "reward margin")]

    @classmethod
    def build_rows(cls, student, student_dir: Path, data, teacher_records: dict, options: dict, *, out: Path,
                   dtype: str = "float32", seed: int = 0, progress: bool = False) -> tuple[list[dict], dict]:
        from llmrank.errors import LlmrankError

        rows, stats = super().build_rows(student, student_dir, data, teacher_records, options, out=out, dtype=dtype,
                                         seed=seed, progress=progress)
        if not rows:
            raise LlmrankError(f"no DPO pairs: the distilled student agrees with the teacher everywhere it was asked "
                               f"({stats})")
        return rows, stats

    @classmethod
    def train(cls, student, student_dir: Path, rows: list[dict], args, section, dtype: str = "float32",
              resume: str | None = None, stats: dict | None = None) -> Path:
        from llmrank.training.dpo import train_dpo

        return train_dpo(student_dir, rows, args, section.lora, dtype, resume=resume, info={"pair_stats": stats or {}})

    @classmethod
    def manifest(cls, rows: list[dict], stats: dict) -> dict:
        return {"pairs": stats}
