"""DPO refinement on ranking preferences (trl ``DPOTrainer`` + a peft LoRA), for either student kind.

Direct Preference Optimization (Rafailov et al., NeurIPS 2023) needs, per example, ONE prompt and two
completions of it, the chosen preferred to the rejected; its loss is
``-log σ(β[(log π(c|x) - log π_ref(c|x)) - (log π(r|x) - log π_ref(r|x))])`` with the distilled student as
the reference ``π_ref`` (see :mod:`llmrank.training.refined`). Ranking data is turned into that shape so
that each example is a genuine preference over two answers to the same input the student is served:

**Reasoning student** (:func:`llmrank.students.reasoning.reasoning_pairs`; PLaD's pseudo-preference, Zhang et al. 2024, "PLaD:
Preference-based Large Language Model Distillation with Pseudo-Preference Pairs": teacher ≻ student).
Prompt: the rationale prompt of (query, document), as served. Chosen: the teacher's explanation with the
verdict it supports, ``<explanation>\\nVerdict: yes|no`` — only where that verdict agrees with the target
(the qrels label when the document is judged, else the teacher's verdict), so the preferred answer is never
a wrong one. Rejected: one of the student's own ``samples`` sampled completions whose strictly-read verdict
disagrees with the target (or cannot be read); a document where every sample is right gives no example.

**Pointwise yes/no student** (:func:`llmrank.students.pointwise.pointwise_pairs`). The student's score is
``s(x) = log π(yes|x) - log π(no|x)`` on the single answer token. Ranking preferences relate two documents,
i.e. two prompts, which one DPO example cannot hold; but for one prompt with chosen = the "yes" token and
rejected = the "no" token, DPO's implicit reward margin is exactly ``β (s(x) - s_ref(x))``, so
``(x⁺, yes ≻ no)`` raises the student's score of x⁺ and ``(x⁻, no ≻ yes)`` lowers that of x⁻, relative to
the distilled student. The pairs used are those the teacher orders and the student misorders: x⁺ has target
"yes" (judged relevant, or the teacher's yes / top-``top_m``), x⁻ has target "no", and the student scores
``s(x⁻) >= s(x⁺)``; hardest first (largest ``s(x⁻) - s(x⁺)``), ``pairs_per_query`` per query; plus
``anchors`` times as many pairs the student orders right, closest first (errors alone are a biased sample,
from which DPO learns to invert a good student's judgement). Because a
pair always crosses the yes/no boundary, a document only ever gets one direction (a document above and
below others in the teacher's order would otherwise be pushed up and down at once); each document's example
appears once. Chosen and rejected are exactly the one answer token the student is trained, scored and
served with — the dataset is tokenized here (``prompt_ids``, ``chosen_ids``, ``rejected_ids``), because trl
would append an EOS token to text completions and the preference would include it.

**Output**: see :mod:`llmrank.training.refined`; ``trainer_log.json`` holds ``rewards/accuracies`` and
``rewards/margins`` per logged step.
"""

from __future__ import annotations

import logging
from pathlib import Path

from llmrank.data.types import RankingData
from llmrank.errors import LlmrankError
from llmrank.training.refined import check_method, lora_config, save_refined, start_model, student_meta

log = logging.getLogger(__name__)
LOG_KEYS = ("loss", "rewards/accuracies", "rewards/margins", "rewards/chosen", "rewards/rejected")


def _trainer_class():
    from trl import DPOTrainer

    class TokenizedDPOTrainer(DPOTrainer):
        """trl's ``DPOTrainer`` taking rows tokenized here (``prompt_ids``, ``chosen_ids``, ``rejected_ids``) as
        they are: trl would otherwise append an EOS token to every text completion."""

        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            if {"prompt_ids", "chosen_ids", "rejected_ids"} <= set(dataset.column_names):
                return dataset
            return super()._prepare_dataset(dataset, processing_class, args, dataset_name)

    return TokenizedDPOTrainer


def build_dpo_rows(student_dir: str | Path, data: RankingData, teacher_records: dict[str, dict], out: Path,
                   options: dict | None = None, dtype: str = "float32", seed: int = 0,
                   progress: bool = False, student=None) -> tuple[list[dict], dict]:
    """The DPO rows for the student in ``student_dir``: its kind's own pairs (``student.refine_rows``, e.g.
    ``students.pointwise.pointwise_pairs``, ``students.reasoning.reasoning_pairs``) with ``options`` checked against the options that kind
    declares for DPO (``student.refine_options["dpo"]``). ``student`` is the kind's class (default: the one its
    metadata names)."""
    from llmrank.training.refiners import check_fits

    if student is None:
        from llmrank.students import get_student

        student = get_student(student_meta(student_dir)[1].get("kind", "pointwise"))
    refiner = check_fits("dpo", student)
    problems = refiner.check_options(student, options)
    if problems:
        raise LlmrankError("; ".join(f"refine.options.{'.'.join(map(str, key))}: {msg}" if key else f"refine.options: {msg}"
                                     for key, msg in problems))
    return refiner.build_rows(student, Path(student_dir), data, teacher_records, dict(options or {}), out=out,
                              dtype=dtype, seed=seed, progress=progress)


def train_dpo(student_dir: str | Path, rows: list[dict], args, lora: dict | None = None, dtype: str = "float32",
              resume: bool | str | None = None, info: dict | None = None, callbacks=None) -> Path:
    """Refine the student in ``student_dir`` with trl's ``DPOTrainer`` on tokenized ``rows`` (from
    :func:`build_dpo_rows`); ``args`` is a ``trl.DPOConfig``. Saves the refined student under
    ``args.output_dir`` and returns that folder."""
    import datasets

    out = Path(args.output_dir)
    model, tok, meta, base_path = start_model(student_dir, out, dtype)
    check_method("dpo", meta.get("kind", "pointwise"))
    keep = [{k: r[k] for k in ("prompt_ids", "chosen_ids", "rejected_ids")} for r in rows]
    trainer = _trainer_class()(model=model, args=args, train_dataset=datasets.Dataset.from_list(keep),
                               processing_class=tok, peft_config=lora_config(lora, meta.get("kind", "pointwise")), callbacks=callbacks)
    trainer.train(resume_from_checkpoint=resume)
    if trainer.is_world_process_zero():
        save_refined(trainer, tok, meta, base_path, out, "dpo", {"pairs": len(rows), **(info or {})}, LOG_KEYS)
    trainer.accelerator.wait_for_everyone()
    return out
