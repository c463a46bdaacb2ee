"""GRPO refinement of a reasoning student with ranking rewards (trl ``GRPOTrainer`` + a peft LoRA).

Group Relative Policy Optimization (Shao et al. 2024, "DeepSeekMath"), as InteRank (Samarinas & Zamani
2025) refines its distilled reasoning reranker: for each (query, document) prompt the student samples
``num_generations`` explanations + verdicts, each is scored by the rewards of
:mod:`llmrank.training.rewards` (by default: the strict ``Verdict: yes|no`` format, and whether the verdict
agrees with the qrels label, else the teacher's), and the policy moves toward the completions that beat
their group's mean.

**Prompts** (:func:`llmrank.students.reasoning.build_grpo_prompts`, the reasoning kind's ``refine_rows``) are the strings the student is served with:
:func:`llmrank.rerankers.rationale.build_rationale_prompt` (the builder the SFT examples and the reasoning
reranker use, documents truncated to the student's ``max_doc_tokens``), one per (query, document) from
the teacher's ranking: per query up to ``per_query`` documents, half of them with target "yes" (judged
relevant, or the teacher's yes) and the rest the highest-ranked "no"s (hard negatives); a query with no
"yes" gives no prompts (``balance``), so the reward does not favour always answering "no". Columns
``label`` (qrels grade, 0 for an unjudged document of a judged query, None for a query without judgements)
and ``teacher_label`` (the teacher's verdict) feed the rewards.

**Generation**: trl's own (``transformers`` ``generate``) by default — the CPU path; with
``use_vllm: true`` (the GPU path) trl generates through vLLM, which must be installed.

**Output**: see :mod:`llmrank.training.refined` (``adapter/``, ``merged/``, ``trainer_log.json`` with the
mean reward per logged step).
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

from llmrank.errors import LlmrankError
from llmrank.students.reasoning import build_grpo_prompts  # noqa: F401 - the reasoning kind builds the prompts
from llmrank.training.refined import check_method, lora_config, save_refined, start_model

log = logging.getLogger(__name__)

DEFAULT_REWARDS = [{"name": "format", "weight": 0.2}, {"name": "relevance", "weight": 1.0}]
"""The rewards of a reasoning pointwise student when a recipe names none."""
LOG_KEYS = ("loss", "reward", "reward_std", "frac_reward_zero_std", "completions/mean_length", "kl", "entropy")


def vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None


def check_use_vllm(use_vllm: bool, where: str = "refine.training.use_vllm") -> None:
    """``use_vllm: true`` without vLLM installed is an error naming the key, before any model loads."""
    if use_vllm and not vllm_available():
        raise LlmrankError(f"{where}: true needs vLLM installed (pip install vllm, on a CUDA machine); set it to "
                           "false to generate with transformers (the CPU path)")


def train_grpo(student_dir: str | Path, rows: list[dict], args, rewards: list[dict] | None = None,
               lora: dict | None = None, dtype: str = "float32", resume: bool | str | None = None,
               callbacks=None) -> Path:
    """Refine the student in ``student_dir`` with trl's ``GRPOTrainer`` on ``rows`` (from
    :func:`build_grpo_prompts`); ``args`` is a ``trl.GRPOConfig`` (its ``reward_weights`` are set from
    ``rewards``' weights). Saves the refined student under ``args.output_dir`` and returns that folder."""
    import datasets
    from trl import GRPOTrainer

    from llmrank.training.rewards import build_rewards

    check_use_vllm(args.use_vllm)
    out = Path(args.output_dir)
    model, tok, meta, base_path = start_model(student_dir, out, dtype)
    check_method("grpo", meta.get("kind", "pointwise"))
    funcs, weights = build_rewards(rewards or DEFAULT_REWARDS)
    if args.reward_weights is not None and list(args.reward_weights) != weights:
        raise LlmrankError("refine.training.reward_weights: give each reward's weight in refine.rewards instead")
    args.reward_weights = weights
    tok.padding_side = "left"
    trainer = GRPOTrainer(model=model, reward_funcs=funcs, args=args, train_dataset=datasets.Dataset.from_list(rows),
                          processing_class=tok, peft_config=lora_config(lora, meta.get("kind", "pointwise")), callbacks=callbacks)
    trainer.train(resume_from_checkpoint=resume)
    if trainer.is_world_process_zero():
        names = [f.__name__ for f in funcs]
        save_refined(trainer, tok, meta, base_path, out, "grpo",
                     {"rewards": [{"name": n, "weight": w} for n, w in zip(names, weights)], "prompts": len(rows)},
                     LOG_KEYS + tuple(f"rewards/{n}/mean" for n in names))
    trainer.accelerator.wait_for_everyone()
    return out
